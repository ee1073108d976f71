"""--resize: a photo larger than the input size is seen whole (longer) or cropped after
scaling (shorter), never silently cut to its middle; the graph and Pillow decoders
agree; predictions map back to each photo's own size; a resumed run stays exact."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from common.labels import IGNORE_LABEL
from datasets import data as dataset
from datasets import geometry
from datasets.data import check_files
from datasets.decode import file_table
from datasets.stream import file_loader
from learning import cli
from scripts import script


def write_photo(folder, name, height=375, width=500, seed=0):
    """A photo-sized pair: a pet ellipse (trimap 1) with an unknown border (3) on
    background (2), and a noisy image."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[:height, :width]
    inside = ((ys - height * 0.55) / (height * 0.3)) ** 2 + \
        ((xs - width * 0.4) / (width * 0.25)) ** 2
    trimap = np.full((height, width), 2, np.uint8)
    trimap[inside <= 1.15] = 3
    trimap[inside <= 1.0] = 1
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    image[trimap == 1] //= 2
    Image.fromarray(image).save(folder / "images" / f"{name}.jpg", quality=95)
    Image.fromarray(trimap).save(folder / "masks" / f"{name}.png")
    return str(folder / "images" / f"{name}.jpg")


def test_longer_keeps_the_whole_pet_and_its_background(tmp_path):
    path = write_photo(tmp_path, "Cat_1")
    full = dataset.load_example(path).label
    fitted = dataset.load_example(path, 128, resize="longer")
    assert fitted.image.shape == (128, 128, 3)
    # 500x375 -> 128x96 (rounded half up), padded below with ignored pixels
    assert not fitted.padding[:96].any() and fitted.padding[96:].all()
    assert (fitted.label[96:] == IGNORE_LABEL).all()
    scale = (128 / 500) ** 2
    for value in (0, 1, IGNORE_LABEL):  # background, cat, unknown border
        seen, whole = (fitted.label[:96] == value).sum(), (full == value).sum()
        assert seen == pytest.approx(whole * scale, rel=0.03), value
    # the article's crop at 128 keeps a window of the middle: no background at all
    cropped = dataset.load_example(path, 128).label
    assert (cropped == 0).sum() < 0.02 * (fitted.label == 0).sum()


def test_shorter_covers_the_square_and_keeps_the_middle(tmp_path):
    path = write_photo(tmp_path, "Cat_1")
    fitted = dataset.load_example(path, 96, resize="shorter")
    assert fitted.image.shape == (96, 96, 3) and not fitted.padding.any()
    # 500x375 -> 128x96, then the middle 96 columns
    assert geometry.scaled_shape(375, 500, 96, "shorter") == (96, 128)


@pytest.mark.parametrize("resize", ["longer", "shorter"])
def test_the_graph_and_pillow_paths_agree(tmp_path, resize):
    paths = [write_photo(tmp_path, f"Cat_{i}", 375 + 37 * i, 500 - 41 * i, seed=i)
             for i in range(3)] + [write_photo(tmp_path, "dog_9", 40, 50, seed=9)]
    good, problems = check_files(paths)  # what the scripts do first
    assert not problems
    assert file_table(good)["in_graph"].all()  # these decode in the graph
    in_graph = file_loader(good, (128, 128), resize=resize)
    for i, path in enumerate(good):  # the Pillow path: load_example, as read_data
        image, label, padding = (t.numpy() for t in in_graph(i, False))
        expected = dataset.load_example(path, 128, resize=resize)
        np.testing.assert_array_equal(label, expected.label)  # masks exactly
        np.testing.assert_array_equal(padding, expected.padding)
        diff = np.abs(image.astype(int) - expected.image.astype(int))
        assert diff.max() <= 1, diff.max()  # area / bilinear: within one level


def test_predictions_map_back_to_each_photo(tmp_path):
    from models.unet import UNet
    from datasets.geometry import fit_whole, restore
    net = UNet(base_filters=4, depth=2, input_size=64)
    image = np.random.default_rng(0).integers(0, 256, (150, 200, 3), np.uint8)
    for resize, square in (("longer", True), ("shorter", False)):
        x, scaled = fit_whole(image, 64, resize, net.output_stride, square)
        assert scaled == geometry.scaled_shape(150, 200, 64, resize)
        probs = net.probabilities(x[None])[0]
        back = restore(probs, scaled, 150, 200)
        assert back.shape == (150, 200, 3)
        np.testing.assert_allclose(back.sum(-1), 1.0, atol=1e-4)


@pytest.fixture(scope="module")
def photo_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    for split, count in (("train", 6), ("test", 2)):
        for i in range(count):
            name = f"Cat_{i}" if i % 2 else f"dog_{i}"
            write_photo(root / split, name, 300 + 20 * i, 400 - 10 * i, seed=i)
    return str(root)


def test_a_resized_run_resumes_exactly_and_tests_at_photo_size(photo_set, tmp_path):
    train, test_script = script("train"), script("test")
    argv = ["--data", photo_set, "--model", "unet", "--image-size", "64", "--resize",
            "longer", "--batch-size", "2", "--weights", "none", "--no-tensorboard",
            "--augment", "flip"]
    straight, cut = str(tmp_path / "straight"), str(tmp_path / "cut")
    assert cli.run(train.main, argv + ["--out", straight, "--epochs", "2"]) == 0
    assert cli.run(train.main, argv + ["--out", cut, "--epochs", "1"]) == 0
    assert cli.run(train.main, argv + ["--out", cut, "--epochs", "2", "--resume"]) == 0
    rows = [open(os.path.join(r, "history.csv")).read().splitlines() for r in
            (straight, cut)]
    strip = [[line.rsplit(",", 1)[0] for line in r] for r in rows]  # seconds differ
    assert strip[0] == strip[1]
    assert json.load(open(os.path.join(cut, "config.json")))["args"]["resize"] == "longer"

    assert cli.run(test_script.main, ["--data", photo_set, "--run", straight]) == 0
    metrics = json.load(open(os.path.join(straight, "metrics.json")))
    assert metrics["resize"] == "longer" and metrics["scored_on"] == "photos"
    for key in ("boundary_mean_iou", "foreground_iou", "article_pixel_accuracy"):
        assert 0.0 <= metrics[key] <= 1.0, key
    # every pixel of each whole photo is scored: the counts of the unscaled masks
    total = sum((dataset.load_example(p).label != IGNORE_LABEL).sum() for p in
                dataset.list_images(os.path.join(photo_set, "test")))
    assert sum(map(sum, metrics["confusion_matrix"])) == total
    drawn = sorted(os.listdir(os.path.join(straight, "draws")))
    assert len(drawn) == 2
    panel = Image.open(os.path.join(straight, "draws", drawn[0]))
    assert panel.size[1] in (300, 320)  # at the photo's own height: no zoom needed
