"""Finding and decoding the files of a dataset folder, and the errors that name a bad one.

A dataset folder holds `images/NAME.{jpg,jpeg,png}` beside `masks/NAME.png`. For the
pets a mask is an Oxford trimap: 1 = pet, 2 = background, 3 = unknown border, and the
breed in NAME tells the class: a name that starts upper-case is a cat, otherwise a
dog. A folder with a `classes.json` (`datasets.classes`) may instead hold masks of
class ids, one per pixel.

A file that cannot be used raises a `DataError` that names it and says what is wrong,
so one bad file among thousands is found and fixed before training rather than
crashing it. Turning a pair into a label, and checking a whole folder with it
(`check_files`), is `datasets.data`.
"""

from __future__ import annotations

import json
import logging
import os

import numpy as np
from PIL import Image, UnidentifiedImageError

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


# --------------------------------------------------------------------------- files


def made_with(root: str, wanted: dict, meta_file: str = "demo.json") -> bool:
    """Whether the generated set in `root` is complete and was made with `wanted`:
    its `meta_file` (written last by a generator) holds exactly that."""
    try:
        with open(os.path.join(root, meta_file)) as f:
            return json.load(f) == wanted
    except (OSError, ValueError):
        return False


def image_name(path: str) -> str:
    """The file name without folder and extension: the key that pairs image and mask."""
    return os.path.splitext(os.path.basename(path))[0]


def is_cat(name: str) -> bool:
    """Oxford's convention: cat breeds are capitalised (`Bombay_1`), dogs are not.

    A name that does not start with a Latin letter (`猫_3`, `-dash_5`) cannot follow
    it; it counts as a dog, as before, with a warning once per name."""
    first = name[:1]
    if not ("A" <= first <= "Z" or "a" <= first <= "z") and name not in _WARNED:
        _WARNED.add(name)
        log.warning("%s: the name does not start with a Latin letter, so it is taken "
                    "for a dog (cats' names start upper-case, dogs' lower-case)", name)
    return first.isupper()


_WARNED: set[str] = set()  # names `is_cat` warned about


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


def _one_channel_mask(path: str, kind: str) -> np.ndarray:
    """Reads a mask into (H, W) int64; a colour image is refused unless its channels
    are equal (a grey image saved as RGB)."""
    if not os.path.exists(path):
        raise DataError(path, "mask is missing (every image needs masks/NAME.png)")
    arr = np.asarray(_open(path))
    if arr.ndim == 3:
        if not (arr[..., :3] == arr[..., :1]).all():
            raise DataError(path, f"mask is a colour image; expected a one-channel {kind}")
        arr = arr[..., 0]
    return arr.astype(np.int64)


def _shown(values: np.ndarray) -> str:
    return ", ".join(str(v) for v in values[:8]) + (", ..." if values.size > 8 else "")


def load_trimap(path: str) -> np.ndarray:
    """Reads an Oxford trimap into (H, W) uint8 and checks its values are 1, 2 or 3."""
    arr = _one_channel_mask(path, "trimap")
    bad = np.setdiff1d(np.unique(arr), [TRIMAP_PET, TRIMAP_BACKGROUND, TRIMAP_UNKNOWN])
    if bad.size:
        raise DataError(path, f"mask has values {{{_shown(bad)}}}; a trimap holds only "
                        "1 (pet), 2 (background), 3 (unknown)")
    return arr.astype(np.uint8)


def load_id_mask(path: str, num_classes: int, ignore_label: int) -> np.ndarray:
    """Reads a mask of class ids (a one-channel PNG: greyscale, or a palette image
    whose indices are the ids) into (H, W) uint8; every value must be a class id
    (0 to `num_classes` - 1) or `ignore_label`, so a mask made for another class
    list is named here, before training, and never trains as a wrong class."""
    arr = _one_channel_mask(path, "mask of class ids")
    values = np.unique(arr)
    bad = values[((values < 0) | (values >= num_classes)) & (values != ignore_label)]
    if bad.size:
        raise DataError(path, f"mask has values {{{_shown(bad)}}} that are no class: "
                        f"classes.json lists {num_classes} classes (ids 0-"
                        f"{num_classes - 1}) and ignores {ignore_label}; fix the mask "
                        "or add the missing classes to classes.json")
    return arr.astype(np.uint8)


# --------------------------------------------------------------------------- bad files


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
