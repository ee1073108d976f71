"""Training augmentation (`--augment {none,flip,scale}`): the same geometry for image
and mask, nearest-neighbour masks, seeded per (seed, epoch), and the same pixels from
the graph decoder and the Pillow one."""

import importlib.util
import json
import os
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from datasets import data as dataset
from datasets.decode import file_table
from datasets.augment import augment_mode, epoch_order, rescale_and_crop
from datasets.stream import make_training_stream

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IGNORE = dataset.IGNORE_LABEL
# One colour per label, far apart, so a pixel's colour says which label it shows.
COLOURS = {0: (30, 30, 220), 1: (220, 30, 30), 2: (30, 220, 30)}
SIZES = [(20, 28), (36, 24), (30, 30), (16, 40), (44, 18)]  # (H, W): crops and pads


def write_set(root, ext=".png"):
    """Five pairs of varied sizes: a background with one pet rectangle (at least 6
    pixels a side), the image painted in its label's colour; no unknown pixels."""
    rng = np.random.default_rng(0)
    os.makedirs(root / "images")
    os.makedirs(root / "masks")
    for k, (h, w) in enumerate(SIZES):
        name = f"Bengal_{k}" if k % 2 else f"beagle_{k}"
        trimap = np.full((h, w), dataset.TRIMAP_BACKGROUND, np.uint8)
        top, left = rng.integers(0, h - 8), rng.integers(0, w - 8)
        trimap[top:top + rng.integers(6, h - top + 1),
               left:left + rng.integers(6, w - left + 1)] = dataset.TRIMAP_PET
        label = dataset.trimap_to_label(trimap, dataset.is_cat(name))
        image = np.zeros((h, w, 3), np.uint8)
        for value, colour in COLOURS.items():
            image[label == value] = colour
        Image.fromarray(image).save(root / "images" / (name + ext), quality=95)
        Image.fromarray(trimap).save(root / "masks" / (name + ".png"))
    return dataset.list_images(str(root))


def stream(source, augment="scale", seed=0, first_epoch=0, num_epochs=1, size=24,
           batch_size=2, skip_batches=0):
    """The stream's examples, concatenated: (images, labels)."""
    batches = make_training_stream(source, size, batch_size, seed=seed,
                                   first_epoch=first_epoch, num_epochs=num_epochs,
                                   skip_batches=skip_batches, augment=augment)
    images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in batches])
    return np.concatenate(images), np.concatenate(labels)


