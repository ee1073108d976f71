"""Runs that get interrupted, killed, poisoned by NaN or starved of disk lose nothing,
and the same seed gives the same run.

These train U-Net (random weights, 64x64, batch 2) on a tiny demo set: the loop under
test is the same for every architecture, and U-Net compiles in seconds.
"""

import csv
import errno
import glob
import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from datasets import demo
from datasets.data import list_images
from learning import cli
from learning.evaluators import IoUEvaluator
from learning.optimizers import MomentumOptimizer, TrainingError, TrainingInterrupted
from models import checkpoint
from models.nn import SegNet
from test_training import ROOT, script
from test_training import make_optimizer as training_optimizer


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    return demo.generate(str(tmp_path_factory.mktemp("demo")), num_train=10, num_test=2)


def make_optimizer(demo_root, epochs, **kwargs):
    paths = list_images(os.path.join(demo_root, "train"))
    return training_optimizer(paths, epochs, learning_rate=1e-2, **kwargs)


def history(run_dir):
    with open(os.path.join(run_dir, "history.csv")) as f:
        return [{k: v for k, v in row.items() if k != "seconds"}
                for row in csv.DictReader(f)]


def temporaries(folder):
    return glob.glob(os.path.join(folder, ".tmp-*"))


# --------------------------------------------------------------------------- Ctrl-C


class SignalAt(keras.callbacks.Callback):
    """Sends this process `signum` after step `step` of epoch `epoch` (0-based)."""

    def __init__(self, epoch, step, signum=signal.SIGTERM):
        super().__init__()
        self.at, self.signum, self.epoch = (epoch, step), signum, None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            os.kill(os.getpid(), self.signum)


@pytest.mark.parametrize("step", [1, 3], ids=["mid-epoch", "last step"])
def test_sigterm_then_resume_is_exact(demo_root, tmp_path, step):
    straight = make_optimizer(demo_root, 3)
    straight.train(str(tmp_path / "a"), verbose=False)

    # SIGTERM once a step of the 2nd epoch is done (an epoch has 4 steps): the loop
    # finishes the step under way and saves. After the 2nd step that is the 3rd; after
    # the 4th, the epoch is complete and ends normally first.
    cut = make_optimizer(demo_root, 3, callbacks=[SignalAt(1, step)])
    with pytest.raises(TrainingInterrupted, match="resumable state saved"):
        cut.train(str(tmp_path / "b"), verbose=False)
    saved = checkpoint.load(str(tmp_path / "b" / "last.npz"))["state"]
    assert (saved["epoch"], saved["step_in_epoch"]) == ((1, 3) if step == 1 else (2, 0))

    resumed = make_optimizer(demo_root, 3)
    resumed.train(str(tmp_path / "b"), resume=True, verbose=False)
    for attr in ("curr_epoch", "curr_learning_rate", "num_bad_epochs", "best_score"):
        assert getattr(resumed, attr) == pytest.approx(getattr(straight, attr)), attr
    np.testing.assert_allclose(resumed.step_losses, straight.step_losses, rtol=1e-5)
    a, b = straight.model.model, resumed.model.model
    for wa, wb in zip(a.weights, b.weights):
        np.testing.assert_allclose(wa.numpy(), wb.numpy(), rtol=1e-5, atol=1e-6)
    assert int(a.optimizer.iterations) == int(b.optimizer.iterations) == 12
    for va, vb in zip(a.optimizer.variables, b.optimizer.variables):
        np.testing.assert_allclose(np.asarray(va), np.asarray(vb), rtol=1e-5, atol=1e-6)
    # The interrupted epoch's row (loss, train and validation score) is as if unbroken.
    rows_a, rows_b = history(tmp_path / "a"), history(tmp_path / "b")
    assert [r["epoch"] for r in rows_b] == ["1", "2", "3"]
    for ra, rb in zip(rows_a, rows_b):
        for key in ("loss", "train_score", "val_score", "lr"):
            assert float(rb[key]) == pytest.approx(float(ra[key]), rel=1e-5), key


def run_train(argv, **kwargs):
    env = dict(os.environ, PYTHONUNBUFFERED="1", CUDA_VISIBLE_DEVICES="-1")
    return subprocess.Popen([sys.executable, "train.py"] + argv, cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **kwargs)


def wait_for(condition, proc, timeout=240):
    start = time.time()
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"train.py ended early ({proc.returncode}):\n"
                                 f"{proc.stdout.read()}\n{proc.stderr.read()}")
        if time.time() - start > timeout:
            proc.kill()
            raise AssertionError("train.py took too long")
        time.sleep(0.01)


def assert_checkpoints_load(run):
    """Every checkpoint left in `run` loads whole; returns {name: state}."""
    states = {}
    for name in ("best.npz", "last.npz"):
        path = os.path.join(run, name)
        if os.path.exists(path):
            ckpt = checkpoint.load(path)
            assert all(np.isfinite(w).all() for w in ckpt["weights"])
            states[name] = ckpt["state"]
    return states


