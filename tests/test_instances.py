"""Instance data for SOLO: COCO masks and mask AP, composing images of several pets
from trimaps, the demo instance set, and the stream a model trains on."""

import json
import logging
import os

import numpy as np
import pytest
from PIL import Image

from common import coco as coco_masks
from datasets import compose, geometry, instance_folder, instance_stream, instances
from datasets.augment import epoch_order
from datasets.files import DataError
from learning import coco


def _disc(h, w, cy, cx, r):
    ys, xs = np.mgrid[0:h, 0:w]
    return (ys - cy) ** 2 + (xs - cx) ** 2 <= r * r


def _composite(masks, classes, seed=0):
    """A hand-made `Composite`: random pixels and the given (K, H, W) masks."""
    h, w = masks.shape[1:]
    image = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return compose.Composite(image, masks, list(classes), [f"src{k}" for k in classes], "bg")


@pytest.fixture()
def tiny_folder(tmp_path):
    """An instance folder of 2 images, 40x48: (a) a cat disc and a dog disc, (b) a dog."""
    a = np.stack([_disc(40, 48, 12, 12, 8), _disc(40, 48, 25, 30, 9)])
    b = np.stack([_disc(40, 48, 20, 24, 12)])
    items = [_composite(a, [0, 1]), _composite(b, [1], seed=1)]
    return instance_folder.write_instance_folder(str(tmp_path / "tiny"), items, {"note": "test"})


@pytest.fixture()
def trimap_folder(tmp_path):
    """6 one-pet trimap pairs (3 cats, 3 dogs, 60x80 with an unknown border band)
    and one empty image file, which composing must skip with a logged note."""
    root = tmp_path / "pets"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        name = f"Cat_{i}" if i % 2 == 0 else f"dog_{i}"
        image = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
        trimap = np.full((60, 80), 2, np.uint8)
        trimap[_disc(60, 80, 30, 40, 20 + i)] = 3
        trimap[_disc(60, 80, 30, 40, 18 + i)] = 1
        Image.fromarray(image).save(root / "images" / f"{name}.png")
        Image.fromarray(trimap).save(root / "masks" / f"{name}.png")
    (root / "images" / "Broken_1.jpg").write_bytes(b"")
    return str(root)


def _folder_bytes(folder):
    out = {}
    for dirpath, _, files in os.walk(folder):
        for f in files:
            path = os.path.join(dirpath, f)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, folder)] = fh.read()
    return out


