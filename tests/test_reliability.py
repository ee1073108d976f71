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
from datasets.files import list_images
from learning import cli
from datasets.stream import make_training_stream
from common.files import remove_stale_temporaries
from learning import runs
from learning.optimizers import TrainingError, TrainingInterrupted
from models.losses import make_loss
from models.unet import UNet
from scripts import ROOT, script
from test_training import assert_same_state
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


def last_state(run_dir):
    """The training state saved with `last.keras` (the newest in state.json)."""
    with open(os.path.join(run_dir, "state.json")) as f:
        return json.load(f)["states"][-1]


def weights_of(path):
    return [np.asarray(w) for w in runs.load_checkpoint(str(path)).weights]


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


@pytest.fixture(scope="module")
def straight_run(demo_root, tmp_path_factory):
    """The uninterrupted 3-epoch run that each interrupted one must reproduce."""
    run = tmp_path_factory.mktemp("straight")
    straight = make_optimizer(demo_root, 3)
    straight.train(str(run), verbose=False)
    return straight, run


@pytest.mark.parametrize("step", [1, 3], ids=["mid-epoch", "last step"])
def test_sigterm_then_resume_is_exact(demo_root, straight_run, tmp_path, step):
    straight, straight_dir = straight_run

    # SIGTERM as a step of the 2nd epoch ends (an epoch has 4 steps): the run stops
    # before the next step and saves. After the 2nd step that leaves 2 steps done; after
    # the 4th, the epoch is complete and ends normally (and is saved) first.
    cut = make_optimizer(demo_root, 3, callbacks=[SignalAt(1, step)])
    with pytest.raises(TrainingInterrupted, match="resumable state saved"):
        with cli.stop_on_signals(cut):
            cut.train(str(tmp_path / "b"), verbose=False)
    saved = last_state(tmp_path / "b")
    assert (saved["epoch"], saved["step_in_epoch"]) == ((1, 2) if step == 1 else (2, 0))

    resumed = make_optimizer(demo_root, 3)
    resumed.train(str(tmp_path / "b"), resume=True, verbose=False)
    assert_same_state(straight, resumed, rtol=1e-5)  # epoch, rate, best, step losses
    a, b = straight.model, resumed.model
    for wa, wb in zip(a.weights, b.weights):
        np.testing.assert_allclose(wa.numpy(), wb.numpy(), rtol=1e-5, atol=1e-6)
    assert int(a.optimizer.iterations) == int(b.optimizer.iterations) == 12
    for va, vb in zip(a.optimizer.variables, b.optimizer.variables):
        np.testing.assert_allclose(np.asarray(va), np.asarray(vb), rtol=1e-5, atol=1e-6)
    # The interrupted epoch's row (loss, train and validation score) is as if unbroken.
    rows_a, rows_b = history(straight_dir), history(tmp_path / "b")
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
    """Every checkpoint left in `run` loads whole; returns {name: its state}.

    `last.keras` must find its own state in state.json (by the optimizer's step)."""
    states = {}
    for name in ("best.keras", "last.keras"):
        path = os.path.join(run, name)
        if os.path.exists(path):
            model = keras.models.load_model(path)
            assert all(np.isfinite(np.asarray(w)).all() for w in model.weights)
            states[name] = None
            if name == "last.keras":
                with open(os.path.join(run, "state.json")) as f:
                    saved = json.load(f)["states"]
                step = int(model.optimizer.iterations)
                states[name] = [s for s in saved if s["iterations"] == step][-1]
    return states


