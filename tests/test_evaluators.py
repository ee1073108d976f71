"""Metrics with golden values worked out by hand."""

import math

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from learning.evaluators import (AccuracyEvaluator, ArticleAccuracy, ConfusionMatrix,
                                 IoUEvaluator, article_pixel_accuracy)

I = 255  # noqa: E741 -- the ignore label, short so the arrays below line up

# One 2x4 image. Truth / prediction, pixel by pixel:
#   truth  0 0 1 1 | 2 2 I I
#   pred   0 1 1 1 | 2 0 2 0
# Counted pixels: 6 (the two I's are not counted).
# confusion[t, p]: (0,0)=1 (0,1)=1 (1,1)=2 (2,2)=1 (2,0)=1
#   matrix = [[1, 1, 0],
#             [0, 2, 0],
#             [1, 0, 1]]
# pixel accuracy = (1 + 2 + 1) / 6 = 2/3
# IoU0 = 1 / (1 + 1 + 1) = 1/3   (tp 1, fn 1 [0->1], fp 1 [2->0])
# IoU1 = 2 / (2 + 1 + 0) = 2/3   (fp 1 [0->1])
# IoU2 = 1 / (1 + 1 + 0) = 1/2   (fn 1 [2->0])
# mean IoU = (1/3 + 2/3 + 1/2) / 3 = 1/2
TRUTH = np.array([[[0, 0, 1, 1], [2, 2, I, I]]])
PRED = np.array([[[0, 1, 1, 1], [2, 0, 2, 0]]])


def test_confusion_matrix_golden():
    cm = ConfusionMatrix(3).update(TRUTH, PRED)
    np.testing.assert_array_equal(cm.matrix, [[1, 1, 0], [0, 2, 0], [1, 0, 1]])
    assert cm.pixel_accuracy == pytest.approx(2 / 3)
    np.testing.assert_allclose(cm.per_class_iou, [1 / 3, 2 / 3, 1 / 2])
    np.testing.assert_allclose(cm.per_class_accuracy, [1 / 2, 1, 1 / 2])
    assert cm.mean_iou == pytest.approx(1 / 2)


def test_confusion_matrix_matches_sklearn_on_random_data():
    rng = np.random.default_rng(0)
    t = rng.integers(0, 3, (4, 9, 7))
    p = rng.integers(0, 3, (4, 9, 7))
    expected = sk_confusion_matrix(t.ravel(), p.ravel(), labels=[0, 1, 2])
    np.testing.assert_array_equal(ConfusionMatrix(3).update(t, p).matrix, expected)


def test_accumulation_is_dataset_level_not_batch_average():
    # Batch A: 1 counted pixel, wrong. Batch B: 3 counted pixels, right.
    # Dataset-level accuracy = 3/4; a mean of batch accuracies would be (0 + 1)/2.
    cm = ConfusionMatrix(3)
    cm.update(np.array([[0, I]]), np.array([[1, 1]]))
    cm.update(np.array([[0, 1, 2]]), np.array([[0, 1, 2]]))
    assert cm.pixel_accuracy == pytest.approx(3 / 4)


def test_mean_iou_skips_classes_absent_from_truth_and_prediction():
    # Only class 0 and 1 appear; class 2 is absent from both -> not averaged.
    # IoU0 = 1/(1+0+1) = 1/2 (fn: 0->1); IoU1 = 1/(1+1+0) = 1/2  -> mean 1/2
    cm = ConfusionMatrix(3).update(np.array([[0, 0, 1]]), np.array([[0, 1, 1]]))
    assert math.isnan(cm.per_class_iou[2])
    assert cm.mean_iou == pytest.approx(1 / 2)


def test_scores_accept_probabilities_or_labels():
    probs = np.eye(3)[PRED]  # one-hot "probabilities" (1, 2, 4, 3)
    assert AccuracyEvaluator().score(TRUTH, probs) == pytest.approx(2 / 3)
    assert IoUEvaluator().score(TRUTH, PRED) == pytest.approx(1 / 2)
    with pytest.raises(ValueError):
        ConfusionMatrix(3).update(TRUTH, PRED[0])


def test_empty_matrix_is_nan_not_zero():
    cm = ConfusionMatrix(3)
    assert math.isnan(cm.pixel_accuracy) and math.isnan(cm.mean_iou)


def test_article_accuracy_counts_padding_as_background_and_averages_images():
    # Image 1 (2 px real + 2 px padding): truth 1, 1 | pad, pad; pred 1, 0 | 0, 0
    #   article: padding counts as background -> correct 1 + 2 of 4 = 3/4
    # Image 2: truth 2, 2, 2, I; pred 2, 2, 0, 2 -> 2/3 (unknown excluded)
    # article = (3/4 + 2/3) / 2 = 17/24; honest (no padding, dataset-level) = 3/5
    truth = np.array([[1, 1, I, I], [2, 2, 2, I]])
    pred = np.array([[1, 0, 0, 0], [2, 2, 0, 2]])
    pad = np.array([[0, 0, 1, 1], [0, 0, 0, 0]], bool)
    assert article_pixel_accuracy(truth, pred, pad) == pytest.approx(17 / 24)
    assert ConfusionMatrix(3).update(truth, pred).pixel_accuracy == pytest.approx(3 / 5)
    acc = ArticleAccuracy().update(truth[:1], pred[:1], pad[:1]).update(truth[1:], pred[1:])
    assert acc.result == pytest.approx(17 / 24)


@pytest.mark.parametrize("curr,best,expected", [
    (0.50004, 0.5, False),  # needs more than 0.5 * (1 + 1e-4) = 0.50005
    (0.50006, 0.5, True),
    (0.1, 0.0, True),       # anything beats the worst score 0
    (0.5, 0.5, False),
])
def test_is_better_relative_threshold_max(curr, best, expected):
    assert AccuracyEvaluator().is_better(curr, best, score_threshold=1e-4) is expected


def test_is_better_min_mode():
    class LossEvaluator(AccuracyEvaluator):
        mode = "min"
        worst_score = math.inf

    ev = LossEvaluator()
    assert ev.is_better(1.0, math.inf)
    assert ev.is_better(0.9, 1.0, score_threshold=0.05)       # 0.9 < 0.95
    assert not ev.is_better(0.96, 1.0, score_threshold=0.05)  # 0.96 >= 0.95
    assert not ev.is_better(1.01, 1.0)
    assert not ev.is_better(float("nan"), 1.0)
