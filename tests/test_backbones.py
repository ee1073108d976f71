"""The backbones of `models.backbones`, each against the `keras.applications` network
it comes from: pyramid strides and channels, weights files by name and by Keras'
own loader, identical features, output stride 16 by dilation, one training step.

The default suite covers resnet50v2, xception and mobilenetv2; the others are slow
to build (ResNet-101/152, DenseNet, EfficientNetV2, ConvNeXt) and run with

    python -m pytest -m slow tests/test_backbones.py
"""

from types import SimpleNamespace

import keras
import numpy as np
import pytest

from models import applications, backbones, build_model
from models.losses import make_loss
from models.nn import image_input
from test_architectures import images_and_labels
from test_keras_native import write_named_h5

DEFAULT = ("resnet50v2", "xception", "mobilenetv2")
SLOW = ("resnet101v2", "resnet152v2", "densenet121", "efficientnetv2s", "convnext_tiny")
NAMES = [*DEFAULT, *(pytest.param(name, marks=pytest.mark.slow) for name in SLOW)]
# Channels of the taps at strides 4, 8, 16, 32 and of the last layer.
CHANNELS = {
    "resnet50v2": (256, 512, 1024, 2048, 2048),
    "resnet101v2": (256, 512, 1024, 2048, 2048),
    "resnet152v2": (256, 512, 1024, 2048, 2048),
    "xception": (256, 728, 1024, 2048, 2048),
    "mobilenetv2": (144, 192, 576, 1280, 1280),
    "densenet121": (256, 512, 1024, 1024, 1024),
    "efficientnetv2s": (48, 64, 160, 1280, 1280),
    "convnext_tiny": (96, 192, 384, 768, 768),
}
# What output stride 16 changes (golden, from each network's layout): the stride of
# the first layer past stride 16 goes, the layers after it are dilated by 2, and the
# padding in front of a 'valid' convolution widens to keep the size.
OS16 = {
    "resnet50v2": {"conv4_block6_2_conv": {"strides": (1, 1), "dilation_rate": (1, 1)},
                   "conv5_block1_2_pad": {"padding": ((2, 2), (2, 2))},
                   "conv5_block3_2_conv": {"dilation_rate": (2, 2)}},
    "resnet101v2": {"conv4_block23_2_conv": {"strides": (1, 1)},
                    "resnet101v2_max_pooling2d_2": {"strides": (1, 1)},
                    "conv5_block3_2_pad": {"padding": ((2, 2), (2, 2))},
                    "conv5_block3_2_conv": {"dilation_rate": (2, 2)}},
    "resnet152v2": {"conv4_block36_2_conv": {"strides": (1, 1)},
                    "conv5_block1_2_conv": {"dilation_rate": (2, 2)}},
    "xception": {"block13_sepconv2": {"dilation_rate": (1, 1)},
                 "block13_pool": {"strides": (1, 1), "padding": "same"},
                 "xception_conv2d_3": {"strides": (1, 1)},  # block 13's shortcut
                 "block14_sepconv1": {"dilation_rate": (2, 2)}},
    "mobilenetv2": {"block_13_pad": {"padding": ((1, 1), (1, 1))},
                    "block_13_depthwise": {"strides": (1, 1), "padding": "valid"},
                    "block_14_depthwise": {"dilation_rate": (2, 2)}},
    "densenet121": {"pool4_pool": {"strides": (1, 1), "padding": "same"},
                    "conv5_block1_2_conv": {"dilation_rate": (2, 2)}},
    "efficientnetv2s": {"block6a_dwconv2": {"strides": (1, 1)},
                        "block6b_dwconv2": {"dilation_rate": (2, 2)}},
    "convnext_tiny": {"convnext_tiny_stage_2_block_8_depthwise_conv":
                      {"dilation_rate": (1, 1)},
                      "convnext_tiny_stage_3_block_0_depthwise_conv":
                      {"dilation_rate": (2, 2)}},
}


