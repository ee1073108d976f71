"""Tests of the synthetic demo set: layout, trimaps, determinism, `ensure`, learnability."""

import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from datasets import demo, demo_drawing
from datasets.data import IGNORE_LABEL, read_data
from datasets.files import is_cat

NUM_TRAIN, NUM_TEST = 12, 4
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    return demo.generate(str(tmp_path_factory.mktemp("demo")), NUM_TRAIN, NUM_TEST, seed=0)


def _files(root):
    """Every file under `root`, as relative path -> bytes."""
    out = {}
    for path in sorted(glob.glob(os.path.join(root, "**", "*"), recursive=True)):
        if os.path.isfile(path):
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


def test_layout_and_counts(demo_root):
    for split, count in (("train", NUM_TRAIN), ("test", NUM_TEST)):
        images = sorted(os.listdir(os.path.join(demo_root, split, "images")))
        masks = sorted(os.listdir(os.path.join(demo_root, split, "masks")))
        assert len(images) == count
        assert [m[:-4] for m in masks] == [i[:-4] for i in images]
        assert all(i.endswith(".jpg") for i in images) and all(m.endswith(".png") for m in masks)
        cats = [i for i in images if is_cat(i)]
        assert len(cats) == count // 2  # balanced
        assert all(i.startswith("Cat_") for i in cats)
        assert all(i.startswith("dog_") for i in images if not is_cat(i))
    with open(os.path.join(demo_root, "demo.json")) as f:
        assert json.load(f) == {"version": demo.VERSION, "num_train": NUM_TRAIN,
                                "num_test": NUM_TEST, "seed": 0}


def test_read_data_labels(demo_root):
    images, labels, meta = read_data(os.path.join(demo_root, "train"), 64,
                                     return_meta=True, progress=False)
    assert images.shape == (NUM_TRAIN, 64, 64, 3) and labels.shape == (NUM_TRAIN, 64, 64)
    assert set(np.unique(labels)) == {0, 1, 2, IGNORE_LABEL}
    for name, label in zip(meta["names"], labels):
        pet = 1 if is_cat(name) else 2
        assert not (label == 3 - pet).any(), f"{name} holds pixels of the other class"
        assert (label == pet).mean() > 0.05, f"{name} shows too little pet in the crop"
    _, test_labels = read_data(os.path.join(demo_root, "test"), 64, progress=False)
    assert len(test_labels) == NUM_TEST


def test_masks_are_trimaps_with_a_thin_band(demo_root):
    for path in glob.glob(os.path.join(demo_root, "*", "masks", "*.png")):
        im = Image.open(path)
        assert im.mode == "L"
        trimap = np.asarray(im)
        assert set(np.unique(trimap)) == {1, 2, 3}
        pet, band = (trimap == 1).sum(), (trimap == 3).sum()
        # The band outlines the pet: present, but much smaller than the pet itself.
        assert 0 < band < pet


def test_sizes_vary_and_are_not_square(demo_root):
    sizes = [Image.open(p).size for p in glob.glob(os.path.join(demo_root, "*", "images", "*"))]
    assert any(w != h for w, h in sizes)
    assert len(set(sizes)) > len(sizes) // 2
    lo, hi = demo_drawing.SIZE_RANGE
    assert all(lo <= s <= hi for size in sizes for s in size)
    image = Image.open(glob.glob(os.path.join(demo_root, "train", "images", "*"))[0])
    assert image.format == "JPEG" and image.mode == "RGB"


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a = _files(demo.generate(str(tmp_path / "a"), 4, 2, seed=3))
    b = _files(demo.generate(str(tmp_path / "b"), 4, 2, seed=3))
    c = _files(demo.generate(str(tmp_path / "c"), 4, 2, seed=4))
    assert a == b
    assert a.keys() == c.keys()
    assert all(a[k] != c[k] for k in a if k != "demo.json")


def test_generate_replaces_a_larger_set_and_keeps_foreign_files(tmp_path):
    root = str(tmp_path / "d")
    demo.generate(root, 6, 4)
    demo.generate(root, 2, 2)
    assert len(os.listdir(os.path.join(root, "train", "images"))) == 2
    with open(os.path.join(root, "train", "images", "mine.jpg"), "w") as f:
        f.write("not the generator's")
    with pytest.raises(ValueError, match="did not write"):
        demo.generate(root, 2, 2)
    assert os.path.exists(os.path.join(root, "train", "images", "mine.jpg"))
    with pytest.raises(ValueError, match="Received: 0"):
        demo.generate(str(tmp_path / "e"), 0, 2)


def test_ensure_regenerates_only_when_needed(tmp_path, monkeypatch):
    root = str(tmp_path / "d")
    calls = []
    real_generate = demo.generate

    def counting_generate(*args, **kwargs):
        calls.append(args)
        return real_generate(*args, **kwargs)

    monkeypatch.setattr(demo, "generate", counting_generate)
    assert demo.ensure(root, num_train=2, num_test=2) == root
    assert len(calls) == 1
    demo.ensure(root, num_train=2, num_test=2)  # matches: nothing to do
    assert len(calls) == 1
    demo.ensure(root, num_train=4, num_test=2)  # other arguments
    assert len(calls) == 2 and len(os.listdir(os.path.join(root, "train", "images"))) == 4
    os.remove(os.path.join(root, "demo.json"))  # as after an interrupted generate()
    demo.ensure(root, num_train=4, num_test=2)
    assert len(calls) == 3
    with open(os.path.join(root, "demo.json"), "w") as f:
        json.dump({"version": demo.VERSION - 1, "num_train": 4, "num_test": 2, "seed": 0}, f)
    demo.ensure(root, num_train=4, num_test=2)  # made by an older generator
    assert len(calls) == 4


def test_colours_alone_separate_the_classes(demo_root):
    """Learnability without a net: a colour-histogram classifier fitted on the train
    split labels test pixels well, so pet vs background and cat vs dog are both clear."""

    def bins(images):  # 8 x 8 x 8 RGB bins
        q = images.astype(np.int64) // 32
        return q[..., 0] * 64 + q[..., 1] * 8 + q[..., 2]

    train_x, train_y = read_data(os.path.join(demo_root, "train"), 64, progress=False)
    test_x, test_y = read_data(os.path.join(demo_root, "test"), 64, progress=False)
    counts = np.zeros((512, 3))
    known = train_y != IGNORE_LABEL
    np.add.at(counts, (bins(train_x)[known], train_y[known]), 1)
    pred = counts.argmax(axis=1)[bins(test_x)]
    known = test_y != IGNORE_LABEL
    assert (pred[known] == test_y[known]).mean() > 0.9
    for cls in (1, 2):  # each pet class is found, not swallowed by background
        assert (pred[test_y == cls] == cls).mean() > 0.8
    cat_mean = train_x[train_y == 1].mean(axis=0)
    dog_mean = train_x[train_y == 2].mean(axis=0)
    assert np.abs(cat_mean - dog_mean).max() > 60  # mean RGB of the two coats


def test_cli(tmp_path):
    root = str(tmp_path / "cli")
    out = subprocess.run([sys.executable, "-m", "datasets.demo", "--root", root,
                          "--train", "2", "--test", "2", "--seed", "1"],
                         capture_output=True, text=True, check=True, cwd=REPO).stdout
    assert "2 train" in out and root in out
    assert len(os.listdir(os.path.join(root, "test", "masks"))) == 2
    help_text = subprocess.run([sys.executable, "-m", "datasets.demo", "--help"],
                               capture_output=True, text=True, check=True, cwd=REPO).stdout
    assert "--seed" in help_text and "--train" in help_text
