"""Benchmark: how fast each network trains, predicts and evaluates on this machine, and
how close that comes to the practical limit, numpy's float32 matrix multiply.

    sgemm     numpy 2048x2048 float32 matmul, best call over ~2 s (2 n^3 / seconds),
              timed at the start and again after each model and size; the best of
              these is the peak every row is compared with (shared machines slow
              down for minutes at a time, and a slow moment must not flatter a row)
    input     `make_dataset` (shuffle, flips) decoding the real-size JPEGs of the
              shared Oxford sample; once per size, as it does not depend on the model
    train     `model.fit`, compiled as train.py does, on an in-memory random batch
    predict   `model.predict_on_batch` (Keras' standard path) on a random batch
    evaluate  `learning.utils.evaluate` over the sample's JPEGs, as test.py runs it

Each is timed after a warm-up that traces it. GFLOP/s = forward FLOPs per image x
images/s, x3 for train (the backward pass costs about two forwards). Forward FLOPs are
the TensorFlow profiler's count on the traced forward graph at batch 1, cross-checked
against `bench/model_table.py`'s analytic count of the convolutions, which stands in
if the profiler fails (each row's `flops_source` says which). Peak memory is the
process' max RSS: a running peak, the most used so far in the run.

    python bench/throughput.py --models gcn deeplabv3plus --sizes 256 512 \\
        --batch-size 8 --steps 10 --json throughput.json
"""

from __future__ import annotations

import argparse
import gc
import inspect
import json
import logging
import math
import os
import resource
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCH_DIR)
sys.path.insert(0, REPO_ROOT)
sys.path.insert(0, BENCH_DIR)  # model_table's analytic FLOP count

import learning  # noqa: E402,F401 (TensorFlow CPU settings, as the scripts)
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from datasets.stream import make_dataset  # noqa: E402
from learning.evaluators import IoUEvaluator  # noqa: E402
from learning.optimizers import MomentumOptimizer  # noqa: E402
from learning.utils import evaluate  # noqa: E402
from model_table import conv_macs  # noqa: E402
from models import ARCHITECTURES  # noqa: E402

SEMANTIC = [m for m in ARCHITECTURES if m != "solo"]  # SOLO: instances, not pixels

SAMPLE_DIR = os.path.join(os.path.dirname(REPO_ROOT), "shared", "data",
                          "oxford_pet_sample")
MODES = ("input", "train", "predict", "evaluate")
TRAIN_FLOPS_FACTOR = 3  # forward + gradients of activations + gradients of weights


# --------------------------------------------------------------------------- machine

def machine_info() -> dict:
    """CPU model, cores this process may use, and library versions."""
    with open("/proc/cpuinfo") as f:
        names = [line.split(":", 1)[1].strip() for line in f
                 if line.startswith("model name")]
    return {"cpu": names[0] if names else "unknown CPU",
            "cpu_cores": len(os.sched_getaffinity(0)), "tensorflow": tf.__version__,
            "keras": keras.__version__, "numpy": np.__version__,
            "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS")}


def sgemm_gflops(n: int = 2048, seconds: float = 2.0) -> float:
    """numpy's float32 matmul rate: the best single n x n product over `seconds`.

    The best call, not the mean: on shared cores the least disturbed call is the
    closest to what the hardware can do.
    """
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    a @ b  # warm-up: BLAS threads started, memory touched
    best, start = math.inf, time.perf_counter()
    while time.perf_counter() - start < seconds:
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


