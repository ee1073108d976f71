"""Benchmark: what test-time augmentation and the dense CRF buy, and what they cost.

Scores a trained run on a data folder's test split four ways, exactly as test.py runs
them: plain, `--tta`, `--crf`, and both. For each: mean IoU, the mean IoU in a band of
`--band` pixels around the truth's class boundaries (`learning.evaluators.
boundary_band`: what a sharper mask improves), pixel accuracy, and seconds per image,
also as a ratio to the plain prediction. `--sweep` adds one row per CRF setting varied
one at a time around `models.crf.DEFAULT_SETTINGS` (on the plain probabilities): how
the defaults were chosen. `--oracle-stride S` also refines the truth itself coarsened
to a stride-S grid, which shows what the CRF does on real colour edges when the
network is too weak to tell (CPU-sized runs on 40 real images are).

    python bench/refine.py --run runs/demo --data demo --sweep --json refine.json

`--prepare-sample` builds a train/test folder from the shared real sample, downscaled
so that a CPU-sized run sees whole pets (a centre crop of a 500-px photo at 128 px
would show fur only); the files go to `--into`, never into the project:

    python bench/refine.py --prepare-sample ../shared/data/oxford_pet_sample \\
        --into /tmp/pet128 --max-side 128 --num-test 12
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

import numpy as np  # noqa: E402

from learning import cli  # noqa: E402

# One-at-a-time variations of the CRF defaults that --sweep scores.
SWEEP = {"window": [5, 15, 21], "iterations": [1, 10],
         "bilateral_sigma_rgb": [5.0, 20.0, 40.0], "bilateral_sigma_xy": [10.0, 40.0],
         "bilateral_weight": [4.0, 20.0], "spatial_weight": [0.0], "spatial_sigma": [3.0]}


def prepare_sample(sample_dir: str, out_dir: str, max_side: int, num_test: int,
                   seed: int = 0) -> str:
    """Writes `out_dir/{train,test}/{images,masks}`: the sample's pairs, shrunk to
    `max_side` (images area-averaged, trimaps nearest), split at random (`seed`)."""
    import cv2

    from PIL import Image

    from datasets.files import list_images, load_image, load_trimap, mask_path
    paths = list_images(sample_dir)
    order = np.random.default_rng(seed).permutation(len(paths))
    for rank, i in enumerate(order):
        split = "test" if rank < num_test else "train"
        image = load_image(paths[i])
        mask = load_trimap(mask_path(paths[i]))
        h, w = image.shape[:2]
        scale = min(1.0, max_side / max(h, w))
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        mask = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
        name = os.path.splitext(os.path.basename(paths[i]))[0]
        for sub, array, ext in (("images", image, ".png"), ("masks", mask, ".png")):
            os.makedirs(os.path.join(out_dir, split, sub), exist_ok=True)
            Image.fromarray(array).save(os.path.join(out_dir, split, sub, name + ext))
    return out_dir


def load_test_split(data: str, size: int):
    """Images, labels and padding (N, size, size) of the test split, as test.py crops
    them."""
    from datasets.check import usable_images
    from datasets.stream import make_dataset
    from learning import semantic
    test_dir = cli.split_dir(cli.data_root(data, semantic), "test", semantic)
    paths, _ = usable_images(test_dir, skip_bad=True)
    batches = list(make_dataset(paths, size, 8, with_padding=True))
    return tuple(np.concatenate([b[k].numpy() for b in batches]) for k in range(3))


def score(labels, pred, band, num_classes) -> dict:
    """mIoU, pixel accuracy and the mIoU inside the boundary band."""
    from learning.evaluators import IGNORE_LABEL, ConfusionMatrix
    whole = ConfusionMatrix(num_classes).update(labels, pred)
    edge = ConfusionMatrix(num_classes).update(np.where(band, labels, IGNORE_LABEL), pred)
    return {"mean_iou": whole.mean_iou, "pixel_accuracy": whole.pixel_accuracy,
            "boundary_mean_iou": edge.mean_iou, "boundary_pixel_accuracy":
            edge.pixel_accuracy, "boundary_pixels": edge.total}


def timed(predict, images, batch_size: int, repeats: int = 1):
    """Labels of every image and the best seconds per image over `repeats` runs (the
    first call, which traces the graphs, is made beforehand and not counted)."""
    predict(images[:batch_size])
    best, pred = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        pred = np.concatenate([predict(images[i:i + batch_size])
                               for i in range(0, len(images), batch_size)])
        best = min(best, (time.perf_counter() - start) / len(images))
    return pred, best


def coarse_truth(labels, stride: int, num_classes: int) -> np.ndarray:
    """What a network of output stride `stride` that knew the truth would give: the
    one-hot truth averaged over stride x stride cells, upsampled back (bilinear) and
    softened (10% uniform). Ignored pixels count as background. It measures what the
    CRF does on real colour edges apart from a (here weak) network's mistakes."""
    import tensorflow as tf
    one_hot = np.eye(num_classes, dtype=np.float32)[np.where(labels < num_classes,
                                                             labels, 0)]
    cells = tf.nn.avg_pool2d(one_hot, stride, stride, "SAME")
    probs = tf.image.resize(cells, labels.shape[1:3], method="bilinear").numpy()
    return 0.9 * probs + 0.1 / num_classes