def test_train_process_killed_then_interrupted_then_resumed(demo_root, tmp_path):
    run = str(tmp_path / "run")
    argv = ["--data", demo_root, "--out", run, "--model", "unet", "--image-size", "64",
            "--batch-size", "2", "--epochs", "3", "--weights", "none", "--no-augment"]
    last = os.path.join(run, "last.npz")

    def writing():
        return any(p.endswith(".npz") for p in temporaries(run))

    def resume_flag():
        return ["--resume"] if os.path.exists(last) else []

    # 1. SIGKILL (no chance to clean up) as the first checkpoint is being written.
    proc = run_train(argv)
    wait_for(lambda: writing() or os.path.exists(last), proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert_checkpoints_load(run)

    # 2. SIGKILL again once best.npz and last.npz exist, as they are next rewritten.
    proc = run_train(argv + resume_flag())
    wait_for(lambda: os.path.exists(last), proc)
    stamp = os.stat(last).st_mtime_ns
    wait_for(lambda: writing() or os.stat(last).st_mtime_ns != stamp, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    states = assert_checkpoints_load(run)
    assert states["last.npz"]["epoch"] >= 1 and "best.npz" in states

    # 3. Ctrl-C during the resumed run: it saves a resumable state and exits 130.
    proc = run_train(argv + ["--resume"])
    out = []
    wait_for(lambda: out.append(proc.stdout.readline()) or "resumed from" in out[-1], proc)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "SIGINT received" in stdout
    assert "resumable state saved to" in stderr and "--resume" in stderr
    assert "Traceback" not in stderr
    states = assert_checkpoints_load(run)
    assert 1 <= states["last.npz"]["epoch"] <= 3

    # 4. --resume finishes the run; every epoch appears exactly once in the history.
    assert cli.run(script("train").main, argv + ["--resume"]) == 0
    assert checkpoint.load(last)["state"]["epoch"] == 3
    assert [r["epoch"] for r in history(run)] == ["1", "2", "3"]
    assert not temporaries(run)


# --------------------------------------------------------------------------- SIGKILL

WRITER = """
import sys, numpy as np
from models import checkpoint
path = sys.argv[1]
for i in range(10**6):
    weights = [np.full(3_000_000, i, np.float32) for _ in range(4)]
    checkpoint.save(path, {"i": i}, weights, [f"w{j}" for j in range(4)], state={"i": i})
    print(i, flush=True)
"""


def test_checkpoint_survives_sigkill_at_any_moment(tmp_path):
    path = str(tmp_path / "last.npz")
    mid_write = 0
    for kill in range(6):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, path], cwd=ROOT,
                                stdout=subprocess.PIPE, text=True)
        if kill == 0:  # the very first save, before any checkpoint exists
            wait_for(lambda: temporaries(tmp_path), proc, timeout=60)
        else:          # after 1-3 complete saves, in the middle of the next one
            for _ in range(1 + kill % 3):
                proc.stdout.readline()
            wait_for(lambda: temporaries(tmp_path), proc, timeout=60)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        mid_write += bool(temporaries(tmp_path))
        if os.path.exists(path):
            ckpt = checkpoint.load(path)
            i = ckpt["state"]["i"]
            assert ckpt["config"] == {"i": i}
            assert all((w == i).all() and w.size == 3_000_000 for w in ckpt["weights"])
        else:
            assert kill == 0  # only a kill before the first rename leaves no file
        assert len(checkpoint.remove_stale_temporaries(str(tmp_path))) <= 1
        assert not temporaries(tmp_path)
    assert mid_write >= 3, "the kills should land while a checkpoint is being written"


def test_damaged_checkpoint_gets_a_clear_error(demo_root, tmp_path, capsys):
    path = str(tmp_path / "best.npz")
    checkpoint.save(path, {"architecture": "unet"}, [np.ones(1000, np.float32)], ["w"])
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    with pytest.raises(checkpoint.CheckpointError, match="not a readable checkpoint.*"
                                                         "other checkpoint of the run"):
        checkpoint.load(path)
    assert cli.run(script("test").main, ["--data", demo_root, "--checkpoint", path]) == 2
    assert "best.npz is not a readable checkpoint" in capsys.readouterr().err


def test_second_ctrl_c_aborts_at_once(demo_root, tmp_path):
    class TwoSignals(SignalAt):
        def on_train_batch_end(self, batch, logs=None):
            if (self.epoch, batch) == self.at:
                os.kill(os.getpid(), signal.SIGINT)
                os.kill(os.getpid(), signal.SIGINT)

    before = signal.getsignal(signal.SIGINT)  # (ignored where pytest runs in background)
    opt = make_optimizer(demo_root, 2, callbacks=[TwoSignals(1, 0)])
    with pytest.raises(KeyboardInterrupt):
        opt.train(str(tmp_path), verbose=False)
    # What was saved at the end of epoch 1 is still there, whole.
    assert checkpoint.load(str(tmp_path / "last.npz"))["state"]["epoch"] == 1
    assert signal.getsignal(signal.SIGINT) == before  # the handler is given back


