r"""Benchmark: our jitted training step beside a PyTorch reference-equivalent.

  # SDE step (stage 2 without the feature distance): ResNet-101 OS16 +
  # dec6 depth decoder + R18 pose net, monodepth2 loss over frames -1/0/+1,
  # Adam; one core, torch at one thread, XLA single-threaded:
  taskset -c 0 python benchmarks/torch_step.py --step=sde --height=128 \
      --width=256 --batch=2 --threads=1 --rounds=3
  # the same with XLA's YNNPACK fusions (jaxlib's default) instead of the
  # project's default (sdeseg_jax/utils/compiler.py):
  SDESEG_CPU_YNN=1 taskset -c 0 python benchmarks/torch_step.py ...
  # SSL multi-task step (row=mtl: PAD decoders + pose net, L_D + CE of the
  # final and intermediate logits, SGD + clip 10), reduced:
  taskset -c 0 python benchmarks/torch_step.py --step=ssl --encoder_depth=18
  python benchmarks/torch_step.py --smoke   # tiny, a few seconds + compile

The torch side is written here from the reference's description (papers,
REFERENCE_SPEC): the ResNet, decoder and pose decoder layers come from
``tests/models/torch_ref.py`` (the parity references of the tests), the
geometry, monodepth2 loss, PAD exchange and optimiser steps are below. It
runs in train mode (BatchNorm batch statistics, ASPP dropout), as the
reference's training step does; the reference's optimiser is torch's
per-tensor ``Adam``/``SGD`` loop, used as is. Our side is the project's real
jitted step (``step.jit_train_step`` of ``SDETask``/``SSLTask``) for the
same sizes.

Rounds alternate the order (ours first, then torch first, ...); each round
times ``--steps`` steps of each after the warm-up, and the ratio of the
round is median(ours) / median(torch). Also reported: the share of the
optimiser in the torch step (``opt.step()`` timed alone) and, for ours, the
time of the update part alone (global gradient norm + finite guard +
optax update + ``where``-select of the new state) jitted on the same
parameter tree, and whether one of our steps runs under
``jax.transfer_guard("disallow")`` (no implicit host-device copies). The last
line is one JSON object.
"""

from __future__ import annotations

import importlib.util
import os
import time

import _report
import numpy as np

DEC6 = (64, 128, 128, 256, 256)
ASPP_RATES = (6, 12, 18)
NUM_CLASSES = 19
_REF = None


def torch_ref():
  """``tests/models/torch_ref.py`` (ResNet, DepthDecoder, PoseDecoder)."""
  global _REF
  if _REF is None:
    path = os.path.join(_report.REPO_ROOT, "tests", "models", "torch_ref.py")
    spec = importlib.util.spec_from_file_location("_torch_ref", path)
    _REF = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(_REF)
  return _REF


# -- torch networks ----------------------------------------------------------


def _resnet(depth: int, width: int, in_ch: int = 3, dilate: bool = True):
  ref = torch_ref()
  block, layers = {18: (ref.BasicBlock, (2, 2, 2, 2)),
                   50: (ref.Bottleneck, (3, 4, 6, 3)),
                   101: (ref.Bottleneck, (3, 4, 23, 3))}[depth]
  net = ref.ResNet(block, layers, (False, False, dilate), in_ch=in_ch,
                   width=width)
  chans = [width] + [width * k * block.expansion for k in (1, 2, 4, 8)]
  return net, chans


