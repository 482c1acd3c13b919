"""Data-selection blocks on hand-made inputs (known orders and values)."""

import numpy as np
import pytest

from sdeseg_jax.losses import depth as depth_loss
from sdeseg_jax.selection import blocks


def _dense(x):
  x = np.asarray(x, np.float64)
  return np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))


def test_seed_images_are_the_reference_permutation_heads():
  # np.random.seed(s); np.random.permutation(2975)[0] in the reference.
  assert [blocks.seed_image(2975, s) for s in (42, 43, 44)] == [
      2403, 938, 1436]
  np.testing.assert_array_equal(
      blocks.reference_permutation(2975, 42)[:6],
      [2403, 2865, 2159, 507, 2462, 1235])


def test_farthest_point_on_a_line():
  x = np.array([[0.], [1.], [2.], [3.], [10.]])
  d = _dense(x)
  # From 0: 10 is farthest, then 3 (min dist 3 vs 2 for point 2: 2), ...
  assert blocks.farthest_point(d, [0], 4) == [4, 3, 1, 2]
  # From the middle: the far end, then the near end.
  assert blocks.farthest_point(d, [2], 2) == [4, 0]


def test_farthest_point_on_a_grid_and_ties():
  # 3x3 grid: from the centre the four corners tie at sqrt(2) and stay
  # tied (each next corner is still sqrt(2) from the centre), so the lowest
  # index wins every tie; then the edges (distance 1) follow.
  g = np.array([[i, j] for i in range(3) for j in range(3)], float)
  d = _dense(g)
  assert blocks.farthest_point(d, [4], 6) == [0, 2, 6, 8, 1, 3]
  # From a corner: the opposite corner first (2*sqrt(2)).
  assert blocks.farthest_point(d, [0], 1) == [8]


def test_early_stop_when_nothing_is_left():
  # Three copies of one point and one other: after the other is picked
  # every score is 0 and argmax returns a selected index -> stop.
  x = np.array([[0.], [0.], [5.]])
  d = _dense(x)
  picks = blocks.farthest_point(d, [0], 3)
  # Image 1 duplicates 0 (score 0); argmax of [0, 0, 0] is 0, selected.
  assert picks == [2]


def test_lambda_zero_is_pure_diversity_and_huge_lambda_pure_uncertainty():
  rng = np.random.RandomState(0)
  x = rng.randn(30, 4)
  d = _dense(x)
  e = rng.rand(30)
  pure = blocks.farthest_point(d, [3], 8)
  assert blocks.farthest_point(d, [3], 8, bias=e, lambda_e=0.0) == pure
  # Uncertainty dominates: the picks are the top-8 of E (excluding 3).
  huge = blocks.farthest_point(d, [3], 8, bias=e, lambda_e=1e9)
  assert huge == blocks.top_n(e, [3], 8)
  assert huge != pure


def test_uncertainty_term_of_eq4():
  # D'[c, j] = D[c, j] + lambda * E[j]: a near image with E = 1 beats a far
  # one (1 + 10 > 4), and a selected image is never re-picked however
  # large its E.
  x = np.array([[0.], [1.], [4.]])
  d = _dense(x)
  e = np.array([100., 1., 0.])
  assert blocks.farthest_point(d, [0], 1, bias=e, lambda_e=10.) == [1]
  assert blocks.farthest_point(d, [0], 1, bias=e, lambda_e=0.1) == [2]


def test_top_n_skips_selected_and_breaks_ties_by_index():
  assert blocks.top_n([5, 1, 5, 3, 5], [0], 3) == [2, 4, 3]


def test_blocked_distances_equal_dense():
  rng = np.random.RandomState(1)
  x = rng.randn(37, 11).astype(np.float32)
  dense = _dense(x)
  for block in (1, 5, 16, 37, 100):
    got = blocks.pairwise_distances(x, block=block)
    np.testing.assert_allclose(got, dense, rtol=1e-5, atol=1e-4)
    assert np.all(np.diag(got) == 0)


def test_pool_and_zscore():
  x = np.arange(2 * 8 * 16 * 3, dtype=np.float32).reshape(2, 8, 16, 3)
  p = np.asarray(blocks.pool_features(x, (4, 8)))
  assert p.shape == (2, 4, 8, 3)
  np.testing.assert_allclose(p[1, 2, 5], x[1, 4:6, 10:12].mean(axis=(0, 1)))
  z = np.asarray(blocks.zscore(p))
  assert z.shape == (2, 4 * 8 * 3)
  zz = z.reshape(2, 4, 8, 3)
  np.testing.assert_allclose(zz.mean(axis=(0, 1, 2)), 0, atol=1e-5)
  # unbiased: std with ddof=1 is 1
  np.testing.assert_allclose(zz.std(axis=(0, 1, 2), ddof=1), 1, rtol=1e-5)
  with pytest.raises(ValueError, match="multiple"):
    blocks.pool_features(np.zeros((1, 6, 16, 2)), (4, 8))