def _check_instance_folder(folder, num, size):
    """The folder's format, and each image's 2-4 disjoint visible masks."""
    with open(os.path.join(folder, "annotations.json")) as f:
        doc = json.load(f)
    assert doc["categories"] == [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    assert all(a["iscrowd"] == 0 and isinstance(a["segmentation"]["counts"], str)
               for a in doc["annotations"])
    examples = instances.read_instances(folder)
    assert len(examples) == num == len(os.listdir(os.path.join(folder, "images")))
    for ex in examples:
        assert ex.image.shape == (size, size, 3) and ex.image.dtype == np.uint8
        assert 2 <= len(ex.masks) <= 4 and len(ex.classes) == len(ex.masks)
        assert ex.masks.sum(axis=0).max() == 1  # disjoint: no pixel in two masks
        assert (ex.masks.reshape(len(ex.masks), -1).sum(axis=1)
                >= compose.MIN_AREA_FRACTION * size * size).all()
        assert set(ex.classes.tolist()) <= {0, 1}
    return examples


# --------------------------------------------------------------------------- COCO


def test_rle_round_trip():
    rng = np.random.default_rng(0)
    for mask in (rng.random((17, 23)) < 0.4, np.zeros((5, 7), bool), np.ones((4, 3), bool)):
        rle = coco_masks.encode_mask(mask)
        assert isinstance(rle["counts"], str) and rle["size"] == list(mask.shape)
        np.testing.assert_array_equal(coco_masks.decode_mask(json.loads(json.dumps(rle))), mask)
    # Area and box: a 3x2 block at rows 1-2, columns 2-4 -> area 6, box [x 2, y 1, w 3, h 2].
    block = np.zeros((5, 7), bool)
    block[1:3, 2:5] = True
    assert coco_masks.mask_area_and_box(coco_masks.encode_mask(block)) == (6, [2.0, 1.0, 3.0, 2.0])


def test_polygons_and_uncompressed_rle_decode():
    # The square polygon (1,1)-(5,1)-(5,5)-(1,5) covers 4x4 pixels in COCO's rasteriser.
    square = coco_masks.decode_segmentation([[1, 1, 5, 1, 5, 5, 1, 5]], 8, 8)
    assert square.sum() == 16 and square[1:5, 1:5].all()
    # Uncompressed RLE runs are column-major: 3 off, 2 on, 4 off in a 3x3 image.
    runs = coco_masks.decode_segmentation({"size": [3, 3], "counts": [3, 2, 4]}, 3, 3)
    np.testing.assert_array_equal(runs, [[0, 1, 0], [0, 1, 0], [0, 0, 0]])


def test_annotations_round_trip(tiny_folder):
    examples = instances.read_instances(tiny_folder)
    assert [e.image_id for e in examples] == [1, 2]
    assert [e.name for e in examples] == ["000000", "000001"]
    np.testing.assert_array_equal(examples[0].masks[1], _disc(40, 48, 25, 30, 9))
    assert examples[0].classes.tolist() == [0, 1] and examples[1].classes.tolist() == [1]
    with open(instances.annotations_path(tiny_folder)) as f:
        doc = json.load(f)
    first = doc["annotations"][0]
    assert first["category_id"] == 1 and first["area"] == _disc(40, 48, 12, 12, 8).sum()
    assert first["bbox"] == [4.0, 4.0, 17.0, 17.0]  # a radius-8 disc around (12, 12)
    assert doc["images"][0] == {"id": 1, "file_name": "000000.jpg", "height": 40,
                                "width": 48, "background": "bg"}


def test_mask_ap_of_ground_truth_is_one(tiny_folder, capsys):
    path = instances.annotations_path(tiny_folder)
    truth = [r for e in instances.read_instances(tiny_folder)
             for r in coco.results_from_masks(e.image_id, e.masks, e.classes,
                                              np.ones(len(e.classes)))]
    assert coco.mask_ap(path, truth) == {"mask_ap": 1.0, "mask_ap50": 1.0, "mask_ap75": 1.0}
    assert capsys.readouterr().out == ""  # COCOeval's prints are captured
    coco.mask_ap(path, truth, verbose=True)
    assert "Average Precision" in capsys.readouterr().out
    # The dog of image 1 predicted as a cat: the dog category loses one of its two.
    wrong = [dict(r, category_id=1) if (r["image_id"], r["category_id"]) == (1, 2) else r
             for r in truth]
    assert coco.mask_ap(path, wrong)["mask_ap"] < 1.0
    assert coco.mask_ap(path, [])["mask_ap"] == 0.0
    with pytest.raises(ValueError, match="image ids"):
        coco.mask_ap(path, [dict(truth[0], image_id=99)])


# --------------------------------------------------------------------------- compose


def test_compose_synthetic_trimaps(trimap_folder, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        out = instances.compose_dataset(trimap_folder, str(tmp_path / "a"), 5, seed=3,
                                        size=64, progress=False)
    assert "Broken_1.jpg" in caplog.text  # the odd file is named and left out
    examples = _check_instance_folder(out, 5, 64)
    with open(instances.annotations_path(out)) as f:
        doc = json.load(f)
    # Each pet keeps its source's class (cats have capitalised names).
    for ann in doc["annotations"]:
        assert ann["category_id"] == (1 if ann["source"].startswith("Cat") else 2)
    same = instances.compose_dataset(trimap_folder, str(tmp_path / "b"), 5, seed=3, size=64,
                                     progress=False)
    assert _folder_bytes(out) == _folder_bytes(same)
    other = instances.compose_dataset(trimap_folder, str(tmp_path / "c"), 5, seed=4, size=64,
                                      progress=False)
    assert _folder_bytes(other)["annotations.json"] != _folder_bytes(out)["annotations.json"]
    assert len(examples) == 5


def test_compose_refuses_to_overwrite_and_too_few_sources(trimap_folder, tmp_path):
    out = str(tmp_path / "out")
    instances.compose_dataset(trimap_folder, out, 1, size=32, progress=False)
    with pytest.raises(ValueError, match="--overwrite"):
        instances.compose_dataset(trimap_folder, out, 1, size=32, progress=False)
    instances.compose_dataset(trimap_folder, out, 2, size=32, overwrite=True, progress=False)
    assert len(instances.read_instances(out)) == 2
    few = tmp_path / "few"
    (few / "images").mkdir(parents=True)
    with pytest.raises(DataError, match="no .jpg"):
        instances.compose_dataset(str(few), str(tmp_path / "x"), 1, progress=False)


def test_compose_cli_split(trimap_folder, tmp_path):
    src = tmp_path / "root"
    src.mkdir()
    for split in ("train", "test"):
        os.symlink(trimap_folder, src / split)
    out = tmp_path / "split_out"
    argv = ["compose", "--src", str(src), "--out", str(out), "--num", "3", "--num-test",
            "2", "--size", "48", "--split"]
    assert instances.main(argv) == 0
    _check_instance_folder(str(out / "train"), 3, 48)
    _check_instance_folder(str(out / "test"), 2, 48)
    assert instances.main(argv) == 2  # exists: refused without --overwrite


def test_compose_real_sample(oxford_sample, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        out = instances.compose_dataset(oxford_sample, str(tmp_path / "a"), 3, seed=0,
                                        size=96, progress=False)
    # The release's Abyssinian_34 trimap marks no pet: logged and left out.
    assert "Abyssinian_34" in caplog.text
    _check_instance_folder(out, 3, 96)
    again = instances.compose_dataset(oxford_sample, str(tmp_path / "b"), 3, seed=0,
                                      size=96, progress=False)
    assert _folder_bytes(out) == _folder_bytes(again)


# --------------------------------------------------------------------------- demo


def test_instance_demo(tmp_path):
    root = instances.ensure_instance_demo(str(tmp_path / "demo"), num_train=6, num_test=3)
    train = _check_instance_folder(os.path.join(root, "train"), 6, 64)
    _check_instance_folder(os.path.join(root, "test"), 3, 64)
    assert {c for e in train for c in e.classes.tolist()} == {0, 1}
    stamp = os.path.getmtime(os.path.join(root, "train", "annotations.json"))
    instances.ensure_instance_demo(root, num_train=6, num_test=3)  # already there: kept
    assert os.path.getmtime(os.path.join(root, "train", "annotations.json")) == stamp


# --------------------------------------------------------------------------- stream


def test_fit_longer_and_restore():
    masks = np.stack([_disc(30, 60, 15, 20, 10), _disc(30, 60, 10, 45, 6)])
    image = np.full((30, 60, 3), 200, np.uint8)
    fitted, fitted_masks, _ = geometry.fit(image, masks, 40, "longer", label_fill=0)
    # 60 wide -> 40: scale 2/3, so 20 rows of image and 20 of zero padding below.
    assert fitted.shape == (40, 40, 3) and (fitted[:20] == 200).all() and not fitted[20:].any()
    assert fitted_masks.shape == (2, 40, 40) and not fitted_masks[:, 20:].any()
    doubled, scaled = geometry.fit_whole(image, 120, "longer", 4, square=True)
    assert doubled.shape == (120, 120, 3) and scaled == (60, 120)
    doubled_masks = geometry.fit(image, masks, 120, "longer", label_fill=0)[1]
    np.testing.assert_array_equal(geometry.restore(doubled_masks, scaled, 30, 60), masks)


def stream(folder, size, batch, seed=0, augment="none", **kwargs):
    """The one instance stream, for one epoch of `folder`."""
    return instance_stream.training_stream(instances.read_annotations(folder), size,
                                           batch, seed=seed, first_epoch=0,
                                           num_epochs=1, augment=augment, **kwargs)


def test_stream_contract(tiny_folder):
    images, target = next(iter(stream(tiny_folder, 48, 2, max_instances=3)))
    assert images.shape == (2, 48, 48, 3) and images.dtype.name == "uint8"
    assert target["masks"].shape == (2, 3, 48, 48) and target["masks"].dtype.name == "uint8"
    assert target["classes"].dtype.name == "int32"
    # the epoch's order is epoch_order's; the tiny folder's two 40x48 images hold
    # (a) a cat and a dog, (b) a dog
    order = epoch_order(len(instances.read_annotations(tiny_folder)), 0, 0, "none").order
    by_image = {0: ([0, 1, -1], 0), 1: ([1, -1, -1], 1)}
    masks, classes = target["masks"].numpy(), target["classes"].numpy()
    assert classes.tolist() == [by_image[int(i)][0] for i in order[:2]]
    for m, i in zip(masks, order[:2]):
        used = 2 if i == 0 else 1
        assert not m[used:].any()  # padding slots are empty
        if i == 0:  # 40x48 -> 48 wide is a 1x scale: the masks are exact, padded below
            np.testing.assert_array_equal(m[1, :40], _disc(40, 48, 25, 30, 9))
            assert not m[:, 40:].any()
    assert set(np.unique(masks).tolist()) == {0, 1}
    with pytest.raises(DataError, match="max_instances=1"):
        stream(tiny_folder, 48, 2, max_instances=1)


def test_stream_shuffle_and_flips_are_seeded(tiny_folder):
    def batches(seed):
        images, target = next(iter(stream(tiny_folder, 32, 2, seed=seed, augment="flip")))
        return images.numpy(), target["masks"].numpy(), target["classes"].numpy()

    first, again = batches(5), batches(5)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert first[1].shape == (2, 8, 32, 32)
    # A flip moves image and masks together: each mask covers the same pixels it did.
    p_images, p_target = next(iter(stream(tiny_folder, 32, 2)))
    by_count = {int((c >= 0).sum()): m for m, c in zip(p_target["masks"].numpy(),
                                                       p_target["classes"].numpy())}
    for masks, classes in zip(first[1], first[2]):
        expected = by_count[int((classes >= 0).sum())]
        assert (np.array_equal(masks, expected)
                or np.array_equal(masks, expected[:, :, ::-1]))