def _torch_modules():
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top

  class PoseNet(nn.Module):
    """R18 on 6-channel frame pairs + the monodepth2 pose decoder."""

    def __init__(self, width):
      super().__init__()
      self.encoder, chans = _resnet(18, width, in_ch=6, dilate=False)
      self.decoder = torch_ref().PoseDecoder(chans[-1])

    def forward(self, frames):
      """``{f: [B, 3, H, W]}`` -> ``{f: [B, 4, 4]}`` centre->f transforms."""
      out = {}
      for f in sorted(frames):
        if f == 0:
          continue
        pair = [frames[f], frames[0]] if f < 0 else [frames[0], frames[f]]
        aa, t = self.decoder(self.encoder.features(torch.cat(pair, 1))[-1])
        out[f] = transformation_from_parameters(aa, t, invert=f < 0)
      return out

  class SDENet(nn.Module):
    """ResNet OS16 + dec6 depth decoder + pose net (SDE stage 2, no FD)."""

    def __init__(self, depth, width):
      super().__init__()
      self.encoder, chans = _resnet(depth, width)
      self.depth = torch_ref().DepthDecoder(chans, DEC6, ASPP_RATES, False)
      self.pose = PoseNet(width)

    def forward(self, frames):
      feats = self.encoder.features(frames[0])
      out = self.depth(feats)
      disps = {s: out[("disp", s)] for s in range(4)}
      return disps, self.pose(frames)

  class SelfAttention(nn.Module):
    """PAD's ``conv(x) * sigmoid(att(x))``, att zero-initialised."""

    def __init__(self, ch):
      super().__init__()
      self.conv = nn.Conv2d(ch, ch, 3, padding=1, bias=False)
      self.att = nn.Conv2d(ch, ch, 3, padding=1, bias=False)
      nn.init.zeros_(self.att.weight)

    def forward(self, x):
      return self.conv(x) * torch.sigmoid(self.att(x))

  class PADNet(nn.Module):
    """Shared encoder, PAD depth + segmentation decoders, pose net."""

    def __init__(self, depth, width):
      super().__init__()
      ref = torch_ref()
      self.encoder, chans = _resnet(depth, width)
      self.depth_dec = ref.DepthDecoder(chans, DEC6, ASPP_RATES, False)
      self.seg_dec = ref.DepthDecoder(chans, DEC6, ASPP_RATES, False,
                                      scales=())
      self.sa_depth = SelfAttention(DEC6[2])
      self.sa_seg = SelfAttention(DEC6[2])
      self.final = nn.Conv2d(DEC6[0], NUM_CLASSES, 1)
      self.inter = nn.Conv2d(DEC6[2], NUM_CLASSES, 1)
      self.pose = PoseNet(width)

    def forward(self, frames):
      feats = self.encoder.features(frames[0])
      d = self.depth_dec(feats, stages=(4, 3, 2))
      s = self.seg_dec(feats, stages=(4, 3, 2))
      du, su = d[("upconv", 2)], s[("upconv", 2)]
      inter = self.inter(su)
      d2 = self.depth_dec(feats, x=du + self.sa_seg(su), stages=(1, 0))
      s2 = self.seg_dec(feats, x=su + self.sa_depth(du), stages=(1, 0))
      d.update(d2)
      disps = {k: d[("disp", k)] for k in range(4)}
      return disps, self.final(s2[("upconv", 0)]), inter, self.pose(frames)

  return SDENet, PADNet


# -- torch geometry and monodepth2 loss --------------------------------------


def rot_from_axisangle(vec):
  """Rodrigues: ``[B, 3]`` axis-angle -> ``[B, 4, 4]`` rotation."""
  import torch  # pylint: disable=g-import-not-at-top
  angle = torch.linalg.norm(vec, dim=1, keepdim=True)
  axis = vec / (angle + 1e-7)
  ca, sa = torch.cos(angle)[:, 0], torch.sin(angle)[:, 0]
  c = 1 - ca
  x, y, z = axis[:, 0], axis[:, 1], axis[:, 2]
  rows = [[ca + x * x * c, x * y * c - z * sa, x * z * c + y * sa],
          [x * y * c + z * sa, ca + y * y * c, y * z * c - x * sa],
          [x * z * c - y * sa, y * z * c + x * sa, ca + z * z * c]]
  r3 = torch.stack([torch.stack(r, -1) for r in rows], -2)
  out = torch.eye(4, dtype=vec.dtype).repeat(vec.shape[0], 1, 1)
  out[:, :3, :3] = r3
  return out


def transformation_from_parameters(axisangle, translation, invert=False):
  """``[B, 3]`` axis-angle and translation -> ``[B, 4, 4]``: ``T(t) R``, or
  ``R^T T(-t)`` when ``invert``."""
  import torch  # pylint: disable=g-import-not-at-top
  r = rot_from_axisangle(axisangle)
  t = translation
  if invert:
    r, t = r.transpose(1, 2), -t
  tm = torch.eye(4, dtype=t.dtype).repeat(t.shape[0], 1, 1)
  tm[:, :3, 3] = t
  return r @ tm if invert else tm @ r


