"""Instance segmentation data (for SOLO): COCO-format folders, the stream a model
trains on, and a built-in demo set.

An instance dataset folder is `images/` beside `annotations.json` in COCO format: one
entry per image (`id`, `file_name`, `height`, `width`) and one annotation per object
(`segmentation` as RLE or polygons, `area`, `bbox`, `iscrowd` 0, `category_id`), and
its `categories` (`id`, `name`): for the pets `cat` (id 1) and `dog` (id 2), for your
own data any. A dataset root holds `train/` and `test/`, each such a folder. Model
class k is the k-th category in id order (`read_categories`; the pets: 0 cat, 1 dog).

    # compose one from the Oxford trimaps: 2-4 pets per 256x256 image (datasets.compose)
    python -m datasets.instances compose --src data/catdog --out data/pets_instances \\
        --num 4000 --num-test 500 --seed 0 --split
    # the demo set (data/demo_instances, 64x64, seconds to make)
    python -m datasets.instances demo

Reading: `read_annotations` (the records a training stream loads from,
`datasets.instance_stream`) and `read_instances` (every image at its own size, with
its COCO id, for `learning.coco.mask_ap`). Composing lives in `datasets.compose`, writing
in `datasets.instance_folder` (`write_instance_folder`, `compose_dataset`, re-exported
here).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import NamedTuple

import numpy as np

from common.coco import decode_segmentation
from datasets.compose import DEFAULT_SIZE, usable_sources
from datasets.files import DataError, DatasetError, load_image, made_with
# Re-exported: the writing half of the format and the demo's defaults.
from datasets.instance_folder import (ANNOTATIONS_FILE, DEMO_NUM_TEST,  # noqa: F401
                                      DEMO_NUM_TRAIN, DEMO_ROOT, check_destination,
                                      compose_dataset, demo_meta, generate_instance_demo,
                                      write_instance_folder)

log = logging.getLogger(__name__)


class InstanceExample(NamedTuple):
    """One image of an instance folder: its COCO `image_id`, `name` (file name without
    extension), `image` (H, W, 3) uint8 RGB, `masks` (K, H, W) bool and `classes` (K,)
    int32 (model classes: 0 cat, 1 dog for the pets), in annotation order."""

    image_id: int
    name: str
    image: np.ndarray
    masks: np.ndarray
    classes: np.ndarray


# --------------------------------------------------------------------------- reading


def annotations_path(split_dir: str) -> str:
    """`split_dir/annotations.json` (what `learning.coco.mask_ap` takes)."""
    return os.path.join(split_dir, ANNOTATIONS_FILE)


def _read_coco(split_dir: str) -> tuple[str, dict]:
    path = annotations_path(split_dir)
    if not os.path.isfile(path):
        raise DataError(path, "missing; an instance folder holds images/ and "
                        "annotations.json (COCO format)")
    try:
        with open(path) as f:
            return path, json.load(f)
    except ValueError as e:
        raise DataError(path, f"not a COCO annotations file ({e})") from None


def read_categories(split_dir: str) -> list[tuple[int, str]]:
    """`(COCO id, name)` of each category of `split_dir/annotations.json`, in id
    order: the classes a model trained on it predicts, class k the k-th."""
    return _categories(*_read_coco(split_dir))


def _categories(path: str, coco: dict) -> list[tuple[int, str]]:
    try:
        categories = sorted((int(c["id"]), str(c["name"])) for c in coco["categories"])
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(path, f"its categories are not COCO's [{{\"id\": 1, \"name\": "
                        f"...}}, ...] ({type(e).__name__}: {e})") from None
    if not categories or len({n for _, n in categories}) != len(categories):
        raise DataError(path, "needs at least one category, each with its own name")
    return categories


def read_annotations(split_dir: str, names=None) -> list[dict]:
    """Each image of `split_dir`: `{"image_id", "path", "height", "width",
    "segmentations", "classes"}`, read from `annotations.json` and checked.

    Categories are matched by name to `names`, the model's classes (None: this
    file's categories in id order), so a test folder whose ids differ reads too;
    crowd annotations (`iscrowd` 1) are not instances and are left out.
    """
    path, coco = _read_coco(split_dir)
    categories = _categories(path, coco)
    names = list(names) if names is not None else [n for _, n in categories]
    try:
        ids = {i: n for i, n in categories}
        records = {im["id"]: {"image_id": im["id"], "height": int(im["height"]),
                              "width": int(im["width"]), "segmentations": [], "classes": [],
                              "path": os.path.join(split_dir, "images", im["file_name"])}
                   for im in coco["images"]}
        for ann in coco["annotations"]:
            if ann.get("iscrowd", 0):
                continue
            name = ids.get(ann["category_id"])
            if name not in names:
                raise DataError(path, f"annotation {ann['id']} has category "
                                f"{ann['category_id']} ({name}), not one of the "
                                f"model's classes ({', '.join(names)})")
            records[ann["image_id"]]["segmentations"].append(ann["segmentation"])
            records[ann["image_id"]]["classes"].append(names.index(name))
    except (ValueError, KeyError, TypeError) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(path, f"not a COCO annotations file "
                        f"({type(e).__name__}: {e})") from None
    return [records[k] for k in sorted(records)]


def load_record(record: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One `read_annotations` entry -> (image (H, W, 3) uint8, masks (K, H, W) bool,
    classes (K,) int32); raises `DataError` naming the file."""
    path, h, w = record["path"], record["height"], record["width"]
    if not os.path.exists(path):
        raise DataError(path, "image listed in annotations.json is missing")
    image = load_image(path)
    if image.shape[:2] != (h, w):
        raise DataError(path, f"image is {image.shape[1]}x{image.shape[0]} but "
                        f"annotations.json says {w}x{h} (width x height)")
    masks = np.zeros((len(record["classes"]), h, w), bool)
    for k, segmentation in enumerate(record["segmentations"]):
        masks[k] = decode_segmentation(segmentation, h, w)
    return image, masks, np.asarray(record["classes"], np.int32)


