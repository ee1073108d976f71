"""Mask AP of instance predictions, COCO's own number, through pycocotools.

Mask AP (Lin et al., "Microsoft COCO", ECCV 2014, section 6): average precision over
the IoU thresholds 0.50:0.05:0.95, averaged over categories, with masks matched by
mask IoU. `mask_ap` runs pycocotools' `COCOeval(iouType="segm")` and keeps its printed
table out of the caller's output unless asked for. The masks themselves are encoded
by `common.coco`.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np

from common.coco import category_id, class_index, decode_mask, encode_mask


def results_from_masks(image_id: int, masks: np.ndarray, classes, scores,
                       category_ids=None) -> list[dict]:
    """One image's predictions as COCO results, ready for `mask_ap`.

    Args:
        image_id: the image's COCO id (`datasets.instances.read_instances` gives it).
        masks: (N, H, W) bool or 0/1, at the image's own size.
        classes: N model classes (0 cat, 1 dog for the pets).
        scores: N confidences.
        category_ids: the COCO id of each model class, as the truth's annotations
            file numbers them (None: class + 1, the pets' 1 cat, 2 dog).
    """
    to_id = (lambda c: int(category_ids[int(c)])) if category_ids else category_id
    return [{"image_id": int(image_id), "category_id": to_id(c),
             "segmentation": encode_mask(m), "score": float(s)}
            for m, c, s in zip(masks, classes, scores)]


def decoded_results(results: list, shape, category_ids=None) -> tuple:
    """One image's COCO results -> (masks (N, H, W) bool, classes, scores);
    `category_ids` as in `results_from_masks`."""
    to_class = ({int(i): k for k, i in enumerate(category_ids)}.__getitem__
                if category_ids else class_index)
    masks = (np.stack([decode_mask(r["segmentation"]) for r in results]) if results
             else np.zeros((0,) + tuple(shape), bool))
    return (masks, np.array([to_class(r["category_id"]) for r in results], int),
            np.array([r["score"] for r in results], np.float32))


# --------------------------------------------------------------------------- mask AP


def evaluate_masks(annotations_path: str, results: list[dict]) -> tuple[dict, str]:
    """`mask_ap`'s numbers and the table COCOeval prints (as a string)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    names = ("mask_ap", "mask_ap50", "mask_ap75")
    table = io.StringIO()
    with contextlib.redirect_stdout(table):
        truth = COCO(annotations_path)
    if not results:  # pycocotools cannot load an empty result list
        return dict.fromkeys(names, 0.0), "no predictions: mask AP is 0\n"
    unknown = {r["image_id"] for r in results} - set(truth.getImgIds())
    if unknown:
        raise ValueError(f"results name image ids not in {annotations_path}: "
                         f"{sorted(unknown)[:5]}")
    with contextlib.redirect_stdout(table):
        found = truth.loadRes([dict(r) for r in results])  # loadRes adds keys in place
        evaluator = COCOeval(truth, found, iouType="segm")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    # COCOeval writes -1 where no ground truth exists at all.
    stats = [float(v) if v >= 0 else float("nan") for v in evaluator.stats[:3]]
    return dict(zip(names, stats)), table.getvalue()


def mask_ap(annotations_path: str, results: list[dict], *, verbose: bool = False) -> dict:
    """COCO mask AP of `results` against the truth in `annotations_path`.

    Args:
        annotations_path: an `annotations.json` (COCO format).
        results: COCO results, one dict per predicted instance: `image_id`,
            `category_id` (1 cat, 2 dog), `segmentation` (RLE) and `score`
            (`results_from_masks` builds them).
        verbose: print COCOeval's 12-line table (it is captured either way).

    Returns:
        `{"mask_ap": AP@[.50:.95], "mask_ap50": AP@.50, "mask_ap75": AP@.75}`, each in
        [0, 1] (0.0 for no predictions; NaN when the truth holds no instance).
    """
    metrics, table = evaluate_masks(annotations_path, results)
    if verbose:
        print(table, end="")
    return metrics
