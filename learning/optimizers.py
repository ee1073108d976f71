"""Training with the article's public face, `Optimizer` and `MomentumOptimizer`, as one
Keras `fit` with callbacks (`learning.callbacks`).

A run is one `model.fit(train, validation_data=val, initial_epoch=e, epochs=N,
callbacks=[...])`. The article's epoch end (keep the best checkpoint by
`evaluator.is_better(..., score_threshold)`, decay the rate on a plateau) and what a
`--resume` needs are callbacks; the validation score is the dataset-level metric in
fit's logs. A run folder holds:

    RUN/last.keras   model + optimizer state, every epoch end (Keras v3 archive)
    RUN/best.keras   the model that scored best on validation
    RUN/state.json   epoch, step in epoch, plateau counter, best score, rate, history
    RUN/history.csv  one row per epoch;  RUN/learning_curve.png  the curves
    RUN/tensorboard/ epoch-level logs for TensorBoard

Each epoch's batch order and flips depend only on (seed, epoch), so a resumed run sees
the same batches an uninterrupted one would. Stopping is asked for with
`request_stop()` (the scripts call it from their Ctrl-C / SIGTERM handlers).
"""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod

import keras
import numpy as np

from datasets.data import DataSet
from datasets.replicas import ReplicaSplit
from datasets.augment import augment_mode
from datasets.stream import (make_dataset, make_training_stream,
                             replica_validation_batches)
from learning import callbacks as cbs
from learning import distribute
from learning.distribute import steps_done
from models import checkpoint
from models.metrics import make_metrics


class TrainingError(RuntimeError):
    """Training stopped for a reason the user must act on; the message says which."""


class TrainingInterrupted(RuntimeError):
    """Ctrl-C or SIGTERM: a resumable state was saved (`path`)."""

    def __init__(self, path: str):
        super().__init__(f"training interrupted; resumable state saved to {path}. "
                         f"Continue with the same command plus --resume.")
        self.path = path