def test_uncertainty_identical_maps_and_masked_maps_are_zero():
  rng = np.random.RandomState(2)
  t = rng.uniform(0.2, 1.0, (2, 16, 12)).astype(np.float32)
  np.testing.assert_allclose(blocks.depth_uncertainty(t, t), 0.0)
  # Teacher everywhere below 0.07: every pixel is masked.
  low = np.full((1, 16, 12), 0.05, np.float32)
  s = rng.uniform(0, 1, (1, 16, 12)).astype(np.float32)
  np.testing.assert_allclose(blocks.depth_uncertainty(s, low), 0.0)
  # ... but not for the paper's plain L1.
  assert float(blocks.depth_uncertainty(s, low, masked=False)[0]) > 0


def test_uncertainty_masks_exactly_as_the_reference():
  h, w = 20, 20
  t = np.full((1, h, w), 0.5, np.float32)
  t[0, 5, 5] = 0.0                    # one low-disparity pixel
  s = np.full((1, h, w), 1.0, np.float32)
  e = abs(np.log(2.0) - np.log(1.5))
  # Masked: the 7x7 window around (5, 5) and rows >= int(0.87 * 20) = 17.
  keep = np.ones((h, w))
  keep[2:9, 2:9] = 0
  keep[17:] = 0
  want = e * keep.sum() / (h * w)
  np.testing.assert_allclose(blocks.depth_uncertainty(s, t)[0], want,
                             rtol=1e-5)
  # A low pixel at the border dilates only inside the image.
  t2 = np.full((1, h, w), 0.5, np.float32)
  t2[0, 0, 0] = 0.0
  keep2 = np.ones((h, w))
  keep2[:4, :4] = 0
  keep2[17:] = 0
  np.testing.assert_allclose(blocks.depth_uncertainty(s, t2)[0],
                             e * keep2.sum() / (h * w), rtol=1e-5)
  # Plain L1: the mean over every pixel.
  np.testing.assert_allclose(
      blocks.depth_uncertainty(s, t, masked=False)[0],
      (e * (h * w - 1) + np.log(2.0)) / (h * w), rtol=1e-5)


def test_berhu_below_and_above_c():
  # a = [0.1, 1.0] -> c = 0.2; 0.1 is linear, 1.0 is (1 + 0.04) / 0.4.
  t = np.array([[[0.1, 1.0]]], np.float32)
  got = float(depth_loss.berhu(np.zeros_like(t), t, 1.0))
  np.testing.assert_allclose(got, (0.1 + 1.04 / 0.4) / 2, rtol=1e-6)


def test_mean_entropy_uniform_and_confident():
  uniform = np.zeros((1, 2, 3, 19), np.float32)
  sure = np.full((1, 2, 3, 19), -100.0, np.float32)
  sure[..., 4] = 100.0
  np.testing.assert_allclose(blocks.mean_entropy(uniform), [1.0], rtol=1e-5)
  np.testing.assert_allclose(blocks.mean_entropy(sure), [0.0], atol=1e-6)


def test_class_pixel_ratio():
  cc = np.array([[10, 0, 1], [10, 0, 0], [0, 0, 3]])
  np.testing.assert_allclose(blocks.class_pixel_ratio(cc, [0, 2]),
                             [0.5, np.nan, 1.0])


def test_student_schedule_is_poly_with_the_reference_floor():
  # LambdaLR max(1e-6, (1 - it/iters)^0.9) of the selection student.
  from sdeseg_jax.train import optim  # pylint: disable=g-import-not-at-top
  from tests import _fixtures  # pylint: disable=g-import-not-at-top
  cfg = _fixtures.load_config("select_cityscapes").optim
  f = optim.lr_factor_fn(cfg)
  k = cfg.decay_steps
  assert (cfg.name, cfg.lr, k) == ("adam", 1e-4, 4000)
  np.testing.assert_allclose(float(f(k // 2)), 0.5 ** 0.9, rtol=1e-6)
  np.testing.assert_allclose(float(f(k)), 1e-6, rtol=1e-6)
  # float32 (1 - (k-1)/k) loses digits: compare loosely.
  np.testing.assert_allclose(float(f(k - 1)), (1 / k) ** 0.9, rtol=1e-3)
