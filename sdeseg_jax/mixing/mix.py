"""Mixing of images, probabilities, labels and confidences with one mask.

`mix(mask, a, b)` keeps `a` where the mask is 1 and `b` where it is 0, for any
pytree of arrays whose leading dims are [B, H, W] (images [B,H,W,3],
probabilities [B,H,W,C], labels / confidences [B,H,W]). The reference writes
`m*a + (1-m)*b`; for binary masks `jnp.where` is the same value without
propagating NaN/inf from the discarded side, and keeps integer dtypes.

Teacher targets with ground truth (the reference's `mix_use_gt`): labeled samples use
their one-hot label instead of the teacher softmax; labeled-ignore pixels get
an all-zero vector, so after mixing P' = 0 there and the pseudo label becomes
250 (`pseudo_label.pseudo_labels_from_probs`).
"""

from typing import Any, Optional, Tuple

import jax
import jax.numpy as jnp

from sdeseg_jax.mixing import masks as masks_lib
from sdeseg_jax.mixing import pseudo_label

PyTree = Any


def _check_mask(mask: jax.Array, x: jax.Array) -> None:
  if x.shape[:3] != mask.shape:
    raise ValueError(
        f"mix: mask shape {mask.shape} must equal the leading [B, H, W] dims "
        f"of every mixed array, got an array of shape {x.shape}.")


def mix(mask: jax.Array, a: PyTree, b: PyTree) -> PyTree:
  """Returns where(mask, a, b), broadcasting the mask over trailing dims.

  Args:
    mask: [B, H, W] binary mask (float or bool); 1 keeps `a`.
    a: pytree of arrays with leading dims [B, H, W] (e.g. images
      [B, H, W, 3], probabilities [B, H, W, C], labels [B, H, W]).
    b: pytree with the same structure, shapes and dtypes as `a`.

  Returns:
    Pytree like `a`.
  """
  keep = mask.astype(jnp.bool_)

  def _one(x, y):
    _check_mask(keep, x)
    if x.shape != y.shape:
      raise ValueError(
          f"mix: both arrays must have the same shape, got {x.shape} and "
          f"{y.shape}.")
    k = keep.reshape(keep.shape + (1,) * (x.ndim - 3))
    return jnp.where(k, x, y.astype(x.dtype))

  return jax.tree.map(_one, a, b)


def mix_with_partner(mask: jax.Array, x: PyTree,
                     partner_index: jax.Array) -> PyTree:
  """x'_i = M_i * x_i + (1 - M_i) * x_partner(i), for a pytree `x`.

  Args:
    mask: [B, H, W] binary mask.
    x: pytree of arrays with leading dims [B, H, W].
    partner_index: int [B] (e.g. `masks.pair_partner_index(B)`).

  Returns:
    Pytree like `x`.
  """
  partner = jax.tree.map(lambda v: jnp.take(v, partner_index, axis=0), x)
  return mix(mask, x, partner)


def probs_with_ground_truth(
    probs: jax.Array,
    labels: jax.Array,
    is_labeled: jax.Array,
) -> jax.Array:
  """Replaces the teacher probabilities of labeled samples by one-hot GT.

  Reference `mix_use_gt`: ignore pixels (250 or any value
  outside [0, C)) of labeled samples become all-zero vectors.

  Args:
    probs: float [B, H, W, C] teacher softmax.
    labels: int [B, H, W] train ids, 250 = ignore.
    is_labeled: bool [B].

  Returns:
    float32 [B, H, W, C].
  """
  num_classes = probs.shape[-1]
  onehot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
  sel = is_labeled.astype(jnp.bool_)[:, None, None, None]
  return jnp.where(sel, onehot, probs.astype(jnp.float32))


def mix_teacher_targets(
    mask: jax.Array,
    probs: jax.Array,
    partner_index: jax.Array,
    labels: Optional[jax.Array] = None,
    is_labeled: Optional[jax.Array] = None,
    ignore: int = masks_lib.IGNORE_INDEX,
) -> Tuple[jax.Array, jax.Array]:
  """Intra-batch mixed pseudo-label targets: GT substitution, mixing, (P', y).

  Args:
    mask: [B, H, W] mix mask.
    probs: float [B, H, W, C] teacher softmax (stop-gradient is the caller's).
    partner_index: int [B].
    labels: int [B, H, W] GT (only with `mix_use_gt`), else None.
    is_labeled: bool [B] (only with `mix_use_gt`), else None.
    ignore: label given to pixels whose mixed max probability is 0.

  Returns:
    (confidence [B, H, W] float32 = P', pseudo_labels [B, H, W] int32).
  """
  if (labels is None) != (is_labeled is None):
    raise ValueError(
        "mix_teacher_targets: pass both `labels` and `is_labeled` "
        "(mix_use_gt) or neither.")
  if labels is not None:
    probs = probs_with_ground_truth(probs, labels, is_labeled)
  mixed = mix_with_partner(mask, probs, partner_index)
  return pseudo_label.pseudo_labels_from_probs(mixed, ignore=ignore)


def cross_domain_mix(
    mask: jax.Array,
    source: PyTree,
    target: PyTree,
) -> PyTree:
  """oneMix of source pair i into target pair i (the cross-domain mix).

  x'_i = M_i * x_src,i + (1 - M_i) * x_trg,i, applied identically to every
  leaf (images, labels source GT / target pseudo labels, weights).

  Args:
    mask: [B, H, W] (e.g. `masks.depth_compare_mask(d_src, d_trg,
      masks.random_margin_sign(...))` or DACS `class_mix_mask` of the
      source labels with include_ignore=True, choose="ceil").
    source: pytree of [B, H, W, ...] source arrays.
    target: pytree with the same structure for the target batch.

  Returns:
    Pytree like `source`.
  """
  return mix(mask, source, target)
