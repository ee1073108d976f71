"""The run's history: each step's loss and a row per epoch, written after every
epoch to `history.csv` and drawn to `learning_curve.png`.
"""

from __future__ import annotations

import csv
import math
import os
import time

import keras
import numpy as np

from common.files import atomic_path
from learning.callbacks import finite


class LearningCurve(keras.callbacks.Callback):
    """Keeps each step's loss and a row per epoch; after every epoch writes
    `history.csv` and `learning_curve.png` and prints the epoch's line.

    Each step's own loss is recovered at the epoch's end from the running mean that
    `fit` hands every callback anyway (Keras weighs it by batch size): no variable is
    read per step. A loss that is not finite marks the epoch (`nan_at`), which is
    then not recorded. Keras' `CSVLogger` appends a line per epoch end, which a run
    killed and resumed would repeat; here the rows are part of the run's state and
    the file is written whole from them, in one column order.
    """

    COLUMNS = ("epoch", "loss", "train_score", "val_score", "lr", "best", "seconds")

    def __init__(self, folder, evaluator, num_epochs: int, batch_size_of,
                 validated: bool = True, extra_columns=(), verbose: bool = True):
        super().__init__()
        self.folder, self.evaluator, self.num_epochs = folder, evaluator, num_epochs
        self.batch_size_of, self.validated = batch_size_of, validated
        self.extra_columns, self.verbose = tuple(extra_columns), verbose
        self.epochs: list[dict] = []
        self.step_losses: list[float] = []
        self.first_step, self.loss_sums = 0, (0.0, 0.0)  # a resumed epoch's start
        self.means: list[float] = []
        self.nan_at = None

    def resume_epoch(self, first_step: int, loss_sums) -> None:
        """The run resumes at step `first_step` of an epoch, whose loss total and
        count so far are `loss_sums`."""
        self.first_step, self.loss_sums = first_step, tuple(loss_sums)

    def on_epoch_begin(self, epoch, logs=None):
        self.means, self.started = [], time.time()
        # as set, not as float32 keeps it (1e-3, not 0.0010000000474974513)
        rate = keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
        self.learning_rate = float(f"{float(rate):.7g}")

    def on_train_batch_end(self, batch, logs=None):
        self.means.append(float(logs["loss"]))

    def epoch_losses(self) -> list[float]:
        """This epoch's per-step losses so far, from the running means."""
        total, count = self.loss_sums
        losses = []
        for i, mean in enumerate(self.means):
            size = self.batch_size_of(self.first_step + i)
            new_total = mean * (count + size)
            losses.append((new_total - total) / size)
            total, count = new_total, count + size
        return losses

    def on_epoch_end(self, epoch, logs=None):
        losses = self.epoch_losses()
        bad = [i for i, loss in enumerate(losses) if not math.isfinite(loss)]
        if bad or not finite(logs):
            self.nan_at = (epoch + 1, self.first_step + (bad[0] if bad else 0) + 1)
            return
        self.step_losses += losses
        self.first_step, self.loss_sums, self.means = 0, (0.0, 0.0), []
        name = self.evaluator.name
        val = logs.get(f"val_{name}") if self.validated else None
        row = {"epoch": epoch + 1, "loss": float(logs["loss"]),
               "train_score": None if name not in logs else float(logs[name]),
               "val_score": None if val is None else float(val),
               "lr": self.learning_rate, "best": bool(logs.get("best", 0)),
               "seconds": round(time.time() - self.started, 2)}
        row.update({k: None if logs.get(k) is None else float(logs[k])
                    for k in self.extra_columns})
        self.epochs.append(row)
        write_history_csv(os.path.join(self.folder.path, "history.csv"), self.epochs,
                          self.COLUMNS + self.extra_columns)
        plot_learning_curve(os.path.join(self.folder.path, "learning_curve.png"),
                            self.step_losses, self.epochs, name, self.evaluator.mode)
        if self.verbose:
            print(self.epoch_line(row), flush=True)

    def epoch_line(self, row: dict) -> str:
        name = self.evaluator.name
        parts = [f"[epoch {row['epoch']}/{self.num_epochs}] loss {row['loss']:.4f}"]
        if row["train_score"] is not None:
            parts.append(f"train {name} {row['train_score']:.4f}")
        if row["val_score"] is not None:
            parts.append(f"val {name} {row['val_score']:.4f}")
        parts += [f"{k} {row[k]:.4f}" for k in self.extra_columns if row[k] is not None]
        parts.append(f"lr {row['lr']:.2e}")
        return " | ".join(parts) + (" | best, saved" if row["best"] else "")

    def get_state(self) -> dict:
        """The rows and the losses so far, the steps of an unfinished epoch too."""
        return {"epochs": list(self.epochs),
                "step_losses": self.step_losses + self.epoch_losses()}

    def set_state(self, state: dict) -> None:
        self.epochs = list(state["epochs"])
        self.step_losses = list(state["step_losses"])


def write_history_csv(path: str, epochs: list[dict], columns) -> None:
    """One row per epoch (epoch, loss, train score, validation score, learning rate,
    ...), in the order of `columns`."""
    if not epochs:
        return
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
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
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