def read_instances(split_dir: str, names=None) -> list[InstanceExample]:
    """Every image of an instance folder at its own size, for evaluation; the image ids
    are those of `annotations.json`, which `learning.coco.mask_ap` scores against.
    `names`: the model's classes, as in `read_annotations`."""
    out = []
    for record in read_annotations(split_dir, names):
        image, masks, classes = load_record(record)
        name = os.path.splitext(os.path.basename(record["path"]))[0]
        out.append(InstanceExample(record["image_id"], name, image, masks, classes))
    return out


def ensure_instance_demo(root: str = DEMO_ROOT, *, num_train: int = DEMO_NUM_TRAIN,
                         num_test: int = DEMO_NUM_TEST, seed: int = 0) -> str:
    """Returns `root` once it holds the complete demo instance set for these arguments
    (made, in seconds, when `root/demo.json` is missing or differs)."""
    wanted = demo_meta(num_train, num_test, seed)
    if made_with(root, wanted, "demo.json"):
        return root
    print(f"Generating the demo instance dataset in {root} ({num_train} train, "
          f"{num_test} test images, seed {seed})", flush=True)
    return generate_instance_demo(root, num_train, num_test, seed)


# --------------------------------------------------------------------------- script


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Instance segmentation datasets in "
                                     "COCO format (images/ + annotations.json).")
    commands = parser.add_subparsers(dest="command", required=True)
    compose = commands.add_parser("compose", help="compose 2-4 pets per image from a "
                                  "trimap folder (images/ + masks/)")
    compose.add_argument("--src", required=True, help="trimap folder, or with --split "
                         "a root holding train/ and test/")
    compose.add_argument("--out", required=True, help="output instance folder (or root)")
    compose.add_argument("--num", type=int, required=True, help="images to compose "
                         "(with --split: training images)")
    compose.add_argument("--num-test", type=int, default=None,
                         help="with --split: test images (default num // 5, at least 1)")
    compose.add_argument("--seed", type=int, default=0, help="same seed, same files")
    compose.add_argument("--size", type=int, default=DEFAULT_SIZE,
                         help="side of the square output images (default 256)")
    compose.add_argument("--split", action="store_true", help="write OUT/train and "
                         "OUT/test from SRC/train and SRC/test")
    compose.add_argument("--overwrite", action="store_true",
                         help="replace an instance set already in OUT")
    demo = commands.add_parser("demo", help="write the synthetic demo instance set")
    demo.add_argument("--root", default=DEMO_ROOT, help="output folder")
    demo.add_argument("--train", type=int, default=DEMO_NUM_TRAIN,
                      help="training images (default 160)")
    demo.add_argument("--test", type=int, default=DEMO_NUM_TEST,
                      help="test images (default 40)")
    demo.add_argument("--seed", type=int, default=0, help="same seed, same files")
    return parser


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    args = get_args_parser().parse_args(argv)
    try:
        if args.command == "demo":
            generate_instance_demo(args.root, args.train, args.test, args.seed)
            print(f"Wrote the demo instance set to {os.path.abspath(args.root)}")
            return 0
        jobs = [(args.src, args.out, args.num)]
        if args.split:
            num_test = args.num_test if args.num_test is not None else max(1, args.num // 5)
            jobs = [(os.path.join(args.src, s), os.path.join(args.out, s), n)
                    for s, n in (("train", args.num), ("test", num_test))]
        # Every source and destination is checked before anything is written.
        sources = [usable_sources(src) for src, _, _ in jobs]
        for _, out, _ in jobs:
            check_destination(out, args.overwrite)
        for split_id, ((src, out, num), paths) in enumerate(zip(jobs, sources)):
            # Split ids 0 and 1 give train and test their own random streams.
            compose_dataset(src, out, num, args.seed, args.size, args.overwrite,
                            split=split_id, sources=paths)
            print(f"Wrote {num} images and {ANNOTATIONS_FILE} to {os.path.abspath(out)}")
    except (DataError, DatasetError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
