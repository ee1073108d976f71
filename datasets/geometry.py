"""Fitting images and masks to the network's input size, and predictions back.

`crop_or_pad` is the article's rule (centre crop each side that is too long, centre
pad each that is too short); `fit` also scales the whole image first (`--resize
longer` or `shorter`), as every segmentation library's references do, so a small
input size sees the whole photo rather than its middle; `fit_whole` and `restore` do
the same for prediction at an image's own size (test.py, draw.py, SOLO). Masks are
never interpolated: nearest neighbour only.
"""

from __future__ import annotations

import cv2
import numpy as np

from common.labels import IGNORE_LABEL


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


# --------------------------------------------------------------------------- resize
# How an image meets the network's square input of side S (`--resize`):
#
#     none     the article's: centre crop each side longer than S, centre pad shorter
#     longer   scale so the longer side is S, pad bottom and right: the whole photo
#     shorter  scale so the shorter side is S, centre crop the longer side
#
# Images are resized by area averaging when they shrink, bilinearly when they grow;
# labels and masks by nearest neighbour with half-pixel centres. Every size and index
# is computed in integers, so `datasets.decode` (in the TensorFlow graph) gives the
# same label pixels exactly and the same image pixels within one level.

RESIZES = ("none", "longer", "shorter")


def check_resize(resize: str) -> str:
    if resize not in RESIZES:
        raise ValueError(f"resize must be one of {', '.join(RESIZES)}. "
                         f"Received: {resize!r}")
    return resize


def scaled_shape(height: int, width: int, size: int, resize: str) -> tuple[int, int]:
    """The (h, w) an image of `height` x `width` is scaled to: its longer (or shorter)
    side becomes `size`, the other in proportion, rounded half up; unchanged for
    "none"."""
    if check_resize(resize) == "none":
        return height, width
    side = max(height, width) if resize == "longer" else min(height, width)
    return (max(1, (2 * height * size + side) // (2 * side)),
            max(1, (2 * width * size + side) // (2 * side)))


def nearest_source(old: int, new: int) -> np.ndarray:
    """For each of `new` output pixels, the input pixel nearest its centre."""
    return np.minimum((2 * np.arange(new) + 1) * old // (2 * new), old - 1)


def resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """An (h, w, 3) image at `height` x `width`: area averaging down, bilinear up."""
    if image.shape[:2] == (height, width):
        return image
    shrink = height * width < image.shape[0] * image.shape[1]
    return cv2.resize(image, (width, height),
                      interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def resize_label(label: np.ndarray, height: int, width: int) -> np.ndarray:
    """A label map (..., h, w) at `height` x `width`, nearest neighbour: no new values."""
    h, w = label.shape[-2:]
    if (h, w) == (height, width):
        return label
    rows, cols = nearest_source(h, height), nearest_source(w, width)
    return label[..., rows[:, None], cols[None, :]]


def fit(image: np.ndarray, label, size: int, resize: str = "none",
        label_fill=IGNORE_LABEL):
    """An example at the network's square input `size` (see the table above).

    Returns `(image, label, padding)`: `label` ((h, w) labels or (K, h, w) masks;
    None stays None) padded with `label_fill`, and `padding`, an (S, S) bool mask,
    True where the pixel is padding.
    """
    out = as_size(size)
    if check_resize(resize) == "none":
        image, padding = crop_or_pad(image, out, 0)
        if label is not None:
            label, _ = crop_or_pad(label, out, IGNORE_LABEL)
        return image, label, padding
    h, w = scaled_shape(image.shape[0], image.shape[1], out[0], resize)
    image = resize_image(image, h, w)
    label = None if label is None else resize_label(label, h, w)
    if resize == "shorter":  # one side is S, the other at least S: a centre crop
        image, padding = crop_or_pad(image, out, 0)
        label = None if label is None else crop_or_pad(label, out, IGNORE_LABEL)[0]
        return image, label, padding
    padding = np.ones(out, bool)
    padding[:h, :w] = False
    image = np.pad(image, ((0, out[0] - h), (0, out[1] - w), (0, 0)))
    if label is not None:
        label = np.pad(label, [(0, 0)] * (label.ndim - 2) + [(0, out[0] - h),
                                                             (0, out[1] - w)],
                       constant_values=label_fill)
    return image, label, padding


def fit_whole(image: np.ndarray, size: int, resize: str, stride: int,
              square: bool = False,
              pad_mode: str = "constant") -> tuple[np.ndarray, tuple[int, int]]:
    """The whole image, scaled as `resize` says (its longer or shorter side `size`;
    `none`: as it is), padded at the bottom and right to a multiple of `stride` (to
    `size` x `size` with `square`, as the network trained on `longer`); and the
    scaled (h, w) inside it, which `restore` maps back. For prediction at an image's
    own size."""
    h, w = scaled_shape(image.shape[0], image.shape[1], size, resize)
    image = resize_image(image, h, w)
    out_h, out_w = ((size, size) if square
                    else (-(-h // stride) * stride, -(-w // stride) * stride))
    padding = ((0, out_h - h), (0, out_w - w), (0, 0))
    image = (np.pad(image, padding, mode=pad_mode) if pad_mode == "constant"
             else np.pad(image, padding, mode=pad_mode if min(h, w) > 1 else "edge"))
    return image, (h, w)


def restore(prediction: np.ndarray, scaled: tuple[int, int], height: int,
            width: int) -> np.ndarray:
    """Maps a prediction on `fit_whole`'s image back to the image's own size: the
    scaled region cut out, then resized to `height` x `width` (probabilities (h, w,
    C) float bilinearly; labels or masks (..., h, w) of an integer or bool type by
    nearest neighbour)."""
    h, w = scaled
    if np.issubdtype(prediction.dtype, np.floating):
        region = np.ascontiguousarray(prediction[:h, :w])
        if (h, w) == (height, width):
            return region
        out = cv2.resize(region, (width, height), interpolation=cv2.INTER_LINEAR)
        return out.reshape(height, width, -1)
    return resize_label(prediction[..., :h, :w], height, width)
