"""Vectorised numpy ray caster and world-fixed procedural shading of MiniCity.

The world is a set of primitives (axis-aligned boxes, vertical cylinders,
spheres) above the ground plane ``y = 0``; world axes are x right, y up and
z along the street. Cameras use the OpenCV convention (x right, y down,
z forward). Every ray of a pixel ``(u, v)`` is ``R @ K^-1 [u, v, 1]`` with
integer pixel coordinates at pixel centres (the monodepth convention), so the
ray parameter of a hit *is* the camera z-depth.

Shading depends only on the hit's world position, its surface normal and the
object it belongs to (solid value noise of world coordinates, Lambert light
from a fixed sun, sky light from the normal): there is no view-dependent term,
so a surface point has the same colour in every frame.
"""

from __future__ import annotations

import dataclasses

import numpy as np

# Materials: each selects one texture function.
(M_ROAD, M_PAVEMENT, M_GRASS, M_FACADE, M_WALL, M_FENCE, M_METAL,
 M_TLIGHT, M_SIGN, M_FOLIAGE, M_BARK, M_CLOTH, M_SKIN, M_PAINT, M_BIGVEH,
 M_BIKE, M_STATIC, M_RAIL) = range(18)

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


def _frac(x):
  return x - np.floor(x)


def _face_uv(p, n, anchor):
  """Coordinates along a vertical face: (horizontal, height above anchor)."""
  along = np.where(np.abs(n[:, 0]) > 0.5, p[:, 2] - anchor[:, 2],
                   p[:, 0] - anchor[:, 0])
  return along, p[:, 1] - anchor[:, 1]


def _mix(a, b, t):
  t = t[:, None] if np.ndim(t) == 1 else t
  return a * (1.0 - t) + b * t


