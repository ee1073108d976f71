"""The confusion matrix as a Keras metric, so `fit` reports dataset-level scores.

Keras resets a metric at each epoch start and accumulates it over every batch of the
epoch, so `pixel_accuracy` and `mean_iou` below are over the whole epoch's pixels,
never averages of per-batch values (the article scored the last minibatch only).
"""

from __future__ import annotations

import keras
from keras import ops

from datasets.data import IGNORE_LABEL, NUM_CLASSES


@keras.saving.register_keras_serializable(package="segmentation")
class ConfusionMatrixMetric(keras.metrics.Metric):
    """Accumulates `matrix[true, pred]` over counted pixels; reports one score of it.

    Args:
        num_classes: number of classes.
        score: 'pixel_accuracy' or 'mean_iou' (over classes present in truth or
            prediction, as `learning.evaluators.ConfusionMatrix.mean_iou`).
        ignore_label: label value that is not counted.
    """

    def __init__(self, num_classes: int = NUM_CLASSES, score: str = "pixel_accuracy",
                 ignore_label: int = IGNORE_LABEL, name: str | None = None, **kwargs):
        if score not in ("pixel_accuracy", "mean_iou"):
            raise ValueError(f"score must be 'pixel_accuracy' or 'mean_iou'. "
                             f"Received: {score}")
        super().__init__(name=name or score, **kwargs)
        self.num_classes = num_classes
        self.score = score
        self.ignore_label = ignore_label
        # float64 counts stay exact far beyond a full dataset's pixel count.
        self.matrix = self.add_variable(shape=(num_classes, num_classes),
                                        initializer="zeros", dtype="float64",
                                        name="confusion_matrix")

    def update_state(self, y_true, y_pred, sample_weight=None):
        n = self.num_classes
        t = ops.reshape(ops.cast(y_true, "int32"), (-1,))
        p = ops.reshape(ops.cast(ops.argmax(y_pred, axis=-1), "int32"), (-1,))
        keep = ops.logical_and(t >= 0, t < n)
        index = ops.where(keep, t * n + p, 0)
        counts = ops.bincount(index, weights=ops.cast(keep, "float64"), minlength=n * n)
        self.matrix.assign_add(ops.reshape(counts[: n * n], (n, n)))

    def result(self):
        m = self.matrix
        tp = ops.diagonal(m)
        if self.score == "pixel_accuracy":
            return ops.cast(ops.sum(tp) / ops.maximum(ops.sum(m), 1.0), "float32")
        union = ops.sum(m, axis=0) + ops.sum(m, axis=1) - tp
        present = ops.cast(union > 0, "float64")
        iou = tp / ops.maximum(union, 1.0)
        return ops.cast(ops.sum(iou * present) / ops.maximum(ops.sum(present), 1.0),
                        "float32")

    def reset_state(self):
        self.matrix.assign(ops.zeros_like(self.matrix))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes,
                "score": self.score, "ignore_label": self.ignore_label}
