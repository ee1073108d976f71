"""Reading the Oxford-IIIT Pet layout into arrays, and the article's `DataSet`.

A dataset folder holds `images/NAME.{jpg,jpeg,png}` beside `masks/NAME.png`, where a
mask is an Oxford trimap: 1 = pet, 2 = background, 3 = unknown border. The breed in
NAME tells the class: a name that starts upper-case is a cat, otherwise a dog.

Label encoding (used the same way by the loss, the metrics and the drawing):

    0 background, 1 cat, 2 dog, IGNORE_LABEL (255) for trimap-unknown pixels and for
    the zero padding added around an image smaller than `image_size`.

Images are RGB `uint8`; nothing is held as float32 (the article's arrays needed ~30 GB
for the full dataset; `datasets.stream` avoids holding the set in memory at all).
"""

from __future__ import annotations

import logging
import os
from typing import Iterable, NamedTuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from learning.labels import CLASS_NAMES, IGNORE_LABEL, NUM_CLASSES  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")

# Oxford trimap values.
TRIMAP_PET, TRIMAP_BACKGROUND, TRIMAP_UNKNOWN = 1, 2, 3

# Images with more pixels are refused from their header, before any decoding: a
# 50-megapixel RGB image takes 150 MB decoded, and the loaders run in parallel. The
# real release's largest image is far smaller. Raise it with SEG_MAX_IMAGE_PIXELS.
MAX_IMAGE_PIXELS = int(os.environ.get("SEG_MAX_IMAGE_PIXELS", 50_000_000))


