"""Nothing lost, nothing silently wrong: an existing run is never replaced without
being asked, a run folder has one trainer at a time, an export survives a kill at
every step of its swap, and odd inputs (two images with one name, numbers that cannot
work, an empty test set, a damaged checkpoint) give a clear error."""

import json
import logging
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from PIL import Image

from common import files
from datasets import demo
from learning import cli, runs
from scripts import ROOT, script

train, test_script, draw = script("train"), script("test"), script("draw")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return demo.generate(str(tmp_path_factory.mktemp("demo")), num_train=6, num_test=2)


def argv(data, run, *extra):
    return ["--data", data, "--out", str(run), "--model", "unet", "--image-size", "64",
            "--batch-size", "2", "--epochs", "1", "--weights", "none",
            "--no-tensorboard", *extra]


def contents(folder):
    """{relative path: bytes} of every file under `folder`."""
    out = {}
    for dirpath, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(dirpath, name)
            out[os.path.relpath(path, folder)] = open(path, "rb").read()
    return out


def leftovers(folder):
    """What a swap or a staged run may leave beside `folder`."""
    parent, name = os.path.split(os.path.abspath(folder))
    return sorted(e for e in os.listdir(parent)
                  if e.startswith((f".tmp-{name}-", f".{name}.")))


@pytest.fixture(scope="module")
def old_run(data, tmp_path_factory):
    run = tmp_path_factory.mktemp("old") / "run"
    assert cli.run(train.main, argv(data, run, "--seed", "1")) == 0
    return run


# ------------------------------------------------------------------ 1. existing run


def test_training_into_a_run_is_refused_without_resume_or_overwrite(data, old_run,
                                                                     capsys):
    before = contents(old_run)
    assert cli.run(train.main, argv(data, old_run, "--seed", "2")) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--resume" in err and "--overwrite" in err
    assert contents(old_run) == before  # nothing touched


