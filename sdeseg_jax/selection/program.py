r"""Mode ``select``: which images to annotate (automatic data selection).

  python -m sdeseg_jax.main --config=configs/select_cityscapes.py:\
method=ds_us,seed=42,path=/data/cityscapes,teacher=/runs/sde_stage2 \
      --workdir=/runs/select_ds_us_s42

What the reference's ``label_selection.py`` (experiment 211) does, on the
sorted training list of ``config.data.pool`` (N images):

1. Features: one eval-mode pass of the SDE teacher (``config.teacher_model``
   from ``config.select.teacher``) over the full images; decoder stage
   ``config.select.feature_stage`` pooled to 4x8, z-scored (``blocks``),
   and the N x N L2 matrix D. Both are cached in the workdir
   (``selection_cache.npz``, ``distances.npy``) and reused by every round;
   a cache made for another pool size or teacher is refused.
2. Pseudo depth: the teacher's normalised 8-bit disparity of every pool
   image, from ``config.data.pool.pseudo_depth_dir`` or, when that is empty,
   exported into ``<workdir>/pseudo_depth`` once.
3. Round 0 (``schedule[0]`` images): ``ds_us``/``ds``: the seed image
   (first element of the seeded permutation) plus farthest-point picks;
   ``us``/``entropy``: the permutation's first images; ``random``: the
   permutation, all rounds.
4. Round k > 0: a student trained from scratch on the current set for
   ``student_steps[k-1]`` steps (``trainer.fit`` in
   ``<workdir>/students/round{k-1}``): the depth student (berHu against the
   pseudo depth, rows >= 0.9 H masked) for ``us``/``ds_us``, a segmentation
   student (CE) for ``entropy``; its scores on the pool (E(i) or the mean
   pixel entropy); then Eq. 4 (``ds_us``), farthest point (``ds``) or the
   greedy top-n (``us``, ``entropy``).

Before each round's student is trained, ``nlabels{N}_subset.json`` (indices
into the sorted train list, in selection order; every list is a prefix of
the next) is written, and ``selection_summary.json`` is rewritten (method,
seed, per-round wall time, student loss, per-class pixel ratios of the
selection against the pool -- the paper's Fig. 7, computed from the pool's
labels, which the selection itself never reads). Rerunning the command
resumes: finished rounds are read back, an interrupted student resumes from
its checkpoint (bitwise on CPU), so the lists are the same as without the
interruption. The lists drive the SSL/SSDA configs (``select=`` of
``configs/ssl_cityscapes.py`` etc., the ``fixed`` subset mode).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from absl import logging
import flax
import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np

from sdeseg_jax import errors
from sdeseg_jax.data import resolve
from sdeseg_jax.data.readers import DatasetError
from sdeseg_jax.losses.depth import berhu
from sdeseg_jax.losses.segmentation import cross_entropy
from sdeseg_jax.models import joint
from sdeseg_jax.selection import blocks
from sdeseg_jax.train import checkpoint as ckpt_lib
from sdeseg_jax.train import step as step_lib
from sdeseg_jax.train import toolkit
from sdeseg_jax.train import trainer
from sdeseg_jax.utils import sharding as sharding_lib

METHODS = ("ds_us", "ds", "us", "entropy", "random")
UNCERTAINTY = ("reference", "l1")
# Which student a method trains between rounds (None: no student).
STUDENT = {"ds_us": "depth", "us": "depth", "entropy": "seg", "ds": None,
           "random": None}
IGNORE_INDEX = toolkit.IGNORE_INDEX


class Interrupted(RuntimeError):
  """A student's training was preempted; rerun the command to resume."""


def list_path(workdir: str, n: int) -> str:
  return os.path.join(workdir, f"nlabels{n}_subset.json")


def _write_json(path: str, obj: Any) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=1)
  os.replace(tmp, path)  # never a half-written list


def _save_npy(path: str, arr: np.ndarray) -> None:
  tmp = path + ".tmp.npy"
  np.save(tmp, arr)
  os.replace(tmp, path)


# ---------------------------------------------------------------------------
# Configuration checks.


