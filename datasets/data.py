"""Reading the Oxford-IIIT Pet layout into arrays, and the article's `DataSet`.

Finding and decoding the files, and the errors that name a bad one, are
`datasets.files`. Its names that the article's code reads through this module
(`from datasets import data as dataset`, then `dataset.list_images`,
`dataset.DataError`, ...) are imported here too.

Label encoding (used the same way by the loss, the metrics and the drawing): a class
id of the folder's class set (`datasets.classes`; for the pets 0 background, 1 cat,
2 dog), and IGNORE_LABEL (255) for trimap-unknown pixels, for the mask's own ignore
value and for the zero padding added around an image smaller than `image_size`.

Images are RGB `uint8`; nothing is held as float32 (the article's arrays needed ~30 GB
for the full dataset; `datasets.stream` avoids holding the set in memory at all).
"""

from __future__ import annotations

import os
from typing import Iterable, NamedTuple

import numpy as np

from common.labels import CLASS_NAMES, IGNORE_LABEL, NUM_CLASSES  # noqa: F401 (re-exported)
from common.labels import Classes
from datasets.classes import classes_of_paths, read_classes
from datasets.files import (TRIMAP_BACKGROUND, TRIMAP_PET, DataError, image_name, is_cat,
                            list_images, load_id_mask, load_image, load_trimap, mask_path,
                            settle_bad_files)
from datasets.files import DatasetError, orphan_masks  # noqa: F401 (the article's names)
from datasets.geometry import as_size, crop_or_pad, fit


class Example(NamedTuple):
    """One loaded pair: `image` (H, W, 3) uint8 RGB, `label` (H, W) uint8 or None,
    `padding` (H, W) bool, True where the pixel is padding, not image."""

    image: np.ndarray
    label: np.ndarray | None
    padding: np.ndarray


# --------------------------------------------------------------------------- pairs


def trimap_to_label(trimap: np.ndarray, cat: bool) -> np.ndarray:
    """Trimap (1 pet, 2 background, 3 unknown) -> label (0 bg, 1 cat, 2 dog, 255)."""
    label = np.full(trimap.shape, IGNORE_LABEL, dtype=np.uint8)
    label[trimap == TRIMAP_BACKGROUND] = 0
    label[trimap == TRIMAP_PET] = 1 if cat else 2
    return label


def load_label(path: str, classes: Classes) -> np.ndarray:
    """The label (H, W) of image `path`, from its mask as `classes` encode it: class
    ids, and IGNORE_LABEL for the trimap's unknown border or the mask's ignore value."""
    mpath = mask_path(path)
    if classes.encoding == "oxford_trimap":
        return trimap_to_label(load_trimap(mpath), is_cat(image_name(path)))
    label = load_id_mask(mpath, classes.num_classes, classes.ignore_label)
    label[label == classes.ignore_label] = IGNORE_LABEL
    return label


def load_example(path: str, image_size=None, with_label: bool = True,
                 classes: Classes | None = None, resize: str = "none") -> Example:
    """Loads one image (and its mask) and fits both to `image_size` (None: as is) as
    `resize` says (`datasets.geometry.fit`: "none" crops or pads, as the article).
    `classes`: how the masks encode classes (None: the folder's, `read_classes`)."""
    image = load_image(path)
    label = None
    if with_label:
        label = load_label(path, classes or classes_of_paths([path]))
        if label.shape != image.shape[:2]:
            raise DataError(mask_path(path), f"mask is {label.shape[1]}x{label.shape[0]} "
                            f"but its image is {image.shape[1]}x{image.shape[0]} "
                            "(width x height)")
    size = as_size(image_size)
    if size is None:
        return Example(image, label, np.zeros(image.shape[:2], dtype=bool))
    return Example(*fit(image, label, size[0], resize))


def check_files(paths: Iterable[str], with_label: bool = True, progress: bool = False,
                classes: Classes | None = None) -> tuple[list[str], list[DataError]]:
    """Decodes every pair once; returns (good paths, problems). Reads, never writes.
    A mask value that is no class of `classes` (None: the folder's) is a problem.

    Two images with one name (`Dup_1.jpg` and `Dup_1.png`) would share one mask, so
    both are problems: which image the mask belongs to cannot be known.
    """
    paths = list(paths)
    classes = classes or classes_of_paths(paths)
    shared = same_name_images(paths) if with_label else {}
    good, problems = [], [DataError(p, f"has the same name as {shared[p]}, so both "
                                       f"would pair with one mask; rename one")
                          for p in paths if p in shared]
    paths = [p for p in paths if p not in shared]
    if progress:
        from tqdm import tqdm
        paths = tqdm(paths, desc="checking files", unit="img", leave=False)
    for path in paths:
        try:
            load_example(path, None, with_label, classes)
        except DataError as e:
            problems.append(e)
        else:
            good.append(path)
            if with_label:
                _CHECKED[path] = (_stamp(path), classes)
    return good, problems


def same_name_images(paths: list[str]) -> dict[str, str]:
    """{path: the other file(s)} of images whose names differ only in extension."""
    by_name: dict[str, list[str]] = {}
    for path in paths:
        by_name.setdefault(image_name(path), []).append(path)
    return {p: ", ".join(os.path.basename(o) for o in group if o != p)
            for group in by_name.values() if len(group) > 1 for p in group}


# Pairs `check_files` found good, with their files' (size, mtime) then and the class
# set they were checked against: a stream may decode these without validating them
# again (`datasets.decode`).
_CHECKED: dict[str, tuple] = {}


