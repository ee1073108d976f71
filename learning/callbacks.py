"""The article's epoch end as Keras callbacks of one `fit`, and the stop on Ctrl-C.

Each callback owns its state and, where a resumed run needs it, gives it out with
`get_state()` and takes it back with `set_state()`; `learning.resume.RunCheckpoint`
writes all of them to `state.json` together with `last.keras`. Values pass between
callbacks only through `fit`'s `logs`, as between Keras' own (`ReduceLROnPlateau`
writes the rate there for `CSVLogger`): a callback that reads a log key comes after
the one that writes it. `learning.optimizers.Optimizer.make_callbacks` builds the
list; the run's callbacks are

    ResumedEpoch     the first, short epoch of a run resumed mid-epoch (learning.resume)
    StopOnRequest    Ctrl-C / SIGTERM: stop between two steps (all workers at once)
    PlateauSchedule  the article's learning-rate rule
    BestCheckpoint   best.keras, by the article's `is_better` (writes logs["best"])
    LearningCurve    per-step losses, history.csv, learning_curve.png (learning.history)
    RunCheckpoint    last.keras + state.json (learning.resume)

Keras' `TerminateOnNaN` stops a run whose loss turns NaN; the epoch-end callbacks
then leave that epoch unrecorded and unsaved (`finite`).
"""

from __future__ import annotations

import math
import os

import keras

from learning import distribute
from learning.runs import save_checkpoint


class StopRequested(Exception):
    """Raised inside `fit` between two steps when a stop was asked for."""


def finite(logs) -> bool:
    """Whether an epoch ended with a finite loss (Keras' `TerminateOnNaN` stops a run
    whose loss is not; nothing of that epoch is then scored, kept or saved)."""
    return math.isfinite(float((logs or {}).get("loss", 0.0)))


class StopOnRequest(keras.callbacks.Callback):
    """Stops `fit` between two steps once `requested()` is true on any worker (the
    scripts' Ctrl-C / SIGTERM handlers ask), by raising `StopRequested`.

    `fit` calls these hooks in the main thread before each step, so the stop lands
    exactly between steps; asked during an epoch's last step, it lets that epoch end
    (and save) first. Every worker votes (`distribute.any_worker`), so all stop at
    the same step instead of leaving the others waiting in a collective op.
    """

    def __init__(self, requested):
        super().__init__()
        self.requested = requested

    def on_epoch_begin(self, epoch, logs=None):
        if distribute.any_worker(self.requested()):
            raise StopRequested

    def on_train_batch_begin(self, batch, logs=None):
        if distribute.any_worker(self.requested()):
            raise StopRequested


class PlateauSchedule(keras.callbacks.Callback):
    """The article's learning-rate rule, after each epoch's evaluation: when the
    monitored score has not improved (by `evaluator.is_better` with the relative
    `score_threshold`) for more than `patience` epochs, multiply the rate by `decay`,
    unless that changes it by `eps` or less; either way the count starts again.

    Keras' `ReduceLROnPlateau` differs: an absolute `min_delta`, a decay once the wait
    *reaches* the patience (the article waits for more), a cooldown and no `eps`.
    """

    def __init__(self, evaluator, monitor: str, learning_rate: float,
                 patience: int = 10, decay: float = 0.1, eps: float = 1e-8,
                 score_threshold: float = 1e-4):
        super().__init__()
        self.evaluator, self.monitor = evaluator, monitor
        self.patience, self.decay, self.eps = patience, decay, eps
        self.score_threshold = score_threshold
        self.learning_rate = learning_rate
        self.best_score = evaluator.worst_score
        self.num_bad_epochs = 0

    def record(self, score: float) -> bool:
        """One epoch's score: updates the best score, the count of epochs without
        improvement and the rate; True if the score improved."""
        improved = self.evaluator.is_better(score, self.best_score,
                                            score_threshold=self.score_threshold)
        if improved:
            self.best_score, self.num_bad_epochs = score, 0
        else:
            self.num_bad_epochs += 1
        if self.num_bad_epochs > self.patience:
            lower = self.learning_rate * self.decay
            if self.learning_rate - lower > self.eps:
                self.learning_rate = lower
            self.num_bad_epochs = 0
        return improved

    def on_train_begin(self, logs=None):
        self.model.optimizer.learning_rate.assign(self.learning_rate)

    def on_epoch_end(self, epoch, logs=None):
        if finite(logs):
            self.record(float(logs[self.monitor]))
            self.model.optimizer.learning_rate.assign(self.learning_rate)

    def get_state(self) -> dict:
        return {"learning_rate": self.learning_rate, "best_score": self.best_score,
                "num_bad_epochs": self.num_bad_epochs}

    def set_state(self, state: dict) -> None:
        self.learning_rate = state["learning_rate"]
        self.best_score = state["best_score"]
        self.num_bad_epochs = state["num_bad_epochs"]


class BestCheckpoint(keras.callbacks.Callback):
    """Saves `folder.path/best.keras` (the model's config and weights, no optimizer state)
    when the monitored score beats the best so far by the article's rule
    (`evaluator.is_better`, relative `score_threshold`), and sets `logs["best"]` to 1
    or 0.

    Keras' `ModelCheckpoint(save_best_only=True)` compares with an absolute
    `min_delta` and saves the optimizer state too (twice the file for SGD with
    momentum). The copy saved here is an uncompiled twin of the model, built once
    from its config, that takes the weights at each save.
    """

    def __init__(self, folder, evaluator, monitor: str, score_threshold: float = 1e-4):
        super().__init__()
        self.folder, self.evaluator, self.monitor = folder, evaluator, monitor
        self.score_threshold = score_threshold
        self.best_score = evaluator.worst_score
        self.twin = None

    def on_epoch_end(self, epoch, logs=None):
        if not finite(logs):
            return
        score = float(logs[self.monitor])
        improved = self.evaluator.is_better(score, self.best_score,
                                            score_threshold=self.score_threshold)
        logs["best"] = float(improved)
        if improved:
            self.best_score = score
            if self.twin is None:
                self.twin = type(self.model).from_config(self.model.get_config())
            self.twin.set_weights(self.model.get_weights())
            save_checkpoint(self.twin, os.path.join(self.folder.path, "best.keras"))

    def get_state(self) -> dict:
        return {"best_score": self.best_score}

    def set_state(self, state: dict) -> None:
        self.best_score = state["best_score"]