def check_config(config: mlc.ConfigDict) -> None:
  """Refuses a bad ``config.select`` before anything is computed."""
  sc = config.select
  if sc.method not in METHODS:
    raise errors.ConfigError(f"config.select.method={sc.method!r}; choose one of "
                     f"{METHODS}")
  if sc.uncertainty not in UNCERTAINTY:
    raise errors.ConfigError(f"config.select.uncertainty={sc.uncertainty!r}; choose "
                     f"one of {UNCERTAINTY}")
  sched = [int(n) for n in sc.schedule]
  if not sched or sched[0] < 1 or any(b <= a for a, b in zip(sched,
                                                             sched[1:])):
    raise errors.ConfigError(f"config.select.schedule={tuple(sc.schedule)} must be "
                     "increasing positive sizes, e.g. (25, 50, 100)")
  if STUDENT[sc.method] and len(sc.student_steps) < len(sched) - 1:
    raise errors.ConfigError(
        f"config.select.student_steps has {len(sc.student_steps)} entries; "
        f"method {sc.method} trains a student before each of the "
        f"{len(sched) - 1} rounds after the first")


def check_pool_size(config: mlc.ConfigDict, n_pool: int) -> None:
  want = int(config.select.schedule[-1])
  if want > n_pool:
    raise errors.ConfigError(
        f"config.select.schedule asks for {want} images but the pool "
        f"(config.data.pool, {config.data.pool.path}) has only {n_pool} "
        "training images; lower the schedule or use a larger pool")


def check_workdir_config(workdir: str, config: mlc.ConfigDict) -> None:
  """A workdir holds one selection; refuse to continue another's."""
  sc = config.select
  record = {"method": sc.method, "seed": int(sc.seed),
            "schedule": [int(n) for n in sc.schedule],
            "student_steps": [int(n) for n in sc.student_steps],
            "lambda_e": float(sc.lambda_e), "uncertainty": sc.uncertainty}
  path = os.path.join(workdir, "selection_config.json")
  if os.path.isfile(path):
    with open(path) as f:
      old = json.load(f)
    if old != record:
      raise errors.ConfigError(
          f"{path}: this workdir holds a selection made with {old}, not "
          f"{record}; use a new --workdir (or delete that workdir)")
  else:
    _write_json(path, record)


# ---------------------------------------------------------------------------
# The SDE teacher: features, class counts and pseudo depth.


def _model_shapes(model, image_hw) -> dict[str, Any]:
  x = jnp.zeros((1, 1, *image_hw, 3), jnp.float32)
  key = jax.random.PRNGKey(0)
  return jax.eval_shape(lambda: model.init(
      {"params": key, "dropout": key}, x, (0,), train=False, pose=False))


def load_teacher(config: mlc.ConfigDict) -> dict[str, Any]:
  """The teacher's variables, checked against ``config.teacher_model``.

  Raises:
    FileNotFoundError: no checkpoint at ``config.select.teacher.checkpoint``.
    ConfigError: the checkpoint is not of that architecture.
  """
  tc = config.select.teacher
  if not tc.checkpoint:
    raise errors.ConfigError("config.select.teacher.checkpoint is empty: point it at "
                     "the workdir of the SDE teacher (mode=sde)")
  try:
    loaded = ckpt_lib.load_variables(tc.checkpoint,
                                     None if tc.step < 0 else tc.step)
  except FileNotFoundError as e:
    raise FileNotFoundError(
        f"config.select.teacher.checkpoint={tc.checkpoint!r}: {e}; train "
        "the SDE teacher first (mode=sde) or fix the path") from e
  model = joint.from_config(config.teacher_model)
  want = _model_shapes(model, tuple(config.data.pool.image_size))
  out = {}
  for col in ("params", "batch_stats"):
    have = flax.traverse_util.flatten_dict(loaded.get(col) or {}, sep="/")
    need = flax.traverse_util.flatten_dict(want.get(col, {}), sep="/")
    picked = {}
    for key, spec in need.items():
      if key not in have or tuple(np.shape(have[key])) != tuple(spec.shape):
        got = np.shape(have[key]) if key in have else "absent"
        raise errors.ConfigError(
            f"config.select.teacher.checkpoint={tc.checkpoint!r} is not a "
            f"checkpoint of config.teacher_model ({col}/{key}: expected "
            f"{tuple(spec.shape)}, found {got}); give the SDE run's workdir "
            "and the teacher_model that trained it")
      picked[key] = np.asarray(have[key], spec.dtype)
    out[col] = flax.traverse_util.unflatten_dict(picked, sep="/")
  out["step"] = loaded["step"]
  return out


