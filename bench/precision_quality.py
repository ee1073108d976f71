"""Benchmark: does a faster precision policy learn as well? Trains and tests the demo
(./demo.sh's settings) under each policy and seed, in fresh processes through
train.py and test.py, and tabulates test mIoU, the loss curve and the time.

This is the quality half of the evidence behind `--precision auto` (the speed half is
bench/throughput.py): a policy may be the default only where its test mIoU stays
within about one seed-to-seed difference of float32 and its loss never turns
unstable (non-finite, or rising by more than half between epochs).

    python bench/precision_quality.py --policies float32 mixed_bfloat16 --seeds 0 1
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = ["--data", "demo", "--model", "gcn", "--image-size", "64", "--batch-size", "8",
        "--lr", "1e-3", "--evaluator", "iou", "--weights", "none", "--no-tensorboard"]


def run(args, policy: str, seed: int) -> dict:
    """One demo run under `policy` (reused when its metrics exist) and its figures."""
    out = os.path.join(args.out, f"{policy}-s{seed}")
    metrics = os.path.join(out, "metrics.json")
    if not os.path.isfile(metrics):
        for argv in (["train.py", *DEMO, "--out", out, "--epochs", str(args.epochs),
                      "--seed", str(seed), "--precision", policy, "--overwrite"],
                     ["test.py", "--data", "demo", "--run", out, "--precision", policy,
                      "--max-draws", "0"]):
            print("$ python " + " ".join(argv), flush=True)
            subprocess.run([sys.executable, *argv], cwd=ROOT, check=True)
    with open(metrics) as f:
        m = json.load(f)
    with open(os.path.join(out, "history.csv")) as f:
        history = list(csv.DictReader(f))
    losses = [float(h["loss"]) for h in history]
    rises = [b / a for a, b in zip(losses, losses[1:]) if a > 0]
    stable = all(math.isfinite(x) for x in losses) and all(r <= 1.5 for r in rises)
    return {"policy": policy, "seed": seed, "mean_iou": m["mean_iou"],
            "pixel_accuracy": m["pixel_accuracy"], "losses": losses, "stable": stable,
            "train_seconds": round(sum(float(h["seconds"]) for h in history), 1)}


def verdict(rows: list[dict], policy: str) -> str:
    """Whether `policy` holds float32's quality: its mean test mIoU is no more than one
    seed-to-seed difference of float32 (max - min over the seeds) below float32's."""
    def by(p):
        return {r["seed"]: r["mean_iou"] for r in rows if r["policy"] == p}
    base, other = by("float32"), by(policy)
    spread = max(base.values()) - min(base.values()) if len(base) > 1 else 0.0
    gap = sum(base.values()) / len(base) - sum(other.values()) / len(other)
    stable = all(r["stable"] for r in rows if r["policy"] == policy)
    ok = stable and gap <= spread
    return (f"{policy}: mean test mIoU {gap:+.4f} below float32's (seed-to-seed "
            f"difference of float32 {spread:.4f}), loss "
            f"{'stable' if stable else 'UNSTABLE'}: "
            f"{'holds' if ok else 'does not hold'} float32's quality")


def main(argv=None) -> list[dict]:
    args = get_args_parser().parse_args(argv)
    rows = [run(args, policy, seed) for policy in args.policies for seed in args.seeds]
    lines = ["| policy | seed | test mIoU | pixel acc. | train s | loss by epoch | stable |",
             "|---|---:|---:|---:|---:|---|---|"]
    for r in rows:
        lines.append(f"| {r['policy']} | {r['seed']} | {r['mean_iou']:.4f} "
                     f"| {r['pixel_accuracy']:.4f} | {r['train_seconds']:.0f} "
                     f"| {' '.join(f'{x:.3f}' for x in r['losses'])} "
                     f"| {'yes' if r['stable'] else 'no'} |")
    lines += [""] + [verdict(rows, p) for p in args.policies if p != "float32"
                     and "float32" in args.policies]
    text = "\n".join(lines) + "\n"
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "precision_quality.md"), "w") as f:
        f.write(text)
    with open(os.path.join(args.out, "precision_quality.json"), "w") as f:
        json.dump(rows, f, indent=1)
    print(text)
    return rows


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--policies", nargs="+", default=["float32", "mixed_bfloat16"],
                   choices=["float32", "mixed_float16", "mixed_bfloat16"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--epochs", type=int, default=5, help="as ./demo.sh")
    p.add_argument("--out", default="runs/precision")
    return p


if __name__ == "__main__":
    main()
