"""Vectorised numpy ray caster, solid noise and lighting of MiniCity.

The world is a set of primitives (axis-aligned boxes, vertical cylinders,
spheres) above the ground plane ``y = 0``; world axes are x right, y up and
z along the street. Cameras use the OpenCV convention (x right, y down,
z forward). Every ray of a pixel ``(u, v)`` is ``R @ K^-1 [u, v, 1]`` with
integer pixel coordinates at pixel centres (the monodepth convention), so the
ray parameter of a hit *is* the camera z-depth.

Shading depends only on the hit's world position, its surface normal and the
object it belongs to (solid value noise of world coordinates, Lambert light
from a fixed sun, sky light from the normal): there is no view-dependent term,
so a surface point has the same colour in every frame. The per-material
surface colours are ``shaders.py``.
"""

from __future__ import annotations

import dataclasses

import numpy as np


SKY = -1  # Primitive index of pixels that hit nothing.
GROUND = -2  # Primitive index of pixels that hit the ground plane.
_NEAR = 0.05  # Hits closer than this (metres of z-depth) are ignored.
_TILE = 32  # Screen tiles (pixels) used to cull primitives.


@dataclasses.dataclass
class Style:
  """The look of one domain; every field is a plain number or RGB triple.

  Attributes:
    sky_horizon: RGB of the sky at the horizon.
    sky_zenith: RGB of the sky straight up.
    cloud: cloud amount in [0, 1].
    sun_dir: direction towards the sun (world, y up), need not be unit.
    sun: sun intensity.
    ambient: sky-light intensity.
    tint: RGB multiplier applied to the final colour.
    gamma: exponent applied to the final colour.
    noise_freq: multiplier of all texture frequencies.
    noise_amp: multiplier of all texture contrasts.
    saturation: saturation factor of the final colour.
  """
  sky_horizon: tuple[float, float, float]
  sky_zenith: tuple[float, float, float]
  cloud: float
  sun_dir: tuple[float, float, float]
  sun: float
  ambient: float
  tint: tuple[float, float, float]
  gamma: float
  noise_freq: float
  noise_amp: float
  saturation: float


class World:
  """A growing set of primitives and their per-object attributes."""

  def __init__(self, road_half_width: float, ground_outer_label: int,
               ground_outer_material: int):
    self.road_half_width = road_half_width
    self.ground_outer_label = ground_outer_label
    self.ground_outer_material = ground_outer_material
    self._boxes, self._cyls, self._spheres = [], [], []
    self._attrs = []  # (label, material, color, color2, seed, anchor)

  def _attr(self, label, material, color, color2, seed, anchor):
    self._attrs.append((label, material, tuple(color),
                        tuple(color if color2 is None else color2),
                        int(seed) & 0x7FFFFFFF, tuple(anchor)))
    return len(self._attrs) - 1

  def box(self, lo, hi, label, material, color, color2=None, seed=0):
    lo, hi = np.minimum(lo, hi), np.maximum(lo, hi)
    gid = self._attr(label, material, color, color2, seed, lo)
    self._boxes.append((*lo, *hi, gid))

  def cylinder(self, cx, cz, radius, y0, y1, label, material, color,
               color2=None, seed=0):
    gid = self._attr(label, material, color, color2, seed, (cx, y0, cz))
    self._cyls.append((cx, cz, radius, y0, y1, gid))

  def sphere(self, center, radius, label, material, color, color2=None,
             seed=0):
    gid = self._attr(label, material, color, color2, seed, center)
    self._spheres.append((*center, radius, gid))

  def finalize(self) -> "FrozenWorld":
    def arr(rows, width):
      return np.array(rows, np.float64).reshape(-1, width)
    attrs = self._attrs
    return FrozenWorld(
        road_half_width=self.road_half_width,
        ground_outer_label=self.ground_outer_label,
        ground_outer_material=self.ground_outer_material,
        boxes=arr(self._boxes, 7), cyls=arr(self._cyls, 6),
        spheres=arr(self._spheres, 5),
        label=np.array([a[0] for a in attrs], np.int32),
        material=np.array([a[1] for a in attrs], np.int32),
        color=np.array([a[2] for a in attrs], np.float32).reshape(-1, 3),
        color2=np.array([a[3] for a in attrs], np.float32).reshape(-1, 3),
        seed=np.array([a[4] for a in attrs], np.uint32),
        anchor=np.array([a[5] for a in attrs], np.float32).reshape(-1, 3))


