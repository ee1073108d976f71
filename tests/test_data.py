"""datasets.data and datasets.stream: loading, label encoding, batching, streaming."""

import os

import numpy as np
import pytest
from PIL import Image

from datasets import data as dataset
from datasets.stream import make_dataset, split_paths


def write_pair(root, name, image, trimap, ext=".jpg", fmt=None):
    os.makedirs(root / "images", exist_ok=True)
    os.makedirs(root / "masks", exist_ok=True)
    Image.fromarray(image).save(root / "images" / (name + ext), format=fmt)
    Image.fromarray(trimap).save(root / "masks" / (name + ".png"))


def test_label_encoding_cat_dog_unknown_and_padding(tmp_path):
    # A 4x2 trimap: pet (1), background (2), unknown (3). Cropped/padded to 4x4, the
    # two new columns are padding -> IGNORE_LABEL.
    trimap = np.array([[1, 2], [3, 1], [2, 2], [1, 3]], np.uint8)
    image = np.full((4, 2, 3), 200, np.uint8)
    write_pair(tmp_path, "Bengal_1", image, trimap, ".png")
    write_pair(tmp_path, "beagle_1", image, trimap, ".png")
    images, labels, meta = dataset.read_data(str(tmp_path), (4, 4), return_meta=True,
                                             progress=False)
    assert meta["names"] == ["Bengal_1", "beagle_1"]
    assert images.dtype == np.uint8 and images.shape == (2, 4, 4, 3)
    i = dataset.IGNORE_LABEL
    expected_cat = np.array([[i, 1, 0, i], [i, i, 1, i], [i, 0, 0, i], [i, 1, i, i]])
    np.testing.assert_array_equal(labels[0], expected_cat)
    np.testing.assert_array_equal(labels[1], np.where(expected_cat == 1, 2, expected_cat))
    # padding columns are black in the image and flagged in meta
    assert (images[0][:, 0] == 0).all() and (images[0][:, 1] == 200).all()
    np.testing.assert_array_equal(meta["padding"][0][0], [True, False, False, True])


def test_crop_is_centred():
    arr = np.arange(7 * 5).reshape(7, 5)
    out, pad = dataset.crop_or_pad(arr, (3, 3), 0)
    # rows: excess 4 -> start 2; cols: excess 2 -> start 1
    np.testing.assert_array_equal(out, arr[2:5, 1:4])
    assert not pad.any()
    # one pixel too many on a side: crop it (it used to be mistaken for no crop)
    out, pad = dataset.crop_or_pad(np.zeros((97, 95)), (96, 96), 0)
    assert out.shape == (96, 96) and pad[:, -1].all() and not pad[:, :-1].any()


def test_no_label_returns_none(tmp_path):
    write_pair(tmp_path, "a", np.zeros((8, 8, 3), np.uint8), np.ones((8, 8), np.uint8))
    images, labels = dataset.read_data(str(tmp_path), 8, no_label=True, progress=False)
    assert labels is None and images.shape == (1, 8, 8, 3)


def test_read_data_real_sample(oxford_sample):
    images, labels, meta = dataset.read_data(oxford_sample, 128, return_meta=True,
                                             progress=False)
    assert images.shape == (52, 128, 128, 3) and labels.shape == (52, 128, 128)
    with_pet = 0
    for name, label in zip(meta["names"], labels):
        values = set(np.unique(label)) - {0, dataset.IGNORE_LABEL}
        # (Abyssinian_34's real trimap is all background, so "<=" not "==")
        assert values <= ({1} if dataset.is_cat(name) else {2}), name
        with_pet += bool(values)
    assert with_pet >= 50
    # The GIF and the RGBA PNG named .jpg decode to ordinary RGB photos.
    for odd in ("Abyssinian_34", "Abyssinian_5"):
        img = images[meta["names"].index(odd)]
        assert img.std() > 10 and img.mean() > 20


