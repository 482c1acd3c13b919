"""Tests of the shared segmentation pieces: the supervised CE and the weight
copying (train/toolkit.py), the mixing (mixing/consistency.py), the teacher
forward (mixing/teacher.py). (``NamedIterators``: tests/data/streams_test.py.)"""

from absl.testing import absltest
import flax
import jax
import jax.numpy as jnp
import numpy as np

from sdeseg_jax.losses.segmentation import cross_entropy
from sdeseg_jax.models import joint
from sdeseg_jax.mixing import consistency
from sdeseg_jax.mixing import teacher as teacher_lib
from sdeseg_jax.train import toolkit

_MODEL_KW = dict(encoder_depth=10, width=8, decoder="dec_tiny", pose_depth=10)


def _model(**kw):
  return joint.SegDepthNet(**{**_MODEL_KW, **kw})


def _init(model, images, offsets=(0,), seed=0):
  """Random variables of the model's shapes (no flax init: it is slow on
  CPU, eager or compiled, and the tests only need distinct values)."""
  rng = jax.random.PRNGKey(seed)
  shapes = jax.eval_shape(lambda: model.init(
      {"params": rng, "dropout": rng}, images, offsets, train=False))
  gen = np.random.default_rng(seed)

  def fill(path, s):
    x = 0.2 * gen.normal(size=s.shape)
    if "var" in str(path[-1]) or "scale" in str(path[-1]):
      x = 1.0 + np.abs(x)  # BN variances and scales
    return x.astype(s.dtype)
  return flax.core.unfreeze(jax.tree_util.tree_map_with_path(fill, shapes))


class LossTest(absltest.TestCase):

  def test_pad_loss_is_mean_of_final_and_intermediate(self):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, (2, 16, 16)).astype(np.int32)
    labels[0, :3] = 250
    out = {"semantics": jnp.asarray(rng.normal(size=(2, 16, 16, 5)),
                                    jnp.float32),
           "intermediate_semantics": jnp.asarray(
               rng.normal(size=(2, 4, 4, 5)), jnp.float32)}
    loss, m = toolkit.labeled_seg_loss(out, labels)
    final = cross_entropy(out["semantics"], labels)
    inter = cross_entropy(out["intermediate_semantics"], labels)
    np.testing.assert_allclose(loss, 0.5 * (final + inter), rtol=1e-6)
    np.testing.assert_allclose(m["ce_intermediate"], inter, rtol=1e-6)
    loss_t, _ = toolkit.labeled_seg_loss({"semantics": out["semantics"]},
                                     labels)
    np.testing.assert_allclose(loss_t, final, rtol=1e-6)

  def test_pseudo_label_loss_one_q_per_batch_ignore_in_denominator(self):
    rng = np.random.default_rng(1)
    logits = jnp.asarray(rng.normal(size=(2, 4, 4, 3)), jnp.float32)
    conf = np.full((2, 4, 4), 0.5, np.float32)
    conf[0, 0, :] = 0.968  # exactly tau counts (">=")
    conf[1, 1, :2] = 0.99
    labels = rng.integers(0, 3, (2, 4, 4)).astype(np.int32)
    labels[1, 3] = 250
    cfg = consistency.mix_config(weight=2.0)
    loss, q = consistency.pseudo_label_loss(cfg, logits, conf, labels)
    self.assertAlmostEqual(float(q), 6 / 32)
    logp = jax.nn.log_softmax(logits, -1)
    nll = -np.take_along_axis(np.asarray(logp),
                              np.clip(labels, 0, 2)[..., None], -1)[..., 0]
    nll[labels == 250] = 0.0
    np.testing.assert_allclose(loss, 2.0 * (6 / 32) * nll.sum() / 32,
                               rtol=1e-5)
    cfg.per_image_q = True
    _, q_img = consistency.pseudo_label_loss(cfg, logits, conf, labels)
    # Eq. 11 uses ">": the pixels at exactly tau do not count.
    np.testing.assert_allclose(q_img, [0.0, 2 / 16])


