"""Training augmentation: what one epoch does to each example (its place in the
order, a flip, a rescaling and a crop position), drawn from `(seed, epoch)` alone so
a resumed run sees the same batches; and the rescale-and-crop transform itself."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import tensorflow as tf

from common.labels import IGNORE_LABEL

AUGMENTS = ("none", "flip", "scale")
SCALE_RANGE = (0.5, 2.0)  # "scale": factors drawn uniformly from this range


def augment_mode(augment) -> str:
    """The training augmentation, checked: "none", "flip" (random horizontal flips) or
    "scale" (flips plus random rescaling and cropping); the old bools still work
    (True is "flip", False "none")."""
    if isinstance(augment, (bool, np.bool_)):
        return "flip" if augment else "none"
    if not isinstance(augment, str) or augment not in AUGMENTS:
        raise ValueError(f"augment must be one of {', '.join(AUGMENTS)} (or a bool). "
                         f"Received: {augment!r}")
    return augment


class EpochPlan(NamedTuple):
    """What one training epoch does to its examples, in the order it visits them."""

    order: np.ndarray   # (n,) int: a permutation of the examples
    flips: np.ndarray   # (n,) bool: flip horizontally
    scales: np.ndarray  # (n,) float32: rescaling factor (1 unless "scale")
    where: np.ndarray   # (n, 2) float32 in [0, 1): crop or pad position (rows, cols)


def epoch_order(num_examples: int, seed: int, epoch: int, augment) -> EpochPlan:
    """The `EpochPlan` of one training epoch: a permutation, and a flip, a scale and
    a crop position per example (`augment` as in `augment_mode`).

    They depend only on (seed, epoch), so a resumed run sees the batches an
    uninterrupted one would. "scale" draws its factors after the flips, so its order
    and flips are those of "flip".
    """
    mode = augment_mode(augment)
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(num_examples)
    flips = (rng.random(num_examples) < 0.5 if mode != "none"
             else np.zeros(num_examples, bool))
    scales = np.ones(num_examples, np.float32)
    where = np.full((num_examples, 2), 0.5, np.float32)
    if mode == "scale":
        scales = rng.uniform(*SCALE_RANGE, num_examples).astype(np.float32)
        where = rng.random((num_examples, 2)).astype(np.float32)
    return EpochPlan(order, flips, scales, where)


def rescale_and_crop(image, label, scale, where, size):
    """Rescales an example by `scale` and crops or pads it to `size` at `where`.

    As `tf.image.resize` (half-pixel centres) then a crop: the image bilinear, the
    label nearest-neighbour (so it holds only its own values). Only the pixels kept
    are computed, so a large image scaled up costs no more than the crop. Along each
    axis the result is cut from the scaled example, or the scaled example is placed
    in it, `floor(where * (excess + 1))` pixels from the start, where `excess` is the
    size difference: 0 is the top/left position, just under 1 the bottom/right one.
    Padding is 0 in the image, `IGNORE_LABEL` in the label, True in the padding mask.

    Args:
        image: (H, W, 3) uint8; label: (H, W) uint8 (any H, W).
        scale: float32 scalar; where: (2,) float32 in [0, 1) (rows, columns).
        size: `(height, width)` of the result.

    Returns:
        `(image, label, padding)`: (h, w, 3) uint8, (h, w) uint8, (h, w) bool.
    """
    out = tf.constant(size, tf.int32)
    old = tf.shape(label)[:2]
    new = tf.maximum(tf.cast(tf.round(tf.cast(old, tf.float32) * scale), tf.int32), 1)
    excess = tf.abs(new - out)
    shift = tf.minimum(tf.cast(tf.floor(where * tf.cast(excess + 1, tf.float32)),
                               tf.int32), excess)
    kept = tf.minimum(new, out)
    start = tf.where(new > out, shift, 0)  # first scaled pixel kept, per axis
    rows = _resize_axis(old[0], new[0], start[0], kept[0])
    cols = _resize_axis(old[1], new[1], start[1], kept[1])
    label = tf.gather(tf.gather(label, rows.nearest), cols.nearest, axis=1)
    image = tf.cast(image, tf.float32)
    image = _lerp(tf.gather(image, rows.low), tf.gather(image, rows.high),
                  rows.weight[:, None, None])
    image = _lerp(tf.gather(image, cols.low, axis=1), tf.gather(image, cols.high, axis=1),
                  cols.weight[None, :, None])
    image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
    before = tf.where(new < out, shift, 0)
    paddings = tf.stack([before, out - kept - before], axis=1)
    image = tf.pad(image, tf.concat([paddings, [[0, 0]]], 0))
    label = tf.pad(label, paddings, constant_values=IGNORE_LABEL)
    padding = tf.pad(tf.zeros(kept, tf.bool), paddings, constant_values=True)
    image.set_shape((*size, 3))
    label.set_shape(size)
    padding.set_shape(size)
    return image, label, padding


class _Taps(NamedTuple):
    nearest: tf.Tensor  # source pixel of nearest-neighbour resizing
    low: tf.Tensor      # the two source pixels of bilinear resizing ...
    high: tf.Tensor
    weight: tf.Tensor   # ... and the weight of `high`


def _resize_axis(old, new, start, count) -> _Taps:
    """Where output pixels `start .. start + count - 1` of an axis resized from `old`
    to `new` pixels read their input, with `tf.image.resize`'s half-pixel centres."""
    centres = ((tf.cast(tf.range(start, start + count), tf.float32) + 0.5)
               * (tf.cast(old, tf.float32) / tf.cast(new, tf.float32)))
    nearest = tf.minimum(tf.cast(tf.floor(centres), tf.int32), old - 1)
    low = tf.floor(centres - 0.5)
    weight = centres - 0.5 - low
    low = tf.cast(low, tf.int32)
    return _Taps(nearest, tf.clip_by_value(low, 0, old - 1),
                 tf.clip_by_value(low + 1, 0, old - 1), weight)


def _lerp(a, b, t):
    return a + (b - a) * t