def pool_stream(config: mlc.ConfigDict, path: str) -> mlc.ConfigDict:
  """Every training image of the pool, as evaluation data."""
  s = resolve.with_overrides(
      config.data.pool, path=path, load_labeled=True, load_unlabeled=False,
      crop_size=(), flip_prob=0.0, color_aug=False)
  s.subset.mode = "all"
  return s


def _eval_loader(stream, config, data_dir):
  """One ordered pass over the pool's training split (host batches)."""
  from sdeseg_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  return pipeline.make_loader(stream, split="train",
                              global_batch_size=config.select.batch_size,
                              seed=config.seed, train=False,
                              data_dir=data_dir)


def _on_mesh(batch, keys, mesh):
  """The ``keys`` of a host batch as global arrays on ``mesh``."""
  return sharding_lib.host_to_global(
      {k: np.asarray(batch[k]) for k in keys if k in batch}, mesh)


def pool_size(stream, config, data_dir) -> int:
  loader = _eval_loader(stream, config, data_dir)
  n = loader.num_samples
  loader.close()
  return n


def teacher_pass(config, teacher, stream, mesh, data_dir
                 ) -> tuple[np.ndarray, np.ndarray]:
  """``(pooled [N, 4, 8, C], class_counts [N, num_classes])`` of the pool."""
  model = joint.from_config(config.teacher_model)
  stage, hw = int(config.select.feature_stage), tuple(config.select.pool_hw)
  centre = toolkit.centre_index(stream.frame_offsets)
  num_classes = int(config.model.num_classes)

  @jax.jit
  def features(variables, color):
    x = toolkit.to_float(color[:, centre:centre + 1])
    out = model.apply(variables, x, (0,), train=False, pose=False)
    return blocks.pool_features(out["upconv"][stage], hw)

  variables = jax.device_put(
      {"params": teacher["params"], "batch_stats": teacher["batch_stats"]},
      sharding_lib.replicated(mesh))
  loader = _eval_loader(stream, config, data_dir)
  n = loader.num_samples
  pooled, counts = None, np.zeros((n, num_classes), np.int64)
  for batch in loader:
    f = np.asarray(jax.device_get(features(
        variables, _on_mesh(batch, ("color",), mesh)["color"])))
    idx, lab = np.asarray(batch["index"]), np.asarray(batch["label"])
    if pooled is None:
      pooled = np.zeros((n,) + f.shape[1:], np.float32)
    for k, i in enumerate(idx):
      if i < 0:
        continue  # padding of the last batch
      pooled[i] = f[k]
      l = lab[k][lab[k] < num_classes]
      counts[i] = np.bincount(l.ravel(), minlength=num_classes)
  loader.close()
  return pooled, counts