def peak_rss_mb() -> float:
    """The process' peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --------------------------------------------------------------------------- models

def build_net(name: str, size: int):
    """`name` with random weights, sized as train.py builds it for `size` (gcn's k)."""
    cls = ARCHITECTURES[name]
    accepted = inspect.signature(cls.__init__).parameters
    options = {"input_size": size} if "input_size" in accepted else {}
    return cls(weights=None, **options)


def profiled_flops(model: keras.Model, size: int) -> int:
    """Float operations the TF profiler counts in the forward graph of one image."""
    fn = tf.function(lambda x: model(x, training=False))
    graph = fn.get_concrete_function(tf.TensorSpec((1, size, size, 3), tf.uint8)).graph
    builder = tf.compat.v1.profiler.ProfileOptionBuilder
    options = builder(builder.float_operation()).with_empty_output().build()
    level = tf.get_logger().level
    tf.get_logger().setLevel(logging.ERROR)  # the TF1 profiler warns it is deprecated
    try:
        return tf.compat.v1.profiler.profile(graph, options=options).total_float_ops
    finally:
        tf.get_logger().setLevel(level)


def forward_flops(net, size: int) -> dict:
    """Forward FLOPs of one size x size image, from the profiler if it works."""
    fixed = keras.models.clone_model(  # fixed size: every layer's shape is known
        net.model, input_tensors=keras.Input((size, size, 3), dtype="uint8"))
    analytic = 2 * conv_macs(fixed)
    try:
        profiled = profiled_flops(net.model, size) or None  # 0: nothing counted
    except Exception as e:  # a TF1 API: fall back rather than lose the run
        print(f"  profiler failed ({e!r}); using the analytic count", file=sys.stderr)
        profiled = None
    return {"forward_gflops_per_image": (profiled or analytic) / 1e9,
            "flops_source": "profiler" if profiled else "analytic",
            "profiler_gflops": profiled / 1e9 if profiled else None,
            "analytic_gflops": analytic / 1e9}


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
    """`fit` on one random batch repeated in memory: the network alone, no decoding."""
    data = tf.data.Dataset.from_tensors(random_batch(size, batch_size)).repeat()
    # shuffle=False: a tf.data input cannot be shuffled by fit, which would warn
    net.model.fit(data, epochs=1, steps_per_epoch=1, verbose=0, shuffle=False)
    start = time.perf_counter()
    net.model.fit(data, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False)
    return steps * batch_size, time.perf_counter() - start


def time_predict(net, paths, size, batch_size, steps):
    """Keras' standard `predict_on_batch` (logits to numpy) on one random batch."""
    images, _ = random_batch(size, batch_size)
    net.model.predict_on_batch(images)
    start = time.perf_counter()
    for _ in range(steps):
        net.model.predict_on_batch(images)
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
    from learning.cli import good_paths
    if os.path.isdir(os.path.join(SAMPLE_DIR, "images")):
        good, bad = good_paths(SAMPLE_DIR, skip_bad=True)
        return good, f"Oxford sample, {len(good)} photos ({len(bad)} unusable skipped)"
    from datasets import demo
    root = demo.generate(tmp, num_train=1, num_test=48)
    good, _ = good_paths(os.path.join(root, "test"), skip_bad=True)
    return good, "synthetic demo set, small JPEGs (Oxford sample not found)"


# --------------------------------------------------------------------------- rows

def make_row(model, size, mode, images, seconds, flops, args, machine, **extra):
    """One measurement; the GFLOP/s fields stay None where no model runs (input)."""
    ips = images / seconds
    row = {"model": model, "size": size, "mode": mode, "batch_size": args.batch_size,
           "images": images, "seconds": round(seconds, 3), "images_per_second": ips,
           "gflops_per_second": None, "fraction_of_matmul_peak": None,
           "peak_rss_mb": round(peak_rss_mb(), 1), **extra, **(flops or {}), **machine}
    if flops is not None:  # the fraction of the peak is set when the run is over
        factor = TRAIN_FLOPS_FACTOR if mode == "train" else 1
        row["gflops_per_second"] = factor * flops["forward_gflops_per_image"] * ips
    print(f"  {model or '-'} {size} {mode}: {ips:.2f} images/s "
          f"({images} in {seconds:.1f} s)", file=sys.stderr, flush=True)
    return row


def measure_model(name, size, args, machine, paths, data) -> list[dict]:
    """train / predict / evaluate rows of one network at one size."""
    print(f"{name} {size}x{size}: building", file=sys.stderr, flush=True)
    net = build_net(name, size)
    jit = {"auto": "auto", "on": True, "off": False}[args.jit]
    MomentumOptimizer(net, [], IoUEvaluator(), batch_size=args.batch_size, image_size=size,
                      jit_compile=jit)._compile()  # train.py's optimizer, loss, metrics
    flops = forward_flops(net, size)
    rows = []
    for mode in (m for m in MODEL_TIMERS if m in args.modes):
        timer, method = MODEL_TIMERS[mode]
        images, seconds = timer(net, paths, size, args.batch_size, args.steps)
        method += f"; {data}" if mode == "evaluate" else ""
        rows.append(make_row(name, size, mode, images, seconds, flops, args, machine,
                             method=method, jit_compile=net.model.jit_compile,
                             precision=args.precision))
    return rows


def measure_all(args, machine, paths, data) -> list[dict]:
    """The input rows of every size, then each model's rows at each size."""
    rows = []
    for size in args.sizes if "input" in args.modes else []:
        images, seconds = time_input(paths, size, args.batch_size, args.input_images)
        rows.append(make_row(None, size, "input", images, seconds, None, args, machine,
                             method=f"datasets.stream.make_dataset; {data}"))
    for name in args.models if set(args.modes) - {"input"} else []:
        for size in args.sizes:
            rows += measure_model(name, size, args, machine, paths, data)
            keras.backend.clear_session()  # free this network before the next
            gc.collect()
            machine["sgemm_runs"].append(sgemm_gflops())
    peak = machine["sgemm_gflops_per_second"] = max(machine["sgemm_runs"])
    for row in rows:
        row["sgemm_gflops_per_second"] = peak
        if row["gflops_per_second"] is not None:
            row["fraction_of_matmul_peak"] = row["gflops_per_second"] / peak
    return rows


def print_table(rows: list[dict], machine: dict) -> None:
    """A Markdown table the README can take as it is, and the FLOPs cross-check."""
    print(f"Machine: {machine['cpu']}, {machine['cpu_cores']} cores; TensorFlow "
          f"{machine['tensorflow']}, Keras {machine['keras']}, numpy "
          f"{machine['numpy']}.\n\nPractical limit, numpy float32 matmul 2048x2048: "
          f"**{machine['sgemm_gflops_per_second']:.1f} GFLOP/s** (best of "
          f"{len(machine['sgemm_runs'])} timings over the run: "
          f"{', '.join(f'{g:.0f}' for g in machine['sgemm_runs'])}). Models run with "
          f"precision {rows[-1].get('precision', 'float32')}, XLA "
          f"{rows[-1].get('jit_compile', '-')}, TF_ENABLE_ONEDNN_OPTS="
          f"{machine['onednn']}.\n")
    print("| model | size | mode | batch | images/s | GFLOP/s | of matmul peak "
          "| peak RSS (MB) |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        gps, frac = r["gflops_per_second"], r["fraction_of_matmul_peak"]
        print(f"| {r['model'] or '(any)'} | {r['size']} | {r['mode']} "
              f"| {r['batch_size']} | {r['images_per_second']:.2f} "
              f"| {'-' if gps is None else f'{gps:.1f}'} "
              f"| {'-' if frac is None else f'{frac:.1%}'} | {r['peak_rss_mb']:.0f} |")
    print("\nTrain counts 3x the forward FLOPs; input is JPEG decoding alone; peak RSS "
          "is the running peak of the whole run. Forward GFLOPs per image (batch 1), "
          "TF profiler (difference) / analytic conv count of bench/model_table.py:\n")
    flops = {(r["model"], r["size"]): r for r in rows if r.get("flops_source")}
    for (model, size), r in flops.items():
        prof, conv = r["profiler_gflops"], r["analytic_gflops"]
        check = "failed" if prof is None else f"{prof:.3f} ({prof / conv - 1:+.1%})"
        print(f"- {model} @{size}: {check} / {conv:.3f}; used: {r['flops_source']}")


# --------------------------------------------------------------------------- main

def check_args(args) -> None:
    """Fails before any measurement on arguments that could not all run."""
    unknown = [m for m in args.models if m not in SEMANTIC]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; choose from {sorted(SEMANTIC)}")
    for name, value in (("--batch-size", args.batch_size), ("--steps", args.steps),
                        ("--input-images", args.input_images)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1. Received: {value}")
    if any(s < 1 for s in args.sizes):
        raise ValueError(f"--sizes must be positive. Received: {args.sizes}")
    if args.json and not os.path.isdir(os.path.dirname(os.path.abspath(args.json))):
        raise ValueError(f"--json: no such folder for {args.json}")
    for name in args.models if set(args.modes) - {"input"} else []:
        stride = build_net(name, min(args.sizes)).output_stride  # some set it per net
        keras.backend.clear_session()
        bad = [s for s in args.sizes if s % stride]
        if bad:
            raise ValueError(f"{name} needs sizes that are multiples of {stride}. "
                             f"Received: {bad}")


def main(argv=None) -> list[dict]:
    parser = get_args_parser()
    args = parser.parse_args(argv)
    try:
        check_args(args)
    except ValueError as e:
        parser.error(str(e))
    machine = machine_info()
    print("sgemm: timing numpy float32 matmul", file=sys.stderr, flush=True)
    machine["sgemm_runs"] = [sgemm_gflops()]
    keras.mixed_precision.set_global_policy(args.precision)
    with tempfile.TemporaryDirectory() as tmp:  # only the demo fallback writes here
        paths, data = image_paths(tmp)
        rows = measure_all(args, machine, paths, data)
    keras.mixed_precision.set_global_policy("float32")
    print_table(rows, machine)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return rows


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=SEMANTIC,
                   help=f"networks to measure (default: all, {SEMANTIC})")
    p.add_argument("--sizes", nargs="+", type=int, default=[256, 512],
                   help="square image sides")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=10,
                   help="timed batches per train / predict / evaluate measurement")
    p.add_argument("--input-images", type=int, default=256,
                   help="images the input pipeline decodes per size")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--json", help="also write the rows to this file, as a JSON list")
    p.add_argument("--precision", default="float32",
                   choices=["float32", "mixed_float16", "mixed_bfloat16"],
                   help="Keras mixed-precision policy, as train.py --precision")
    p.add_argument("--jit", default="auto", choices=["auto", "on", "off"],
                   help="XLA compilation of the training step, as train.py --jit")
    return p


if __name__ == "__main__":
    main()
