"""Instance segmentation data (for SOLO): COCO-format folders, the stream a model
trains on, and a built-in demo set.

An instance dataset folder is `images/` beside `annotations.json` in COCO format: one
entry per image (`id`, `file_name`, `height`, `width`) and one annotation per pet
(`segmentation` as RLE or polygons, `area`, `bbox`, `iscrowd` 0, `category_id`), with
the categories `cat` (id 1) and `dog` (id 2). A dataset root holds `train/` and `test/`,
each such a folder. Model classes are 0 cat, 1 dog (`learning.coco.category_id`).

    # compose one from the Oxford trimaps: 2-4 pets per 256x256 image (datasets.compose)
    python -m datasets.instances compose --src data/catdog --out data/pets_instances \\
        --num 4000 --num-test 500 --seed 0 --split
    # the demo set (data/demo_instances, 64x64, seconds to make)
    python -m datasets.instances demo

Reading: `read_instances` (every image at its own size, with its COCO id, for
`learning.coco.mask_ap`) and `make_instance_dataset` (the training stream: each image
scaled so its longer side is S and zero-padded at the bottom-right, `fit_to_size`;
`restore_masks` maps predictions back). Writing and composing live in
`datasets.compose` (`write_instance_folder`, `compose_dataset`, re-exported here).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import NamedTuple

import cv2
import numpy as np

# Re-exported: the writing half of the format and the demo's defaults.
from datasets.compose import (ANNOTATIONS_FILE, DEFAULT_SIZE, DEMO_NUM_TEST,  # noqa: F401
                              DEMO_NUM_TRAIN, DEMO_ROOT, compose_dataset, demo_meta,
                              generate_instance_demo, write_instance_folder)
from datasets.data import DataError, DatasetError, as_size, load_image
from learning.coco import decode_segmentation

log = logging.getLogger(__name__)


class InstanceExample(NamedTuple):
    """One image of an instance folder: its COCO `image_id`, `name` (file name without
    extension), `image` (H, W, 3) uint8 RGB, `masks` (K, H, W) bool and `classes` (K,)
    int32 (0 cat, 1 dog), in annotation order."""

    image_id: int
    name: str
    image: np.ndarray
    masks: np.ndarray
    classes: np.ndarray


# --------------------------------------------------------------------------- reading


def annotations_path(split_dir: str) -> str:
    """`split_dir/annotations.json` (what `learning.coco.mask_ap` takes)."""
    return os.path.join(split_dir, ANNOTATIONS_FILE)


def read_annotations(split_dir: str) -> list[dict]:
    """Each image of `split_dir`: `{"image_id", "path", "height", "width",
    "segmentations", "classes"}`, read from `annotations.json` and checked.

    Categories are matched by name (`cat`, `dog`), so files of other tools with other
    ids read too; crowd annotations (`iscrowd` 1) are not instances and are left out.
    """
    path = annotations_path(split_dir)
    if not os.path.isfile(path):
        raise DataError(path, "missing; an instance folder holds images/ and "
                        "annotations.json (COCO format)")
    try:
        with open(path) as f:
            coco = json.load(f)
        names = {c["id"]: c["name"] for c in coco["categories"]}
        records = {im["id"]: {"image_id": im["id"], "height": int(im["height"]),
                              "width": int(im["width"]), "segmentations": [], "classes": [],
                              "path": os.path.join(split_dir, "images", im["file_name"])}
                   for im in coco["images"]}
        for ann in coco["annotations"]:
            if ann.get("iscrowd", 0):
                continue
            name = names.get(ann["category_id"])
            if name not in ("cat", "dog"):
                raise DataError(path, f"annotation {ann['id']} has category {name!r}; "
                                "expected cat or dog")
            records[ann["image_id"]]["segmentations"].append(ann["segmentation"])
            records[ann["image_id"]]["classes"].append(0 if name == "cat" else 1)
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


def read_instances(split_dir: str) -> list[InstanceExample]:
    """Every image of an instance folder at its own size, for evaluation; the image ids
    are those of `annotations.json`, which `learning.coco.mask_ap` scores against."""
    out = []
    for record in read_annotations(split_dir):
        image, masks, classes = load_record(record)
        name = os.path.splitext(os.path.basename(record["path"]))[0]
        out.append(InstanceExample(record["image_id"], name, image, masks, classes))
    return out


# --------------------------------------------------------------------------- geometry


def fit_to_size(image: np.ndarray, masks: np.ndarray, size) -> tuple[np.ndarray, np.ndarray]:
    """Scales an image (and its (K, H, W) masks, nearest-neighbour) so it fits in
    `size` with its longer side touching it, then pads bottom and right with 0.

    Padding at the bottom-right keeps the origin, so a prediction maps back with a
    crop and a resize (`restore_masks`); nothing is cropped away, so no instance is cut.
    """
    out_h, out_w = as_size(size)
    h, w = image.shape[:2]
    scale = min(out_h / h, out_w / w)
    new_h, new_w = max(1, min(out_h, round(h * scale))), max(1, min(out_w, round(w * scale)))
    if (new_h, new_w) != (h, w):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA
                           if scale < 1 else cv2.INTER_LINEAR)
        masks = np.stack([cv2.resize(m.astype(np.uint8), (new_w, new_h),
                                     interpolation=cv2.INTER_NEAREST) for m in masks]
                         ) if len(masks) else np.zeros((0, new_h, new_w), np.uint8)
    image_out = np.zeros((out_h, out_w, 3), np.uint8)
    image_out[:new_h, :new_w] = image
    masks_out = np.zeros((len(masks), out_h, out_w), bool)
    masks_out[:, :new_h, :new_w] = masks
    return image_out, masks_out


def restore_masks(masks: np.ndarray, height: int, width: int) -> np.ndarray:
    """Undoes `fit_to_size` for (N, S, S) masks: (N, height, width) bool."""
    out_h, out_w = masks.shape[1:]
    scale = min(out_h / height, out_w / width)
    new_h = max(1, min(out_h, round(height * scale)))
    new_w = max(1, min(out_w, round(width * scale)))
    crop = np.asarray(masks)[:, :new_h, :new_w].astype(np.uint8)
    return np.stack([cv2.resize(m, (width, height), interpolation=cv2.INTER_NEAREST)
                     for m in crop]).astype(bool) if len(crop) else \
        np.zeros((0, height, width), bool)


# --------------------------------------------------------------------------- stream


def _example_loader(records: list[dict], size: tuple[int, int], max_instances: int):
    """A numpy function (index, flip) -> (image, masks (K, H, W) uint8, classes (K,))."""
    def load(i, flip):
        try:
            image, masks, classes = load_record(records[int(i)])
        except DataError as e:
            raise ValueError(str(e)) from None  # a tf OpError naming the file
        image, masks = fit_to_size(image, masks, size)
        present = masks.reshape(len(masks), -1).any(axis=1)  # tiny ones may vanish
        masks, classes = masks[present], classes[present]
        if flip:
            image, masks = image[:, ::-1], masks[:, :, ::-1]
        out_masks = np.zeros((max_instances,) + size, np.uint8)
        out_masks[:len(masks)] = masks
        out_classes = np.full(max_instances, -1, np.int32)
        out_classes[:len(classes)] = classes
        return np.ascontiguousarray(image), out_masks, out_classes
    return load


def make_instance_dataset(split_dir: str, image_size, batch_size: int, *,
                          max_instances: int = 8, shuffle: bool = False, seed: int = 0,
                          augment: bool = False, drop_remainder: bool = False):
    """A batched, prefetched `tf.data.Dataset` over an instance folder.

    Args:
        split_dir: a folder with `images/` and `annotations.json`.
        image_size: S (or `(H, W)`): each image is scaled so its longer side is S and
            padded at the bottom-right with zeros (`fit_to_size`; masks nearest-neighbour).
        batch_size: images per batch.
        max_instances: K, the instance slots per image. An image with more instances
            raises `DataError` when the stream is made, naming it.
        shuffle: permute the images with `seed` (one exact order per seed).
        seed: seed of the order and of `augment`.
        augment: random horizontal flips (the same flips for a given seed).
        drop_remainder: drop a last, smaller batch.

    Returns:
        Batches `(images uint8 (B, S, S, 3), {"masks": uint8 (B, K, S, S) 0/1,
        "classes": int32 (B, K)})`: classes 0 cat, 1 dog, -1 an empty slot (its mask
        all zero); instances fill the first slots in annotation order. An instance that
        vanishes when an image is scaled down becomes an empty slot.
    """
    import tensorflow as tf

    size = as_size(image_size)
    if batch_size <= 0 or max_instances <= 0:
        raise ValueError(f"batch_size and max_instances must be positive. Received: "
                         f"{batch_size}, {max_instances}")
    records = read_annotations(split_dir)
    if not records:
        raise DataError(annotations_path(split_dir), "lists no image")
    for record in records:
        if len(record["classes"]) > max_instances:
            raise DataError(record["path"], f"has {len(record['classes'])} instances, more "
                            f"than max_instances={max_instances}; raise max_instances")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(records)) if shuffle else np.arange(len(records))
    flips = rng.random(len(records)) < 0.5 if augment else np.zeros(len(records), bool)
    load = _example_loader(records, size, max_instances)

    def load_tf(i, flip):
        image, masks, classes = tf.numpy_function(load, [i, flip],
                                                  [tf.uint8, tf.uint8, tf.int32],
                                                  stateful=False)
        image.set_shape(size + (3,))
        masks.set_shape((max_instances,) + size)
        classes.set_shape((max_instances,))
        return image, {"masks": masks, "classes": classes}

    ds = tf.data.Dataset.from_tensor_slices((order, flips))
    ds = ds.map(load_tf, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    return ds.prefetch(tf.data.AUTOTUNE)


def ensure_instance_demo(root: str = DEMO_ROOT, *, num_train: int = DEMO_NUM_TRAIN,
                         num_test: int = DEMO_NUM_TEST, seed: int = 0) -> str:
    """Returns `root` once it holds the complete demo instance set for these arguments
    (made, in seconds, when `root/demo.json` is missing or differs)."""
    wanted = demo_meta(num_train, num_test, seed)
    try:
        with open(os.path.join(root, "demo.json")) as f:
            if json.load(f) == wanted:
                return root
    except (OSError, ValueError):
        pass
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
        for split_id, (src, out, num) in enumerate(jobs):
            # Split ids 0 and 1 give train and test their own random streams.
            compose_dataset(src, out, num, args.seed, args.size, args.overwrite,
                            split=split_id)
            print(f"Wrote {num} images and {ANNOTATIONS_FILE} to {os.path.abspath(out)}")
    except (DataError, DatasetError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
