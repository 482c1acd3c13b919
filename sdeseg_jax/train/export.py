"""Mode ``export_depth``: depth pseudo-labels for every image of a split.

  python -m sdeseg_jax.main --config=configs/sde_cityscapes.py:path=/data/cs \
      --config.mode=export_depth --workdir=/runs/sde_stage2

What DepthMix, Matching Geometry Sampling and data selection read later
(the reference normalises the target domain's). Output format, in ``config.export.out_dir`` (default
``<workdir>/pseudo_depth``):

* one PNG per image at ``<out_dir>/<relpath>.png``, where ``relpath`` is the
  centre frame's path relative to the dataset root with ``_small`` folder
  suffixes removed and the extension replaced by ``.png`` -- exactly what
  ``sdeseg_jax.data.transforms.load_pseudo_depth`` reads (stream keys
  ``pseudo_depth_dir`` and ``pseudo_depth_encoding``);
* values: the scale-0 sigmoid disparity of the full (uncropped, unflipped)
  image at the stream's ``image_size``; with ``normalize`` (default, the
  reference's v1 estimator) per-image min-max normalised to [0, 1];
* ``encoding="u16"`` (default): 16-bit PNG of ``trunc(d * 65535)``, read
  back as ``/ 65535``; ``encoding="u8"``: the reference's 8-bit
  ``trunc(d * 255)``, read back as ``/ 255``;
* ``index.json``: checkpoint path and step, encoding, normalisation, the
  per-split image counts and the model config that made the files.

Weights come from ``config.export.checkpoint`` (a workdir or checkpoints
folder; "" = this workdir) at ``config.export.step`` (-1 = latest).

The stream is exported as evaluation data: every image (labeled or not) of
``config.export.splits``, full image at ``image_size``, no crop, flip or
colour augmentation. For SSDA the SDE configs' ``export=<depth_scale>``
variants pick the stream of the segmentation images SSDA reads and the
format of that depth scale (``configs/ssda_gta.py:PSEUDO_DEPTH``);
``check_pseudo_depth`` verifies a folder against the stream that reads it
and names the command that (re)makes it.
"""

from __future__ import annotations

import json
import os
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
from PIL import Image

from sdeseg_jax.data import resolve
from sdeseg_jax.eval import evaluators as evaluators_lib
from sdeseg_jax.models import joint
from sdeseg_jax.train import checkpoint as ckpt_lib
from sdeseg_jax.train import toolkit
from sdeseg_jax.utils import sharding as sharding_lib

ENCODINGS = {"u8": (np.uint8, 255), "u16": (np.uint16, 65535)}


def pseudo_depth_relpath(relpath: str) -> str:
  """Image relpath -> pseudo-depth file relpath (``_small`` off, ``.png``)."""
  parts = [p[:-6] if p.endswith("_small") else p for p in relpath.split("/")]
  return os.path.splitext("/".join(parts))[0] + ".png"


def encode(disp: np.ndarray, encoding: str, normalize: bool) -> np.ndarray:
  """Quantises one ``[H, W]`` disparity map for storage.

  Args:
    disp: [H, W] float sigmoid disparity in [0, 1].
    encoding: "u8" or "u16".
    normalize: per-image min-max normalisation first (reference v1).

  Returns:
    [H, W] uint8 / uint16, ``trunc(d * scale)``.
  """
  if encoding not in ENCODINGS:
    raise ValueError(f"config.export.encoding={encoding!r}; choose "
                     f"{sorted(ENCODINGS)}")
  dtype, scale = ENCODINGS[encoding]
  d = np.asarray(disp, np.float64)
  if normalize:
    lo, hi = d.min(), d.max()
    d = (d - lo) / (hi - lo) if hi > lo else np.zeros_like(d)
  return np.clip(np.floor(d * scale), 0, scale).astype(dtype)


def decode(png: np.ndarray, encoding: str) -> np.ndarray:
  """Inverse of ``encode`` (up to quantisation): float32 in [0, 1]."""
  return np.asarray(png, np.float32) / ENCODINGS[encoding][1]


def write_png(path: str, array: np.ndarray) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = path + ".tmp"
  Image.fromarray(array).save(tmp, format="PNG")
  os.replace(tmp, path)  # no half-written file survives a crash


def relpaths_by_index(stream, split: str, data_dir: str) -> dict[int, str]:
  """``{record index: relpath}`` of a prepared split.

  Listed from the dataset folder (the records are keyed by the same sorted
  listing) rather than read from the records, which would decode every
  stored image once more (tens of GB for GTA5).

  Raises:
    ValueError: the folder no longer matches the prepared records.
  """
  # pylint: disable=g-import-not-at-top
  from sdeseg_jax.data import builder as builder_lib
  from sdeseg_jax.data import readers
  # pylint: enable=g-import-not-at-top
  samples = readers.list_samples(stream, split)
  n = len(builder_lib.prepare(stream, data_dir).as_data_source(split=split))
  if n != len(samples):
    raise ValueError(
        f"stream {stream.name!r}: {stream.path} now lists {len(samples)} "
        f"{split} images but its prepared records (tfds_dir {data_dir}) hold "
        f"{n}; delete the stale records or point config.data.tfds_dir "
        "elsewhere")
  return {smp.index: smp.relpath for smp in samples}


