"""The semantic task: a class label for every pixel (GCN, FCN, DeepLab v3+, U-Net,
SegNet). What train.py, test.py and draw.py do for it; `learning.tasks` lists it.

Data: a folder with `train/` and `test/`, each `images/NAME.jpg` + `masks/NAME.png`
(Oxford trimaps, or class ids as the folder's `classes.json` says:
`datasets.classes`), streamed from disk (`datasets.stream`) or held in memory
(`datasets.data.DataSet`). Scores: pixel accuracy (the article's way and the honest
one) and IoU from one confusion matrix (`learning.evaluators`), a row per class.
"""

from __future__ import annotations

import logging
import os
from typing import NamedTuple

import numpy as np

from common.labels import PETS, Classes
from datasets import data as dataset
from datasets.classes import classes_of_paths, read_classes
from datasets.stream import (make_dataset, make_training_stream,
                             replica_validation_batches, split_paths)
from learning.evaluators import EVALUATORS
from models.losses import make_loss
from models.metrics import make_metrics

layout = ("images/", "masks/")  # what a split folder holds
history_columns = ()
clipnorm = None  # no gradient clipping unless --clipnorm asks
default_classes = PETS  # what a run that recorded no classes predicts (3 outputs)


class TrainingData(NamedTuple):
    """What train.py trains on: the two sets and what config.json records of them."""

    train: object
    val: object
    info: dict


def demo_root(name: str = "demo") -> str:
    """A built-in demo set, drawn on first use in seconds: `demo`, cats and dogs;
    `demo-shapes`, five classes of shapes with a `classes.json`."""
    if name == "demo-shapes":
        from datasets import demo_shapes
        return demo_shapes.ensure(demo_shapes.DEFAULT_ROOT)
    from datasets import demo
    return demo.ensure(demo.DEFAULT_ROOT)


def evaluator(args):
    """The score that picks the best checkpoint: --evaluator (pixel accuracy)."""
    return EVALUATORS[args.evaluator or "accuracy"]()


def read_training_data(train_dir: str, args, model) -> TrainingData:
    """The usable images of `train_dir` (each pair decoded once; bad files stop the
    run unless --skip-bad), split into training and validation by --val-fraction
    and --seed; in memory with --in-memory."""
    paths, skipped = good_paths(train_dir, args.skip_bad)
    train, val = split_paths(paths, args.val_fraction, args.seed)
    print(f"data: {len(train)} training and {len(val)} validation images from "
          f"{train_dir}" + (f"; {len(skipped)} bad file(s) skipped (listed above, and "
                            f"in {args.out}/config.json)" if skipped else ""))
    info = {"train_images": len(train), "val_images": len(val),
            "val_names": [dataset.image_name(p) for p in val], "skipped_files": skipped}
    if args.in_memory:
        size = model.input_size
        return TrainingData(in_memory(train, size), in_memory(val, size) if val else None,
                            info)
    return TrainingData(train, val or None, info)


def in_memory(paths: list[str], image_size) -> dataset.DataSet:
    """A `DataSet` of the given files (uint8 arrays; ~1 MB per 512x512 pair)."""
    classes = classes_of_paths(paths)
    examples = [dataset.load_example(p, image_size, True, classes) for p in paths]
    return dataset.DataSet(np.stack([e.image for e in examples]),
                           np.stack([e.label for e in examples]),
                           names=[dataset.image_name(p) for p in paths])


def good_paths(data_dir: str, skip_bad: bool, with_label: bool = True,
               classes: Classes | None = None) -> tuple[list[str], list[str]]:
    """Every usable image of `data_dir`, after decoding each pair once, and the
    problems (one `"FILE: what is wrong"` line each) of the files left out; masks
    are read as `classes` (None: the folder's) encode them.

    Bad files stop the run with the full list (`DatasetError`) unless `skip_bad`,
    which logs them and goes on with the rest.
    """
    paths = dataset.list_images(data_dir)
    good, problems = dataset.check_files(paths, with_label, progress=len(paths) > 200,
                                         classes=classes or read_classes(data_dir))
    for orphan in dataset.orphan_masks(data_dir) if with_label else []:
        logging.warning("%s: mask has no image; ignored", orphan)
    dataset.settle_bad_files(data_dir, problems, len(paths), skip_bad)
    if not good:
        raise FileNotFoundError(f"no usable image in {data_dir}")
    return good, [str(p) for p in problems]


# ----------------------------------------------------------------------- training


def num_examples(train_set) -> int:
    return (train_set.num_examples if isinstance(train_set, dataset.DataSet)
            else len(train_set))


def loss(model):
    """The pixel loss the model names (`models.losses`)."""
    return make_loss(model.loss_name)


def metrics(model) -> list:
    """The compiled metrics: dataset-level pixel accuracy and mean IoU."""
    return make_metrics(model.num_classes)


def training_stream(train_set, model, batch_size: int, *, seed: int, first_epoch: int,
                    num_epochs: int, skip_batches: int, augment: str, num_replicas: int,
                    context=None):
    """Every remaining epoch's batches in one stream (`make_training_stream`)."""
    return make_training_stream(
        train_set, model.input_size, batch_size, seed=seed, first_epoch=first_epoch,
        num_epochs=num_epochs, skip_batches=skip_batches, augment=augment,
        num_replicas=num_replicas, pipeline=context.input_pipeline_id if context else 0,
        num_pipelines=context.num_input_pipelines if context else 1)


