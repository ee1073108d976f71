"""Helpers of test.py and the benchmarks: evaluation over a stream, and the --tta /
--crf settings."""

from __future__ import annotations

import numpy as np

from learning.evaluators import ArticleAccuracy, ConfusionMatrix


def evaluate(net, batches, num_classes: int | None = None, progress: bool = False,
             on_batch=None, predict=None):
    """Scores `net` on batches of `(images, labels[, padding])`.

    Predictions are folded into the metrics batch by batch and then dropped, so any
    number of images fits in memory; `on_batch(images, labels, pred)` sees each batch
    on its way (test.py draws there). `predict(images) -> labels` replaces
    `net.predict_labels` (e.g. `models.tta.label_predictor` for --tta / --crf).
    Returns `(ConfusionMatrix, ArticleAccuracy)`.
    """
    predict = predict or net.predict_labels
    cm = ConfusionMatrix(num_classes or net.num_classes)
    article = ArticleAccuracy()
    if progress:
        from tqdm import tqdm
        batches = tqdm(batches, desc="evaluating", unit="batch", leave=False)
    for batch in batches:
        images, labels = np.asarray(batch[0]), np.asarray(batch[1])
        padding = np.asarray(batch[2]) if len(batch) > 2 else None
        pred = predict(images)
        cm.update(labels, pred)
        article.update(labels, pred, padding)
        if on_batch is not None:
            on_batch(images, labels, pred)
    return cm, article


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
