"""What train.py, test.py and draw.py do for an instance model (SOLO, `--model solo`).

The scripts branch here early: `train` (an `InstanceOptimizer` run on an instance
folder, `ROOT/train/images + annotations.json`, or the instance demo for `--data
demo`), `test` (COCO results in `RUN/instances_pred.json`, mask AP / AP50 / AP75 from
pycocotools' COCOeval in `RUN/metrics.json`, overlays in `RUN/draws/`) and `draw`
(each instance in its own colour, labelled with its class and score).
"""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np

from learning import cli

# RGB colours of instances, one after the other (matplotlib's tab10, less grey)
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40),
           (148, 103, 189), (140, 86, 75), (227, 119, 194), (188, 189, 34),
           (23, 190, 207)]
CLASS_NAMES = ("cat", "dog")
# Drawn instances: those scoring at least this (mask AP takes every prediction)
DRAW_SCORE_THRESHOLD = 0.3


def is_instance_checkpoint(run_dir: str | None, checkpoint: str | None) -> bool:
    """True if the run's checkpoint holds a SOLO model (False when none is found:
    the semantic path then reports what is missing)."""
    try:
        path = cli.checkpoint_path(run_dir, checkpoint)
        with zipfile.ZipFile(path) as z:
            segnet = json.loads(z.read("config.json"))["config"]["segnet"]
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile):
        return False
    return segnet.get("class_name") == "SOLO"


def _note_semantic_flags(args) -> None:
    """Says so when test.py/draw.py flags for semantic models are given to SOLO."""
    given = [f"--{name}" for name in ("tta", "crf") if getattr(args, name, False)]
    if given:
        print(f"note: {' and '.join(given)} refine semantic predictions; ignored for SOLO")


def build_solo(args):
    """The SOLO network of train.py's flags (the small backbone has no weights)."""
    from models.solo import SOLO
    weights = None if str(args.weights).lower() == "none" else args.weights
    if weights is not None and args.solo_backbone == "small":
        print(f"note: the small backbone has no pretrained weights; training from random"
              f" weights (--weights {args.weights} ignored)")
        weights = None
    net = SOLO(weights=weights, input_size=args.image_size, backbone=args.solo_backbone,
               head=args.solo_head)
    net.check_input_size(args.image_size, args.image_size)
    return net


# --------------------------------------------------------------------------- train


def train(args, strategy) -> int:
    """train.py for `--model solo`: the same run folder, checkpoints and resume."""
    import keras

    from datasets.instances import (InstanceExample, annotations_path, load_record,
                                    read_annotations)
    from datasets.stream import split_paths
    from learning.instance_training import InstanceOptimizer, write_subset_annotations
    from learning.utils import write_json

    print("config:", json.dumps(vars(args), sort_keys=True))
    if strategy.num_replicas_in_sync > 1:
        raise ValueError("--model solo trains on one device; use --strategy default")
    keras.utils.set_random_seed(args.seed)
    keras.mixed_precision.set_global_policy(args.precision)
    train_dir = cli.split_dir(cli.data_root(args.data, instances=True), "train")
    records = read_annotations(train_dir)
    by_path = {r["path"]: r for r in records}
    train_paths, val_paths = split_paths(list(by_path), args.val_fraction, args.seed)
    if not val_paths:  # no validation split: score the training images
        val_paths = train_paths
    train_records = [by_path[p] for p in train_paths]
    val_ids = {by_path[p]["image_id"] for p in val_paths}
    print(f"data: {len(train_paths)} training and {len(val_paths)} validation images "
          f"from {train_dir}")
    if args.resume and not os.path.isfile(os.path.join(args.out, "last.keras")):
        raise FileNotFoundError(f"--resume: no {args.out}/last.keras to continue from")
    net = build_solo(args)
    print(f"model: solo ({args.solo_backbone} backbone, {args.solo_head} head), "
          f"{net.model.count_params():,} parameters")
    os.makedirs(args.out, exist_ok=True)
    val_annotations = write_subset_annotations(
        annotations_path(train_dir), val_ids, os.path.join(args.out, "val_annotations.json"))
    val_set = [InstanceExample(by_path[p]["image_id"],
                               os.path.splitext(os.path.basename(p))[0],
                               *load_record(by_path[p])) for p in val_paths]
    if not args.resume:
        write_json(os.path.join(args.out, "config.json"),
                   {"args": vars(args), "model": net.config,
                    "train_images": len(train_paths), "val_images": len(val_paths),
                    "val_ids": sorted(int(i) for i in val_ids)})
    optimizer = InstanceOptimizer(
        net, train_records, val_set, val_annotations, batch_size=args.batch_size,
        num_epochs=args.epochs, learning_rate=args.lr, momentum=args.momentum,
        learning_rate_patience=args.patience, learning_rate_decay=args.decay,
        eps=args.eps, image_size=args.image_size, score_threshold=args.score_threshold,
        augment=args.augment, seed=args.seed, tensorboard=not args.no_tensorboard,
        clipnorm=args.solo_clipnorm or None,
        jit_compile={"auto": "auto", "on": True, "off": False}[args.jit])
    with cli.stop_on_signals(optimizer):
        history = optimizer.train(args.out, resume=args.resume)
    print(f"best validation mask AP50: {history['best_score']:.4f}")
    print(f"checkpoints: {args.out}/best.keras, {args.out}/last.keras")
    print(f"learning curve: {args.out}/learning_curve.png; history: {args.out}/history.csv")
    return 0


# --------------------------------------------------------------------------- test


