"""Per-material surface shaders of MiniCity: one function per material.

``albedo`` groups the hits of a frame by material and calls that material's
shader (the table ``SHADERS``) on the hits of its group. A shader sees only
world-fixed quantities of its hits (``Hits``: position, normal, the
primitive's colours, seed and anchor, and solid noise of the position), so a
surface point has the same colour in every frame. Adding a material is adding
an id, a shader and a table row.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from sdeseg_jax.data.minicity import renderer as mr

# Materials: each selects one shader. ``M_ROAD`` names the ground plane's
# road, which ``GROUND_MATERIAL`` shades; no primitive uses it.
(M_ROAD, M_PAVEMENT, M_GRASS, M_FACADE, M_WALL, M_FENCE, M_METAL,
 M_TLIGHT, M_SIGN, M_FOLIAGE, M_BARK, M_CLOTH, M_SKIN, M_PAINT, M_BIGVEH,
 M_BIKE, M_STATIC, M_RAIL) = range(18)
NUM_MATERIALS = 18
GROUND_MATERIAL = -1  # Hits on the ground plane (road and outer ground).

_GRASS_DARK = np.array([0.30, 0.36, 0.14])
_GRASS_LIGHT = np.array([0.45, 0.40, 0.22])


def frac(x):
  return x - np.floor(x)


def face_uv(p, n, anchor):
  """Coordinates along a vertical face: (horizontal, height above anchor)."""
  along = np.where(np.abs(n[:, 0]) > 0.5, p[:, 2] - anchor[:, 2],
                   p[:, 0] - anchor[:, 0])
  return along, p[:, 1] - anchor[:, 1]


@dataclasses.dataclass(frozen=True)
class Hits:
  """The hits of one material (rows ``[N, ...]``), as its shader sees them.

  Attributes:
    p: [N, 3] float32 world points.
    nrm: [N, 3] surface normals.
    col: [N, 3] the primitives' colour.
    col2: [N, 3] the primitives' second colour / shape parameters.
    seed: [N] the primitives' seeds.
    anchor: [N, 3] the primitives' anchors (a reference corner).
    footprint: [N] metres covered by the pixel at the hit (texture LOD).
    world: the scene (ground settings).
    style: the domain's look.
    salt: the domain's noise salt.
  """
  p: np.ndarray
  nrm: np.ndarray
  col: np.ndarray
  col2: np.ndarray
  seed: np.ndarray
  anchor: np.ndarray
  footprint: np.ndarray
  world: mr.FrozenWorld
  style: mr.Style
  salt: int

  def noise(self, freq, seed_off=0, octaves=3):
    """[N] fbm of the points at ``freq`` (scalar or per axis) cycles/m."""
    freq = np.asarray(freq, np.float32) * self.style.noise_freq
    return mr.fbm(self.p * freq, self.salt + seed_off, octaves,
                  footprint=self.footprint * float(np.max(freq)))

  def contrast(self, x, a):
    """``1 +- a`` (scaled by the style's noise amplitude) from noise ``x``."""
    return 1.0 + (x - 0.5) * 2.0 * a * self.style.noise_amp


def _pavement(q, g, contrast):
  tile = (frac(q[:, 0] / 0.6) < 0.05) | (frac(q[:, 2] / 0.6) < 0.05)
  v = 0.55 * contrast(g, 0.15)
  v = np.where(tile, v * 0.7, v)
  return np.stack([v * 1.02, v, v * 0.95], 1)


def ground(h: Hits):
  """Road inside the kerbs (asphalt, lane marks), the outer ground beyond."""
  q, rw = h.p, h.world.road_half_width
  road = np.abs(q[:, 0]) < rw
  g = h.noise(4.0)
  patch = h.noise(0.25, 7, 2)
  mid = h.noise(1.3, 9, 2)
  asphalt = 0.30 * h.contrast(g, 0.3) * h.contrast(patch, 0.2) * h.contrast(
      mid, 0.15)
  c = np.repeat(asphalt[:, None], 3, 1) * np.array([1.0, 1.0, 1.04])
  ax = np.abs(q[:, 0])
  centre = (ax < 0.08) & (frac(q[:, 2] / 9.0) < 0.4)
  edge = np.abs(ax - (rw - 0.3)) < 0.07
  mark = (centre | edge) & road
  c[mark] = (0.82 * h.contrast(g[mark], 0.1))[:, None]
  outer = ~road
  if h.world.ground_outer_material == M_GRASS:
    gg = h.noise(2.5, 11)[outer]
    c[outer] = mr.mix(_GRASS_DARK, _GRASS_LIGHT, gg)
  else:
    c[outer] = _pavement(q[outer], g[outer], h.contrast)
  return c


def pavement(h: Hits):
  return _pavement(h.p, h.noise(4.0), h.contrast) * h.col / 0.6


def grass(h: Hits):
  return mr.mix(_GRASS_DARK, _GRASS_LIGHT, h.noise(2.5, seed_off=11))


def facade(h: Hits):
  """Wall colour with windows, shop fronts, sills and floor bands; dark
  roofs."""
  q, nn, sd = h.p, h.nrm, h.seed
  u, v = face_uv(q, nn, h.anchor)
  g = h.noise(3.0)
  base = h.col * h.contrast(g, 0.18)[:, None]
  sp = 2.2 + 1.4 * mr.hash01(sd, 1)
  fh = 3.0 + 0.6 * mr.hash01(sd, 2)
  fu, fv = frac(u / sp), frac(v / fh)
  vertical = np.abs(nn[:, 1]) < 0.5
  upper = (fu > 0.22) & (fu < 0.78) & (fv > 0.3) & (fv < 0.82) & (v > fh)
  shop = (fu > 0.08) & (fu < 0.92) & (v > 0.5) & (v < fh * 0.8) & (
      mr.hash01(sd, 3) > 0.45)
  win = vertical & (upper | shop)
  glass = mr.mix(np.array([0.10, 0.13, 0.17]), np.array([0.35, 0.42, 0.5]),
                 h.noise(0.7, 5, 2) ** 2)
  base[win] = glass[win]
  sill = vertical & (fu > 0.2) & (fu < 0.8) & (np.abs(fv - 0.29) < 0.025) & (
      v > fh)
  base[sill] = base[sill] * 0.55
  band = vertical & (np.abs(fv) < 0.03) & (v > fh * 0.9)
  base[band] = base[band] * 0.8
  roof = ~vertical
  base[roof] = (0.25 * h.contrast(g[roof], 0.3))[:, None]
  return base


def wall(h: Hits):
  """Bricks in running bond with light mortar."""
  u, v = face_uv(h.p, h.nrm, h.anchor)
  row = np.floor(v / 0.22)
  bu = frac(u / 0.5 + 0.5 * (row % 2))
  mortar = (frac(v / 0.22) < 0.1) | (bu < 0.05)
  c = h.col * h.contrast(h.noise(6.0), 0.25)[:, None]
  c[mortar] = c[mortar] * 0.6 + 0.25
  return c


def fence(h: Hits):
  """Slats and two rails (the upper one at ``col2[0] * 2`` m)."""
  u, v = face_uv(h.p, h.nrm, h.anchor)
  slat = frac(u / 0.16) < 0.55
  rail = (np.abs(v - 0.3) < 0.05) | (np.abs(v - (h.col2[:, 0] * 2.0)) < 0.05)
  c = h.col * h.contrast(h.noise(8.0), 0.3)[:, None]
  c[~slat & ~rail] = c[~slat & ~rail] * 0.35
  return c


def metal(h: Hits):
  return h.col * h.contrast(h.noise([3.0, 0.4, 3.0], 3, 2), 0.2)[:, None]


def traffic_light(h: Hits):
  """Dark housing (height ``col2[0]``) with three lamps, one lit."""
  q, nn, a = h.p, h.nrm, h.anchor
  c = np.repeat((0.08 * h.contrast(h.noise(10.0), 0.3))[:, None], 3, 1)
  height = h.col2[:, 0]
  rel = q[:, 1] - a[:, 1]
  cx = a[:, 0] + 0.15
  lamp = np.clip(np.floor(rel / (height / 3.0)), 0, 2)
  lc = a[:, 1] + (lamp + 0.5) * height / 3.0
  front = nn[:, 2] < -0.5
  disc = front & ((q[:, 0] - cx)**2 + (q[:, 1] - lc)**2 < 0.09**2)
  on = mr.hash01(h.seed, 4) * 3.0
  lit = np.floor(on) == 2 - lamp
  colors = np.array([[0.95, 0.15, 0.1], [0.95, 0.7, 0.1], [0.1, 0.9, 0.3]])
  lamp_col = colors[lamp.astype(int)] * np.where(lit, 1.0, 0.25)[:, None]
  c[disc] = lamp_col[disc]
  return c


def sign(h: Hits):
  """A plate of size ``col2[0]`` with a light border and maybe a glyph;
  grey back."""
  q, nn, a = h.p, h.nrm, h.anchor
  size = h.col2[:, 0]
  du = (q[:, 0] - a[:, 0]) / size - 0.5
  dv = (q[:, 1] - a[:, 1]) / size - 0.5
  r = np.maximum(np.abs(du), np.abs(dv))
  c = h.col * h.contrast(h.noise(12.0), 0.15)[:, None]
  border = r > 0.38
  c[border] = 0.9
  glyph = (np.abs(du) < 0.18) & (np.abs(dv) < 0.05) & (mr.hash01(h.seed, 5)
                                                        > 0.5)
  c[glyph] = 0.95
  back = nn[:, 2] > 0.5
  c[back] = 0.45
  return c


def foliage(h: Hits):
  amp = h.style.noise_amp
  g = h.noise(3.0, octaves=4, seed_off=13)
  leaf = h.noise(9.0, 17, 2)
  return mr.mix(h.col * 0.3, h.col * 1.5, np.clip(
      0.5 + (g - 0.5) * 1.8 * amp + (leaf - 0.5) * 0.8 * amp, 0, 1))


def bark(h: Hits):
  return h.col * h.contrast(h.noise([8.0, 1.0, 8.0], 19), 0.35)[:, None]


def cloth(h: Hits):
  rel = h.p[:, 1] - h.anchor[:, 1]
  legs = rel < 0.82  # Trousers (colour2) below the hips.
  c = np.where(legs[:, None], h.col2 * 0.6, h.col)
  return c * h.contrast(h.noise(9.0), 0.2)[:, None]


def skin(h: Hits):
  return h.col * h.contrast(h.noise(10.0), 0.1)[:, None]


def paint(h: Hits):
  """Car body and cabin: glass, wheels, seams, lights and plates.

  ``col2`` = (is cabin, body length / 10, body width / 10).
  """
  q, nn, a, col2 = h.p, h.nrm, h.anchor, h.col2
  rel = q[:, 1] - a[:, 1]
  c = h.col * h.contrast(h.noise(5.0), 0.1)[:, None]
  cabin = col2[:, 0] > 0.5
  glass = cabin & (np.abs(nn[:, 1]) < 0.5) & (rel > 0.06)
  c[glass] = np.array([0.12, 0.14, 0.17]) * h.contrast(
      h.noise(2.0)[glass], 0.4)[:, None]
  body = ~cabin
  length, width = col2[:, 1] * 10.0, col2[:, 2] * 10.0
  side = body & (np.abs(nn[:, 0]) > 0.5)
  along = q[:, 2] - a[:, 2]
  # Wheels: dark tyres with grey rims on the sides.
  wc = np.where(along < 0.5 * length, 0.2 * length, 0.8 * length)
  r2 = (along - wc)**2 + (rel - 0.27)**2
  tyre = side & (r2 < 0.31**2)
  c[tyre] = 0.05
  rim = side & (r2 < 0.15**2)
  c[rim] = 0.45 * h.contrast(h.noise(20.0)[rim], 0.2)[:, None]
  seam = side & ~tyre & (rel > 0.35) & (
      (np.abs(along - 0.45 * length) < 0.02) |
      (np.abs(along - 0.7 * length) < 0.02) | (np.abs(rel - 0.5) < 0.015))
  c[seam] = c[seam] * 0.55
  # Lights and number plates on the ends (rear: -z, front: +z).
  end = body & (np.abs(nn[:, 2]) > 0.5)
  lx = q[:, 0] - a[:, 0]
  lamp = end & (rel > 0.55) & (rel < 0.72) & (
      (lx < 0.4) | (lx > width - 0.4)) & ((lx > 0.08) & (lx < width - 0.08))
  rear = nn[:, 2] < 0
  c[lamp & rear] = (0.7, 0.06, 0.05)
  c[lamp & ~rear] = (0.95, 0.92, 0.8)
  plate = end & (np.abs(lx - width / 2) < 0.26) & (rel > 0.3) & (rel < 0.42)
  c[plate] = 0.88
  c[body & (rel < 0.1)] = 0.04
  return c


def big_vehicle(h: Hits):
  """Bus, truck or train of height ``col2[0] * 4``; a window band when
  ``col2[1] > 0.5``."""
  q, nn, a = h.p, h.nrm, h.anchor
  rel = q[:, 1] - a[:, 1]
  height = h.col2[:, 0] * 4.0
  u, _ = face_uv(q, nn, a)
  c = h.col * h.contrast(h.noise(4.0), 0.1)[:, None]
  vertical = np.abs(nn[:, 1]) < 0.5
  band = vertical & (rel > 0.5 * height) & (rel < 0.85 * height) & (
      frac(u / 1.3) > 0.12) & (h.col2[:, 1] > 0.5)
  c[band] = np.array([0.1, 0.12, 0.15]) * h.contrast(
      h.noise(1.5)[band], 0.5)[:, None]
  stripe = vertical & (np.abs(rel - 0.4 * height) < 0.06)
  c[stripe] = c[stripe] * 0.5
  tyre = rel < 0.3
  c[tyre] = 0.05
  return c


def bike(h: Hits):
  rel = h.p[:, 1] - h.anchor[:, 1]
  c = h.col * h.contrast(h.noise(10.0), 0.3)[:, None]
  c[rel < 0.35] = 0.05  # Wheels.
  return c


def static(h: Hits):
  return h.col * h.contrast(h.noise(6.0), 0.25)[:, None]


def rail(h: Hits):
  """Gravel bed with two steel rails and sleepers."""
  q = h.p
  g = h.noise(5.0)
  c = np.repeat((0.28 * h.contrast(g, 0.3))[:, None], 3, 1) * np.array(
      [1.05, 1.0, 0.95])
  rx = frac((q[:, 0] - h.anchor[:, 0]) / 0.72)
  steel = (rx > 0.15) & (rx < 0.25) | (rx > 0.75) & (rx < 0.85)
  c[steel] = 0.55
  sleeper = frac(q[:, 2] / 0.6) < 0.3
  c[sleeper & ~steel] = c[sleeper & ~steel] * 0.6 + 0.1
  return c


# Material id -> shader(Hits) -> [N, 3] linear albedo (clipped by albedo).
SHADERS: dict[int, Callable[[Hits], np.ndarray]] = {
    GROUND_MATERIAL: ground,
    M_PAVEMENT: pavement,
    M_GRASS: grass,
    M_FACADE: facade,
    M_WALL: wall,
    M_FENCE: fence,
    M_METAL: metal,
    M_TLIGHT: traffic_light,
    M_SIGN: sign,
    M_FOLIAGE: foliage,
    M_BARK: bark,
    M_CLOTH: cloth,
    M_SKIN: skin,
    M_PAINT: paint,
    M_BIGVEH: big_vehicle,
    M_BIKE: bike,
    M_STATIC: static,
    M_RAIL: rail,
}


def albedo(world: mr.FrozenWorld, style: mr.Style, prim, points, nrm,
           salt: int, footprint):
  """Surface colour [N, 3] in [0, 1] of hits (world-fixed; no view terms).

  Args:
    world: the scene.
    style: domain look (texture frequency/contrast).
    prim: [N] primitive index or GROUND (no SKY).
    points: [N, 3] world hit points.
    nrm: [N, 3] surface normals.
    salt: domain salt of the noise, so domains differ in texture too.
    footprint: [N] metres covered by the pixel at the hit (texture LOD).

  Returns:
    [N, 3] float32 albedo (0 for a material without a shader).
  """
  out = np.zeros((len(prim), 3), np.float32)
  p = points.astype(np.float32)
  gi = np.maximum(prim, 0)
  mat = np.where(prim == mr.GROUND, GROUND_MATERIAL, world.material[gi])
  for material, shader in SHADERS.items():
    s = mat == material
    if s.any():
      g = gi[s]
      out[s] = shader(Hits(
          p=p[s], nrm=nrm[s], col=world.color[g], col2=world.color2[g],
          seed=world.seed[g], anchor=world.anchor[g], footprint=footprint[s],
          world=world, style=style, salt=salt))
  return np.clip(out, 0.0, 1.0)
