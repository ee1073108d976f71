"""Scores for segmentation, all from one accumulated confusion matrix.

The article scored a model by pixel accuracy computed per image and averaged over
images, with the zero padding around small images counted as background. That number
(`article_pixel_accuracy`) is kept so a learner can compare with the article's 0.9556,
but the scores we train and report by are dataset-level: every counted pixel of the
whole set goes into one confusion matrix, and

* pixel accuracy   = correct pixels / counted pixels,
* class accuracy   = correct pixels of class c / pixels of class c,
* IoU of class c   = TP / (TP + FP + FN),
* mean IoU         = mean of IoU over the classes that occur in truth or prediction.

"Counted" means the label is not `IGNORE_LABEL`: trimap-unknown borders and padding
never count. A mean over per-batch values is never used, since it weights small batches
and easy images wrongly.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from common.labels import IGNORE_LABEL, NUM_CLASSES


def to_labels(y_pred: np.ndarray, y_true_ndim: int) -> np.ndarray:
    """Class scores (..., C) -> labels (...); labels pass through unchanged."""
    y_pred = np.asarray(y_pred)
    if y_pred.ndim == y_true_ndim + 1:
        return y_pred.argmax(axis=-1)
    if y_pred.ndim != y_true_ndim:
        raise ValueError(f"y_pred must be labels shaped like y_true or scores with one "
                         f"more (class) axis. Received ndim {y_pred.ndim} for y_true "
                         f"ndim {y_true_ndim}")
    return y_pred


class ConfusionMatrix:
    """Pixel counts `matrix[true, pred]` accumulated over any number of batches.

    Args:
        num_classes: number of classes C; labels outside [0, C) (the ignore label) are
            not counted.

    Example:
        >>> cm = ConfusionMatrix(3)
        >>> cm.update(np.array([[0, 1, 255]]), np.array([[0, 2, 1]])).pixel_accuracy
        0.5
    """

    def __init__(self, num_classes: int = NUM_CLASSES):
        self.num_classes = num_classes
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def reset(self) -> None:
        self.matrix[:] = 0

    def update(self, y_true: np.ndarray, y_pred: np.ndarray) -> "ConfusionMatrix":
        """Adds a batch: `y_true` labels (N, H, W); `y_pred` scores (N, H, W, C) or labels."""
        y_true = np.asarray(y_true)
        y_pred = to_labels(y_pred, y_true.ndim)
        if y_pred.shape != y_true.shape:
            raise ValueError(f"y_true and y_pred differ in shape: {y_true.shape} vs "
                             f"{y_pred.shape}")
        t = y_true.reshape(-1).astype(np.int64)
        p = y_pred.reshape(-1).astype(np.int64)
        keep = (t >= 0) & (t < self.num_classes)
        # A prediction outside [0, C) is a bug upstream, not a pixel to drop silently.
        if ((p[keep] < 0) | (p[keep] >= self.num_classes)).any():
            raise ValueError(f"y_pred has labels outside [0, {self.num_classes})")
        n = self.num_classes
        self.matrix += np.bincount(t[keep] * n + p[keep], minlength=n * n).reshape(n, n)
        return self

    @staticmethod
    def _divide(num, den):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(den > 0, num / np.maximum(den, 1), np.nan)

    @property
    def total(self) -> int:
        return int(self.matrix.sum())

    @property
    def pixel_accuracy(self) -> float:
        """Correct / counted pixels over everything seen; NaN before any pixel."""
        return float(self._divide(np.trace(self.matrix), self.total))

    @property
    def per_class_accuracy(self) -> np.ndarray:
        """Recall of each class; NaN for a class absent from the truth."""
        return self._divide(np.diag(self.matrix), self.matrix.sum(axis=1))

    @property
    def per_class_iou(self) -> np.ndarray:
        """TP / (TP + FP + FN) per class; NaN for a class absent from truth and prediction."""
        tp = np.diag(self.matrix)
        union = self.matrix.sum(axis=0) + self.matrix.sum(axis=1) - tp
        return self._divide(tp, union)

    @property
    def mean_iou(self) -> float:
        """Mean IoU over the classes that occur in the truth or in the prediction
        (a class absent from both would be 0/0 and is left out, as Keras' MeanIoU does)."""
        iou = self.per_class_iou
        return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")

    @property
    def foreground_iou(self) -> float:
        """IoU of "any object" against the background (class 0): every other class
        merged, as binary pet-vs-background figures are reported."""
        m = self.matrix
        tp = m[1:, 1:].sum()
        return float(self._divide(tp, tp + m[0, 1:].sum() + m[1:, 0].sum()))

    def summary(self, class_names=None) -> dict:
        """The scores as plain Python values, for JSON."""
        names = class_names or [str(i) for i in range(self.num_classes)]

        def per_class(values):
            return {n: (None if np.isnan(v) else float(v)) for n, v in zip(names, values)}

        return {"pixel_accuracy": self.pixel_accuracy, "mean_iou": self.mean_iou,
                "foreground_iou": self.foreground_iou,
                "per_class_iou": per_class(self.per_class_iou),
                "per_class_accuracy": per_class(self.per_class_accuracy),
                "confusion_matrix": self.matrix.tolist()}


class ArticleAccuracy:
    """The article's pixel accuracy: per image, then averaged over images.

    As in the original: unknown pixels are excluded, but padding pixels count as
    background (`padding` marks them; without it nothing is treated as padding).
    Kept only to compare with the article's 0.9556; it is inflated by easy padding and
    weights every image the same whatever its size.
    """

    def __init__(self):
        self.scores: list[float] = []

    def update(self, y_true, y_pred, padding=None) -> "ArticleAccuracy":
        y_true = np.asarray(y_true)
        y_pred = to_labels(y_pred, y_true.ndim)
        if padding is None:
            padding = np.zeros(y_true.shape, dtype=bool)
        for t, p, pad in zip(y_true, y_pred, np.asarray(padding, dtype=bool)):
            t = np.where(pad, 0, t)  # the article padded masks with "background"
            counted = t != IGNORE_LABEL
            if counted.any():
                self.scores.append(float((p[counted] == t[counted]).mean()))
        return self

    @property
    def result(self) -> float:
        return float(np.mean(self.scores)) if self.scores else float("nan")


def article_pixel_accuracy(y_true, y_pred, padding=None) -> float:
    """One-shot `ArticleAccuracy` over arrays."""
    return ArticleAccuracy().update(y_true, y_pred, padding).result


class Evaluator(ABC):
    """What a training loop needs of a score: its worst value, its direction, how to
    compute it and when a new value is really better (the article's API)."""

    @property
    @abstractmethod
    def worst_score(self) -> float:
        """The score a model starts from before any evaluation."""

    @property
    @abstractmethod
    def mode(self) -> str:
        """'max' if higher is better, 'min' if lower is better."""

    @abstractmethod
    def score_confusion(self, cm: ConfusionMatrix) -> float:
        """The score of an accumulated confusion matrix."""

    def score(self, y_true, y_pred, num_classes: int = NUM_CLASSES) -> float:
        """Score of labels `y_true` (N, H, W) against scores (N, H, W, C) or labels
        of `num_classes` classes."""
        return self.score_confusion(ConfusionMatrix(num_classes).update(y_true, y_pred))

    def is_better(self, curr: float, best: float, score_threshold: float = 1e-4,
                  **kwargs) -> bool:
        """True if `curr` beats `best` by more than the relative `score_threshold`.

        For 'max': curr > best * (1 + t); for 'min': curr < best * (1 - t) (the
        threshold is taken relative to |best| so a negative best works too).
        """
        if not np.isfinite(curr):
            return False
        if not np.isfinite(best):
            return curr > best if self.mode == "max" else curr < best
        margin = abs(best) * score_threshold
        return curr > best + margin if self.mode == "max" else curr < best - margin


class _ConfusionScoreEvaluator(Evaluator):
    """A higher-is-better score read from the `ConfusionMatrix` property `name`."""

    worst_score = 0.0
    mode = "max"
    name = ""

    def score_confusion(self, cm: ConfusionMatrix) -> float:
        return getattr(cm, self.name)


class AccuracyEvaluator(_ConfusionScoreEvaluator):
    """Dataset-level pixel accuracy, ignored pixels excluded (higher is better)."""

    name = "pixel_accuracy"


class IoUEvaluator(_ConfusionScoreEvaluator):
    """Mean IoU over classes present in truth or prediction (higher is better)."""

    name = "mean_iou"


EVALUATORS = {"accuracy": AccuracyEvaluator, "iou": IoUEvaluator}


def boundary_band(y_true: np.ndarray, width: int, num_classes: int = NUM_CLASSES,
                  padding=None):
    """The labelled pixels of `y_true` within `width` pixels of an outline: a pixel of
    another class, or of the unknown border that trimaps draw between object and
    background (an ignored pixel that is not `padding`).

    Scores restricted to this band measure the object outlines, which a mean IoU over
    whole masks hardly sees (DeepLab, https://arxiv.org/abs/1412.7062, Fig. 5: "mean
    IoU in a narrow band (trimap) around object boundaries"). Distance is Euclidean
    (a disc of radius `width`). Oxford's trimaps put an unknown ring of up to tens of
    pixels between pet and background, so the classes themselves rarely come within
    a few pixels of each other: the ring is the outline. Padding (`padding`, True on
    it) is ignored but is no outline: the image's edge against it is not a boundary.

    Args:
        y_true: labels (H, W) or (N, H, W).
        width: band half-width in pixels, >= 1.
        padding: bool, shaped like `y_true`, or None (no padding).

    Returns:
        bool mask shaped like `y_true`; `ConfusionMatrix().update(np.where(band,
        y_true, IGNORE_LABEL), y_pred)` then scores the band only.
    """
    import cv2
    if int(width) != width or width < 1:
        raise ValueError(f"width must be an integer >= 1. Received: {width}")
    y_true = np.asarray(y_true)
    if y_true.ndim == 3:
        pads = [None] * len(y_true) if padding is None else padding
        return np.stack([boundary_band(t, width, num_classes, p)
                         for t, p in zip(y_true, pads)])
    if y_true.ndim != 2:
        raise ValueError(f"y_true must be (H, W) or (N, H, W). Received: {y_true.shape}")
    dy, dx = np.mgrid[-width:width + 1, -width:width + 1]
    disc = (dy * dy + dx * dx <= width * width).astype(np.uint8)
    near = np.zeros(y_true.shape, np.int32)  # how many classes lie within `width`
    for c in range(num_classes):
        near += cv2.dilate((y_true == c).astype(np.uint8), disc) > 0
    counted = y_true < num_classes
    unknown = ~counted if padding is None else ~counted & ~np.asarray(padding, bool)
    near_unknown = cv2.dilate(unknown.astype(np.uint8), disc) > 0
    return ((near >= 2) | near_unknown) & counted