def test_the_registry_holds_the_lecture_notes_backbones():
    assert list(backbones.BACKBONES) == [*DEFAULT[:1], *SLOW[:2], *DEFAULT[1:],
                                         *SLOW[2:]]
    for name, spec in backbones.BACKBONES.items():
        assert set(spec.taps) == {4, 8, 16, 32}, name
        assert spec.preprocessing in ("tf", "torch", "included"), name
    with pytest.raises(ValueError, match="Received: 'vgg16'"):
        backbones.build_backbone(image_input(), "vgg16")


@pytest.fixture(scope="module", params=NAMES)
def saved(request, tmp_path_factory):
    """The plain `keras.applications` network with random values in every weight
    (Keras' random kernels, random norm statistics: a mix-up cannot pass), saved as
    a named `.h5` (as the notop download) and as a Keras 3 `.weights.h5`."""
    name = request.param
    spec = backbones.BACKBONES[name]
    plain = getattr(keras.applications, spec.application or "ResNet50V2")(
        include_top=False, weights=None, input_shape=(None, None, 3))
    rng = np.random.default_rng(0)
    for layer in plain.layers:
        if isinstance(layer, (keras.layers.BatchNormalization,
                              keras.layers.LayerNormalization)):
            layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype("float32")
                               for w in layer.get_weights()])
    folder = tmp_path_factory.mktemp(name)
    named, keras3 = str(folder / f"{name}.h5"), str(folder / f"{name}.weights.h5")
    write_named_h5(plain, named)
    plain.save_weights(keras3)
    return SimpleNamespace(name=name, spec=spec, plain=plain, named=named, keras3=keras3)


def ours(name, weights, output_stride):
    """Our backbone on uint8 images: taps at 4, 8, 16, 32 and the last layer."""
    inputs = image_input()
    net = backbones.build_backbone(inputs, name, weights, output_stride)
    return keras.Model(inputs, [net.taps[s] for s in (4, 8, 16, 32)] + [net.output])


def plain_features(saved, images):
    """The plain network's tap features, after Keras' own `preprocess_input` (and, for
    Xception, the 3 pixels of alignment padding)."""
    module = {"tf": "xception", "torch": "densenet", "included": None}[
        saved.spec.preprocessing]
    x = images.astype("float32")
    if module:
        x = getattr(keras.applications, module).preprocess_input(x)
    pad = saved.spec.input_padding
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    keras_name = {new: old for old, (new, _) in
                  applications.unnamed_layers(saved.plain, saved.name).items()}

    def tensor(tap):
        name, _, part = tap.partition(":")
        layer = saved.plain.get_layer(keras_name.get(name, name))
        return layer.input if part == "input" else layer.output
    taps = [*saved.spec.taps.values(), saved.spec.output]
    return keras.Model(saved.plain.input, [tensor(t) for t in taps])(x)


def assert_same_weights(saved, model):
    stable = applications.unnamed_layers(saved.plain, saved.name)
    compared = 0
    for layer in (layer for layer in saved.plain.layers if layer.weights):
        mine = model.get_layer(stable.get(layer.name, (layer.name,))[0])
        for a, b in zip(layer.get_weights(), mine.get_weights()):
            np.testing.assert_array_equal(a, b, err_msg=layer.name)
            compared += 1
    assert compared == len(saved.plain.weights) == len(model.weights)


def test_pyramid_and_weights_by_name_give_the_plain_networks_features(saved):
    model = ours(saved.name, saved.named, 32)
    images = np.random.default_rng(1).integers(0, 256, (2, 64, 64, 3), np.uint8)
    got = model(images)
    shapes = [(2, 64 // s, 64 // s, c) for s, c in zip((4, 8, 16, 32, 32),
                                                       CHANNELS[saved.name])]
    assert [tuple(g.shape) for g in got] == shapes
    assert_same_weights(saved, model)
    for g, want in zip(got, plain_features(saved, images)):
        scale = float(np.max(np.abs(want)))
        np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-5 * scale)


