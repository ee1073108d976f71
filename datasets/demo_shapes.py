"""A second built-in demo: five classes of synthetic shapes, laid out as your own data.

    python -m datasets.demo_shapes --root data/demo_shapes   # 320 train, 64 test images
    python train.py --data demo-shapes --image-size 64 --weights none --out runs/shapes

Where the pets demo copies the Oxford release (trimaps, the species in the file name),
this one is a dataset as any tool writes it (docs/own-data.md):
`ROOT/{train,test}/images/shape_0007.jpg` beside `masks/shape_0007.png`, a one-channel
PNG whose pixels are class ids, and `ROOT/classes.json` naming them: 0 background,
1 square, 2 disc, 3 triangle, 4 star. Along every outline a band is 255, the ignore
value: there the true class is a matter of anti-aliasing, as in the trimaps' unknown
band.

Each image holds one to three shapes, each of its class's own outline and hue range
on grey clutter, so a small network learns them from a few hundred images at 64x64.
Image i of a split is drawn from its own generator, seeded by (seed, split, i): the
same seed gives byte-identical files.
"""

from __future__ import annotations

import argparse
import colorsys
import json
import os
import re

import cv2
import numpy as np
from PIL import Image

from common.labels import Classes
from datasets.classes import CLASSES_FILE, write_classes
from datasets.files import made_with

DEFAULT_ROOT = "data/demo_shapes"
VERSION = 1  # bump when the drawing changes, so `ensure` regenerates old sets
DEFAULT_NUM_TRAIN, DEFAULT_NUM_TEST = 320, 64
META_FILE = "demo.json"
CLASSES = Classes(("background", "square", "disc", "triangle", "star"))
IGNORE = CLASSES.ignore_label
SIZE_RANGE = (72, 144)  # heights and widths, drawn independently, as the pets demo's
# Hue range (degrees) of each shape class: apart from each other, on grey clutter.
HUES = {1: (0, 25), 2: (45, 70), 3: (180, 220), 4: (280, 320)}
_NAME_RE = re.compile(r"^shape_\d{4}\.(jpg|png)$")
_SUBPIXEL = 4  # cv2 `shift`: polygons drawn with 1/16 px precision


# --------------------------------------------------------------------------- drawing


def outline(cls: int, radius: float, angle: float) -> np.ndarray:
    """The polygon (K, 2) of a shape of class `cls` centred on the origin."""
    if cls == 1:  # square
        t = np.arange(4) * np.pi / 2 + np.pi / 4
        r = np.full(4, radius)
    elif cls == 2:  # disc
        t = np.linspace(0, 2 * np.pi, 40, endpoint=False)
        r = np.full(40, radius * 0.85)
    elif cls == 3:  # triangle
        t = np.arange(3) * 2 * np.pi / 3 - np.pi / 2
        r = np.full(3, radius * 1.1)
    else:  # five-pointed star
        t = np.arange(10) * np.pi / 5 - np.pi / 2
        r = np.where(np.arange(10) % 2 == 0, radius * 1.15, radius * 0.5)
    t = t + angle
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


def _fill(canvas: np.ndarray, polygon: np.ndarray, value) -> None:
    points = np.round(polygon * (1 << _SUBPIXEL)).astype(np.int32)
    cv2.fillPoly(canvas, [points], value, lineType=cv2.LINE_8, shift=_SUBPIXEL)


def _rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb((h % 360) / 360, s, v)
    return int(r * 255), int(g * 255), int(b * 255)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Grey clutter: a grey level with a few lighter and darker grey strokes."""
    image = np.empty((h, w, 3), np.uint8)
    image[:] = int(rng.integers(60, 200))
    for _ in range(int(rng.integers(3, 8))):
        p, q = rng.integers(0, [w, h], size=2), rng.integers(0, [w, h], size=2)
        grey = int(rng.integers(30, 230))
        cv2.line(image, tuple(int(v) for v in p), tuple(int(v) for v in q),
                 (grey, grey, grey), int(rng.integers(1, 5)))
    return image


def render(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One example: `(image, mask)`, (H, W, 3) uint8 RGB and (H, W) uint8 class ids
    with `IGNORE` along the outlines, H and W in `SIZE_RANGE`."""
    h, w = (int(x) for x in rng.integers(SIZE_RANGE[0], SIZE_RANGE[1] + 1, size=2))
    image = _background(rng, h, w)
    mask = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.integers(1, 4))):  # later shapes cover earlier ones
        cls = int(rng.integers(1, 5))
        radius = rng.uniform(0.15, 0.3) * min(h, w)
        centre = rng.uniform([radius, radius], [w - radius, h - radius])
        polygon = outline(cls, radius, rng.uniform(0, 2 * np.pi)) + centre
        colour = _rgb(rng.uniform(*HUES[cls]), rng.uniform(0.6, 0.95),
                      rng.uniform(0.7, 1.0))
        _fill(image, polygon, colour)
        _fill(mask, polygon, cls)
    # Pixels with another class within one pixel lie on an outline: ignored.
    square = np.ones((3, 3), np.uint8)
    mask[cv2.dilate(mask, square) != cv2.erode(mask, square)] = IGNORE
    if rng.random() < 0.5:  # soften some edges, as a camera would
        image = cv2.GaussianBlur(image, (3, 3), 0)
    noise = rng.normal(0, rng.uniform(2, 6), size=image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8), mask


