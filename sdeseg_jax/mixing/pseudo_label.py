"""Pseudo labels and their confidence weights, as the reference computes them.

Reference (`calc_pseudo_label_loss`): (P', y) = max / argmax over classes of
the mixed probabilities; pixels with P' == 0 (labeled-ignore pixels after
`mix_use_gt`) get y = 250; q = #(P' >= 0.968) / (B·H·W), one scalar for the
whole batch, ignore pixels counted in the denominator. The paper's Eq. 11
instead uses one q per mixed image with ">"; both are available.
"""

from typing import Tuple

import jax
import jax.numpy as jnp

from sdeseg_jax.constants import IGNORE_INDEX
from sdeseg_jax.constants import PSEUDO_LABEL_TAU as TAU


def pseudo_labels_from_probs(
    probs: jax.Array,
    ignore: int = IGNORE_INDEX,
) -> Tuple[jax.Array, jax.Array]:
  """(P', y) = (max, argmax) over classes; y = ignore where P' == 0.

  Args:
    probs: float [B, H, W, C] (mixed) class probabilities.
    ignore: label of pixels with an all-zero probability vector.

  Returns:
    (confidence float32 [B, H, W], labels int32 [B, H, W]).
  """
  probs = probs.astype(jnp.float32)
  conf = jnp.max(probs, axis=-1)
  labels = jnp.argmax(probs, axis=-1).astype(jnp.int32)
  labels = jnp.where(conf == 0, ignore, labels)
  return conf, labels


def confidence_weight(conf: jax.Array, tau: float = TAU,
                      per_image: bool = False) -> jax.Array:
  """Fraction of confident pixels q.

  Args:
    conf: float [B, H, W] max probabilities P'.
    tau: threshold (0.968).
    per_image: False (reference): one q = #(P' >= tau)/(B·H·W) for the
      batch. True (paper Eq. 11): one q_i = #(P'_i > tau)/(H·W) per image.

  Returns:
    float32 scalar, or [B] when `per_image`.
  """
  if per_image:
    return jnp.mean((conf > tau).astype(jnp.float32), axis=(1, 2))
  return jnp.mean((conf >= tau).astype(jnp.float32))


def pixel_weights(conf: jax.Array, tau: float = TAU,
                  per_image: bool = False) -> jax.Array:
  """`confidence_weight` broadcast to a per-pixel weight map [B, H, W].

  Args:
    conf: float [B, H, W].
    tau: threshold.
    per_image: see `confidence_weight`.

  Returns:
    float32 [B, H, W] (stop-gradient'ed).
  """
  q = confidence_weight(conf, tau, per_image)
  q = q[:, None, None] if per_image else q
  return jax.lax.stop_gradient(jnp.broadcast_to(q, conf.shape))


def target_pseudo_labels(
    probs: jax.Array,
    labels: jax.Array,
    is_labeled: jax.Array,
) -> Tuple[jax.Array, jax.Array]:
  """Target-batch labels and confidences for the cross-domain mix.

  Unlabeled target images: (max, argmax) of the teacher softmax. Labeled
  target images: the GT labels (250 kept) with confidence 1 at *every* pixel,
  ignore pixels included, so they count as confident in q_t.

  Args:
    probs: float [B, H, W, C] teacher softmax on the target batch.
    labels: int [B, H, W] target GT (250 for unlabeled / ignore).
    is_labeled: bool [B].

  Returns:
    (confidence float32 [B, H, W], labels int32 [B, H, W]).
  """
  probs = probs.astype(jnp.float32)
  conf = jnp.max(probs, axis=-1)
  pred = jnp.argmax(probs, axis=-1).astype(jnp.int32)
  sel = is_labeled.astype(jnp.bool_)[:, None, None]
  return (jnp.where(sel, 1.0, conf),
          jnp.where(sel, labels.astype(jnp.int32), pred))


def cross_domain_pixel_weights(mask: jax.Array, target_conf: jax.Array,
                               tau: float = TAU) -> jax.Array:
  """Per-pixel CDM weights: 1 on source pixels, q_t on target pixels.

  q_t = #(target_conf >= tau) / (B·H·W) over the whole target batch, with
  `target_conf` from `target_pseudo_labels` (labeled images count as 1).

  Args:
    mask: [B, H, W] cross-domain mask (1 = source pixel).
    target_conf: float [B, H, W].
    tau: threshold.

  Returns:
    float32 [B, H, W] (stop-gradient'ed).
  """
  q_t = confidence_weight(target_conf, tau, per_image=False)
  w = jnp.where(mask.astype(jnp.bool_), 1.0, q_t)
  return jax.lax.stop_gradient(w.astype(jnp.float32))
