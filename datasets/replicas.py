"""Splitting each global training batch among replicas, and among input pipelines.

Under `tf.distribute` every step trains on one global batch (`--batch-size`), each
replica on its own contiguous share. `tf.distribute`'s
`distribute_datasets_from_function` gives each worker (input pipeline) its own
dataset, from which its replicas take one per-replica batch each, in turn. So a
worker decodes only the examples its replicas train on: nothing is decoded twice,
and an epoch still covers every example once, in the order one device would see.

With one replica this is the plain batching of an epoch: full batches, then the
smaller last one.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def prefetched(ds: tf.data.Dataset) -> tf.data.Dataset:
    """The last step of every input pipeline here: prefetch, with tf.data's autotuner off.

    TensorFlow 2.21's autotuner runs a thread that sleeps 10 ms, 20 ms, 40 ms, ... up
    to a minute between its tuning rounds, and deleting an iterator sometimes waits for
    the current sleep to end: an iterator that ran 7 s can take 3.2 s more to delete
    (it ends 10.23 s after it was made, the sum 10 + 20 + ... + 5120 ms). Every `fit`,
    every validation pass and every test.py run deletes one, so short runs were up to
    about twice as slow in one process out of two (the "slow mode" of
    docs/speed.md). With the autotuner off, `AUTOTUNE` maps run on every core and
    prefetch keeps a small fixed buffer; bench/throughput.py's input row shows that
    decoding keeps up.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.prefetch(tf.data.AUTOTUNE).with_options(options)


class ReplicaSplit:
    """How an epoch of `num_examples` is cut into global and per-replica batches.

    Full steps give each replica `batch_size / num_replicas` examples. The epoch's
    last, smaller batch (the remainder) is shared out as evenly as possible; with
    several replicas, a remainder smaller than the number of replicas would leave one
    of them empty, so those few examples sit out that epoch (a different few each
    epoch, since the order is reshuffled).

    Args:
        num_examples: examples per epoch.
        batch_size: the global batch; a multiple of `num_replicas`.
        num_replicas: replicas training in step.
    """

    def __init__(self, num_examples: int, batch_size: int, num_replicas: int = 1):
        if num_examples <= 0 or batch_size <= 0 or num_replicas <= 0:
            raise ValueError(f"an epoch needs examples, a positive batch size and "
                             f"replicas. Received: {num_examples} examples, batch_size="
                             f"{batch_size}, {num_replicas} replicas")
        if batch_size % num_replicas:
            raise ValueError(f"--batch-size is the global batch and must be a multiple "
                             f"of the {num_replicas} replicas. Received: {batch_size}")
        self.num_examples, self.batch_size = num_examples, batch_size
        self.num_replicas = num_replicas
        self.per_replica = batch_size // num_replicas
        self.full_steps, rest = divmod(num_examples, batch_size)
        self.tail = ([rest // num_replicas + (r < rest % num_replicas)
                      for r in range(num_replicas)] if rest >= num_replicas else [])
        self.dropped = rest - sum(self.tail)

    @property
    def steps(self) -> int:
        """Steps (global batches) per epoch."""
        return self.full_steps + bool(self.tail)

    def batch_size_of(self, step: int) -> int:
        """The global batch size of the epoch's step number `step`."""
        return self.batch_size if step < self.full_steps else sum(self.tail)

    def batches(self, columns, load, skip_steps, pipeline: int = 0,
                num_pipelines: int = 1) -> tf.data.Dataset:
        """The per-replica batches of one epoch for input pipeline `pipeline`.

        Args:
            columns: tensors with one row per position of the epoch's order (example
                index, flip, ...); `load(*row)` makes the example.
            load: a tf function from a row to an example.
            skip_steps: int tensor, steps of this epoch already trained (a resume).
            pipeline, num_pipelines: this worker's input pipeline and their number
                (`tf.distribute.InputContext`); the replicas split evenly among them.

        Returns:
            A dataset of batches: for each step, one per replica of this pipeline,
            in replica order.
        """
        local = self.num_replicas // num_pipelines
        first = pipeline * local
        mine = slice(first, first + local)

        def take(positions, size):
            rows = tuple(tf.gather(c, positions) for c in columns)
            return (tf.data.Dataset.from_tensor_slices(rows)
                    .map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
                    .batch(size))

        n_full = self.full_steps * self.batch_size
        grid = np.arange(n_full, dtype=np.int32).reshape(
            self.full_steps, self.num_replicas, self.per_replica)[:, mine]
        grid = tf.constant(grid.reshape(self.full_steps, -1))
        ds = take(tf.reshape(grid[tf.cast(skip_steps, tf.int32):], [-1]), self.per_replica)
        starts = n_full + np.cumsum([0] + self.tail[:-1], dtype=np.int64)
        for start, size in list(zip(starts, self.tail))[mine]:
            ds = ds.concatenate(take(tf.range(start, start + size, dtype=tf.int32), size))
        return ds


def eval_batch_sizes(num_examples: int, batch_size: int, num_replicas: int) -> list[int]:
    """Batch sizes for evaluating `num_examples` over `num_replicas`: `batch_size`
    each, except that a last batch smaller than `num_replicas` joins the one before
    (so every replica gets at least one real example of every batch)."""
    if num_examples < num_replicas:
        raise ValueError(f"the validation set ({num_examples} images) is smaller than "
                         f"the {num_replicas} replicas; raise --val-fraction")
    sizes = [batch_size] * (num_examples // batch_size)
    rest = num_examples % batch_size
    if rest and (rest >= num_replicas or not sizes):
        sizes.append(rest)
    elif rest:
        sizes[-1] += rest
    return sizes


def eval_batches(load, num_examples: int, batch_size: int,
                 num_replicas: int) -> tf.data.Dataset:
    """Evaluation batches that split evenly over `num_replicas`.

    `tf.distribute` needs every replica's share of a batch to have the same size, so
    a batch whose size is not a multiple of the replicas is padded with blank
    examples whose labels are all `IGNORE_LABEL`: they add nothing to the metrics
    (the scores stay exact). Each replica's loss is still the mean over its own
    pixels, so a replica holding padding weighs its real pixels a little more in
    the validation loss, as Keras' mean over replicas does for any uneven split.

    Args:
        load: a tf function from an example index to `(image, label)`.
        num_examples, batch_size, num_replicas: as in `eval_batch_sizes`.
    """
    from common.labels import IGNORE_LABEL
    if batch_size % num_replicas:
        raise ValueError(f"the batch size must be a multiple of the {num_replicas} "
                         f"replicas. Received: {batch_size}")
    sizes = eval_batch_sizes(num_examples, batch_size, num_replicas)
    full = len(sizes) - (sizes[-1] != batch_size)  # these split evenly as they are

    def load_range(start, stop, size):
        return (tf.data.Dataset.range(start, stop)
                .map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
                .batch(size))
    ds = load_range(0, full * batch_size, batch_size)
    if full < len(sizes):
        last, pad = sizes[-1], -sizes[-1] % num_replicas

        def padded(images, labels):
            images = tf.pad(images, [[0, pad], [0, 0], [0, 0], [0, 0]])
            labels = tf.pad(labels, [[0, pad], [0, 0], [0, 0]],
                            constant_values=IGNORE_LABEL)
            return images, labels
        ds = ds.concatenate(load_range(full * batch_size, num_examples, last).map(padded))
    return prefetched(ds)
