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