def features_and_distances(config, workdir, teacher, stream, mesh, data_dir,
                           n_pool: int) -> tuple[np.ndarray, np.ndarray]:
  """``(D [N, N], class_counts [N, C])``, from the workdir cache if valid.

  Raises:
    DatasetError: the cache was made for another pool size or teacher.
  """
  path = os.path.join(workdir, "selection_cache.npz")
  dpath = os.path.join(workdir, "distances.npy")
  meta = {"n": n_pool, "teacher": os.path.abspath(
      config.select.teacher.checkpoint), "teacher_step": int(teacher["step"]),
          "feature_stage": int(config.select.feature_stage),
          "pool_hw": [int(v) for v in config.select.pool_hw],
          "image_size": [int(v) for v in stream.image_size]}
  if os.path.isfile(path):
    with np.load(path) as z:
      old = json.loads(str(z["meta"]))
      if old["n"] != n_pool:
        raise DatasetError(
            f"{path} holds features of {old['n']} images but the pool "
            f"({stream.path}) now has {n_pool}: the cache is stale; delete "
            f"it and {dpath} (or use a new workdir)")
      if old != meta:
        raise DatasetError(
            f"{path} was made with {old}, not {meta}: the cache is stale; "
            f"delete it and {dpath} (or use a new workdir)")
      counts = z["class_counts"]
      pooled = z["pooled"]
  else:
    t0 = time.time()
    pooled, counts = teacher_pass(config, teacher, stream, mesh, data_dir)
    tmp = path + ".tmp.npz"
    np.savez(tmp, pooled=pooled, class_counts=counts,
             meta=np.asarray(json.dumps(meta)))
    os.replace(tmp, path)
    logging.info("select: teacher features of %d images in %.1fs -> %s",
                 n_pool, time.time() - t0, path)
  if os.path.isfile(dpath):
    dist = np.load(dpath)
    if dist.shape != (n_pool, n_pool):
      raise DatasetError(f"{dpath} is {dist.shape}, not ({n_pool}, {n_pool}): "
                       "stale; delete it")
  else:
    t0 = time.time()
    dist = blocks.pairwise_distances(blocks.zscore(pooled),
                                     block=config.select.distance_block)
    _save_npy(dpath, dist)
    logging.info("select: %dx%d distances in %.1fs", n_pool, n_pool,
                 time.time() - t0)
  return dist, counts


def ensure_pseudo_depth(config, workdir, teacher, stream, mesh, data_dir,
                        n_pool: int) -> str:
  """The folder of the pool's pseudo depth, exporting it once if needed."""
  if stream.pseudo_depth_dir:
    return stream.pseudo_depth_dir
  from sdeseg_jax.train import export  # pylint: disable=g-import-not-at-top
  out_dir = os.path.join(workdir, "pseudo_depth")
  done = os.path.join(out_dir, "select_done.json")
  if os.path.isfile(done):
    with open(done) as f:
      if json.load(f).get("n") == n_pool:
        return out_dir
  variables = jax.device_put(
      {"params": teacher["params"], "batch_stats": teacher["batch_stats"]},
      sharding_lib.replicated(mesh))
  s = mlc.ConfigDict(stream.to_dict())
  s.pseudo_depth_dir = ""
  # The reference's v1 estimator: per-image min-max, trunc(d * 255).
  n = export.export_split(
      export.make_predict(config.teacher_model, mesh), variables, s, "train",
      out_dir=out_dir, data_dir=data_dir, encoding="u8", normalize=True,
      batch_size=config.select.batch_size, mesh=mesh, seed=config.seed)
  _write_json(done, {"n": n})
  return out_dir


# ---------------------------------------------------------------------------
# Students.


def _bottom_mask(h: int, frac: float) -> jax.Array:
  return (jnp.arange(h) < int(frac * h)).astype(jnp.float32)[None, :, None]


class StudentTask:
  """The student of one round for ``trainer.fit`` (``step.Task``).

  ``kind="depth"``: berHu of the scale-0 disparity against the pseudo depth
  with rows >= ``config.loss.berhu_rows * H`` masked (the data-selection
  SIDE student); ``kind="seg"``: cross-entropy of the labels (the entropy
  baseline's segmentation student).
  """

  def __init__(self, config: mlc.ConfigDict, kind: str):
    self.config = config
    self.model = joint.from_config(config.model)
    self.kind = kind
    self.rows = float(config.loss.berhu_rows)

  def init(self, rng, batch):
    v = self.model.init({"params": rng, "dropout": rng},
                        toolkit.to_float(batch["color_aug"]), (0,),
                        train=False, pose=False)
    return v["params"], v.get("batch_stats", {})

  def load_pretrained(self, params, batch_stats):
    """The ImageNet encoder (``config.model.encoder_init``) and an earlier
    run (``config.init``); see ``toolkit.load_initial_weights``."""
    return toolkit.load_initial_weights(params, batch_stats, self.config)

  def loss_fn(self, params, batch_stats, batch, rng, step, teacher=None):
    del step, teacher
    out, new_stats = toolkit.student_apply(
        self.model, params, batch_stats,
        toolkit.to_float(batch["color_aug"]), (0,), rng, pose=False)
    if self.kind == "depth":
      disp = out["disp"][0][..., 0].astype(jnp.float32)
      loss = berhu(disp, batch["pseudo_depth"],
                   _bottom_mask(disp.shape[1], self.rows))
      return loss, step_lib.TaskAux(new_stats, {"berhu": loss})
    loss = cross_entropy(out["semantics"].astype(jnp.float32),
                         batch["label"], IGNORE_INDEX)
    return loss, step_lib.TaskAux(new_stats, {"ce": loss})

  def predict(self, variables, batch):
    """Eval-mode outputs of the centre frame of ``color``: ``disp``
    ``[B, H, W, 1]`` (depth student) or ``logits`` ``[B, H, W, C]``."""
    out = self.model.apply(variables, toolkit.to_float(batch["color"]), (0,),
                           train=False, pose=False)
    if self.kind == "depth":
      return {"disp": out["disp"][0].astype(jnp.float32)}
    return {"logits": out["semantics"].astype(jnp.float32)}


