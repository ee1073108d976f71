"""Your own data: a `classes.json` with any number of classes, masks of class ids, and
every part (reading, checking, training, testing, drawing, exporting) following it; a
folder without the file stays the pets."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from common.labels import PETS, Classes
from datasets import check, demo_shapes
from datasets import data as dataset
from datasets.classes import read_classes, write_classes
from datasets.decode import file_table
from datasets.stream import make_dataset
from learning import cli

FIVE = Classes(("background", "square", "disc", "triangle", "star"))


def write_pair(root, name, image, mask, ext=".png"):
    for sub in ("images", "masks"):
        os.makedirs(root / sub, exist_ok=True)
    Image.fromarray(image).save(root / "images" / (name + ext))
    Image.fromarray(mask, "L").save(root / "masks" / (name + ".png"))


# --------------------------------------------------------------------- the class set


def test_classes_json_fields_defaults_and_round_trip():
    five = Classes.from_json({"names": list(FIVE.names)})
    assert five == FIVE and five.num_classes == 5
    assert (five.encoding, five.ignore_label) == ("ids", 255)  # the defaults with a file
    # background uncoloured; then the pets' orange and blue, then the palette
    assert five.colours[:3] == (None, (255, 140, 0), (30, 144, 255))
    assert len(set(five.colours[1:])) == 4
    for classes in (FIVE, PETS, Classes(("a", "b"), ((1, 2, 3), None), 9)):
        assert Classes.from_json(json.loads(json.dumps(classes.to_json()))) == classes
    assert PETS.encoding == "oxford_trimap" and PETS.names == ("background", "cat", "dog")
    assert len(set(Classes.generic(40).colours[1:])) == 39  # many classes still differ


@pytest.mark.parametrize("obj, says", [
    ({"names": ["a", "b"], "ignore_label": 1}, "ignore label"),
    ({"names": ["a", "b"], "encoding": "oxford_trimap"}, "3 classes"),
    ({"names": ["a", "b"], "encoding": "rgb"}, "encoding must be one of"),
    ({"names": ["a", "a"]}, "distinct"),
    ({"names": ["a", "b"], "colours": [None]}, "one colour per class"),
    ({"names": ["a", "b"], "colours": [None, "red"]}, "[R, G, B]"),
    ({"names": ["a"], "colour": []}, "unknown field"),
    (["a", "b"], "only \"names\" is required"),
])
def test_a_class_set_that_cannot_work_is_refused_saying_why(obj, says):
    with pytest.raises(ValueError) as err:
        Classes.from_json(obj)
    assert says in str(err.value)


def test_the_file_is_found_in_the_split_then_its_parent(tmp_path):
    split = tmp_path / "train"
    split.mkdir()
    assert read_classes(str(split)) is PETS  # no file: the pets, as before
    write_classes(str(tmp_path), FIVE)
    assert read_classes(str(split)) == FIVE
    (split / "classes.json").write_text('{"names": ["background", "thing"]}')
    assert read_classes(str(split)).names == ("background", "thing")
    (split / "classes.json").write_text('{"names": ["background", "thing"')
    with pytest.raises(dataset.DataError, match=r"train/classes.json: .*own-data.md"):
        read_classes(str(split))


# --------------------------------------------------------------------- masks of ids


def test_pets_trimaps_read_the_same_with_or_without_a_classes_file(tmp_path):
    trimap = np.array([[1, 2], [3, 1], [2, 2], [1, 3]], np.uint8)
    for name in ("Bengal_1", "beagle_1"):
        write_pair(tmp_path / "plain", name, np.full((4, 2, 3), 200, np.uint8), trimap)
        write_pair(tmp_path / "filed", name, np.full((4, 2, 3), 200, np.uint8), trimap)
    write_classes(str(tmp_path / "filed"), PETS)
    plain = dataset.read_data(str(tmp_path / "plain"), (4, 4), progress=False)
    filed = dataset.read_data(str(tmp_path / "filed"), (4, 4), progress=False)
    np.testing.assert_array_equal(plain[1], filed[1])
    assert set(np.unique(plain[1])) == {0, 1, 2, 255}


@pytest.fixture()
def ids_folder(tmp_path):
    """Three pairs of masks of 5 class ids whose ignore value is 7 (not 255), images
    of several sizes (RGB PNG, greyscale PNG, JPEG) around the 24x24 crop."""
    rng = np.random.default_rng(0)
    for name, (h, w), ext in (("a", (20, 30), ".png"), ("b", (28, 16), ".jpg"),
                              ("c", (24, 24), ".png")):
        mask = rng.integers(0, 5, (h, w)).astype(np.uint8)
        mask[:2] = 7
        image = rng.integers(0, 256, (h, w, 3), np.uint8)
        write_pair(tmp_path, name, image[..., 0] if name == "c" else image, mask, ext)
    write_classes(str(tmp_path), Classes(FIVE.names, ignore_label=7))
    return tmp_path


def test_id_masks_decode_the_same_with_pillow_and_in_the_graph(ids_folder):
    images, labels, meta = dataset.read_data(str(ids_folder), 24, return_meta=True,
                                             progress=False)  # Pillow, file by file
    assert meta["classes"].ignore_label == 7
    assert set(np.unique(labels)) == {0, 1, 2, 3, 4, 255}  # the mask's 7 is ignored
    raw = np.asarray(Image.open(ids_folder / "masks" / "c.png"))
    np.testing.assert_array_equal(labels[2], np.where(raw == 7, 255, raw))
    paths = meta["paths"]
    assert dataset.check_files(paths) == (paths, [])  # what the scripts do first
    assert file_table(paths)["in_graph"].all()  # so tf.io decodes them all
    got = [np.concatenate(p) for p in zip(*[[t.numpy() for t in b] for b in
                                            make_dataset(paths, 24, 2, with_padding=True)])]
    np.testing.assert_array_equal(got[0], images)
    np.testing.assert_array_equal(got[1], labels)
    np.testing.assert_array_equal(got[2], meta["padding"])


def test_ids_outside_the_classes_are_bad_files_named_by_check(ids_folder, capsys):
    mask = np.zeros((8, 8), np.uint8)
    mask[0, :3] = (5, 9, 255)  # 5 and 9 are no class; 255 is no ignore value here
    write_pair(ids_folder, "d", np.zeros((8, 8, 3), np.uint8), mask)
    assert check.main([str(ids_folder)]) == 1
    out = capsys.readouterr().out
    assert "0 background, 1 square, 2 disc, 3 triangle, 4 star" in out
    bad = [line for line in out.splitlines() if line.startswith("BAD")]
    assert len(bad) == 1 and "d.png" in bad[0] and "{5, 9, 255}" in bad[0]
    assert "ids 0-4" in bad[0] and "ignores 7" in bad[0]
    assert "3 usable, 1 bad of 4 images" in out
    with pytest.raises(dataset.DatasetError, match="d.png"):
        dataset.read_data(str(ids_folder), 24, progress=False)
    (ids_folder / "classes.json").write_text('{"names": ["background"], "ignore": 7}')
    assert check.main([str(ids_folder)]) == 1
    assert "classes.json: unknown field(s) ['ignore']" in capsys.readouterr().err


# --------------------------------------------------------------------- the shapes demo


def test_the_shapes_demo_is_a_seeded_folder_of_five_classes(tmp_path):
    root = demo_shapes.generate(str(tmp_path / "a"), num_train=8, num_test=2, seed=3)
    assert read_classes(os.path.join(root, "train")) == demo_shapes.CLASSES == FIVE
    images, labels, meta = dataset.read_data(os.path.join(root, "train"), 64,
                                             return_meta=True, progress=False)
    assert meta["names"] == [f"shape_{i:04d}" for i in range(8)]
    assert set(np.unique(labels)) == {0, 1, 2, 3, 4, 255}  # every class, and outlines
    sizes = [Image.open(p).size for p in meta["paths"]]
    assert all(72 <= s <= 144 for size in sizes for s in size)
    again = demo_shapes.generate(str(tmp_path / "b"), num_train=8, num_test=2, seed=3)
    for sub in ("train/images/shape_0005.jpg", "test/masks/shape_0001.png"):
        a, b = (open(os.path.join(r, sub), "rb").read() for r in (root, again))
        assert a == b, sub  # same seed, same bytes
    assert demo_shapes.ensure(root, num_train=8, num_test=2, seed=3) == root  # kept


# --------------------------------------------------------------------- the scripts


def test_five_classes_train_test_draw_and_export(tmp_path, monkeypatch, capsys):
    import cv2
    import keras
    import tensorflow as tf
    from scripts import script

    data = demo_shapes.generate(str(tmp_path / "shapes"), num_train=6, num_test=2)
    run = str(tmp_path / "run")
    assert cli.run(script("train").main, [
        "--data", data, "--out", run, "--model", "unet", "--image-size", "64",
        "--epochs", "1", "--weights", "none", "--batch-size", "2",
        "--no-tensorboard"]) == 0
    with open(os.path.join(run, "config.json")) as f:
        assert Classes.from_json(json.load(f)["classes"]) == demo_shapes.CLASSES
    net = keras.models.load_model(os.path.join(run, "best.keras"))
    assert net.num_classes == 5 and net.output.shape[-1] == 5

    assert cli.run(script("test").main, ["--data", data, "--run", run]) == 0
    with open(os.path.join(run, "metrics.json")) as f:
        metrics = json.load(f)
    assert set(metrics["per_class_iou"]) == set(FIVE.names)  # (JSON keys are sorted)
    assert np.asarray(metrics["confusion_matrix"]).shape == (5, 5)
    table = [line.split()[1] for line in capsys.readouterr().out.splitlines()
             if line.startswith("IoU ")]
    assert table == list(FIVE.names)  # a row per class, in id order

    legend = []
    real_put_text = cv2.putText
    monkeypatch.setattr(cv2, "putText", lambda img, text, *a, **k: legend.append(text)
                        or real_put_text(img, text, *a, **k))
    drawn = str(tmp_path / "drawn")
    assert cli.run(script("draw").main, ["--images", os.path.join(data, "test"),
                                         "--run", run, "--out", drawn]) == 0
    assert len(os.listdir(drawn)) == 2
    assert legend[:4] == ["square", "disc", "triangle", "star"]  # one legend per image

    exported = tmp_path / "exported"
    assert cli.run(script("export").main, ["--run", run, "--out", str(exported)]) == 0
    assert "channel 0=background, 1=square, 2=disc, 3=triangle, 4=star" in \
        capsys.readouterr().out
    assert Classes.from_json(json.loads((exported / "classes.json").read_text())) == \
        demo_shapes.CLASSES
    x = np.zeros((1, 64, 64, 3), np.uint8)
    assert tf.saved_model.load(str(exported)).serve(x).shape == (1, 64, 64, 5)


def test_a_run_without_recorded_classes_falls_back(tmp_path):
    bare = str(tmp_path / "bare.keras")  # no config.json beside it
    assert cli.run_classes(bare, 3, PETS) is PETS  # a run from before class sets
    assert cli.run_classes(bare, 5, PETS).names == tuple(f"class_{i}" for i in range(5))
    (tmp_path / "config.json").write_text(json.dumps({"classes": FIVE.to_json()}))
    assert cli.run_classes(bare, 5, PETS) == FIVE
    assert cli.run_classes(bare, 3, PETS) is PETS  # another model's run: not its names


def test_test_data_of_other_classes_is_refused():
    from learning.semantic_test import check_test_classes
    with pytest.raises(ValueError, match="holds 3 classes .* predicts 5"):
        check_test_classes(PETS, FIVE, "data/catdog/test")
    assert check_test_classes(FIVE, FIVE, "x") is FIVE


# --------------------------------------------------------------------- SOLO


def test_instance_categories_come_from_the_annotations(tmp_path, monkeypatch):
    import cv2
    from datasets import compose, instance_folder, instances
    from learning import coco
    from learning import instances as instance_task
    from learning.visualize import draw_instances

    categories = [{"id": 3, "name": "cup"}, {"id": 5, "name": "fork"},
                  {"id": 9, "name": "plate"}]
    masks = np.zeros((3, 32, 32), bool)
    masks[0, :8, :8] = masks[1, 10:20, 10:20] = masks[2, 22:, 22:] = True
    item = compose.Composite(np.zeros((32, 32, 3), np.uint8), masks, [2, 0, 1],
                             ["a", "b", "c"], "bg")
    folder = instance_folder.write_instance_folder(str(tmp_path / "own"), [item],
                                                   categories=categories)
    assert instances.read_categories(folder) == [(3, "cup"), (5, "fork"), (9, "plate")]
    assert instance_task.read_classes(folder).names == ("cup", "fork", "plate")
    (example,) = instances.read_instances(folder)
    assert list(example.classes) == [2, 0, 1]  # plate, cup, fork
    # a model that learned the same names in another order reads them by name
    assert list(instances.read_instances(folder, ["plate", "cup", "fork"])[0].classes) \
        == [0, 1, 2]
    with pytest.raises(dataset.DataError, match="not one of the model's classes"):
        instances.read_annotations(folder, ["cup", "fork"])
    # predictions carry the file's own category ids, so mask AP scores them right
    results = coco.results_from_masks(example.image_id, masks, [2, 0, 1], [0.9] * 3,
                                      [3, 5, 9])
    assert [r["category_id"] for r in results] == [9, 3, 5]
    assert coco.mask_ap(instances.annotations_path(folder), results)["mask_ap"] \
        == pytest.approx(1.0)
    assert list(coco.decoded_results(results, (32, 32), [3, 5, 9])[1]) == [2, 0, 1]
    shown = []
    monkeypatch.setattr(cv2, "putText", lambda img, text, *a, **k: shown.append(text))
    draw_instances(example.image, masks, [2, 0, 1], names=("cup", "fork", "plate"))
    assert sorted(shown) == ["cup", "fork", "plate"]
