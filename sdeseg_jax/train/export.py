"""Mode ``export_depth``: depth pseudo-labels for every image of a split.

  python -m sdeseg_jax.main --config=configs/sde_cityscapes.py:path=/data/cs \
      --config.mode=export_depth --workdir=/runs/sde_stage2

What DepthMix, Matching Geometry Sampling and data selection read later
(REFERENCE_SPEC 5.5). Output format, in ``config.export.out_dir`` (default
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

from sdeseg_jax.models import joint
from sdeseg_jax.train import checkpoint as ckpt_lib
from sdeseg_jax.train import sde
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
  """``{record index: relpath}`` of a prepared split."""
  # pylint: disable-next=g-import-not-at-top
  from sdeseg_jax.data import builder as builder_lib
  src = builder_lib.prepare(stream, data_dir).as_data_source(split=split)
  out = {}
  for i in range(len(src)):
    rec = src[i]
    rel = rec["relpath"]
    out[int(rec["index"])] = rel.decode() if isinstance(rel, bytes) else rel
  return out


def make_predict(model_cfg: mlc.ConfigDict, mesh):
  """Jitted ``(variables, color [B,T,H,W,3] uint8, center) -> disp0``."""
  model = joint.from_config(model_cfg)

  def predict(variables, color, center):
    x = sde.to_float(color[:, center:center + 1])
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
  loader = pipeline.make_loader(stream, split=split,
                                global_batch_size=batch_size, seed=seed,
                                train=False, mesh=mesh, data_dir=data_dir)
  center = tuple(sorted(stream.frame_offsets)).index(0)
  n = 0
  for batch in loader:
    disp = np.asarray(jax.device_get(predict(variables, batch["color"],
                                             center)))
    index = np.asarray(jax.device_get(batch["index"]))
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
    path = sde.ensure_minicity(config, workdir)
  stream = mlc.ConfigDict(base.to_dict())
  stream.path = path
  stream.load_labeled = stream.load_unlabeled = True  # every image
  stream.with_depth = False
  stream.pseudo_depth_dir = ""
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
      "counts": counts, "model": config.model.to_dict(),
  }
  if jax.process_index() == 0:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "index.json"), "w") as f:
      json.dump(index, f, indent=2, sort_keys=True)
  return index
