"""Procedural MiniCity streets and camera trajectories.

One street per sequence, along world +z, centred on x = 0. World axes are
right-handed with x to the *left* of a camera looking down +z, y up and z
along the street; traffic drives on the right (x < 0). All draws come from
the ``np.random.Generator`` passed in, so a sequence is a pure function of its
seed.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from sdeseg_jax.data.minicity import renderer as mr
from sdeseg_jax.data.minicity import shaders as sh

# Cityscapes label ids drawn by MiniCity.
ROAD, SIDEWALK, PARKING, RAIL_TRACK = 7, 8, 9, 10
BUILDING, WALL, FENCE, GUARD_RAIL = 11, 12, 13, 14
POLE, TRAFFIC_LIGHT, TRAFFIC_SIGN = 17, 19, 20
VEGETATION, TERRAIN, SKY = 21, 22, 23
PERSON, RIDER, CAR, TRUCK, BUS, TRAIN, MOTORCYCLE, BICYCLE = (
    24, 25, 26, 27, 28, 31, 32, 33)
STATIC = 4

SEQUENCE_LENGTH = 30  # Cityscapes snippets: frames 0..29.
ANNOTATED_FRAME = 19  # The frame with ground-truth labels.
_Z_MIN, _Z_MAX = -40.0, 210.0  # Street extent around the annotated camera.


@dataclasses.dataclass(frozen=True)
class Domain:
  """Everything that differs between target (cityscapes) and source looks.

  Attributes:
    name: layout name.
    index: integer mixed into the seeds.
    style: renderer look.
    facades, cars, clothes, foliage, signs: palettes of RGB triples.
    prob: probability per sequence of the rare objects (truck, bus, train,
      motorcycle, rider) and of terrain.
    views: (view kind, probability) of car / pedestrian / facade views.
    height: camera height range (m) of car views.
    pitch: camera pitch range (rad, + = looking down) of car views.
    roll: camera roll range (rad).
  """
  name: str
  index: int
  style: mr.Style
  facades: tuple
  cars: tuple
  clothes: tuple
  foliage: tuple
  signs: tuple
  prob: dict
  views: tuple
  height: tuple
  pitch: tuple
  roll: tuple


_DEG = math.pi / 180.0

DOMAINS = {
    "cityscapes": Domain(
        name="cityscapes", index=0,
        style=mr.Style(
            sky_horizon=(0.78, 0.80, 0.82), sky_zenith=(0.50, 0.60, 0.72),
            cloud=0.65, sun_dir=(0.4, 0.8, -0.45), sun=0.45, ambient=0.75,
            tint=(1.0, 1.0, 1.02), gamma=1.1, noise_freq=1.0,
            noise_amp=1.0, saturation=0.85),
        facades=((0.72, 0.66, 0.55), (0.60, 0.58, 0.55), (0.78, 0.72, 0.60),
                 (0.55, 0.45, 0.38), (0.80, 0.78, 0.74), (0.68, 0.55, 0.45),
                 (0.50, 0.52, 0.55)),
        cars=((0.75, 0.76, 0.78), (0.08, 0.08, 0.09), (0.85, 0.85, 0.86),
              (0.15, 0.20, 0.35), (0.45, 0.46, 0.48), (0.45, 0.08, 0.08),
              (0.30, 0.32, 0.30)),
        clothes=((0.12, 0.12, 0.14), (0.25, 0.28, 0.40), (0.55, 0.50, 0.45),
                 (0.45, 0.12, 0.12), (0.70, 0.70, 0.72), (0.20, 0.30, 0.22)),
        foliage=((0.28, 0.38, 0.16), (0.22, 0.33, 0.14), (0.32, 0.40, 0.20)),
        signs=((0.10, 0.25, 0.65), (0.75, 0.10, 0.10), (0.90, 0.90, 0.90),
               (0.90, 0.72, 0.10)),
        prob=dict(truck=0.3, bus=0.25, train=0.12, motorcycle=0.25,
                  rider=0.35, terrain=1.0),
        views=(("car", 1.0),),
        height=(1.2, 1.5), pitch=(-0.01, 0.03), roll=(-0.005, 0.005)),
    "gta5": Domain(
        name="gta5", index=1,
        style=mr.Style(
            sky_horizon=(0.85, 0.80, 0.70), sky_zenith=(0.25, 0.48, 0.85),
            cloud=0.25, sun_dir=(-0.5, 0.9, 0.3), sun=0.85, ambient=0.45,
            tint=(1.08, 1.0, 0.88), gamma=0.95, noise_freq=0.7,
            noise_amp=1.4, saturation=1.3),
        facades=((0.85, 0.70, 0.50), (0.75, 0.45, 0.35), (0.90, 0.88, 0.82),
                 (0.60, 0.62, 0.50), (0.80, 0.60, 0.40), (0.45, 0.50, 0.60)),
        cars=((0.80, 0.10, 0.08), (0.95, 0.95, 0.95), (0.05, 0.05, 0.05),
              (0.10, 0.30, 0.75), (0.90, 0.75, 0.10), (0.20, 0.55, 0.25),
              (0.60, 0.60, 0.65)),
        clothes=((0.85, 0.20, 0.15), (0.15, 0.25, 0.60), (0.90, 0.85, 0.70),
                 (0.10, 0.10, 0.10), (0.30, 0.60, 0.30)),
        foliage=((0.30, 0.45, 0.12), (0.40, 0.48, 0.15), (0.25, 0.40, 0.18)),
        signs=((0.05, 0.45, 0.20), (0.80, 0.10, 0.10), (0.95, 0.95, 0.95)),
        prob=dict(truck=0.45, bus=0.3, train=0.15, motorcycle=0.35,
                  rider=0.4, terrain=1.0),
        views=(("car", 0.6), ("pedestrian", 0.25), ("facade", 0.15)),
        height=(1.0, 3.0), pitch=(-10 * _DEG, 10 * _DEG),
        roll=(-2 * _DEG, 2 * _DEG)),
    # Synthia shares 16 classes with Cityscapes (no terrain, truck, train),
    # so its streets have none of them; its look is cool and low-contrast.
    "synthia": Domain(
        name="synthia", index=2,
        style=mr.Style(
            sky_horizon=(0.80, 0.88, 0.95), sky_zenith=(0.40, 0.65, 0.95),
            cloud=0.1, sun_dir=(0.2, 1.0, 0.6), sun=0.6, ambient=0.6,
            tint=(0.92, 1.0, 1.1), gamma=1.2, noise_freq=1.6,
            noise_amp=0.6, saturation=1.0),
        facades=((0.70, 0.70, 0.75), (0.55, 0.60, 0.70), (0.80, 0.80, 0.85),
                 (0.65, 0.55, 0.50), (0.40, 0.45, 0.55)),
        cars=((0.60, 0.65, 0.75), (0.20, 0.20, 0.25), (0.90, 0.90, 0.95),
              (0.55, 0.15, 0.20), (0.20, 0.40, 0.55)),
        clothes=((0.20, 0.22, 0.30), (0.60, 0.60, 0.65), (0.35, 0.20, 0.40),
                 (0.10, 0.35, 0.45)),
        foliage=((0.20, 0.40, 0.25), (0.25, 0.45, 0.30)),
        signs=((0.10, 0.30, 0.75), (0.80, 0.15, 0.20), (0.95, 0.95, 0.95)),
        prob=dict(truck=0.0, bus=0.3, train=0.0, motorcycle=0.35,
                  rider=0.4, terrain=0.0),
        views=(("car", 0.5), ("pedestrian", 0.25), ("facade", 0.25)),
        height=(1.0, 3.0), pitch=(-10 * _DEG, 10 * _DEG),
        roll=(-2 * _DEG, 2 * _DEG)),
}


@dataclasses.dataclass(frozen=True)
class Trajectory:
  """Camera of one sequence over all SEQUENCE_LENGTH frames.

  Attributes:
    view: "car", "pedestrian" or "facade".
    poses: [SEQUENCE_LENGTH, 4, 4] camera-to-world (OpenCV camera axes).
    height: camera height above the ground (m).
    pitch: [SEQUENCE_LENGTH] pitch (rad, + = looking down).
    roll: [SEQUENCE_LENGTH] roll (rad).
    path: [P, 2] densely sampled (x, z) of the camera centre.
  """
  view: str
  poses: np.ndarray
  height: float
  pitch: np.ndarray
  roll: np.ndarray
  path: np.ndarray


def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
  """[3, 3] camera-to-world rotation of OpenCV camera axes.

  yaw turns about world up (+ = towards +x, i.e. left), pitch about the
  camera's horizontal axis (+ = down), roll about the optical axis.
  """
  cy, sy = math.cos(yaw), math.sin(yaw)
  cp, sp = math.cos(pitch), math.sin(pitch)
  cr, sr = math.cos(roll), math.sin(roll)
  ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
  rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
  rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
  # OpenCV x right, y down, z forward -> world x left, y up, z forward.
  flip = np.diag([-1.0, -1.0, 1.0])
  return ry @ rx @ rz @ flip


@dataclasses.dataclass(frozen=True)
class Street:
  road_half_width: float
  sidewalk_width: float
  kerb: float


def sample_street(rng: np.random.Generator) -> Street:
  return Street(road_half_width=float(rng.uniform(3.5, 7.0)),
                sidewalk_width=float(rng.uniform(1.8, 4.0)),
                kerb=float(rng.uniform(0.10, 0.16)))


def sample_trajectory(rng: np.random.Generator, domain: Domain,
                      street: Street) -> Trajectory:
  """Draws a view kind and the camera of all frames of a sequence."""
  kinds, probs = zip(*domain.views)
  view = kinds[rng.choice(len(kinds), p=np.array(probs) / sum(probs))]
  rw, sw = street.road_half_width, street.sidewalk_width
  side = 1.0 if rng.random() < 0.5 else -1.0
  yaw_offset = 0.0
  if view == "car":
    # Right-hand traffic: x < 0 is the right half of the road.
    lane = -1.0 if rng.random() < 0.8 else 1.0
    x0 = lane * rw * float(rng.uniform(0.3, 0.7))
    speed = rng.uniform(0.35, 1.1)  # m per frame (17 Hz: 6..19 m/s)
    yaw0, yaw_rate = rng.uniform(-0.03, 0.03), rng.uniform(-0.004, 0.004)
    height = rng.uniform(*domain.height)
    pitch0 = rng.uniform(*domain.pitch)
  elif view == "pedestrian":
    x0 = side * (rw + sw * float(rng.uniform(0.3, 0.7)))
    speed = rng.uniform(0.04, 0.1)
    yaw0, yaw_rate = rng.uniform(-0.25, 0.25), rng.uniform(-0.01, 0.01)
    height = rng.uniform(1.5, 1.85)
    pitch0 = rng.uniform(-10 * _DEG, 10 * _DEG)
  elif view == "facade":
    x0 = side * (rw + sw * 0.5 - float(rng.uniform(0.0, 4.0)))
    speed = rng.uniform(0.05, 0.3)
    yaw0, yaw_rate = rng.uniform(-0.05, 0.05), rng.uniform(-0.003, 0.003)
    yaw_offset = side * rng.uniform(0.9, 1.5)
    height = rng.uniform(1.0, 3.0)
    pitch0 = rng.uniform(-10 * _DEG, 10 * _DEG)
  else:
    raise ValueError(f"unknown view kind {view!r}")
  roll0 = rng.uniform(*domain.roll)
  wobble = rng.uniform(0, 2 * math.pi)
  frames = np.arange(SEQUENCE_LENGTH)
  motion_yaw = yaw0 + yaw_rate * (frames - ANNOTATED_FRAME)
  # Suspension / gait makes the pitch oscillate a little.
  pitch = pitch0 + 0.002 * np.sin(0.8 * frames + wobble)
  roll = roll0 + 0.001 * np.sin(0.5 * frames + 2 * wobble)
  pos = np.zeros((SEQUENCE_LENGTH, 3))
  pos[ANNOTATED_FRAME] = (x0, height, 0.0)
  step = lambda f: speed * np.array(
      [math.sin(motion_yaw[f]), 0.0, math.cos(motion_yaw[f])])
  for f in range(ANNOTATED_FRAME + 1, SEQUENCE_LENGTH):
    pos[f] = pos[f - 1] + step(f - 1)
  for f in range(ANNOTATED_FRAME - 1, -1, -1):
    pos[f] = pos[f + 1] - step(f)
  poses = np.zeros((SEQUENCE_LENGTH, 4, 4))
  for f in frames:
    poses[f, :3, :3] = rotation(motion_yaw[f] + yaw_offset, pitch[f], roll[f])
    poses[f, :3, 3] = pos[f]
    poses[f, 3, 3] = 1.0
  # Dense path for keeping objects off the camera.
  t = np.linspace(0, SEQUENCE_LENGTH - 1, 8 * SEQUENCE_LENGTH)
  path = np.stack([np.interp(t, frames, pos[:, 0]),
                   np.interp(t, frames, pos[:, 2])], 1)
  return Trajectory(view=view, poses=poses, height=float(height),
                    pitch=pitch, roll=roll, path=path)


class _Builder:
  """Adds objects to a World unless they would touch the camera path."""

  def __init__(self, rng, domain: Domain, street: Street, path, world):
    self.rng, self.domain, self.street = rng, domain, street
    self.path, self.w = path, world

  def u(self, lo, hi):
    return float(self.rng.uniform(lo, hi))

  def pick(self, palette, jitter=0.05):
    c = np.asarray(palette[self.rng.integers(len(palette))])
    return tuple(np.clip(c + self.rng.uniform(-jitter, jitter, 3), 0, 1))

  def seed(self):
    return int(self.rng.integers(2**31 - 1))

  def free(self, x0, x1, z0, z1, margin=0.8):
    xl, xh = min(x0, x1) - margin, max(x0, x1) + margin
    zl, zh = min(z0, z1) - margin, max(z0, z1) + margin
    p = self.path
    return not ((p[:, 0] > xl) & (p[:, 0] < xh) & (p[:, 1] > zl) &
                (p[:, 1] < zh)).any()

  # -- objects ---------------------------------------------------------------

  def car(self, x, z):
    length, width = self.u(3.8, 4.8), self.u(1.7, 1.9)
    if not self.free(x - width / 2, x + width / 2, z, z + length):
      return False
    color, sd = self.pick(self.domain.cars), self.seed()
    top = self.u(0.95, 1.15)
    self.w.box((x - width / 2, 0.05, z), (x + width / 2, top, z + length),
               CAR, sh.M_PAINT, color, (0, length / 10, width / 10), sd)
    cab0 = z + length * self.u(0.2, 0.35)
    cab1 = cab0 + length * self.u(0.45, 0.55)
    self.w.box((x - width / 2 + 0.08, top, cab0),
               (x + width / 2 - 0.08, top + self.u(0.42, 0.55), cab1),
               CAR, sh.M_PAINT, color, (1, 0, 0), sd)
    return True

  def big_vehicle(self, x, z, label, length, height, windows, width=2.5,
                  y0=0.0):
    if not self.free(x - width / 2, x + width / 2, z, z + length):
      return False
    color = self.pick(self.domain.cars if label != BUS else
                      ((0.85, 0.80, 0.20), (0.20, 0.35, 0.70),
                       (0.80, 0.15, 0.12), (0.92, 0.92, 0.92)))
    self.w.box((x - width / 2, y0, z), (x + width / 2, y0 + height,
                                        z + length),
               label, sh.M_BIGVEH, color, (height / 4.0, float(windows), 0),
               self.seed())
    return True

  def truck(self, x, z):
    cab = 2.2
    if not self.free(x - 1.25, x + 1.25, z, z + cab + 8.5):
      return False
    self.big_vehicle(x, z + 0.3 + cab, TRUCK, self.u(5.0, 8.0),
                     self.u(3.0, 3.8), False)
    self.big_vehicle(x, z, TRUCK, cab, self.u(2.6, 3.0), True, width=2.4)
    return True

  def person(self, x, z, label=PERSON, y0=0.0, height=None):
    height = height or self.u(1.55, 1.9)
    r = self.u(0.18, 0.26)
    if not self.free(x - r, x + r, z - r, z + r, margin=0.6):
      return False
    shirt = self.pick(self.domain.clothes, 0.08)
    trousers = self.pick(self.domain.clothes, 0.08)
    if label == RIDER:
      trousers = shirt
    self.w.cylinder(x, z, r, y0, y0 + height - 0.22, label, sh.M_CLOTH,
                    shirt, trousers, self.seed())
    skin = self.pick(((0.85, 0.65, 0.52), (0.55, 0.38, 0.28),
                      (0.95, 0.78, 0.66)), 0.03)
    self.w.sphere((x, y0 + height - 0.11, z), 0.11, label, sh.M_SKIN, skin,
                  None, self.seed())
    return True

  def two_wheeler(self, x, z, motor, rider, along_z=True):
    length = self.u(1.9, 2.2) if motor else self.u(1.6, 1.8)
    width = 0.45 if motor else 0.1
    hx, hz = (width / 2, length) if along_z else (length / 2, width)
    if not self.free(x - hx, x + hx, z, z + hz, margin=0.6):
      return False
    color = self.pick(self.domain.cars if motor else ((0.1, 0.1, 0.1),
                                                      (0.5, 0.1, 0.1),
                                                      (0.2, 0.3, 0.5)))
    self.w.box((x - hx, 0.0, z), (x + hx, 1.1 if motor else 1.0, z + hz),
               MOTORCYCLE if motor else BICYCLE, sh.M_BIKE, color, None,
               self.seed())
    if rider:
      self.person(x, z + length * 0.45, RIDER, y0=0.85 if not motor else 0.9,
                  height=self.u(0.95, 1.05))
    return True

  def tree(self, x, z, big=False):
    trunk_h = self.u(2.5, 4.0) if not big else self.u(3.0, 5.0)
    r = self.u(1.4, 2.6) if not big else self.u(2.5, 4.5)
    if not self.free(x - 0.3, x + 0.3, z - 0.3, z + 0.3):
      return False
    self.w.cylinder(x, z, self.u(0.14, 0.25), 0.0, trunk_h + r * 0.5,
                    VEGETATION, sh.M_BARK, (0.30, 0.24, 0.18), None,
                    self.seed())
    cy = max(trunk_h + r * 0.5, 3.4 + r)
    leaf = self.pick(self.domain.foliage, 0.04)
    self.w.sphere((x, cy, z), r, VEGETATION, sh.M_FOLIAGE, leaf, None,
                  self.seed())
    for _ in range(int(self.rng.integers(1, 3))):
      rr = r * self.u(0.5, 0.75)
      off = self.rng.uniform(-0.7, 0.7, 3) * r
      self.w.sphere((x + off[0], max(cy + off[1] * 0.5, 3.4 + rr), z + off[2]),
                    rr, VEGETATION, sh.M_FOLIAGE, leaf, None, self.seed())
    return True

  def pole(self, x, z, side):
    h = self.u(4.0, 8.0)
    if not self.free(x - 0.4, x + 0.4, z - 0.5, z + 0.1):
      return False
    grey = self.pick(((0.45, 0.46, 0.47), (0.30, 0.32, 0.30),
                      (0.55, 0.55, 0.52)), 0.03)
    self.w.cylinder(x, z, self.u(0.07, 0.13), 0.0, h, POLE, sh.M_METAL, grey,
                    None, self.seed())
    roll = self.rng.random()
    if roll < 0.35:  # A traffic sign facing oncoming traffic (-z).
      size = self.u(0.5, 0.8)
      y = self.u(1.9, min(2.6, h - size))
      self.w.box((x - size / 2, y, z - 0.2), (x + size / 2, y + size,
                                              z - 0.15),
                 TRAFFIC_SIGN, sh.M_SIGN, self.pick(self.domain.signs, 0.03),
                 (size, 0, 0), self.seed())
    elif roll < 0.6:  # A traffic light, on the pole or over the road.
      over = self.rng.random() < 0.5 and h > 5.0
      lx = x
      y = self.u(2.6, min(3.6, h - 1.0))
      if over:
        arm = self.u(2.0, 4.0)
        y = h - 1.3
        lx = x - side * arm
        self.w.box((min(x, lx), h - 0.35, z - 0.06),
                   (max(x, lx), h - 0.25, z + 0.06), POLE, sh.M_METAL, grey,
                   None, self.seed())
      self.w.box((lx - 0.15, y, z - 0.45), (lx + 0.15, y + 0.9, z - 0.15),
                 TRAFFIC_LIGHT, sh.M_TLIGHT, (0.1, 0.1, 0.1), (0.9, 0, 0),
                 self.seed())
    return True

  # -- the street ------------------------------------------------------------

  def build(self):
    rng, st, dom, w = self.rng, self.street, self.domain, self.w
    rw, sw = st.road_half_width, st.sidewalk_width
    has = {k: rng.random() < p for k, p in sorted(dom.prob.items())}
    # Closing facades at both ends of the street.
    for z0, z1 in ((_Z_MAX, _Z_MAX + 20.0), (_Z_MIN - 20.0, _Z_MIN)):
      w.box((-300.0, 0.0, z0), (300.0, self.u(15, 35), z1), BUILDING,
            sh.M_FACADE, self.pick(dom.facades), None, self.seed())
    tram_x = None
    if has["train"]:
      tram_x = rw * 0.45 * (1 if rng.random() < 0.7 else -1)
      w.box((tram_x - 0.9, 0.0, _Z_MIN), (tram_x + 0.9, 0.012, _Z_MAX),
            RAIL_TRACK, sh.M_RAIL, (0.3, 0.3, 0.3), None, self.seed())
    for side in (-1.0, 1.0):
      self._side(side, has)
    # Traffic in the lanes, ahead of the camera.
    for _ in range(int(rng.integers(2, 9))):
      lane = rng.choice([-1.0, 1.0]) * rw * self.u(0.3, 0.7)
      self.car(lane, self.u(4.0, 150.0))
    if has["truck"]:
      for _ in range(int(rng.integers(1, 3))):
        x = rng.choice([-1.0, 1.0]) * (rw - self.u(1.3, 2.5))
        self.truck(x, self.u(6.0, 80.0))
    if has["bus"]:
      x = rng.choice([-1.0, 1.0]) * (rw - self.u(1.3, 2.5))
      self.big_vehicle(x, self.u(6.0, 70.0), BUS, self.u(11.0, 13.0),
                       self.u(3.0, 3.3), True)
    if has["train"]:
      z = self.u(5.0, 50.0)
      for _ in range(int(rng.integers(1, 3))):
        length = self.u(12.0, 18.0)
        if not self.big_vehicle(tram_x, z, TRAIN, length, self.u(3.0, 3.3),
                                True, width=2.6, y0=0.25):
          break
        z += length + 0.8
    if has["rider"]:
      for _ in range(int(rng.integers(1, 4))):
        motor = has["motorcycle"] and rng.random() < 0.5
        x = rng.choice([-1.0, 1.0]) * (rw - self.u(0.6, 1.6))
        self.two_wheeler(x, self.u(4.0, 50.0), motor, rider=True)
    if has["motorcycle"]:
      for _ in range(int(rng.integers(1, 3))):
        x = rng.choice([-1.0, 1.0]) * (rw - self.u(0.5, 1.0))
        self.two_wheeler(x, self.u(3.0, 60.0), True, rider=False)
    if rng.random() < 0.35:  # Pedestrians crossing the road.
      for _ in range(int(rng.integers(1, 4))):
        self.person(self.u(-rw, rw), self.u(6.0, 40.0))

  def _side(self, side, has):
    rng, st, dom, w = self.rng, self.street, self.domain, self.w
    rw, sw, kerb = st.road_half_width, st.sidewalk_width, st.kerb
    # Sidewalk slab with a kerb.
    w.box((side * rw, 0.0, _Z_MIN), (side * (rw + sw), kerb, _Z_MAX),
          SIDEWALK, sh.M_PAVEMENT, (0.6, 0.6, 0.6), None, self.seed())
    outer_terrain = has["terrain"]
    # Lots: buildings and gaps with greenery behind walls or fences.
    z = _Z_MIN
    while z < _Z_MAX:
      length = self.u(8.0, 28.0)
      z1 = min(z + length, _Z_MAX)
      setback = self.u(0.0, 2.5) if rng.random() < 0.5 else 0.0
      xf = rw + sw + setback
      if rng.random() < 0.65:
        depth, height = self.u(8.0, 18.0), self.u(7.0, 26.0)
        w.box((side * xf, 0.0, z), (side * (xf + depth), height, z1),
              BUILDING, sh.M_FACADE, self.pick(dom.facades), None,
              self.seed())
        if setback > 1.0 and rng.random() < 0.6:
          self._frontage(side, rw + sw + 0.2, z, z1, hedge_ok=True)
      else:
        self._frontage(side, xf, z, z1, hedge_ok=outer_terrain)
        for _ in range(int(rng.integers(1, 4))):
          self.tree(side * (xf + self.u(2.0, 8.0)), self.u(z, z1), big=True)
        back = xf + self.u(12.0, 25.0)
        w.box((side * back, 0.0, z), (side * (back + 12.0), self.u(8, 30),
                                      z1),
              BUILDING, sh.M_FACADE, self.pick(dom.facades), None,
              self.seed())
      z = z1
    # Street furniture on the sidewalk.
    z = _Z_MIN + self.u(0, 10)
    while z < _Z_MAX - 10:
      self.pole(side * (rw + 0.35), z, side)
      z += self.u(12.0, 26.0)
    z = _Z_MIN + self.u(0, 8)
    while z < _Z_MAX - 10:
      if rng.random() < 0.55:
        self.tree(side * (rw + min(0.9, sw * 0.4)), z)
      z += self.u(8.0, 16.0)
    # Parked cars (sometimes on a parking strip).
    if rng.random() < 0.3:
      z0 = self.u(-20.0, 40.0)
      w.box((side * (rw - 2.2), 0.0, z0), (side * rw, 0.01, z0 +
                                           self.u(15.0, 50.0)),
            PARKING, sh.M_PAVEMENT, (0.48, 0.45, 0.42), None, self.seed())
    z = _Z_MIN + self.u(0, 6)
    while z < _Z_MAX - 20:
      if rng.random() < 0.45:
        self.car(side * (rw - 1.15), z)
      z += self.u(5.2, 7.5)
    # People, parked bikes and clutter on the sidewalk.
    for _ in range(int(rng.integers(2, 10))):
      self.person(side * (rw + self.u(0.5, sw - 0.3)), self.u(-15.0, 70.0))
    if rng.random() < 0.5:
      z = self.u(0.0, 50.0)
      for i in range(int(rng.integers(1, 5))):
        self.two_wheeler(side * (rw + sw - 1.0), z + 0.5 * i, False, False,
                         along_z=False)
    if rng.random() < 0.2:
      self.two_wheeler(side * (rw - 0.5), self.u(3.0, 50.0), True, False)
    for _ in range(int(rng.integers(0, 4))):  # bins, benches (void: static)
      x, z = side * (rw + self.u(0.3, sw - 0.3)), self.u(-10.0, 80.0)
      hx, hz, hy = self.u(0.2, 0.35), self.u(0.25, 0.9), self.u(0.5, 1.0)
      if self.free(x - hx, x + hx, z - hz, z + hz, margin=0.6):
        w.box((x - hx, 0.0, z - hz), (x + hx, hy, z + hz), STATIC,
              sh.M_STATIC, self.pick(((0.2, 0.3, 0.2), (0.35, 0.3, 0.25),
                                      (0.3, 0.3, 0.32))), None, self.seed())
    if rng.random() < 0.15:  # A guard rail (void) along the kerb.
      z0 = self.u(0.0, 40.0)
      x = side * (rw + 0.15)
      if self.free(x - 0.05, x + 0.05, z0, z0 + 20.0):
        w.box((x - 0.04, 0.35, z0), (x + 0.04, 0.75, z0 + 20.0), GUARD_RAIL,
              sh.M_METAL, (0.6, 0.62, 0.63), None, self.seed())

  def _frontage(self, side, x, z0, z1, hedge_ok):
    rng, w = self.rng, self.w
    kind = rng.random()
    if kind < 0.35:
      h, t = self.u(0.6, 2.4), 0.3
      w.box((side * x, 0.0, z0), (side * (x + t), h, z1), WALL, sh.M_WALL,
            self.pick(((0.6, 0.55, 0.5), (0.55, 0.35, 0.28),
                       (0.7, 0.7, 0.68))), None, self.seed())
    elif kind < 0.7:
      h = self.u(1.0, 2.2)
      w.box((side * x, 0.0, z0), (side * (x + 0.06), h, z1), FENCE,
            sh.M_FENCE, self.pick(((0.45, 0.35, 0.25), (0.5, 0.52, 0.5),
                                   (0.25, 0.3, 0.25))), (h / 2 - 0.2, 0, 0),
            self.seed())
    elif kind < 0.85 and hedge_ok:
      h = self.u(0.8, 1.6)
      w.box((side * x, 0.0, z0), (side * (x + 0.8), h, z1), VEGETATION,
            sh.M_FOLIAGE, self.pick(self.domain.foliage), None, self.seed())


def build_world(rng: np.random.Generator, domain: Domain, street: Street,
                trajectory: Trajectory) -> mr.FrozenWorld:
  """Builds the street of one sequence around the camera's path."""
  if domain.prob["terrain"] > 0:
    outer = (TERRAIN, sh.M_GRASS)
  else:
    outer = (SIDEWALK, sh.M_PAVEMENT)
  world = mr.World(street.road_half_width, *outer)
  _Builder(rng, domain, street, trajectory.path, world).build()
  return world.finalize()
