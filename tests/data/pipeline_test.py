"""Tests of the grain input pipeline (sdeseg_jax/data/pipeline.py).

One tiny MiniCity (cityscapes layout, 64x32, 5 train + 2 val sequences) is
generated and prepared once for the module.
"""

import json
import os
import shutil

from absl.testing import absltest
import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from PIL import Image

from configs import common
from sdeseg_jax.data import minicity
from sdeseg_jax.data import pipeline
from sdeseg_jax.train import trainer
from sdeseg_jax.utils import sharding
from tests import _fixtures

_TMP = None
_ROOT = None
_TFDS = None
_W, _H = 64, 32


def setUpModule():
  global _TMP, _ROOT, _TFDS
  _TMP, _ROOT, _TFDS = _fixtures.generate_minicity(5, 2, width=_W,
                                                   height=_H)


def tearDownModule():
  shutil.rmtree(_TMP, ignore_errors=True)


def _stream(**kw):
  base = dict(path=_ROOT, frame_offsets=(-1, 0, 1), image_size=(_H, _W),
              crop_size=(_H, _H), num_workers=0, with_depth=True,
              num_scales=3)
  base.update(kw)
  return common.stream_config("mc_cs", "cityscapes", **base)


def _loader(stream=None, *, train=True, bs=4, seed=0, split="train"):
  return pipeline.make_loader(stream or _stream(), split=split,
                              global_batch_size=bs, seed=seed, train=train,
                              data_dir=_TFDS)


def _take(loader, n):
  out = [jax.tree.map(np.asarray, next(loader)) for _ in range(n)]
  loader.close()
  return out


def _fingerprint(batches):
  return [(b["index"].tolist(), int(b["color_aug"].astype(np.int64).sum()),
           b["K"][:, 0, 2].tolist()) for b in batches]