def test_bad_files_are_listed_by_name(tmp_path):
    write_pair(tmp_path, "good", np.zeros((8, 8, 3), np.uint8), np.ones((8, 8), np.uint8))
    (tmp_path / "images" / "text.jpg").write_text("not an image")
    write_pair(tmp_path, "badmask", np.zeros((8, 8, 3), np.uint8),
               np.full((8, 8), 7, np.uint8))
    with pytest.raises(dataset.DatasetError) as err:
        dataset.read_data(str(tmp_path), 8, progress=False)
    message = str(err.value)
    assert "text.jpg" in message and "badmask.png" in message and "7" in message
    assert len(err.value.problems) == 2
    images, _ = dataset.read_data(str(tmp_path), 8, skip_bad=True, progress=False)
    assert len(images) == 1


def test_dataset_next_batch_wraps_epochs():
    images = np.arange(5)[:, None, None, None] * np.ones((5, 1, 1, 3), np.uint8)
    ds = dataset.DataSet(images, images[..., 0], seed=0)
    seen = []
    for _ in range(3):
        x, y = ds.next_batch(2, shuffle=False)
        seen += list(x[:, 0, 0, 0])
        np.testing.assert_array_equal(x[..., 0], y)
    # 6 examples from 5: the third batch is the last of epoch 1 + the first of epoch 2
    assert seen == [0, 1, 2, 3, 4, 0] and ds.epochs_completed == 1
    ds2 = dataset.DataSet(images, seed=1)
    first_epoch = np.concatenate([ds2.next_batch(5)[0][:, 0, 0, 0]])
    assert sorted(first_epoch) == [0, 1, 2, 3, 4] and ds2.labels is None
    assert ds2.sample_batch(3)[0].shape == (3, 1, 1, 3)


def test_stream_matches_read_data(oxford_sample):
    images, labels, meta = dataset.read_data(oxford_sample, 96, return_meta=True,
                                             progress=False)
    paths = dataset.list_images(oxford_sample)
    got = [b for b in make_dataset(paths, 96, 16, with_padding=True)]
    np.testing.assert_array_equal(np.concatenate([g[0] for g in got]), images)
    np.testing.assert_array_equal(np.concatenate([g[1] for g in got]), labels)
    np.testing.assert_array_equal(np.concatenate([g[2] for g in got]), meta["padding"])


def test_stream_shuffle_and_flip_are_seeded(oxford_sample):
    paths = dataset.list_images(oxford_sample)[:6]

    def firsts(seed):
        ds = make_dataset(paths, 32, 6, shuffle=True, augment=True, seed=seed)
        return next(iter(ds))[0].numpy()

    np.testing.assert_array_equal(firsts(3), firsts(3))
    assert not np.array_equal(firsts(3), firsts(4))


def test_split_paths_is_seeded_and_disjoint():
    paths = [f"p{i}" for i in range(50)]
    tr, va = split_paths(paths, 0.1, seed=7)
    assert len(va) == 5 and not set(tr) & set(va) and len(tr) + len(va) == 50
    assert split_paths(paths, 0.1, seed=7) == (tr, va)
    assert split_paths(paths, 0.1, seed=8)[1] != va


@pytest.mark.parametrize("size", [256, 512])  # crops and pads
def test_stream_decodes_real_files_in_the_graph_to_the_same_pixels(oxford_sample, size):
    from datasets.decode import file_table
    from datasets.stream import make_dataset
    images, labels, meta = dataset.read_data(oxford_sample, size, return_meta=True,
                                             progress=False)  # Pillow, file by file
    paths = meta["paths"]
    good, _ = dataset.check_files(paths)  # what train.py and test.py do first
    assert good == paths
    assert file_table(paths)["in_graph"].sum() == len(paths) - 2  # not GIF, RGBA PNG
    stream = make_dataset(paths, size, 8, with_padding=True)
    got = [np.concatenate(parts) for parts in zip(*[[t.numpy() for t in b] for b in stream])]
    np.testing.assert_array_equal(got[0], images)
    np.testing.assert_array_equal(got[1], labels)
    np.testing.assert_array_equal(got[2], meta["padding"])
    flipped = next(iter(make_dataset(paths[:4], size, 4, augment=True, seed=3)))
    rng = np.random.default_rng(3)
    flips = rng.random(4) < 0.5
    expected = np.where(flips[:, None, None, None], images[:4, :, ::-1], images[:4])
    np.testing.assert_array_equal(flipped[0].numpy(), expected)
