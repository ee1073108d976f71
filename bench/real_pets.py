"""Benchmark on real photos: train and test configurations on the 300 real Oxford-IIIT
Pet pairs of `../shared/data/oxford_pet_real` (240 train, 60 test), from random
weights, and tabulate what each learns.

Each configuration is one `train.py` run and one `test.py` run, in their own
processes (the same code path a user runs); `--refine` adds rows for the same run
tested with `--tta`, `--crf` and both. A run or a test that finished before (its
`metrics*.json` exists) is reused, so an interrupted benchmark continues where it
stopped. The table goes to OUT/real_pets.md and OUT/real_pets.json; a later call
into the same OUT adds its rows to it (replacing those of the same run).

    python bench/real_pets.py --models gcn deeplabv3plus unet --refine   # 128 px, 30 epochs

docs/real-photos.md has the table these commands made, and what it shows.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFINEMENTS = {"plain": [], "tta": ["--tta"], "crf": ["--crf"],
               "tta+crf": ["--tta", "--crf"]}
COLUMNS = ("model", "backbone", "image_size", "resize", "augment", "epochs", "lr",
           "seed", "refine", "train_seconds", "pixel_accuracy",
           "article_pixel_accuracy", "iou_background", "iou_cat", "iou_dog",
           "mean_iou", "boundary_mean_iou", "foreground_iou", "run")


def run_name(args, model: str, augment: str, seed: int) -> str:
    return (f"{model}-{args.backbone or 'default'}-{args.image_size}-{args.resize}-"
            f"{augment}-e{args.epochs}-lr{args.lr:g}-s{seed}")


def train_and_test(args, model: str, augment: str, seed: int) -> list[dict]:
    """The rows of one configuration: its run is trained and tested unless done."""
    run = os.path.join(args.out, run_name(args, model, augment, seed))
    if not os.path.isfile(os.path.join(run, "history.csv")) or not finished(run, args):
        resume = ["--resume"] if os.path.isfile(os.path.join(run, "last.keras")) else []
        command(["train.py", "--data", args.data, "--out", run, "--model", model,
                 "--image-size", str(args.image_size), "--resize", args.resize,
                 "--batch-size", str(args.batch_size), "--epochs", str(args.epochs),
                 "--lr", str(args.lr), "--weights", "none", "--augment", augment,
                 "--seed", str(seed), "--evaluator", "iou", "--no-tensorboard",
                 *(["--backbone", args.backbone] if args.backbone else []),
                 *args.train_flags, *resume])
    rows = []
    for refine in (REFINEMENTS if args.refine else ["plain"]):
        metrics_file = os.path.join(run, f"metrics{'' if refine == 'plain' else '_' + refine}.json")
        if not os.path.isfile(metrics_file):
            command(["test.py", "--data", args.data, "--run", run, "--metrics",
                     metrics_file, "--max-draws", "8", *REFINEMENTS[refine]])
        rows.append(row(args, run, model, augment, seed, refine, metrics_file))
    return rows


def finished(run: str, args) -> bool:
    """The run has trained all its epochs."""
    with open(os.path.join(run, "history.csv")) as f:
        return len(list(csv.DictReader(f))) >= args.epochs


def command(argv: list[str]) -> None:
    print("$ python " + " ".join(argv), flush=True)
    subprocess.run([sys.executable, *argv], cwd=ROOT, check=True)


def row(args, run, model, augment, seed, refine, metrics_file) -> dict:
    with open(metrics_file) as f:
        m = json.load(f)
    with open(os.path.join(run, "history.csv")) as f:
        seconds = sum(float(r["seconds"]) for r in csv.DictReader(f))
    iou = m["per_class_iou"]
    return {"model": model, "backbone": args.backbone or "default",
            "image_size": args.image_size, "resize": args.resize, "augment": augment,
            "epochs": args.epochs, "lr": args.lr, "seed": seed, "refine": refine,
            "train_seconds": round(seconds, 1), "pixel_accuracy": m["pixel_accuracy"],
            "article_pixel_accuracy": m["article_pixel_accuracy"],
            "iou_background": iou.get("background"), "iou_cat": iou.get("cat"),
            "iou_dog": iou.get("dog"), "mean_iou": m["mean_iou"],
            "boundary_mean_iou": m["boundary_mean_iou"], "foreground_iou": m["foreground_iou"],
            "run": os.path.relpath(run, ROOT)}


def merged(table_file: str, rows: list[dict]) -> list[dict]:
    """The rows of earlier calls into the same --out, with this call's replacing
    those of the same run and refinement: one table grows over several calls."""
    old = []
    if os.path.isfile(table_file):
        with open(table_file) as f:
            old = json.load(f)
    new = {(r["run"], r["refine"]) for r in rows}
    return [r for r in old if (r["run"], r["refine"]) not in new] + rows


def markdown(rows: list[dict]) -> str:
    head = ("| model | backbone | size | resize | augment | epochs | lr | seed | refine "
            "| train s | pixel acc. | article acc. | IoU bg / cat / dog | mIoU "
            "| boundary mIoU | pet vs bg IoU |")
    lines = [head, "|" + "---|" * 16]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['backbone']} | {r['image_size']} | {r['resize']} "
            f"| {r['augment']} | {r['epochs']} | {r['lr']:g} | {r['seed']} | {r['refine']} "
            f"| {r['train_seconds']:.0f} | {r['pixel_accuracy']:.4f} "
            f"| {r['article_pixel_accuracy']:.4f} | {r['iou_background']:.3f} / "
            f"{r['iou_cat']:.3f} / {r['iou_dog']:.3f} | {r['mean_iou']:.4f} "
            f"| {r['boundary_mean_iou']:.4f} | {r['foreground_iou']:.4f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> list[dict]:
    args = get_args_parser().parse_args(argv)
    if not os.path.isdir(os.path.join(args.data, "train", "images")):
        raise SystemExit(f"error: {args.data}/train/images not found (the real photos "
                         f"live in ../shared/data/oxford_pet_real)")
    os.makedirs(args.out, exist_ok=True)
    start, rows = time.time(), []
    for model in args.models:
        for augment in args.augment:
            for seed in args.seeds:
                rows += train_and_test(args, model, augment, seed)
    table_rows = merged(os.path.join(args.out, "real_pets.json"), rows)
    with open(os.path.join(args.out, "real_pets.json"), "w") as f:
        json.dump(table_rows, f, indent=1)
    table = markdown(table_rows)
    with open(os.path.join(args.out, "real_pets.md"), "w") as f:
        f.write(table)
    print(table)
    print(f"{len(rows)} rows in {time.time() - start:.0f} s; "
          f"{os.path.join(args.out, 'real_pets.md')}")
    return rows


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=os.path.join(os.path.dirname(ROOT), "shared",
                                                  "data", "oxford_pet_real"))
    p.add_argument("--out", default="runs/real")
    p.add_argument("--models", nargs="+", default=["gcn", "deeplabv3plus", "unet"])
    p.add_argument("--backbone", default=None, help="train.py --backbone")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--resize", default="longer", choices=["none", "longer", "shorter"])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=0.001,
                   help="0.001 won a short sweep (docs/real-photos.md); 0.003 goes NaN "
                        "without --clipnorm")
    p.add_argument("--augment", nargs="+", default=["flip"],
                   choices=["none", "flip", "scale"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--refine", action="store_true",
                   help="also test each run with --tta, --crf and both")
    p.add_argument("train_flags", nargs="*", help="after --: more train.py flags")
    return p


if __name__ == "__main__":
    main()
