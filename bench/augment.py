"""Benchmark: `--augment flip` against `--augment scale` at the same budget.

Trains one run per (augment, seed) with train.py, everything else equal (the demo's
settings unless told otherwise), scores each with test.py on the test split, and
prints a table of test pixel accuracy, mean IoU and seconds per epoch (the first
epoch, which traces the graph, apart), and the input stream's own rate (images/s
decoded and augmented, no network) for each augmentation.

    python bench/augment.py                                 # demo set, seed 0
    python bench/augment.py --seeds 0 1 2 --out runs/augment
    python bench/augment.py --data /tmp/pets --image-size 128 --epochs 10

Runs go to OUT/AUGMENT-sSEED; one that has finished (metrics.json) is not run again,
so an interrupted benchmark starts again from its first unfinished run. Extra flags after `--` go to
train.py.
"""

import argparse
import csv
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="demo", help="dataset folder (train/, test/) or demo")
    p.add_argument("--out", default="runs/augment", help="folder of the runs")
    p.add_argument("--augments", nargs="+", default=["flip", "scale"],
                   choices=["none", "flip", "scale"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    # the demo's recipe (demo.sh)
    p.add_argument("--model", default="gcn")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weights", default="none")
    p.add_argument("--evaluator", default="iou")
    p.add_argument("--json", default=None, help="also write the rows here")
    p.add_argument("train_flags", nargs="*", help="after --: more train.py flags")
    return p


def run_one(args, augment: str, seed: int) -> dict:
    """Trains and tests one run (unless it finished before) and returns its row."""
    run = os.path.join(ROOT, args.out, f"{augment}-s{seed}")
    if not os.path.isfile(os.path.join(run, "metrics.json")):
        train = [sys.executable, "train.py", "--data", args.data, "--out", run,
                 "--model", args.model, "--image-size", str(args.image_size),
                 "--batch-size", str(args.batch_size), "--epochs", str(args.epochs),
                 "--lr", str(args.lr), "--weights", args.weights, "--evaluator",
                 args.evaluator, "--seed", str(seed), "--augment", augment,
                 *args.train_flags]
        print("$", " ".join(train[1:]), flush=True)
        subprocess.run(train, cwd=ROOT, check=True)
        subprocess.run([sys.executable, "test.py", "--data", args.data, "--run", run],
                       cwd=ROOT, check=True)
    with open(os.path.join(run, "metrics.json")) as f:
        metrics = json.load(f)
    with open(os.path.join(run, "history.csv")) as f:
        epochs = list(csv.DictReader(f))
    later = [float(e["seconds"]) for e in epochs[1:]] or [float(epochs[0]["seconds"])]
    return {"augment": augment, "seed": seed, "run": os.path.relpath(run, ROOT),
            "pixel_accuracy": metrics["pixel_accuracy"], "mean_iou": metrics["mean_iou"],
            "per_class_iou": metrics["per_class_iou"],
            "best_val_score": max(float(e["val_score"]) for e in epochs),
            "first_epoch_seconds": float(epochs[0]["seconds"]),
            "seconds_per_epoch": sum(later) / len(later)}


def input_rate(data: str, image_size: int, batch_size: int, augment: str) -> float:
    """Images per second of the training stream alone over the train split (the
    second of two epochs, so tracing and file caching are not counted)."""
    import time

    sys.path.insert(0, ROOT)
    from datasets.data import check_files
    from datasets.files import list_images
    from datasets.stream import make_training_stream
    from learning import cli, semantic
    train_dir = cli.split_dir(cli.data_root(data, semantic), "train", semantic)
    paths, _ = check_files(list_images(train_dir))
    stream = iter(make_training_stream(paths, image_size, batch_size, seed=0,
                                       first_epoch=0, num_epochs=2, augment=augment))
    steps = -(-len(paths) // batch_size)
    for _ in range(steps):
        next(stream)
    start = time.perf_counter()
    for _ in range(steps):
        next(stream)
    return len(paths) / (time.perf_counter() - start)


def main(argv=None) -> list[dict]:
    args = get_args_parser().parse_args(argv)
    if args.data != "demo":
        args.data = os.path.abspath(args.data)
    rows = [run_one(args, a, s) for s in args.seeds for a in args.augments]
    rates = {a: input_rate(args.data, args.image_size, args.batch_size, a)
             for a in args.augments}
    print(f"\n{args.model} on {args.data} at {args.image_size}px, batch "
          f"{args.batch_size}, {args.epochs} epochs, weights {args.weights}")
    print("| augment | seed | test pixel accuracy | test mean IoU | IoU bg / cat / dog "
          "| best val score | s/epoch (1st) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        iou = " / ".join(f"{v:.4f}" if v is not None else "-"
                         for v in r["per_class_iou"].values())
        print(f"| {r['augment']} | {r['seed']} | {r['pixel_accuracy']:.4f} | "
              f"{r['mean_iou']:.4f} | {iou} | {r['best_val_score']:.4f} | "
              f"{r['seconds_per_epoch']:.1f} ({r['first_epoch_seconds']:.0f}) |")
    for a in args.augments:
        mine = [r for r in rows if r["augment"] == a]
        print(f"mean over {len(mine)} seed(s), {a}: pixel accuracy "
              f"{sum(r['pixel_accuracy'] for r in mine) / len(mine):.4f}, mean IoU "
              f"{sum(r['mean_iou'] for r in mine) / len(mine):.4f}; input stream alone "
              f"{rates[a]:.0f} images/s")
        for r in mine:
            r["input_images_per_second"] = rates[a]
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