def boundary(labels):
    """True where a pixel's 3x3 neighbourhood holds another label (or the edge)."""
    padded = np.pad(labels, [(0, 0), (1, 1), (1, 1)], constant_values=IGNORE)
    h, w = labels.shape[1:]
    return np.any([padded[:, 1 + dy:1 + dy + h, 1 + dx:1 + dx + w] != labels
                   for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=0)


def assert_colours_match_labels(images, labels):
    """Each counted pixel shows its label's colour; bilinear blending may change
    only pixels on a label boundary, and those are few."""
    expected = np.zeros_like(images)
    for value, colour in COLOURS.items():
        expected[labels == value] = colour
    wrong = (labels != IGNORE) & np.any(images != expected, axis=-1)
    assert not (wrong & ~boundary(labels)).any()
    assert wrong.sum() < 0.2 * (labels != IGNORE).sum()


def test_augment_mode_takes_the_names_and_the_old_bools():
    from learning.evaluators import AccuracyEvaluator
    from learning.optimizers import MomentumOptimizer
    assert [augment_mode(a) for a in ("none", "flip", "scale", True, False)] == \
        ["none", "flip", "scale", "flip", "none"]
    for bad in ("rotate", "Flip", 1, None):
        with pytest.raises(ValueError, match="augment must be one of"):
            augment_mode(bad)
    net = SimpleNamespace(task="semantic")  # all the trainer reads before it trains
    assert MomentumOptimizer(net, [], AccuracyEvaluator()).augment == "flip"
    assert MomentumOptimizer(net, [], AccuracyEvaluator(), augment=False).augment == "none"
    with pytest.raises(ValueError, match="Received: 'rotate'"):
        MomentumOptimizer(net, [], AccuracyEvaluator(), augment="rotate")


@pytest.mark.parametrize("scale, where", [(0.5, (0.0, 0.99)), (0.83, (0.5, 0.2)),
                                          (1.0, (0.3, 0.7)), (1.7, (0.99, 0.0))])
def test_rescale_and_crop_is_resize_then_crop(scale, where):
    # 21x30 -> round(21s) x round(30s), then the window of 16x24 at `where`: the
    # scaled example is cut (excess > 0) or placed in padding (excess < 0),
    # floor(where * (|excess| + 1)) pixels from the top/left.
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (21, 30, 3), dtype=np.uint8)
    label = rng.integers(0, 3, (21, 30), dtype=np.uint8)
    got = [t.numpy() for t in rescale_and_crop(tf.constant(image), tf.constant(label),
                                               tf.constant(scale, tf.float32),
                                               tf.constant(where, tf.float32), (16, 24))]
    new = [max(1, round(21 * scale)), max(1, round(30 * scale))]
    scaled = (tf.image.resize(image, new).numpy(),
              tf.image.resize(label[..., None], new, "nearest").numpy()[..., 0])
    expected = (np.zeros((16, 24, 3)), np.full((16, 24), IGNORE), np.ones((16, 24), bool))
    cut, put = [], []
    for n, out, w in zip(new, (16, 24), where):
        shift = int(np.floor(w * (abs(n - out) + 1)))
        keep = min(n, out)
        cut.append(slice(shift, shift + keep) if n > out else slice(0, keep))
        put.append(slice(0, keep) if n > out else slice(shift, shift + keep))
    expected[0][put[0], put[1]] = scaled[0][cut[0], cut[1]]
    expected[1][put[0], put[1]] = scaled[1][cut[0], cut[1]]
    expected[2][put[0], put[1]] = False
    assert np.abs(got[0] - np.round(expected[0])).max() <= 1  # rounding only
    np.testing.assert_array_equal(got[1], expected[1])
    np.testing.assert_array_equal(got[2], expected[2])


def test_flip_gives_the_batches_of_before(tmp_path):
    # What the stream gave before "scale" existed: read_data's crops, in the order of
    # default_rng([seed, epoch]).permutation, flipped where its next draws are < 0.5.
    paths = write_set(tmp_path)
    images, labels = dataset.read_data(str(tmp_path), 24, progress=False)
    rng = np.random.default_rng([7, 2])
    order = rng.permutation(len(paths))
    flips = (rng.random(len(paths)) < 0.5)[:, None, None]
    expected = (np.where(flips[..., None], images[order, :, ::-1], images[order]),
                np.where(flips, labels[order, :, ::-1], labels[order]))
    for augment in ("flip", True):
        got = stream(paths, augment, seed=7, first_epoch=2, num_epochs=3)
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_array_equal(got[1], expected[1])
    got = stream(paths, "none", seed=7, first_epoch=2, num_epochs=3)
    np.testing.assert_array_equal(got[0], images[order])
    # "scale" keeps the order and flips of "flip" and draws its factors after them.
    flip, scale = epoch_order(5, 7, 2, "flip"), epoch_order(5, 7, 2, "scale")
    np.testing.assert_array_equal(flip.order, scale.order)
    np.testing.assert_array_equal(flip.flips, scale.flips)
    assert (flip.scales == 1).all() and 0.5 <= scale.scales.min() < scale.scales.max() <= 2


