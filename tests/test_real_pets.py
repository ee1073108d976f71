"""bench/real_pets.py at its smallest: one epoch at 64 px on a few real photos."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))

import real_pets  # noqa: E402


def split_folder(sample: str, root: str, counts=(("train", 6), ("test", 4))) -> None:
    """`root/{train,test}/{images,masks}` linking the first clean pairs of `sample`."""
    stems = sorted(os.path.splitext(n)[0] for n in os.listdir(os.path.join(sample, "images"))
                   if n.endswith(".jpg")
                   and os.path.isfile(os.path.join(sample, "masks", os.path.splitext(n)[0] + ".png")))
    start = 0
    for split, count in counts:
        for sub in ("images", "masks"):
            os.makedirs(os.path.join(root, split, sub))
        for stem in stems[start:start + count]:
            for sub, ext in (("images", ".jpg"), ("masks", ".png")):
                os.symlink(os.path.join(sample, sub, stem + ext),
                           os.path.join(root, split, sub, stem + ext))
        start += count


def test_smallest_configuration_matches_test_py(oxford_sample, tmp_path):
    data, out = str(tmp_path / "pets"), str(tmp_path / "out")
    split_folder(oxford_sample, data)
    argv = ["--data", data, "--out", out, "--models", "unet", "--image-size", "64",
            "--epochs", "1", "--batch-size", "2"]
    done = subprocess.run([sys.executable, "bench/real_pets.py", *argv], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    with open(os.path.join(out, "real_pets.json")) as f:
        rows = json.load(f)
    assert len(rows) == 1 and list(rows[0]) == list(real_pets.COLUMNS)
    row = rows[0]
    assert (row["model"], row["image_size"], row["epochs"], row["resize"]) == \
        ("unet", 64, 1, "longer")
    with open(os.path.join(ROOT, row["run"], "metrics.json")) as f:
        metrics = json.load(f)
    assert row["mean_iou"] == metrics["mean_iou"]
    assert row["boundary_mean_iou"] == metrics["boundary_mean_iou"]
    assert row["foreground_iou"] == metrics["foreground_iou"]
    assert row["pixel_accuracy"] == metrics["pixel_accuracy"]
    assert row["iou_background"] == metrics["per_class_iou"]["background"]
    assert metrics["scored_on"] == "photos" and metrics["num_images"] == 4
    assert row["train_seconds"] > 0
    with open(os.path.join(out, "real_pets.md")) as f:
        table = f.read()
    assert "| unet |" in table and f"{row['mean_iou']:.4f}" in table

    # a second call reuses the finished run and its test: nothing is trained again
    again = subprocess.run([sys.executable, "bench/real_pets.py", *argv], cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "$ python" not in again.stdout
    with open(os.path.join(out, "real_pets.json")) as f:
        assert json.load(f) == rows
