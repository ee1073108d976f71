"""Scale-out on tf.distribute: how batches are split among replicas, and train.py
with `--strategy mirrored` (two logical CPU devices) and `--strategy multiworker`
(two worker processes on 127.0.0.1) against one device."""

import csv
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from datasets import demo
from datasets.instances import ensure_instance_demo
from datasets.replicas import ReplicaSplit, eval_batch_sizes, eval_batches
from common.labels import IGNORE_LABEL
from scripts import script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------- batch splits

@pytest.mark.parametrize("n, batch, replicas, tail, dropped, steps", [
    (10, 4, 1, [2], 0, 3),      # one device: full batches, then the smaller last one
    (10, 4, 2, [1, 1], 0, 3),   # the last batch of 2 gives each replica one
    (11, 4, 2, [2, 1], 0, 3),   # 3 left: as even as possible
    (9, 4, 2, [], 1, 2),        # 1 left cannot feed 2 replicas: it sits out the epoch
    (8, 4, 4, [], 0, 2),
])
def test_replica_split_counts(n, batch, replicas, tail, dropped, steps):
    split = ReplicaSplit(n, batch, replicas)
    assert split.tail == tail and split.dropped == dropped and split.steps == steps
    assert sum(split.batch_size_of(s) for s in range(steps)) == n - dropped


def test_global_batch_must_split_evenly():
    with pytest.raises(ValueError, match="multiple of the 3 replicas"):
        ReplicaSplit(10, 4, 3)


def _epoch(split, pipeline=0, num_pipelines=1, skip=0):
    positions = tf.range(split.num_examples)
    ds = split.batches((positions,), lambda p: p, tf.constant(skip), pipeline,
                       num_pipelines)
    return [b.numpy().tolist() for b in ds]


def test_replica_batches_cover_the_epoch_in_one_device_order():
    one = _epoch(ReplicaSplit(11, 4, 1))
    assert one == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10]]
    # two replicas on one worker: each step's global batch, cut in two, in turn
    assert _epoch(ReplicaSplit(11, 4, 2)) == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9], [10]]
    # four replicas on two workers: each worker decodes only its replicas' share
    split = ReplicaSplit(16, 8, 4)
    first, second = _epoch(split, 0, 2), _epoch(split, 1, 2)
    assert first == [[0, 1], [2, 3], [8, 9], [10, 11]]
    assert second == [[4, 5], [6, 7], [12, 13], [14, 15]]
    # a resumed epoch starts after the steps already trained
    assert _epoch(ReplicaSplit(11, 4, 2), skip=1) == [[4, 5], [6, 7], [8, 9], [10]]
    assert _epoch(ReplicaSplit(11, 4, 2), skip=2) == [[8, 9], [10]]


def test_evaluation_batches_pad_with_ignored_pixels_only():
    assert eval_batch_sizes(9, 4, 2) == [4, 5]      # a last 1 joins the batch before
    assert eval_batch_sizes(11, 4, 2) == [4, 4, 3]
    with pytest.raises(ValueError, match="smaller than the 2 replicas"):
        eval_batch_sizes(1, 4, 2)

    def load(i):
        return (tf.fill([2, 2, 3], tf.cast(i + 1, tf.uint8)),
                tf.fill([2, 2], tf.cast(i % 3, tf.uint8)))
    batches = list(eval_batches(load, 9, 4, 2))
    assert [b[0].shape[0] for b in batches] == [4, 6]  # 5 padded to split over 2
    images = np.concatenate([b[0].numpy() for b in batches])
    labels = np.concatenate([b[1].numpy() for b in batches])
    assert images[:9, 0, 0, 0].tolist() == list(range(1, 10))  # every image, once
    assert (images[9:] == 0).all() and (labels[9:] == IGNORE_LABEL).all()
    assert (labels[:9] != IGNORE_LABEL).all()


# ---------------------------------------------------------------- train.py runs

def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _train_args(data, *extra):
    return ["--data", data, "--model", "unet", "--image-size", "64", "--batch-size", "4",
            "--epochs", "1", "--weights", "none", "--val-fraction", "0.2",
            "--no-tensorboard", *extra]