def ssim_loss(x, y):
  """``(1 - SSIM) / 2`` clamped to [0, 1]; 3x3 mean, reflection pad 1."""
  import torch  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top
  x, y = F.pad(x, (1,) * 4, mode="reflect"), F.pad(y, (1,) * 4,
                                                   mode="reflect")
  pool = lambda a: F.avg_pool2d(a, 3, 1)
  mx, my = pool(x), pool(y)
  sx, sy, sxy = pool(x * x) - mx ** 2, pool(y * y) - my ** 2, pool(
      x * y) - mx * my
  c1, c2 = 0.01 ** 2, 0.03 ** 2
  n = (2 * mx * my + c1) * (2 * sxy + c2)
  d = (mx ** 2 + my ** 2 + c1) * (sx + sy + c2)
  return torch.clamp((1 - n / d) / 2, 0, 1)


def photometric(pred, target):
  """``0.85 * SSIM + 0.15 * L1``, channel means: ``[B, 1, H, W]``."""
  l1 = (pred - target).abs().mean(1, keepdim=True)
  return 0.85 * ssim_loss(pred, target).mean(1, keepdim=True) + 0.15 * l1


def warp(img, depth, t, k, inv_k):
  """Bilinear border-padded sample of ``img`` at the reprojected pixels."""
  import torch  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top
  b, _, h, w = img.shape
  ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32),
                          torch.arange(w, dtype=torch.float32), indexing="ij")
  pix = torch.stack([xs.reshape(-1), ys.reshape(-1),
                     torch.ones(h * w)], 0)[None]
  cam = depth.reshape(b, 1, -1) * (inv_k[:, :3, :3] @ pix)
  cam = torch.cat([cam, torch.ones(b, 1, h * w)], 1)
  p = (k @ t)[:, :3, :] @ cam
  uv = p[:, :2] / (p[:, 2:3] + 1e-7)
  uv = uv.reshape(b, 2, h, w).permute(0, 2, 3, 1)
  uv = (uv / torch.tensor([w - 1.0, h - 1.0]) - 0.5) * 2
  return F.grid_sample(img, uv, mode="bilinear", padding_mode="border",
                       align_corners=True)


def smoothness(disp, img):
  """Edge-aware smoothness of a mean-normalised disparity."""
  import torch  # pylint: disable=g-import-not-at-top
  d = disp / (disp.mean((2, 3), keepdim=True) + 1e-7)
  gx = (d[..., :-1] - d[..., 1:]).abs() * torch.exp(
      -(img[..., :-1] - img[..., 1:]).abs().mean(1, keepdim=True))
  gy = (d[..., :-1, :] - d[..., 1:, :]).abs() * torch.exp(
      -(img[..., :-1, :] - img[..., 1:, :]).abs().mean(1, keepdim=True))
  return gx.mean() + gy.mean()


def monodepth_loss(disps, color, pyramid, poses, k, inv_k, noise=True):
  """monodepth2's loss (min reprojection, automask, smoothness), 4 scales.

  Args:
    disps: ``{s: [B, 1, H/2^s, W/2^s]}`` sigmoid disparities.
    color: ``{f: [B, 3, H, W]}`` non-augmented frames in [0, 1].
    pyramid: ``{s: [B, 3, H/2^s, W/2^s]}`` centre images, ``s >= 1``.
    poses: ``{f: [B, 4, 4]}`` centre->f transforms, f != 0.
    k, inv_k: ``[B, 4, 4]`` intrinsics and inverse.
    noise: add the ``1e-5 * randn`` tie-breaking noise to the identity
      errors (the reference does; off for exact comparisons).

  Returns:
    The scalar loss.
  """
  import torch  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top
  target = color[0]
  h, w = target.shape[-2:]
  sources = sorted(f for f in color if f != 0)
  total = 0
  for s in sorted(disps):
    disp = disps[s]
    up = F.interpolate(disp, (h, w), mode="bilinear", align_corners=False)
    depth = 1 / (1 / 100.0 + (1 / 0.1 - 1 / 100.0) * up)
    reproj = torch.cat([photometric(warp(color[f], depth, poses[f], k,
                                         inv_k), target) for f in sources], 1)
    ident = torch.cat([photometric(color[f], target) for f in sources], 1)
    if noise:
      ident = ident + torch.randn(ident.shape) * 1e-5
    loss = torch.cat([ident, reproj], 1).min(1)[0].mean()
    img = target if s == 0 else pyramid[s]
    total = total + loss + 1e-3 * smoothness(disp, img) / 2 ** s
  return total / len(disps)


