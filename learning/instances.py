"""The instance task: a mask per object (SOLO, `--model solo`). What train.py, test.py
and draw.py do for it; `learning.tasks` lists it beside `learning.semantic`.

Data: an instance folder (`train/` and `test/`, each `images/` beside a COCO
`annotations.json`; `datasets.instances`). Training uses the same trainer and
callbacks as the semantic models, with the instance stream
(`datasets.instance_stream`) and one more callback, `MaskAPScore`: after each epoch
it predicts the validation images, maps their masks back to each image's own size and
puts pycocotools' COCO mask AP, AP50 and AP75 into fit's logs (`val_mask_ap50`, ...),
where the article's epoch end reads its score. AP50 rather than AP@[.5:.95] picks the
best checkpoint: on a validation split of a few dozen images it moves less from one
epoch to the next.
"""

from __future__ import annotations

import json
import os
from typing import NamedTuple

import keras
import numpy as np

from common.files import write_json
from common.labels import PET_INSTANCES, Classes
from datasets.geometry import fit_whole, restore
from datasets.instance_stream import training_stream as instance_stream
from datasets.instances import (InstanceExample, annotations_path, load_record,
                                read_annotations, read_categories, read_instances)
from datasets.stream import split_paths
from learning.coco import evaluate_masks, results_from_masks
from learning.evaluators import Evaluator
from learning.semantic import TrainingData

layout = ("images/", "annotations.json")  # what a split folder holds
history_columns = ("category_loss", "mask_loss", "val_mask_ap", "val_mask_ap75")
resizes = ("longer",)  # what --resize may be
default_resize = "longer"  # SOLO sees each image whole (no object cut)
clipnorm = 5.0  # SOLO's focal loss can spike early on; --clipnorm 0 turns it off
DRAW_SCORE_THRESHOLD = 0.3  # drawn instances score at least this (mask AP takes all)
default_classes = PET_INSTANCES  # what a run that recorded no classes finds (2 outputs)


class MaskAPEvaluator(Evaluator):
    """COCO mask AP50 as the score that picks the best checkpoint (higher is better).

    Its worst score is -1, below any AP, so the first epoch is saved as the best even
    when its AP is 0."""

    name = "mask_ap50"
    mode = "max"
    worst_score = -1.0

    def score_confusion(self, cm):
        raise TypeError("mask AP is computed from instances, not a confusion matrix")


class InstanceValidation(NamedTuple):
    """The validation images (in memory, at their own sizes), a COCO annotations
    file holding exactly them, which `MaskAPScore` scores against, and the COCO id
    of each model class there (None: class + 1)."""

    examples: list
    annotations: str
    category_ids: list | None = None


def demo_root(name: str = "demo") -> str:
    """The built-in instance demo (64 x 64 pets, drawn on first use)."""
    from datasets.instances import ensure_instance_demo
    if name != "demo":
        raise ValueError(f"--data {name} is a demo for the semantic models; an instance "
                         f"model trains on --data demo (pets) or a COCO folder")
    return ensure_instance_demo()


def read_classes(train_dir: str) -> Classes:
    """The categories of `train_dir/annotations.json`, in id order: SOLO's classes
    (no background: a cell without an object has no class)."""
    return Classes(tuple(name for _, name in read_categories(train_dir)))


def evaluator(args):
    """Mask AP50, always: --evaluator scores pixels, which SOLO does not label."""
    return MaskAPEvaluator()


