"""Helpers of test.py and the benchmarks: evaluation over a stream of crops or over
photos at their own size, and the --tta / --crf settings."""

from __future__ import annotations

import numpy as np

from common.labels import IGNORE_LABEL
from learning.evaluators import ArticleAccuracy, ConfusionMatrix, boundary_band


BOUNDARY_BAND = 3  # px: half-width of the band around class boundaries scored apart


class Scores:
    """What test.py reports, accumulated batch by batch: one confusion matrix of every
    counted pixel, the article's per-image accuracy, and one confusion matrix of the
    pixels within `band` pixels of a class boundary (`boundary_band`: what sharper
    masks improve, and a mean IoU over whole masks hardly sees)."""

    def __init__(self, num_classes: int, band: int = BOUNDARY_BAND):
        self.num_classes, self.band = num_classes, band
        self.cm, self.edge = ConfusionMatrix(num_classes), ConfusionMatrix(num_classes)
        self.article = ArticleAccuracy()

    def update(self, labels, pred, padding=None) -> None:
        """Adds images: labels and predictions (N, H, W); `padding` as the article's."""
        self.cm.update(labels, pred)
        self.article.update(labels, pred, padding)
        near = boundary_band(labels, self.band, self.num_classes, padding)
        self.edge.update(np.where(near, labels, IGNORE_LABEL), pred)

    def summary(self, names) -> dict:
        return {**self.cm.summary(list(names)),
                "article_pixel_accuracy": self.article.result,
                "boundary_mean_iou": self.edge.mean_iou, "boundary_band_px": self.band}


def evaluate(net, batches, num_classes: int | None = None, progress: bool = False,
             on_batch=None, predict=None) -> Scores:
    """Scores `net` on batches of `(images, labels[, padding])`.

    Predictions are folded into the scores batch by batch and then dropped, so any
    number of images fits in memory; `on_batch(images, labels, pred)` sees each batch
    on its way (test.py draws there). `predict(images) -> labels` replaces
    `net.predict_labels` (e.g. `models.tta.label_predictor` for --tta / --crf).
    """
    predict = predict or net.predict_labels
    scores = Scores(num_classes or net.num_classes)
    if progress:
        from tqdm import tqdm
        batches = tqdm(batches, desc="evaluating", unit="batch", leave=False)
    for batch in batches:
        images, labels = np.asarray(batch[0]), np.asarray(batch[1])
        padding = np.asarray(batch[2]) if len(batch) > 2 else None
        pred = predict(images)
        scores.update(labels, pred, padding)
        if on_batch is not None:
            on_batch(images, labels, pred)
    return scores


def evaluate_photos(net, paths, size: int, resize: str, predict, classes,
                    batch_size: int = 8, progress: bool = False,
                    on_image=None) -> Scores:
    """Scores `net` on each photo at its own size: the photo is scaled as `resize`
    says (`datasets.geometry.fit_whole`), `predict(images) -> probabilities` runs on
    it, and the probabilities are resized back bilinearly before the arg-max, then
    compared with the whole, unscaled mask. `on_image(image, label, pred)` sees each."""
    from datasets.data import load_example
    from datasets.geometry import fit_whole, restore
    scores = Scores(net.num_classes)
    square = resize == "longer"  # the network trained on S x S squares
    step = batch_size if square else 1  # other sizes differ from photo to photo
    chunks = range(0, len(paths), step)
    if progress:
        from tqdm import tqdm
        chunks = tqdm(chunks, desc="evaluating", unit="batch", leave=False)
    for start in chunks:
        examples = [load_example(p, None, True, classes) for p in paths[start:start + step]]
        fitted = [fit_whole(e.image, size, resize, net.output_stride, square)
                  for e in examples]
        probs = predict(np.stack([image for image, _ in fitted]))
        for example, (_, scaled), p in zip(examples, fitted, probs):
            pred = restore(p, scaled, *example.label.shape).argmax(-1).astype(np.uint8)
            scores.update(example.label[None], pred[None])
            if on_image is not None:
                on_image(example.image, example.label, pred)
    return scores


def refinement_settings(args) -> tuple[dict | None, dict | None]:
    """`(tta, crf)` options of `models.tta.label_predictor` from test.py's and draw.py's
    --tta, --tta-scales and --crf (None for a flag not given); metrics.json records
    them."""
    from models.crf import DEFAULT_SETTINGS
    if args.tta_scales and not args.tta:
        raise ValueError("--tta-scales needs --tta")
    scales = args.tta_scales or [0.75, 1.0, 1.25]
    tta = {"scales": list(scales), "flip": True} if args.tta else None
    crf = dict(DEFAULT_SETTINGS) if args.crf else None
    return tta, crf
