"""The catalogue of bad and odd data files, and what each one gets.

Every fault is written into a dataset folder by the test itself. A file either loads
correctly (checked pixel by pixel) or is reported with a message that names it and
says what is wrong: by `check_files`, by `read_data`, by the `tf.data` stream, by
`python -m datasets.check`, and by train.py, which stops before training with the
full list unless `--skip-bad` is given.
"""

import json
import os
import struct
import subprocess
import sys
import zlib
from typing import Callable, NamedTuple

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageFile

from datasets import check, files
from datasets import data as dataset
from datasets.stream import make_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --------------------------------------------------------------------------- writers


def blocks(h=48, w=64, seed=0) -> np.ndarray:
    """An RGB image of four flat colour quadrants (exact through GIF and palettes)."""
    colours = np.random.default_rng(seed).integers(0, 256, (4, 3), dtype=np.uint8)
    img = np.empty((h, w, 3), np.uint8)
    img[: h // 2, : w // 2], img[: h // 2, w // 2:] = colours[0], colours[1]
    img[h // 2:, : w // 2], img[h // 2:, w // 2:] = colours[2], colours[3]
    return img


def trimap(h=48, w=64) -> np.ndarray:
    """Background (2) with a pet (1) in the middle and an unknown (3) ring around it."""
    t = np.full((h, w), 2, np.uint8)
    t[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 3
    t[h // 4 + 2: 3 * h // 4 - 2, w // 4 + 2: 3 * w // 4 - 2] = 1
    return t


def folders(root):
    os.makedirs(root / "images", exist_ok=True)
    os.makedirs(root / "masks", exist_ok=True)


def save_mask(root, name, mask=None):
    folders(root)
    Image.fromarray(trimap() if mask is None else mask).save(root / "masks" / f"{name}.png")


def save_image(root, name, array, ext=".jpg", fmt=None, mode=None, **kw):
    folders(root)
    im = Image.fromarray(array)
    if mode == "P":
        im = im.quantize(colors=16)  # an exact palette for a few flat colours
    elif mode:
        im = im.convert(mode)
    path = root / "images" / f"{name}{ext}"
    im.save(path, format=fmt, **kw)
    return str(path)


def write_good(root, name="good_1"):
    save_mask(root, name)
    return save_image(root, name, blocks(), ".png")


def write_huge_png(path, width, height):
    """A valid greyscale PNG of width x height, written row by row (a few MB on disk,
    width * height bytes once decoded) without ever holding the pixels in memory."""
    def chunk(tag, body):
        return (struct.pack(">I", len(body)) + tag + body
                + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF))
    comp = zlib.compressobj(6)
    row = bytes(width + 1)  # filter byte 0, then black pixels
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat)
                + chunk(b"IEND", b""))


# --------------------------------------------------------------------------- bad files


class Bad(NamedTuple):
    write: Callable  # root -> None; writes the faulty pair
    file: str        # the file the message must name
    says: str        # what the message must say (lower case)


def _zero_byte(root):
    save_mask(root, "zero_1")
    folders(root)
    (root / "images" / "zero_1.jpg").write_bytes(b"")


def _truncated(root):
    save_mask(root, "cut_1")
    noise = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    path = save_image(root, "cut_1", noise, quality=95)
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])


def _text(root):
    save_mask(root, "text_1")
    folders(root)
    (root / "images" / "text_1.jpg").write_text("this is not a photo\n")


def _no_mask(root):
    save_image(root, "lonely_1", blocks())


def _mask_values(root):
    mask = trimap()
    mask[0, 0], mask[-1, -1] = 0, 4
    save_mask(root, "values_1", mask)
    save_image(root, "values_1", blocks(), ".png")


def _mask_size(root):
    save_mask(root, "size_1", trimap(32, 32))
    save_image(root, "size_1", blocks(48, 64), ".png")


def _mask_zero_byte(root):
    save_image(root, "emptymask_1", blocks(), ".png")
    (root / "masks" / "emptymask_1.png").write_bytes(b"")


