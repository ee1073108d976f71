"""The dataset-level scores `fit` reports, from one accumulated confusion matrix.

Keras resets a metric at each epoch start and accumulates it over every batch of the
epoch (and over the whole validation set), so these are over all of an epoch's pixels,
never averages of per-batch values (the article scored the last minibatch only).
`mean_iou` is Keras' own `MeanIoU` with `ignore_class`; pixel accuracy reads the same
matrix, since no Keras accuracy metric skips an ignore label.
"""

from __future__ import annotations

import keras
from keras import ops

from common.labels import IGNORE_LABEL, NUM_CLASSES


@keras.saving.register_keras_serializable(package="segmentation")
class PixelAccuracy(keras.metrics.MeanIoU):
    """Correct / counted pixels, from `MeanIoU`'s confusion matrix.

    Keras' `SparseCategoricalAccuracy` counts every pixel (it has no `ignore_class`),
    so the unknown border and the padding would count; this subclass keeps `MeanIoU`'s
    accumulation (ignored labels dropped, counts in float64) and only changes
    `result()` to trace / total.
    """

    def __init__(self, num_classes: int = NUM_CLASSES, name: str = "pixel_accuracy",
                 dtype="float64", ignore_class: int | None = IGNORE_LABEL,
                 sparse_y_true: bool = True, sparse_y_pred: bool = False, axis=-1):
        super().__init__(num_classes, name=name, dtype=dtype, ignore_class=ignore_class,
                         sparse_y_true=sparse_y_true, sparse_y_pred=sparse_y_pred,
                         axis=axis)

    def result(self):
        matrix = self.total_cm
        return ops.sum(ops.diagonal(matrix)) / ops.maximum(ops.sum(matrix), 1.0)


def make_metrics(num_classes: int = NUM_CLASSES) -> list:
    """`[pixel_accuracy, mean_iou]` over counted pixels, as `compile` takes them.

    Counts are float64: a float32 count stops being exact past 2**24 pixels, far less
    than a real epoch has.
    """
    return [PixelAccuracy(num_classes),
            keras.metrics.MeanIoU(num_classes, name="mean_iou", dtype="float64",
                                  ignore_class=IGNORE_LABEL, sparse_y_pred=False)]