class MixTest(absltest.TestCase):

  def _inputs(self):
    rng = np.random.default_rng(2)
    b, h, w, c = 4, 8, 8, 5
    images = jnp.asarray(rng.uniform(size=(b, h, w, 3)), jnp.float32)
    logits = rng.normal(size=(b, h, w, c)) * 3
    probs = jax.nn.softmax(jnp.asarray(logits, jnp.float32), -1)
    labels = rng.integers(0, c, (b, h, w)).astype(np.int32)
    labels[:, 0, 0] = 250
    is_labeled = np.array([True, False, False, True])
    disp = jnp.asarray(rng.uniform(size=(b, h, w)), jnp.float32)
    return images, probs, labels, is_labeled, disp

  def test_depthmix_with_ground_truth(self):
    images, probs, labels, is_labeled, disp = self._inputs()
    cfg = consistency.mix_config(mask="depthmix", use_gt=True, margin=0.03)
    out = consistency.mix_batch(cfg, jax.random.PRNGKey(0), images, probs,
                        labels=labels, is_labeled=is_labeled, disp=disp)
    partner = np.array([1, 0, 3, 2])
    d = np.asarray(disp)
    expect_mask = (d >= d[partner] - 0.03).astype(np.float32)
    np.testing.assert_array_equal(out["mask"], expect_mask)
    keep = expect_mask.astype(bool)
    np.testing.assert_array_equal(
        out["image"], np.where(keep[..., None], images,
                               np.asarray(images)[partner]))
    # Targets: GT with confidence 1 for labeled images (0 and label 250 at
    # their ignore pixels), teacher argmax / max for unlabeled ones.
    p = np.asarray(probs)
    own_conf = np.where(is_labeled[:, None, None],
                        np.where(labels == 250, 0.0, 1.0), p.max(-1))
    own_lab = np.where(is_labeled[:, None, None], labels, p.argmax(-1))
    exp_conf = np.where(keep, own_conf, own_conf[partner])
    exp_lab = np.where(keep, own_lab, own_lab[partner])
    np.testing.assert_allclose(out["conf"], exp_conf, rtol=1e-6)
    np.testing.assert_array_equal(out["label"], exp_lab)

  def test_classmix_mask_follows_the_class_labels(self):
    images, probs, labels, is_labeled, _ = self._inputs()
    cfg = consistency.mix_config(mask="classmix", use_gt=False)
    out = consistency.mix_batch(cfg, jax.random.PRNGKey(3), images, probs)
    arg = np.asarray(probs).argmax(-1)
    mask = np.asarray(out["mask"])
    for i in range(4):
      chosen = np.unique(arg[i][mask[i] == 1])
      # The mask is exactly the pixels of a set of whole classes ...
      np.testing.assert_array_equal(mask[i], np.isin(arg[i], chosen))
      # ... namely floor(n / 2) of the n present classes.
      self.assertLen(chosen, len(np.unique(arg[i])) // 2)

  def test_none_and_cutmix_masks(self):
    images, probs, *_ = self._inputs()
    out = consistency.mix_batch(consistency.mix_config(mask="none"), jax.random.PRNGKey(0),
                        images, probs)
    np.testing.assert_array_equal(out["image"], images)
    out = consistency.mix_batch(consistency.mix_config(mask="cutmix"),
                        jax.random.PRNGKey(0), images, probs)
    self.assertAlmostEqual(float(1 - np.mean(out["mask"])), 0.5, delta=0.1)

  def test_mix_depth_sources(self):
    rng = np.random.default_rng(4)
    depth = rng.uniform(1, 50, (2, 4, 4)).astype(np.float32)
    depth[0, 0, 0] = 0.0  # invalid -> far
    d = np.asarray(consistency.mix_depth("gt", {"depth": depth}))
    disp = np.where(depth > 0, 1 / np.where(depth > 0, depth, 1), 0)
    lo = disp.min((1, 2), keepdims=True)
    hi = disp.max((1, 2), keepdims=True)
    np.testing.assert_allclose(d, (disp - lo) / (hi - lo), rtol=1e-5,
                               atol=1e-6)
    sd = rng.uniform(0.2, 0.4, (2, 4, 4, 1)).astype(np.float32)
    o = np.asarray(consistency.mix_depth("online", {}, sd))
    np.testing.assert_allclose(o.min((1, 2)), 0.0)
    np.testing.assert_allclose(o.max((1, 2)), 1.0, rtol=1e-6)
    pd = rng.uniform(size=(2, 4, 4)).astype(np.float32)
    np.testing.assert_array_equal(
        consistency.mix_depth("pseudo", {"pseudo_depth": pd}), pd)
    with self.assertRaisesRegex(ValueError, "pseudo_depth_dir"):
      consistency.mix_depth("pseudo", {})

  def test_config_errors_name_the_key(self):
    with self.assertRaisesRegex(ValueError, r"config.mix.mask='depthmx'"):
      consistency.check_mix_config(consistency.mix_config(mask="depthmx"),
                           teacher_batch_stats="own")
    # An inference-mode teacher never updates its own statistics.
    with self.assertRaisesRegex(ValueError,
                                "teacher_mode='eval'.*'ema'.*'student'"):
      consistency.check_mix_config(consistency.mix_config(teacher_mode="eval"),
                           teacher_batch_stats="own")
    with self.assertRaisesRegex(ValueError,
                                "config.train.teacher_batch_stats='avg'"):
      consistency.check_mix_config(consistency.mix_config(), teacher_batch_stats="avg")
    with self.assertRaisesRegex(ValueError, "config.ssda.teacher_mode='x'"):
      teacher_lib.check_teacher_config("x", "own", "config.ssda.teacher_mode")
    for stats in ("ema", "student"):
      consistency.check_mix_config(consistency.mix_config(teacher_mode="eval"),
                           teacher_batch_stats=stats)
    consistency.check_mix_config(consistency.mix_config(), teacher_batch_stats="own")


class TeacherTest(absltest.TestCase):

  def test_train_and_eval_mode(self):
    model = _model(seg_head="transfer", depth=False, use_pose=False)
    rng = np.random.default_rng(5)
    images = jnp.asarray(rng.uniform(size=(4, 32, 32, 3)), jnp.float32)
    v = _init(model, images[:, None])
    teacher = (v["params"], v["batch_stats"])
    k1, k2 = jax.random.PRNGKey(1), jax.random.PRNGKey(2)
    modes = {m: (lambda *a, m=m: teacher_lib.teacher_probs(model, *a, mode=m)[0])
             for m in ("train", "eval")}
    ev = modes["eval"](teacher, images, k1)
    ev2 = modes["eval"](teacher, images, k2)
    ref = jax.nn.softmax(model.apply(v, images[:, None], (0,),
                                     train=False)["semantics"], -1)
    np.testing.assert_allclose(ev, ref, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(ev, ev2)  # no dropout in eval mode
    tr = modes["train"](teacher, images, k1)
    tr2 = modes["train"](teacher, images, k2)
    np.testing.assert_allclose(np.sum(tr, -1), 1.0, rtol=1e-5)
    self.assertGreater(float(jnp.max(jnp.abs(tr - ev))), 1e-3)
    # ASPP dropout is active in train mode: another key, other probs.
    # (Without dropout the two calls would be bitwise equal.)
    self.assertGreater(float(jnp.max(jnp.abs(tr - tr2))), 1e-6)
    # Train mode normalises with the batch's own statistics: image 0's
    # probabilities depend on the other images of the batch.
    tr_half = modes["train"](teacher, images.at[1:].set(images[1:] * 0.2),
                             k1)
    self.assertGreater(float(jnp.max(jnp.abs(tr_half[0] - tr[0]))), 1e-5)
    with self.assertRaisesRegex(ValueError, "teacher mode"):
      teacher_lib.teacher_probs(model, teacher, images, k1, "inference")

  def test_train_mode_updates_the_teachers_own_statistics(self):
    model = _model(seg_head="transfer", depth=False, use_pose=False)
    rng = np.random.default_rng(6)
    images = jnp.asarray(rng.uniform(size=(2, 32, 32, 3)), jnp.float32)
    v = _init(model, images[:, None])
    teacher = (v["params"], v["batch_stats"])
    _, new = teacher_lib.teacher_probs(model, teacher, images,
                               jax.random.PRNGKey(0), "train")
    # One BatchNorm update by hand, stem conv -> bn1: running = 0.9 *
    # running + 0.1 * batch, with the unbiased variance (torch).
    x = (images - 0.45) / 0.225
    y = jax.lax.conv_general_dilated(
        x, v["params"]["encoder"]["conv1"]["kernel"], (2, 2),
        ((3, 3), (3, 3)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
    y = np.asarray(y, np.float64).reshape(-1, y.shape[-1])
    old = v["batch_stats"]["encoder"]["bn1"]
    bn1 = new["encoder"]["bn1"]
    np.testing.assert_allclose(bn1["mean"],
                               0.9 * old["mean"] + 0.1 * y.mean(0),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bn1["var"],
                               0.9 * old["var"] + 0.1 * y.var(0, ddof=1),
                               rtol=1e-4, atol=1e-5)
    # Every BatchNorm of the forward moved (same tree as the input).
    self.assertEqual(jax.tree.structure(new),
                     jax.tree.structure(v["batch_stats"]))
    for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(v["batch_stats"])):
      self.assertFalse(np.allclose(a, b))
    # Inference mode leaves them as they were.
    _, same = teacher_lib.teacher_probs(model, teacher, images,
                                jax.random.PRNGKey(0), "eval")
    jax.tree.map(np.testing.assert_array_equal, same, v["batch_stats"])


class InitFromSDETest(absltest.TestCase):

  def test_pad_gets_both_decoders_from_the_sde_depth_decoder(self):
    images = jnp.zeros((2, 3, 32, 32, 3), jnp.float32)
    offsets = (-1, 0, 1)
    sde_v = _init(joint.SDENet(**_MODEL_KW), images, offsets, seed=1)
    pad_v = _init(_model(seg_head="pad"), images, offsets, seed=2)
    pad_v = jax.tree.map(np.asarray, pad_v)
    mapping = toolkit.sde_init_mapping("pad", depth=True, pose=True)
    out = toolkit.copy_variables(pad_v, sde_v, mapping, "sde")
    eq = lambda a, b: jax.tree.map(np.testing.assert_array_equal, a, b)
    for col in ("params", "batch_stats"):
      eq(out[col]["encoder"], sde_v[col]["encoder"])
      if col in sde_v and "depth" in sde_v[col]:
        eq(out[col]["pad"]["depth_dec"], sde_v[col]["depth"])
    eq(out["params"]["pose"], sde_v["params"]["pose"])
    seg_dec = out["params"]["pad"]["seg_dec"]
    src = {k: v for k, v in sde_v["params"]["depth"].items()
           if not k.startswith("dispconv")}
    self.assertEqual(set(seg_dec), set(src))
    eq(seg_dec, src)
    # What SDE does not have stays as initialised.
    eq(out["params"]["pad"]["sa_seg"], pad_v["params"]["pad"]["sa_seg"])
    eq(out["params"]["pad"]["seg_final_head"],
       pad_v["params"]["pad"]["seg_final_head"])

  def test_transfer_head_and_mismatch(self):
    images = jnp.zeros((2, 1, 32, 32, 3), jnp.float32)
    sde_v = _init(joint.SDENet(**_MODEL_KW), images)
    tr_v = jax.tree.map(np.asarray, _init(
        _model(seg_head="transfer", depth=False, use_pose=False), images))
    mapping = toolkit.sde_init_mapping("transfer", depth=False, pose=False)
    self.assertEqual([m[1] for m in mapping], ["encoder", "seg_head/unet_dec"])
    out = toolkit.copy_variables(tr_v, sde_v, mapping, "sde")
    for col in ("params", "batch_stats"):
      src = {k: v for k, v in sde_v.get(col, {}).get("depth", {}).items()
             if not k.startswith("dispconv")}
      dst = out[col]["seg_head"]["unet_dec"] if src else {}
      self.assertEqual(set(dst), set(src))
      jax.tree.map(np.testing.assert_array_equal, dst, src)
    wide = _init(joint.SDENet(**{**_MODEL_KW, "width": 16}), images)
    with self.assertRaisesRegex(ValueError, "does not fit"):
      toolkit.copy_variables(tr_v, wide, mapping, "wide sde")
    with self.assertRaisesRegex(ValueError, "unknown"):
      toolkit.sde_init_mapping("pad", depth=True, pose=True, parts=("decoder",))


if __name__ == "__main__":
  absltest.main()
