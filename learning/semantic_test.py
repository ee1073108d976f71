"""What test.py and draw.py do for a semantic model (`learning.semantic` lists them in
the task table).

A run trained with `--resize none` (the article's) is scored on the same centre
crops it trained on. One trained with `--resize longer` or `shorter` is scored on
every photo at its own size: the photo is scaled as in training, predicted, and the
class probabilities are resized back before the arg-max, then compared with the whole
mask (`learning.utils.evaluate_photos`). metrics.json says which (`scored_on`).
"""

from __future__ import annotations

import numpy as np

from common.labels import PETS, Classes
from datasets import data as dataset
from datasets.check import usable_images
from datasets.classes import read_classes
from datasets.geometry import fit_whole, restore
from datasets.stream import make_dataset


def test(model, test_dir: str, size: int, args, run_dir: str, draws: str,
         classes: Classes = PETS) -> dict:
    """test.py: scores `model` on `test_dir` at `size` (the article's accuracy, the
    honest one, per-class, mean, boundary and foreground IoU), prints the table and
    draws image | truth | prediction per image into `draws`; returns metrics.json's
    content. `classes` are the model's (names and colours); the test masks are read
    as the folder's own class set says, which must have as many classes."""
    from learning.utils import evaluate, evaluate_photos, refinement_settings
    from learning.visualize import Drawer
    from models.tta import label_predictor, probability_predictor, scaled_sizes

    resize = getattr(args, "resize", None) or "none"
    data_classes = check_test_classes(read_classes(test_dir), classes, test_dir)
    paths, skipped = usable_images(test_dir, args.skip_bad, classes=data_classes)
    model.check_input_size(size, size)
    tta, crf = refinement_settings(args)
    labels, probabilities = (label_predictor(model, tta, crf),
                             probability_predictor(model, tta, crf))
    if tta is not None:  # the sizes the scales give here (and a clear error, early)
        tta = {**tta, "sizes": [list(s) for _, s in
                                scaled_sizes(model, size, size, tta["scales"])]}
    scored_on = "crops" if resize == "none" else "photos"
    print(f"testing on {len(paths)} images of {test_dir}"
          + (f" at {size}x{size}" if resize == "none" else
             f" at their own size (scaled by --resize {resize} to {size})")
          + (f" ({len(skipped)} bad file(s) skipped, listed above)" if skipped else "")
          + (f"; TTA at {tta['sizes']}, flipped" if tta else "")
          + ("; dense CRF" if crf else ""))
    drawer = Drawer([dataset.image_name(p) for p in paths], draws, args.max_draws,
                    classes=classes)
    try:
        if resize == "none":
            stream = make_dataset(paths, size, args.batch_size, with_padding=True,
                                  classes=data_classes)
            scores = evaluate(model, stream, progress=True, on_batch=drawer,
                              predict=labels)
        else:
            scores = evaluate_photos(
                model, paths, size, resize, probabilities,
                data_classes, args.batch_size, progress=True,
                on_image=lambda i, t, p: drawer(i[None], t[None], p[None]))
    finally:
        drawer.close()
    summary = scores.summary(classes.names)
    print_table(summary)
    print(f"overlays: {drawer.count} in {draws}/")
    return {**summary, "test_dir": test_dir, "num_images": len(paths),
            "image_size": size, "resize": resize, "scored_on": scored_on,
            "skipped_files": skipped, "tta": tta, "crf": crf}


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


def print_table(summary: dict) -> None:
    print(f"{'metric':<32}{'value':>8}")
    print("-" * 40)
    print(f"{'pixel accuracy (article way)':<32}"
          f"{summary['article_pixel_accuracy']:>8.4f}")
    print(f"{'pixel accuracy (dataset-level)':<32}{summary['pixel_accuracy']:>8.4f}")
    for name, iou in summary["per_class_iou"].items():
        shown = "n/a" if iou is None else f"{iou:.4f}"
        print(f"{'IoU ' + name:<32}{shown:>8}")
    print(f"{'mean IoU':<32}{summary['mean_iou']:>8.4f}")
    band = f"mean IoU, {summary['boundary_band_px']} px of a boundary"
    print(f"{band:<32}{summary['boundary_mean_iou']:>8.4f}")
    print(f"{'objects vs background, IoU':<32}{summary['foreground_iou']:>8.4f}")


def renderer(model, args, classes: Classes = PETS):
    """draw.py: a function image (H, W, 3) -> the picture to save (the colours of
    `classes` blended onto the image at its own size, with a legend of their names).
    A run trained with `--resize longer/shorter` sees each photo scaled that way;
    otherwise a photo larger than --max-side is shrunk to it first."""
    from learning.utils import refinement_settings
    from learning.visualize import add_legend, overlay
    from models.tta import probability_predictor
    predict = probability_predictor(model, *refinement_settings(args))
    resize = getattr(args, "resize", None) or "none"

    def render(image):
        label = predict_full_size(model, image, predict, resize, args.max_side)
        return add_legend(overlay(image, label, args.alpha, classes), classes)
    return render


def predict_full_size(model, image, predict, resize: str = "none",
                      max_side: int = 1024):
    """Labels (H, W) of an image of any size: scaled as the run trained
    (`datasets.geometry.fit_whole`; for `none`, shrunk to `max_side` if larger and
    padded by reflection), predicted (`predict(images) -> probabilities`), and the
    probabilities resized back before the arg-max."""
    h, w = image.shape[:2]
    if resize == "none":
        size, resize = (max_side, "longer") if max(h, w) > max_side else (0, "none")
        x, scaled = fit_whole(image, size, resize, model.output_stride,
                              pad_mode="reflect")
    else:
        x, scaled = fit_whole(image, model.input_size, resize, model.output_stride,
                              square=resize == "longer")
    return restore(predict(x[None])[0], scaled, h, w).argmax(-1).astype(np.uint8)
