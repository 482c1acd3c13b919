r"""Mode ``predict``: segmentation (and depth) of any images or videos.

  python -m sdeseg_jax.main --workdir=OUT \
      --config=configs/predict.py:run=/runs/demo/ssda,input=/my/frames

The network and its weights come from a training run (``runs.load``: the
config saved with the checkpoint, the student or the EMA teacher at the
latest, best or a given step). Inputs are anything ``inputs.list_inputs``
accepts. Resolution (``config.predict.resolution``):

* ``resize`` (default): the image is resized (bilinear, antialiased) to the
  training resolution ``input_size`` (default: the run's
  ``config.data.val.image_size``, e.g. 1024x512 -- the paper's protocol),
  and the logits and disparity are upsampled bilinearly (align corners) back
  to the image's own size;
* ``sliding``: the network runs at the image's native resolution on
  windows of ``window`` (default: the run's training crop) overlapping by
  ``overlap``; logits and disparities of overlapping windows are averaged.
  Images smaller than a window are zero-padded to it.

Images are batched (``batch_size``, the last batch padded) and each shape
bucket -- one native image size -- is compiled once. Outputs in the
``--workdir``, one file per image and kind (``<name>`` = the input's
relative path without extension):

* ``labelIds/<name>.png``: Cityscapes label ids (uint8, what
  cityscapesscripts reads; ``trainIds/`` instead for models whose classes
  are not the 19 Cityscapes ones);
* ``color/<name>.png``: the Cityscapes colour coding;
* ``overlay/<name>.png``: ``alpha * colour + (1 - alpha) * image``;
* with a depth head: ``disparity/<name>.png`` (magma colour map of the
  sigmoid disparity, per-image 2-98 % range) and ``depth/<name>.png``
  (16-bit, depth x 256 in the model's units: monodepth2 ``disp_to_depth``
  with the run's ``config.loss.min_depth``/``max_depth``, 0 = none);
* for a video: also ``<video name>_overlay.mp4`` (H.264) of its overlays
  (``_disparity.mp4`` for a depth-only SDE run).

``predict.json`` records the model and settings. Rerunning into the same
folder continues where it stopped (images with all their files are
skipped); a folder holding another model's predictions is refused unless
``overwrite`` is set, which redoes everything. Unreadable or truncated
inputs are reported by name and skipped; ``summary.json`` lists them and
the run exits non-zero if any failed.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any, Callable, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
from PIL import Image

from sdeseg_jax import errors
from sdeseg_jax.data import labels as labels_lib
from sdeseg_jax.eval import depth as depth_eval
from sdeseg_jax.geometry.warp import resize_bilinear_align_corners
from sdeseg_jax.predict import inputs as inputs_lib
from sdeseg_jax.predict import runs
from sdeseg_jax.train import export
from sdeseg_jax.train import toolkit
from sdeseg_jax.utils import sharding as sharding_lib

RESOLUTIONS = ("resize", "sliding")
# Settings whose change means "another model's predictions".
_IDENTITY = ("run", "step", "model", "resolution", "input_size", "window",
             "overlap")


def label_ids(train_ids: np.ndarray) -> np.ndarray:
  """Train ids (0..18) -> Cityscapes label ids, uint8."""
  return labels_lib.TRAIN_ID_TO_LABEL_ID[np.asarray(train_ids, np.uint8)]


def overlay(image: np.ndarray, color: np.ndarray, alpha: float) -> np.ndarray:
  """``alpha * color + (1 - alpha) * image``, rounded, uint8."""
  mix = alpha * color.astype(np.float32) + (1 - alpha) * image.astype(
      np.float32)
  return np.clip(np.round(mix), 0, 255).astype(np.uint8)


def depth_u16(disp: np.ndarray, min_depth: float, max_depth: float
              ) -> np.ndarray:
  """Sigmoid disparity -> 16-bit depth x 256 (KITTI-style PNG values)."""
  d = depth_eval.disp_to_depth(disp, min_depth, max_depth)
  return np.clip(np.round(d * 256.0), 0, 65535).astype(np.uint16)


def window_starts(size: int, window: int, stride: int) -> list[int]:
  """Start offsets of windows covering ``[0, size)`` (the last ends at it)."""
  if size <= window:
    return [0]
  n = math.ceil((size - window) / stride) + 1
  return sorted({min(i * stride, size - window) for i in range(n)})


def run_settings(run: runs.LoadedRun, pc: mlc.ConfigDict
                 ) -> dict[str, Any]:
  """Resolved input size / window of a run (defaults from its config)."""
  data = run.config.get("data", {})
  def size_of(*names, key):
    for n in names:
      if n in data and len(data[n].get(key, ())) == 2:
        return tuple(int(v) for v in data[n][key])
    return ()
  input_size = tuple(int(v) for v in pc.input_size) or size_of(
      "val", "target", "labeled", "train", "seg", key="image_size")
  if not input_size:
    raise errors.ConfigError(
        f"{run.workdir}: its config has no config.data.val.image_size; set "
        "config.predict.input_size=(H, W)")
  window = tuple(int(v) for v in pc.window) or size_of(
      "labeled", "target", "train", key="crop_size") or input_size
  return {"input_size": input_size, "window": window,
          "overlap": float(pc.overlap)}


def make_forward(run: runs.LoadedRun, resolution: str,
                 input_size: Sequence[int], window: Sequence[int],
                 overlap: float) -> Callable[[Any, jax.Array], dict]:
  """``(variables, images [B, H, W, 3] uint8) -> {"labels" [B, H, W] int32,
  "disp" [B, H, W] float32 (depth models)}`` at the images' own size."""
  if resolution not in RESOLUTIONS:
    raise errors.ConfigError(f"config.predict.resolution={resolution!r}; "
                             f"choose one of {RESOLUTIONS}")
  if not 0.0 <= overlap < 1.0:
    raise errors.ConfigError(
        f"config.predict.overlap={overlap} must be in [0, 1)")
  model = run.model

  def net(variables, x):
    # The tasks' uniform prediction dict: logits and/or disp.
    return toolkit.predictions(
        model.apply(variables, x[:, None], (0,), train=False, pose=False))

  def to_size(y, hw):
    return y if y.shape[1:3] == tuple(hw) else resize_bilinear_align_corners(
        y, hw)

  def resized(variables, x):
    h, w = x.shape[1:3]
    if (h, w) != tuple(input_size):
      x = jax.image.resize(x, (x.shape[0], *input_size, 3), "bilinear",
                           antialias=True)
    return {k: to_size(v, (h, w)) for k, v in net(variables, x).items()}

  def sliding(variables, x):
    b, h, w = x.shape[:3]
    wh, ww = window
    ph, pw = max(h, wh), max(w, ww)
    if (ph, pw) != (h, w):
      x = jnp.pad(x, ((0, 0), (0, ph - h), (0, pw - w), (0, 0)))
    sh = max(1, int(round(wh * (1 - overlap))))
    sw = max(1, int(round(ww * (1 - overlap))))
    pos = [(i, j) for i in window_starts(ph, wh, sh)
           for j in window_starts(pw, ww, sw)]
    crops = jnp.stack([x[:, i:i + wh, j:j + ww] for i, j in pos])
    outs = jax.lax.map(lambda c: net(variables, c), crops)
    res = {}
    for k, v in outs.items():
      acc = jnp.zeros((b, ph, pw, v.shape[-1]), jnp.float32)
      cnt = jnp.zeros((1, ph, pw, 1), jnp.float32)
      for n, (i, j) in enumerate(pos):
        acc = acc.at[:, i:i + wh, j:j + ww].add(v[n])
        cnt = cnt.at[:, i:i + wh, j:j + ww].add(1.0)
      res[k] = (acc / cnt)[:, :h, :w]
    return res

  body = resized if resolution == "resize" else sliding

  def forward(variables, images):
    out = body(variables, images.astype(jnp.float32) / 255.0)
    res = {}
    if "logits" in out:
      res["labels"] = jnp.argmax(out["logits"], -1).astype(jnp.int32)
    if "disp" in out:
      res["disp"] = out["disp"][..., 0]
    return res

  return forward


