"""Training SOLO (`models.solo`) with the project's trainer, scored by COCO mask AP.

`InstanceOptimizer` is `MomentumOptimizer` with three parts swapped: the training
stream (`instance_training_stream`: instance batches `(images, {"masks", "classes"})`
in a seeded order per epoch, as the semantic stream), the compile (an optimizer only,
since `SOLOModel.compute_loss` takes the targets itself) and the validation score. Each
epoch ends with `MaskAPScore`: the validation images are predicted, their masks mapped
back to the images' own sizes and scored by pycocotools' COCOeval
(`learning.coco.evaluate_masks`) against `RUN/val_annotations.json`. Its mask AP50 goes
into fit's logs as `val_mask_ap50`, where the article's epoch end reads a score (best
checkpoint, plateau rule, history.csv, the learning curve); AP and AP75 are recorded
beside it. Checkpoints, `state.json`, `--resume` and Ctrl-C are the semantic run's.

AP50 rather than AP@[.5:.95] picks the best checkpoint: on a validation split of a few
dozen images it moves less from one epoch to the next.
"""

from __future__ import annotations

import json

import keras
import numpy as np

from datasets.data import as_size
from datasets.instances import _example_loader, fit_to_size, restore_masks
from datasets.augment import epoch_order
from learning import callbacks as cbs
from learning.coco import evaluate_masks, results_from_masks
from learning.evaluators import Evaluator
from learning.optimizers import MomentumOptimizer
from learning.utils import write_json


class MaskAPEvaluator(Evaluator):
    """COCO mask AP50 as the score that picks the best checkpoint (higher is better).

    Its worst score is -1, below any AP, so the first epoch is saved as the best even
    when its AP is 0."""

    name = "mask_ap50"
    mode = "max"
    worst_score = -1.0

    def score_confusion(self, cm):
        raise TypeError("mask AP is computed from instances, not a confusion matrix")


