"""Training with the article's public face, `Optimizer` and `MomentumOptimizer`: one Keras
`fit` with the callbacks of `learning.callbacks`.

    >>> trainer = MomentumOptimizer(model, train_set, IoUEvaluator(), val_set,
    ...                             batch_size=8, num_epochs=300, learning_rate=1e-3)
    >>> history = trainer.train("runs/gcn")      # --resume: train(..., resume=True)

A run is `model.fit(stream, validation_data=val, initial_epoch=e, epochs=N,
callbacks=[...])`: the article's epoch end (best checkpoint by `evaluator.is_better`,
rate decay on a plateau) and what `--resume` needs are callbacks, reading the
validation score from fit's logs. Each epoch's order and flips depend only on (seed,
epoch), so a resumed run sees the batches an uninterrupted one would.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod

import keras

from common.files import remove_stale_temporaries, write_json
from datasets.augment import augment_mode
from datasets.geometry import check_resize
from datasets.replicas import ReplicaSplit
from learning import callbacks as cbs
from learning import console, distribute, tasks
from learning.history import LearningCurve
from learning.resume import ResumedEpoch, RunCheckpoint
from learning.runs import (CONFIG_FILE, CheckpointError, RunFolder,
                           checkpoint_config, damaged_message, read_state)


class TrainingError(RuntimeError):
    """Training stopped for a reason the user must act on; the message says which."""


class TrainingInterrupted(RuntimeError):
    """Ctrl-C or SIGTERM: a resumable state was saved (`path`)."""

    def __init__(self, path: str):
        super().__init__(f"training interrupted; resumable state saved to {path}. "
                         f"Continue with the same command plus --resume.")
        self.path = path


class Optimizer(ABC):
    """Trains a `models.SegNet` on `train_set`, scored by `evaluator`.

    Args:
        model: the network (its `input_size` is the size images are fitted to, its
            `task` says how its data is streamed: `learning.tasks`).
        train_set: a `datasets.data.DataSet` (in memory) or image paths (streamed);
            for an instance model, `datasets.instances.read_annotations` records.
        evaluator: a `learning.evaluators.Evaluator`; picks the best checkpoint.
        val_set: like `train_set`, or None (then the epoch's train score is used); for
            an instance model a `learning.instances.InstanceValidation`.
        **kwargs: batch_size (8), num_epochs (300), learning_rate (1e-3), augment
            ("flip"; "none", "scale": `datasets.stream.make_training_stream`), resize
            (`datasets.geometry.fit`; the task's default), seed (0),
            score_threshold (1e-4), clipnorm (None: no gradient clipping), loss (None:
            the one the model names; or any Keras loss), jit_compile ("auto"),
            tensorboard (True: RUN/tensorboard), callbacks (extra Keras callbacks for
            `fit`) and the subclass' own options.
    """

    def __init__(self, model, train_set, evaluator, val_set=None, **kwargs):
        self.model = model
        self.train_set = train_set
        self.val_set = val_set
        self.evaluator = evaluator
        self.task = tasks.TASKS[model.task]
        self.batch_size = kwargs.pop("batch_size", 8)
        self.num_epochs = kwargs.pop("num_epochs", 300)
        self.init_learning_rate = kwargs.pop("learning_rate", 1e-3)
        self.augment = augment_mode(kwargs.pop("augment", "flip"))
        self.resize = check_resize(kwargs.pop("resize", self.task.default_resize))
        self.seed = kwargs.pop("seed", 0)
        self.score_threshold = kwargs.pop("score_threshold", 1e-4)
        self.clipnorm = kwargs.pop("clipnorm", None)
        self.loss = kwargs.pop("loss", None)
        self.jit_compile = kwargs.pop("jit_compile", "auto")
        self.tensorboard = kwargs.pop("tensorboard", True)
        self.callbacks = list(kwargs.pop("callbacks", None) or [])
        if kwargs:
            raise TypeError(f"unknown training options: {sorted(kwargs)}")
        for name in ("batch_size", "num_epochs", "init_learning_rate"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name.replace('init_', '')} must be positive. "
                                 f"Received: {getattr(self, name)}")
        self.stop_requested = False

    @abstractmethod
    def make_optimizer(self) -> keras.optimizers.Optimizer:
        """The Keras optimizer doing the updates."""

    @abstractmethod
    def make_schedule(self) -> cbs.PlateauSchedule:
        """The callback that sets the learning rate after each epoch."""

    def request_stop(self) -> None:
        """Asks the run to stop after the step under way and save a resumable state."""
        self.stop_requested = True

    @property
    def split(self) -> ReplicaSplit:
        """How an epoch is cut into (global, per-replica) batches under the current
        `tf.distribute` strategy (one replica without one)."""
        return ReplicaSplit(self.task.num_examples(self.train_set), self.batch_size,
                            distribute.num_replicas())

    @property
    def steps_per_epoch(self) -> int:
        return self.split.steps

    @property
    def monitor(self) -> str:
        """The log key of the score that picks the best checkpoint."""
        name = self.evaluator.name
        return name if self.val_set is None else f"val_{name}"

    # ----------------------------------------------------------------- callbacks

    def make_callbacks(self, folder, state: dict | None, verbose: bool) -> list:
        """The callbacks of one run into `folder` (a `learning.runs.RunFolder`), in
        the order their logs need (see `learning.callbacks`): the resumed epoch
        first, the scores before the article's epoch end, `RunCheckpoint` after what
        it saves."""
        self.schedule = self.make_schedule()
        best = cbs.BestCheckpoint(folder, self.evaluator, self.monitor,
                                  self.score_threshold)
        self.curve = LearningCurve(folder, self.evaluator, self.num_epochs,
                                   self.split.batch_size_of, self.val_set is not None,
                                   self.task.history_columns, verbose)
        self.run_checkpoint = RunCheckpoint(
            folder, {"plateau": self.schedule, "best_checkpoint": best,
                      "history": self.curve}, self.metrics, self.seed)
        resumed = []
        if state is not None:
            self.run_checkpoint.set_state(state)
            sums = state["epoch_metrics"] or {}
            self.curve.resume_epoch(state["step_in_epoch"], sums.get("loss", (0, 0)))
            if state["step_in_epoch"]:
                resumed.append(ResumedEpoch(
                    self.steps_per_epoch - state["step_in_epoch"], sums, self.metrics))
        ours = resumed + [cbs.StopOnRequest(lambda: self.stop_requested),
                          keras.callbacks.TerminateOnNaN()]
        ours += self.task.scorers(self.model, self.val_set, self.batch_size)
        if verbose:  # Keras' bar ends the epoch's line before ours is printed
            ours.append(keras.callbacks.ProgbarLogger())
        ours += [self.schedule, best, self.curve, self.run_checkpoint]
        if self.tensorboard:
            ours.append(keras.callbacks.TensorBoard(
                os.path.join(folder.path, "tensorboard"), write_graph=False,
                profile_batch=0))
        return ours + self.callbacks

    # ----------------------------------------------------------------- training

    def compile(self) -> None:
        """Compiles the model with this trainer's optimizer, the task's loss and the
        metrics it keeps (`self.metrics`, which a resumed epoch restores)."""
        self.metrics = self.task.metrics(self.model)
        distribute.adapt(self.model)
        self.model.compile(optimizer=self.make_optimizer(),
                           loss=self.loss or self.task.loss(self.model),
                           metrics=self.metrics,
                           jit_compile=self.jit_compile)

    def restore(self, run_dir: str) -> dict:
        """Loads weights and optimizer variables of `RUN/last.keras`; returns the
        training state saved with them."""
        path = os.path.join(run_dir, "last.keras")
        saved = checkpoint_config(path)
        if saved.get("config") != self.model.get_config():
            raise CheckpointError(
                f"{path} was saved by a different model ({saved.get('class_name')} "
                f"{saved.get('config')}); resume with the options of that run (see "
                f"config.json beside it)")
        model = self.model
        model.optimizer.build(model.trainable_variables)
        try:
            model.load_weights(path)
        except (OSError, ValueError, KeyError) as e:
            raise CheckpointError(damaged_message(path, e)) from None
        state = read_state(run_dir, distribute.steps_done(model))
        if "plateau" not in state:
            raise CheckpointError(f"{run_dir}/state.json was written by an older version "
                                  f"of this project; its run can be tested and drawn "
                                  f"but not resumed. Train again into a new --out")
        return state

    def train(self, save_dir: str, resume: bool = False, verbose: bool = True,
              overwrite: bool = False, config: dict | None = None) -> dict:
        """Trains up to `num_epochs` (counting epochs done before a resume) into the
        run folder `save_dir` (`learning.runs`).

        A folder that holds a run already is refused unless `resume` (continue it) or
        `overwrite` (replace it once the new run has saved its first checkpoint), as
        is one another process trains into. A new run writes `config` (what made it)
        to `RUN/config.json` first. Returns the history: `{"step_losses":
        [...], "epochs": [...], "best_score": x}`. Raises `TrainingInterrupted` after
        `request_stop()` (state saved) and `TrainingError` on a NaN/infinite loss
        (the last good checkpoint is kept).

        Under a multi-worker `tf.distribute` strategy only the chief writes
        `save_dir`; the other workers read it to resume and write to a scratch folder.
        """
        chief = distribute.is_chief()
        folder = (RunFolder(save_dir, resume, overwrite) if chief
                  else RunFolder.scratch())
        with folder:
            remove_stale_temporaries(folder.path)
            if config is not None and not resume:
                write_json(os.path.join(folder.path, CONFIG_FILE), config)
            self.compile()
            state = self.restore(save_dir) if resume else None
            callbacks = self.make_callbacks(folder, state, verbose and chief)
            epoch = state["epoch"] if state else 0
            if resume and verbose and chief:
                print(f"resumed from {save_dir}/last.keras at epoch {epoch} "
                      f"(+{state['step_in_epoch']} steps), lr "
                      f"{self.schedule.learning_rate:.2e}, best "
                      f"{self.schedule.best_score:.4f}")
            if self.split.dropped and verbose and chief:
                print(f"note: each epoch leaves out {self.split.dropped} of its "
                      f"{self.split.num_examples} examples (a different few each time):"
                      f" the last batch would not give each of the "
                      f"{self.split.num_replicas} replicas one")
            try:
                if epoch < self.num_epochs:
                    self.fit(epoch, state, callbacks, verbose and chief)
            except TrainingInterrupted:
                if chief:
                    raise
                raise TrainingInterrupted(os.path.join(save_dir, "last.keras")) from None
        return {"step_losses": self.curve.step_losses, "epochs": self.curve.epochs,
                "best_score": self.schedule.best_score}

    def fit(self, epoch: int, state: dict | None, callbacks: list, verbose: bool) -> None:
        """One `fit` from `epoch` to `num_epochs`."""
        import tensorflow as tf
        strategy = tf.distribute.get_strategy()
        skip = state["step_in_epoch"] if state else 0

        def train_stream(context=None):  # a tf.distribute.InputContext per worker
            return self.task.training_stream(
                self.train_set, self.model, self.batch_size, seed=self.seed,
                first_epoch=epoch, num_epochs=self.num_epochs, skip_batches=skip,
                augment=self.augment, num_replicas=strategy.num_replicas_in_sync,
                resize=self.resize, context=context)
        train = (train_stream() if strategy.num_replicas_in_sync == 1
                 else strategy.distribute_datasets_from_function(train_stream))
        val = self.task.validation_data(self.val_set, self.model, self.batch_size,
                                        strategy.num_replicas_in_sync, self.resize)
        try:
            self.model.fit(train, validation_data=val, initial_epoch=epoch,
                           epochs=self.num_epochs, steps_per_epoch=self.steps_per_epoch,
                           callbacks=callbacks, shuffle=False,
                           verbose=console.keras_verbose(verbose))
        except cbs.StopRequested:
            path = self.run_checkpoint.save_interrupted()
            distribute.barrier()
            raise TrainingInterrupted(path) from None
        distribute.barrier()
        if self.curve.nan_at:
            last = os.path.join(self.run_checkpoint.folder.path, "last.keras")
            kept = (f"The last good state is {last} (resume from it with a lower --lr)."
                    if os.path.exists(last) else "No epoch had finished, so nothing "
                    "was saved; start again with a lower --lr.")
            raise TrainingError(f"the loss became NaN or infinite at epoch "
                                f"{self.curve.nan_at[0]}, step {self.curve.nan_at[1]}; "
                                f"training stopped. {kept}")


class MomentumOptimizer(Optimizer):
    """SGD with momentum and the article's plateau schedule
    (`learning.callbacks.PlateauSchedule`). (The article's class of this name built
    Adam, with momentum as beta1.)

    Extra kwargs: momentum (0.9), learning_rate_patience (10),
    learning_rate_decay (0.1), eps (1e-8).
    """

    def __init__(self, model, train_set, evaluator, val_set=None, **kwargs):
        self.momentum = kwargs.pop("momentum", 0.9)
        self.learning_rate_patience = kwargs.pop("learning_rate_patience", 10)
        self.learning_rate_decay = kwargs.pop("learning_rate_decay", 0.1)
        self.eps = kwargs.pop("eps", 1e-8)
        super().__init__(model, train_set, evaluator, val_set, **kwargs)

    def make_optimizer(self):
        return keras.optimizers.SGD(learning_rate=self.init_learning_rate,
                                    momentum=self.momentum, clipnorm=self.clipnorm)

    def make_schedule(self):
        return cbs.PlateauSchedule(
            self.evaluator, self.monitor, self.init_learning_rate,
            self.learning_rate_patience, self.learning_rate_decay, self.eps,
            self.score_threshold)