class DataError(ValueError):
    """One file of a dataset folder cannot be used. The message names the file."""

    def __init__(self, path: str, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class DatasetError(ValueError):
    """A dataset folder has unusable files; `problems` lists every one of them."""

    def __init__(self, data_dir: str, problems: list[DataError]):
        lines = [f"{len(problems)} bad file(s) in {data_dir}:"]
        lines += [f"  {p}" for p in problems]
        lines.append("Fix or remove them, or pass --skip-bad to leave them out.")
        super().__init__("\n".join(lines))
        self.data_dir = data_dir
        self.problems = problems


class Example(NamedTuple):
    """One loaded pair: `image` (H, W, 3) uint8 RGB, `label` (H, W) uint8 or None,
    `padding` (H, W) bool, True where the pixel is padding, not image."""

    image: np.ndarray
    label: np.ndarray | None
    padding: np.ndarray


# --------------------------------------------------------------------------- files


def image_name(path: str) -> str:
    """The file name without folder and extension: the key that pairs image and mask."""
    return os.path.splitext(os.path.basename(path))[0]


def is_cat(name: str) -> bool:
    """Oxford's convention: cat breeds are capitalised (`Bombay_1`), dogs are not."""
    return name[:1].isupper()


def list_image_files(folder: str) -> list[str]:
    """Sorted paths of the `.jpg`, `.jpeg` and `.png` files of `folder` (extension
    case ignored); raises `DataError` when the folder is missing or holds none."""
    if not os.path.isdir(folder):
        raise DataError(folder, "no such folder")
    paths = [os.path.join(folder, f) for f in os.listdir(folder)
             if os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS]
    if not paths:
        raise DataError(folder, "holds no .jpg, .jpeg or .png image")
    return sorted(paths)


def list_images(data_dir: str) -> list[str]:
    """Sorted paths of `data_dir/images/*.{jpg,jpeg,png}`.

    Sorting makes the order, and so every seeded split and shuffle, the same on every
    machine (the article used glob order, which is not).
    """
    images_dir = os.path.join(data_dir, "images")
    if not os.path.isdir(images_dir):
        raise DataError(images_dir, "no such folder; a dataset folder needs images/ "
                        "(and masks/ for labelled data)")
    return list_image_files(images_dir)


def mask_path(image_path: str) -> str:
    """`ROOT/images/NAME.ext` -> `ROOT/masks/NAME.png`."""
    root = os.path.dirname(os.path.dirname(image_path))
    return os.path.join(root, "masks", image_name(image_path) + ".png")


def orphan_masks(data_dir: str) -> list[str]:
    """Masks that no image in `data_dir/images` pairs with (they are never read)."""
    masks_dir = os.path.join(data_dir, "masks")
    if not os.path.isdir(masks_dir):
        return []
    try:
        names = {image_name(p) for p in list_images(data_dir)}
    except DataError:
        names = set()
    return sorted(os.path.join(masks_dir, f) for f in os.listdir(masks_dir)
                  if f.lower().endswith(".png") and image_name(f) not in names)


# --------------------------------------------------------------------------- decoding


def _open(path: str) -> Image.Image:
    """Opens and decodes an image file, or raises `DataError` saying what is wrong."""
    try:
        nbytes = os.path.getsize(path)
    except OSError as e:
        raise DataError(path, f"cannot be read ({e.strerror or e})") from None
    if nbytes == 0:
        raise DataError(path, "file is empty (0 bytes)")
    try:
        with open(path, "rb") as f:
            im = Image.open(f)  # reads the header only
            w, h = im.size
            if w * h > MAX_IMAGE_PIXELS:  # refuse before decoding a single pixel
                raise DataError(path, f"image is {w}x{h} ({w * h / 1e6:.1f} megapixels), "
                                f"over the {MAX_IMAGE_PIXELS / 1e6:g}-megapixel limit; "
                                "downscale it, or raise SEG_MAX_IMAGE_PIXELS")
            im.load()  # decodes now, so a truncated file fails here and not later
    except DataError:
        raise
    except UnidentifiedImageError:
        raise DataError(path, "not an image (the content is no format Pillow reads: "
                        "JPEG, PNG, GIF, ...)") from None
    except Image.DecompressionBombError as e:
        raise DataError(path, f"image is too large to decode safely ({e})") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(path, f"not a readable image ({e})") from None
    return im


def load_image(path: str) -> np.ndarray:
    """Decodes any image the real release ships into (H, W, 3) uint8 RGB.

    The content decides, not the extension: the release has GIFs and PNGs named `.jpg`,
    greyscale, RGBA, palette and CMYK JPEGs; 16-bit images are scaled to 8 bits.
    Raises `DataError` naming the file when it is empty, truncated or not an image.
    """
    im = _open(path)
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float64)
        arr = np.clip(np.round(arr / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=-1)
    if im.mode == "F":
        raise DataError(path, "floating-point image; expected 8- or 16-bit")
    return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def load_trimap(path: str) -> np.ndarray:
    """Reads an Oxford trimap into (H, W) uint8 and checks its values are 1, 2 or 3."""
    if not os.path.exists(path):
        raise DataError(path, "mask is missing (every image needs masks/NAME.png)")
    im = _open(path)
    arr = np.asarray(im)
    if arr.ndim == 3:
        if not (arr[..., :3] == arr[..., :1]).all():
            raise DataError(path, "mask is a colour image; expected a one-channel trimap")
        arr = arr[..., 0]
    arr = arr.astype(np.int64)
    bad = np.setdiff1d(np.unique(arr), [TRIMAP_PET, TRIMAP_BACKGROUND, TRIMAP_UNKNOWN])
    if bad.size:
        shown = ", ".join(str(v) for v in bad[:8]) + (", ..." if bad.size > 8 else "")
        raise DataError(path, f"mask has values {{{shown}}}; a trimap holds only "
                        "1 (pet), 2 (background), 3 (unknown)")
    return arr.astype(np.uint8)


def trimap_to_label(trimap: np.ndarray, cat: bool) -> np.ndarray:
    """Trimap (1 pet, 2 background, 3 unknown) -> label (0 bg, 1 cat, 2 dog, 255)."""
    label = np.full(trimap.shape, IGNORE_LABEL, dtype=np.uint8)
    label[trimap == TRIMAP_BACKGROUND] = 0
    label[trimap == TRIMAP_PET] = 1 if cat else 2
    return label


# --------------------------------------------------------------------------- geometry


def as_size(image_size) -> tuple[int, int] | None:
    """`512` or `(512, 512)` -> `(512, 512)`; None stays None (keep each image's size)."""
    if image_size is None:
        return None
    if isinstance(image_size, (int, np.integer)):
        image_size = (image_size, image_size)
    h, w = (int(s) for s in image_size)
    if h <= 0 or w <= 0:
        raise ValueError(f"image_size must be positive. Received: {image_size}")
    return h, w


def crop_or_pad(arr: np.ndarray, size: tuple[int, int], fill) -> tuple[np.ndarray, np.ndarray]:
    """Centre-crops each side longer than `size` and centre-pads each shorter one.

    Returns the array and a bool (H, W) mask that is True on padding. A side of odd
    excess loses (or gains) the extra row/column at the end, as the article's
    crop (which first dropped a row/column to make the sides even) did.
    """
    out_h, out_w = size
    h, w = arr.shape[:2]
    if h > out_h:
        top = (h - out_h) // 2
        arr, h = arr[top:top + out_h], out_h
    if w > out_w:
        left = (w - out_w) // 2
        arr, w = arr[:, left:left + out_w], out_w
    padding = np.zeros((out_h, out_w), dtype=bool)
    if (h, w) == (out_h, out_w):
        return np.ascontiguousarray(arr), padding
    out = np.full((out_h, out_w) + arr.shape[2:], fill, dtype=arr.dtype)
    y0, x0 = (out_h - h) // 2, (out_w - w) // 2
    out[y0:y0 + h, x0:x0 + w] = arr
    padding[:] = True
    padding[y0:y0 + h, x0:x0 + w] = False
    return out, padding


def load_example(path: str, image_size=None, with_label: bool = True) -> Example:
    """Loads one image (and its mask) and fits both to `image_size` (None: as is)."""
    image = load_image(path)
    label = None
    if with_label:
        mpath = mask_path(path)
        trimap = load_trimap(mpath)
        if trimap.shape != image.shape[:2]:
            raise DataError(mpath, f"mask is {trimap.shape[1]}x{trimap.shape[0]} but its "
                            f"image is {image.shape[1]}x{image.shape[0]} (width x height)")
        label = trimap_to_label(trimap, is_cat(image_name(path)))
    size = as_size(image_size)
    if size is None:
        return Example(image, label, np.zeros(image.shape[:2], dtype=bool))
    image, padding = crop_or_pad(image, size, 0)
    if label is not None:
        label, _ = crop_or_pad(label, size, IGNORE_LABEL)
    return Example(image, label, padding)


def check_files(paths: Iterable[str], with_label: bool = True,
                progress: bool = False) -> tuple[list[str], list[DataError]]:
    """Decodes every pair once; returns (good paths, problems). Reads, never writes."""
    good, problems = [], []
    paths = list(paths)
    if progress:
        from tqdm import tqdm
        paths = tqdm(paths, desc="checking files", unit="img", leave=False)
    for path in paths:
        try:
            load_example(path, None, with_label)
        except DataError as e:
            problems.append(e)
        else:
            good.append(path)
            if with_label:
                _CHECKED[path] = _stamp(path)
    return good, problems


# Pairs `check_files` found good, with their files' (size, mtime) then: a stream may
# decode these without validating them again (`datasets.decode`).
_CHECKED: dict[str, tuple] = {}


def _stamp(path: str) -> tuple:
    stats = [os.stat(p) for p in (path, mask_path(path))]
    return tuple((st.st_size, st.st_mtime_ns) for st in stats)


def was_checked(path: str) -> bool:
    """True when `check_files` found this pair good and neither file changed since."""
    try:
        return _CHECKED.get(path) == _stamp(path)
    except OSError:
        return False


def settle_bad_files(data_dir: str, problems: list[DataError], total: int,
                     skip_bad: bool) -> None:
    """Raises `DatasetError` listing every bad file, or with `skip_bad` logs each one
    and how many of `total` were left out."""
    if not problems:
        return
    if not skip_bad:
        raise DatasetError(data_dir, problems)
    for p in problems:
        log.warning("skipped %s", p)
    log.warning("skipped %d bad file(s) of %d in %s", len(problems), total, data_dir)


# --------------------------------------------------------------------------- read_data


def read_data(data_dir: str, image_size, no_label: bool = False, skip_bad: bool = False,
              return_meta: bool = False, progress: bool = True):
    """Loads a whole dataset folder into memory, as the article's `read_data` did.

    Args:
        data_dir: folder with `images/` (and `masks/` unless `no_label`).
        image_size: `(H, W)` or an int; each pair is centre-cropped or padded to it.
        no_label: read images only; `labels` is then None.
        skip_bad: log and leave out unusable files instead of raising `DatasetError`.
        return_meta: also return a dict with `names` and `paths` (the order used) and
            `padding` (N, H, W) bool, True on padded pixels.
        progress: show a progress bar.

    Returns:
        `(images, labels)`: (N, H, W, 3) uint8 RGB and (N, H, W) uint8 labels
        (0 background, 1 cat, 2 dog, 255 ignore), or `(images, labels, meta)`.
    """
    size = as_size(image_size)
    if size is None:
        raise ValueError("read_data needs an image_size to stack images of "
                         "different sizes. Received: None")
    paths = list_images(data_dir)
    if progress:
        from tqdm import tqdm
        paths = tqdm(paths, desc=f"reading {data_dir}", unit="img", leave=False)
    images, labels, pads, used, problems = [], [], [], [], []
    for path in paths:
        try:
            ex = load_example(path, size, with_label=not no_label)
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
            "padding": np.stack(pads)}
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