class PipelineTest(absltest.TestCase):

  def test_host_batch_keys_shapes_and_the_trainers_sharding(self):
    loader = _loader(_stream(color_aug=True))
    b = next(loader)
    loader.close()
    # Loaders deliver host numpy; only the trainer makes global arrays.
    self.assertTrue(all(isinstance(x, np.ndarray)
                        for x in jax.tree.leaves(b)))
    mesh = sharding.make_mesh()
    g = trainer.to_global(b, mesh)
    self.assertIsInstance(g["color"], jax.Array)
    self.assertEqual(g["color"].sharding, sharding.data_sharding(mesh))
    np.testing.assert_array_equal(np.asarray(g["color"]), b["color"])
    expect = {
        "color": ((4, 3, _H, _H, 3), np.uint8),
        "color_aug": ((4, 3, _H, _H, 3), np.uint8),
        "K": ((4, 4, 4), np.float32), "inv_K": ((4, 4, 4), np.float32),
        "label": ((4, _H, _H), np.int32), "is_labeled": ((4,), np.bool_),
        "depth": ((4, _H, _H), np.float32), "index": ((4,), np.int32),
        "camera_height": ((4,), np.float32),
        "camera_pitch": ((4,), np.float32),
    }
    for k, (shape, dtype) in expect.items():
      self.assertEqual((b[k].shape, b[k].dtype), (shape, dtype), k)
    self.assertEqual(b["pyramid"]["s1"].shape, (4, _H // 2, _H // 2, 3))
    self.assertEqual(b["pyramid"]["s2"].shape, (4, _H // 4, _H // 4, 3))
    lbl = np.asarray(b["label"])
    self.assertTrue(np.all((lbl < 19) | (lbl == 250)))
    self.assertTrue(np.all(np.asarray(b["is_labeled"])))
    h = np.asarray(b["camera_height"])
    self.assertTrue(np.all((h > 1.0) & (h < 1.6)), h)

  def test_same_order_and_augmentation_with_workers(self):
    a = _take(_loader(_stream(color_aug=True)), 3)
    b = _take(_loader(_stream(color_aug=True, num_workers=2)), 3)
    self.assertEqual(_fingerprint(a), _fingerprint(b))
    c = _take(_loader(_stream(color_aug=True), seed=1), 3)
    self.assertNotEqual(_fingerprint(a), _fingerprint(c))
    # Each epoch (5 samples) is a permutation; epochs differ in order.
    idx = np.concatenate([x["index"] for x in a])[:10]
    self.assertCountEqual(idx[:5].tolist(), range(5))
    self.assertCountEqual(idx[5:10].tolist(), range(5))

  def test_color_aug_only_on_color_aug(self):
    (b,) = _take(_loader(_stream(color_aug=True), bs=4), 1)
    changed = [not np.array_equal(b["color"][i], b["color_aug"][i])
               for i in range(4)]
    self.assertTrue(any(changed))
    (c,) = _take(_loader(_stream(color_aug=False), bs=4), 1)
    np.testing.assert_array_equal(c["color"], c["color_aug"])
    # Same seed: identical non-augmented frames whatever color_aug says.
    np.testing.assert_array_equal(b["color"], c["color"])

  def test_resume_continues_with_next_batch(self):
    ref = _take(_loader(), 4)
    loader = _loader()
    next(loader)
    state = json.loads(json.dumps(loader.get_state()))
    loader.close()
    resumed = _loader()
    resumed.set_state(state)
    self.assertEqual(_fingerprint(_take(resumed, 3)), _fingerprint(ref[1:]))

  def test_orbax_checkpoint_of_iterator(self):
    ref = _take(_loader(), 3)
    loader = _loader()
    next(loader)
    ckpt = os.path.join(_TMP, "ckpt")
    with ocp.CheckpointManager(ckpt) as mngr:
      mngr.save(1, args=ocp.args.Composite(
          data_iter=grain.checkpoint.CheckpointSave(loader.iterator)))
      mngr.wait_until_finished()
    loader.close()
    resumed = _loader()
    with ocp.CheckpointManager(ckpt) as mngr:
      mngr.restore(1, args=ocp.args.Composite(
          data_iter=grain.checkpoint.CheckpointRestore(resumed.iterator)))
    self.assertEqual(_fingerprint(_take(resumed, 2)), _fingerprint(ref[1:]))

  def test_process_shards_are_disjoint(self):
    for train in (True, False):
      seen = []
      for p in range(2):
        ds, _, _ = pipeline.make_dataset(
            _stream(), split="train", global_batch_size=2, seed=0,
            train=train, data_dir=_TFDS, process_index=p, process_count=2)
        it = iter(ds)
        n = 2 if train else 3  # one epoch = 5 samples (+1 padding in eval)
        seen.append(np.concatenate([next(it)["index"] for _ in range(n)]))
      a, b = set(seen[0].tolist()) - {-1}, set(seen[1].tolist()) - {-1}
      self.assertEmpty(a & b)
      if not train:
        self.assertEqual(a | b, set(range(5)))

  def test_eval_pass_is_padded_and_ordered(self):
    loader = _loader(train=False, split="val", bs=4,
                     stream=_stream(color_aug=True))
    self.assertEqual((loader.num_batches, loader.num_samples), (1, 2))
    (b,) = _take(loader, 1)
    self.assertEqual(b["index"].tolist(), [0, 1, -1, -1])
    self.assertEqual(b["color"].shape, (4, 3, _H, _W, 3))
    np.testing.assert_array_equal(b["label"][2:], 250)
    np.testing.assert_array_equal(b["depth"][2:], 0)
    np.testing.assert_array_equal(b["color"], b["color_aug"])
    # No flip/crop: the delivered centre frame is the file on disk.
    path = os.path.join(_ROOT, "leftImg8bit/val/frankfurt/"
                        "frankfurt_000000_000019_leftImg8bit.png")
    np.testing.assert_array_equal(b["color"][0, 1], np.asarray(
        Image.open(path).convert("RGB")))

  def test_subsets(self):
    n = 5
    exp = pipeline.reference_subset(n, 2, 42)
    s = _stream(load_unlabeled=True)
    with s.unlocked():
      s.subset.mode, s.subset.n, s.subset.seed = "random", 2, 42
    loader = _loader(s, train=False, bs=8)
    (b,) = _take(loader, 1)
    # Labeled first (sorted), then the unlabeled ones, then padding.
    self.assertEqual(b["index"][:5].tolist(),
                     exp.tolist() + sorted(set(range(n)) - set(exp)))
    self.assertEqual(b["is_labeled"][:5].tolist(), [True] * 2 + [False] * 3)
    np.testing.assert_array_equal(b["label"][2:5], 250)
    self.assertTrue(np.any(b["label"][:2] != 250))
    ids = os.path.join(_TMP, "ids.json")
    with open(ids, "w") as f:
      json.dump([4, 1], f)
    with s.unlocked():
      s.subset.mode, s.subset.file, s.load_unlabeled = "fixed", ids, False
    (b,) = _take(_loader(s, train=False, bs=4), 1)
    self.assertEqual(b["index"].tolist(), [1, 4, -1, -1])
    with open(ids, "w") as f:
      json.dump([7], f)
    with self.assertRaisesRegex(ValueError, r"ids.json.*outside \[0, 5\)"):
      _loader(s, train=False, bs=4)

  def test_pseudo_depth_follows_flip_and_crop(self):
    pd_dir = os.path.join(_TMP, "pseudo")
    # Disparity = a column ramp, so every column is identifiable.
    ramp = (np.arange(_W, dtype=np.uint16) * 1000)[None].repeat(_H, 0)
    for dirpath, _, files in os.walk(os.path.join(_ROOT, "leftImg8bit")):
      for f in files:
        rel = os.path.relpath(os.path.join(dirpath, f), _ROOT)
        out = os.path.join(pd_dir, rel)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        Image.fromarray(ramp).save(out)
    batches = _take(_loader(_stream(pseudo_depth_dir=pd_dir,
                                    pseudo_depth_encoding="u16"), bs=4), 3)
    b = jax.tree.map(lambda *x: np.concatenate(x), *batches)
    pd = b["pseudo_depth"]
    self.assertEqual((pd.shape, pd.dtype), ((12, _H, _H), np.float32))
    cx0 = minicity.intrinsics("cityscapes", _W, _H)[0, 2]
    flips = set()
    for i in range(12):
      cols = np.round(pd[i, 0] * 65535 / 1000).astype(int)
      step = cols[1] - cols[0]
      self.assertIn(step, (1, -1))
      np.testing.assert_array_equal(np.diff(cols), step)
      flip = step == -1
      flips.add(flip)
      x1 = _W - 1 - cols[0] if flip else cols[0]
      # The principal point moved with the same crop and flip (ssda K).
      cx_full = _W - cx0 if flip else cx0
      self.assertAlmostEqual(float(b["K"][i, 0, 2]), cx_full - x1, places=3)
    self.assertLen(flips, 2)
    with self.assertRaisesRegex(ValueError, "missing pseudo-depth file"):
      _take(_loader(_stream(pseudo_depth_dir=os.path.join(_TMP, "nope"))), 1)


class GeometryTest(absltest.TestCase):
  """A sidecar 3-D point projects through the delivered K to its pixel."""

  def test_projection_after_crop_and_flip(self):
    sidecar = minicity.load_sidecar(_ROOT)
    k0 = minicity.intrinsics("cityscapes", _W, _H)
    frames = {f["annotated_image"]: f for f in sidecar["frames"]
              if f["annotated"] and f["split"] == "train"}
    files = sorted(os.path.join(_ROOT, p) for p in frames)
    ssda = _take(_loader(_stream(intrinsics_mode="ssda")), 2)
    batches = _take(_loader(_stream(intrinsics_mode="exact")), 2)
    flips = set()
    for bi, b in enumerate(batches):
      for i in range(4):
        rel = os.path.relpath(files[b["index"][i]], _ROOT)
        fr = frames[rel]
        img = np.asarray(Image.open(files[b["index"][i]]).convert("RGB"))
        depth = minicity.decode_depth(
            np.asarray(Image.open(os.path.join(_ROOT, fr["depth"]))))
        pose = np.asarray(fr["pose"]).reshape(4, 4)
        vs, us = np.nonzero(depth > 0)
        sel = np.random.default_rng(i).choice(len(us), 50, replace=False)
        us, vs = us[sel], vs[sel]
        # World point from the sidecar pose and GT depth.
        cam = depth[vs, us] * (np.linalg.inv(k0) @ np.stack(
            [us, vs, np.ones_like(us)]).astype(np.float64))
        world = pose @ np.vstack([cam, np.ones(len(us))])
        # Back into the camera; a flip mirrors the camera's x axis.
        pc = (np.linalg.inv(pose) @ world)[:3]
        k = b["K"][i].astype(np.float64)
        # The batch does not say whether a sample was flipped: accept the
        # hypothesis under which K maps the points onto their own pixels.
        for flip in (False, True):
          p = pc.copy()
          if flip:
            p[0] = -p[0]
          uv = (k[:3, :3] @ p)[:2] / p[2]
          u2, v2 = np.round(uv).astype(int)
          inside = (u2 >= 0) & (u2 < _H) & (v2 >= 0) & (v2 < _H)
          if inside.sum() < 5:
            continue
          on_pixel = np.allclose(uv[:, inside], np.stack(
              [u2, v2])[:, inside], atol=1e-3)
          same = np.all(b["color"][i, 1][v2[inside], u2[inside]] ==
                        img[vs[inside], us[inside]])
          if on_pixel and same:
            np.testing.assert_allclose(
                b["depth"][i][v2[inside], u2[inside]],
                depth[vs[inside], us[inside]], rtol=1e-6)
            flips.add(flip)
            break
        else:
          self.fail(f"batch {bi} sample {i}: no crop/flip hypothesis maps "
                    "sidecar points to their pixels through K")
        # The reference ("ssda") K differs by at most one pixel.
        self.assertLessEqual(
            np.abs(ssda[bi]["K"][i] - b["K"][i]).max(), 1.0 + 1e-4)
    self.assertEqual(flips, {False, True})


if __name__ == "__main__":
  absltest.main()