@dataclasses.dataclass
class FrozenWorld:
  """Primitive arrays. boxes [B, 7] = lo xyz, hi xyz, attribute index;
  cyls [C, 6] = cx, cz, radius, y0, y1, index; spheres [S, 5] = centre xyz,
  radius, index. Attributes are indexed by primitive index."""
  road_half_width: float
  ground_outer_label: int
  ground_outer_material: int
  boxes: np.ndarray
  cyls: np.ndarray
  spheres: np.ndarray
  label: np.ndarray
  material: np.ndarray
  color: np.ndarray
  color2: np.ndarray
  seed: np.ndarray
  anchor: np.ndarray


# ----------------------------------------------------------------- noise ---


def _hash(ix, iy, iz, seed):
  """uint32 hash of integer lattice points (arrays broadcast)."""
  h = (ix.astype(np.uint32) * np.uint32(0x8DA6B343)
       ^ iy.astype(np.uint32) * np.uint32(0xD8163841)
       ^ iz.astype(np.uint32) * np.uint32(0xCB1AB31F)
       ^ np.asarray(seed, np.uint32) * np.uint32(0x165667B1))
  h ^= h >> np.uint32(15)
  h *= np.uint32(0x2C1B3C6D)
  h ^= h >> np.uint32(12)
  h *= np.uint32(0x297A2D39)
  h ^= h >> np.uint32(15)
  return h


def hash01(seed, salt):
  """Deterministic float in [0, 1) per (seed, salt); seed may be an array."""
  s = np.asarray(seed, np.uint32)
  h = _hash(s, np.full_like(s, salt), np.zeros_like(s), np.uint32(977))
  return h.astype(np.float32) / np.float32(2.0**32)


def value_noise(p, seed):
  """Trilinear value noise in [0, 1] of world points p [N, 3]."""
  fl = np.floor(p)
  f = (p - fl).astype(np.float32)
  w = f * f * (3.0 - 2.0 * f)
  i = fl.astype(np.int64)
  ix, iy, iz = i[:, 0], i[:, 1], i[:, 2]
  out = np.zeros(len(p), np.float32)
  for dx in (0, 1):
    wx = w[:, 0] if dx else 1.0 - w[:, 0]
    for dy in (0, 1):
      wy = w[:, 1] if dy else 1.0 - w[:, 1]
      for dz in (0, 1):
        wz = w[:, 2] if dz else 1.0 - w[:, 2]
        h = _hash(ix + dx, iy + dy, iz + dz, seed)
        out += (h >> np.uint32(8)).astype(np.float32) * np.float32(
            1.0 / 2**24) * wx * wy * wz
  return out


def fbm(p, seed, octaves=3, footprint=None):
  """Fractal value noise in [0, 1] of points p [N, 3] (already scaled).

  Args:
    p: [N, 3] points in noise units (world metres times frequency).
    seed: integer seed.
    octaves: number of octaves; octave o has lattice period 2**-o.
    footprint: optional [N] size of a pixel in noise units. Octaves whose
      period spans fewer than ~3 pixels fade to their mean, a box-filter
      level of detail that stops far textures from aliasing into noise that
      changes from frame to frame.

  Returns:
    [N] float32.
  """
  total = np.zeros(len(p), np.float32)
  amp, norm = 1.0, 0.0
  for o in range(octaves):
    period = 0.5**o
    if footprint is None:
      wgt = 1.0
    else:
      wgt = np.clip((period / np.maximum(footprint, 1e-9) - 1.5) / 2.0, 0, 1)
      if not np.any(wgt > 0):
        total += amp * 0.5
        norm += amp
        amp *= 0.5
        continue
    n = value_noise(p * (2.0**o), seed + 131 * o)
    total += amp * (0.5 + (n - 0.5) * wgt)
    norm += amp
    amp *= 0.5
  return total / norm


