"""Writing instance folders -- `images/000000.jpg, ...` beside `annotations.json` in COCO
format, read by `datasets.instances` -- and making the two instance sets: one composed
from a trimap folder (`compose_dataset`) and the synthetic demo set.

The images come from `datasets.compose`. They are written as JPEG quality 95; the masks
live in the JSON, exact. `annotations.json` is written last, so a folder without it is
incomplete, and only files written here are ever removed.

The demo set (`generate_instance_demo`) composes the semantic demo's synthetic pets
(`datasets.demo_drawing.render`) the same way, at 64x64: 160 train and 40 test images.
"""

from __future__ import annotations

import json
import os
import re
from typing import Iterable

from PIL import Image

from common.coco import CATEGORIES, encode_mask, mask_area_and_box
from common.files import atomic_path
from datasets.compose import (DEFAULT_SIZE, Composite, compose_from_folder, compose_images,
                              synthetic_sources)

ANNOTATIONS_FILE = "annotations.json"
JPEG_QUALITY = 95
_NAME_RE = re.compile(r"^\d{6}\.jpg$")  # the files `write_instance_folder` writes

DEMO_ROOT = "data/demo_instances"
DEMO_VERSION = 1  # bump when the demo's drawing changes, so `ensure_instance_demo` remakes it
DEMO_NUM_TRAIN, DEMO_NUM_TEST, DEMO_SIZE = 160, 40, 64


# --------------------------------------------------------------------------- writing


def check_destination(out: str, overwrite: bool) -> list[str]:
    """Fails when `out` cannot take a new set (files not written here; an earlier set
    without `overwrite`); returns the earlier set's image files. Writes nothing."""
    images_dir = os.path.join(out, "images")
    names = os.listdir(images_dir) if os.path.isdir(images_dir) else []
    ours = [f for f in names if _NAME_RE.match(f)]
    foreign = sorted(set(names) - set(ours))
    exists = ours or os.path.exists(os.path.join(out, ANNOTATIONS_FILE))
    if foreign:
        raise ValueError(f"{images_dir} holds files not written here (e.g. {foreign[0]}); "
                         "choose an empty folder")
    if exists and not overwrite:
        raise ValueError(f"{out} already holds an instance set; pass --overwrite to "
                         "replace it, or choose another folder")
    return ours


def _prepare(out: str, overwrite: bool) -> None:
    """Makes `out/images`; clears an earlier set there only with `overwrite`, and never
    files it did not write."""
    ours = check_destination(out, overwrite)
    images_dir = os.path.join(out, "images")
    os.makedirs(images_dir, exist_ok=True)
    if os.path.exists(os.path.join(out, ANNOTATIONS_FILE)):
        os.remove(os.path.join(out, ANNOTATIONS_FILE))  # first: a half-cleared set is partial
    for f in ours:
        os.remove(os.path.join(images_dir, f))


def write_instance_folder(out: str, composites: Iterable[Composite], info: dict | None = None,
                          overwrite: bool = False, categories=CATEGORIES) -> str:
    """Writes `out/images/000000.jpg, ...` and, last, `out/annotations.json`.

    Args:
        out: the folder (made if missing).
        composites: images with their instances (`datasets.compose.Composite`).
        info: goes into the COCO `info` entry (how the set was made).
        overwrite: replace an earlier set written here.
        categories: COCO's `[{"id", "name"}, ...]`; an instance of class k is of
            the k-th (default: the pets, 1 cat, 2 dog).
    """
    _prepare(out, overwrite)
    images, annotations = [], []
    for i, item in enumerate(composites):
        file_name = f"{i:06d}.jpg"
        Image.fromarray(item.image, "RGB").save(os.path.join(out, "images", file_name),
                                                quality=JPEG_QUALITY)
        h, w = item.image.shape[:2]
        images.append({"id": i + 1, "file_name": file_name, "height": h, "width": w,
                       "background": item.background})
        for mask, cls, source in zip(item.masks, item.classes, item.sources):
            rle = encode_mask(mask)
            area, bbox = mask_area_and_box(rle)
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1,
                                "category_id": categories[cls]["id"], "segmentation": rle,
                                "area": area, "bbox": bbox, "iscrowd": 0, "source": source})
    document = {"info": dict(info or {}), "images": images, "annotations": annotations,
                "categories": list(categories)}
    with atomic_path(os.path.join(out, ANNOTATIONS_FILE)) as tmp, open(tmp, "w") as f:
        json.dump(document, f)  # a complete file or none
    return out


# --------------------------------------------------------------------------- making


def compose_dataset(src: str, out: str, num: int, seed: int = 0, size: int = DEFAULT_SIZE,
                    overwrite: bool = False, split: int = 0, progress: bool = True,
                    sources: list[str] | None = None) -> str:
    """Composes `num` images of 2-4 pets from the trimap folder `src` into the
    instance folder `out`; returns `out`. `split` (0 train, 1 test) picks the random
    stream, so the two splits of one seed share no layout. `sources`: the usable
    pairs of `src` when already checked (`datasets.compose.usable_sources`)."""
    if int(num) < 1 or int(size) < 16:
        raise ValueError(f"num must be at least 1 and size at least 16. Received: "
                         f"num={num}, size={size}")
    items = compose_from_folder(src, int(num), int(seed), int(size), split, progress,
                                sources)
    info = {"description": "pets composed from one-pet trimap images",
            "source": os.path.basename(os.path.normpath(src)), "seed": int(seed),
            "size": int(size)}
    return write_instance_folder(out, items, info, overwrite)


def demo_meta(num_train: int, num_test: int, seed: int) -> dict:
    return {"version": DEMO_VERSION, "num_train": int(num_train), "num_test": int(num_test),
            "seed": int(seed), "size": DEMO_SIZE}


def generate_instance_demo(root: str = DEMO_ROOT, num_train: int = DEMO_NUM_TRAIN,
                           num_test: int = DEMO_NUM_TEST, seed: int = 0) -> str:
    """Writes the demo instance set `root/{train,test}` (64x64, 2-4 pets each) and,
    last, `root/demo.json`; replaces an earlier demo set there.

    The pets are the semantic demo's synthetic cats and dogs (`datasets.demo`), composed
    as the real ones are; the test split's pets and backgrounds are drawn apart.
    """
    for arg, value in (("num_train", num_train), ("num_test", num_test)):
        if int(value) < 1:
            raise ValueError(f"{arg} must be at least 1. Received: {value}")
    os.makedirs(root, exist_ok=True)
    meta_path = os.path.join(root, "demo.json")
    if os.path.exists(meta_path):
        os.remove(meta_path)
    for split, (count, split_id) in {"train": (num_train, 0), "test": (num_test, 1)}.items():
        sources = synthetic_sources(max(8, int(count)), int(seed), split_id)
        items = compose_images(sources.__getitem__, len(sources), int(count), int(seed),
                               DEMO_SIZE, split_id, progress=False)
        info = {"description": "synthetic demo pets", "seed": int(seed), "size": DEMO_SIZE}
        write_instance_folder(os.path.join(root, split), items, info, overwrite=True)
    with open(meta_path, "w") as f:
        json.dump(demo_meta(num_train, num_test, seed), f, indent=2)
    return root