def _mask_colour(root):
    rgb = np.stack([trimap(), trimap(), np.full((48, 64), 9, np.uint8)], -1)
    save_image(root, "colourmask_1", blocks(), ".png")
    Image.fromarray(rgb).save(root / "masks" / "colourmask_1.png")


def _huge(root):
    # 8000 x 7000 = 56 megapixels: over the 50-megapixel limit, refused from the header.
    folders(root)
    write_huge_png(root / "images" / "huge_1.png", 8000, 7000)
    save_mask(root, "huge_1")


BAD = {
    "zero-byte image": Bad(_zero_byte, "zero_1.jpg", "empty (0 bytes)"),
    "truncated jpeg": Bad(_truncated, "cut_1.jpg", "truncated"),
    "text named .jpg": Bad(_text, "text_1.jpg", "not an image"),
    "image with no mask": Bad(_no_mask, os.path.join("masks", "lonely_1.png"),
                              "mask is missing"),
    "mask values outside 1-3": Bad(_mask_values, "values_1.png", "values {0, 4}"),
    "mask size differs": Bad(_mask_size, "size_1.png", "mask is 32x32 but its image is 64x48"),
    "zero-byte mask": Bad(_mask_zero_byte, "emptymask_1.png", "empty (0 bytes)"),
    "colour mask": Bad(_mask_colour, "colourmask_1.png", "colour image"),
    "very large image": Bad(_huge, "huge_1.png", "over the 50-megapixel limit"),
}


@pytest.mark.parametrize("fault", list(BAD.values()), ids=list(BAD))
def test_bad_file_is_reported_by_name_everywhere(tmp_path, fault):
    fault.write(tmp_path)
    good = write_good(tmp_path)
    paths = dataset.list_images(str(tmp_path))

    ok, problems = dataset.check_files(paths)
    assert ok == [good] and len(problems) == 1
    message = str(problems[0])
    assert fault.file in message and fault.says in message.lower(), message

    with pytest.raises(dataset.DatasetError) as err:
        dataset.read_data(str(tmp_path), 64, progress=False)
    assert fault.file in str(err.value) and "--skip-bad" in str(err.value)
    images, _ = dataset.read_data(str(tmp_path), 64, skip_bad=True, progress=False)
    assert len(images) == 1

    # The stream (used by training) fails with the same message, not a bare TF error.
    with pytest.raises(tf.errors.OpError) as err:
        for _ in make_dataset(paths, 64, 2):
            pass
    assert fault.file in err.value.message and fault.says in err.value.message.lower()


# --------------------------------------------------------------------------- odd files


def _expect(root, name, ext, array, **kw):
    save_mask(root, name, trimap(*array.shape[:2]))
    return save_image(root, name, array, ext, **kw)


def _gif_as_jpg(root):
    return _expect(root, "gif_1", ".jpg", blocks(), fmt="GIF"), blocks(), 0


def _png_as_jpg(root):
    return _expect(root, "png_1", ".jpg", blocks(), fmt="PNG"), blocks(), 0


def _cmyk(root):
    path = _expect(root, "cmyk_1", ".jpg", blocks(), mode="CMYK", quality=95)
    return path, blocks(), 6


def _greyscale(root):
    grey = blocks()[..., 0]
    return _expect(root, "grey_1", ".png", grey), np.repeat(grey[..., None], 3, -1), 0


def _sixteen_bit(root):
    grey = blocks()[..., 1]
    path = _expect(root, "deep_1", ".png", grey.astype(np.uint16) * 257)
    assert Image.open(path).mode.startswith("I")  # really a 16-bit file
    return path, np.repeat(grey[..., None], 3, -1), 0


def _palette(root):
    path = _expect(root, "palette_1", ".png", blocks(), mode="P")
    assert Image.open(path).mode == "P"
    return path, blocks(), 0


def _rgba(root):
    rgba = np.concatenate([blocks(), np.full((48, 64, 1), 90, np.uint8)], -1)
    return _expect(root, "rgba_1", ".png", rgba), blocks(), 0


def _jpeg(root):
    return _expect(root, "plain_1", ".jpg", blocks(), quality=95), blocks(), 6