def _stamp(path: str) -> tuple:
    stats = [os.stat(p) for p in (path, mask_path(path))]
    return tuple((st.st_size, st.st_mtime_ns) for st in stats)


def was_checked(path: str, classes: Classes | None = None) -> bool:
    """True when `check_files` found this pair good against `classes` (None: the
    folder's) and neither file changed since."""
    try:
        return _CHECKED.get(path) == (_stamp(path), classes or classes_of_paths([path]))
    except OSError:
        return False


# --------------------------------------------------------------------------- read_data


def read_data(data_dir: str, image_size, no_label: bool = False, skip_bad: bool = False,
              return_meta: bool = False, progress: bool = True,
              classes: Classes | None = None, resize: str = "none"):
    """Loads a whole dataset folder into memory, as the article's `read_data` did.

    Args:
        data_dir: folder with `images/` (and `masks/` unless `no_label`).
        image_size: `(H, W)` or an int; each pair is centre-cropped or padded to it
            (the article's way), or first scaled as `resize` says ("longer",
            "shorter": `datasets.geometry.fit`).
        no_label: read images only; `labels` is then None.
        skip_bad: log and leave out unusable files instead of raising `DatasetError`.
        return_meta: also return a dict with `names` and `paths` (the order used) and
            `padding` (N, H, W) bool, True on padded pixels.
        progress: show a progress bar.
        classes: how the masks encode classes (None: `data_dir`'s `classes.json`,
            else the pets' trimaps); `meta["classes"]` gives the one used.

    Returns:
        `(images, labels)`: (N, H, W, 3) uint8 RGB and (N, H, W) uint8 labels
        (class ids, 255 ignore), or `(images, labels, meta)`.
    """
    size = as_size(image_size)
    if size is None:
        raise ValueError("read_data needs an image_size to stack images of "
                         "different sizes. Received: None")
    paths = list_images(data_dir)
    classes = classes or read_classes(data_dir)
    shared = same_name_images(paths) if not no_label else {}
    if progress:
        from tqdm import tqdm
        paths = tqdm(paths, desc=f"reading {data_dir}", unit="img", leave=False)
    images, labels, pads, used, problems = [], [], [], [], []
    for path in paths:
        try:
            if path in shared:
                raise DataError(path, f"has the same name as {shared[path]}, so both "
                                      f"would pair with one mask; rename one")
            ex = load_example(path, size, not no_label, classes, resize)
        except DataError as e:
            problems.append(e)
            continue
        images.append(ex.image)
        labels.append(ex.label)
        pads.append(ex.padding)
        used.append(path)
    settle_bad_files(data_dir, problems, len(problems) + len(used), skip_bad)
    if not used:
        raise DataError(data_dir, "no usable image left")
    images = np.stack(images)
    labels = None if no_label else np.stack(labels)
    if not return_meta:
        return images, labels
    meta = {"names": [image_name(p) for p in used], "paths": used,
            "padding": np.stack(pads), "classes": classes}
    return images, labels, meta


# --------------------------------------------------------------------------- DataSet


class DataSet:
    """In-memory images (and labels) served in minibatches, as in the article.

    `next_batch` walks the examples epoch by epoch: it shuffles before the first epoch
    and at each epoch end, and a batch that crosses the end of an epoch is the rest of
    this epoch followed by the start of the next. `epochs_completed` counts the ends.

    Args:
        images: (N, H, W, 3) uint8.
        labels: (N, H, W) uint8, or None for unlabelled data.
        names: optional N names (e.g. `meta["names"]` from `read_data`).
        seed: seed of the shuffling generator.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray | None = None,
                 names: list[str] | None = None, seed: int | None = None):
        if labels is not None and len(labels) != len(images):
            raise ValueError(f"images and labels differ in number: {len(images)} vs "
                             f"{len(labels)}")
        if names is not None and len(names) != len(images):
            raise ValueError(f"images and names differ in number: {len(images)} vs "
                             f"{len(names)}")
        self._images = images
        self._labels = labels
        self.names = names
        self._rng = np.random.default_rng(seed)
        self._indices = np.arange(len(images))
        self._epochs_completed = 0
        self._index_in_epoch = 0

    @property
    def images(self) -> np.ndarray:
        return self._images

    @property
    def labels(self) -> np.ndarray | None:
        return self._labels

    @property
    def num_examples(self) -> int:
        return len(self._images)

    @property
    def epochs_completed(self) -> int:
        return self._epochs_completed

    def _take(self, idx):
        labels = None if self._labels is None else self._labels[idx]
        return self._images[idx], labels

    def sample_batch(self, batch_size: int, shuffle: bool = True):
        """`batch_size` examples drawn at random (or the first ones), epoch untouched."""
        batch_size = min(batch_size, self.num_examples)
        idx = (self._rng.choice(self.num_examples, batch_size, replace=False)
               if shuffle else np.arange(batch_size))
        return self._take(idx)

    def next_batch(self, batch_size: int, shuffle: bool = True):
        """The next `batch_size` examples: `(images, labels)`; labels None if unlabelled."""
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive. Received: {batch_size}")
        if shuffle and self._epochs_completed == 0 and self._index_in_epoch == 0:
            self._rng.shuffle(self._indices)
        parts = []
        while batch_size > 0:
            start = self._index_in_epoch
            end = min(start + batch_size, self.num_examples)
            parts.append(self._indices[start:end])
            batch_size -= end - start
            self._index_in_epoch = end
            if end == self.num_examples:
                self._epochs_completed += 1
                self._index_in_epoch = 0
                if shuffle:
                    self._rng.shuffle(self._indices)
        return self._take(np.concatenate(parts))