def validation_data(val_set, model, batch_size: int, num_replicas: int):
    """The validation batches `fit` scores after each epoch (None: no validation)."""
    if val_set is None:
        return None
    if num_replicas > 1:
        return replica_validation_batches(val_set, model.input_size, batch_size,
                                          num_replicas)
    if isinstance(val_set, dataset.DataSet):
        import tensorflow as tf
        return tf.data.Dataset.from_tensor_slices(
            (val_set.images, val_set.labels)).batch(batch_size)
    return make_dataset(val_set, model.input_size, batch_size)


def scorers(model, val_set, batch_size: int) -> list:
    """No extra callbacks: `fit`'s own validation puts the scores in the logs."""
    return []


# ----------------------------------------------------------------------- test, draw


def test(model, test_dir: str, size: int, args, run_dir: str, draws: str,
         classes: Classes = PETS) -> dict:
    """test.py: scores `model` on `test_dir` at `size` (the article's accuracy, the
    honest one, per-class and mean IoU), prints the table and draws an overlay per
    image (image | truth | prediction) into `draws`; returns metrics.json's content.
    `classes` are the model's (names and colours); the test masks are read as the
    folder's own class set says, which must have as many classes."""
    from learning.utils import evaluate, refinement_settings
    from learning.visualize import Drawer
    from models.tta import label_predictor, scaled_sizes

    data_classes = check_test_classes(read_classes(test_dir), classes, test_dir)
    paths, skipped = good_paths(test_dir, args.skip_bad, classes=data_classes)
    model.check_input_size(size, size)
    tta, crf = refinement_settings(args)
    predict = label_predictor(model, tta, crf)
    if tta is not None:  # the sizes the scales give here (and a clear error, early)
        tta = {**tta, "sizes": [list(s) for _, s in
                                scaled_sizes(model, size, size, tta["scales"])]}
    print(f"testing on {len(paths)} images of {test_dir} at {size}x{size}"
          + (f" ({len(skipped)} bad file(s) skipped, listed above)" if skipped else "")
          + (f"; TTA at {tta['sizes']}, flipped" if tta else "")
          + ("; dense CRF" if crf else ""))
    drawer = Drawer([dataset.image_name(p) for p in paths], draws, args.max_draws,
                    classes=classes)
    stream = make_dataset(paths, size, args.batch_size, with_padding=True,
                          classes=data_classes)
    try:
        cm, article = evaluate(model, stream, progress=True, on_batch=drawer,
                               predict=predict)
    finally:
        drawer.close()
    summary = cm.summary(list(classes.names))
    print_table(summary, article.result)
    print(f"overlays: {drawer.count} in {draws}/")
    return {**summary, "article_pixel_accuracy": article.result, "test_dir": test_dir,
            "num_images": len(paths), "image_size": size, "skipped_files": skipped,
            "tta": tta, "crf": crf}


def check_test_classes(data: Classes, model: Classes, test_dir: str) -> Classes:
    """The test folder's class set `data`, once it has as many classes as the
    model; names that differ are only noted (the table names the model's)."""
    if data.num_classes != model.num_classes:
        raise ValueError(f"{test_dir} holds {data.num_classes} classes ({data.describe()})"
                         f" but the model predicts {model.num_classes} "
                         f"({model.describe()}); test on data of the classes it learned")
    if data.names != model.names:
        print(f"note: {test_dir} names its classes {data.describe()}; the model's "
              f"run names them {model.describe()} (the table uses the run's)")
    return data


def print_table(summary: dict, article: float) -> None:
    print(f"{'metric':<32}{'value':>8}")
    print("-" * 40)
    print(f"{'pixel accuracy (article way)':<32}{article:>8.4f}")
    print(f"{'pixel accuracy (dataset-level)':<32}{summary['pixel_accuracy']:>8.4f}")
    for name, iou in summary["per_class_iou"].items():
        shown = "n/a" if iou is None else f"{iou:.4f}"
        print(f"{'IoU ' + name:<32}{shown:>8}")
    print(f"{'mean IoU':<32}{summary['mean_iou']:>8.4f}")


def renderer(model, args, classes: Classes = PETS):
    """draw.py: a function image (H, W, 3) -> the picture to save (the colours of
    `classes` blended onto the image at its own size, with a legend of their names)."""
    from learning.utils import refinement_settings
    from learning.visualize import add_legend, overlay
    from models.tta import label_predictor
    predict = label_predictor(model, *refinement_settings(args))

    def render(image):
        label = predict_full_size(model, image, args.max_side, predict)
        return add_legend(overlay(image, label, args.alpha, classes), classes)
    return render


def predict_full_size(model, image, max_side: int, predict=None):
    """Labels (H, W) for an image of any size: shrink if needed, pad to the network's
    stride, predict (`predict(images) -> labels`, default `model.predict_labels`),
    then undo both."""
    import cv2
    h, w = image.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    x = image if scale == 1.0 else cv2.resize(
        image, (max(1, round(w * scale)), max(1, round(h * scale))),
        interpolation=cv2.INTER_AREA)
    s = model.output_stride
    sh, sw = x.shape[:2]
    ph, pw = -sh % s, -sw % s
    x = np.pad(x, ((0, ph), (0, pw), (0, 0)), mode="reflect" if min(sh, sw) > s else "edge")
    label = (predict or model.predict_labels)(x[None])[0, :sh, :sw]
    if scale != 1.0:
        label = cv2.resize(label, (w, h), interpolation=cv2.INTER_NEAREST)
    return label