@pytest.mark.parametrize("in_memory", [False, True])
def test_scale_moves_image_and_mask_together(tmp_path, in_memory):
    paths = write_set(tmp_path)
    source = paths
    if in_memory:
        images, labels = dataset.read_data(str(tmp_path), 24, progress=False)
        source = dataset.DataSet(images, labels)
    images, labels = stream(source, "scale", num_epochs=4)
    assert images.shape == (20, 24, 24, 3) and labels.shape == (20, 24, 24)
    assert_colours_match_labels(images, labels)
    # Nearest neighbour: the masks hold the files' labels, plus padding.
    assert set(np.unique(labels)) <= {0, 1, 2, IGNORE}
    if not in_memory:  # (no unknown pixels in these files: 255 is padding only)
        assert (images[labels == IGNORE] == 0).all()
        assert (labels == IGNORE).any()  # some were scaled down below 24 pixels
    # It did rescale: the pixels differ from the plain flips.
    assert not np.array_equal(images, stream(source, "flip", num_epochs=4)[0])


def test_scale_is_seeded_per_seed_and_epoch(tmp_path):
    paths = write_set(tmp_path)
    first = stream(paths, seed=3, first_epoch=1, num_epochs=2)
    np.testing.assert_array_equal(first[0], stream(paths, seed=3, first_epoch=1,
                                                   num_epochs=2)[0])
    assert not np.array_equal(first[0], stream(paths, seed=3, first_epoch=2,
                                               num_epochs=3)[0])
    assert not np.array_equal(first[0], stream(paths, seed=4, first_epoch=1,
                                               num_epochs=2)[0])


def test_a_resumed_scale_stream_is_the_tail_of_a_full_one(tmp_path):
    paths = write_set(tmp_path)
    full = stream(paths, seed=5, first_epoch=1, num_epochs=3)  # batches of 2, 2, 1
    resumed = stream(paths, seed=5, first_epoch=1, num_epochs=3, skip_batches=1)
    np.testing.assert_array_equal(resumed[0], full[0][2:])
    np.testing.assert_array_equal(resumed[1], full[1][2:])


def test_graph_and_pillow_decoding_give_the_same_scaled_examples(tmp_path):
    paths = write_set(tmp_path, ext=".jpg")
    assert not file_table(paths)["in_graph"].any()  # unchecked: Pillow
    pillow = stream(paths, num_epochs=2)
    good, _ = dataset.check_files(paths)
    assert good == paths and file_table(paths)["in_graph"].all()  # checked: tf.io
    graph = stream(paths, num_epochs=2)
    np.testing.assert_array_equal(graph[0], pillow[0])
    np.testing.assert_array_equal(graph[1], pillow[1])


def train_script():
    spec = importlib.util.spec_from_file_location("train_script",
                                                  os.path.join(ROOT, "train.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_takes_augment_choices_only(capsys):
    parser = train_script().get_args_parser()
    assert parser.parse_args([]).augment == "flip"
    assert parser.parse_args(["--augment", "scale"]).augment == "scale"
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(["--augment", "rotate"])
    assert exit_.value.code == 2
    assert "invalid choice: 'rotate'" in capsys.readouterr().err


def test_resume_warns_only_when_augment_differs_from_the_run(tmp_path, monkeypatch,
                                                             capsys):
    from learning.optimizers import MomentumOptimizer
    data = tmp_path / "data"
    write_set(data / "train")
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.keras").write_bytes(b"")  # what --resume looks for
    (run / "config.json").write_text(json.dumps({"args": {"augment": "none"}}))
    seen = []

    def train(self, save_dir, resume=False, verbose=True, **kwargs):
        seen.append(self.augment)
        return {"best_score": 0.0}

    monkeypatch.setattr(MomentumOptimizer, "train", train)
    argv = ["--data", str(data), "--out", str(run), "--model", "unet", "--image-size",
            "32", "--weights", "none", "--no-tensorboard", "--resume"]
    main = train_script().main
    assert main(argv + ["--augment", "none"]) == 0
    assert "flags differ" not in capsys.readouterr().out
    assert main(argv + ["--augment", "flip"]) == 0
    assert "'augment': ('none', 'flip')" in capsys.readouterr().out
    assert seen == ["none", "flip"]
