"""Streaming the same folder layout from disk with `tf.data`.

Each element is decoded by `datasets.data.load_example`, the very function `read_data`
uses, so a stream gives the same images and labels as `read_data` for the same files.
Only the batches in flight are in memory (plus the optional cache), so the full
7,390-image dataset trains in a few GB of RAM, where the article's float32 arrays
needed ~30 GB.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from common.labels import Classes
from datasets.augment import augment_mode, epoch_order, rescale_and_crop
from datasets.classes import classes_of_paths
from datasets.data import load_example
from datasets.decode import file_table, graph_loader
from datasets.files import DataError
from datasets.geometry import as_size
from datasets.replicas import ReplicaSplit, eval_batches, prefetched


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


def _loader(size, with_label: bool, classes: Classes, resize: str = "none"):
    """A numpy function (path bytes, flip) -> (image, label, padding) for tf.numpy_function."""
    def load(path, flip):
        path = os.fsdecode(path)
        try:
            ex = load_example(path, size, with_label, classes, resize)
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
                 drop_remainder: bool = False, classes: Classes | None = None,
                 resize: str = "none") -> tf.data.Dataset:
    """A batched, prefetched stream over image files (see `datasets.files.list_images`).

    Args:
        paths: image paths; masks are found as `../masks/NAME.png`.
        image_size: `(H, W)` or int: each image fitted to it as `resize` says
            (`datasets.geometry.fit`; "none": the article's centre crop/pad).
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
        classes: how the masks encode classes (None: the `classes.json` of the
            files' folder, else the pets' trimaps).
        resize: "none", "longer" or "shorter" (see `image_size`).

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
    load = file_loader(paths, size, labels, classes, resize)

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
    return prefetched(ds)


def make_training_stream(source, image_size, batch_size: int, *, seed: int,
                         first_epoch: int, num_epochs: int, skip_batches: int = 0,
                         augment="flip", num_replicas: int = 1, pipeline: int = 0,
                         num_pipelines: int = 1, resize: str = "none") -> tf.data.Dataset:
    """Every remaining training batch of a run, epoch after epoch, for one `fit`.

    Epoch e's batches follow `epoch_order(n, seed, e, augment)`; each epoch ends with
    its own smaller last batch, and the first one starts after `skip_batches` batches
    (a run resumed mid-epoch). `fit` takes it with `steps_per_epoch` and keeps one
    iterator across epochs, so decoding runs on through epoch boundaries.

    Args:
        source: image paths (decoded as `make_dataset` does) or an in-memory
            `datasets.data.DataSet`.
        image_size: the size streamed files are fitted to (ignored for a DataSet).
        batch_size, seed: as in `make_dataset`.
        first_epoch, num_epochs: the epochs to stream, `range(first_epoch, num_epochs)`.
        skip_batches: batches of `first_epoch` already trained.
        augment: "none", "flip" (random horizontal flips) or "scale" (each file is
            decoded whole, rescaled by a factor in `SCALE_RANGE`, cropped or padded to
            `image_size` at a random place (`rescale_and_crop`), then flipped; a
            DataSet's stored examples are rescaled the same way). True is "flip",
            False "none".
        resize: how a file meets `image_size` (`datasets.geometry.fit`); under
            "scale" the random factor multiplies the one `resize` gives.
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
    load = _index_loader(source, image_size, rescale=mode == "scale", resize=resize)

    split = ReplicaSplit(n, batch_size, num_replicas)

    def one_epoch(i):
        return split.batches((orders[i], flips[i], scales[i], where[i]), load,
                             tf.where(i == 0, skip_batches, 0), pipeline, num_pipelines)

    ds = tf.data.Dataset.range(len(plans)).flat_map(one_epoch)
    return prefetched(ds)


def replica_validation_batches(source, image_size, batch_size: int,
                               num_replicas: int, resize: str = "none") -> tf.data.Dataset:
    """Validation batches of `source` (paths or a `DataSet`) that split evenly over
    `num_replicas` (padded with ignored pixels: `datasets.replicas.eval_batches`)."""
    from datasets.data import DataSet
    load = _index_loader(source, image_size, rescale=False, resize=resize)
    n = source.num_examples if isinstance(source, DataSet) else len(source)
    return eval_batches(lambda i: load(i, tf.constant(False), tf.constant(1.0),
                                       tf.constant([0.5, 0.5])), n, batch_size,
                        num_replicas)


def _index_loader(source, image_size, rescale: bool, resize: str = "none"):
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
        from_file = file_loader(source, None if rescale else size, True,
                                resize=resize)

        def fetch(i):
            return from_file(i, tf.constant(False))[:2]

    def load(i, flip, scale, where):
        image, label = fetch(i)
        if rescale:
            if resize != "none":  # the factor that fits the photo, then the random one
                h, w = tf.shape(label)[0], tf.shape(label)[1]
                ref = tf.maximum(h, w) if resize == "longer" else tf.minimum(h, w)
                scale = scale * size[0] / tf.cast(ref, tf.float32)
            image, label, _ = rescale_and_crop(image, label, scale, where, size)
        return tf.cond(flip, lambda: (tf.reverse(image, [1]), tf.reverse(label, [1])),
                       lambda: (image, label))
    return load


def file_loader(paths, size: tuple[int, int] | None, with_label: bool = True,
                classes: Classes | None = None, resize: str = "none"):
    """A tf function (index into `paths`, flip) -> (image, label, padding), fitted
    to `size` as `resize` says (None: each image whole, at its own size); `classes`
    None: the class set of the files' folder (`datasets.classes`).

    Files that `tf.io` decodes like Pillow are decoded in the graph
    (`datasets.decode`); the others go through `datasets.data.load_example` in a
    `tf.numpy_function`. Both give the pixels `read_data` gives.
    """
    h, w = size or (None, None)
    classes = classes or classes_of_paths(paths)
    table = {k: tf.constant(v) for k, v in file_table(paths, with_label, classes).items()}
    in_graph = graph_loader(size, with_label, classes, resize)
    numpy_load = _loader(size, with_label, classes, resize)

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
