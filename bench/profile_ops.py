"""Where the time goes: the TensorFlow profiler's per-op breakdown of a training or
prediction step, summed by op type (Conv2D, Conv2DBackpropFilter, FusedBatchNormGradV3,
...) and by layer.

Runs `fit` (compiled as train.py compiles) or `predict_on_batch` on one random batch
repeated, under `tf.profiler.experimental.trace` for `--steps` steps after a warm-up,
then reads the trace's host plane (the XPlane protobuf that TensorBoard's profile plugin
reads) and adds up each op's wall time on the TensorFlow executor threads. With
several threads working at once the sum of op times exceeds the step time; the shares
are of that sum, which is what each op costs the cores.

    python bench/profile_ops.py --model gcn --size 256 --mode train --steps 3
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(BENCH_DIR))
sys.path.insert(0, BENCH_DIR)

import common  # noqa: E402,F401 (TensorFlow's settings, as the scripts make them)
import tensorflow as tf  # noqa: E402
from tensorflow.tsl.profiler.protobuf import xplane_pb2  # noqa: E402

from learning.evaluators import IoUEvaluator  # noqa: E402
from learning.optimizers import MomentumOptimizer  # noqa: E402
from throughput import SEMANTIC  # noqa: E402
from timing import build_net, prefetched, random_batch  # noqa: E402

# TF op events are named "scope/.../name:OpType"; framework events (the executor,
# function calls, tf.data) have no ":Type" and are left out of the op table.
OP_EVENT = re.compile(r"^(?P<name>[^:]+):(?P<type>[A-Za-z0-9_]+)$")


def op_events(logdir: str):
    """(op name, op type, seconds) of every TF op the trace recorded on the host."""
    (path,) = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
    space = xplane_pb2.XSpace()
    with open(path, "rb") as f:
        space.ParseFromString(f.read())
    for plane in space.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        for line in plane.lines:
            for event in line.events:
                meta = plane.event_metadata[event.metadata_id]
                match = OP_EVENT.match(meta.name)
                if match:
                    yield match["name"], match["type"], event.duration_ps * 1e-12


def layer_of(op_name: str, model_name: str, layer_names: set[str]) -> str:
    """The Keras layer an op belongs to: the scope after the model's own, or the
    first scope of an op outside the model (loss, metrics, optimizer). Keras numbers
    a scope entered again (`gcn_1`, `conv1_conv_1`); the number is dropped where the
    name without it is the model's or one of its layers'."""
    def plain(part, names):
        base = re.sub(r"_\d+$", "", part)
        return base if part not in names and base in names else part

    parts = [p for p in op_name.split("/")
             if p and not p.startswith(("StatefulPartitionedCall", "gradient_tape",
                                        "one_step_on", "while"))]
    for i, part in enumerate(parts[:-1]):
        if plain(part, {model_name}) == model_name:
            return plain(parts[i + 1], layer_names)
    return parts[0] if parts else op_name


def run_steps(net, mode: str, size: int, batch_size: int, steps: int) -> None:
    """`steps` training steps (`fit`) or predictions on one random batch."""
    images, labels = random_batch(size, batch_size)
    if mode == "train":
        data = prefetched(tf.data.Dataset.from_tensors((images, labels)).repeat())
        net.fit(data, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False)
    else:
        for _ in range(steps):
            net.predict_on_batch(images)


def summarize(events, seconds: float, steps: int, top: int, model) -> None:
    by_type, by_layer = collections.Counter(), collections.Counter()
    layer_names = {layer.name for layer in model.layers}
    for name, kind, dt in events:
        by_type[kind] += dt
        by_layer[layer_of(name, model.name, layer_names)] += dt
    total = sum(by_type.values())
    print(f"{steps} step(s) in {seconds:.2f} s wall ({seconds / steps * 1e3:.0f} ms per "
          f"step); op time summed over threads {total:.2f} s "
          f"({total / seconds:.2f} cores busy on average)\n")
    for title, table in (("op type", by_type), ("layer", by_layer)):
        print(f"| {title} | ms per step | share |\n|---|---:|---:|")
        for key, dt in table.most_common(top):
            print(f"| {key} | {dt / steps * 1e3:.1f} | {dt / total:.1%} |")
        print()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="gcn", choices=SEMANTIC)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--mode", default="train", choices=["train", "predict"])
    p.add_argument("--steps", type=int, default=3, help="profiled steps")
    p.add_argument("--jit", default="auto", choices=["auto", "on", "off"])
    p.add_argument("--top", type=int, default=25, help="rows per table")
    args = p.parse_args(argv)
    if min(args.size, args.batch_size, args.steps, args.top) < 1:
        p.error("--size, --batch-size, --steps and --top must be at least 1")

    net = build_net(args.model, args.size)
    jit = {"auto": "auto", "on": True, "off": False}[args.jit]
    MomentumOptimizer(net, [], IoUEvaluator(), batch_size=args.batch_size,
                      jit_compile=jit).compile()
    run_steps(net, args.mode, args.size, args.batch_size, 1)  # trace outside the profile
    with tempfile.TemporaryDirectory() as logdir:
        start = time.perf_counter()
        with tf.profiler.experimental.Profile(logdir):
            run_steps(net, args.mode, args.size, args.batch_size, args.steps)
        seconds = time.perf_counter() - start
        events = list(op_events(logdir))
    if not events:
        sys.exit("the trace recorded no TensorFlow ops (XLA fuses them: try --jit off)")
    summarize(events, seconds, args.steps, args.top, net)


if __name__ == "__main__":
    main()