def make_predict(model_cfg: mlc.ConfigDict, mesh):
  """Jitted ``(variables, color [B,T,H,W,3] uint8, center) -> disp0``."""
  model = joint.from_config(model_cfg)

  def predict(variables, color, center):
    x = toolkit.to_float(color[:, center:center + 1])
    out = model.apply(variables, x, (0,), train=False, pose=False)
    return out["disp"][0][..., 0].astype(jnp.float32)

  return jax.jit(predict, static_argnums=(2,),
                 out_shardings=sharding_lib.replicated(mesh))


def export_split(predict, variables, stream, split: str, *, out_dir: str,
                 data_dir: str, encoding: str, normalize: bool,
                 batch_size: int, mesh, seed: int) -> int:
  """Writes the pseudo-depth PNGs of one split; returns the image count."""
  from sdeseg_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  paths = relpaths_by_index(stream, split, data_dir)
  # Host batches; only the colour goes on the mesh. The prediction is
  # replicated and the indices are gathered from every process, so no
  # data-sharded array is fetched (multi-host safe); process 0 writes.
  loader = pipeline.make_loader(stream, split=split,
                                global_batch_size=batch_size, seed=seed,
                                train=False, data_dir=data_dir)
  center = tuple(sorted(stream.frame_offsets)).index(0)
  n = 0
  for batch in loader:
    color = sharding_lib.host_to_global(
        {"color": np.asarray(batch["color"])}, mesh)["color"]
    disp = np.asarray(jax.device_get(predict(variables, color, center)))
    index = evaluators_lib.gather(np.asarray(batch["index"]))
    if jax.process_index() != 0:
      continue
    for d, i in zip(disp, index):
      if i < 0:
        continue  # padding of the last batch
      write_png(os.path.join(out_dir, pseudo_depth_relpath(paths[int(i)])),
                encode(d, encoding, normalize))
      n += 1
  loader.close()
  logging.info("export %s: %d images -> %s", split, n, out_dir)
  return n


def run(config: mlc.ConfigDict, workdir: str) -> dict[str, Any]:
  """Entry point of ``mode=export_depth``; returns the ``index.json`` dict."""
  ec = config.export
  mesh = sharding_lib.make_mesh()
  ckpt_dir = ec.checkpoint or workdir
  loaded = ckpt_lib.load_variables(ckpt_dir, None if ec.step < 0 else ec.step)
  variables = jax.device_put(
      {"params": loaded["params"], "batch_stats": loaded["batch_stats"]},
      sharding_lib.replicated(mesh))
  if ec.stream not in config.data:
    raise KeyError(f"config.export.stream={ec.stream!r} is not a stream of "
                   f"config.data (has {sorted(config.data.keys())})")
  base = config.data[ec.stream]
  path = base.path
  if not path and "minicity" in config:
    # The SDE run's generated data (the stream ``train`` it trained on).
    path = resolve.dataset_root(config, "train", workdir)
  if not path:
    raise ValueError(
        f"config.data.{ec.stream}.path is empty: set the dataset folder "
        "whose images get pseudo depth (path=<folder> of the SDE config, or "
        f"--config.data.{ec.stream}.path)")
  if 0 not in tuple(base.frame_offsets):
    raise ValueError(f"config.data.{ec.stream}.frame_offsets="
                     f"{tuple(base.frame_offsets)} must contain 0")
  if not ec.splits:
    raise ValueError("config.export.splits is empty; e.g. ('train', 'val')")
  stream = mlc.ConfigDict(base.to_dict())
  stream.path = path
  stream.load_labeled = stream.load_unlabeled = True  # every image
  stream.with_depth = False
  stream.pseudo_depth_dir = ""
  # The loader runs in evaluation mode (full image, no flip, no colour
  # augmentation); spelled out so the index records what was exported.
  stream.crop_size = ()
  stream.flip_prob = 0.0
  stream.color_aug = False
  stream.num_scales = 1  # no smoothness pyramid needed
  data_dir = config.data.tfds_dir or os.path.join(workdir, "tfds")
  out_dir = ec.out_dir or os.path.join(workdir, "pseudo_depth")
  predict = make_predict(config.model, mesh)
  counts = {}
  for split in ec.splits:
    counts[split] = export_split(
        predict, variables, stream, split, out_dir=out_dir,
        data_dir=data_dir, encoding=ec.encoding, normalize=ec.normalize,
        batch_size=ec.batch_size, mesh=mesh, seed=config.seed)
  index = {
      "format": "PNG per image at <relpath without _small, .png>; value = "
                "trunc(d * scale), read as value / scale",
      "encoding": ec.encoding, "scale": ENCODINGS[ec.encoding][1],
      "normalize": bool(ec.normalize),
      "checkpoint": os.path.abspath(ckpt_dir), "step": loaded["step"],
      "dataset": path, "image_size": list(stream.image_size),
      "stream": {"name": stream.name, "layout": stream.layout,
                 "frame_offsets": list(stream.frame_offsets),
                 "config": ec.stream},
      "counts": counts, "model": config.model.to_dict(),
  }
  if jax.process_index() == 0:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "index.json"), "w") as f:
      json.dump(index, f, indent=2, sort_keys=True)
  return index