def make_scorer(config: mlc.ConfigDict, kind: str):
  """Jitted ``(variables, batch) -> (score [B], loss [B])`` of a student.

  Depth: E(i) against the pseudo depth (``config.select.uncertainty``:
  ``reference`` masks or plain ``l1``) and the per-image berHu; seg: the
  mean pixel entropy and the per-image CE.
  """
  task = StudentTask(config, kind)
  lc = config.loss
  masked = config.select.uncertainty == "reference"
  rows = float(lc.berhu_rows)

  def score(variables, batch):
    out = task.predict(variables, batch)
    if kind == "depth":
      disp = out["disp"][..., 0]
      target = batch["pseudo_depth"].astype(jnp.float32)
      e = blocks.depth_uncertainty(
          disp, target, masked=masked, low_disp=lc.low_disp,
          kernel=int(lc.dilation), bottom_frac=float(lc.uncertainty_rows))
      mask = _bottom_mask(disp.shape[1], rows)[0]
      loss = jax.vmap(lambda p, t: berhu(p, t, mask))(disp, target)
      return e, loss
    logits = out["logits"]
    loss = jax.vmap(lambda l, y: cross_entropy(l[None], y[None],
                                               IGNORE_INDEX))(
                                                   logits, batch["label"])
    return blocks.mean_entropy(logits), loss

  return jax.jit(score)


def student_config(config: mlc.ConfigDict, steps: int) -> mlc.ConfigDict:
  c = mlc.ConfigDict(config.to_dict())
  c.train.num_steps = int(steps)
  c.optim.decay_steps = int(steps)
  return c


def train_student(config, workdir, rnd: int, kind: str, subset_file: str,
                  path: str, pseudo_dir: str, mesh, data_dir: str):
  """Trains round ``rnd``'s student from scratch (resuming its checkpoint).

  Returns:
    The final ``TrainState``.

  Raises:
    Interrupted: training was preempted before the last step.
  """
  from sdeseg_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  steps = int(config.select.student_steps[rnd])
  cfg = student_config(config, steps)
  st = resolve.with_overrides(
      config.data.student, path=config.data.student.path or path,
      load_labeled=True, load_unlabeled=False,
      pseudo_depth_dir=pseudo_dir if kind == "depth" else "")
  st.subset.mode, st.subset.n, st.subset.file = "fixed", 0, subset_file
  loader = pipeline.make_loader(
      st, split="train", global_batch_size=cfg.train.batch_size,
      seed=cfg.seed + rnd, train=True, data_dir=data_dir)
  example = toolkit.example_batch(st, cfg.train.batch_size, num_frames=1)
  sdir = os.path.join(workdir, "students", f"round{rnd}")
  try:
    state = trainer.fit(cfg, sdir, task=StudentTask(cfg, kind),
                        train_iter=loader, example_batch=example, mesh=mesh)
  finally:
    loader.close()
  done = int(jax.device_get(state.step))
  if done < steps:
    raise Interrupted(
        f"the round-{rnd} student stopped at step {done} of {steps} "
        f"(saved in {sdir}); rerun the same command to resume")
  return state