class Crash(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        raise RuntimeError("crash before the first checkpoint")


def test_overwrite_keeps_the_old_run_whole_until_the_new_one_saved(data, old_run,
                                                                   tmp_path, monkeypatch):
    import shutil
    run = tmp_path / "run"
    shutil.copytree(old_run, run)
    before = contents(run)
    from learning.optimizers import MomentumOptimizer
    plain = MomentumOptimizer.__init__

    def crashing(self, *a, **k):
        plain(self, *a, **k)
        self.callbacks.append(Crash())
    monkeypatch.setattr(MomentumOptimizer, "__init__", crashing)
    with pytest.raises(RuntimeError, match="crash before"):
        train.main(argv(data, run, "--seed", "2", "--overwrite"))
    assert contents(run) == before and leftovers(run) == []
    monkeypatch.setattr(MomentumOptimizer, "__init__", plain)

    assert cli.run(train.main, argv(data, run, "--seed", "2", "--overwrite")) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["args"]["seed"] == 2 and config["args"]["overwrite"]
    assert (run / "best.keras").is_file() and (run / "last.keras").is_file()
    assert leftovers(run) == [] and not (run / ".lock").exists()
    with open(run / "history.csv") as f:
        assert len(f.read().splitlines()) == 2  # header and the new run's one epoch


def test_resume_keeps_one_column_order(data, tmp_path):
    run = tmp_path / "run"
    assert cli.run(train.main, argv(data, run)) == 0
    header = (run / "history.csv").read_text().splitlines()[0]
    assert cli.run(train.main, argv(data, run, "--resume")[:-1]
                   + ["--epochs", "2", "--no-tensorboard", "--resume"]) == 0
    rows = (run / "history.csv").read_text().splitlines()
    assert rows[0] == header == "epoch,loss,train_score,val_score,lr,best,seconds"
    assert len(rows) == 3


# ------------------------------------------------------------------ 3. one trainer

HOLD = """
import sys, time
from learning.runs import acquire_lock
acquire_lock(sys.argv[1])
print("locked", flush=True)
time.sleep(120)
"""


def test_a_second_trainer_is_refused_naming_the_first(data, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    env = dict(os.environ, PYTHONPATH=ROOT)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert cli.run(train.main, argv(data, run)) == 2
        err = capsys.readouterr().err
        assert f"in use by another training run (train.py, pid {holder.pid}" in err
        assert not (run / "config.json").exists()
    finally:
        holder.kill()
        holder.wait()
    # the holder died without unlocking: its lock file is left, and ignored
    assert (run / ".lock").exists() and runs.lock_holder(str(run)) is None
    assert cli.run(train.main, argv(data, run)) == 0


# ------------------------------------------------------------------ 2. export swap


@pytest.mark.parametrize("kill_at", [1, 2, 3])
def test_an_export_killed_at_any_rename_loses_nothing(data, old_run, tmp_path,
                                                      monkeypatch, kill_at):
    export = script("export")
    out = tmp_path / "exported"
    assert cli.run(export.main, ["--run", str(old_run), "--out", str(out)]) == 0
    old = contents(out)
    real, calls = os.replace, []

    def dying_replace(src, dst):
        calls.append((src, dst))
        if len(calls) == kill_at:  # the process dies before this rename
            raise SystemExit("killed")
        real(src, dst)
    monkeypatch.setattr(files.os, "replace", dying_replace)
    with pytest.raises(SystemExit):
        export.main(["--run", str(old_run), "--out", str(out), "--overwrite"])
    monkeypatch.setattr(files.os, "replace", real)
    # the rerun is another process: the killed one's staging folder is a dead one's
    monkeypatch.setattr(files, "process_alive", lambda pid: pid != os.getpid())
    if os.path.isdir(out):  # the kill left the whole old export, or nothing there yet
        assert contents(out) == old
    assert cli.run(export.main, ["--run", str(old_run), "--out", str(out),
                                 "--overwrite"]) == 0
    assert (out / "saved_model.pb").is_file() and leftovers(out) == []


def test_a_dead_exports_staging_folder_is_removed(tmp_path):
    out = tmp_path / "exported"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale = tmp_path / f".tmp-exported-{dead}-abc"
    (stale / "variables").mkdir(parents=True)
    mine = files.staging_folder(str(out))  # a live process' staging stays
    assert any("died" in line for line in files.recover_folder(str(out)))
    assert not stale.exists() and os.path.isdir(mine)


# ------------------------------------------------------------------ 4. names


def write_pair(folder, name, ext, cat_colour=200):
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(exist_ok=True)
    image = np.full((64, 64, 3), cat_colour, np.uint8)
    Image.fromarray(image).save(folder / "images" / f"{name}.{ext}")
    trimap = np.full((64, 64), 2, np.uint8)
    trimap[16:48, 16:48] = 1
    Image.fromarray(trimap).save(folder / "masks" / f"{name}.png")


def test_two_images_with_one_name_are_bad_files(tmp_path, capsys):
    folder = tmp_path / "data" / "train"
    write_pair(folder, "Dup_1", "jpg")
    write_pair(folder, "Dup_1", "png", cat_colour=50)  # the same mask name
    write_pair(folder, "Good_2", "jpg")
    from datasets import check
    assert check.main([str(folder)]) == 1
    out = capsys.readouterr().out
    assert out.count("BAD") == 2 and "Dup_1.jpg" in out and "Dup_1.png" in out
    assert "1 usable, 2 bad of 3" in out
    assert cli.run(train.main, argv(str(tmp_path / "data"), tmp_path / "run")) == 2
    assert "2 bad file(s)" in capsys.readouterr().err
    # draw.py: every image gets its own picture
    drawn = tmp_path / "drawn"
    run = tmp_path / "any_run"
    from models.unet import UNet
    runs.save_checkpoint(UNet(base_filters=4, depth=2), str(run / "best.keras"))
    assert cli.run(draw.main, ["--images", str(folder), "--run", str(run),
                               "--out", str(drawn)]) == 0
    assert sorted(os.listdir(drawn)) == ["Dup_1.jpg.png", "Dup_1.png.png", "Good_2.png"]


def test_a_name_without_a_latin_first_letter_warns_once(tmp_path, caplog):
    from datasets.data import load_example
    folder = tmp_path / "set"
    write_pair(folder, "猫_3", "png")
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            example = load_example(str(folder / "images" / "猫_3.png"))
    assert example.label.max() == 2  # a dog, as the upper-case rule gives
    warned = [r for r in caplog.records if "Latin letter" in r.getMessage()]
    assert len(warned) == 1 and "猫_3" in warned[0].getMessage()


# ------------------------------------------------------------------ 5. numbers


@pytest.mark.parametrize("flag, value", [("--epochs", "0"), ("--batch-size", "0"),
                                         ("--image-size", "-64"), ("--lr", "-1"),
                                         ("--lr", "0")])
def test_numbers_that_cannot_work_fail_before_the_model_is_built(flag, value, capsys):
    with pytest.raises(SystemExit) as exit_:
        train.main(["--data", "demo", flag, value])
    assert exit_.value.code == 2
    assert f"argument {flag}" in capsys.readouterr().err


def test_an_out_that_is_a_file_fails_before_the_model_is_built(data, tmp_path, capsys,
                                                                monkeypatch):
    out = tmp_path / "a_file"
    out.write_text("x")
    monkeypatch.setattr(train, "build_model", lambda args: pytest.fail("model built"))
    assert cli.run(train.main, argv(data, out)) == 2
    assert "is a file" in capsys.readouterr().err


# ------------------------------------------------------------------ 6. test.py


def test_an_empty_instance_test_set_is_an_error_and_keeps_metrics(tmp_path, capsys):
    from datasets.instances import ensure_instance_demo
    from models.solo import SOLO
    root = ensure_instance_demo(str(tmp_path / "inst"), num_train=2, num_test=1)
    annotations = os.path.join(root, "test", "annotations.json")
    coco = json.load(open(annotations))
    json.dump({**coco, "images": [], "annotations": []}, open(annotations, "w"))
    run = tmp_path / "run"
    runs.save_checkpoint(SOLO(backbone="small", grids=(4,), fpn_width=16, head_depth=1),
                         str(run / "best.keras"))
    (run / "metrics.json").write_text('{"mask_ap": 0.5}')
    assert cli.run(test_script.main, ["--data", root, "--run", str(run)]) == 2
    assert "lists no image" in capsys.readouterr().err
    assert json.loads((run / "metrics.json").read_text()) == {"mask_ap": 0.5}
    # no test/ at all: the message says what an instance folder holds
    os.rename(os.path.join(root, "test"), os.path.join(root, "elsewhere"))
    os.rename(os.path.join(root, "train"), os.path.join(root, "other"))
    assert cli.run(test_script.main, ["--data", root, "--run", str(run)]) == 2
    assert "test/annotations.json" in capsys.readouterr().err


def test_a_damaged_best_checkpoint_says_so_and_offers_the_last(old_run, tmp_path,
                                                                capsys):
    import shutil
    run = tmp_path / "run"
    shutil.copytree(old_run, run)
    (run / "best.keras").write_bytes(b"not a zip at all")
    assert cli.run(test_script.main, ["--data", "demo", "--run", str(run)]) == 2
    err = capsys.readouterr().err
    assert "best.keras is not a readable checkpoint" in err
    assert "File not found" not in err and "damaged" in err
    assert f"--checkpoint {run / 'last.keras'}" in err


# ------------------------------------------------------------------ compose --split


def test_compose_split_writes_nothing_when_a_source_is_missing(tmp_path, capsys):
    from datasets import instances
    src = tmp_path / "src"
    for i in range(4):
        write_pair(src / "train", f"Cat_{i}", "png")  # no src/test
    out = tmp_path / "out"
    assert instances.main(["compose", "--src", str(src), "--out", str(out), "--num",
                           "2", "--split", "--size", "32"]) == 2
    assert "test" in capsys.readouterr().err
    assert not out.exists()