def _first_epoch(run):
    with open(os.path.join(run, "history.csv")) as f:
        return next(csv.DictReader(f))


# Run in fresh processes (logical devices and the multi-worker strategy must be set
# up before TensorFlow starts): train.py's main, once stopped after its first step as
# Ctrl-C would (by `asks_to_stop`), then resumed.
STOP_THEN_RESUME = r"""
import json, os, sys
import keras
import train
from learning.optimizers import MomentumOptimizer


class StopAfterFirstStep(keras.callbacks.Callback):
    def __init__(self, trainer):
        super().__init__()
        self.trainer = trainer

    def on_train_batch_end(self, batch, logs=None):
        self.trainer.request_stop()


def stop_then_resume(args, out, resume_out, asks_to_stop=True):
    plain_init = MomentumOptimizer.__init__

    def stopping_init(self, *a, **k):
        plain_init(self, *a, **k)
        if asks_to_stop:
            self.callbacks.append(StopAfterFirstStep(self))
    MomentumOptimizer.__init__ = stopping_init
    try:
        train.main(args + ["--out", out])
    except Exception as e:
        print("stopped:", type(e).__name__)
    MomentumOptimizer.__init__ = plain_init
    train.main(args + ["--out", resume_out, "--resume"])
"""

# The mirrored run, then the same run stopped after its first step and resumed.
MIRRORED = STOP_THEN_RESUME + r"""
args, out = json.loads(sys.argv[1]), sys.argv[2]
train.main(args + ["--out", out + "/mirrored", "--strategy", "mirrored",
                   "--cpu-devices", "2"])
stop_then_resume(args + ["--strategy", "mirrored"], out + "/cut", out + "/cut")
"""

# One worker of a two-worker job (TF_CONFIG): the chief alone is asked to stop after
# the first step (Ctrl-C there); every worker must stop at that step, then all resume
# from the chief's folder (the shared disk). Worker 1's own --out of the first run
# must stay unwritten.
MULTIWORKER = STOP_THEN_RESUME + r"""
args = json.loads(sys.argv[1]) + ["--strategy", "multiworker"]
run, shared = sys.argv[2:4]  # --out of the run, of the resume (the chief's)
chief = json.loads(os.environ["TF_CONFIG"])["task"]["index"] == 0
stop_then_resume(args, run, shared, asks_to_stop=chief)
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One epoch of the same run (8 training and 2 validation images, global batch
    4) on one device, on two mirrored CPU devices (and once more, stopped after a
    step and resumed), and on two worker processes (stopped by the chief, resumed)."""
    tmp = tmp_path_factory.mktemp("distribute")
    data = demo.generate(str(tmp / "data"), num_train=10, num_test=4)
    instances = ensure_instance_demo(str(tmp / "instances"), num_train=8, num_test=2)
    solo = ["--model", "solo", "--data", instances, "--image-size", "64",
            "--batch-size", "4", "--epochs", "1", "--weights", "none",
            "--solo-backbone", "small", "--val-fraction", "0.25", "--no-tensorboard"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "-1", "PYTHONPATH": ROOT}
    out = {name: str(tmp / name) for name in ("single", "mirrored", "cut", "chief",
                                              "worker")}
    logs, procs = {}, {}

    def start(name, argv, env):  # output to a file: a full pipe would block the child
        log = open(tmp / f"{name}.log", "w")
        procs[name] = subprocess.Popen([sys.executable, "-c", *argv], env=env, cwd=ROOT,
                                       stdout=log, stderr=subprocess.STDOUT, text=True)
        log.close()

    # The jobs run at once: each spends much of its time in one Python thread
    # (imports, tracing) or waiting on the other worker, so together they finish
    # sooner than one after another on two cores.
    start("mirrored", [MIRRORED, json.dumps(_train_args(data)), str(tmp)], env)
    # SOLO on the same two devices, in its own process as train.py runs it
    solo += ["--out", str(tmp / "solo"), "--strategy", "mirrored", "--cpu-devices", "2"]
    start("solo", ["import sys, train; sys.exit(train.main(sys.argv[1:]))", *solo], env)
    workers = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    for index, name in enumerate(("chief", "worker")):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker",
                                                              "index": index}}
        start(name, [MULTIWORKER, json.dumps(_train_args(data)), out[name], out["chief"]],
              {**env, "TF_CONFIG": json.dumps(tf_config)})
    try:
        assert script("train").main(_train_args(data, "--out", out["single"])) == 0
        for name, proc in procs.items():
            proc.wait(timeout=600)
            logs[name] = (tmp / f"{name}.log").read_text()
            assert proc.returncode == 0, f"{name} failed:\n{logs[name][-3000:]}"
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    return data, out, logs