def score_pool(config, scorer, state, stream, pseudo_dir, mesh, data_dir,
               n_pool: int) -> tuple[np.ndarray, np.ndarray]:
  """``(score [N], loss [N])`` of a trained student over the pool."""
  s = mlc.ConfigDict(stream.to_dict())
  s.pseudo_depth_dir = pseudo_dir
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  scores = np.zeros(n_pool, np.float32)
  losses = np.zeros(n_pool, np.float32)
  loader = _eval_loader(s, config, data_dir)
  for batch in loader:
    e, l = jax.device_get(scorer(variables, _on_mesh(
        batch, ("color", "pseudo_depth", "label"), mesh)))
    idx = np.asarray(batch["index"])
    keep = idx >= 0
    scores[idx[keep]] = np.asarray(e)[keep]
    losses[idx[keep]] = np.asarray(l)[keep]
  loader.close()
  return scores, losses


# ---------------------------------------------------------------------------
# The rounds.


def initial_selection(method: str, dist: np.ndarray, n0: int, seed: int
                      ) -> list[int]:
  n_pool = dist.shape[0]
  perm = blocks.reference_permutation(n_pool, seed)
  if method in ("ds_us", "ds"):
    first = int(perm[0])
    return [first] + blocks.farthest_point(dist, [first], n0 - 1)
  return [int(i) for i in perm[:n0]]


def next_picks(method: str, dist, selected: list[int], n_add: int, scores,
               lambda_e: float, seed: int) -> list[int]:
  if method == "random":
    perm = blocks.reference_permutation(dist.shape[0], seed)
    return [int(i) for i in perm[len(selected):len(selected) + n_add]]
  if method == "ds":
    return blocks.farthest_point(dist, selected, n_add)
  if method == "ds_us":
    return blocks.farthest_point(dist, selected, n_add, bias=scores,
                                 lambda_e=lambda_e)
  return blocks.top_n(scores, selected, n_add)


def read_lists(workdir: str, schedule) -> list[list[int]]:
  """The finished rounds' lists (checked to be prefixes of each other)."""
  lists = []
  for n in schedule:
    p = list_path(workdir, n)
    if not os.path.isfile(p):
      break
    with open(p) as f:
      ids = json.load(f)
    if lists and ids[:len(lists[-1])] != lists[-1]:
      raise DatasetError(f"{p} does not extend the previous round's list; the "
                       "workdir is inconsistent (use a new --workdir)")
    lists.append(ids)
  return lists


def write_summary(workdir: str, config, n_pool: int, counts, lists, extra
                  ) -> dict[str, Any]:
  sc = config.select
  rounds = []
  for k, ids in enumerate(lists):
    rec_path = os.path.join(workdir, "rounds", f"round{k}.json")
    rec = {}
    if os.path.isfile(rec_path):
      with open(rec_path) as f:
        rec = json.load(f)
    rec.update(round=k, n=len(ids), file=os.path.basename(
        list_path(workdir, int(sc.schedule[k]))),
               class_pixel_ratio=[None if np.isnan(r) else float(r) for r in
                                  blocks.class_pixel_ratio(counts, ids)])
    rounds.append(rec)
  summary = {"method": sc.method, "seed": int(sc.seed), "pool_size": n_pool,
             "schedule": [int(n) for n in sc.schedule],
             "lambda_e": float(sc.lambda_e), "uncertainty": sc.uncertainty,
             "class_names": list(config.select.class_names),
             "rounds": rounds, **extra}
  _write_json(os.path.join(workdir, "selection_summary.json"), summary)
  return summary