# -- checks on the reading side ---------------------------------------------

# Layout -> the SDE config whose ``export=<depth_scale>`` variant writes the
# pseudo depth of that layout's segmentation images.
SDE_CONFIGS = {"gta5": "configs/sde_gta.py",
               "synthia": "configs/sde_synthia.py",
               "cityscapes": "configs/sde_cityscapes.py"}
_DEFAULT_IMAGE_SIZE = (512, 1024)


def export_command(stream, out_dir: str, depth_scale: str = "paper") -> str:
  """The command that writes ``out_dir`` for the images ``stream`` reads.

  Args:
    stream: the reading stream config (``layout``, ``path``, ``name``,
      ``image_size``).
    out_dir: the pseudo-depth folder it reads.
    depth_scale: the SSDA depth scale the files are for (``paper`` or
      ``reference``; selects the format, ``configs/ssda_gta.py``).

  Returns:
    A shell command line (placeholders in angle brackets).
  """
  if stream.name.startswith("minicity"):
    return ("python -m sdeseg_jax.main --config=configs/demo.py "
            "--workdir=<demo workdir>  (its export_target / export_source "
            "stages write <demo workdir>/pseudo_depth/{target,source})")
  cfg = SDE_CONFIGS.get(stream.layout)
  extra = ""
  if cfg is None:  # e.g. CamVid: the Cityscapes SDE over another layout.
    cfg = SDE_CONFIGS["cityscapes"]
    extra += (f" --config.data.seg.layout={stream.layout} "
              "--config.data.seg.full_res='()'")
  if tuple(stream.image_size) != _DEFAULT_IMAGE_SIZE:
    extra += (" --config.data.seg.image_size="
              f"'{tuple(int(x) for x in stream.image_size)}'")
  return (f"python -m sdeseg_jax.main --config={cfg}:export={depth_scale},"
          f"path={stream.path} --workdir=<its SDE training workdir> "
          f"--config.export.out_dir={out_dir}{extra}")


def check_pseudo_depth(stream, *, role: str, splits=("train",),
                       normalize: bool | None = None,
                       depth_scale: str = "paper") -> int:
  """Checks a pseudo-depth folder against the stream that will read it.

  Run before training so that a wrong or incomplete export fails at once
  with the file and the command that makes it, not inside a data worker
  after compilation. Checks ``index.json`` (when present: encoding, image
  size, normalisation) and that every image of ``splits`` has its file.

  Args:
    stream: reading stream config with ``path`` and ``pseudo_depth_dir``.
    role: its key under ``config.data`` (named in errors).
    splits: the splits the run reads.
    normalize: expected per-image normalisation; None = not checked.
    depth_scale: SSDA depth scale, for the command in the message.

  Returns:
    The number of files checked.

  Raises:
    FileNotFoundError: the folder or a file is missing.
    ValueError: ``index.json`` disagrees with the stream.
  """
  # pylint: disable-next=g-import-not-at-top
  from sdeseg_jax.data import readers
  out_dir = stream.pseudo_depth_dir
  key = f"config.data.{role}.pseudo_depth_dir"
  cmd = export_command(stream, out_dir, depth_scale)
  if not out_dir or not os.path.isdir(out_dir):
    raise FileNotFoundError(
        f"{key}={out_dir!r} does not exist: expected the pseudo depth of the "
        f"{stream.layout} images in {stream.path}. Make it with:\n  {cmd}")
  index_path = os.path.join(out_dir, "index.json")
  if os.path.isfile(index_path):
    with open(index_path) as f:
      index = json.load(f)
    wrong = []
    if index.get("encoding") != stream.pseudo_depth_encoding:
      wrong.append(f"encoding {index.get('encoding')!r} but config.data."
                   f"{role}.pseudo_depth_encoding="
                   f"{stream.pseudo_depth_encoding!r}")
    if list(index.get("image_size", [])) != list(stream.image_size):
      wrong.append(f"image_size {index.get('image_size')} but config.data."
                   f"{role}.image_size={tuple(stream.image_size)}")
    if normalize is not None and bool(index.get("normalize")) != normalize:
      wrong.append(f"normalize={index.get('normalize')} but depth_scale="
                   f"{depth_scale!r} needs normalize={normalize}")
    if wrong:
      raise ValueError(f"{index_path}: exported with " + "; ".join(wrong)
                       + f". Re-export with:\n  {cmd}")
  n = 0
  centre = sorted(stream.frame_offsets).index(0)
  for split in splits:
    for smp in readers.list_samples(stream, split):
      path = os.path.join(out_dir, pseudo_depth_relpath(smp.relpath))
      if not os.path.isfile(path):
        raise FileNotFoundError(
            f"missing pseudo-depth file {path} for {split} image "
            f"{smp.frames[centre]} ({key}={out_dir!r}). Make it with:\n  "
            f"{cmd}")
      n += 1
  return n
