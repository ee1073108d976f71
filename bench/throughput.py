"""Benchmark: how fast each network trains, predicts and evaluates on this machine, as a
share of the machine's real matrix-multiply peak in the same precision.

    peak      float32: the best of numpy's sgemm (with the BLAS kernel it picks
              itself) and `tf.matmul`; bfloat16: `tf.matmul` in bfloat16, on CPUs with
              AVX512_BF16 or AMX (`bench/peak.py`). Timed at the start and after each
              model and size; the best timing is the peak of every row.
    input     `make_dataset` (shuffle, flips) decoding the real-size JPEGs of the
              shared Oxford sample; once per size, as it does not depend on the model
    train     `model.fit`, compiled as train.py does, on an in-memory random batch, in
              `--repeats` fresh processes: a process can land in a slower mode, so
              the row gives the median and the spread (min, max) of the repeats
    predict   `model.predict_on_batch` (Keras' standard path) on a random batch
    evaluate  test.py's path (`learning.utils.evaluate`) over the sample's JPEGs

GFLOP/s = forward FLOPs per image x images/s, x3 for train (the backward pass costs
about two forwards), from `bench/timing.py`'s count. A mixed_bfloat16 row's share is
of the bfloat16 peak, a float32 row's of the float32 one. With keras-hub installed,
`--peer` adds its DeepLabV3+ (ResNet-50 v2 encoder, random weights) in the same run.

    python bench/throughput.py --models gcn deeplabv3plus --sizes 256 --repeats 5 \\
        --precisions float32 mixed_bfloat16 --json runs/throughput.json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCH_DIR)
sys.path.insert(0, REPO_ROOT)
sys.path.insert(0, BENCH_DIR)  # peak, timing, model_table, peer

import common  # noqa: E402,F401 (the project's TensorFlow settings, before it loads)
import keras  # noqa: E402

from learning.evaluators import IoUEvaluator  # noqa: E402
from learning.optimizers import MomentumOptimizer  # noqa: E402
from models import ARCHITECTURES  # noqa: E402
from peak import best_of, has_fast_bfloat16, machine_info, measure_peaks  # noqa: E402
from timing import (MODEL_TIMERS, build_net, forward_flops, image_paths,  # noqa: E402
                    time_input, time_train)

SEMANTIC = [m for m in ARCHITECTURES if ARCHITECTURES[m].task == "semantic"]
MODES = ("input", "train", "predict", "evaluate")
TRAIN_FLOPS_FACTOR = 3  # forward + gradients of activations + gradients of weights
PEER = "keras_hub_deeplabv3plus"


def peak_rss_mb() -> float:
    """The process' peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def compiled_net(name: str, size: int, jit: str):
    """`name` at `size`, compiled with train.py's optimizer, loss and metrics."""
    if name == PEER:
        from peer import keras_hub_deeplab
        return keras_hub_deeplab(jit)
    net = build_net(name, size)
    MomentumOptimizer(net, [], IoUEvaluator(), jit_compile=jit).compile()
    return net


# --------------------------------------------------------------------------- rows

def make_row(model, size, mode, images, seconds, flops, args, precision, **extra):
    """One measurement; the GFLOP/s fields stay None where no model runs (input)."""
    ips = images / seconds
    row = {"model": model, "size": size, "mode": mode, "batch_size": args.batch_size,
           "precision": precision, "images": images, "seconds": round(seconds, 3),
           "images_per_second": ips, "gflops_per_second": None,
           "fraction_of_peak": None, "peak_rss_mb": round(peak_rss_mb(), 1), **extra,
           **(flops or {})}
    if flops is not None:  # the share of the peak is set when the run is over
        factor = TRAIN_FLOPS_FACTOR if mode == "train" else 1
        row["gflops_per_second"] = factor * flops["forward_gflops_per_image"] * ips
    spread = "" if "runs" not in extra else (
        f" (runs {', '.join(f'{r:.2f}' for r in extra['runs'])})")
    print(f"  {model or '-'} {size} {precision} {mode}: {ips:.2f} images/s{spread}",
          file=sys.stderr, flush=True)
    return row


