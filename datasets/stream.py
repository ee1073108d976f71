"""Streaming the same folder layout from disk with `tf.data`.

Each element is decoded by `datasets.data.load_example`, the very function `read_data`
uses, so a stream gives the same images and labels as `read_data` for the same files.
Only the batches in flight are in memory (plus the optional cache), so the full
7,390-image dataset trains in a few GB of RAM, where the article's float32 arrays
needed ~30 GB.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from datasets.data import DataError, as_size, load_example
from datasets.decode import file_table, graph_loader
from datasets.replicas import ReplicaSplit
from learning.labels import IGNORE_LABEL


def split_paths(paths: list[str], val_fraction: float, seed: int = 0):
    """Seeded random split into (train, validation) lists, each kept in sorted order.

    (The article took the first 10% in glob order, which is neither random nor the same
    on every machine.)
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1). Received: {val_fraction}")
    paths = sorted(paths)
    n_val = int(round(len(paths) * val_fraction))
    if val_fraction > 0 and n_val == 0 and len(paths) > 1:
        n_val = 1
    order = np.random.default_rng(seed).permutation(len(paths))
    val_idx = set(order[:n_val].tolist())
    train = [p for i, p in enumerate(paths) if i not in val_idx]
    val = [p for i, p in enumerate(paths) if i in val_idx]
    return train, val


def _loader(size, with_label: bool):
    """A numpy function (path bytes, flip) -> (image, label, padding) for tf.numpy_function."""
    def load(path, flip):
        path = os.fsdecode(path)
        try:
            ex = load_example(path, size, with_label)
        except DataError as e:
            # Becomes a tf.errors.OpError whose message starts with the file name.
            raise ValueError(str(e)) from None
        image, label, padding = ex
        if label is None:
            label = np.zeros(image.shape[:2], np.uint8)
        if flip:
            image, label, padding = image[:, ::-1], label[:, ::-1], padding[:, ::-1]
        return (np.ascontiguousarray(image), np.ascontiguousarray(label),
                np.ascontiguousarray(padding))
    return load


def make_dataset(paths: list[str], image_size, batch_size: int, *, labels: bool = True,
                 shuffle: bool = False, seed: int = 0, augment: bool = False,
                 with_padding: bool = False, cache: str | None = None,
                 drop_remainder: bool = False) -> tf.data.Dataset:
    """A batched, prefetched stream over image files (see `datasets.data.list_images`).

    Args:
        paths: image paths; masks are found as `../masks/NAME.png`.
        image_size: `(H, W)` or int; centre crop/pad as `read_data` does.
        batch_size: examples per batch.
        labels: also load masks (else the label element is all zeros).
        shuffle: permute the files with `seed` (the whole list, no buffer, so each
            seed gives one exact order; pass a new seed per epoch to reshuffle).
        seed: seed of the order and of `augment`.
        augment: random horizontal flips (same flips for a given seed).
        with_padding: add a third element, the bool padding mask.
        cache: None, "" (memory) or a file prefix: cache decoded examples. The files
            are then decoded in the given order once and reshuffled through a buffer.
        drop_remainder: drop a last, smaller batch.

    Returns:
        A `tf.data.Dataset` of `(images uint8 (n, H, W, 3), labels uint8 (n, H, W))`
        (+ `padding` bool (n, H, W) with `with_padding`).
    """
    size = as_size(image_size)
    if not paths:
        raise ValueError("make_dataset needs at least one image path")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive. Received: {batch_size}")
    rng = np.random.default_rng(seed)
    order = np.arange(len(paths))
    if shuffle and cache is None:
        order = rng.permutation(len(paths))
    flips = rng.random(len(paths)) < 0.5 if augment else np.zeros(len(paths), bool)
    load = file_loader(paths, size, labels)

    if cache is None:
        ds = tf.data.Dataset.from_tensor_slices((order, flips))
        ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    else:
        ds = tf.data.Dataset.from_tensor_slices(order)
        ds = ds.map(lambda i: load(i, False), num_parallel_calls=tf.data.AUTOTUNE,
                    deterministic=True).cache(cache)
        if shuffle:
            ds = ds.shuffle(min(len(paths), 2048), seed=seed)
        if augment:
            ds = tf.data.Dataset.zip((ds, tf.data.Dataset.from_tensor_slices(flips)))
            ds = ds.map(lambda ex, f: tuple(tf.cond(f, lambda: tf.reverse(t, [1]),
                                                    lambda: t) for t in ex))
    if not with_padding:
        ds = ds.map(lambda image, label, padding: (image, label))
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    return ds.prefetch(tf.data.AUTOTUNE)


AUGMENTS = ("none", "flip", "scale")
SCALE_RANGE = (0.5, 2.0)  # "scale": factors drawn uniformly from this range


def augment_mode(augment) -> str:
    """The training augmentation, checked: "none", "flip" (random horizontal flips) or
    "scale" (flips plus random rescaling and cropping); the old bools still work
    (True is "flip", False "none")."""
    if isinstance(augment, (bool, np.bool_)):
        return "flip" if augment else "none"
    if not isinstance(augment, str) or augment not in AUGMENTS:
        raise ValueError(f"augment must be one of {', '.join(AUGMENTS)} (or a bool). "
                         f"Received: {augment!r}")
    return augment


