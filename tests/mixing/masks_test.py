"""Tests of the DepthMix / ClassMix / DACS / CutMix masks."""

from absl.testing import absltest
import chex
import jax
import jax.numpy as jnp
import numpy as np

from sdeseg_jax.mixing import masks


class PairingTest(absltest.TestCase):

  def test_partner_index(self):
    np.testing.assert_array_equal(masks.pair_partner_index(2), [1, 0])
    np.testing.assert_array_equal(masks.pair_partner_index(6),
                                  [1, 0, 3, 2, 5, 4])
    with self.assertRaisesRegex(ValueError, "even"):
      masks.pair_partner_index(3)


class DepthMixTest(absltest.TestCase):

  def test_normalize_disparity(self):
    d = jnp.array([[[2.0, 4.0, 3.0]], [[5.0, 5.0, 5.0]]])
    np.testing.assert_allclose(masks.normalize_disparity(d),
                               [[[0.0, 1.0, 0.5]], [[0.0, 0.0, 0.0]]])

  def test_batch4_masks_by_hand(self):
    d = jnp.array([
        [[0.50, 0.50, 0.50, 0.10]],
        [[0.20, 0.52, 0.90, 0.10]],
        [[0.00, 1.00, 0.40, 0.70]],
        [[0.04, 0.90, 0.43, 0.70]],
    ])
    m = masks.depth_mix_mask(d, masks.pair_partner_index(4), margin=0.03)
    want = np.array([
        [[1, 1, 0, 1]],   # vs image 1: 0.5 >= 0.49 but not >= 0.87
        [[0, 1, 1, 1]],   # vs image 0: 0.52 >= 0.47
        [[0, 1, 1, 1]],   # vs image 3: 0.00 < 0.01; 0.40 >= 0.40
        [[1, 0, 1, 1]],   # vs image 2: 0.04 >= -0.03; 0.9 < 0.97
    ], np.float32)
    np.testing.assert_array_equal(m, want)
    # Not complementary inside the margin: both images keep pixel 1 and 3.
    self.assertTrue(np.all(np.asarray(m[0] + m[1])[0, [1, 3]] == 2))

  def test_foreground_threshold_and_per_pair_margin(self):
    d = jnp.array([[[0.1, 0.6]], [[0.0, 0.62]]])
    m = masks.depth_mix_mask(d, masks.pair_partner_index(2), 0.03, 0.3)
    np.testing.assert_array_equal(m, [[[0, 1]], [[0, 1]]])
    m = masks.depth_mix_mask(d, masks.pair_partner_index(2),
                             jnp.array([-0.03, 0.03]))
    # Image 0 with a negative margin must be strictly 0.03 closer.
    np.testing.assert_array_equal(m, [[[1, 0]], [[0, 1]]])

  def test_random_margin_sign(self):
    m = masks.random_margin_sign(jax.random.key(0), 1000, 0.03)
    self.assertTrue(np.all(np.abs(np.abs(np.asarray(m)) - 0.03) < 1e-7))
    self.assertAlmostEqual(float(jnp.mean(m < 0)), 0.5, delta=0.06)


class ClassMixTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    lab = np.full((2, 8, 8), 250, np.int32)
    lab[0, :2] = 0
    lab[0, 2:4] = 3
    lab[0, 4:6] = 7
    lab[0, 6, :4] = 18          # image 0: {0, 3, 7, 18} + 250
    for j, c in enumerate((1, 2, 5, 9, 11)):
      lab[1, :, j] = c          # image 1: {1, 2, 5, 9, 11} + 250
    self.labels = jnp.asarray(lab)

  def _chosen(self, mask, b):
    lab = np.asarray(self.labels[b])
    m = np.asarray(mask[b])
    chosen = set()
    for c in np.unique(lab):
      vals = np.unique(m[lab == c])
      self.assertLen(vals, 1)   # a class is taken entirely or not at all
      if vals[0] == 1:
        chosen.add(int(c))
    return chosen

  def test_classmix_floor_without_ignore(self):
    fn = jax.jit(chex.assert_max_traces(n=1)(masks.class_mix_mask))
    counts = {}
    for seed in range(40):
      m = fn(self.labels, jax.random.key(seed))
      c0, c1 = self._chosen(m, 0), self._chosen(m, 1)
      self.assertLen(c0, 2)     # floor(4 / 2)
      self.assertLen(c1, 2)     # floor(5 / 2)
      self.assertNotIn(250, c0 | c1)
      for c in c0:
        counts[c] = counts.get(c, 0) + 1
    # Every present class of image 0 is picked sometimes (uniform choice).
    self.assertEqual(set(counts), {0, 3, 7, 18})
    self.assertGreater(min(counts.values()), 8)

  def test_dacs_ceil_with_ignore(self):
    seen_ignore = False
    for seed in range(20):
      m = masks.class_mix_mask(self.labels, jax.random.key(seed),
                               include_ignore=True, choose="ceil")
      c0, c1 = self._chosen(m, 0), self._chosen(m, 1)
      self.assertLen(c0, 3)     # ceil(5 / 2), 250 counts as a class
      self.assertLen(c1, 3)     # ceil(6 / 2)
      seen_ignore |= 250 in c0
    self.assertTrue(seen_ignore)

  def test_bad_choose(self):
    with self.assertRaisesRegex(ValueError, "choose"):
      masks.class_mix_mask(self.labels, jax.random.key(0), choose="half")