def train_in_fresh_processes(name, size, precision, args) -> list[float]:
    """Images/s of `--repeats` training timings, each in a new Python process."""
    rates = []
    for _ in range(args.repeats):
        argv = [sys.executable, __file__, "--train-once", name, str(size), precision,
                "--batch-size", str(args.batch_size), "--steps", str(args.steps),
                "--jit", args.jit]
        out = subprocess.run(argv, capture_output=True, text=True, cwd=REPO_ROOT)
        if out.returncode:
            raise RuntimeError(f"{' '.join(argv[1:])} failed:\n{out.stderr[-2000:]}")
        rates.append(json.loads(out.stdout.strip().splitlines()[-1])["images_per_second"])
    return rates


def train_once(name, size, precision, args) -> None:
    """The child of `train_in_fresh_processes`: one timing, printed as JSON."""
    keras.mixed_precision.set_global_policy(precision)
    net = compiled_net(name, size, args.jit)
    images, seconds = time_train(net, None, size, args.batch_size, args.steps)
    print(json.dumps({"images_per_second": images / seconds}))


def measure_model(name, size, precision, args, paths, data) -> list[dict]:
    """train / predict / evaluate rows of one network at one size and precision."""
    print(f"{name} {size}x{size} {precision}: building", file=sys.stderr, flush=True)
    keras.mixed_precision.set_global_policy(precision)
    net = compiled_net(name, size, args.jit)
    flops = forward_flops(net, size)
    rows = []
    for mode in (m for m in MODEL_TIMERS if m in args.modes):
        if name == PEER and mode == "evaluate":
            continue  # keras-hub's model takes float images, not test.py's uint8 stream
        timer, method = MODEL_TIMERS[mode]
        extra = {"method": method + (f"; {data}" if mode == "evaluate" else ""),
                 "jit_compile": net.jit_compile}
        if mode == "train":
            runs = train_in_fresh_processes(name, size, precision, args)
            median = statistics.median(runs)
            extra.update(runs=runs, min_images_per_second=min(runs),
                         max_images_per_second=max(runs))
            images, seconds = args.steps * args.batch_size, args.steps * args.batch_size / median
        else:
            images, seconds = timer(net, paths, size, args.batch_size, args.steps)
        rows.append(make_row(name, size, mode, images, seconds, flops, args, precision,
                             **extra))
    keras.mixed_precision.set_global_policy("float32")
    return rows


def measure_all(args, paths, data, peaks: list[dict]) -> list[dict]:
    """The input rows of every size, then each model's rows at each size and
    precision; the peak is timed again after each model and size."""
    rows = []
    for size in args.sizes if "input" in args.modes else []:
        images, seconds = time_input(paths, size, args.batch_size, args.input_images)
        rows.append(make_row(None, size, "input", images, seconds, None, args, "-",
                             method=f"datasets.stream.make_dataset; {data}"))
    models = list(args.models) + ([PEER] if args.peer else [])
    for name in models if set(args.modes) - {"input"} else []:
        for size in args.sizes:
            for precision in args.precisions:
                rows += measure_model(name, size, precision, args, paths, data)
                keras.backend.clear_session()  # free this network before the next
                gc.collect()
            peaks.append(measure_peaks())
    peak = best_of(peaks)
    for row in rows:
        row["peak_gflops_per_second"] = peak_of(row["precision"], peak)
        if row["gflops_per_second"] is not None and row["peak_gflops_per_second"]:
            row["fraction_of_peak"] = row["gflops_per_second"] / row["peak_gflops_per_second"]
        row["peak_runs"] = [peak_of(row["precision"], p) for p in peaks]
    return rows


def peak_of(precision: str, peak: dict):
    """The peak a row of `precision` is measured against (float32 for the input)."""
    return peak["bfloat16"] if precision == "mixed_bfloat16" else peak["float32"]