def read_training_data(train_dir: str, args, model) -> TrainingData:
    """The records of `train_dir`, split by --val-fraction and --seed; the validation
    images are held in memory and their annotations written to
    `OUT/val_annotations.json` (all training images when the split leaves none)."""
    given = [flag for flag, on in (("--in-memory", args.in_memory),
                                   ("--skip-bad", args.skip_bad),
                                   ("--evaluator", args.evaluator)) if on]
    if given:
        raise ValueError(f"{', '.join(given)} does not apply to an instance model "
                         f"(--model {args.model}); its score is mask AP50")
    records = read_annotations(train_dir)
    by_path = {r["path"]: r for r in records}
    train, val = split_paths(list(by_path), args.val_fraction, args.seed)
    val = val or train
    print(f"data: {len(train)} training and {len(val)} validation images from "
          f"{train_dir}")
    val_ids = sorted(int(by_path[p]["image_id"]) for p in val)
    truth = write_subset_annotations(annotations_path(train_dir), val_ids,
                                     os.path.join(args.out, "val_annotations.json"))
    examples = [InstanceExample(by_path[p]["image_id"],
                                os.path.splitext(os.path.basename(p))[0],
                                *load_record(by_path[p])) for p in val]
    ids = [i for i, _ in read_categories(train_dir)]
    return TrainingData([by_path[p] for p in train],
                        InstanceValidation(examples, truth, ids),
                        {"train_images": len(train), "val_images": len(val),
                         "val_ids": val_ids})


def write_subset_annotations(annotations_path: str, image_ids, out_path: str) -> str:
    """Writes the COCO annotations of `image_ids` only (e.g. the validation split of a
    training folder) to `out_path`, for COCOeval; returns `out_path`."""
    with open(annotations_path) as f:
        coco = json.load(f)
    keep = {int(i) for i in image_ids}
    coco["images"] = [im for im in coco["images"] if im["id"] in keep]
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] in keep]
    write_json(out_path, coco)
    return out_path


# ----------------------------------------------------------------------- training


def num_examples(train_set) -> int:
    return len(train_set)


def loss(model):
    """None: `SOLO.compute_loss` takes the batch's targets to its loss itself."""
    return None


def metrics(model):
    """None compiled: `SOLO.compute_loss` tracks its own loss terms."""
    return None


def training_stream(train_set, model, batch_size: int, *, seed: int, first_epoch: int,
                    num_epochs: int, skip_batches: int, augment: str, num_replicas: int,
                    resize: str = "longer", context=None):
    return instance_stream(
        train_set, model.input_size, batch_size, seed=seed, first_epoch=first_epoch,
        num_epochs=num_epochs, skip_batches=skip_batches, augment=augment,
        num_replicas=num_replicas, pipeline=context.input_pipeline_id if context else 0,
        num_pipelines=context.num_input_pipelines if context else 1)


def validation_data(val_set, model, batch_size: int, num_replicas: int,
                    resize: str = "longer"):
    """None: `MaskAPScore` validates, after each epoch."""
    return None


def scorers(model, val_set, batch_size: int) -> list:
    return [MaskAPScore(val_set, batch_size)]


class MaskAPScore(keras.callbacks.Callback):
    """At each epoch end, before the article's epoch end reads the score: the
    validation mask AP, AP50 and AP75 into fit's logs (`val_mask_ap`, ...)."""

    def __init__(self, validation: InstanceValidation, batch_size: int):
        super().__init__()
        self.validation, self.batch_size = validation, batch_size

    def on_epoch_end(self, epoch, logs=None):
        results = predict_coco_results(self.model, self.validation.examples,
                                       self.model.input_size, self.batch_size,
                                       self.validation.category_ids)
        scores, _ = evaluate_masks(self.validation.annotations, results)
        logs.update({f"val_{k}": v for k, v in scores.items()})


def predict_coco_results(model, examples, image_size: int, batch_size: int = 8,
                         category_ids=None) -> list:
    """COCO results (`learning.coco.results_from_masks`, with `category_ids`) of
    `model.predict_instances` on `examples` (`InstanceExample`s): each image is
    fitted into `image_size` as in training, and its masks are mapped back to its
    own size."""
    results = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        fitted = [fit_whole(e.image, image_size, "longer", model.output_stride,
                            square=True) for e in chunk]
        images = np.stack([image for image, _ in fitted])
        for example, (_, scaled), found in zip(chunk, fitted,
                                               model.predict_instances(images)):
            masks = restore(found["masks"], scaled, *example.image.shape[:2])
            results += results_from_masks(example.image_id, masks, found["classes"],
                                          found["scores"], category_ids)
    return results


