"""Decoding inside the `tf.data` graph (`tf.io`), for the files TensorFlow decodes to
the same pixels as `datasets.data.load_example`.

The Pillow loader runs as a Python function (`tf.numpy_function`): one Python call per
file, under the interpreter lock, so it cannot use more than about one core. `tf.io`
decodes in TensorFlow's own threads. It is used for 8-bit RGB or greyscale JPEGs and
PNGs paired with an 8-bit greyscale PNG mask (a trimap, or class ids: all the real
release's usable files but a handful), once `check_files` has found the pair good;
every other file (GIF or PNG content under `.jpg`, CMYK, palette, 16-bit, RGBA, ...)
keeps the Pillow loader. `tests/test_data.py` checks on the real sample, and
`tests/test_classes.py` on masks of class ids, that both give the same pixels.

The scripts check every file once, before training (`datasets.data.check_files`), so
those decoded in the graph are not validated again each epoch.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from PIL import Image

from common.labels import IGNORE_LABEL, PETS, Classes
from datasets.classes import classes_of_paths
from datasets.data import was_checked
from datasets.files import TRIMAP_BACKGROUND, TRIMAP_PET, image_name, is_cat, mask_path

_IMAGE_KINDS = {("JPEG", "RGB"), ("JPEG", "L"), ("PNG", "RGB"), ("PNG", "L")}


def decodable_in_graph(path: str, with_label: bool = True,
                       classes: Classes | None = None) -> bool:
    """True for a pair `check_files` found good against `classes` (it is not checked
    again) whose image and mask `tf.io` decodes like Pillow does; reads the headers
    only."""
    if not (with_label and was_checked(path, classes)):
        return False  # the Pillow loader checks it and names what is wrong
    try:
        with Image.open(path) as im:
            if (im.format, im.mode) not in _IMAGE_KINDS:
                return False
        with Image.open(mask_path(path)) as mask:
            return (mask.format, mask.mode) == ("PNG", "L")
    except (OSError, ValueError):
        return False  # the Pillow loader will say what is wrong


def _label_table(cat: tf.Tensor, classes: Classes) -> tf.Tensor:
    """Mask value (0-255) -> label, for one image. Class ids stay themselves and the
    mask's ignore value becomes IGNORE_LABEL (`check_files` has refused any other
    value before a file is decoded here); a trimap's 1 -> cat or dog, 2 -> 0, 3 -> 255."""
    table = np.full(256, IGNORE_LABEL, np.int32)
    if classes.encoding == "ids":
        table[:classes.num_classes] = np.arange(classes.num_classes)
        return tf.constant(table)
    table[TRIMAP_BACKGROUND] = 0
    table = tf.constant(table)
    pet = tf.where(cat, 1, 2)
    return tf.tensor_scatter_nd_update(table, [[TRIMAP_PET]], [pet])


def _crop_or_pad(x, size, fill):
    """`datasets.data.crop_or_pad` in the graph: centre crop, then centre pad with
    `fill`; also returns the padding mask."""
    out_h, out_w = size
    h, w = tf.shape(x)[0], tf.shape(x)[1]
    top, left = tf.maximum(h - out_h, 0) // 2, tf.maximum(w - out_w, 0) // 2
    x = x[top:top + out_h, left:left + out_w]
    h, w = tf.minimum(h, out_h), tf.minimum(w, out_w)
    y0, x0 = (out_h - h) // 2, (out_w - w) // 2
    paddings = [[y0, out_h - h - y0], [x0, out_w - w - x0]]
    padded = tf.pad(x, paddings + [[0, 0]] * (len(x.shape) - 2), constant_values=fill)
    padding = tf.pad(tf.zeros((h, w), tf.bool), paddings, constant_values=True)
    return padded, padding