ODD = {"GIF content named .jpg": _gif_as_jpg, "PNG content named .jpg": _png_as_jpg,
       "CMYK JPEG": _cmyk, "greyscale": _greyscale, "16-bit": _sixteen_bit,
       "palette": _palette, "RGBA": _rgba, "plain JPEG": _jpeg}


@pytest.mark.parametrize("write", list(ODD.values()), ids=list(ODD))
def test_odd_but_valid_image_loads_as_rgb(tmp_path, write):
    path, expected, tolerance = write(tmp_path)
    ex = dataset.load_example(path, None)
    assert ex.image.dtype == np.uint8 and ex.image.shape == (48, 64, 3)
    diff = np.abs(ex.image.astype(int) - expected).mean()
    assert diff <= tolerance, diff
    np.testing.assert_array_equal(
        ex.label, dataset.trimap_to_label(trimap(), dataset.is_cat(dataset.image_name(path))))
    assert dataset.check_files([path]) == ([path], [])


def test_image_smaller_than_the_crop_is_padded_and_ignored(tmp_path):
    path = _expect(tmp_path, "Small_1", ".png", blocks(20, 30))
    ex = dataset.load_example(path, 64)
    assert ex.image.shape == (64, 64, 3) and ex.label.shape == (64, 64)
    inside = np.s_[22:42, 17:47]  # (64 - 20) // 2 = 22 rows, (64 - 30) // 2 = 17 columns
    np.testing.assert_array_equal(ex.image[inside], blocks(20, 30))
    assert not ex.padding[inside].any() and ex.padding.sum() == 64 * 64 - 20 * 30
    assert (ex.image[ex.padding] == 0).all()
    assert (ex.label[ex.padding] == dataset.IGNORE_LABEL).all()
    np.testing.assert_array_equal(ex.label[inside], dataset.trimap_to_label(trimap(20, 30), True))


def test_names_with_spaces_and_non_ascii_load_and_stream(tmp_path):
    names = ["Maine Coon_1", "Ägyptische Mau_2", "chien d'été_3"]
    for i, name in enumerate(names):
        _expect(tmp_path, name, ".jpg", blocks(seed=i), quality=95)
    paths = dataset.list_images(str(tmp_path))
    images, labels, meta = dataset.read_data(str(tmp_path), 64, return_meta=True,
                                             progress=False)
    assert sorted(meta["names"]) == sorted(names)
    pets = {name: set(np.unique(lab)) - {0, 255} for name, lab in zip(meta["names"], labels)}
    assert pets == {"Maine Coon_1": {1}, "Ägyptische Mau_2": {1}, "chien d'été_3": {2}}
    streamed = np.concatenate([b[0] for b in make_dataset(paths, 64, 2)])
    np.testing.assert_array_equal(streamed, images)


def test_mask_without_image_is_reported_and_ignored(tmp_path):
    good = write_good(tmp_path)
    save_mask(tmp_path, "orphan_1")
    assert dataset.orphan_masks(str(tmp_path)) == [str(tmp_path / "masks" / "orphan_1.png")]
    assert dataset.check_files(dataset.list_images(str(tmp_path))) == ([good], [])


def test_empty_or_missing_folder_says_which(tmp_path, capsys):
    with pytest.raises(dataset.DataError, match="no such folder"):
        dataset.list_images(str(tmp_path / "missing"))
    (tmp_path / "empty" / "images").mkdir(parents=True)
    with pytest.raises(dataset.DataError, match="holds no .jpg, .jpeg or .png"):
        dataset.list_images(str(tmp_path / "empty"))
    assert check.main([str(tmp_path / "empty")]) == 1
    err = capsys.readouterr().err
    assert str(tmp_path / "empty" / "images") in err and "holds no" in err


