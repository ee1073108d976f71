"""Keras 3's `fit` under `MultiWorkerMirroredStrategy`: the workaround for
keras-team/keras#20585, and the one module of this project that uses Keras' private
names.

Keras' TensorFlow trainer does two reductions that fail when the replicas span several
machines: it learns the shapes of the first distributed batch by averaging it over the
replicas (`MultiWorkerMirroredStrategy` cannot reduce an `(images, labels)` pair, nor
uint8), and it averages each step's scalar logs with `reduce("MEAN", axis=0)`, which
needs a batch axis. `apply(model)` changes one model so it sidesteps both: its
symbolic build takes the first replica's share of the batch, and its steps' scalar
logs get a batch axis of one. `learning.distribute.adapt` applies it only when a run
spans several workers; on one machine `fit` runs exactly Keras' own code.

Tested on the Keras versions requirements.txt pins; `check()` fails, naming the
missing method, if a Keras upgrade removes a name relied on here.
"""

from __future__ import annotations

import types

import keras

# Private methods of Keras' TensorFlow trainer that `apply` calls or replaces.
KERAS_PRIVATE_METHODS = ("_maybe_symbolic_build", "_symbolic_build")


def check() -> None:
    """Raises RuntimeError when this Keras lacks a method the shim relies on."""
    missing = [name for name in KERAS_PRIVATE_METHODS if not hasattr(keras.Model, name)]
    if missing:
        raise RuntimeError(
            f"Keras {keras.__version__} has no keras.Model.{', '.join(missing)}, which "
            f"the multi-worker workaround in learning/multiworker_shim.py replaces "
            f"(keras-team/keras#20585). Install the Keras version requirements.txt "
            f"pins, or check whether that Keras fixed the issue and the shim can go.")


def apply(model: keras.Model) -> keras.Model:
    """Makes `model`'s `fit` work across several workers (see the module docstring)."""
    check()
    train_step, test_step = model.train_step, model.test_step
    model.train_step = lambda data: _with_batch_axis(train_step(data))
    model.test_step = lambda data: _with_batch_axis(test_step(data))
    model._maybe_symbolic_build = types.MethodType(_maybe_symbolic_build, model)
    return model


def _with_batch_axis(logs: dict) -> dict:
    """A step's scalar logs as shape-(1,) tensors, which Keras' cross-worker
    `reduce("MEAN", axis=0)` can average."""
    import tensorflow as tf
    return {k: tf.reshape(v, [1]) if len(v.shape) == 0 else v for k, v in logs.items()}


def _maybe_symbolic_build(self, iterator=None, data_batch=None):
    """Keras' symbolic build from the first replica's share of the first batch, which
    has the shapes and dtypes it needs, instead of the replicas' average."""
    import tensorflow as tf
    if iterator is None or data_batch is not None:
        return type(self)._maybe_symbolic_build(self, iterator, data_batch)
    for _, _, batches in iterator:
        batch = next(batches)
        break
    first = keras.tree.map_structure(
        lambda v: v.values[0] if isinstance(v, tf.distribute.DistributedValues) else v,
        batch)
    with self.distribute_strategy.scope():
        self._symbolic_build(data_batch=first)