# -- torch steps -------------------------------------------------------------


def torch_inputs(host, key: str | None = None):
  """Torch tensors of one of our host batches (NHWC uint8 -> NCHW float)."""
  import torch  # pylint: disable=g-import-not-at-top
  b = host if key is None else host[key]
  chw = lambda a: torch.from_numpy(
      np.ascontiguousarray(np.moveaxis(a, -1, 1))).float() / 255
  offsets = (-1, 0, 1)
  out = {"color": {f: chw(b["color"][:, i]) for i, f in enumerate(offsets)},
         "color_aug": {f: chw(b["color_aug"][:, i])
                       for i, f in enumerate(offsets)},
         "pyramid": {s: chw(b["pyramid"][f"s{s}"]) for s in (1, 2, 3)},
         "K": torch.from_numpy(b["K"]).float(),
         "inv_K": torch.from_numpy(b["inv_K"]).float()}
  if "label" in b:
    out["label"] = torch.from_numpy(b["label"]).long()
  return out


class TorchStep:
  """One reference-equivalent training step; ``step()`` returns the loss.

  Attributes:
    opt_s: seconds of the last ``opt.step()`` (and clipping, SSL).
  """

  def __init__(self, kind: str, depth: int, width: int, inputs, lr=None):
    import torch  # pylint: disable=g-import-not-at-top
    torch.manual_seed(0)
    sde_net, pad_net = _torch_modules()
    self.kind, self.x = kind, inputs
    if kind == "sde":
      self.net = sde_net(depth, width)
      # SDE stage 2: Adam, lr 1e-5 on every parameter.
      self.opt = torch.optim.Adam(self.net.parameters(), lr=lr or 1e-5)
    else:
      self.net = pad_net(depth, width)
      enc = list(self.net.encoder.parameters())
      pose = list(self.net.pose.parameters())
      ids = {id(p) for p in enc + pose}
      rest = [p for p in self.net.parameters() if id(p) not in ids]
      base = lr or 1e-2
      self.opt = torch.optim.SGD(
          [{"params": enc, "lr": base / 10}, {"params": pose, "lr": 1e-6},
           {"params": rest}], lr=base, momentum=0.9, weight_decay=5e-4)
    self.net.train()
    self.opt_s = 0.0

  def step(self) -> float:
    import torch  # pylint: disable=g-import-not-at-top
    import torch.nn.functional as F  # pylint: disable=g-import-not-at-top
    x = self.x
    self.opt.zero_grad()
    if self.kind == "sde":
      disps, poses = self.net(x["color_aug"])
      loss = monodepth_loss(disps, x["color"], x["pyramid"], poses, x["K"],
                            x["inv_K"])
      loss.backward()
    else:
      disps, logits, inter, poses = self.net(x["color_aug"])
      loss_d = monodepth_loss(disps, x["color"], x["pyramid"], poses,
                              x["K"], x["inv_K"])
      # As the reference: L_D backward (graph kept), then L_seg backward.
      loss_d.backward(retain_graph=True)
      up = F.interpolate(inter, logits.shape[-2:], mode="bilinear",
                         align_corners=True)
      lab = x["label"]
      loss_s = (F.cross_entropy(logits, lab, ignore_index=255) +
                F.cross_entropy(up, lab, ignore_index=255)) / 2
      loss_s.backward()
      loss = loss_d + loss_s
    t = time.perf_counter()
    if self.kind == "ssl":
      torch.nn.utils.clip_grad_norm_(self.net.parameters(), 10.0)
    self.opt.step()
    self.opt_s = time.perf_counter() - t
    return float(loss.detach())


# -- our side ----------------------------------------------------------------


