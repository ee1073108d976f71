"""Training loops with the article's public face: `Optimizer` and `MomentumOptimizer`.

Keras does the per-step work (`fit`: compiled steps, progress bar, an epoch-level
confusion-matrix metric). What the article added around it lives here, one epoch at a
time: score the validation set with the evaluator, keep the best checkpoint by
`evaluator.is_better(..., score_threshold)`, decay the learning rate on a plateau, and
save everything a `--resume` needs to continue exactly:

    RUN/last.npz     weights + optimizer state + training state, every epoch end
    RUN/best.npz     the weights that scored best on validation
    RUN/history.csv  one row per epoch;  RUN/learning_curve.png  the curves

Each epoch's batch order and flips depend only on (seed, epoch), so a resumed run sees
the same batches an uninterrupted one would.
"""

from __future__ import annotations

import math
import os
import signal
import time
from abc import ABC, abstractmethod

import keras
import numpy as np
import tensorflow as tf

from datasets.data import DataSet
from datasets.stream import make_dataset
from learning.metrics import ConfusionMatrixMetric
from learning.utils import evaluate, plot_learning_curve, write_history_csv
from models import checkpoint


class TrainingError(RuntimeError):
    """Training stopped for a reason the user must act on; the message says which."""


class TrainingInterrupted(RuntimeError):
    """Ctrl-C or SIGTERM: a resumable state was saved (`path`)."""

    def __init__(self, path: str):
        super().__init__(f"training interrupted; resumable state saved to {path}. "
                         f"Continue with the same command plus --resume.")
        self.path = path


class _StepWatch(keras.callbacks.Callback):
    """Per-step bookkeeping inside `fit`: raw step losses, NaN guard, stop requests.

    On a resumed, half-done epoch it adds the running metrics saved at the interruption
    (loss sums, confusion counts) back in after the first step, so the epoch's numbers
    come out as if it had never stopped.
    """

    def __init__(self, trainer, metric_values=None):
        super().__init__()
        self.trainer = trainer
        self.metric_values = metric_values
        self.steps = trainer.step_in_epoch
        self.nan = False

    def _loss_sums(self):
        return float(self.tracker.total.numpy()), float(self.tracker.count.numpy())

    def on_epoch_begin(self, epoch, logs=None):
        self.tracker = next(m for m in self.model.metrics if m.name == "loss")
        self.sums = self._loss_sums()

    def _add_saved_metrics(self):
        # Metric variables are sums (loss total and count, confusion counts), so the
        # saved part of the epoch adds on. They exist only after the first step.
        variables = self.model.metrics_variables
        if len(variables) != len(self.metric_values):
            print("note: the interrupted epoch's running metrics do not match this "
                  "model's; its train score counts only the steps after the resume")
        else:
            for var, value in zip(variables, self.metric_values):
                var.assign(var + np.asarray(value, dtype=var.dtype))
        self.metric_values = None

    def on_train_batch_end(self, batch, logs=None):
        # The tracker holds a running, batch-size-weighted sum: this step's loss is
        # its increase over the step's examples.
        total, count = self._loss_sums()
        raw = (total - self.sums[0]) / max(count - self.sums[1], 1.0)
        if self.metric_values:
            self._add_saved_metrics()
            total, count = self._loss_sums()
        self.sums = (total, count)
        self.steps += 1
        if not (math.isfinite(raw) and math.isfinite(total)):
            self.nan = True
            self.model.stop_training = True
            return
        self.trainer.step_losses.append(raw)
        if self.trainer.stop_requested:
            self.model.stop_training = True


