"""Test-time augmentation: the scales it uses, that it reduces to the plain softmax,
that its flips are undone; and test.py / draw.py with --tta --crf."""

import importlib.util
import json
import os
from types import SimpleNamespace

import keras
import numpy as np
import pytest

from datasets import demo
from learning import cli
from models.crf import DEFAULT_SETTINGS
from models.tta import label_predictor, scaled_sizes, tta_probabilities
from models.unet import UNet
from scripts import script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fake_net(stride=16, input_size=None):
    """What `scaled_sizes` reads of a SegNet, and a pixel-wise "network": the cat
    probability is the red channel / 255, so every prediction is known in advance."""
    def check_input_size(h, w):
        if h % stride or w % stride:
            raise ValueError(f"needs multiples of {stride}")

    def probabilities(images):
        cat = np.asarray(images)[..., 0].astype(np.float32) / 255
        return np.stack([1 - cat, cat, np.zeros_like(cat)], -1)

    return SimpleNamespace(
        output_stride=stride, architecture="fake", check_input_size=check_input_size,
        probabilities=probabilities, input_shape=(None, input_size, input_size, 3))


def test_scales_round_to_the_stride_and_repeats_are_dropped():
    assert scaled_sizes(fake_net(16), 64, 96) == [
        (0.75, (48, 80)), (1.0, (64, 96)), (1.25, (80, 128))]  # 72 -> 80, 120 -> 128
    # Stride 32 at 64: 0.75 gives 48 -> 64 (1.5 strides, rounded up), as 1.0 does.
    assert scaled_sizes(fake_net(32), 64, 64) == [(0.75, (64, 64)), (1.25, (96, 96))]
    assert scaled_sizes(fake_net(32), 64, 64, [0.1]) == [(0.1, (32, 32))]  # >= 1 stride


def test_a_network_with_a_fixed_size_keeps_the_scales_it_can_take():
    assert scaled_sizes(fake_net(16, input_size=64), 64, 64) == [(1.0, (64, 64))]
    with pytest.raises(ValueError, match="--tta.*none of the scales"):
        scaled_sizes(fake_net(16, input_size=64), 64, 64, [0.5, 2.0])
    with pytest.raises(ValueError, match="--tta-scales.*Received"):
        scaled_sizes(fake_net(16), 64, 64, [])


def test_flips_are_undone():
    # A pixel-wise network predicts the same thing mirrored or not, so the average
    # over the flip equals one plain pass exactly (a flip left undone would not).
    rows, cols = np.mgrid[:32, :48]
    ramp = np.stack([4 * cols + 2 * rows, 2 * cols, rows], -1).astype(np.uint8)
    images = np.stack([ramp, ramp[::-1]])  # smooth, and not mirror-symmetric
    net = fake_net()
    plain = net.probabilities(images)
    np.testing.assert_allclose(tta_probabilities(net, images, [1.0], flip=True),
                               plain, atol=1e-6)
    # Across scales it differs from the plain pass by the bilinear round trips only,
    # which a linear ramp survives but for the borders and the rounding to uint8.
    many = tta_probabilities(net, images)
    assert many.shape == plain.shape and np.allclose(many.sum(-1), 1, atol=1e-5)
    assert np.abs(many - plain).mean() < 0.01


@pytest.fixture(scope="module")
def unet():
    keras.utils.set_random_seed(0)
    return UNet(weights=None, base_filters=4, depth=2)


def test_one_scale_without_flip_is_the_plain_softmax(unet):
    images = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_allclose(tta_probabilities(unet, images, [1.0], flip=False),
                               unet.probabilities(images), atol=1e-6)


def test_flip_averaging_makes_any_network_mirror_symmetric(unet):
    images = np.random.default_rng(2).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    probs = tta_probabilities(unet, images, [1.0])
    mirrored = tta_probabilities(unet, images[:, :, ::-1], [1.0])
    np.testing.assert_allclose(probs, mirrored[:, :, ::-1], atol=1e-6)
    # Resized, a mirrored image may round to uint8 a level apart here and there.
    probs = tta_probabilities(unet, images, [1.0, 1.5])
    mirrored = tta_probabilities(unet, images[:, :, ::-1], [1.0, 1.5])
    np.testing.assert_allclose(probs, mirrored[:, :, ::-1], atol=1e-3)
    assert np.allclose(probs.sum(-1), 1, atol=1e-5)
    labels = label_predictor(unet, {"scales": [1.0], "flip": True},
                             DEFAULT_SETTINGS)(images)
    assert labels.shape == (2, 32, 32) and labels.dtype == np.uint8
    assert label_predictor(unet) == unet.predict_labels  # no flag: the fast path


def test_test_and_draw_record_and_apply_tta_and_crf(unet, tmp_path):
    data = demo.generate(str(tmp_path / "demo"), num_train=1, num_test=3)
    run = tmp_path / "run"
    run.mkdir()
    unet.save(str(run / "best.keras"))  # an untrained run is enough to test the flags
    args = ["--data", data, "--run", str(run), "--image-size", "64"]
    test_script = script("test")
    assert cli.run(test_script.main, args + ["--tta", "--crf"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["tta"] == {"scales": [0.75, 1.0, 1.25], "flip": True,
                              "sizes": [[48, 48], [64, 64], [80, 80]]}
    assert metrics["crf"] == DEFAULT_SETTINGS
    assert metrics["num_images"] == 3 and 0 <= metrics["mean_iou"] <= 1
    assert cli.run(test_script.main, args + ["--tta", "--tta-scales", "1"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["tta"]["sizes"] == [[64, 64]] and metrics["crf"] is None
    assert cli.run(test_script.main, args) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["tta"] is None and metrics["crf"] is None
    out = tmp_path / "drawn"
    assert cli.run(script("draw").main, [
        "--images", os.path.join(data, "test", "images"), "--run", str(run),
        "--out", str(out), "--tta", "--crf"]) == 0
    assert len(os.listdir(out)) == 3
    # bench/refine.py on the same run: the four ways, timed, and the oracle rows.
    spec = importlib.util.spec_from_file_location(
        "refine_bench", os.path.join(ROOT, "bench", "refine.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = bench.main(["--run", str(run), "--data", data, "--image-size", "64",
                       "--oracle-stride", "16", "--json", str(tmp_path / "r.json")])
    assert [r["method"] for r in rows] == ["plain", "tta", "crf", "tta+crf",
                                           "oracle/16 probabilities",
                                           "oracle/16 crf defaults"]
    assert rows[0]["time_vs_plain"] == 1.0 and rows[3]["seconds_per_image"] > 0
    assert all(0 <= r["boundary_mean_iou"] <= 1 for r in rows)
    assert json.loads((tmp_path / "r.json").read_text())["rows"] == rows
