"""The article's training behaviour as Keras callbacks of one `fit`.

`learning.optimizers.Optimizer` holds the run's state (epoch, best score, learning
rate, plateau counter, history); these callbacks read and update it at the points
`fit` gives them, in list order:

    RunControl      stop requests (Ctrl-C / SIGTERM), the short first epoch of a run
                    resumed mid-epoch, the interrupted epoch's running metrics
    StepLosses      per-step losses for the learning curve, and the NaN stop
    PlateauSchedule the article's score bookkeeping and learning-rate rule
    Checkpointer    RUN/best.keras, RUN/last.keras and RUN/state.json
    HistoryWriter   RUN/history.csv, RUN/learning_curve.png and the epoch line
"""

from __future__ import annotations

import math
import os
import time

import keras
import numpy as np

from learning import distribute
from learning.distribute import steps_done


class StopRequested(Exception):
    """Raised inside `fit` between two steps when a stop was asked for."""


class TrainerCallback(keras.callbacks.Callback):
    """A callback of the run `trainer` (a `learning.optimizers.Optimizer`). Its
    epoch-end work, `after_epoch`, is skipped once a NaN loss has stopped the run
    (`trainer.nan_at`): nothing of that epoch is scored, kept or saved."""

    def __init__(self, trainer):
        super().__init__()
        self.trainer = trainer

    def on_epoch_end(self, epoch, logs=None):
        if not self.trainer.nan_at:
            self.after_epoch(self.trainer, logs)

    def after_epoch(self, t, logs):
        """The epoch-end work of a run that has not hit a NaN loss."""


class RunControl(TrainerCallback):
    """Stops `fit` between two steps when `trainer.stop_requested` is set (by the
    scripts' signal handlers), and handles a run resumed in the middle of an epoch.

    The checks run in `on_epoch_begin` / `on_train_batch_begin`, which `fit` calls
    in the main thread before each step, so a stop lands exactly between steps; a
    stop asked for in an epoch's last step lets that epoch end (and save) first.
    A resumed epoch starts with the running metrics saved at the interruption and is
    cut after its remaining steps, so its numbers come out as if it never stopped.
    """

    def __init__(self, trainer):
        super().__init__(trainer)
        self.short_epoch = False

    def on_epoch_begin(self, epoch, logs=None):
        t = self.trainer
        t.epoch_started = (time.time(), steps_done(self.model))
        if distribute.any_worker(t.stop_requested):  # asked in the epoch before's end
            raise StopRequested
        self.short_epoch = False
        if t.step_in_epoch and t.epoch_metrics:
            variables = {v.path: v for v in self.model.metrics_variables}
            if set(variables) != set(t.epoch_metrics):
                print("note: the interrupted epoch's running metrics do not match this "
                      "model's; its train score counts only the steps after the resume")
            else:  # sums (loss total and count, confusion counts): the steps add on
                # (under tf.distribute every worker assigns the same total, and
                # TensorFlow shares it out among all the replicas' copies)
                for path, value in t.epoch_metrics.items():
                    var = variables[path]
                    var.assign(np.asarray(value, dtype=var.dtype))

    def on_train_batch_begin(self, batch, logs=None):
        t = self.trainer
        if distribute.any_worker(t.stop_requested):  # all workers stop at one step
            raise StopRequested
        if t.step_in_epoch and batch == t.steps_per_epoch - t.step_in_epoch - 1:
            self.short_epoch = True  # the resumed epoch's last step: end it after this
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        if self.short_epoch:  # it was only this epoch that had to end early
            self.model.stop_training = False
            self.short_epoch = False