class Optimizer(ABC):
    """Base training loop for a `SegNet`.

    Args:
        model: the `models.nn.SegNet` to train.
        train_set: a `DataSet` (in memory) or a list of image paths (streamed).
        evaluator: a `learning.evaluators.Evaluator`; picks the best checkpoint.
        val_set: like `train_set`, or None (then the epoch's train score is used).
        **kwargs: batch_size (8), num_epochs (300), learning_rate (1e-3),
            image_size (for paths; 512), augment ("flip"; or "none", "scale",
            see `datasets.stream.make_training_stream`), seed (0), score_threshold
            (1e-4), jit_compile ("auto"), tensorboard (True: RUN/tensorboard),
            callbacks (extra `keras.callbacks.Callback`s for `fit`) and the
            subclass' own options.
    """

    def __init__(self, model, train_set, evaluator, val_set=None, **kwargs):
        self.model = model
        self.train_set = train_set
        self.val_set = val_set
        self.evaluator = evaluator
        self.batch_size = kwargs.pop("batch_size", 8)
        self.num_epochs = kwargs.pop("num_epochs", 300)
        self.init_learning_rate = kwargs.pop("learning_rate", 1e-3)
        self.image_size = kwargs.pop("image_size", 512)
        self.augment = augment_mode(kwargs.pop("augment", "flip"))  # bools too
        self.seed = kwargs.pop("seed", 0)
        self.score_threshold = kwargs.pop("score_threshold", 1e-4)
        self.jit_compile = kwargs.pop("jit_compile", "auto")
        self.tensorboard = kwargs.pop("tensorboard", True)
        self.callbacks = list(kwargs.pop("callbacks", None) or [])
        self.options = kwargs
        self.stop_requested = False
        self.reset()

    def reset(self) -> None:
        """Training state at the start of a run (everything `--resume` restores)."""
        self.curr_epoch = 0                  # completed epochs
        self.step_in_epoch = 0               # steps done in an interrupted epoch
        self.epoch_metrics = None            # its running metric sums, to restore
        self.curr_learning_rate = self.init_learning_rate
        self.best_score = self.evaluator.worst_score
        self.num_bad_epochs = 0
        self.step_losses: list[float] = []
        self.epochs: list[dict] = []         # one dict per epoch, as in history.csv
        self.nan_at = None                   # (epoch, step) of a NaN loss
        self.improved = False
        self.saved_iterations = None         # optimizer step of last.keras on disk

    @abstractmethod
    def _make_optimizer(self) -> keras.optimizers.Optimizer:
        """The Keras optimizer doing the updates."""

    @abstractmethod
    def _update_learning_rate(self) -> None:
        """Called after each epoch's evaluation to adjust `curr_learning_rate`."""

    def request_stop(self) -> None:
        """Asks the run to stop after the step under way and save a resumable state."""
        self.stop_requested = True

    # ----------------------------------------------------------------- state

    def state(self) -> dict:
        return {"epoch": self.curr_epoch, "step_in_epoch": self.step_in_epoch,
                "epoch_metrics": self.epoch_metrics,
                "learning_rate": self.curr_learning_rate, "best_score": self.best_score,
                "num_bad_epochs": self.num_bad_epochs, "step_losses": self.step_losses,
                "epochs": self.epochs, "seed": self.seed,
                "iterations": steps_done(self.model.model)}

    def load_state(self, state: dict) -> None:
        self.curr_epoch = state["epoch"]
        self.step_in_epoch = state.get("step_in_epoch", 0)
        self.epoch_metrics = state.get("epoch_metrics")
        self.curr_learning_rate = state["learning_rate"]
        self.best_score = state["best_score"]
        self.num_bad_epochs = state["num_bad_epochs"]
        self.step_losses = list(state["step_losses"])
        self.epochs = list(state["epochs"])

    def save_last(self, save_dir: str) -> str:
        """Writes `last.keras` and `state.json`, each atomically.

        `state.json` is written first and keeps the previous state too (see
        `models.checkpoint.write_state`), so a kill between the two leaves a pair
        that still fits together.
        """
        path = os.path.join(save_dir, "last.keras")
        state = self.state()
        checkpoint.write_state(save_dir, state, self.saved_iterations)
        self.model.save(path, include_optimizer=True)
        self.saved_iterations = state["iterations"]
        return path

    def _compile(self) -> None:
        net = self.model
        net.model.compile(optimizer=self._make_optimizer(), loss=net.loss,
                          metrics=make_metrics(net.num_classes),
                          jit_compile=self.jit_compile)

    def restore(self, save_dir: str) -> None:
        """Loads weights, optimizer variables and training state of `save_dir`."""
        path = os.path.join(save_dir, "last.keras")
        saved = checkpoint.read_config(path)
        if saved != self.model.get_config():
            raise checkpoint.CheckpointError(
                f"{path} was saved by a different model ({saved}); resume with the "
                f"options of that run (see config.json beside it)")
        self._compile()
        model = self.model.model
        model.optimizer.build(model.trainable_variables)
        try:
            model.load_weights(path)
        except (OSError, ValueError, KeyError) as e:
            raise checkpoint.CheckpointError(checkpoint.damaged_message(path, e)) from None
        self.saved_iterations = steps_done(model)
        self.load_state(checkpoint.read_state(save_dir, self.saved_iterations))

    # ----------------------------------------------------------------- epochs

    @property
    def num_examples(self) -> int:
        return (self.train_set.num_examples if isinstance(self.train_set, DataSet)
                else len(self.train_set))

    @property
    def split(self) -> ReplicaSplit:
        """How an epoch is cut into (global, per-replica) batches under the current
        `tf.distribute` strategy (one replica without one)."""
        return ReplicaSplit(self.num_examples, self.batch_size, distribute.num_replicas())

    @property
    def steps_per_epoch(self) -> int:
        return self.split.steps

    def batch_size_of(self, step: int) -> int:
        """The size of an epoch's batch number `step` (the last one may be smaller)."""
        return self.split.batch_size_of(step)

    def loss_sums_at_start(self) -> tuple[float, float]:
        """Keras' running loss (total, count) before the epoch's first step here."""
        if not (self.step_in_epoch and self.epoch_metrics):
            return 0.0, 0.0
        return self.epoch_metrics["loss/total"], self.epoch_metrics["loss/count"]

    def monitored_score(self, logs: dict) -> float:
        """The validation score of the epoch (the train score without validation)."""
        name = self.evaluator.name
        return float(logs[name if self.val_set is None else f"val_{name}"])

    def _record_score(self, curr: float) -> bool:
        """The article's bookkeeping for one epoch's score: best score, count of epochs
        without improvement, then the learning-rate rule. Returns True if improved."""
        improved = self.evaluator.is_better(curr, self.best_score,
                                            score_threshold=self.score_threshold)
        if improved:
            self.best_score = curr
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        self._update_learning_rate()
        return improved

    def finish_epoch(self, logs: dict) -> None:
        """Adds the finished epoch to the history (called before it is saved)."""
        name = self.evaluator.name
        started = getattr(self, "epoch_started", (time.time(), 0))[0]
        self.curr_epoch += 1
        self.step_in_epoch = 0
        self.epoch_metrics = None
        self.epochs.append({
            "epoch": self.curr_epoch, "loss": float(logs["loss"]),
            "train_score": float(logs[name]),
            "val_score": None if self.val_set is None else float(logs[f"val_{name}"]),
            "lr": self.lr_used, "best": self.improved,
            "seconds": round(time.time() - started, 2)})

    # ----------------------------------------------------------------- training

    def _streams(self):
        import tensorflow as tf
        strategy = tf.distribute.get_strategy()

        def train_stream(context=None):  # a tf.distribute.InputContext per worker
            return make_training_stream(
                self.train_set, self.image_size, self.batch_size, seed=self.seed,
                first_epoch=self.curr_epoch, num_epochs=self.num_epochs,
                skip_batches=self.step_in_epoch, augment=self.augment,
                num_replicas=strategy.num_replicas_in_sync,
                pipeline=context.input_pipeline_id if context else 0,
                num_pipelines=context.num_input_pipelines if context else 1)
        train = (train_stream() if strategy.num_replicas_in_sync == 1
                 else strategy.distribute_datasets_from_function(train_stream))
        val = None
        if self.val_set is not None and strategy.num_replicas_in_sync > 1:
            val = replica_validation_batches(self.val_set, self.image_size,
                                             self.batch_size,
                                             strategy.num_replicas_in_sync)
        elif isinstance(self.val_set, DataSet):
            import tensorflow as tf
            val = tf.data.Dataset.from_tensor_slices(
                (self.val_set.images, self.val_set.labels)).batch(self.batch_size)
        elif self.val_set is not None:
            val = make_dataset(self.val_set, self.image_size, self.batch_size)
        return train, val

    def _callbacks(self, save_dir: str, verbose: bool) -> list:
        self.step_log = cbs.StepLosses(self)
        ours = [cbs.RunControl(self), self.step_log, cbs.PlateauSchedule(self),
                cbs.Checkpointer(self, save_dir)]
        if verbose:  # Keras' bar ends the epoch's line before ours is printed
            ours.append(keras.callbacks.ProgbarLogger())
        ours.append(cbs.HistoryWriter(self, save_dir, verbose))
        if self.tensorboard:
            ours.append(keras.callbacks.TensorBoard(
                os.path.join(save_dir, "tensorboard"), write_graph=False, profile_batch=0))
        return ours + self.callbacks

    def train(self, save_dir: str, resume: bool = False, verbose: bool = True) -> dict:
        """Trains up to `num_epochs` (counting epochs done before a resume).

        Returns the history: `{"step_losses": [...], "epochs": [...], "best_score": x}`.
        Raises `TrainingInterrupted` after `request_stop()` (state saved) and
        `TrainingError` on a NaN/infinite loss (the last good checkpoint is kept).

        Under a multi-worker `tf.distribute` strategy, only the chief writes
        `save_dir`; the other workers read it to resume and write to a scratch folder
        (`learning.distribute.output_dir`).
        """
        chief = distribute.is_chief()
        with distribute.output_dir(save_dir) as out_dir:
            try:
                return self._train(save_dir, out_dir, resume, verbose and chief)
            except TrainingInterrupted:
                if chief:
                    raise
                raise TrainingInterrupted(os.path.join(save_dir, "last.keras")) from None

    def _train(self, save_dir: str, out_dir: str, resume: bool, verbose: bool) -> dict:
        os.makedirs(out_dir, exist_ok=True)
        checkpoint.remove_stale_temporaries(out_dir)
        self.nan_at = None
        if resume:
            self.restore(save_dir)
            if verbose:
                print(f"resumed from {save_dir}/last.keras at epoch {self.curr_epoch}"
                      f" (+{self.step_in_epoch} steps), lr {self.curr_learning_rate:.2e},"
                      f" best {self.best_score:.4f}")
        else:
            self.reset()
            self._compile()
        if self.split.dropped and verbose:
            print(f"note: each epoch leaves out {self.split.dropped} of its "
                  f"{self.num_examples} examples (a different few each time): the last"
                  f" batch would not give each of the {self.split.num_replicas} replicas"
                  f" one")
        if self.curr_epoch < self.num_epochs:
            self._fit(out_dir, verbose)
        return {"step_losses": self.step_losses, "epochs": self.epochs,
                "best_score": self.best_score}

    def _fit(self, save_dir: str, verbose: bool) -> None:
        model = self.model.model
        model.optimizer.learning_rate.assign(self.curr_learning_rate)
        self.epoch_started = (time.time(), steps_done(model))
        if self.epoch_metrics:
            # Keras makes the compiled metrics' variables at the first step; make them
            # now, so the interrupted epoch's sums can go back in before it.
            c = self.model.num_classes
            model.compute_metrics(None, np.zeros((1, 1, 1), "uint8"),
                                  np.zeros((1, 1, 1, c), "float32"))
        train, val = self._streams()
        try:
            model.fit(train, validation_data=val, initial_epoch=self.curr_epoch,
                      epochs=self.num_epochs, steps_per_epoch=self.steps_per_epoch,
                      callbacks=self._callbacks(save_dir, verbose), shuffle=False,
                      verbose=int(verbose))
        except cbs.StopRequested:
            path = self._save_interrupted(save_dir)
            distribute.barrier()
            raise TrainingInterrupted(path) from None
        distribute.barrier()
        if self.nan_at:
            last = os.path.join(save_dir, "last.keras")
            kept = (f"The last good state is {last} (resume from it with a lower --lr)."
                    if os.path.exists(last) else "No epoch had finished, so nothing "
                    "was saved; start again with a lower --lr.")
            raise TrainingError(f"the loss became NaN or infinite at epoch "
                                f"{self.nan_at[0]}, step {self.nan_at[1]}; training "
                                f"stopped. {kept}")

    def _save_interrupted(self, save_dir: str) -> str:
        """Saves the state of a run stopped between two steps of an epoch."""
        model = self.model.model
        done = steps_done(model) - self.epoch_started[1]
        if done == 0:  # stopped at an epoch boundary: that epoch end is saved already
            path = os.path.join(save_dir, "last.keras")
            return path if os.path.exists(path) else self.save_last(save_dir)
        self.step_losses.extend(self.step_log.raw_losses())
        self.step_in_epoch += done
        self.epoch_metrics = {v.path: keras.ops.convert_to_numpy(v).tolist()
                              for v in model.metrics_variables}
        return self.save_last(save_dir)