# --------------------------------------------------------------------------- NaN


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(demo_root, tmp_path):
    scale = tf.Variable(1.0)
    opt = make_optimizer(demo_root, 1)
    base = opt.model.loss
    opt.model.loss = lambda y, p: base(y, p) * scale
    run = str(tmp_path / "run")
    opt.train(run, verbose=False)
    good = checkpoint.load(os.path.join(run, "last.npz"))

    scale.assign(float("nan"))
    opt.num_epochs = 2
    with pytest.raises(TrainingError, match=r"NaN or infinite at epoch 2, step 1.*"
                                            r"last good state is .*last\.npz"):
        opt.train(run, resume=True, verbose=False)
    for name in ("last.npz", "best.npz"):
        kept = checkpoint.load(os.path.join(run, name))
        assert kept["state"]["epoch"] == 1, name
        for w, g in zip(kept["weights"], good["weights"]):
            np.testing.assert_array_equal(w, g)
    assert [r["epoch"] for r in history(run)] == ["1"]

    fresh = make_optimizer(demo_root, 1)
    fresh.model.loss = lambda y, p: base(y, p) * scale
    with pytest.raises(TrainingError, match="No epoch had finished"):
        fresh.train(str(tmp_path / "fresh"), verbose=False)
    assert not os.path.exists(tmp_path / "fresh" / "last.npz")


# --------------------------------------------------------------------------- full disk


def full_disk(file, **arrays):
    file.write(b"x" * 1000)
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_full_disk_keeps_the_previous_checkpoint_and_says_so(demo_root, tmp_path,
                                                             monkeypatch, capsys):
    run = str(tmp_path / "run")
    opt = make_optimizer(demo_root, 1)
    opt.train(run, verbose=False)
    before = {n: open(os.path.join(run, n), "rb").read() for n in ("best.npz", "last.npz")}

    monkeypatch.setattr(checkpoint.np, "savez", full_disk)
    opt.num_epochs = 2
    with pytest.raises(checkpoint.CheckpointError) as err:
        opt.train(run, resume=True, verbose=False)
    assert "No space left on device" in str(err.value)
    assert "The previous checkpoint is intact" in str(err.value)
    for name, data in before.items():
        assert open(os.path.join(run, name), "rb").read() == data, name
    assert not temporaries(run)

    # What a user of the scripts sees: one line, exit status 2.
    def save(argv):
        opt.model.save(os.path.join(run, "last.npz"))
    assert cli.run(save) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: could not save checkpoint") and "intact" in err

    def write_history_on_full_disk(argv):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC),
                      os.path.join(run, "history.csv"))
    assert cli.run(write_history_on_full_disk) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "history.csv" in err


# --------------------------------------------------------------------------- seeds


def test_same_seed_same_split_batches_and_metrics(demo_root, tmp_path):
    train, test_script = script("train"), script("test")
    common = ["--data", demo_root, "--model", "unet", "--image-size", "64",
              "--batch-size", "2", "--epochs", "2", "--weights", "none", "--seed", "3",
              "--val-fraction", "0.3"]
    runs = [str(tmp_path / name) for name in ("one", "two")]
    for run in runs:
        assert cli.run(train.main, common + ["--out", run]) == 0
        assert cli.run(test_script.main, ["--data", demo_root, "--run", run]) == 0
    configs = [json.load(open(os.path.join(r, "config.json"))) for r in runs]
    assert configs[0]["val_names"] == configs[1]["val_names"]
    assert len(configs[0]["val_names"]) == 3
    assert history(runs[0]) == history(runs[1])
    one, two = (checkpoint.load(os.path.join(r, "last.npz")) for r in runs)
    for wa, wb in zip(one["weights"], two["weights"]):
        np.testing.assert_array_equal(wa, wb)
    metrics = [json.load(open(os.path.join(r, "metrics.json"))) for r in runs]
    for m in metrics:
        m.pop("checkpoint")
    assert metrics[0] == metrics[1]

    # The batches: the same (seed, epoch) gives the same order and flips; another
    # epoch or seed does not.
    net = SegNet.load(os.path.join(runs[0], "last.npz"))
    paths = list_images(os.path.join(demo_root, "train"))

    def first_batch(seed, epoch):
        opt = MomentumOptimizer(net, paths, IoUEvaluator(), batch_size=4, seed=seed,
                                image_size=64)
        return next(iter(opt._epoch_data(paths, epoch)))[0].numpy()

    np.testing.assert_array_equal(first_batch(3, 1), first_batch(3, 1))
    assert not np.array_equal(first_batch(3, 1), first_batch(3, 2))
    assert not np.array_equal(first_batch(3, 1), first_batch(4, 1))