def our_config(kind: str, depth: int, width: int, batch: int):
  """The project's config of the step (SDE stage 2 fd=0 / SSL row=mtl)."""
  if kind == "sde":
    from configs import sde_cityscapes  # pylint: disable=g-import-not-at-top
    config = sde_cityscapes.get_config("stage=2,fd=0")
  else:
    from configs import ssl_cityscapes  # pylint: disable=g-import-not-at-top
    config = ssl_cityscapes.get_config("row=mtl")
  config.model.encoder_depth = depth
  config.model.width = width
  config.model.encoder_init = ""
  config.train.batch_size = batch
  return config


def host_batch(kind: str, batch: int, h: int, w: int):
  """Random uint8 frames (as ``step_cost*.py``), ours and torch's."""
  import step_cost  # pylint: disable=g-import-not-at-top
  import step_cost_ssl  # pylint: disable=g-import-not-at-top
  if kind == "sde":
    return step_cost.sde_batch(batch, h, w)
  return {"labeled": step_cost_ssl.ssl_batch(batch, h, w)["labeled"]}


def update_part(state, tx_params):
  """Jitted: what our step does after the gradients (norm, guard, update)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top

  def fn(state, grads):
    norm = optax.tree.norm(grads)
    finite = jnp.isfinite(norm)
    updates, opt_state = state.tx.update(grads, state.opt_state,
                                         state.params)
    params = optax.apply_updates(state.params, updates)
    new = state.replace(params=params, opt_state=opt_state)
    return jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, state)

  del tx_params
  return jax.jit(fn, donate_argnums=(0,))


def _threads_flags(threads: int) -> None:
  # XLA:CPU runs Eigen's intra-op work on a pool of all cores it sees;
  # torch at one thread is compared with XLA at one (pin with taskset too).
  if threads == 1:
    from sdeseg_jax.utils import compiler  # pylint: disable=g-import-not-at-top
    os.environ["XLA_FLAGS"] = compiler.merged_xla_flags(
        os.environ.get("XLA_FLAGS"), ("--xla_cpu_multi_thread_eigen=false",))


def run(args) -> dict:
  """Builds both steps, alternates rounds, returns the result dict."""
  _threads_flags(args.threads)
  # pylint: disable=g-import-not-at-top
  import jax
  import torch
  from sdeseg_jax.train import sde
  from sdeseg_jax.train import ssl
  from sdeseg_jax.utils import compiler
  from sdeseg_jax.utils import sharding
  # pylint: enable=g-import-not-at-top
  torch.set_num_threads(args.threads)
  kind, b, h, w = args.step, args.batch, args.height, args.width
  host = host_batch(kind, b, h, w)
  config = our_config(kind, args.encoder_depth, args.net_width, b)
  task = sde.SDETask(config) if kind == "sde" else ssl.SSLTask(config)
  mesh = sharding.make_mesh(jax.devices()[:1])
  cs = _report.compile_train_step(task, config, host, mesh)
  state = cs.init()
  print(f"ours: compiled in {cs.compile_s:.1f} s, "
        f"{cs.num_params / 1e6:.1f} M params", flush=True)
  tstep = TorchStep(kind, args.encoder_depth, args.net_width,
                    torch_inputs(host, None if kind == "sde" else "labeled"))
  n_torch = sum(p.numel() for p in tstep.net.parameters())
  print(f"torch: {n_torch / 1e6:.1f} M params", flush=True)

  box = {"state": state}

  def ours_once():
    t = time.perf_counter()
    box["state"], m = cs.compiled(box["state"], cs.batch)
    loss = float(jax.block_until_ready(m["loss"]))
    return time.perf_counter() - t, loss

  def torch_once():
    t = time.perf_counter()
    loss = tstep.step()
    return time.perf_counter() - t, loss

  ours_loss, torch_loss = [], []
  for _ in range(args.warmup):
    ours_loss.append(ours_once()[1])
    torch_loss.append(torch_once()[1])
  # Implicit host<->device copies inside a step: none may happen.
  try:
    with jax.transfer_guard("disallow"):
      ours_once()
    guard = "no implicit transfers"
  except Exception as e:  # pylint: disable=broad-except
    guard = f"implicit transfer: {str(e).splitlines()[0][:200]}"
  print(f"transfer guard: {guard}", flush=True)

  rounds = []
  for r in range(args.rounds):
    order = ("ours", "torch") if r % 2 == 0 else ("torch", "ours")
    got = {"ours": [], "torch": [], "torch_opt": []}
    for side in order:
      for _ in range(args.steps):
        if side == "ours":
          dt, loss = ours_once()
          ours_loss.append(loss)
        else:
          dt, loss = torch_once()
          torch_loss.append(loss)
          got["torch_opt"].append(tstep.opt_s)
        got[side].append(dt)
    o, t = float(np.median(got["ours"])), float(np.median(got["torch"]))
    rounds.append({"order": "/".join(order), "ours_s": round(o, 3),
                   "torch_s": round(t, 3), "ratio": round(o / t, 3),
                   "torch_opt_s": round(float(np.median(got["torch_opt"])),
                                        3)})
    print(f"round {r}: {rounds[-1]}", flush=True)

  # Our update part alone, on gradients shaped like the parameters.
  upd = update_part(box["state"], None)
  grads = jax.tree.map(lambda p: p * 1e-3, box["state"].params)
  ut = []
  for i in range(1 + max(2, args.steps)):
    t = time.perf_counter()
    box["state"] = jax.block_until_ready(upd(box["state"], grads))
    if i:
      ut.append(time.perf_counter() - t)
  ratios = [x["ratio"] for x in rounds]
  ours_med = float(np.median([x["ours_s"] for x in rounds]))
  torch_med = float(np.median([x["torch_s"] for x in rounds]))
  topt = float(np.median([x["torch_opt_s"] for x in rounds]))
  return {
      "benchmark": "torch_step", "step": kind,
      "encoder_depth": args.encoder_depth, "width": args.net_width,
      "height": h, "width_px": w, "batch": b, "threads": args.threads,
      "ynn_fusions": f"{compiler.YNN_FLAG}=" not in os.environ.get(
          "XLA_FLAGS", "").split(),
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "torch_version": torch.__version__, "jax_version": jax.__version__,
      "params_m_ours": round(cs.num_params / 1e6, 2),
      "params_m_torch": round(n_torch / 1e6, 2),
      "compile_s": round(cs.compile_s, 1), "rounds": rounds,
      "ratio_min": min(ratios), "ratio_median": float(np.median(ratios)),
      "ratio_max": max(ratios), "ours_median_s": round(ours_med, 3),
      "torch_median_s": round(torch_med, 3),
      "torch_opt_share": round(topt / torch_med, 3),
      "ours_update_s": round(float(np.median(ut)), 3),
      "ours_update_share": round(float(np.median(ut)) / ours_med, 3),
      "transfer_guard": guard,
      "ours_losses": [round(x, 5) for x in ours_loss],
      "torch_losses": [round(x, 5) for x in torch_loss],
  }


def main(argv=None):
  p = _report.parser(__doc__, first_line=False)
  p.add_argument("--step", default="sde", choices=("sde", "ssl"))
  p.add_argument("--encoder_depth", type=int, default=101,
                 choices=(18, 50, 101))
  p.add_argument("--net_width", type=int, default=64,
                 help="ResNet base width (64; smaller for --smoke)")
  p.add_argument("--height", type=int, default=128)
  p.add_argument("--width", type=int, default=256)
  p.add_argument("--batch", type=int, default=2)
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--steps", type=int, default=2,
                 help="timed steps of each side per round")
  p.add_argument("--warmup", type=int, default=1)
  p.add_argument("--threads", type=int, default=1,
                 help="torch threads; 1 also makes XLA single-threaded")
  p.add_argument("--smoke", action="store_true",
                 help="tiny sizes (R18 width 8, 32x64, 1 round of 1 step)")
  args = _report.parse(p, argv, quiet=True)
  if args.smoke:
    args.encoder_depth, args.net_width = 18, 8
    args.height, args.width, args.rounds, args.steps = 32, 64, 2, 1
  res = run(args)
  _report.print_fields(res, skip=("rounds", "ours_losses", "torch_losses",
                                  "xla_flags"))
  _report.emit_json(res)
  return res


if __name__ == "__main__":
  main()