class GivenDrawsTest(absltest.TestCase):
  """The draw-taking forms on hand-made draws (what a recorded reference
  draw would be replayed through)."""

  def test_class_mix_mask_from_choice(self):
    labels = jnp.array([[[0, 1], [250, 2]], [[3, 3], [0, 77]]], jnp.int32)
    c = 4
    chosen = np.zeros((2, c + 1), bool)
    chosen[0, [1, c]] = True   # class 1 and the ignore slot
    chosen[1, 3] = True
    m = masks.class_mix_mask_from_choice(labels, chosen, num_classes=c)
    np.testing.assert_array_equal(m, [[[0, 1], [1, 0]], [[1, 1], [0, 0]]])
    with self.assertRaisesRegex(ValueError, r"\[B, C\+1\]"):
      masks.class_mix_mask_from_choice(labels, chosen[:, :c], num_classes=c)

  def test_present_and_choose_classes(self):
    labels = jnp.array([[[0, 1], [250, 2]]], jnp.int32)
    present = masks.present_classes(labels, 4)
    np.testing.assert_array_equal(present, [[1, 1, 1, 0, 0]])
    np.testing.assert_array_equal(
        masks.present_classes(labels, 4, include_ignore=True),
        [[1, 1, 1, 0, 1]])
    scores = jnp.array([[0.9, 0.1, 0.5, 0.0, 0.2]])
    # floor(3/2) = 1: the lowest present score (class 1; class 3 is absent).
    np.testing.assert_array_equal(
        masks.choose_classes(present, scores, "floor"), [[0, 1, 0, 0, 0]])
    np.testing.assert_array_equal(
        masks.choose_classes(present, scores, "ceil"), [[0, 1, 1, 0, 0]])

  def test_keyed_class_mix_replays_its_scores(self):
    labels = jax.random.randint(jax.random.key(0), (2, 8, 8), 0, 6)
    key = jax.random.key(3)
    present = masks.present_classes(labels, 19)
    chosen = masks.choose_classes(present,
                                  jax.random.uniform(key, present.shape))
    np.testing.assert_array_equal(
        masks.class_mix_mask(labels, key),
        masks.class_mix_mask_from_choice(labels, chosen))

  def test_cut_mix_mask_from_box(self):
    m = masks.cut_mix_mask_from_box((2, 3, 4), jnp.array([1, 0]),
                                    jnp.array([0, 2]), jnp.array([2, 4]),
                                    jnp.array([2, 1]))
    np.testing.assert_array_equal(m[0], [[1, 0, 0, 1], [1, 0, 0, 1],
                                         [1, 1, 1, 1]])
    np.testing.assert_array_equal(m[1], [[1, 1, 1, 1], [1, 1, 1, 1],
                                         [0, 0, 0, 0]])

  def test_margin_from_flips(self):
    np.testing.assert_allclose(
        masks.margin_from_flips(jnp.array([True, False, True]), 0.03),
        [-0.03, 0.03, -0.03])


class CutMixTest(absltest.TestCase):

  def test_box_half_area(self):
    b, h, w = 8, 32, 64
    m = np.asarray(masks.cut_mix_mask(jax.random.key(3), (b, h, w)))
    self.assertTrue(set(np.unique(m)) <= {0.0, 1.0})
    for i in range(b):
      ys, xs = np.nonzero(m[i] == 0)
      box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
      self.assertEqual(box, ys.size)          # the zeros form one rectangle
      self.assertGreaterEqual(xs.max() - xs.min() + 1, w // 2)
      self.assertLessEqual(abs(ys.size / (h * w) - 0.5), 1 / (2 * h) + 1e-9)

  def test_ones(self):
    np.testing.assert_array_equal(masks.ones_mask((2, 3, 4)),
                                  np.ones((2, 3, 4)))


if __name__ == "__main__":
  absltest.main()