# ----------------------------------------------------------- intersection ---


def _screen_boxes(lo, hi, origin, rot, k, width, height):
  """Conservative screen bounding boxes [M, 4] (u0, u1, v0, v1) of AABBs.

  Returns the boxes and a keep mask (False for prims behind the camera or
  off screen).
  """
  m = len(lo)
  corners = np.empty((m, 8, 3))
  for c in range(8):
    corners[:, c] = np.where([(c >> 0) & 1, (c >> 1) & 1, (c >> 2) & 1],
                             hi, lo)
  cam = (corners - origin) @ rot  # world -> camera: R^T (p - o).
  z = cam[..., 2]
  in_front = z > _NEAR
  zs = np.maximum(z, _NEAR)
  u = k[0, 0] * cam[..., 0] / zs + k[0, 2]
  v = k[1, 1] * cam[..., 1] / zs + k[1, 2]
  bb = np.stack([u.min(1), u.max(1), v.min(1), v.max(1)], 1)
  partial = ~in_front.all(1)
  bb[partial] = (-1e9, 1e9, -1e9, 1e9)
  keep = in_front.any(1)
  keep &= (bb[:, 1] >= -1) & (bb[:, 0] <= width) & (bb[:, 3] >= -1) & (
      bb[:, 2] <= height)
  return bb, keep


def _hit_boxes(o, d, inv, boxes):
  """Nearest hit [N] t and primitive index of rays d [N, 3] from o."""
  tnear = np.full((len(d), len(boxes)), -np.inf, np.float32)
  tfar = np.full((len(d), len(boxes)), np.inf, np.float32)
  for a in range(3):
    t1 = (boxes[None, :, a] - o[a]).astype(np.float32) * inv[:, a, None]
    t2 = (boxes[None, :, a + 3] - o[a]).astype(np.float32) * inv[:, a, None]
    np.maximum(tnear, np.minimum(t1, t2), out=tnear)
    np.minimum(tfar, np.maximum(t1, t2), out=tfar)
  t = np.where((tnear <= tfar) & (tnear > _NEAR), tnear, np.inf)
  j = np.argmin(t, 1)
  return t[np.arange(len(d)), j], boxes[j, 6].astype(np.int64)


def _hit_cyls(o, d, cyls):
  ox = (o[0] - cyls[:, 0]).astype(np.float32)[None]
  oz = (o[2] - cyls[:, 1]).astype(np.float32)[None]
  dx, dy, dz = d[:, 0:1], d[:, 1:2], d[:, 2:3]
  a = dx * dx + dz * dz + 1e-12
  b = dx * ox + dz * oz
  c = ox * ox + oz * oz - (cyls[:, 2]**2).astype(np.float32)[None]
  disc = b * b - a * c
  with np.errstate(invalid="ignore"):
    t = (-b - np.sqrt(disc)) / a
  y = o[1] + t * dy
  ok = (disc >= 0) & (t > _NEAR) & (y >= cyls[None, :, 3]) & (
      y <= cyls[None, :, 4])
  t = np.where(ok, t, np.inf)
  # Top caps, so that cylinders seen from above are closed.
  with np.errstate(divide="ignore", invalid="ignore"):
    tc = (cyls[None, :, 4] - o[1]).astype(np.float32) / dy
  xc = ox + tc * dx
  zc = oz + tc * dz
  okc = (tc > _NEAR) & (xc * xc + zc * zc <= (cyls[:, 2]**2)[None])
  t = np.minimum(t, np.where(okc, tc, np.inf)).astype(np.float32)
  j = np.argmin(t, 1)
  return t[np.arange(len(d)), j], cyls[j, 5].astype(np.int64)


def _hit_spheres(o, d, spheres):
  oc = (o[None] - spheres[:, :3]).astype(np.float32)  # [S, 3]
  a = (d * d).sum(1, keepdims=True)
  b = d @ oc.T
  c = (oc * oc).sum(1)[None] - (spheres[:, 3]**2).astype(np.float32)[None]
  disc = b * b - a * c
  with np.errstate(invalid="ignore"):
    t = (-b - np.sqrt(disc)) / a
  t = np.where((disc >= 0) & (t > _NEAR), t, np.inf).astype(np.float32)
  j = np.argmin(t, 1)
  return t[np.arange(len(d)), j], spheres[j, 4].astype(np.int64)


