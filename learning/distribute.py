"""Training on several devices and machines with TensorFlow's own `tf.distribute`.

`train.py --strategy NAME` picks one of:

    default      one device (TensorFlow's default strategy): today's behaviour
    mirrored     `tf.distribute.MirroredStrategy`: every visible GPU of this machine,
                 or, with no GPU, every logical CPU device (`use_cpu_devices`)
    multiworker  `tf.distribute.MultiWorkerMirroredStrategy`: every worker listed in
                 the standard `TF_CONFIG` environment variable, each with its GPUs

Keras' `fit` does the rest under the strategy's scope: it copies the variables to
every replica, runs the step on each replica's share of the global batch and sums
the gradients across replicas. What this module adds is what `fit` leaves to its
caller: which worker writes the run folder (`is_chief`), where the others write
instead (`output_dir`), and a stop request that every worker agrees on
(`any_worker`), since a worker that leaves the collective ops alone would hang the
others.
"""

from __future__ import annotations

import json
import os

STRATEGIES = ("default", "mirrored", "multiworker")
_MADE: dict = {}


def use_cpu_devices(count: int) -> None:
    """Splits the CPU into `count` logical devices, so `mirrored` has `count` replicas
    on a machine without a GPU (how the tests run it). Must run before TensorFlow
    starts its devices, i.e. before any tensor is made."""
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)])


def _cluster_from_env() -> dict:
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise ValueError("--strategy multiworker needs the TF_CONFIG environment variable"
                         " (the cluster and this worker's task; see the README section "
                         "'Several GPUs and several machines')")
    try:
        config = json.loads(raw)
        workers = config["cluster"]["worker"]
        task = config["task"]
        task["type"], int(task["index"])
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"TF_CONFIG is not a valid cluster description ({e!r}); expected"
                         f' {{"cluster": {{"worker": ["host:port", ...]}}, "task": '
                         f'{{"type": "worker", "index": 0}}}}. Received: {raw}') from None
    if not workers:
        raise ValueError(f"TF_CONFIG lists no worker. Received: {raw}")
    return config


def make_strategy(name: str):
    """The `tf.distribute.Strategy` named by `train.py --strategy`.

    `multiworker` must be made before TensorFlow runs anything else in the process
    (TensorFlow's rule), so the scripts call this first thing.
    """
    import tensorflow as tf
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices(
            "CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    if name == "multiworker":
        _cluster_from_env()
        if "multiworker" not in _MADE:  # TensorFlow allows one per process
            _MADE["multiworker"] = tf.distribute.MultiWorkerMirroredStrategy()
        return _MADE["multiworker"]
    raise ValueError(f"unknown strategy {name!r}; choose from {list(STRATEGIES)}")


def num_replicas(strategy=None) -> int:
    """Replicas training in step (1 without a strategy)."""
    import tensorflow as tf
    return (strategy or tf.distribute.get_strategy()).num_replicas_in_sync


def steps_done(model) -> int:
    """The optimizer's step count; `int(...)` of a mirrored variable fails, so read it
    through Keras."""
    import keras
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


def worker_info(strategy=None) -> tuple[int, int]:
    """`(this worker's index, number of workers)`; `(0, 1)` on one machine."""
    import tensorflow as tf
    strategy = strategy or tf.distribute.get_strategy()
    resolver = getattr(strategy, "cluster_resolver", None)
    spec = resolver.cluster_spec().as_dict() if resolver is not None else {}
    if not spec:
        return 0, 1
    workers = spec.get("chief", []) + spec.get("worker", [])
    index = resolver.task_id + (len(spec.get("chief", []))
                                if resolver.task_type == "worker" else 0)
    return index, len(workers)


def is_chief(strategy=None) -> bool:
    """Whether this process writes the run folder: always on one machine; in a
    multi-worker job, the `chief` task, or worker 0 when there is no chief."""
    return worker_info(strategy)[0] == 0


def adapt(model, strategy=None):
    """`model`, ready to `fit` under the current strategy: across several workers,
    with the workaround for keras-team/keras#20585 (`learning.multiworker_shim`);
    otherwise untouched, so `fit` runs Keras' own code."""
    if worker_info(strategy)[1] > 1:
        from learning import multiworker_shim
        multiworker_shim.apply(model)
    return model


def any_worker(flag: bool, strategy=None) -> bool:
    """True on every worker when `flag` is True on at least one of them.

    One tiny all-reduce across workers; on a single machine it is just `flag`.
    """
    import tensorflow as tf
    strategy = strategy or tf.distribute.get_strategy()
    if worker_info(strategy)[1] == 1:
        return bool(flag)
    votes = strategy.run(lambda: tf.constant(1.0 if flag else 0.0))
    return float(strategy.reduce(tf.distribute.ReduceOp.SUM, votes, axis=None)) > 0


def barrier(strategy=None) -> None:
    """Waits until every worker gets here (one all-reduce); so a worker leaves a
    stopped run only once the chief has written its state."""
    any_worker(False, strategy)