def _scaled(image, label, side: int, resize: str):
    """`datasets.geometry.scaled_shape`, `resize_image` and `resize_label` in the
    graph, in the same integers (area averaging when shrinking, bilinear when
    growing: within one level of OpenCV's; labels exactly)."""
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    ref = tf.maximum(h, w) if resize == "longer" else tf.minimum(h, w)
    new_h = tf.maximum(1, (2 * h * side + ref) // (2 * ref))
    new_w = tf.maximum(1, (2 * w * side + ref) // (2 * ref))
    image = tf.cond(new_h * new_w < h * w,
                    lambda: tf.image.resize(image, (new_h, new_w), method="area"),
                    lambda: tf.image.resize(image, (new_h, new_w), method="bilinear"))
    image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
    rows = tf.minimum((2 * tf.range(new_h) + 1) * h // (2 * new_h), h - 1)
    cols = tf.minimum((2 * tf.range(new_w) + 1) * w // (2 * new_w), w - 1)
    label = tf.gather(tf.gather(label, rows), cols, axis=1)
    return image, label


def _fit(image, label, size, resize: str):
    """`datasets.geometry.fit` in the graph: (image, label, padding) at `size`."""
    if resize == "none":
        image, padding = _crop_or_pad(image, size, 0)
        return image, _crop_or_pad(label, size, IGNORE_LABEL)[0], padding
    image, label = _scaled(image, label, size[0], resize)
    if resize == "shorter":
        image, padding = _crop_or_pad(image, size, 0)
        return image, _crop_or_pad(label, size, IGNORE_LABEL)[0], padding
    h, w = tf.shape(label)[0], tf.shape(label)[1]
    paddings = [[0, size[0] - h], [0, size[1] - w]]
    return (tf.pad(image, paddings + [[0, 0]]),
            tf.pad(label, paddings, constant_values=IGNORE_LABEL),
            tf.pad(tf.zeros((h, w), tf.bool), paddings, constant_values=True))


def graph_loader(size, with_label: bool = True, classes: Classes | None = None,
                 resize: str = "none"):
    """A tf function (path, mask path, is cat, is JPEG, flip) -> (image, label,
    padding), like the Pillow loader of `datasets.stream`, for the files
    `decodable_in_graph` takes; `size` None keeps each image whole, else it is
    fitted as `resize` says (`datasets.geometry.fit`). `classes`: how the masks
    encode classes (None: the pets' trimaps)."""
    classes = classes or PETS
    shape = size or (None, None)

    def load(path, mask, cat, jpeg, flip):
        data = tf.io.read_file(path)
        # The accurate integer IDCT is libjpeg's default, so Pillow's; TensorFlow's
        # default (and decode_image) takes the fast one, off by a few levels.
        image = tf.cond(jpeg, lambda: tf.io.decode_jpeg(data, channels=3,
                                                        dct_method="INTEGER_ACCURATE"),
                        lambda: tf.io.decode_png(data, channels=3))
        if with_label:
            values = tf.io.decode_png(tf.io.read_file(mask), channels=1)[..., 0]
            label = tf.gather(_label_table(cat, classes), tf.cast(values, tf.int32))
            label = tf.cast(label, tf.uint8)
        else:
            label = tf.zeros(tf.shape(image)[:2], tf.uint8)
        if size is None:
            padding = tf.zeros(tf.shape(label), tf.bool)
        else:
            image, label, padding = _fit(image, label, size, resize)
        image, label, padding = tf.cond(
            flip, lambda: (image[:, ::-1], label[:, ::-1], padding[:, ::-1]),
            lambda: (image, label, padding))
        image.set_shape((*shape, 3))
        label.set_shape(shape)
        padding.set_shape(shape)
        return image, label, padding
    return load


def file_table(paths, with_label: bool = True, classes: Classes | None = None) -> dict:
    """Per-file inputs of `graph_loader` and the route: `{"path", "mask", "cat",
    "jpeg", "in_graph"}`, each a numpy array over `paths` (`classes` None: their
    folder's)."""
    paths = [str(p) for p in paths]
    classes = classes or classes_of_paths(paths)
    in_graph = [decodable_in_graph(p, with_label, classes) for p in paths]
    return {"path": np.asarray(paths),
            "jpeg": np.asarray([ok and _format(p) == "JPEG" for ok, p in
                                zip(in_graph, paths)], bool),
            "mask": np.asarray([mask_path(p) if with_label else "" for p in paths]),
            "cat": np.asarray([is_cat(image_name(p)) for p in paths], bool),
            "in_graph": np.asarray(in_graph, bool)}


def _format(path: str) -> str:
    with Image.open(path) as im:
        return im.format