class EpochPlan(NamedTuple):
    """What one training epoch does to its examples, in the order it visits them."""

    order: np.ndarray   # (n,) int: a permutation of the examples
    flips: np.ndarray   # (n,) bool: flip horizontally
    scales: np.ndarray  # (n,) float32: rescaling factor (1 unless "scale")
    where: np.ndarray   # (n, 2) float32 in [0, 1): crop or pad position (rows, cols)


def epoch_order(num_examples: int, seed: int, epoch: int, augment) -> EpochPlan:
    """The `EpochPlan` of one training epoch: a permutation, and a flip, a scale and
    a crop position per example (`augment` as in `augment_mode`).

    They depend only on (seed, epoch), so a resumed run sees the batches an
    uninterrupted one would. "scale" draws its factors after the flips, so its order
    and flips are those of "flip".
    """
    mode = augment_mode(augment)
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(num_examples)
    flips = (rng.random(num_examples) < 0.5 if mode != "none"
             else np.zeros(num_examples, bool))
    scales = np.ones(num_examples, np.float32)
    where = np.full((num_examples, 2), 0.5, np.float32)
    if mode == "scale":
        scales = rng.uniform(*SCALE_RANGE, num_examples).astype(np.float32)
        where = rng.random((num_examples, 2)).astype(np.float32)
    return EpochPlan(order, flips, scales, where)


def rescale_and_crop(image, label, scale, where, size):
    """Rescales an example by `scale` and crops or pads it to `size` at `where`.

    As `tf.image.resize` (half-pixel centres) then a crop: the image bilinear, the
    label nearest-neighbour (so it holds only its own values). Only the pixels kept
    are computed, so a large image scaled up costs no more than the crop. Along each
    axis the result is cut from the scaled example, or the scaled example is placed
    in it, `floor(where * (excess + 1))` pixels from the start, where `excess` is the
    size difference: 0 is the top/left position, just under 1 the bottom/right one.
    Padding is 0 in the image, `IGNORE_LABEL` in the label, True in the padding mask.

    Args:
        image: (H, W, 3) uint8; label: (H, W) uint8 (any H, W).
        scale: float32 scalar; where: (2,) float32 in [0, 1) (rows, columns).
        size: `(height, width)` of the result.

    Returns:
        `(image, label, padding)`: (h, w, 3) uint8, (h, w) uint8, (h, w) bool.
    """
    out = tf.constant(size, tf.int32)
    old = tf.shape(label)[:2]
    new = tf.maximum(tf.cast(tf.round(tf.cast(old, tf.float32) * scale), tf.int32), 1)
    excess = tf.abs(new - out)
    shift = tf.minimum(tf.cast(tf.floor(where * tf.cast(excess + 1, tf.float32)),
                               tf.int32), excess)
    kept = tf.minimum(new, out)
    start = tf.where(new > out, shift, 0)  # first scaled pixel kept, per axis
    rows = _resize_axis(old[0], new[0], start[0], kept[0])
    cols = _resize_axis(old[1], new[1], start[1], kept[1])
    label = tf.gather(tf.gather(label, rows.nearest), cols.nearest, axis=1)
    image = tf.cast(image, tf.float32)
    image = _lerp(tf.gather(image, rows.low), tf.gather(image, rows.high),
                  rows.weight[:, None, None])
    image = _lerp(tf.gather(image, cols.low, axis=1), tf.gather(image, cols.high, axis=1),
                  cols.weight[None, :, None])
    image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
    before = tf.where(new < out, shift, 0)
    paddings = tf.stack([before, out - kept - before], axis=1)
    image = tf.pad(image, tf.concat([paddings, [[0, 0]]], 0))
    label = tf.pad(label, paddings, constant_values=IGNORE_LABEL)
    padding = tf.pad(tf.zeros(kept, tf.bool), paddings, constant_values=True)
    image.set_shape((*size, 3))
    label.set_shape(size)
    padding.set_shape(size)
    return image, label, padding


class _Taps(NamedTuple):
    nearest: tf.Tensor  # source pixel of nearest-neighbour resizing
    low: tf.Tensor      # the two source pixels of bilinear resizing ...
    high: tf.Tensor
    weight: tf.Tensor   # ... and the weight of `high`


def _resize_axis(old, new, start, count) -> _Taps:
    """Where output pixels `start .. start + count - 1` of an axis resized from `old`
    to `new` pixels read their input, with `tf.image.resize`'s half-pixel centres."""
    centres = ((tf.cast(tf.range(start, start + count), tf.float32) + 0.5)
               * (tf.cast(old, tf.float32) / tf.cast(new, tf.float32)))
    nearest = tf.minimum(tf.cast(tf.floor(centres), tf.int32), old - 1)
    low = tf.floor(centres - 0.5)
    weight = centres - 0.5 - low
    low = tf.cast(low, tf.int32)
    return _Taps(nearest, tf.clip_by_value(low, 0, old - 1),
                 tf.clip_by_value(low + 1, 0, old - 1), weight)