def instance_training_stream(records: list[dict], image_size, batch_size: int, *,
                             seed: int, first_epoch: int, num_epochs: int,
                             skip_batches: int = 0, augment: str = "flip",
                             max_instances: int = 8):
    """Every remaining epoch's batches in one `tf.data` stream, for one `fit`.

    Epoch e visits the images of `records` (`datasets.instances.read_annotations`)
    in the order and with the flips of `datasets.augment.epoch_order(n, seed, e)`, the
    semantic stream's rule, so a resumed run sees the same batches; its first
    `skip_batches` batches (done before an interruption) are left out. Batches are
    `datasets.instances.make_instance_dataset`'s.
    """
    import tensorflow as tf

    if augment not in ("none", "flip"):
        raise ValueError(f"SOLO trains with --augment none or flip. Received: {augment!r}")
    size = as_size(image_size)
    load = _example_loader(records, size, max_instances)
    plans = [epoch_order(len(records), seed, e, augment)
             for e in range(first_epoch, num_epochs)]
    orders = tf.constant(np.stack([p.order for p in plans]).astype(np.int64))
    flips = tf.constant(np.stack([p.flips for p in plans]).astype(bool))

    def batches_of(e):  # epoch e's batches of (indices, flips); the last may be short
        return tf.data.Dataset.from_tensor_slices((orders[e], flips[e])).batch(batch_size)

    def load_batch(indices, flip):
        examples = [load(i, f) for i, f in zip(indices, flip)]
        return tuple(np.stack(parts) for parts in zip(*examples))

    def load_tf(indices, flip):
        images, masks, classes = tf.numpy_function(
            load_batch, [indices, flip], [tf.uint8, tf.uint8, tf.int32], stateful=False)
        images.set_shape((None,) + size + (3,))
        masks.set_shape((None, max_instances) + size)
        classes.set_shape((None, max_instances))
        return images, {"masks": masks, "classes": classes}

    ds = tf.data.Dataset.range(len(plans)).flat_map(batches_of).skip(skip_batches)
    ds = ds.map(load_tf, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def predict_coco_results(net, examples, image_size: int, batch_size: int = 8) -> list:
    """COCO results (`learning.coco.results_from_masks`) of `net.predict_instances` on
    `examples` (`datasets.instances.InstanceExample`s): each image is fitted into
    `image_size` as in training, and its masks are mapped back to its own size."""
    results = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        images = np.stack([fit_to_size(e.image, e.masks[:0], image_size)[0]
                           for e in chunk])
        for example, found in zip(chunk, net.predict_instances(images)):
            masks = restore_masks(found["masks"], *example.image.shape[:2])
            results += results_from_masks(example.image_id, masks, found["classes"],
                                          found["scores"])
    return results


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


class MaskAPScore(cbs.TrainerCallback):
    """At each epoch end, before the article's bookkeeping reads the score: the
    validation mask AP, AP50 and AP75 into fit's logs (`val_mask_ap`, ...)."""

    def after_epoch(self, t, logs):
        results = predict_coco_results(t.model, t.val_set, t.image_size, t.batch_size)
        metrics, _ = evaluate_masks(t.val_annotations, results)
        t.val_metrics = metrics
        logs.update({f"val_{k}": v for k, v in metrics.items()})


class InstanceHistoryWriter(cbs.HistoryWriter):
    """`HistoryWriter`'s files, and an epoch line with SOLO's losses and mask AP."""

    def epoch_line(self, t, row: dict) -> str:
        return (f"[epoch {row['epoch']}/{t.num_epochs}] loss {row['loss']:.4f} "
                f"(category {row['category_loss']:.4f}, mask {row['mask_loss']:.4f}) | "
                f"val mask AP50 {row['val_score']:.4f}, AP {row['val_mask_ap']:.4f}, "
                f"AP75 {row['val_mask_ap75']:.4f} | lr {row['lr']:.2e}"
                f"{' | best, saved' if row['best'] else ''}")


class InstanceOptimizer(MomentumOptimizer):
    """SGD with momentum and the article's plateau schedule, for SOLO.

    Args:
        model: a `models.solo.SOLO`.
        train_set: the training images as `datasets.instances.read_annotations`
            records (streamed from disk).
        val_set: the validation images, `InstanceExample`s (`read_instances`), held
            in memory, scored against `val_annotations`.
        val_annotations: a COCO annotations file holding exactly `val_set`'s images.
        **kwargs: `MomentumOptimizer`'s (image_size defaults to the model's
            input_size, which its scale ranges were set for), plus clipnorm (None: no clipping; clip each
            step's gradient to this global norm) and max_instances (8: instance
            slots per image).
    """

    def __init__(self, model, train_set, val_set, val_annotations: str, **kwargs):
        self.clipnorm = kwargs.pop("clipnorm", None)
        self.max_instances = kwargs.pop("max_instances", 8)
        self.val_annotations = val_annotations
        self.val_metrics = {}
        kwargs.setdefault("image_size", model.options["input_size"])  # SOLO's scales
        super().__init__(model, train_set, MaskAPEvaluator(), val_set, **kwargs)

    def _make_optimizer(self):
        return keras.optimizers.SGD(learning_rate=self.init_learning_rate,
                                    momentum=self.momentum, clipnorm=self.clipnorm)

    def _compile(self) -> None:
        # No loss or metrics: SOLOModel.compute_loss reads the targets dict itself.
        self.model.model.compile(optimizer=self._make_optimizer(),
                                 jit_compile=self.jit_compile)

    def _streams(self):
        import tensorflow as tf
        if tf.distribute.get_strategy().num_replicas_in_sync > 1:
            raise ValueError("SOLO trains on one device; use --strategy default")
        train = instance_training_stream(
            self.train_set, self.image_size, self.batch_size, seed=self.seed,
            first_epoch=self.curr_epoch, num_epochs=self.num_epochs,
            skip_batches=self.step_in_epoch, augment=self.augment,
            max_instances=self.max_instances)
        return train, None  # validation is MaskAPScore's, after each epoch

    def _callbacks(self, save_dir: str, verbose: bool) -> list:
        ours = super()._callbacks(save_dir, verbose)
        # after StepLosses (which flags a NaN loss), before PlateauSchedule reads it
        at = next(i for i, c in enumerate(ours) if isinstance(c, cbs.PlateauSchedule))
        ours = ours[:at] + [MaskAPScore(self)] + ours[at:]
        return [InstanceHistoryWriter(self, save_dir, verbose)
                if type(c) is cbs.HistoryWriter else c for c in ours]

    def finish_epoch(self, logs: dict) -> None:
        """The semantic row, with no train score (AP on the training set would cost
        an evaluation per epoch) and SOLO's loss terms and AP / AP75 added."""
        super().finish_epoch({**logs, self.evaluator.name: float("nan")})
        row = self.epochs[-1]
        row["train_score"] = None
        for key in ("category_loss", "mask_loss"):
            row[key] = float(logs[key]) if key in logs else None
        for key in ("mask_ap", "mask_ap75"):
            row[f"val_{key}"] = self.val_metrics.get(key)