def test(args) -> int:
    """test.py for a SOLO run: COCO results, mask AP table, metrics.json, overlays
    (instances scoring `DRAW_SCORE_THRESHOLD` or more)."""
    from datasets.instances import annotations_path, read_instances
    from learning.coco import evaluate_masks
    from learning.instance_training import predict_coco_results
    from learning.utils import write_json
    from learning.visualize import save_rgb
    from models.nn import SegNet

    _note_semantic_flags(args)
    ckpt = cli.checkpoint_path(args.run, args.checkpoint)
    run_dir = args.run or os.path.dirname(os.path.abspath(ckpt))
    net = SegNet.load(ckpt)
    size = args.image_size or net.options["input_size"]
    test_dir = cli.split_dir(cli.data_root(args.data, instances=True), "test")
    examples = read_instances(test_dir)
    print(f"testing {ckpt} on {len(examples)} images of {test_dir} at {size}x{size}")
    results = predict_coco_results(net, examples, size, args.batch_size)
    pred_path = os.path.join(run_dir, "instances_pred.json")
    write_json(pred_path, results)
    metrics, table = evaluate_masks(annotations_path(test_dir), results)
    print(table, end="")
    print(f"mask AP {metrics['mask_ap']:.4f} | AP50 {metrics['mask_ap50']:.4f} | "
          f"AP75 {metrics['mask_ap75']:.4f}")
    write_json(os.path.join(run_dir, "metrics.json"),
               {**metrics, "checkpoint": ckpt, "test_dir": test_dir,
                "num_images": len(examples), "num_predictions": len(results),
                "image_size": size, "predictions": pred_path})
    draws = args.draws or os.path.join(run_dir, "draws")
    os.makedirs(draws, exist_ok=True)
    shown = examples[:args.max_draws] if args.max_draws is not None else examples
    by_image = {}
    for r in results:
        by_image.setdefault(r["image_id"], []).append(r)
    for example in shown:
        found = [r for r in by_image.get(example.image_id, [])
                 if r["score"] >= DRAW_SCORE_THRESHOLD]
        panel = np.concatenate([
            zoom(example.image),
            draw_instances(example.image, example.masks, example.classes),
            draw_instances(example.image, *_decoded(found, example.image.shape[:2]))], 1)
        save_rgb(os.path.join(draws, example.name + ".png"), panel)
    print(f"predictions: {pred_path}; metrics: {os.path.join(run_dir, 'metrics.json')}")
    print(f"overlays (image | truth | prediction): {len(shown)} in {draws}/")
    return 0


def _decoded(results: list, shape) -> tuple:
    """One image's COCO results -> (masks (N, H, W) bool, classes, scores)."""
    from learning.coco import class_index, decode_mask
    masks = np.stack([decode_mask(r["segmentation"]) for r in results]) if results \
        else np.zeros((0,) + tuple(shape), bool)
    return (masks, np.array([class_index(r["category_id"]) for r in results], int),
            np.array([r["score"] for r in results], np.float32))


# --------------------------------------------------------------------------- draw


def draw(args, paths: list[str]) -> int:
    """draw.py for a SOLO run: one picture per image in `paths`, at its own size,
    with the instances scoring `DRAW_SCORE_THRESHOLD` or more."""
    from datasets.instances import fit_to_size, restore_masks
    from models.nn import SegNet

    _note_semantic_flags(args)
    net = SegNet.load(cli.checkpoint_path(args.run, args.checkpoint))
    size = net.options["input_size"]

    def render(image):
        fitted = fit_to_size(image, np.zeros((0,) + image.shape[:2], bool), size)[0]
        found = net.predict_instances(fitted[None])[0]
        kept = found["scores"] >= DRAW_SCORE_THRESHOLD
        found = {k: v[kept] for k, v in found.items()}
        masks = restore_masks(found["masks"], *image.shape[:2])
        return draw_instances(image, masks, found["classes"], found["scores"], args.alpha)
    cli.draw_each(paths, args.out, render, what="drawings")
    return 0


def zoom(image: np.ndarray, min_side: int = 256) -> np.ndarray:
    """Small images enlarged by a whole factor (pixels kept), so labels are legible."""
    k = max(1, -(-min_side // min(image.shape[:2])))
    return image.repeat(k, axis=0).repeat(k, axis=1)


def draw_instances(image, masks, classes, scores=None, alpha: float = 0.5,
                   min_side: int = 256) -> np.ndarray:
    """Each instance blended in its own colour, outlined, and labelled with its class
    (and score) at the top-left of its mask; drawn worst first, so the best is on top.
    Images under `min_side` are enlarged first (`zoom`)."""
    import cv2
    out = zoom(image, min_side).astype(np.float32)
    k = out.shape[0] // image.shape[0]
    order = range(len(classes)) if scores is None else np.argsort(scores, kind="stable")
    labels = []
    for n in order:
        mask = np.asarray(masks[n], np.uint8).repeat(k, axis=0).repeat(k, axis=1)
        if not mask.any():
            continue
        colour = np.asarray(PALETTE[n % len(PALETTE)], np.float32)
        where = mask > 0
        out[where] = (1 - alpha) * out[where] + alpha * colour
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        labels.append((n, contours, colour))
    out = np.ascontiguousarray(np.clip(np.round(out), 0, 255).astype(np.uint8))
    scale = max(0.35, min(out.shape[:2]) / 700)
    for n, contours, colour in labels:
        cv2.drawContours(out, contours, -1, colour.tolist(), max(1, k // 2))
        text = CLASS_NAMES[int(classes[n])] + ("" if scores is None
                                               else f" {float(scores[n]):.2f}")
        x, y, _, _ = cv2.boundingRect(np.concatenate(contours))
        (w, h), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        y = max(y, h + 4)
        cv2.rectangle(out, (x, y - h - 4), (x + w + 4, y), colour.tolist(), -1)
        cv2.putText(out, text, (x + 2, y - 3), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (255, 255, 255), 1, cv2.LINE_AA)
    return out
