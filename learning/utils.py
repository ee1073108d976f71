"""Helpers of the training and test scripts: evaluation over a stream, learning curves,
history files and small JSON utilities."""

from __future__ import annotations

import contextlib
import csv
import json
import os

import numpy as np

from learning.evaluators import ArticleAccuracy, ConfusionMatrix
from models.checkpoint import temporary_beside


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


@contextlib.contextmanager
def atomic_path(path: str, suffix: str):
    """Yields a temporary path beside `path`; flushes it to disk and renames it over
    `path` on success and removes it on failure, so readers never see a half-written
    file, even after a power loss."""
    fd, tmp = temporary_beside(path, suffix)
    os.close(fd)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path: str, obj) -> None:
    """Writes JSON atomically."""
    with atomic_path(path, ".json") as tmp, open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)


def write_history_csv(path: str, epochs: list[dict]) -> None:
    """One row per epoch: epoch, loss, train score, validation score, learning rate..."""
    if not epochs:
        return
    with atomic_path(path, ".csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(epochs[0].keys()))
        writer.writeheader()
        writer.writerows(epochs)


def plot_learning_curve(path: str, step_losses: list[float], epochs: list[dict],
                        score_name: str = "score", mode: str = "max") -> None:
    """Saves a PNG: loss per step (left); train and validation score per epoch (right).

    The best validation epoch is marked, and learning-rate drops are drawn as dotted
    lines, since those are what a person reads a learning curve for.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_score) = plt.subplots(1, 2, figsize=(11, 4))
    if step_losses:
        steps = np.arange(1, len(step_losses) + 1)
        ax_loss.plot(steps, step_losses, lw=0.6, alpha=0.5, color="tab:blue",
                     label="loss per step")
        if len(step_losses) >= 10:
            k = max(5, len(step_losses) // 50)
            smooth = np.convolve(step_losses, np.ones(k) / k, mode="valid")
            ax_loss.plot(steps[k - 1:], smooth, color="tab:blue", label=f"mean of {k}")
        ax_loss.set_yscale("log" if min(step_losses) > 0 else "linear")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("training loss")
    ax_loss.legend(loc="upper right")
    ax_loss.grid(alpha=0.3)

    x = [e["epoch"] for e in epochs]
    for key, label, style in (("train_score", "train", "o-"), ("val_score", "validation", "s-")):
        ys = [e.get(key) for e in epochs]
        if any(y is not None for y in ys):
            ax_score.plot(x, [np.nan if y is None else y for y in ys], style, ms=3,
                          label=label)
    vals = [e.get("val_score") for e in epochs]
    if any(v is not None for v in vals):
        arr = np.array([np.nan if v is None else v for v in vals], dtype=float)
        best = int(np.nanargmax(arr) if mode == "max" else np.nanargmin(arr))
        ax_score.plot([x[best]], [arr[best]], "*", ms=14, color="gold", mec="black",
                      label=f"best {arr[best]:.4f} (epoch {x[best]})")
    for prev, cur in zip(epochs, epochs[1:]):
        if cur["lr"] < prev["lr"]:
            ax_score.axvline(cur["epoch"], ls=":", color="grey")
    ax_score.set_xlabel("epoch")
    ax_score.set_ylabel(score_name)
    ax_score.legend(loc="lower right")
    ax_score.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