class Predictor:
  """Batches same-sized images through one compiled forward per size.

  Args:
    run: the loaded model.
    settings: ``run_settings`` plus ``resolution``.
    batch_size: images per compiled call (padded).
    wrap: applied to the forward before ``jax.jit`` (tests count traces).
  """

  def __init__(self, run: runs.LoadedRun, settings: dict[str, Any],
               batch_size: int, wrap: Callable | None = None):
    self.batch_size = int(batch_size)
    if self.batch_size < 1:
      raise errors.ConfigError("config.predict.batch_size must be >= 1")
    mesh = sharding_lib.make_mesh()
    self.sharding = (sharding_lib.data_sharding(mesh)
                     if self.batch_size % mesh.size == 0 else
                     sharding_lib.replicated(mesh))
    self.variables = sharding_lib.replicate(run.variables, mesh)
    fn = make_forward(run, settings["resolution"], settings["input_size"],
                      settings["window"], settings["overlap"])
    if wrap is not None:
      fn = wrap(fn)
    self._fn = jax.jit(fn, out_shardings=sharding_lib.replicated(mesh))

  def __call__(self, images: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """Predicts ``len(images) <= batch_size`` images of one shape."""
    n = len(images)
    x = np.stack(images)
    if n < self.batch_size:
      x = np.concatenate([x, np.zeros((self.batch_size - n,) + x.shape[1:],
                                      x.dtype)])
    out = self._fn(self.variables, jax.device_put(x, self.sharding))
    return {k: np.asarray(v)[:n] for k, v in jax.device_get(out).items()}


class Writer:
  """Writes the output files of one image (module docstring)."""

  def __init__(self, out_dir: str, run: runs.LoadedRun, alpha: float,
               overwrite: bool):
    self.out_dir, self.alpha, self.overwrite = out_dir, float(alpha), overwrite
    self.cityscapes = int(run.config.model.num_classes) == \
        labels_lib.NUM_CLASSES
    self.kinds = []
    if run.has_segmentation:
      self.kinds += ["labelIds" if self.cityscapes else "trainIds", "color",
                     "overlay"]
    if run.has_depth:
      self.kinds += ["disparity", "depth"]
    loss = run.config.get("loss", {})
    # The monodepth2 range of the run (configs.common.sde_loss_config).
    self.min_depth = float(loss.get("min_depth", 0.1))
    self.max_depth = float(loss.get("max_depth", 100.0))
    # What a video's MP4 shows.
    self.video_kind = "overlay" if run.has_segmentation else "disparity"

  def path(self, kind: str, name: str) -> str:
    return os.path.join(self.out_dir, kind, name + ".png")

  def done(self, name: str) -> bool:
    return not self.overwrite and all(
        os.path.isfile(self.path(k, name)) for k in self.kinds)

  def write(self, name: str, image: np.ndarray, out: dict[str, np.ndarray]
            ) -> None:
    files = {}
    if "labels" in out:
      lab = out["labels"]
      color = labels_lib.colorize_train_ids(lab)
      files["labelIds" if self.cityscapes else "trainIds"] = (
          label_ids(lab) if self.cityscapes else lab.astype(np.uint8))
      files["color"] = color
      files["overlay"] = overlay(image, color, self.alpha)
    if "disp" in out:
      files["disparity"] = depth_eval.colorize(out["disp"])
      files["depth"] = depth_u16(out["disp"], self.min_depth, self.max_depth)
    # Written in a fixed order, each atomically: an image is done when all
    # of its files exist.
    for kind in self.kinds:
      export.write_png(self.path(kind, name), files[kind])


def write_video(frames: Sequence[str], path: str, fps: float) -> None:
  """Encodes PNG ``frames`` as an H.264 MP4 at ``fps`` (atomically)."""
  import av  # pylint: disable=g-import-not-at-top
  tmp = path + ".tmp.mp4"
  first = np.asarray(Image.open(frames[0]).convert("RGB"))
  h, w = first.shape[0] // 2 * 2, first.shape[1] // 2 * 2  # yuv420p: even
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with av.open(tmp, "w") as c:
    s = c.add_stream("libx264", rate=max(1, int(round(fps))))
    s.width, s.height, s.pix_fmt = w, h, "yuv420p"
    for f in frames:
      img = np.asarray(Image.open(f).convert("RGB"))[:h, :w]
      for packet in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
        c.mux(packet)
    for packet in s.encode():
      c.mux(packet)
  os.replace(tmp, path)


def _check_manifest(out_dir: str, manifest: dict[str, Any],
                    overwrite: bool) -> None:
  path = os.path.join(out_dir, "predict.json")
  if os.path.isfile(path) and not overwrite:
    with open(path) as f:
      old = json.load(f)
    diff = [k for k in _IDENTITY if old.get(k) != manifest.get(k)]
    if diff:
      raise errors.ConfigError(
          f"{out_dir} holds predictions of another model or setting "
          f"({', '.join(f'{k}: {old.get(k)!r} -> {manifest.get(k)!r}' for k in diff)}"
          "); choose another --workdir or set config.predict.overwrite=True")
  os.makedirs(out_dir, exist_ok=True)
  with open(path + ".tmp", "w") as f:
    json.dump(manifest, f, indent=1)
  os.replace(path + ".tmp", path)


def _progress(total: int):
  from tqdm import auto as tqdm  # pylint: disable=g-import-not-at-top
  return tqdm.tqdm(total=total or None, unit="img", dynamic_ncols=True,
                   mininterval=1.0, file=sys.stderr,
                   disable=jax.process_index() > 0)


def predict_all(run: runs.LoadedRun, found: inputs_lib.Inputs, out_dir: str,
                pc: mlc.ConfigDict, wrap: Callable | None = None
                ) -> dict[str, Any]:
  """Predicts every input into ``out_dir``; returns the summary dict."""
  settings = dict(run_settings(run, pc), resolution=pc.resolution)
  manifest = dict(run.describe(), input=pc.input, **settings,
                  alpha=float(pc.alpha))
  manifest["input_size"] = list(settings["input_size"])
  manifest["window"] = list(settings["window"])
  _check_manifest(out_dir, manifest, bool(pc.overwrite))
  predictor = Predictor(run, settings, pc.batch_size, wrap)
  writer = Writer(out_dir, run, pc.alpha, bool(pc.overwrite))
  frames_total = 0
  for path, _ in found.videos:
    rate, count = inputs_lib.video_info(path)
    frames_total += (count if pc.fps <= 0 else
                     math.ceil(count / rate * pc.fps))
  bar = _progress(len(found.images) + frames_total)
  failed: list[dict[str, str]] = []
  counts = {"predicted": 0, "skipped": 0}
  pending: dict[tuple[int, ...], list] = {}
  t0 = time.time()

  def flush(shape):
    group = pending.pop(shape)
    out = predictor([img for _, img in group])
    for n, (item, img) in enumerate(group):
      writer.write(item.name, img, {k: v[n] for k, v in out.items()})
    counts["predicted"] += len(group)
    bar.update(len(group))

  def add(item, img):
    if isinstance(img, inputs_lib.InputError):
      logging.error("skipped %s", img)
      failed.append({"name": item.name, "path": item.path,
                     "error": str(img)})
      bar.update(1)
      return
    pending.setdefault(img.shape, []).append((item, img))
    if len(pending[img.shape]) >= predictor.batch_size:
      flush(img.shape)

  todo = []
  for item in found.images:
    if writer.done(item.name):
      counts["skipped"] += 1
      bar.update(1)
    else:
      todo.append(item)
  for item, img in inputs_lib.prefetch(todo, inputs_lib.read_image):
    add(item, img)
  videos = {}
  for path, name in found.videos:
    frames = []
    try:
      for item, img in inputs_lib.video_frames(path, name, pc.fps):
        frames.append(writer.path(writer.video_kind, item.name))
        if writer.done(item.name):
          counts["skipped"] += 1
          bar.update(1)
        else:
          add(item, img)
    except inputs_lib.InputError as e:
      logging.error("video %s", e)
      failed.append({"name": name, "path": path, "error": str(e)})
    videos[name] = (path, frames)
  for shape in list(pending):
    flush(shape)
  bar.close()
  mp4s = []
  for name, (path, frames) in videos.items():
    mp4 = os.path.join(out_dir, f"{name}_{writer.video_kind}.mp4")
    frames = [f for f in frames if os.path.isfile(f)]
    if frames and (pc.overwrite or not os.path.isfile(mp4)):
      rate, _ = inputs_lib.video_info(path)
      write_video(frames, mp4, pc.fps if pc.fps > 0 else rate)
    if os.path.isfile(mp4):
      mp4s.append(mp4)
  seconds = time.time() - t0
  summary = dict(counts, failed=failed, videos=mp4s, seconds=seconds,
                 images_per_second=counts["predicted"] / max(seconds, 1e-9))
  with open(os.path.join(out_dir, "summary.json"), "w") as f:
    json.dump(summary, f, indent=1)
  logging.info("predict: %d predicted, %d already done, %d failed, %.2f "
               "images/s -> %s", counts["predicted"], counts["skipped"],
               len(failed), summary["images_per_second"], out_dir)
  return summary


def run(config: mlc.ConfigDict, workdir: str) -> dict[str, Any]:
  """Entry point of ``mode=predict``.

  Raises:
    SystemExit: (non-zero) when any input could not be read, after all
      others were predicted.
  """
  pc = config.predict
  # Inputs first: an empty folder fails before the checkpoint is read.
  found = inputs_lib.list_inputs(pc.input)
  model_config = None
  if pc.model_config:
    # pylint: disable-next=g-import-not-at-top
    from ml_collections.config_flags import config_flags
    # "file.py[:arg]", parsed as --config parses it.
    model_config = config_flags.ConfigFileFlagParser(name="config").parse(
        pc.model_config).model
  loaded = runs.load(pc.run, pc.step, pc.model, model_config)
  logging.info("predict: %s step %d (%s), %d images + %d videos",
               loaded.workdir, loaded.step, loaded.model_name,
               len(found.images), len(found.videos))
  summary = predict_all(loaded, found, workdir, pc)
  if summary["failed"]:
    names = ", ".join(f["path"] for f in summary["failed"][:5])
    raise SystemExit(
        f"predict: {len(summary['failed'])} input(s) could not be read and "
        f"were skipped ({names}); see {workdir}/summary.json")
  return summary
