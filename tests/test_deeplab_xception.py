"""DeepLab v3+ as its paper builds it (Chen et al. 2018, Sec. 3.2-3.3): Xception at
output stride 16, atrous separable convolutions in ASPP and decoder, aligned taps;
the `--backbone`, `--separable` and `--solo-backbone` flags."""

import keras
import numpy as np
import pytest

from learning import cli
from models import DeepLabV3Plus, layers
from scripts import script


@pytest.fixture(scope="module")
def paper():
    keras.utils.set_random_seed(0)
    return DeepLabV3Plus(weights=None, backbone="xception")


def test_xception_defaults_to_the_papers_separable_aspp(paper):
    config = paper.get_config()
    assert (config["backbone"], config["output_stride"], config["separable"]) == (
        "xception", 16, True)
    for rate in (6, 12, 18):
        depthwise = paper.get_layer(f"aspp_rate{rate}_depthwise")
        assert isinstance(depthwise, keras.layers.DepthwiseConv2D)
        assert depthwise.dilation_rate == (rate, rate)
        assert paper.get_layer(f"aspp_rate{rate}_depthwise_bn") is not None
        assert paper.get_layer(f"aspp_rate{rate}_pointwise_conv").kernel_size == (1, 1)
    names = {layer.name for layer in paper.layers}
    assert not {f"aspp_rate{r}_conv" for r in (6, 12, 18)} & names
    # the decoder's low-level features: entry-flow block 3 before its strided pooling
    low = paper.get_layer("decoder_low_level_conv")
    assert low.input is paper.get_layer("block3_sepconv2_bn").output
    # Xception at output stride 16: the exit flow keeps its resolution, dilated by 2
    assert paper.get_layer("block13_pool").strides == (1, 1)
    assert paper.get_layer("block14_sepconv1").dilation_rate == (2, 2)


@pytest.mark.parametrize("height,width", [(64, 64), (64, 96), (48, 80)])
def test_taps_are_aligned_so_the_decoder_joins_equal_maps(paper, height, width):
    taps = keras.Model(paper.input, [paper.get_layer(n).output for n in (
        "block3_sepconv2_bn", "block4_sepconv2_bn", "block14_sepconv2_act")])
    x = np.random.default_rng(0).integers(0, 256, (1, height, width, 3), np.uint8)
    shapes = [tuple(t.shape[1:3]) for t in taps(x)]
    assert shapes == [(height // 4, width // 4), (height // 8, width // 8),
                      (height // 16, width // 16)]
    assert tuple(paper(x).shape) == (1, height, width, 3)


def test_saves_and_loads_as_itself(paper, tmp_path):
    x = np.random.default_rng(1).integers(0, 256, (2, 64, 96, 3), np.uint8)
    path = str(tmp_path / "best.keras")
    paper.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is DeepLabV3Plus and loaded.get_config() == paper.get_config()
    np.testing.assert_array_equal(loaded(x, training=False), paper(x, training=False))


def test_separable_is_a_choice_for_every_backbone():
    plain = DeepLabV3Plus(backbone="mobilenetv2", output_stride=8)
    assert plain.get_config()["separable"] is False
    assert isinstance(plain.get_layer("aspp_rate36_conv"), layers.AtrousConv2D)
    assert plain.get_layer("block_14_depthwise").dilation_rate == (4, 4)
    separable = DeepLabV3Plus(backbone="mobilenetv2", separable=True)
    assert separable.get_layer("aspp_rate12_depthwise").dilation_rate == (12, 12)
    assert tuple(separable(np.zeros((1, 32, 48, 3), np.uint8)).shape) == (1, 32, 48, 3)


def test_train_flags_reach_the_model(tmp_path, capsys):
    train = script("train")
    base = ["--data", "demo", "--out", str(tmp_path / "run"), "--image-size", "64",
            "--weights", "none"]
    args = train.get_args_parser().parse_args(
        base + ["--model", "deeplabv3plus", "--backbone", "mobilenetv2",
                "--separable", "--batch-norm", "keras"])
    net = train.build_model(args, num_classes=3)
    assert (net.backbone, net.separable, net.batch_norm) == ("mobilenetv2", True, "keras")
    assert type(net.get_layer("aspp_1x1_bn")) is keras.layers.BatchNormalization
    # the old SOLO flag is an alias of --backbone
    args = train.get_args_parser().parse_args(base + ["--model", "solo",
                                                      "--solo-backbone", "small"])
    assert args.backbone == "small"
    assert cli.run(train.main, base + ["--model", "gcn", "--no-separable"]) == 2
    err = capsys.readouterr().err
    assert "--separable does not apply to --model gcn" in err and "deeplabv3plus" in err
    assert cli.run(train.main, base + ["--model", "fcn8s", "--backbone", "small"]) == 2
    assert "Received: 'small'" in capsys.readouterr().err