# --------------------------------------------------------------------------- files


def _clear(root: str) -> None:
    """Removes an earlier shapes set under `root`, refusing to touch any other file."""
    for name in (META_FILE, CLASSES_FILE):  # the meta first: a half-cleared set is partial
        if os.path.exists(os.path.join(root, name)):
            os.remove(os.path.join(root, name))
    for split in ("train", "test"):
        for sub in ("images", "masks"):
            folder = os.path.join(root, split, sub)
            if not os.path.isdir(folder):
                continue
            foreign = [f for f in os.listdir(folder) if not _NAME_RE.match(f)]
            if foreign:
                raise ValueError(f"{folder} holds files the demo generator did not write "
                                 f"(e.g. {foreign[0]}); choose an empty or demo folder.")
            for f in os.listdir(folder):
                os.remove(os.path.join(folder, f))


def _meta(num_train: int, num_test: int, seed: int) -> dict:
    return {"demo": "shapes", "version": VERSION, "num_train": int(num_train),
            "num_test": int(num_test), "seed": int(seed)}


def generate(root: str, num_train: int = DEFAULT_NUM_TRAIN,
             num_test: int = DEFAULT_NUM_TEST, seed: int = 0) -> str:
    """Writes the shapes set under `root` (replacing an earlier one) and returns it:
    `root/classes.json`, `root/{train,test}/{images,masks}/` and, last,
    `root/demo.json` (a set without it is incomplete)."""
    for arg, value in (("num_train", num_train), ("num_test", num_test)):
        if int(value) < 1:
            raise ValueError(f"{arg} must be at least 1. Received: {value}")
    os.makedirs(root, exist_ok=True)
    _clear(root)
    write_classes(root, CLASSES)
    for split_id, (split, count) in enumerate((("train", num_train), ("test", num_test))):
        for sub in ("images", "masks"):
            os.makedirs(os.path.join(root, split, sub), exist_ok=True)
        for i in range(int(count)):
            image, mask = render(np.random.default_rng([int(seed), split_id, i]))
            name = f"shape_{i:04d}"
            Image.fromarray(image, "RGB").save(
                os.path.join(root, split, "images", name + ".jpg"), quality=95)
            Image.fromarray(mask, "L").save(os.path.join(root, split, "masks", name + ".png"))
    with open(os.path.join(root, META_FILE), "w") as f:
        json.dump(_meta(num_train, num_test, seed), f, indent=2)
    return root


def ensure(root: str = DEFAULT_ROOT, num_train: int = DEFAULT_NUM_TRAIN,
           num_test: int = DEFAULT_NUM_TEST, seed: int = 0) -> str:
    """Returns `root` once it holds the complete shapes set for these arguments
    (made, in seconds, when `root/demo.json` is missing or differs)."""
    wanted = _meta(num_train, num_test, seed)
    if made_with(root, wanted, META_FILE):
        return root
    print(f"Generating the shapes demo in {root} ({num_train} train, {num_test} test "
          f"images, seed {seed})", flush=True)
    return generate(root, num_train, num_test, seed)


# --------------------------------------------------------------------------- script


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Write the synthetic shapes demo (5 classes, masks of class ids, "
                    "classes.json) to ROOT/{train,test}/{images,masks}.")
    parser.add_argument("--root", default=DEFAULT_ROOT, help="output folder")
    parser.add_argument("--train", type=int, default=DEFAULT_NUM_TRAIN,
                        help="number of training images")
    parser.add_argument("--test", type=int, default=DEFAULT_NUM_TEST,
                        help="number of test images")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same files")
    return parser


def main(args: argparse.Namespace) -> None:
    generate(args.root, args.train, args.test, args.seed)
    print(f"Wrote {args.train} train and {args.test} test images (seed {args.seed}) "
          f"and {CLASSES_FILE} ({CLASSES.describe()}) to {os.path.abspath(args.root)}")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