def test_train_process_killed_then_interrupted_then_resumed(demo_root, tmp_path):
    run = str(tmp_path / "run")
    argv = ["--data", demo_root, "--out", run, "--model", "unet", "--image-size", "64",
            "--batch-size", "2", "--epochs", "3", "--weights", "none", "--augment", "none"]
    last = os.path.join(run, "last.keras")

    def writing():
        return any(p.endswith(".keras") for p in temporaries(run))

    def resume_flag():
        return ["--resume"] if os.path.exists(last) else []

    # 1. SIGKILL (no chance to clean up) as the first checkpoint is being written.
    proc = run_train(argv)
    wait_for(lambda: writing() or os.path.exists(last), proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert_checkpoints_load(run)

    # 2. SIGKILL again once best.keras and last.keras exist, as they are next rewritten.
    proc = run_train(argv + resume_flag())
    wait_for(lambda: os.path.exists(last), proc)
    stamp = os.stat(last).st_mtime_ns
    wait_for(lambda: writing() or os.stat(last).st_mtime_ns != stamp, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    states = assert_checkpoints_load(run)
    assert states["last.keras"]["epoch"] >= 1 and "best.keras" in states

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
    assert 1 <= states["last.keras"]["epoch"] <= 3

    # 4. --resume finishes the run; every epoch appears exactly once in the history.
    assert cli.run(script("train").main, argv + ["--resume"]) == 0
    assert last_state(run)["epoch"] == 3
    assert [r["epoch"] for r in history(run)] == ["1", "2", "3"]
    assert not temporaries(run)


# --------------------------------------------------------------------------- SIGKILL

WRITER = """
import sys, numpy as np, keras
from learning.runs import save_checkpoint
path = sys.argv[1]
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3_000_000, name="big")])
for i in range(10**6):
    model.get_layer("big").kernel.assign(np.full((4, 3_000_000), i, np.float32))
    model.get_layer("big").bias.assign(np.full(3_000_000, i, np.float32))
    save_checkpoint(model, path)
    print(i, flush=True)
"""


def test_checkpoint_survives_sigkill_at_any_moment(tmp_path):
    path = str(tmp_path / "last.keras")
    mid_write = 0
    for kill in range(4):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, path], cwd=ROOT,
                                stdout=subprocess.PIPE, text=True)
        if kill == 0:  # the very first save, before any checkpoint exists
            wait_for(lambda: temporaries(tmp_path), proc, timeout=60)
        else:          # after 1-3 complete saves, in the middle of the next one
            for _ in range(kill):
                proc.stdout.readline()
            wait_for(lambda: temporaries(tmp_path), proc, timeout=60)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        mid_write += bool(temporaries(tmp_path))
        if os.path.exists(path):
            kernel, bias = weights_of(path)  # one save, whole: every value is its i
            i = bias[0]
            assert kernel.shape == (4, 3_000_000) and (kernel == i).all() and (bias == i).all()
        else:
            assert kill == 0  # only a kill before the first rename leaves no file
        assert len(remove_stale_temporaries(str(tmp_path))) <= 1
        assert not temporaries(tmp_path)
    assert mid_write >= 3, "the kills should land while a checkpoint is being written"


def test_damaged_checkpoint_gets_a_clear_error(demo_root, tmp_path, capsys):
    path = str(tmp_path / "best.keras")
    UNet(base_filters=4, depth=2).save(path)
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    with pytest.raises(runs.CheckpointError, match="not a readable checkpoint.*"
                                                   "other checkpoint of the run"):
        runs.load_checkpoint(path)
    assert cli.run(script("test").main, ["--data", demo_root, "--checkpoint", path]) == 2
    assert "best.keras is not a readable checkpoint" in capsys.readouterr().err


def test_second_ctrl_c_aborts_at_once(demo_root, tmp_path):
    class TwoSignals(SignalAt):
        def on_train_batch_end(self, batch, logs=None):
            if (self.epoch, batch) == self.at:
                os.kill(os.getpid(), signal.SIGINT)
                os.kill(os.getpid(), signal.SIGINT)

    before = signal.getsignal(signal.SIGINT)  # (ignored where pytest runs in background)
    opt = make_optimizer(demo_root, 2, callbacks=[TwoSignals(1, 0)])
    with pytest.raises(KeyboardInterrupt):
        with cli.stop_on_signals(opt):
            opt.train(str(tmp_path), verbose=False)
    # What was saved at the end of epoch 1 is still there, whole.
    assert assert_checkpoints_load(str(tmp_path))["last.keras"]["epoch"] == 1
    assert signal.getsignal(signal.SIGINT) == before  # the handler is given back


# --------------------------------------------------------------------------- NaN


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(demo_root, tmp_path):
    scale = tf.Variable(1.0)
    base = make_loss("ce")

    def scaled(y, p):
        return base(y, p) * scale
    opt = make_optimizer(demo_root, 1, loss=scaled)
    run = str(tmp_path / "run")
    opt.train(run, verbose=False)
    names = ("last.keras", "best.keras", "state.json", "history.csv")
    good = {n: open(os.path.join(run, n), "rb").read() for n in names}

    scale.assign(float("nan"))
    opt.num_epochs = 2
    with pytest.raises(TrainingError, match=r"NaN or infinite at epoch 2, step 1.*"
                                            r"last good state is .*last\.keras"):
        opt.train(run, resume=True, verbose=False)
    for name in names:  # the last good epoch's files, byte for byte
        assert open(os.path.join(run, name), "rb").read() == good[name], name
    assert last_state(run)["epoch"] == 1
    assert [r["epoch"] for r in history(run)] == ["1"]

    fresh = make_optimizer(demo_root, 1, loss=scaled)
    with pytest.raises(TrainingError, match="No epoch had finished"):
        fresh.train(str(tmp_path / "fresh"), verbose=False)
    assert not os.path.exists(tmp_path / "fresh" / "last.keras")