def crf_rows(images, labels, probs, band, tag: str, sweep: bool) -> list[dict]:
    """Scores of `probs`, refined by the default CRF and (`sweep`) by each of the
    `SWEEP` variations of it."""
    from models.crf import DEFAULT_SETTINGS, dense_crf
    num_classes = probs.shape[-1]
    rows = [{"method": f"{tag}probabilities", "crf_seconds_per_image": 0.0,
             **score(labels, probs.argmax(-1), band, num_classes), "crf": None}]
    print_row(rows[-1])
    variations = [(None, None)] + [(k, v) for k, vs in SWEEP.items() for v in vs]
    for key, value in variations if sweep else variations[:1]:
        settings = dict(DEFAULT_SETTINGS, **({key: value} if key else {}))
        start = time.perf_counter()
        pred = dense_crf(images, probs, **settings).argmax(-1)
        seconds = (time.perf_counter() - start) / len(images)
        rows.append({"method": tag + (f"crf {key}={value}" if key else "crf defaults"),
                     **score(labels, pred, band, num_classes),
                     "crf_seconds_per_image": seconds, "tta": None, "crf": settings})
        print_row(rows[-1])
    return rows


def main(argv=None) -> list[dict]:
    args = get_args_parser().parse_args(argv)
    if args.prepare_sample:
        if not args.into:
            raise ValueError("--prepare-sample needs --into OUT_DIR")
        print(prepare_sample(args.prepare_sample, args.into, args.max_side, args.num_test))
        return []
    from learning.evaluators import boundary_band
    from models.crf import DEFAULT_SETTINGS
    from learning.runs import checkpoint_path, load_checkpoint
    from models.tta import DEFAULT_SCALES, label_predictor

    ckpt = checkpoint_path(args.run, args.checkpoint)
    net = load_checkpoint(ckpt)
    size = args.image_size or net.input_size
    images, labels, padding = (a[:args.max_images] for a in load_test_split(args.data,
                                                                             size))
    band = boundary_band(labels, args.band, net.num_classes, padding)
    tta = {"scales": list(args.tta_scales or DEFAULT_SCALES), "flip": True}
    crf = dict(DEFAULT_SETTINGS)
    print(f"{ckpt} on {len(images)} test images of {args.data} at {size}x{size}; "
          f"band {args.band} px ({band.mean():.1%} of the pixels)", flush=True)

    rows, plain_seconds = [], None
    for name, options in (("plain", (None, None)), ("tta", (tta, None)),
                          ("crf", (None, crf)), ("tta+crf", (tta, crf))):
        pred, seconds = timed(label_predictor(net, *options), images, args.batch_size,
                              args.repeats)
        plain_seconds = plain_seconds or seconds
        rows.append({"method": name, **score(labels, pred, band, net.num_classes),
                     "seconds_per_image": seconds,
                     "added_seconds_per_image": seconds - plain_seconds,
                     "time_vs_plain": seconds / plain_seconds,
                     "tta": options[0], "crf": options[1]})
        print_row(rows[-1])
    if args.sweep:
        probs = np.concatenate([net.probabilities(images[i:i + args.batch_size])
                                for i in range(0, len(images), args.batch_size)])
        rows += crf_rows(images, labels, probs, band, "", sweep=True)
    if args.oracle_stride:
        probs = coarse_truth(labels, args.oracle_stride, net.num_classes)
        rows += crf_rows(images, labels, probs, band, f"oracle/{args.oracle_stride} ",
                         sweep=args.sweep)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"checkpoint": ckpt, "data": args.data, "image_size": size,
                       "num_images": len(images), "band": args.band, "rows": rows},
                      f, indent=1)
    return rows


def print_row(row: dict) -> None:
    timing = (f"{row['seconds_per_image']:8.4f} s/img  x{row['time_vs_plain']:.1f}"
              if "seconds_per_image" in row else
              f"crf {row['crf_seconds_per_image']:.4f} s/img")
    print(f"{row['method']:<30} mIoU {row['mean_iou']:.4f}  boundary mIoU "
          f"{row['boundary_mean_iou']:.4f}  acc {row['pixel_accuracy']:.4f}  {timing}",
          flush=True)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--run", default=None, help="run folder written by train.py")
    p.add_argument("--checkpoint", default=None, help="a .keras file (default: RUN's)")
    p.add_argument("--data", default="demo", help="folder holding test/, or 'demo'")
    p.add_argument("--image-size", type=int, default=None,
                   help="crop/pad size (default: the run's training size)")
    p.add_argument("--max-images", type=int, default=None, help="score at most these")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--band", type=int, default=3,
                   help="boundary band half-width in pixels")
    p.add_argument("--tta-scales", type=float, nargs="+", default=None,
                   help="default: models.tta.DEFAULT_SCALES")
    p.add_argument("--repeats", type=int, default=1,
                   help="time each method this many times and keep the best")
    p.add_argument("--sweep", action="store_true",
                   help="also score CRF settings varied one at a time")
    p.add_argument("--oracle-stride", type=int, default=None, metavar="S",
                   help="also refine the truth coarsened to stride S (`coarse_truth`): "
                        "the CRF on real edges, without the network's mistakes")
    p.add_argument("--json", default=None, help="write the rows to this file")
    p.add_argument("--prepare-sample", default=None, metavar="SAMPLE_DIR",
                   help="only build a downscaled train/test folder from SAMPLE_DIR")
    p.add_argument("--into", default=None, help="output folder of --prepare-sample")
    p.add_argument("--max-side", type=int, default=128, help="for --prepare-sample")
    p.add_argument("--num-test", type=int, default=12, help="for --prepare-sample")
    return p


if __name__ == "__main__":
    main()