class Optimizer(ABC):
    """Base training loop for a `SegNet`.

    Args:
        model: the `models.nn.SegNet` to train.
        train_set: a `DataSet` (in memory) or a list of image paths (streamed).
        evaluator: a `learning.evaluators.Evaluator`; picks the best checkpoint.
        val_set: like `train_set`, or None (then the epoch's train score is used).
        **kwargs: batch_size (8), num_epochs (300), learning_rate (1e-3),
            image_size (for paths; 512), augment (True), seed (0), score_threshold
            (1e-4), callbacks (extra `keras.callbacks.Callback`s for `fit`) and the
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
        self.augment = kwargs.pop("augment", True)
        self.seed = kwargs.pop("seed", 0)
        self.score_threshold = kwargs.pop("score_threshold", 1e-4)
        self.jit_compile = kwargs.pop("jit_compile", "auto")
        self.callbacks = list(kwargs.pop("callbacks", None) or [])
        self.options = kwargs
        self.stop_requested = False
        self.reset()

    def reset(self) -> None:
        """Training state at the start of a run (everything `--resume` restores)."""
        self.curr_epoch = 0                  # completed epochs
        self.step_in_epoch = 0               # steps done in an interrupted epoch
        self.epoch_metrics = None            # its running metric values, to restore
        self.curr_learning_rate = self.init_learning_rate
        self.best_score = self.evaluator.worst_score
        self.num_bad_epochs = 0
        self.step_losses: list[float] = []
        self.epochs: list[dict] = []         # one dict per epoch, as in history.csv

    @abstractmethod
    def _make_optimizer(self) -> keras.optimizers.Optimizer:
        """The Keras optimizer doing the updates."""

    @abstractmethod
    def _update_learning_rate(self) -> None:
        """Called after each epoch's evaluation to adjust `curr_learning_rate`."""

    # ----------------------------------------------------------------- state

    def state(self) -> dict:
        return {"epoch": self.curr_epoch, "step_in_epoch": self.step_in_epoch,
                "epoch_metrics": self.epoch_metrics,
                "learning_rate": self.curr_learning_rate, "best_score": self.best_score,
                "num_bad_epochs": self.num_bad_epochs, "step_losses": self.step_losses,
                "epochs": self.epochs, "seed": self.seed}

    def load_state(self, state: dict) -> None:
        self.curr_epoch = state["epoch"]
        self.step_in_epoch = state.get("step_in_epoch", 0)
        self.epoch_metrics = state.get("epoch_metrics")
        self.curr_learning_rate = state["learning_rate"]
        self.best_score = state["best_score"]
        self.num_bad_epochs = state["num_bad_epochs"]
        self.step_losses = list(state["step_losses"])
        self.epochs = list(state["epochs"])

    def _compile(self) -> None:
        net = self.model
        if getattr(net.model, "optimizer", None) is None or not net.model.compiled:
            metrics = [ConfusionMatrixMetric(net.num_classes, "pixel_accuracy"),
                       ConfusionMatrixMetric(net.num_classes, "mean_iou")]
            net.model.compile(optimizer=self._make_optimizer(), loss=net.loss,
                              metrics=metrics, jit_compile=self.jit_compile)

    def restore(self, path: str) -> None:
        """Loads weights, optimizer variables and training state from a checkpoint."""
        ckpt = checkpoint.load(path)
        if ckpt["state"] is None or ckpt["optimizer_variables"] is None:
            raise checkpoint.CheckpointError(f"{path} holds no training state to resume")
        if ckpt["config"] != self.model.config:
            raise checkpoint.CheckpointError(
                f"{path} was saved by a different model ({ckpt['config']}); resume "
                f"with the options of that run (see config.json beside it)")
        self.model.load_weights_from(ckpt)
        self._compile()
        opt = self.model.model.optimizer
        opt.build(self.model.model.trainable_variables)
        if len(opt.variables) != len(ckpt["optimizer_variables"]):
            raise checkpoint.CheckpointError(f"{path}: optimizer state does not match")
        for var, value in zip(opt.variables, ckpt["optimizer_variables"]):
            var.assign(value)
        self.load_state(ckpt["state"])

    # ----------------------------------------------------------------- data

    def _epoch_data(self, data, epoch: int | None, with_padding: bool = False):
        """The batches of one epoch: shuffled by (seed, epoch) when `epoch` is given."""
        seed = self.seed * 100003 + (epoch or 0)
        if isinstance(data, DataSet):
            idx = np.arange(data.num_examples)
            if epoch is not None:
                idx = np.random.default_rng(seed).permutation(idx)
            images, labels = data.images[idx], data.labels[idx]
            if epoch is not None and self.augment:
                flip = np.random.default_rng(seed + 1).random(len(idx)) < 0.5
                images[flip], labels[flip] = images[flip, :, ::-1], labels[flip, :, ::-1]
            return tf.data.Dataset.from_tensor_slices((images, labels)).batch(
                self.batch_size)
        return make_dataset(data, self.image_size, self.batch_size,
                            shuffle=epoch is not None, seed=seed,
                            augment=self.augment and epoch is not None,
                            with_padding=with_padding)

    def _steps_per_epoch(self) -> int:
        n = (self.train_set.num_examples if isinstance(self.train_set, DataSet)
             else len(self.train_set))
        return math.ceil(n / self.batch_size)

    def _evaluate(self, data) -> float:
        cm, _ = evaluate(self.model, self._epoch_data(data, None))
        return self.evaluator.score_confusion(cm)

    # ----------------------------------------------------------------- training

    def _install_signal_handlers(self):
        """Ctrl-C / SIGTERM ask the loop to stop after the current step, not mid-write."""
        def request_stop(signum, frame):
            if self.stop_requested:  # a second Ctrl-C: the user really means it
                raise KeyboardInterrupt
            self.stop_requested = True
            print(f"\n{signal.Signals(signum).name} received: finishing this step and "
                  f"saving a resumable state (press Ctrl-C again to abort at once)")
        previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                previous[sig] = signal.signal(sig, request_stop)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return previous

    def _save_last(self, save_dir: str) -> str:
        path = os.path.join(save_dir, "last.npz")
        self.model.save(path, optimizer=self.model.model.optimizer, state=self.state())
        return path

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

    def _end_epoch(self, save_dir: str, logs: dict, seconds: float, verbose: bool):
        """The article's epoch end: evaluate, keep the best, adjust the rate, save."""
        train_score = logs.get(self.evaluator.name)
        val_score = None if self.val_set is None else self._evaluate(self.val_set)
        lr_used = self.curr_learning_rate
        improved = self._record_score(train_score if val_score is None else val_score)
        self.curr_epoch += 1
        self.step_in_epoch = 0
        self.epoch_metrics = None
        self.epochs.append({"epoch": self.curr_epoch, "loss": logs.get("loss"),
                            "train_score": train_score, "val_score": val_score,
                            "lr": lr_used, "best": improved, "seconds": round(seconds, 2)})
        if improved:
            self.model.save(os.path.join(save_dir, "best.npz"), state=self.state())
        self._save_last(save_dir)
        write_history_csv(os.path.join(save_dir, "history.csv"), self.epochs)
        plot_learning_curve(os.path.join(save_dir, "learning_curve.png"),
                            self.step_losses, self.epochs, self.evaluator.name,
                            self.evaluator.mode)
        if verbose:
            val = "" if val_score is None else f" | val {self.evaluator.name} {val_score:.4f}"
            print(f"[epoch {self.curr_epoch}/{self.num_epochs}] loss {logs.get('loss'):.4f}"
                  f" | train {self.evaluator.name} {train_score:.4f}{val} | lr {lr_used:.2e}"
                  f"{' | best, saved' if improved else ''}")

    def train(self, save_dir: str, resume: bool = False, verbose: bool = True) -> dict:
        """Trains up to `num_epochs` (counting epochs done before a resume).

        Returns the history: `{"step_losses": [...], "epochs": [...], "best_score": x}`.
        Raises `TrainingInterrupted` after Ctrl-C / SIGTERM (state saved) and
        `TrainingError` on a NaN/infinite loss (the last good checkpoint is kept).
        """
        os.makedirs(save_dir, exist_ok=True)
        checkpoint.remove_stale_temporaries(save_dir)
        self.stop_requested = False
        previous = self._install_signal_handlers()
        try:
            if resume:
                self.restore(os.path.join(save_dir, "last.npz"))
                if verbose:
                    print(f"resumed from {save_dir}/last.npz at epoch {self.curr_epoch}"
                          f" (+{self.step_in_epoch} steps), lr "
                          f"{self.curr_learning_rate:.2e}, best {self.best_score:.4f}")
            else:
                self.reset()
                self._compile()
            while self.curr_epoch < self.num_epochs:
                if self.stop_requested:  # asked to stop before this epoch began
                    raise TrainingInterrupted(self._save_last(save_dir))
                self.model.model.optimizer.learning_rate.assign(self.curr_learning_rate)
                data = self._epoch_data(self.train_set, self.curr_epoch)
                if self.step_in_epoch:
                    data = data.skip(self.step_in_epoch)
                watch = _StepWatch(self, self.epoch_metrics if self.step_in_epoch
                                   else None)
                start = time.time()
                hist = self.model.model.fit(data, epochs=self.curr_epoch + 1,
                                            initial_epoch=self.curr_epoch,
                                            callbacks=[watch] + self.callbacks,
                                            shuffle=False, verbose=int(verbose))
                if watch.nan:
                    last = os.path.join(save_dir, "last.npz")
                    kept = (f"The last good state is {last} (resume from it with a lower "
                            f"--lr)." if os.path.exists(last) else
                            "No epoch had finished, so nothing was saved; start again "
                            "with a lower --lr.")
                    raise TrainingError(
                        f"the loss became NaN or infinite at epoch {self.curr_epoch + 1}, "
                        f"step {watch.steps}; training stopped. {kept}")
                if self.stop_requested and watch.steps < self._steps_per_epoch():
                    self.step_in_epoch = watch.steps
                    self.epoch_metrics = [keras.ops.convert_to_numpy(v).tolist()
                                          for v in self.model.model.metrics_variables]
                    raise TrainingInterrupted(self._save_last(save_dir))
                logs = {k: float(v[-1]) for k, v in hist.history.items()}
                self._end_epoch(save_dir, logs, time.time() - start, verbose)
                # (a stop asked for during the epoch's last step is honoured at the
                # top of the loop, after this epoch end is saved)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return {"step_losses": self.step_losses, "epochs": self.epochs,
                "best_score": self.best_score}


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
