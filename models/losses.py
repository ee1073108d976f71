"""Losses over counted pixels: labels equal to `IGNORE_LABEL` never contribute.

All take `y_true` labels (N, H, W) and `y_pred` logits (N, H, W, C). Cross-entropy is
Keras' own; the Dice losses are ours because Keras' `Dice` has no ignore label, no
per-class mean and expects probabilities of one class.
"""

from __future__ import annotations

import keras
from keras import ops

from common.labels import IGNORE_LABEL


def _counted(y_true, num_classes):
    """Integer labels with ignored pixels set to 0, and the float mask of counted ones."""
    t = ops.cast(y_true, "int32")
    mask = ops.logical_and(t >= 0, t < num_classes)
    return ops.where(mask, t, 0), ops.cast(mask, "float32")


def cross_entropy(ignore_label: int = IGNORE_LABEL) -> keras.losses.Loss:
    """Pixel-wise softmax cross-entropy averaged over the counted pixels of the batch:
    Keras' own `SparseCategoricalCrossentropy` with `ignore_class`, which leaves the
    ignored pixels out of both the sum and the count (0 when every pixel is ignored).

    (The article averaged over all pixels with the unknown ones as zeros, which shrinks
    the loss of images with wide unknown borders.)
    """
    return keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, ignore_class=ignore_label, name="cross_entropy")


@keras.saving.register_keras_serializable(package="segmentation")
class DiceLoss(keras.losses.Loss):
    """Soft multi-class Dice loss over the counted pixels of the whole batch.

    Milletari et al., "V-Net", 3DV 2016, https://arxiv.org/abs/1606.04797 (Sec. 3),
    averaged over classes. With p the softmax probabilities and t the one-hot labels,
    each sum running over every counted pixel of every image of the batch:

        dice_c = (2 * sum(p_c * t_c) + smooth) / (sum(p_c) + sum(t_c) + smooth)
        loss   = mean over classes c of (1 - dice_c)

    Ignored pixels (label `ignore_label`, or any label outside [0, C)) enter none of
    the sums. `smooth` (1 by default) makes a class absent from both truth and
    prediction score dice 1 instead of 0/0; against sums over thousands of pixels
    it barely moves the value. Dice weighs every class equally however few pixels it
    has, which helps small objects; it is often added to cross-entropy ("ce+dice").
    """

    def __init__(self, smooth: float = 1.0, ignore_label: int = IGNORE_LABEL,
                 name="dice", **kwargs):
        super().__init__(name=name, **kwargs)
        self.smooth = smooth
        self.ignore_label = ignore_label

    def call(self, y_true, y_pred):
        num_classes = ops.shape(y_pred)[-1]
        t, mask = _counted(y_true, num_classes)
        mask = ops.expand_dims(mask, -1)
        p = ops.softmax(ops.cast(y_pred, "float32"), axis=-1) * mask
        t = ops.one_hot(t, num_classes) * mask
        axes = tuple(range(len(y_pred.shape) - 1))  # all but the class axis
        overlap = ops.sum(p * t, axis=axes)
        total = ops.sum(p, axis=axes) + ops.sum(t, axis=axes)
        dice = (2.0 * overlap + self.smooth) / (total + self.smooth)
        return ops.mean(1.0 - dice)

    def get_config(self):
        return {**super().get_config(), "smooth": self.smooth,
                "ignore_label": self.ignore_label}


@keras.saving.register_keras_serializable(package="segmentation")
class CrossEntropyDiceLoss(keras.losses.Loss):
    """`cross_entropy()` + `DiceLoss`, unweighted: cross-entropy gives every pixel
    a smooth gradient, Dice keeps the small classes from being drowned out."""

    def __init__(self, smooth: float = 1.0, ignore_label: int = IGNORE_LABEL,
                 name="ce_plus_dice", **kwargs):
        super().__init__(name=name, **kwargs)
        self.smooth = smooth
        self.ignore_label = ignore_label
        self.cross_entropy = cross_entropy(ignore_label)
        self.dice = DiceLoss(smooth, ignore_label)

    def call(self, y_true, y_pred):
        return self.cross_entropy(y_true, y_pred) + self.dice.call(y_true, y_pred)

    def get_config(self):
        return {**super().get_config(), "smooth": self.smooth,
                "ignore_label": self.ignore_label}


LOSSES = {"ce": cross_entropy, "dice": DiceLoss, "ce+dice": CrossEntropyDiceLoss}


def make_loss(name: str) -> keras.losses.Loss:
    """A loss by its command-line name."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose from {sorted(LOSSES)}")
    return LOSSES[name]()