def run(config: mlc.ConfigDict, workdir: str) -> dict[str, Any]:
  """Entry point of ``mode=select``; returns the summary dict."""
  check_config(config)
  os.makedirs(workdir, exist_ok=True)
  sc = config.select
  schedule = [int(n) for n in sc.schedule]
  method, kind = sc.method, STUDENT[sc.method]
  mesh = sharding_lib.make_mesh()
  path = resolve.dataset_root(config, "pool", workdir, folder="minicity",
                              labels=True)
  data_dir = config.data.tfds_dir or os.path.join(workdir, "tfds")
  stream = pool_stream(config, path)
  teacher = load_teacher(config)
  n_pool = pool_size(stream, config, data_dir)
  check_pool_size(config, n_pool)
  check_workdir_config(workdir, config)
  t0 = time.time()
  dist, counts = features_and_distances(config, workdir, teacher, stream,
                                        mesh, data_dir, n_pool)
  extra = {"setup_s": round(time.time() - t0, 3)}
  pseudo_dir = ""
  if kind == "depth":
    pseudo_dir = ensure_pseudo_depth(config, workdir, teacher, stream, mesh,
                                     data_dir, n_pool)
  os.makedirs(os.path.join(workdir, "rounds"), exist_ok=True)
  lists = read_lists(workdir, schedule)
  if lists:
    logging.info("select: resuming after round %d (%d images selected)",
                 len(lists) - 1, len(lists[-1]))
  else:
    t = time.time()
    ids = initial_selection(method, dist, schedule[0], int(sc.seed))
    _write_json(list_path(workdir, schedule[0]), ids)
    _write_json(os.path.join(workdir, "rounds", "round0.json"),
                {"picked": len(ids), "wall_s": round(time.time() - t, 3)})
    lists.append(ids)
    logging.info("select round 0/%d: picked %d images (%s)",
                 len(schedule) - 1, len(ids), method)
  write_summary(workdir, config, n_pool, counts, lists, extra)
  scorer = make_scorer(config, kind) if kind else None
  sec_per_step = None
  for k in range(len(lists), len(schedule)):
    t = time.time()
    selected = lists[-1]
    scores, rec = None, {}
    if kind:
      sdir = os.path.join(workdir, "students", f"round{k - 1}")
      spath = os.path.join(sdir, "scores.npz")
      steps = int(sc.student_steps[k - 1])
      logging.info("select round %d/%d: training the %s student on %d "
                   "images for %d steps", k, len(schedule) - 1, kind,
                   len(selected), steps)
      if os.path.isfile(spath):
        with np.load(spath) as z:
          scores, losses = z["scores"], z["losses"]
      else:
        state = train_student(config, workdir, k - 1, kind,
                              list_path(workdir, schedule[k - 1]), path,
                              pseudo_dir, mesh, data_dir)
        sec_per_step = (time.time() - t) / max(steps, 1)
        scores, losses = score_pool(config, scorer, state, stream,
                                    pseudo_dir, mesh, data_dir, n_pool)
        tmp = spath + ".tmp.npz"
        np.savez(tmp, scores=scores, losses=losses)
        os.replace(tmp, spath)
      scores = np.asarray(scores, np.float64)
      scores[selected] = 0.0  # labeled images carry no uncertainty
      rec.update(student_steps=steps,
                 student_loss=float(np.mean(losses[selected])))
    n_add = schedule[k] - len(selected)
    picks = next_picks(method, dist, selected, n_add, scores,
                       float(sc.lambda_e), int(sc.seed))
    if len(picks) < n_add:
      logging.warning("select round %d: early stop after %d of %d picks "
                      "(every remaining image is already covered)", k,
                      len(picks), n_add)
    ids = selected + picks
    rec.update(picked=len(picks), early_stop=len(picks) < n_add,
               wall_s=round(time.time() - t, 3))
    _write_json(list_path(workdir, schedule[k]), ids)
    _write_json(os.path.join(workdir, "rounds", f"round{k}.json"), rec)
    lists.append(ids)
    write_summary(workdir, config, n_pool, counts, lists, extra)
    left = ""
    if kind and sec_per_step:
      rest = sum(int(s) for s in sc.student_steps[k:len(schedule) - 1])
      left = f", about {rest * sec_per_step / 60:.1f} min left"
    loss = (f", student loss {rec['student_loss']:.4g}" if "student_loss"
            in rec else "")
    logging.info("select round %d/%d: picked %d (total %d)%s, %.1fs%s", k,
                 len(schedule) - 1, len(picks), len(ids), loss,
                 rec["wall_s"], left)
  return write_summary(workdir, config, n_pool, counts, lists, extra)
