"""What the speed benchmark times, each as it runs in the project: the training step
(`fit`), prediction (`predict_on_batch`), evaluation (test.py's path) and the input
stream; and how many FLOPs a network's forward pass costs.

Each timer returns `(images, seconds)` of the timed part, after a warm-up that traces.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from datasets.replicas import prefetched
from datasets.stream import make_dataset
from learning.utils import evaluate
from model_table import conv_macs
from models import ARCHITECTURES

SAMPLE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "shared", "data", "oxford_pet_sample")


# --------------------------------------------------------------------------- models

def build_net(name: str, size: int):
    """`name` with random weights, built as train.py builds it for `size` (GCN's k)."""
    return ARCHITECTURES[name](weights=None, input_size=size)


def profiled_flops(model: keras.Model, size: int) -> int:
    """Float operations the TF profiler counts in the forward graph of one image."""
    fn = tf.function(lambda x: model(x, training=False))
    spec = tf.TensorSpec((1, size, size, 3), model.input.dtype)
    graph = fn.get_concrete_function(spec).graph
    builder = tf.compat.v1.profiler.ProfileOptionBuilder
    options = builder(builder.float_operation()).with_empty_output().build()
    level = tf.get_logger().level
    tf.get_logger().setLevel(logging.ERROR)  # the TF1 profiler warns it is deprecated
    try:
        return tf.compat.v1.profiler.profile(graph, options=options).total_float_ops
    finally:
        tf.get_logger().setLevel(level)


def forward_flops(net, size: int) -> dict:
    """Forward FLOPs of one size x size image: the TF profiler's count, with the
    analytic count of the convolutions (`bench/model_table.py`) as a cross-check and
    stand-in where the profiler fails."""
    try:
        fixed = keras.models.clone_model(  # fixed size: every layer's shape is known
            net, input_tensors=keras.Input((size, size, 3), dtype=net.input.dtype))
        analytic = 2 * conv_macs(fixed)
    except Exception as e:  # noqa: BLE001 -- a model clone_model cannot rebuild
        print(f"  no analytic count ({type(e).__name__})", file=sys.stderr)
        analytic = None
    try:
        profiled = profiled_flops(net, size) or None  # 0: nothing counted
    except Exception as e:  # noqa: BLE001 -- a TF1 API: fall back, keep the run
        print(f"  profiler failed ({e!r}); using the analytic count", file=sys.stderr)
        profiled = None
    if not (profiled or analytic):
        raise RuntimeError(f"no FLOP count for {net.name}")
    return {"forward_gflops_per_image": (profiled or analytic) / 1e9,
            "flops_source": "profiler" if profiled else "analytic",
            "profiler_gflops": profiled / 1e9 if profiled else None,
            "analytic_gflops": analytic / 1e9 if analytic else None}


# --------------------------------------------------------------------------- timings
# Each returns (images, seconds) of the timed part, after a warm-up that traces.
# The model timers share one signature; `paths` are the JPEGs (used by evaluate).

def random_batch(size: int, batch_size: int):
    """Random uint8 images and labels in {0, 1, 2}, ~5% ignored (255)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch_size, size, size, 3), dtype=np.uint8)
    labels = rng.integers(0, 3, (batch_size, size, size), dtype=np.uint8)
    labels[rng.random(labels.shape) < 0.05] = 255
    return images, labels


def time_train(net, paths, size, batch_size, steps):
    """`fit` on one random batch repeated in memory: the network alone, no decoding;
    the stream ends as train.py's do (`prefetched`: without it, deleting fit's
    iterator could wait seconds on tf.data's autotuner, a "slow mode")."""
    data = prefetched(tf.data.Dataset.from_tensors(random_batch(size, batch_size)).repeat())
    # shuffle=False: a tf.data input cannot be shuffled by fit, which would warn
    net.fit(data, epochs=1, steps_per_epoch=1, verbose=0, shuffle=False)
    start = time.perf_counter()
    net.fit(data, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False)
    return steps * batch_size, time.perf_counter() - start


def time_predict(net, paths, size, batch_size, steps):
    """Keras' standard `predict_on_batch` (logits to numpy) on one random batch."""
    images, _ = random_batch(size, batch_size)
    net.predict_on_batch(images)
    start = time.perf_counter()
    for _ in range(steps):
        net.predict_on_batch(images)
    return steps * batch_size, time.perf_counter() - start


def time_evaluate(net, paths, size, batch_size, steps):
    """test.py's path: decode JPEGs, predict, fold into the confusion matrix.

    Steady state, as the other rows: timed from the end of the first batch to the end
    of the last, so the stream's start (building the tf.data pipeline, the first
    decodes) is left out, as tracing is left out of predict; `steps + 1` batches run.
    """
    evaluate(net, make_dataset(paths[:batch_size], size, batch_size, with_padding=True))
    num = (steps + 1) * batch_size  # whole batches only: a smaller one would retrace
    ends = []
    evaluate(net, make_dataset(repeat(paths, num), size, batch_size, with_padding=True),
             on_batch=lambda *batch: ends.append(time.perf_counter()))
    return steps * batch_size, ends[-1] - ends[0]


MODEL_TIMERS = {"train": (time_train, "model.fit, compiled as train.py"),
                "predict": (time_predict, "model.predict_on_batch"),
                "evaluate": (time_evaluate, "learning.utils.evaluate, as test.py")}


def time_input(paths, size, batch_size, num_images):
    """The training stream alone (decode, crop/pad, flip, batch), as train.py's."""
    next(iter(make_dataset(paths[:batch_size], size, batch_size)))  # traces the map
    start, seen = time.perf_counter(), 0
    for images, _ in make_dataset(repeat(paths, num_images), size, batch_size,
                                  shuffle=True, augment=True):
        seen += int(images.shape[0])
    return seen, time.perf_counter() - start


def repeat(paths: list[str], n: int) -> list[str]:
    """The first `n` of `paths` repeated."""
    return (paths * math.ceil(n / len(paths)))[:n]


def image_paths(tmp: str) -> tuple[list[str], str]:
    """Real-size photos of the Oxford sample, or a synthetic demo set if it is absent,
    and a line that says which."""
    from datasets.check import usable_images as good_paths
    if os.path.isdir(os.path.join(SAMPLE_DIR, "images")):
        good, bad = good_paths(SAMPLE_DIR, skip_bad=True)
        return good, f"Oxford sample, {len(good)} photos ({len(bad)} unusable skipped)"
    from datasets import demo
    root = demo.generate(tmp, num_train=1, num_test=48)
    good, _ = good_paths(os.path.join(root, "test"), skip_bad=True)
    return good, "synthetic demo set, small JPEGs (Oxford sample not found)"