def test_mirrored_and_multiworker_train_like_one_device(runs):
    data, out, logs = runs
    assert "replicas: 2 (mirrored); batch 4 global, 2 per replica" in logs["mirrored"]
    assert "replicas: 2 (multiworker)" in logs["chief"]
    assert all("stopped: TrainingInterrupted" in logs[k] for k in ("chief", "worker"))
    single, mirrored, chief = (_first_epoch(out[k]) for k in ("single", "mirrored", "chief"))
    # Two replicas of the same global batch compute the same step as one device, but
    # each replica's loss is the mean over its own counted pixels, and Keras averages
    # the two means, where one device averages all counted pixels of the batch: the
    # ignore-labelled trimap borders differ from image to image, so the pixel weights
    # differ slightly (measured: 3e-4 relative over the epoch). Synchronised batch norm
    # (E[x^2] - E[x]^2 over both replicas) adds float rounding only.
    assert float(mirrored["loss"]) == pytest.approx(float(single["loss"]), rel=2e-3)
    # The same two replicas, on one machine or on two (stopped by the chief after a
    # step, then resumed): the same numbers.
    assert float(chief["loss"]) == pytest.approx(float(mirrored["loss"]), rel=1e-5)
    assert float(chief["val_score"]) == pytest.approx(float(mirrored["val_score"]),
                                                      abs=1e-9)


def test_only_the_chief_writes_the_run_folder(runs):
    _, out, logs = runs
    assert sorted(os.listdir(out["chief"])) == [
        "best.keras", "config.json", "history.csv", "last.keras", "learning_curve.png",
        "state.json"]
    assert not os.path.exists(out["worker"])
    assert "this worker writes nothing to --out" in logs["worker"]


def test_a_distributed_checkpoint_tests_on_one_device(runs, tmp_path):
    data, out, _ = runs
    assert script("test").main(["--data", data, "--run", out["chief"], "--draws",
                                str(tmp_path / "draws"), "--max-draws", "1"]) == 0
    with open(os.path.join(out["chief"], "metrics.json")) as f:
        metrics = json.load(f)
    assert metrics["num_images"] == 4 and 0.0 <= metrics["mean_iou"] <= 1.0


def test_a_mirrored_run_stopped_mid_epoch_resumes_exactly(runs):
    _, out, logs = runs
    assert "stopped: TrainingInterrupted" in logs["mirrored"]
    assert _first_epoch(out["cut"]) == {**_first_epoch(out["mirrored"]),
                                        "seconds": _first_epoch(out["cut"])["seconds"]}
    import keras

    import models  # noqa: F401  (registers the architectures)
    whole, cut = (keras.models.load_model(os.path.join(out[k], "last.keras"))
                  for k in ("mirrored", "cut"))
    for a, b in zip(whole.get_weights(), cut.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_solo_trains_on_two_mirrored_replicas(runs):
    _, out, logs = runs
    solo = os.path.join(os.path.dirname(out["mirrored"]), "solo")
    assert "replicas: 2 (mirrored); batch 4 global, 2 per replica" in logs["solo"]
    row = _first_epoch(solo)
    assert row["epoch"] == "1" and np.isfinite(float(row["loss"]))
    assert 0.0 <= float(row["val_score"]) <= 1.0  # mask AP50 of the validation images
    assert os.path.isfile(os.path.join(solo, "best.keras"))
