"""Non-maximum suppression on masks for SOLO's inference: SOLOv2's Matrix NMS (the
default) and SOLO's greedy mask NMS."""

from __future__ import annotations

import numpy as np


def mask_iou(masks) -> np.ndarray:
    """IoU of every pair of (N, H, W) binary masks: (N, N) float32."""
    flat = np.asarray(masks, np.float32).reshape(len(masks), -1)
    inter = flat @ flat.T
    area = flat.sum(axis=1)
    return inter / np.maximum(area[:, None] + area[None, :] - inter, 1.0)


def matrix_nms(masks, classes, scores, kernel: str = "gaussian",
               sigma: float = 2.0) -> np.ndarray:
    """Matrix NMS (Wang et al., "SOLOv2: Dynamic and Fast Instance Segmentation",
    NeurIPS 2020, https://arxiv.org/abs/2003.10152, Sec. 3.3): every score decays at
    once, with matrix operations instead of a sequential loop.

    For masks sorted by score (best first), mask j decays by
    min over better masks i of f(iou_ij) / f(iou_max_i), where iou_max_i is the largest
    IoU of mask i with a mask better than it (how likely i is suppressed itself) and
    f(iou) = exp(-sigma iou^2) ("gaussian") or 1 - iou ("linear"). Only masks of the
    same class interact. Returns the decayed scores (N,), in the input order.
    """
    scores = np.asarray(scores, np.float32)
    n = len(scores)
    if n == 0:
        return scores
    same = np.asarray(classes)[:, None] == np.asarray(classes)[None, :]
    iou = np.triu(mask_iou(masks) * same, k=1)  # iou[i, j], i better than j
    iou_max = iou.max(axis=0)  # per mask: its largest IoU with a better one
    if kernel == "gaussian":
        decay = np.exp(-sigma * (iou ** 2 - iou_max[:, None] ** 2))
    elif kernel == "linear":
        decay = (1.0 - iou) / np.maximum(1.0 - iou_max[:, None], 1e-6)
    else:
        raise ValueError(f"kernel must be 'gaussian' or 'linear'. Received: {kernel!r}")
    # Row i = j and the rows below give factors >= 1 and row 0 (iou_max 0) factors
    # <= 1, so the column minimum is the decay over the better masks.
    return scores * decay.min(axis=0)


def mask_nms(masks, classes, scores, iou_threshold: float = 0.5) -> np.ndarray:
    """Greedy NMS on masks (SOLO Sec. 3.4): best first, a mask is dropped when it
    overlaps a kept mask of its class by more than `iou_threshold`. Returns the kept
    indices, best first."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    iou = mask_iou(masks)
    keep = []
    for i in order:
        if all(classes[k] != classes[i] or iou[i, k] <= iou_threshold for k in keep):
            keep.append(i)
    return np.asarray(keep, np.int64)