def test_output_stride_16_keeps_the_size_and_the_weights(saved):
    # the Keras 3 file this time: Keras' own loader into the plain network
    model = ours(saved.name, saved.keras3, 16)
    assert_same_weights(saved, model)
    for name, attributes in OS16[saved.name].items():
        for attribute, value in attributes.items():
            assert getattr(model.get_layer(name), attribute) == value, (name, attribute)
    images = np.random.default_rng(2).integers(0, 256, (1, 64, 96, 3), np.uint8)
    got = model(images)
    assert [tuple(g.shape[1:3]) for g in got] == [(16, 24), (8, 12), (4, 6), (4, 6),
                                                  (4, 6)]
    # nothing before the stride-16 tap changed: the same features there
    for g, want in zip(got[:3], plain_features(saved, images)[:3]):
        np.testing.assert_allclose(g, want, rtol=1e-5,
                                   atol=1e-5 * float(np.max(np.abs(want))))


@pytest.mark.parametrize("name", NAMES)
def test_one_training_step_lowers_the_loss(name):
    keras.utils.set_random_seed(0)
    net = build_model("deeplabv3plus", weights=None, backbone=name)
    assert net.get_config()["backbone"] == name
    for layer in net.layers:  # no dropout (EfficientNet's stochastic depth, ASPP's)
        if isinstance(layer, keras.layers.Dropout):
            layer.rate = 0.0
    images, labels = images_and_labels()
    net.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                loss=make_loss(net.loss_name), run_eagerly=True)
    losses = [float(net.train_on_batch(images, labels)) for _ in range(2)]
    assert losses[1] < losses[0], losses


def test_imagenet_weights_are_keras_own_download(monkeypatch):
    asked = {}
    real = keras.applications.MobileNetV2

    def download(**kwargs):  # what Keras builds and loads for weights="imagenet"
        asked.update(kwargs)
        plain = real(**{**kwargs, "weights": None})
        plain.get_layer("Conv1").kernel.assign(np.full((3, 3, 3, 32), 0.25, "float32"))
        return plain
    monkeypatch.setattr(keras.applications, "MobileNetV2", download)
    model = ours("mobilenetv2", "imagenet", 16)
    assert asked["weights"] == "imagenet" and asked["include_top"] is False
    np.testing.assert_array_equal(model.get_layer("Conv1").kernel, 0.25)

    def offline(**kwargs):
        raise Exception("URL fetch failure")
    monkeypatch.setattr(keras.applications, "MobileNetV2", offline)
    with pytest.raises(backbones.WeightsError, match="--weights /path/to/mobilenet_v2"):
        ours("mobilenetv2", "imagenet", 32)


def test_a_wrong_weights_file_names_itself(tmp_path):
    path = str(tmp_path / "other.h5")
    write_named_h5(keras.Sequential([keras.Input((2,)), keras.layers.Dense(
        2, name="dense_7")]), path)
    with pytest.raises(backbones.WeightsError, match="other.h5.*dense_7"):
        ours("mobilenetv2", path, 32)


def test_keras_batch_norm_is_the_switch_of_the_fused_kernel():
    fused = ours("mobilenetv2", None, 32).get_layer("bn_Conv1")
    inputs = image_input()
    net = backbones.build_backbone(inputs, "mobilenetv2", batch_norm="keras")
    plain = keras.Model(inputs, net.output).get_layer("bn_Conv1")
    assert type(fused).__name__ == "FusedBatchNormalization"
    assert type(plain) is keras.layers.BatchNormalization
    assert fused.momentum == plain.momentum == 0.999  # the config is Keras'


def test_solo_builds_its_pyramid_on_any_backbone():
    from models.solo import SOLO
    net = SOLO(weights=None, input_size=64, backbone="mobilenetv2", grids=(8, 4))
    assert net.get_layer("fpn_lateral_c2").input.shape[-1] == 144  # block_3_expand_relu
    out = net(np.zeros((1, 64, 64, 3), np.uint8))
    assert tuple(out["mask_x_p2"].shape) == (1, 32, 32, 8)
    assert tuple(out["category_p3"].shape) == (1, 4, 4, 2)
