"""Losses over counted pixels: labels equal to `IGNORE_LABEL` never contribute.

All take `y_true` labels (N, H, W) and `y_pred` logits (N, H, W, C).
"""

from __future__ import annotations

import keras
from keras import ops

from datasets.data import IGNORE_LABEL


def _counted(y_true, num_classes):
    """Integer labels with ignored pixels set to 0, and the float mask of counted ones."""
    t = ops.cast(y_true, "int32")
    mask = ops.logical_and(t >= 0, t < num_classes)
    return ops.where(mask, t, 0), ops.cast(mask, "float32")


@keras.saving.register_keras_serializable(package="segmentation")
class MaskedCrossEntropy(keras.losses.Loss):
    """Pixel-wise softmax cross-entropy averaged over the counted pixels of the batch.

    (The article averaged over all pixels with the unknown ones as zeros, which shrinks
    the loss of images with wide unknown borders.)
    """

    def __init__(self, ignore_label: int = IGNORE_LABEL, name="masked_cross_entropy",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        self.ignore_label = ignore_label

    def call(self, y_true, y_pred):
        num_classes = ops.shape(y_pred)[-1]
        t, mask = _counted(y_true, num_classes)
        ce = ops.sparse_categorical_crossentropy(t, ops.cast(y_pred, "float32"),
                                                 from_logits=True)
        return ops.sum(ce * mask) / ops.maximum(ops.sum(mask), 1.0)

    def get_config(self):
        return {**super().get_config(), "ignore_label": self.ignore_label}


LOSSES = {"ce": MaskedCrossEntropy}


def make_loss(name: str) -> keras.losses.Loss:
    """A loss by its command-line name."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose from {sorted(LOSSES)}")
    return LOSSES[name]()