class MomentumOptimizer(Optimizer):
    """SGD with momentum and the article's plateau schedule.

    After each epoch's evaluation: when the score has not improved for more than
    `learning_rate_patience` epochs, multiply the rate by `learning_rate_decay`,
    unless that changes it by `eps` or less; either way the count starts again.
    (The article's class of this name built Adam, with momentum as beta1.)

    Extra kwargs: momentum (0.9), learning_rate_patience (10),
    learning_rate_decay (0.1), eps (1e-8).
    """

    def __init__(self, model, train_set, evaluator, val_set=None, **kwargs):
        self.momentum = kwargs.pop("momentum", 0.9)
        self.learning_rate_patience = kwargs.pop("learning_rate_patience", 10)
        self.learning_rate_decay = kwargs.pop("learning_rate_decay", 0.1)
        self.eps = kwargs.pop("eps", 1e-8)
        super().__init__(model, train_set, evaluator, val_set, **kwargs)

    def _make_optimizer(self):
        return keras.optimizers.SGD(learning_rate=self.init_learning_rate,
                                    momentum=self.momentum)

    def _update_learning_rate(self) -> None:
        if self.num_bad_epochs > self.learning_rate_patience:
            new_learning_rate = self.curr_learning_rate * self.learning_rate_decay
            if self.curr_learning_rate - new_learning_rate > self.eps:
                self.curr_learning_rate = new_learning_rate
            self.num_bad_epochs = 0
