"""A built-in demo dataset: synthetic cats and dogs in the Oxford-IIIT Pet layout.

`generate` writes `ROOT/{train,test}/images/NAME.jpg` beside `masks/NAME.png` (Oxford
trimaps: 1 pet, 2 background, 3 unknown border band), so every loader, script and test
that reads the real data reads this too, in seconds and on a 2-core CPU. Cats are named
`Cat_0007` and dogs `dog_0012`, because `datasets.files.is_cat` reads the class from the
first letter.

The pets are drawn by `datasets.demo_drawing`, made to be learned fast (cats and dogs
differ in silhouette, texture and colour, on backgrounds of other colours). Each image
is drawn from its own `numpy.random.default_rng`, seeded per image: the same seed gives
byte-identical files.

    python -m datasets.demo --root data/demo            # 320 train, 64 test images
"""

from __future__ import annotations

import argparse
import json
import os
import re

import numpy as np
from PIL import Image

from datasets.demo_drawing import render
from datasets.files import made_with

DEFAULT_ROOT = "data/demo"
VERSION = 1  # bump when the drawing changes, so `ensure` regenerates old sets
DEFAULT_NUM_TRAIN, DEFAULT_NUM_TEST = 320, 64
JPEG_QUALITY = 95
META_FILE = "demo.json"
_NAME_RE = re.compile(r"^(Cat|dog)_\d+\.(jpg|png)$")


# --------------------------------------------------------------------------- files


def _clear(root: str) -> None:
    """Removes a previous demo set's files under `root`, refusing to touch any other."""
    if os.path.exists(os.path.join(root, META_FILE)):
        os.remove(os.path.join(root, META_FILE))  # first, so a half-cleared set is partial
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


def _write_split(root: str, split: str, count: int, seed: int, split_id: int) -> None:
    for sub in ("images", "masks"):
        os.makedirs(os.path.join(root, split, sub), exist_ok=True)
    for i in range(count):
        # Its own generator per image: image i does not depend on the counts asked for.
        rng = np.random.default_rng([seed, split_id, i])
        cat = i % 2 == 0  # alternating keeps the classes balanced
        name = f"{'Cat' if cat else 'dog'}_{i // 2:04d}"
        image, trimap = render(rng, cat)
        folder = os.path.join(root, split)
        Image.fromarray(image, "RGB").save(os.path.join(folder, "images", name + ".jpg"),
                                           quality=JPEG_QUALITY)
        Image.fromarray(trimap, "L").save(os.path.join(folder, "masks", name + ".png"))


def _meta(num_train: int, num_test: int, seed: int) -> dict:
    return {"version": VERSION, "num_train": int(num_train), "num_test": int(num_test),
            "seed": int(seed)}


def generate(root: str, num_train: int = DEFAULT_NUM_TRAIN,
             num_test: int = DEFAULT_NUM_TEST, seed: int = 0) -> str:
    """Writes the demo set under `root` (replacing an earlier one) and returns `root`.

    Writes `root/{train,test}/{images,masks}/` and then, last, `root/demo.json` with
    the generator version and the arguments: a set without it is incomplete.
    Raises ValueError for counts below 1, or when `root` holds files of another dataset.
    """
    for arg, value in (("num_train", num_train), ("num_test", num_test)):
        if int(value) < 1:
            raise ValueError(f"{arg} must be at least 1. Received: {value}")
    os.makedirs(root, exist_ok=True)
    _clear(root)
    _write_split(root, "train", int(num_train), int(seed), 0)
    _write_split(root, "test", int(num_test), int(seed), 1)
    with open(os.path.join(root, META_FILE), "w") as f:
        json.dump(_meta(num_train, num_test, seed), f, indent=2)
    return root


def ensure(root: str = DEFAULT_ROOT, **kwargs) -> str:
    """Returns `root` once it holds a complete demo set made with these arguments.

    `kwargs` are `generate`'s (`num_train`, `num_test`, `seed`). The set is (re)made
    when `root/demo.json` is missing, unreadable, or names another version or arguments.
    """
    wanted = _meta(kwargs.pop("num_train", DEFAULT_NUM_TRAIN),
                   kwargs.pop("num_test", DEFAULT_NUM_TEST), kwargs.pop("seed", 0))
    if kwargs:
        raise TypeError(f"ensure() got unexpected arguments: {sorted(kwargs)}")
    if made_with(root, wanted, META_FILE):
        return root
    print(f"Generating the demo dataset in {root} ({wanted['num_train']} train, "
          f"{wanted['num_test']} test images, seed {wanted['seed']})", flush=True)
    return generate(root, wanted["num_train"], wanted["num_test"], wanted["seed"])


# --------------------------------------------------------------------------- script


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Write the synthetic cats-and-dogs demo set in the Oxford-IIIT Pet "
                    "layout (ROOT/{train,test}/{images,masks}).")
    parser.add_argument("--root", default=DEFAULT_ROOT, help="output folder")
    parser.add_argument("--train", type=int, default=DEFAULT_NUM_TRAIN,
                        help="number of training images (half cats, half dogs)")
    parser.add_argument("--test", type=int, default=DEFAULT_NUM_TEST,
                        help="number of test images")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same files")
    return parser


def main(args: argparse.Namespace) -> None:
    generate(args.root, args.train, args.test, args.seed)
    print(f"Wrote {args.train} train and {args.test} test images (seed {args.seed}) "
          f"to {os.path.abspath(args.root)}")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