def test_pixel_limit_is_checked_before_decoding(tmp_path, monkeypatch):
    small = _expect(tmp_path, "a_1", ".png", blocks(30, 30))
    big = _expect(tmp_path, "b_1", ".png", blocks(40, 40))
    monkeypatch.setattr(files, "MAX_IMAGE_PIXELS", 1000)
    decoded = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda im: decoded.append(im.size)
                        or real_load(im))
    assert dataset.load_image(small).shape == (30, 30, 3) and (30, 30) in decoded
    with pytest.raises(dataset.DataError, match=r"40x40 .* over the 0.001-megapixel limit"):
        dataset.load_image(big)
    assert (40, 40) not in decoded  # refused from the header alone


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_very_large_image_does_not_blow_up_memory(tmp_path):
    path = tmp_path / "huge.png"
    write_huge_png(path, 8000, 7000)  # 56 MB decoded, ~600 MB on the way to RGB arrays
    # Peak resident memory of a fresh process (VmHWM; ru_maxrss would carry pytest's
    # own peak over the exec).
    code = (
        "import sys\n"
        "from datasets.files import DataError, load_image\n"
        "def peak_kb():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmHWM:'):\n"
        "            return int(line.split()[1])\n"
        "before = peak_kb()\n"
        "try:\n"
        "    load_image(sys.argv[1])\n"
        "except DataError as e:\n"
        "    print('refused:', e)\n"
        "print('grew_kb', peak_kb() - before)\n")
    env = {k: v for k, v in os.environ.items() if k != "SEG_MAX_IMAGE_PIXELS"}
    out = subprocess.run([sys.executable, "-c", code, str(path)], cwd=ROOT, text=True,
                         capture_output=True, timeout=120, check=True, env=env).stdout
    assert "refused:" in out and "8000x7000" in out
    grew_mb = int(out.split("grew_kb")[1]) / 1024
    assert grew_mb < 20, f"peak memory grew by {grew_mb:.0f} MB loading a refused image"


# --------------------------------------------------------------------------- whole folder


def write_every_fault(root):
    """One folder holding every fault of the catalogue plus a few good pairs."""
    for fault in BAD.values():
        fault.write(root)
    odd = [write(root)[0] for write in ODD.values()]
    save_mask(root, "orphan_1")
    _expect(root, "Maine Coon_1", ".jpg", blocks(), quality=95)
    _expect(root, "Small_1", ".png", blocks(20, 30))
    return len(odd) + 2


def test_check_command_prints_the_full_report(tmp_path):
    usable = write_every_fault(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "datasets.check", str(tmp_path)],
                          cwd=ROOT, text=True, capture_output=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    bad_lines = [line for line in proc.stdout.splitlines() if line.startswith("BAD")]
    assert len(bad_lines) == len(BAD)
    for fault in BAD.values():
        assert any(fault.file in line and fault.says in line.lower() for line in bad_lines)
    assert "WARN" in proc.stdout and "orphan_1.png: mask has no image" in proc.stdout
    images = usable + len(BAD)  # every bad pair has its image (the orphan mask has none)
    assert f"{usable} usable, {len(BAD)} bad of {images} images" in proc.stdout
    assert "--skip-bad" in proc.stdout


def test_training_stops_before_it_starts_or_skips_with_a_report(tmp_path, capsys):
    from scripts import script
    from learning import cli
    train = script("train")
    usable = write_every_fault(tmp_path / "data" / "train")
    run = tmp_path / "run"
    argv = ["--data", str(tmp_path / "data"), "--out", str(run), "--model", "unet",
            "--image-size", "64", "--batch-size", "4", "--epochs", "1", "--weights",
            "none"]
    assert cli.run(train.main, argv) == 2
    err = capsys.readouterr().err
    assert f"{len(BAD)} bad file(s)" in err and "--skip-bad" in err
    for fault in BAD.values():
        assert fault.file in err
    assert not run.exists() or not list(run.glob("*.keras"))  # nothing trained

    assert cli.run(train.main, argv + ["--skip-bad"]) == 0
    out = capsys.readouterr().out
    assert f"{len(BAD)} bad file(s) skipped" in out
    config = json.loads((run / "config.json").read_text())
    assert config["train_images"] + config["val_images"] == usable
    assert len(config["skipped_files"]) == len(BAD)
    assert all(any(f.file in s for s in config["skipped_files"]) for f in BAD.values())
    assert (run / "best.keras").is_file()
