"""COCO instance masks: run-length encoding and mask AP through pycocotools.

An instance dataset (`datasets.instances`) stores each pet's mask as a COCO
run-length encoding (RLE) in `annotations.json`, the format every instance tool reads.
Class indices are the model's (0 cat, 1 dog); COCO category ids are those plus one
(`CATEGORIES`), since COCO keeps id 0 free.

Mask AP is COCO's own number (Lin et al., "Microsoft COCO", ECCV 2014, section 6):
average precision over the IoU thresholds 0.50:0.05:0.95, averaged over categories,
with masks matched by mask IoU. `mask_ap` runs pycocotools' `COCOeval(iouType="segm")`
and keeps its printed table out of the caller's output unless asked for.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
from pycocotools import mask as rle_tools

CATEGORIES = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]


def category_id(class_index: int) -> int:
    """Model class (0 cat, 1 dog) -> COCO category id (1 cat, 2 dog)."""
    return int(class_index) + 1


def class_index(category: int) -> int:
    """COCO category id (1 cat, 2 dog) -> model class (0 cat, 1 dog)."""
    return int(category) - 1


# --------------------------------------------------------------------------- masks


def encode_mask(mask: np.ndarray) -> dict:
    """(H, W) bool or 0/1 mask -> COCO compressed RLE `{"size": [H, W], "counts": str}`.

    `counts` is a str (pycocotools gives bytes) so the RLE goes into JSON as it is.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"encode_mask takes one (H, W) mask. Received shape: {mask.shape}")
    rle = rle_tools.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode_mask(rle: dict) -> np.ndarray:
    """COCO compressed RLE (counts as str or bytes) -> (H, W) bool mask."""
    counts = rle["counts"]
    if isinstance(counts, str):
        counts = counts.encode("ascii")
    return rle_tools.decode({"size": list(rle["size"]), "counts": counts}).astype(bool)


def decode_segmentation(segmentation, height: int, width: int) -> np.ndarray:
    """Any COCO `segmentation` -> (H, W) bool: compressed RLE, uncompressed RLE
    (`counts` a list of run lengths) or polygons (a list of [x1, y1, x2, y2, ...])."""
    if isinstance(segmentation, dict) and isinstance(segmentation["counts"], (str, bytes)):
        return decode_mask(segmentation)
    rles = rle_tools.frPyObjects(segmentation, height, width)
    rle = rle_tools.merge(rles) if isinstance(rles, list) else rles
    return rle_tools.decode(rle).astype(bool)


def mask_area_and_box(rle: dict) -> tuple[int, list[float]]:
    """Pixel count and COCO box `[x, y, width, height]` of an encoded mask."""
    counts = rle["counts"].encode("ascii") if isinstance(rle["counts"], str) else rle["counts"]
    raw = {"size": list(rle["size"]), "counts": counts}
    return int(rle_tools.area(raw)), [float(v) for v in rle_tools.toBbox(raw)]


def results_from_masks(image_id: int, masks: np.ndarray, classes, scores) -> list[dict]:
    """One image's predictions as COCO results, ready for `mask_ap`.

    Args:
        image_id: the image's COCO id (`datasets.instances.read_instances` gives it).
        masks: (N, H, W) bool or 0/1, at the image's own size.
        classes: N model classes (0 cat, 1 dog).
        scores: N confidences.
    """
    return [{"image_id": int(image_id), "category_id": category_id(c),
             "segmentation": encode_mask(m), "score": float(s)}
            for m, c, s in zip(masks, classes, scores)]


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