# --------------------------------------------------------------------------- full disk


def full_disk(model, path):
    with open(path, "wb") as f:
        f.write(b"x" * 1000)
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_full_disk_keeps_the_previous_checkpoint_and_says_so(demo_root, tmp_path,
                                                             monkeypatch, capsys):
    run = str(tmp_path / "run")
    opt = make_optimizer(demo_root, 1)
    opt.train(run, verbose=False)
    before = {n: open(os.path.join(run, n), "rb").read()
              for n in ("best.keras", "last.keras")}

    monkeypatch.setattr(keras.saving, "save_model", full_disk)
    opt.num_epochs = 2
    with pytest.raises(runs.CheckpointError) as err:
        opt.train(run, resume=True, verbose=False)
    assert "No space left on device" in str(err.value)
    assert "The previous checkpoint is intact" in str(err.value)
    for name, data in before.items():
        assert open(os.path.join(run, name), "rb").read() == data, name
    assert not temporaries(run)

    # What a user of the scripts sees: one line, exit status 2.
    def save(argv):
        runs.save_checkpoint(opt.model, os.path.join(run, "last.keras"))
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
    folders = [str(tmp_path / name) for name in ("one", "two")]
    for run in folders:
        assert cli.run(train.main, common + ["--out", run]) == 0
        assert cli.run(test_script.main, ["--data", demo_root, "--run", run]) == 0
    configs = [json.load(open(os.path.join(r, "config.json"))) for r in folders]
    assert configs[0]["val_names"] == configs[1]["val_names"]
    assert len(configs[0]["val_names"]) == 3
    assert history(folders[0]) == history(folders[1])
    one, two = (weights_of(os.path.join(r, "last.keras")) for r in folders)
    for wa, wb in zip(one, two):
        np.testing.assert_array_equal(wa, wb)
    metrics = [json.load(open(os.path.join(r, "metrics.json"))) for r in folders]
    for m in metrics:
        m.pop("checkpoint")
    assert metrics[0] == metrics[1]

    # The batches: the same (seed, epoch) gives the same order and flips; another
    # epoch or seed does not.
    assert isinstance(keras.models.load_model(os.path.join(folders[0], "last.keras")), UNet)
    paths = list_images(os.path.join(demo_root, "train"))

    def first_batch(seed, epoch):
        stream = make_training_stream(paths, 64, 4, seed=seed, first_epoch=epoch,
                                      num_epochs=epoch + 1)
        return next(iter(stream))[0].numpy()

    np.testing.assert_array_equal(first_batch(3, 1), first_batch(3, 1))
    assert not np.array_equal(first_batch(3, 1), first_batch(3, 2))
    assert not np.array_equal(first_batch(3, 1), first_batch(4, 1))


def test_a_kill_between_state_and_checkpoint_writes_still_resumes(demo_root, tmp_path):
    # save_last writes state.json, then last.keras. A kill between the two renames
    # leaves a state.json one epoch ahead of last.keras: simulated here by putting the
    # epoch-1 last.keras back after epoch 2 was saved.
    run = str(tmp_path / "run")
    opt = make_optimizer(demo_root, 1)
    opt.train(run, verbose=False)
    epoch1 = open(os.path.join(run, "last.keras"), "rb").read()
    opt.num_epochs = 2
    opt.train(run, resume=True, verbose=False)
    assert last_state(run)["epoch"] == 2
    open(os.path.join(run, "last.keras"), "wb").write(epoch1)

    resumed = make_optimizer(demo_root, 2)
    resumed.compile()
    state = resumed.restore(run)  # finds the state that belongs to the epoch-1 checkpoint
    assert state["epoch"] == 1 and len(state["history"]["epochs"]) == 1
    # A second kill in the same window, during the next save: the epoch-1 state must
    # still be in state.json for the epoch-1 checkpoint.
    newer = {**state, "epoch": 5, "iterations": 99,
             "history": {"epochs": [], "step_losses": [0.0]}}
    runs.write_state(run, newer, on_disk=state["iterations"])
    again = make_optimizer(demo_root, 2)
    again.train(run, resume=True, verbose=False)
    assert [r["epoch"] for r in history(run)] == ["1", "2"]
    assert last_state(run)["epoch"] == 2