class StepLosses(TrainerCallback):
    """Collects each step's loss and stops training when it is NaN or infinite.

    It reads no variable of its own per step (the old loop read the loss tracker's
    sums every step): it keeps the running mean loss that `fit` hands every callback
    anyway, as Python numbers (Keras' TensorFlow backend converts each step's logs
    before calling callbacks). Each step's own loss is recovered at the epoch's end
    from those means and the batch sizes (Keras averages the loss over the epoch,
    weighted by batch size).
    """

    def __init__(self, trainer):
        super().__init__(trainer)
        self.means: dict[int, float] = {}

    def on_epoch_begin(self, epoch, logs=None):
        self.means = {}

    def on_train_batch_end(self, batch, logs=None):
        self.means[batch] = mean = float(logs["loss"])
        if not math.isfinite(mean):
            self.model.stop_training = True  # weights are lost; the epoch end reports

    def raw_losses(self) -> list[float]:
        """This epoch's per-step losses, from the running means and batch sizes."""
        t = self.trainer
        total, count = t.loss_sums_at_start()
        losses = []
        for i, step in enumerate(range(t.step_in_epoch, t.step_in_epoch + len(self.means))):
            size = t.batch_size_of(step)
            new_total = self.means[i] * (count + size)
            losses.append((new_total - total) / size)
            total, count = new_total, count + size
        return losses

    def on_epoch_end(self, epoch, logs=None):
        t = self.trainer
        losses = self.raw_losses()
        bad = [i for i, loss in enumerate(losses) if not math.isfinite(loss)]
        if bad:
            t.nan_at = (epoch + 1, t.step_in_epoch + bad[0] + 1)
            self.model.stop_training = True
        else:
            t.step_losses.extend(losses)


class PlateauSchedule(TrainerCallback):
    """The article's epoch end, before saving: is the monitored score better (by the
    evaluator's relative `is_better`)? Then the optimizer's learning-rate rule.

    Keras' `ReduceLROnPlateau` differs: an absolute `min_delta`, a decay once the
    wait *reaches* the patience (the article waits for more than it), a cooldown and
    no `eps` rule; so the rule stays the article's, in `Optimizer._record_score`.
    """

    def after_epoch(self, t, logs):
        t.lr_used = t.curr_learning_rate
        t.improved = t._record_score(t.monitored_score(logs))
        self.model.optimizer.learning_rate.assign(t.curr_learning_rate)


class Checkpointer(TrainerCallback):
    """Ends the epoch in the trainer's history and saves: `best.keras` (weights and
    config) when the score improved, then `last.keras` (with the optimizer state)
    and `state.json` (see `Optimizer.save_last`)."""

    def __init__(self, trainer, save_dir: str):
        super().__init__(trainer)
        self.save_dir = save_dir

    def after_epoch(self, t, logs):
        t.finish_epoch(logs)
        if t.improved:
            t.model.save(os.path.join(self.save_dir, "best.keras"))
        t.save_last(self.save_dir)


class HistoryWriter(TrainerCallback):
    """Writes `history.csv` and `learning_curve.png` after every epoch, and prints
    the epoch's line (loss, train and validation score, rate, saved)."""

    def __init__(self, trainer, save_dir: str, verbose: bool = True):
        super().__init__(trainer)
        self.save_dir = save_dir
        self.verbose = verbose

    def after_epoch(self, t, logs):
        from learning.utils import plot_learning_curve, write_history_csv
        write_history_csv(os.path.join(self.save_dir, "history.csv"), t.epochs)
        plot_learning_curve(os.path.join(self.save_dir, "learning_curve.png"),
                            t.step_losses, t.epochs, t.evaluator.name, t.evaluator.mode)
        if self.verbose:
            print(self.epoch_line(t, t.epochs[-1]), flush=True)

    def epoch_line(self, t, row: dict) -> str:
        """The line printed at an epoch's end, from its history row."""
        val = ("" if row["val_score"] is None
               else f" | val {t.evaluator.name} {row['val_score']:.4f}")
        return (f"[epoch {row['epoch']}/{t.num_epochs}] loss {row['loss']:.4f} | train "
                f"{t.evaluator.name} {row['train_score']:.4f}{val} | lr "
                f"{row['lr']:.2e}{' | best, saved' if row['best'] else ''}")