def cast(world: FrozenWorld, pose: np.ndarray, k: np.ndarray, width: int,
         height: int, uv: np.ndarray | None = None):
  """Casts one ray per pixel, or per given sub-pixel position.

  Args:
    world: the scene.
    pose: [4, 4] camera-to-world (OpenCV camera axes).
    k: [3, 3] intrinsics in pixels.
    width: image width W.
    height: image height H.
    uv: optional [N, 2] float pixel coordinates (u, v) to cast instead of
      the W * H pixel centres.

  Returns:
    depth: [H, W] (or [N]) float32 z-depth (inf for sky).
    prim: [H, W] (or [N]) int64 primitive index, SKY or GROUND.
    dirs: [H, W, 3] (or [N, 3]) float32 world ray directions whose camera
      z-component is 1.
  """
  rot, origin = pose[:3, :3], pose[:3, 3]
  grid = uv is None
  if grid:
    vv, uu = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    uv = np.stack([uu, vv], -1).reshape(-1, 2).astype(np.float64)
  pix = np.concatenate([uv, np.ones((len(uv), 1))], 1)
  cam = pix @ np.linalg.inv(k).T
  dirs = (cam @ rot.T).astype(np.float32)  # [N, 3]
  n = len(dirs)
  depth = np.full(n, np.inf, np.float32)
  prim = np.full(n, SKY, np.int64)
  # Ground plane y = 0.
  with np.errstate(divide="ignore"):
    tg = np.where(dirs[:, 1] < -1e-6, -origin[1] / dirs[:, 1], np.inf)
  g = np.isfinite(tg) & (tg > _NEAR)
  depth[g] = tg[g]
  prim[g] = GROUND
  safe = np.where(np.abs(dirs) < 1e-9, 1e-9, dirs)
  inv = (1.0 / safe).astype(np.float32)
  kinds = []
  for arr, lo_hi in ((world.boxes, lambda a: (a[:, :3], a[:, 3:6])),
                     (world.cyls, lambda a: (
                         np.stack([a[:, 0] - a[:, 2], a[:, 3],
                                   a[:, 1] - a[:, 2]], 1),
                         np.stack([a[:, 0] + a[:, 2], a[:, 4],
                                   a[:, 1] + a[:, 2]], 1))),
                     (world.spheres, lambda a: (a[:, :3] - a[:, 3:4],
                                                a[:, :3] + a[:, 3:4]))):
    if len(arr):
      lo, hi = lo_hi(arr)
      bb, keep = _screen_boxes(lo, hi, origin, rot, k, width, height)
      kinds.append((arr[keep], bb[keep]))
    else:
      kinds.append((arr, np.zeros((0, 4))))
  fns = (lambda o, d, i, a: _hit_boxes(o, d, i, a),
         lambda o, d, i, a: _hit_cyls(o, d, a),
         lambda o, d, i, a: _hit_spheres(o, d, a))
  # Group rays by screen tile (sorted once) so each tile tests only the
  # primitives whose screen bounding box overlaps it.
  ntu, ntv = -(-width // _TILE), -(-height // _TILE)
  tu = np.clip(np.floor(uv[:, 0] + 0.5) // _TILE, 0, ntu - 1).astype(np.int64)
  tv = np.clip(np.floor(uv[:, 1] + 0.5) // _TILE, 0, ntv - 1).astype(np.int64)
  tile = tv * ntu + tu
  order = np.argsort(tile, kind="stable")
  bounds = np.searchsorted(tile[order], np.arange(ntu * ntv + 1))
  for t_id in range(ntu * ntv):
    sel = order[bounds[t_id]:bounds[t_id + 1]]
    if not len(sel):
      continue
    v0, u0 = (t_id // ntu) * _TILE, (t_id % ntu) * _TILE
    v1, u1 = v0 + _TILE, u0 + _TILE
    for (arr, bb), fn in zip(kinds, fns):
      if not len(arr):
        continue
      m = (bb[:, 1] >= u0 - 1) & (bb[:, 0] <= u1) & (bb[:, 3] >= v0 - 1) & (
          bb[:, 2] <= v1)
      if not m.any():
        continue
      t, j = fn(origin, dirs[sel], inv[sel], arr[m])
      better = t < depth[sel]
      depth[sel[better]] = t[better]
      prim[sel[better]] = j[better]
  if not grid:
    return depth, prim, dirs
  return (depth.reshape(height, width), prim.reshape(height, width),
          dirs.reshape(height, width, 3))


def normals(world: FrozenWorld, prim, points):
  """Surface normals [N, 3] of hits points [N, 3] on primitives prim [N]."""
  nrm = np.zeros_like(points)
  nrm[:, 1] = 1.0  # Ground and fallback.
  kind = np.full(len(world.label), -1)
  row = np.zeros(len(world.label), np.int64)
  for kd, arr, col in ((0, world.boxes, 6), (1, world.cyls, 5),
                       (2, world.spheres, 4)):
    if len(arr):
      idx = arr[:, col].astype(np.int64)
      kind[idx] = kd
      row[idx] = np.arange(len(arr))
  valid = prim >= 0
  pk = np.where(valid, kind[np.maximum(prim, 0)], -1)
  pr = row[np.maximum(prim, 0)]
  s = pk == 0
  if s.any():
    b = world.boxes[pr[s]]
    p = points[s]
    dist = np.concatenate([np.abs(p - b[:, :3]), np.abs(p - b[:, 3:6])], 1)
    face = np.argmin(dist, 1)
    n = np.zeros_like(p)
    n[np.arange(len(p)), face % 3] = np.where(face < 3, -1.0, 1.0)
    nrm[s] = n
  s = pk == 1
  if s.any():
    c = world.cyls[pr[s]]
    p = points[s]
    n = np.stack([p[:, 0] - c[:, 0], np.zeros(len(p)), p[:, 2] - c[:, 1]], 1)
    top = p[:, 1] >= c[:, 4] - 1e-3
    n[top] = (0.0, 1.0, 0.0)
    nrm[s] = n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-6)
  s = pk == 2
  if s.any():
    c = world.spheres[pr[s]]
    n = points[s] - c[:, :3]
    nrm[s] = n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-6)
  return nrm


# --------------------------------------------------------------- shading ---


def mix(a, b, t):
  """``a * (1 - t) + b * t`` with ``t`` [N] or [N, 1]."""
  t = t[:, None] if np.ndim(t) == 1 else t
  return a * (1.0 - t) + b * t


def shade(style: Style, albedo_, nrm, sun_visible=None, ambient_occ=None):
  """Lambert sun plus hemispheric sky light; view independent.

  Args:
    style: domain look.
    albedo_: [N, 3] surface colour.
    nrm: [N, 3] normals.
    sun_visible: optional [N] in [0, 1]; 0 = in a cast shadow.
    ambient_occ: optional [N] in [0, 1] multiplier of the sky light.

  Returns:
    [N, 3] linear colour.
  """
  sun = np.asarray(style.sun_dir, np.float32)
  sun = sun / np.linalg.norm(sun)
  lam = np.clip(nrm @ sun, 0.0, None)
  if sun_visible is not None:
    lam = lam * sun_visible
  sky = 0.6 + 0.4 * nrm[:, 1]
  if ambient_occ is not None:
    sky = sky * ambient_occ
  return albedo_ * (style.ambient * sky + style.sun * lam)[:, None]


_VEHICLES = (26, 27, 28, 31, 32, 33)  # Cityscapes ids of vehicle classes.


def ground_shadows(world: FrozenWorld, style: Style, points, soft=0.3):
  """Sun shadows and contact occlusion on upward-facing ground points.

  Each primitive's shadow on the ground is approximated by the bounding box
  of its footprint swept along the sun direction (spheres: a disc), with a
  soft rim of `soft` metres. Everything depends on world positions only.

  Args:
    world: the scene.
    style: gives the sun direction.
    points: [N, 3] world points on the ground (y ~ 0).
    soft: width (m) of the penumbra rim.

  Returns:
    sun_visible: [N] float32 in [0, 1].
    ambient_occ: [N] float32 in [0.55, 1] (darker under vehicles).
  """
  n = len(points)
  shadow = np.zeros(n, np.float32)
  occ = np.zeros(n, np.float32)
  if not n:
    return 1.0 - shadow, 1.0 - occ
  sun = np.asarray(style.sun_dir, np.float64)
  sun = sun / np.linalg.norm(sun)
  off = -sun[[0, 2]] / max(sun[1], 0.2)  # ground shift per metre of height
  casters = []  # (xlo, xhi, zlo, zhi, is_disc, is_vehicle)
  for b in world.boxes:
    if b[4] < 0.3:  # decals and kerbs cast no visible shadow
      continue
    x0, x1, z0, z1 = b[0], b[3], b[2], b[5]
    sx, sz = off * b[4]
    casters.append((min(x0, x0 + sx), max(x1, x1 + sx), min(z0, z0 + sz),
                    max(z1, z1 + sz), False,
                    world.label[int(b[6])] in _VEHICLES))
  for c in world.cyls:
    r = c[2]
    sx, sz = off * c[4]
    casters.append((min(c[0] - r, c[0] - r + sx), max(c[0] + r, c[0] + r + sx),
                    min(c[1] - r, c[1] - r + sz), max(c[1] + r, c[1] + r + sz),
                    False, False))
  for sp in world.spheres:
    cx, cz = sp[0] + off[0] * sp[1], sp[2] + off[1] * sp[1]
    casters.append((cx - sp[3], cx + sp[3], cz - sp[3], cz + sp[3], True,
                    False))
  order = np.argsort(points[:, 2], kind="stable")
  zs = points[order, 2]
  xs = points[order, 0]
  for x0, x1, z0, z1, disc, vehicle in casters:
    i0 = np.searchsorted(zs, z0 - soft)
    i1 = np.searchsorted(zs, z1 + soft)
    if i0 >= i1:
      continue
    x, z = xs[i0:i1], zs[i0:i1]
    if disc:
      r = 0.5 * (x1 - x0)
      d = np.hypot(x - 0.5 * (x0 + x1), z - 0.5 * (z0 + z1)) - r
      d = np.maximum(d, 0.0)
    else:
      d = np.hypot(np.maximum(np.maximum(x0 - x, x - x1), 0.0),
                   np.maximum(np.maximum(z0 - z, z - z1), 0.0))
    cov = np.clip(1.0 - d / soft, 0.0, 1.0).astype(np.float32)
    idx = order[i0:i1]
    shadow[idx] = np.maximum(shadow[idx], cov)
    if vehicle:
      occ[idx] = np.maximum(occ[idx], cov)
  return 1.0 - shadow, 1.0 - 0.45 * occ


def sky_color(style: Style, dirs, salt):
  """Sky colour [N, 3] from world ray directions [N, 3] (at infinity)."""
  d = dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
  up = np.clip(d[:, 1], 0.0, 1.0) ** 0.6
  c = mix(np.asarray(style.sky_horizon), np.asarray(style.sky_zenith), up)
  # Clouds on a virtual plane high above, parameterised by direction only.
  plane = d[:, [0, 2]] / np.maximum(d[:, 1:2], 0.05)
  pc = np.concatenate([plane * 1.5, np.zeros((len(d), 1))], 1)
  cl = fbm(pc.astype(np.float32), salt + 23, 4)
  cover = np.clip((cl - (1.0 - style.cloud)) * 3.0, 0.0, 1.0)[:, None]
  return mix(c, np.array([0.92, 0.93, 0.95]), cover * 0.85)


def finish(style: Style, rgb):
  """Applies the domain's tone curve; returns uint8 of the same shape."""
  rgb = rgb * np.asarray(style.tint, np.float32)
  lum = rgb.mean(-1, keepdims=True)
  rgb = lum + (rgb - lum) * style.saturation
  rgb = np.clip(rgb, 0.0, 1.0) ** (1.0 / style.gamma)
  return np.round(rgb * 255.0).astype(np.uint8)
