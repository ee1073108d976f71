"""Fitting images and masks to the network's input size, and back.

`crop_or_pad` is the article's rule (centre crop each side that is too long, centre
pad each that is too short); `fit_to_size` scales the whole image into the square
first (SOLO's, so no object is cut), and `restore_masks` maps a prediction on it back
to the image's own size. Masks are never interpolated: nearest-neighbour only.
"""

from __future__ import annotations

import cv2
import numpy as np


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