def _lerp(a, b, t):
    return a + (b - a) * t


def make_training_stream(source, image_size, batch_size: int, *, seed: int,
                         first_epoch: int, num_epochs: int, skip_batches: int = 0,
                         augment="flip", num_replicas: int = 1, pipeline: int = 0,
                         num_pipelines: int = 1) -> tf.data.Dataset:
    """Every remaining training batch of a run, epoch after epoch, for one `fit`.

    Epoch e's batches follow `epoch_order(n, seed, e, augment)`; each epoch ends with
    its own smaller last batch, and the first one starts after `skip_batches` batches
    (a run resumed mid-epoch). `fit` takes it with `steps_per_epoch` and keeps one
    iterator across epochs, so decoding runs on through epoch boundaries.

    Args:
        source: image paths (decoded as `make_dataset` does) or an in-memory
            `datasets.data.DataSet`.
        image_size: the crop/pad size of streamed files (ignored for a DataSet).
        batch_size, seed: as in `make_dataset`.
        first_epoch, num_epochs: the epochs to stream, `range(first_epoch, num_epochs)`.
        skip_batches: batches of `first_epoch` already trained.
        augment: "none", "flip" (random horizontal flips) or "scale" (each file is
            decoded whole, rescaled by a factor in `SCALE_RANGE`, cropped or padded to
            `image_size` at a random place (`rescale_and_crop`), then flipped; a
            DataSet's stored examples are rescaled the same way). True is "flip",
            False "none".
        num_replicas, pipeline, num_pipelines: under `tf.distribute`, the batches
            of input pipeline `pipeline` of `num_pipelines`: per-replica shares of
            each global batch of `batch_size` (`datasets.replicas.ReplicaSplit`).
    """
    from datasets.data import DataSet
    mode = augment_mode(augment)
    n = source.num_examples if isinstance(source, DataSet) else len(source)
    if n == 0 or batch_size <= 0:
        raise ValueError(f"the training stream needs examples and a positive batch size."
                         f" Received: {n} examples, batch_size={batch_size}")
    plans = [epoch_order(n, seed, e, mode) for e in range(first_epoch, num_epochs)]
    orders, flips, scales, where = (tf.constant(np.stack(column)) for column in zip(*plans))
    orders = tf.cast(orders, tf.int32)
    load = _index_loader(source, image_size, rescale=mode == "scale")

    split = ReplicaSplit(n, batch_size, num_replicas)

    def one_epoch(i):
        return split.batches((orders[i], flips[i], scales[i], where[i]), load,
                             tf.where(i == 0, skip_batches, 0), pipeline, num_pipelines)

    ds = tf.data.Dataset.range(len(plans)).flat_map(one_epoch)
    return ds.prefetch(tf.data.AUTOTUNE)


def _index_loader(source, image_size, rescale: bool):
    """A tf function (index, flip, scale, where) -> (image, label) over `source`'s
    examples; without `rescale`, scale and where are not used."""
    from datasets.data import DataSet
    if isinstance(source, DataSet):
        images, labels = tf.constant(source.images), tf.constant(source.labels)
        size = tuple(source.images.shape[1:3])

        def fetch(i):
            return tf.gather(images, i), tf.gather(labels, i)
    else:
        size = as_size(image_size)
        # "scale" rescales the whole decoded image, so it is not cropped here.
        from_file = file_loader(source, None if rescale else size, True)

        def fetch(i):
            return from_file(i, tf.constant(False))[:2]

    def load(i, flip, scale, where):
        image, label = fetch(i)
        if rescale:
            image, label, _ = rescale_and_crop(image, label, scale, where, size)
        return tf.cond(flip, lambda: (tf.reverse(image, [1]), tf.reverse(label, [1])),
                       lambda: (image, label))
    return load


def file_loader(paths, size: tuple[int, int] | None, with_label: bool = True):
    """A tf function (index into `paths`, flip) -> (image, label, padding), cropped
    or padded to `size` (None: each image whole, at its own size).

    Files that `tf.io` decodes like Pillow are decoded in the graph
    (`datasets.decode`); the others go through `datasets.data.load_example` in a
    `tf.numpy_function`. Both give the pixels `read_data` gives.
    """
    h, w = size or (None, None)
    table = {k: tf.constant(v) for k, v in file_table(paths, with_label).items()}
    in_graph = graph_loader(size, with_label)
    numpy_load = _loader(size, with_label)

    def in_python(path, flip):
        image, label, padding = tf.numpy_function(numpy_load, [path, flip],
                                                  [tf.uint8, tf.uint8, tf.bool],
                                                  stateful=False)
        image.set_shape((h, w, 3))
        label.set_shape((h, w))
        padding.set_shape((h, w))
        return image, label, padding

    def load(i, flip):
        path, mask, cat, jpeg = (table[k][i] for k in ("path", "mask", "cat", "jpeg"))
        return tf.cond(table["in_graph"][i],
                       lambda: in_graph(path, mask, cat, jpeg, flip),
                       lambda: in_python(path, flip))
    return load
