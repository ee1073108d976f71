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
from datasets.check import usable_images
from datasets.classes import classes_of_paths, read_classes
from datasets.replicas import prefetched
from datasets.stream import (make_dataset, make_training_stream,
                             replica_validation_batches, split_paths)
from learning.evaluators import EVALUATORS
from models.losses import make_loss
from models.metrics import make_metrics

layout = ("images/", "masks/")  # what a split folder holds
history_columns = ()
resizes = ("none", "longer", "shorter")  # what --resize may be
default_resize = "none"  # the article's centre crop or pad (--resize)
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
    paths, skipped = usable_images(train_dir, args.skip_bad)
    if args.resize == "none":
        note_centre_crops(paths, model.input_size)
    train, val = split_paths(paths, args.val_fraction, args.seed)
    print(f"data: {len(train)} training and {len(val)} validation images from "
          f"{train_dir}" + (f"; {len(skipped)} bad file(s) skipped (listed above, and "
                            f"in {args.out}/config.json)" if skipped else ""))
    info = {"train_images": len(train), "val_images": len(val),
            "val_names": [dataset.image_name(p) for p in val], "skipped_files": skipped}
    if args.in_memory:
        size, resize = model.input_size, args.resize
        return TrainingData(in_memory(train, size, resize),
                            in_memory(val, size, resize) if val else None, info)
    return TrainingData(train, val or None, info)


def note_centre_crops(paths: list[str], size: int) -> None:
    """Says so when --resize none would train on the middle of photos far larger than
    `size` (median shorter side over twice it), where --resize longer sees them whole."""
    from PIL import Image
    sides = []
    for path in paths[::max(1, len(paths) // 50)]:  # the headers of about 50 files
        with Image.open(path) as im:
            sides.append(min(im.size))
    median = int(np.median(sides))
    if median > 2 * size:
        print(f"note: --image-size {size} with --resize none trains on the middle "
              f"{size}x{size} of photos whose shorter side is about {median} px, "
              f"{(size / median) ** 2:.0%} of each at most: the network may rarely see "
              f"background. --resize longer scales each photo whole into {size}x{size} "
              f"(docs/data.md)")


def in_memory(paths: list[str], image_size, resize: str = "none") -> dataset.DataSet:
    """A `DataSet` of the given files (uint8 arrays; ~1 MB per 512x512 pair)."""
    classes = classes_of_paths(paths)
    examples = [dataset.load_example(p, image_size, True, classes, resize)
                for p in paths]
    return dataset.DataSet(np.stack([e.image for e in examples]),
                           np.stack([e.label for e in examples]),
                           names=[dataset.image_name(p) for p in paths])


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
                    resize: str = "none", context=None):
    """Every remaining epoch's batches in one stream (`make_training_stream`)."""
    return make_training_stream(
        train_set, model.input_size, batch_size, seed=seed, first_epoch=first_epoch,
        num_epochs=num_epochs, skip_batches=skip_batches, augment=augment,
        num_replicas=num_replicas, pipeline=context.input_pipeline_id if context else 0,
        num_pipelines=context.num_input_pipelines if context else 1, resize=resize)


def validation_data(val_set, model, batch_size: int, num_replicas: int,
                    resize: str = "none"):
    """The validation batches `fit` scores after each epoch (None: no validation):
    fitted as the training images are."""
    if val_set is None:
        return None
    if num_replicas > 1:
        return replica_validation_batches(val_set, model.input_size, batch_size,
                                          num_replicas, resize)
    if isinstance(val_set, dataset.DataSet):
        import tensorflow as tf
        return prefetched(tf.data.Dataset.from_tensor_slices(
            (val_set.images, val_set.labels)).batch(batch_size))
    return make_dataset(val_set, model.input_size, batch_size, resize=resize)


def scorers(model, val_set, batch_size: int) -> list:
    """No extra callbacks: `fit`'s own validation puts the scores in the logs."""
    return []


# The test.py and draw.py of the task live in their own module.
from learning.semantic_test import renderer, test  # noqa: E402,F401