def print_table(rows: list[dict], machine: dict, peak: dict, peaks: list[dict]) -> None:
    """A Markdown table docs/speed.md takes as it is."""
    bf16 = (f"; bfloat16 (tf.matmul) **{peak['bfloat16']:.0f} GFLOP/s**"
            if peak["bfloat16"] else "; no fast bfloat16 on this CPU")
    print(f"Machine: {machine['cpu']}, {machine['cpu_cores']} cores "
          f"({' '.join(machine['cpu_flags'])}); TensorFlow {machine['tensorflow']}, "
          f"Keras {machine['keras']}, numpy {machine['numpy']}, TF_ENABLE_ONEDNN_OPTS="
          f"{machine['onednn']}.\n\nPeak, best of {len(peaks)} timings over the run: "
          f"float32 **{peak['float32']:.0f} GFLOP/s** (numpy sgemm, {peak['kernel']}: "
          f"{peak['numpy']:.0f}; tf.matmul: {peak['tf_float32']:.0f}){bf16}. "
          f"float32 timings: {', '.join(str(round(p['float32'])) for p in peaks)}.\n")
    print("| model | size | precision | mode | batch | images/s | spread | GFLOP/s "
          "| of peak | peak RSS (MB) |")
    print("|---|---:|---|---|---:|---:|---|---:|---:|---:|")
    for r in rows:
        gps, frac = r["gflops_per_second"], r["fraction_of_peak"]
        spread = ("-" if "runs" not in r else
                  f"{r['min_images_per_second']:.2f}-{r['max_images_per_second']:.2f}")
        print(f"| {r['model'] or '(any)'} | {r['size']} | {r['precision']} | {r['mode']} "
              f"| {r['batch_size']} | {r['images_per_second']:.2f} | {spread} "
              f"| {'-' if gps is None else f'{gps:.1f}'} "
              f"| {'-' if frac is None else f'{frac:.1%}'} | {r['peak_rss_mb']:.0f} |")
    print("\nTrain counts 3x the forward FLOPs and is the median of the repeats (each a "
          "fresh process); input is JPEG decoding alone; peak RSS is the running peak "
          "of the whole run.")


# --------------------------------------------------------------------------- main

def check_args(args) -> None:
    """Fails before any measurement on arguments that could not all run."""
    unknown = [m for m in args.models if m not in SEMANTIC]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; choose from {sorted(SEMANTIC)}")
    for name, value in (("--batch-size", args.batch_size), ("--steps", args.steps),
                        ("--input-images", args.input_images),
                        ("--repeats", args.repeats)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1. Received: {value}")
    if any(s < 1 for s in args.sizes):
        raise ValueError(f"--sizes must be positive. Received: {args.sizes}")
    if "mixed_bfloat16" in args.precisions and not has_fast_bfloat16():
        raise ValueError("--precisions mixed_bfloat16 needs a CPU with AVX512_BF16 or "
                         "AMX; this one has neither")
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
    if args.train_once:
        name, size, precision = args.train_once
        return train_once(name, int(size), precision, args)
    if args.peer:
        from peer import available
        if not available():
            print("note: keras-hub is not installed; the peer row is skipped (pip "
                  "install keras-hub)", file=sys.stderr)
            args.peer = False
    try:
        check_args(args)
    except ValueError as e:
        parser.error(str(e))
    machine = machine_info()
    print("peak: timing numpy sgemm and tf.matmul", file=sys.stderr, flush=True)
    peaks = [measure_peaks()]
    with tempfile.TemporaryDirectory() as tmp:  # only the demo fallback writes here
        paths, data = image_paths(tmp)
        rows = measure_all(args, paths, data, peaks)
    print_table(rows, machine, best_of(peaks), peaks)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "peaks": peaks, "rows": rows}, f, indent=1)
    return rows


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["gcn", "deeplabv3plus"],
                   help=f"networks to measure, of {SEMANTIC}")
    p.add_argument("--sizes", nargs="+", type=int, default=[256],
                   help="square image sides")
    p.add_argument("--precisions", nargs="+", default=["float32"],
                   choices=["float32", "mixed_float16", "mixed_bfloat16"],
                   help="Keras mixed-precision policies, as train.py --precision")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=5,
                   help="timed batches per train / predict / evaluate measurement")
    p.add_argument("--repeats", type=int, default=3,
                   help="training timings, each in a fresh process")
    p.add_argument("--input-images", type=int, default=256,
                   help="images the input pipeline decodes per size")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--peer", action="store_true",
                   help="add keras-hub's DeepLabV3+ (ResNet-50 v2) when installed")
    p.add_argument("--json", help="also write the machine, peaks and rows here")
    p.add_argument("--jit", default="auto", choices=["auto", "on", "off"],
                   help="XLA compilation of the training step, as train.py --jit")
    p.add_argument("--train-once", nargs=3, metavar=("MODEL", "SIZE", "PRECISION"),
                   help=argparse.SUPPRESS)
    return p


if __name__ == "__main__":
    main()