def albedo(world: FrozenWorld, style: Style, prim, points, nrm, salt: int,
           footprint):
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
    [N, 3] float32 albedo.
  """
  n = len(prim)
  out = np.zeros((n, 3), np.float32)
  p = points.astype(np.float32)
  gi = np.maximum(prim, 0)
  mat = np.where(prim == GROUND, -1, world.material[gi])
  col = world.color[gi]
  col2 = world.color2[gi]
  seed = world.seed[gi]
  anchor = world.anchor[gi]
  fq, amp = style.noise_freq, style.noise_amp
  rw = world.road_half_width

  def noise(s, freq, seed_off=0, octaves=3, pts=None):
    freq = np.asarray(freq, np.float32) * fq
    pts = p[s] if pts is None else pts
    return fbm(pts * freq, salt + seed_off, octaves,
               footprint=footprint[s] * float(np.max(freq)))

  grain = noise

  def contrast(x, a):
    return 1.0 + (x - 0.5) * 2.0 * a * amp

  # Ground: road inside the kerbs, the domain's outer ground beyond.
  s = mat == -1
  if s.any():
    q = p[s]
    road = np.abs(q[:, 0]) < rw
    g = grain(s, 4.0)
    patch = noise(s, 0.25, 7, 2)
    mid = noise(s, 1.3, 9, 2)
    asphalt = 0.30 * contrast(g, 0.3) * contrast(patch, 0.2) * contrast(
        mid, 0.15)
    c = np.repeat(asphalt[:, None], 3, 1) * np.array([1.0, 1.0, 1.04])
    ax = np.abs(q[:, 0])
    centre = (ax < 0.08) & (_frac(q[:, 2] / 9.0) < 0.4)
    edge = np.abs(ax - (rw - 0.3)) < 0.07
    mark = (centre | edge) & road
    c[mark] = (0.82 * contrast(g[mark], 0.1))[:, None]
    outer = ~road
    if world.ground_outer_material == M_GRASS:
      gg = noise(s, 2.5, 11)[outer]
      c[outer] = _mix(np.array([0.30, 0.36, 0.14]),
                      np.array([0.45, 0.40, 0.22]), gg)
    else:
      c[outer] = _pavement(q[outer], g[outer], contrast)
    out[s] = c

  s = mat == M_PAVEMENT
  if s.any():
    out[s] = _pavement(p[s], grain(s, 4.0), contrast) * col[s] / 0.6

  s = mat == M_GRASS
  if s.any():
    out[s] = _mix(np.array([0.30, 0.36, 0.14]), np.array([0.45, 0.40, 0.22]),
                  grain(s, 2.5, seed_off=11))

  s = mat == M_FACADE
  if s.any():
    q, nn, sd = p[s], nrm[s], seed[s]
    u, v = _face_uv(q, nn, anchor[s])
    g = grain(s, 3.0)
    base = col[s] * contrast(g, 0.18)[:, None]
    sp = 2.2 + 1.4 * hash01(sd, 1)
    fh = 3.0 + 0.6 * hash01(sd, 2)
    fu, fv = _frac(u / sp), _frac(v / fh)
    vertical = np.abs(nn[:, 1]) < 0.5
    upper = (fu > 0.22) & (fu < 0.78) & (fv > 0.3) & (fv < 0.82) & (v > fh)
    shop = (fu > 0.08) & (fu < 0.92) & (v > 0.5) & (v < fh * 0.8) & (
        hash01(sd, 3) > 0.45)
    win = vertical & (upper | shop)
    glass = _mix(np.array([0.10, 0.13, 0.17]), np.array([0.35, 0.42, 0.5]),
                 noise(s, 0.7, 5, 2) ** 2)
    base[win] = glass[win]
    sill = vertical & (fu > 0.2) & (fu < 0.8) & (np.abs(fv - 0.29) < 0.025) & (
        v > fh)
    base[sill] = base[sill] * 0.55
    band = vertical & (np.abs(fv) < 0.03) & (v > fh * 0.9)
    base[band] = base[band] * 0.8
    roof = ~vertical
    base[roof] = (0.25 * contrast(g[roof], 0.3))[:, None]
    out[s] = base

  s = mat == M_WALL
  if s.any():
    q, nn = p[s], nrm[s]
    u, v = _face_uv(q, nn, anchor[s])
    row = np.floor(v / 0.22)
    bu = _frac(u / 0.5 + 0.5 * (row % 2))
    mortar = (_frac(v / 0.22) < 0.1) | (bu < 0.05)
    g = grain(s, 6.0)
    c = col[s] * contrast(g, 0.25)[:, None]
    c[mortar] = c[mortar] * 0.6 + 0.25
    out[s] = c

  s = mat == M_FENCE
  if s.any():
    q, nn = p[s], nrm[s]
    u, v = _face_uv(q, nn, anchor[s])
    slat = _frac(u / 0.16) < 0.55
    rail = (np.abs(v - 0.3) < 0.05) | (np.abs(v - (col2[s, 0] * 2.0)) < 0.05)
    g = grain(s, 8.0)
    c = col[s] * contrast(g, 0.3)[:, None]
    c[~slat & ~rail] = c[~slat & ~rail] * 0.35
    out[s] = c

  s = mat == M_METAL
  if s.any():
    q = p[s]
    g = noise(s, [3.0, 0.4, 3.0], 3, 2)
    out[s] = col[s] * contrast(g, 0.2)[:, None]

  s = mat == M_TLIGHT
  if s.any():
    q, nn, a = p[s], nrm[s], anchor[s]
    c = np.repeat((0.08 * contrast(grain(s, 10.0), 0.3))[:, None], 3, 1)
    h = col2[s, 0]  # housing height
    rel = q[:, 1] - a[:, 1]
    cx = a[:, 0] + 0.15
    lamp = np.clip(np.floor(rel / (h / 3.0)), 0, 2)
    lc = a[:, 1] + (lamp + 0.5) * h / 3.0
    front = nn[:, 2] < -0.5
    disc = front & ((q[:, 0] - cx)**2 + (q[:, 1] - lc)**2 < 0.09**2)
    on = hash01(seed[s], 4) * 3.0
    lit = np.floor(on) == 2 - lamp
    colors = np.array([[0.95, 0.15, 0.1], [0.95, 0.7, 0.1], [0.1, 0.9, 0.3]])
    lamp_col = colors[lamp.astype(int)] * np.where(lit, 1.0, 0.25)[:, None]
    c[disc] = lamp_col[disc]
    out[s] = c

  s = mat == M_SIGN
  if s.any():
    q, nn, a = p[s], nrm[s], anchor[s]
    size = col2[s, 0]
    du = (q[:, 0] - a[:, 0]) / size - 0.5
    dv = (q[:, 1] - a[:, 1]) / size - 0.5
    r = np.maximum(np.abs(du), np.abs(dv))
    c = col[s] * contrast(grain(s, 12.0), 0.15)[:, None]
    border = r > 0.38
    c[border] = 0.9
    glyph = (np.abs(du) < 0.18) & (np.abs(dv) < 0.05) & (hash01(seed[s], 5)
                                                          > 0.5)
    c[glyph] = 0.95
    back = nn[:, 2] > 0.5
    c[back] = 0.45
    out[s] = c

  s = mat == M_FOLIAGE
  if s.any():
    g = grain(s, 3.0, octaves=4, seed_off=13)
    leaf = noise(s, 9.0, 17, 2)
    out[s] = _mix(col[s] * 0.3, col[s] * 1.5, np.clip(
        0.5 + (g - 0.5) * 1.8 * amp + (leaf - 0.5) * 0.8 * amp, 0, 1))

  s = mat == M_BARK
  if s.any():
    g = noise(s, [8.0, 1.0, 8.0], 19)
    out[s] = col[s] * contrast(g, 0.35)[:, None]

  s = mat == M_CLOTH
  if s.any():
    q, a = p[s], anchor[s]
    rel = q[:, 1] - a[:, 1]
    legs = rel < 0.82  # Trousers (colour2) below the hips.
    c = np.where(legs[:, None], col2[s] * 0.6, col[s])
    out[s] = c * contrast(grain(s, 9.0), 0.2)[:, None]

  s = mat == M_SKIN
  if s.any():
    out[s] = col[s] * contrast(grain(s, 10.0), 0.1)[:, None]

  s = mat == M_PAINT
  if s.any():
    # colour2 = (is cabin, body length / 10, body width / 10).
    q, nn, a = p[s], nrm[s], anchor[s]
    rel = q[:, 1] - a[:, 1]
    c = col[s] * contrast(grain(s, 5.0), 0.1)[:, None]
    cabin = col2[s, 0] > 0.5
    glass = cabin & (np.abs(nn[:, 1]) < 0.5) & (rel > 0.06)
    c[glass] = np.array([0.12, 0.14, 0.17]) * contrast(
        grain(s, 2.0)[glass], 0.4)[:, None]
    body = ~cabin
    length, width = col2[s, 1] * 10.0, col2[s, 2] * 10.0
    side = body & (np.abs(nn[:, 0]) > 0.5)
    along = q[:, 2] - a[:, 2]
    # Wheels: dark tyres with grey rims on the sides.
    wc = np.where(along < 0.5 * length, 0.2 * length, 0.8 * length)
    r2 = (along - wc)**2 + (rel - 0.27)**2
    tyre = side & (r2 < 0.31**2)
    c[tyre] = 0.05
    rim = side & (r2 < 0.15**2)
    c[rim] = 0.45 * contrast(grain(s, 20.0)[rim], 0.2)[:, None]
    seam = side & ~tyre & (rel > 0.35) & (
        (np.abs(along - 0.45 * length) < 0.02) |
        (np.abs(along - 0.7 * length) < 0.02) | (np.abs(rel - 0.5) < 0.015))
    c[seam] = c[seam] * 0.55
    # Lights and number plates on the ends (rear: -z, front: +z).
    end = body & (np.abs(nn[:, 2]) > 0.5)
    lx = q[:, 0] - a[:, 0]
    lamp = end & (rel > 0.55) & (rel < 0.72) & (
        (lx < 0.4) | (lx > width - 0.4)) & ((lx > 0.08) &
                                              (lx < width - 0.08))
    rear = nn[:, 2] < 0
    c[lamp & rear] = (0.7, 0.06, 0.05)
    c[lamp & ~rear] = (0.95, 0.92, 0.8)
    plate = end & (np.abs(lx - width / 2) < 0.26) & (rel > 0.3) & (rel < 0.42)
    c[plate] = 0.88
    c[body & (rel < 0.1)] = 0.04
    out[s] = c

  s = mat == M_BIGVEH
  if s.any():
    q, nn, a = p[s], nrm[s], anchor[s]
    rel = q[:, 1] - a[:, 1]
    h = col2[s, 0] * 4.0
    u, _ = _face_uv(q, nn, a)
    c = col[s] * contrast(grain(s, 4.0), 0.1)[:, None]
    vertical = np.abs(nn[:, 1]) < 0.5
    band = vertical & (rel > 0.5 * h) & (rel < 0.85 * h) & (
        _frac(u / 1.3) > 0.12) & (col2[s, 1] > 0.5)
    c[band] = np.array([0.1, 0.12, 0.15]) * contrast(
        grain(s, 1.5)[band], 0.5)[:, None]
    stripe = vertical & (np.abs(rel - 0.4 * h) < 0.06)
    c[stripe] = c[stripe] * 0.5
    tyre = rel < 0.3
    c[tyre] = 0.05
    out[s] = c

  s = mat == M_BIKE
  if s.any():
    q, a = p[s], anchor[s]
    rel = q[:, 1] - a[:, 1]
    c = col[s] * contrast(grain(s, 10.0), 0.3)[:, None]
    wheel = rel < 0.35
    c[wheel] = 0.05
    out[s] = c

  s = mat == M_STATIC
  if s.any():
    out[s] = col[s] * contrast(grain(s, 6.0), 0.25)[:, None]

  s = mat == M_RAIL
  if s.any():
    q = p[s]
    g = grain(s, 5.0)
    c = np.repeat((0.28 * contrast(g, 0.3))[:, None], 3, 1) * np.array(
        [1.05, 1.0, 0.95])
    rx = _frac((q[:, 0] - anchor[s, 0]) / 0.72)
    steel = (rx > 0.15) & (rx < 0.25) | (rx > 0.75) & (rx < 0.85)
    c[steel] = 0.55
    sleeper = _frac(q[:, 2] / 0.6) < 0.3
    c[sleeper & ~steel] = c[sleeper & ~steel] * 0.6 + 0.1
    out[s] = c
  return np.clip(out, 0.0, 1.0)


def _pavement(q, g, contrast):
  tile = (_frac(q[:, 0] / 0.6) < 0.05) | (_frac(q[:, 2] / 0.6) < 0.05)
  v = 0.55 * contrast(g, 0.15)
  v = np.where(tile, v * 0.7, v)
  return np.stack([v * 1.02, v, v * 0.95], 1)


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
  c = _mix(np.asarray(style.sky_horizon), np.asarray(style.sky_zenith), up)
  # Clouds on a virtual plane high above, parameterised by direction only.
  plane = d[:, [0, 2]] / np.maximum(d[:, 1:2], 0.05)
  pc = np.concatenate([plane * 1.5, np.zeros((len(d), 1))], 1)
  cl = fbm(pc.astype(np.float32), salt + 23, 4)
  cover = np.clip((cl - (1.0 - style.cloud)) * 3.0, 0.0, 1.0)[:, None]
  return _mix(c, np.array([0.92, 0.93, 0.95]), cover * 0.85)


def finish(style: Style, rgb):
  """Applies the domain's tone curve; returns uint8 of the same shape."""
  rgb = rgb * np.asarray(style.tint, np.float32)
  lum = rgb.mean(-1, keepdims=True)
  rgb = lum + (rgb - lum) * style.saturation
  rgb = np.clip(rgb, 0.0, 1.0) ** (1.0 / style.gamma)
  return np.round(rgb * 255.0).astype(np.uint8)
