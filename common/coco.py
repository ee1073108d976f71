"""COCO instance masks: run-length encoding (RLE) through pycocotools.

An instance dataset (`datasets.instances`) stores each pet's mask as a COCO RLE in
`annotations.json`, the format every instance tool reads. Class indices are the
model's (`common.labels.INSTANCE_CLASSES`: 0 cat, 1 dog); COCO category ids are those
plus one (`CATEGORIES`), since COCO keeps id 0 free. Scoring (mask AP) is
`learning.coco`'s.
"""

from __future__ import annotations

import numpy as np
from pycocotools import mask as rle_tools

from common.labels import INSTANCE_CLASSES

CATEGORIES = [{"id": i + 1, "name": name} for i, name in enumerate(INSTANCE_CLASSES)]


def category_id(class_index: int) -> int:
    """Model class (0 cat, 1 dog) -> COCO category id (1 cat, 2 dog)."""
    return int(class_index) + 1


def class_index(category: int) -> int:
    """COCO category id (1 cat, 2 dog) -> model class (0 cat, 1 dog)."""
    return int(category) - 1


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