# ----------------------------------------------------------------------- test, draw


def test(model, test_dir: str, size: int, args, run_dir: str, draws: str,
         classes: Classes = PET_INSTANCES) -> dict:
    """test.py: COCO results in `RUN/instances_pred.json`, the mask AP table, and an
    overlay per image (image | truth | prediction, instances scoring at least
    `DRAW_SCORE_THRESHOLD`, named by `classes`, the model's); returns metrics.json's
    content. The test file's categories are matched to `classes` by name."""
    from learning.visualize import draw_instances, save_rgb, zoom
    from learning.coco import decoded_results
    note_semantic_flags(args)
    found_ids = {name: i for i, name in read_categories(test_dir)}
    missing = [n for n in classes.names if n not in found_ids]
    if missing:
        raise ValueError(f"{annotations_path(test_dir)} has no category {missing}; the "
                         f"model's classes are {', '.join(classes.names)}")
    ids = [found_ids[n] for n in classes.names]
    examples = read_instances(test_dir, classes.names)
    if not examples:
        raise ValueError(f"{annotations_path(test_dir)} lists no image to test on")
    print(f"testing on {len(examples)} images of {test_dir} at {size}x{size}")
    results = predict_coco_results(model, examples, size, args.batch_size, ids)
    pred_path = os.path.join(run_dir, "instances_pred.json")
    write_json(pred_path, results)
    scores, table = evaluate_masks(annotations_path(test_dir), results)
    print(table, end="")
    print(f"mask AP {scores['mask_ap']:.4f} | AP50 {scores['mask_ap50']:.4f} | "
          f"AP75 {scores['mask_ap75']:.4f}")
    os.makedirs(draws, exist_ok=True)
    shown = examples[:args.max_draws] if args.max_draws is not None else examples
    for example in shown:
        found = [r for r in results if r["image_id"] == example.image_id
                 and r["score"] >= DRAW_SCORE_THRESHOLD]
        panel = np.concatenate([
            zoom(example.image),
            draw_instances(example.image, example.masks, example.classes,
                           names=classes.names),
            draw_instances(example.image, *decoded_results(found, example.image.shape[:2],
                                                           ids), names=classes.names)], 1)
        save_rgb(os.path.join(draws, example.name + ".png"), panel)
    print(f"predictions: {pred_path}")
    print(f"overlays (image | truth | prediction): {len(shown)} in {draws}/")
    return {**scores, "test_dir": test_dir, "num_images": len(examples),
            "num_predictions": len(results), "image_size": size,
            "predictions": pred_path}


def renderer(model, args, classes: Classes = PET_INSTANCES):
    """draw.py: a function image -> the picture, at the image's own size, with the
    instances scoring `DRAW_SCORE_THRESHOLD` or more, named by `classes`."""
    from learning.visualize import draw_instances
    note_semantic_flags(args)

    def render(image):
        fitted, scaled = fit_whole(image, model.input_size, "longer",
                                   model.output_stride, square=True)
        found = model.predict_instances(fitted[None])[0]
        kept = found["scores"] >= DRAW_SCORE_THRESHOLD
        found = {k: v[kept] for k, v in found.items()}
        masks = restore(found["masks"], scaled, *image.shape[:2])
        return draw_instances(image, masks, found["classes"], found["scores"], args.alpha,
                              names=classes.names)
    return render


def note_semantic_flags(args) -> None:
    """Says so when test.py/draw.py flags for semantic models are given to SOLO."""
    given = [f"--{name}" for name in ("tta", "crf") if getattr(args, name, False)]
    if given:
        print(f"note: {' and '.join(given)} refine semantic predictions; ignored for SOLO")
