"""What an exact `--resume` needs: `last.keras` and `state.json` after every epoch
(and between two steps on Ctrl-C), and the first epoch of a run resumed in its middle.

Keras' `BackupAndRestore` keeps weights and the optimizer only, not the callbacks'
state or an interrupted epoch's running metrics, and deletes its files when training
ends; so the exact resume is ours, on Keras' public API: each callback's
`get_state()` / `set_state()`, and the variables of the metrics `fit` accumulates.
"""

from __future__ import annotations

import os

import keras
import numpy as np

from learning import distribute
from learning.callbacks import finite
from learning.runs import save_checkpoint, write_state


def running_metrics(model, compiled=()) -> dict:
    """The metrics `fit` accumulates over an epoch, by name: the compiled ones (which
    Keras adds to `model.metrics` only at the first step), then every other metric of
    `model.metrics` with variables of its own (Keras' loss tracker, a model's own)."""
    found = list(compiled or ())
    seen = {id(v) for m in found for v in m.variables}
    for metric in model.metrics:
        own = [v for v in metric.variables if id(v) not in seen]
        if own:
            found.append(metric)
            seen.update(id(v) for v in own)
    return {m.name: m for m in found}


def metric_sums(metrics: dict) -> dict:
    """Each metric's variables (sums and counts) as lists, for JSON."""
    return {name: [keras.ops.convert_to_numpy(v).tolist() for v in m.variables]
            for name, m in metrics.items()}


class ResumedEpoch(keras.callbacks.Callback):
    """The first epoch of a run resumed in its middle: it starts from the running
    metrics saved at the interruption (`sums`, by `metric_sums`) and ends after its
    remaining steps, so its numbers come out as if it had never stopped.

    Put it first: it clears the early stop it sets itself at that epoch's end, which
    must not undo a stop another callback asks for.
    """

    def __init__(self, steps_left: int, sums: dict | None, metrics):
        super().__init__()
        self.steps_left, self.sums, self.metrics = steps_left, sums, metrics
        self.active = steps_left > 0

    def on_epoch_begin(self, epoch, logs=None):
        if not (self.active and self.sums):
            return
        metrics = running_metrics(self.model, self.metrics)
        if set(metrics) != set(self.sums):
            print("note: the interrupted epoch's running metrics do not match this "
                  "model's; its train score counts only the steps after the resume")
            return
        # Sums and counts, so the remaining steps add on. Under tf.distribute every
        # worker assigns the same total, shared out among the replicas' copies.
        for name, values in self.sums.items():
            for variable, value in zip(metrics[name].variables, values):
                variable.assign(np.asarray(value, dtype=variable.dtype))

    def on_train_batch_begin(self, batch, logs=None):
        if self.active and batch == self.steps_left - 1:
            self.model.stop_training = True  # end the short epoch after this step

    def on_epoch_end(self, epoch, logs=None):
        if self.active:
            self.active = False
            self.model.stop_training = False


class RunCheckpoint(keras.callbacks.Callback):
    """Writes `last.keras` (model and optimizer state) and `state.json` into the run
    folder (`learning.runs.RunFolder`) after every epoch, and `save_interrupted`
    between two steps; `learning.runs.write_state` keeps the two a matching pair
    whatever a kill interrupts. The first save commits a staged run (--overwrite).

    `parts` are the callbacks whose `get_state()` goes into `state.json` (under their
    key); put this callback after them. Keras' `BackupAndRestore` keeps weights and
    the optimizer only, not the callbacks' state or an interrupted epoch's running
    metrics, and deletes its files when training ends; so the exact resume is ours.
    """

    def __init__(self, folder, parts: dict, metrics=(), seed: int = 0):
        super().__init__()
        self.folder, self.parts, self.metrics, self.seed = folder, parts, metrics, seed
        self.epoch, self.step_in_epoch = 0, 0
        self.on_disk = None  # optimizer step of the last.keras on disk

    def on_train_begin(self, logs=None):
        self.epoch_start = distribute.steps_done(self.model)

    def on_epoch_end(self, epoch, logs=None):
        if finite(logs):
            self.epoch, self.step_in_epoch = epoch + 1, 0
            self.save()
            self.epoch_start = distribute.steps_done(self.model)

    def save_interrupted(self) -> str:
        """Saves a run stopped between two steps (at an epoch boundary, the state
        saved at that epoch's end stands)."""
        done = distribute.steps_done(self.model) - self.epoch_start
        path = os.path.join(self.folder.path, "last.keras")
        if done == 0 and os.path.exists(path):
            return path
        sums = None
        if done:
            self.step_in_epoch += done
            sums = metric_sums(running_metrics(self.model, self.metrics))
        return self.save(sums)

    def save(self, epoch_metrics=None) -> str:
        state = {"epoch": self.epoch, "step_in_epoch": self.step_in_epoch,
                 "epoch_metrics": epoch_metrics, "seed": self.seed,
                 "iterations": distribute.steps_done(self.model),
                 **{key: part.get_state() for key, part in self.parts.items()}}
        write_state(self.folder.path, state, self.on_disk)
        save_checkpoint(self.model, os.path.join(self.folder.path, "last.keras"))
        self.on_disk = state["iterations"]
        self.folder.commit()  # a staged run (--overwrite) replaces the old one now
        return os.path.join(self.folder.path, "last.keras")

    def set_state(self, state: dict) -> None:
        self.epoch, self.step_in_epoch = state["epoch"], state["step_in_epoch"]
        self.on_disk = state["iterations"]
        for key, part in self.parts.items():
            part.set_state(state[key])
