"""The stream an instance model (SOLO) trains on: batches of `(images, {"masks",
"classes"})` from the records of an instance folder (`datasets.instances`).

Each image is scaled so its longer side is S and zero-padded at the bottom-right
(`datasets.geometry.fit`, `resize="longer"`: no object is cut), its masks with it
(nearest-neighbour). Epoch e visits the images in the order and with the flips of
`datasets.augment.epoch_order(n, seed, e)`, the semantic stream's rule, so a resumed
run sees the batches an uninterrupted one would.

    >>> records = read_annotations("data/demo_instances/train")
    >>> stream = training_stream(records, 64, 8, seed=0, first_epoch=0, num_epochs=30)
    >>> images, targets = next(iter(stream))   # (8, 64, 64, 3) uint8, masks (8, K, 64, 64)
"""

from __future__ import annotations

import numpy as np

from datasets.augment import epoch_order
from datasets.files import DataError
from datasets.geometry import as_size, fit
from datasets.instances import load_record
from datasets.replicas import ReplicaSplit, prefetched


def training_stream(records: list[dict], image_size, batch_size: int, *, seed: int,
                    first_epoch: int, num_epochs: int, skip_batches: int = 0,
                    augment: str = "flip", max_instances: int = 8, num_replicas: int = 1,
                    pipeline: int = 0, num_pipelines: int = 1):
    """Every remaining epoch's batches in one `tf.data` stream, for one `fit`.

    Args:
        records: `datasets.instances.read_annotations` of a folder.
        image_size: S (or `(H, W)`), the side each image is fitted to.
        batch_size: images per batch (an epoch's last batch may be smaller).
        seed, first_epoch, num_epochs: epochs `range(first_epoch, num_epochs)`, each
            ordered and flipped by `epoch_order(len(records), seed, epoch, augment)`.
        skip_batches: batches of `first_epoch` already trained (a resumed run).
        augment: "none" or "flip" (random horizontal flips).
        max_instances: K, the instance slots per image; an image with more raises
            `DataError` when the stream is made, naming it.
        num_replicas, pipeline, num_pipelines: under `tf.distribute`, the batches of
            input pipeline `pipeline`: per-replica shares of each global batch
            (`datasets.replicas.ReplicaSplit`, as the semantic stream).

    Returns:
        Batches `(images uint8 (B, S, S, 3), {"masks": uint8 (B, K, S, S) 0/1,
        "classes": int32 (B, K)})`: classes 0 cat, 1 dog, -1 an empty slot (its mask
        all zero); instances fill the first slots in annotation order. An instance that
        vanishes when an image is scaled down becomes an empty slot.
    """
    import tensorflow as tf

    if augment not in ("none", "flip"):
        raise ValueError(f"SOLO trains with --augment none or flip. Received: {augment!r}")
    if batch_size <= 0 or max_instances <= 0:
        raise ValueError(f"batch_size and max_instances must be positive. Received: "
                         f"{batch_size}, {max_instances}")
    if not records:
        raise ValueError("the instance training stream needs at least one image")
    for record in records:
        if len(record["classes"]) > max_instances:
            raise DataError(record["path"], f"has {len(record['classes'])} instances, more "
                            f"than max_instances={max_instances}; raise max_instances")
    size = as_size(image_size)
    load_example = example_loader(records, size, max_instances)
    plans = [epoch_order(len(records), seed, e, augment)
             for e in range(first_epoch, num_epochs)]
    orders = tf.constant(np.stack([p.order for p in plans]).astype(np.int32))
    flips = tf.constant(np.stack([p.flips for p in plans]).astype(bool))
    split = ReplicaSplit(len(records), batch_size, num_replicas)

    def load(i, flip):
        image, masks, classes = tf.numpy_function(
            load_example, [i, flip], [tf.uint8, tf.uint8, tf.int32], stateful=False)
        image.set_shape(size + (3,))
        masks.set_shape((max_instances,) + size)
        classes.set_shape((max_instances,))
        return image, {"masks": masks, "classes": classes}

    def one_epoch(e):
        return split.batches((orders[e], flips[e]), load,
                             tf.where(e == 0, skip_batches, 0), pipeline, num_pipelines)

    ds = tf.data.Dataset.range(len(plans)).flat_map(one_epoch)
    return prefetched(ds)


def example_loader(records: list[dict], size: tuple[int, int], max_instances: int):
    """A numpy function (index, flip) -> (image, masks (K, H, W) uint8, classes (K,))."""
    def load(i, flip):
        try:
            image, masks, classes = load_record(records[int(i)])
        except DataError as e:
            raise ValueError(str(e)) from None  # a tf OpError naming the file
        image, masks, _ = fit(image, masks, size[0], "longer", label_fill=0)
        present = masks.reshape(len(masks), -1).any(axis=1)  # tiny ones may vanish
        masks, classes = masks[present], classes[present]
        if flip:
            image, masks = image[:, ::-1], masks[:, :, ::-1]
        out_masks = np.zeros((max_instances,) + size, np.uint8)
        out_masks[:len(masks)] = masks
        out_classes = np.full(max_instances, -1, np.int32)
        out_classes[:len(classes)] = classes
        return np.ascontiguousarray(image), out_masks, out_classes
    return load

