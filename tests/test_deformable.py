"""Deformable convolution v2: the regular convolution when nothing moves, a brute-force
numpy reference when taps move, and its place in a ResNet backbone."""

import keras
import numpy as np
import pytest

from models import build_model
from models.deformable import DeformableConv2D, deformable_conv2d


def bilinear(image, y, x):
    """image (H, W, C) at (y, x); neighbours outside the map count as zero."""
    height, width, channels = image.shape
    y0, x0 = int(np.floor(y)), int(np.floor(x))
    value = np.zeros(channels)
    for yc in (y0, y0 + 1):
        for xc in (x0, x0 + 1):
            if 0 <= yc < height and 0 <= xc < width:
                value += (1 - abs(y - yc)) * (1 - abs(x - xc)) * image[yc, xc]
    return value


def brute_force(inputs, kernel, offsets, modulation, stride, padding, dilation):
    """Eq. (1) of DCNv2, loop by loop: y(p) = sum_k w_k x(p + p_k + dp_k) dm_k."""
    n, height, width, _ = inputs.shape
    kh, kw, _, filters = kernel.shape
    out_h, out_w = offsets.shape[1:3]
    top = left = 0
    if padding == "same":
        top = max((out_h - 1) * stride + (kh - 1) * dilation + 1 - height, 0) // 2
        left = max((out_w - 1) * stride + (kw - 1) * dilation + 1 - width, 0) // 2
    out = np.zeros((n, out_h, out_w, filters))
    for b in range(n):
        for i in range(out_h):
            for j in range(out_w):
                for a in range(kh):
                    for c in range(kw):
                        k = a * kw + c
                        y = i * stride - top + a * dilation + offsets[b, i, j, 2 * k]
                        x = j * stride - left + c * dilation + offsets[b, i, j, 2 * k + 1]
                        sample = bilinear(inputs[b], y, x) * modulation[b, i, j, k]
                        out[b, i, j] += sample @ kernel[a, c]
    return out


CASES = [  # (height, width, kernel, stride, padding, dilation)
    (6, 7, 3, 1, "same", 1),
    (7, 6, 3, 2, "valid", 1),
    (8, 8, 3, 1, "same", 2),
    (6, 6, 2, 2, "valid", 1),
]


def random_case(height, width, size, stride, padding, dilation, seed=0):
    rng = np.random.default_rng(seed)
    inputs = rng.normal(size=(2, height, width, 3)).astype("float32")
    kernel = rng.normal(size=(size, size, 3, 4)).astype("float32")
    conv = keras.layers.Conv2D(4, size, strides=stride, padding=padding,
                               dilation_rate=dilation, use_bias=False)
    out_h, out_w = conv.compute_output_shape(inputs.shape)[1:3]
    return rng, inputs, kernel, conv, (2, out_h, out_w, size * size)


@pytest.mark.parametrize("height,width,size,stride,padding,dilation", CASES)
def test_no_offsets_and_full_modulation_is_a_plain_convolution(height, width, size,
                                                               stride, padding, dilation):
    _, inputs, kernel, conv, taps = random_case(height, width, size, stride, padding,
                                                dilation)
    conv.build(inputs.shape)
    conv.kernel.assign(kernel)
    offsets = np.zeros(taps[:3] + (2 * taps[3],), "float32")
    got = deformable_conv2d(inputs, kernel, offsets, np.ones(taps, "float32"),
                            conv.strides, padding, conv.dilation_rate)
    np.testing.assert_allclose(got, conv(inputs), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("height,width,size,stride,padding,dilation", CASES)
def test_random_offsets_match_the_brute_force_reference(height, width, size, stride,
                                                        padding, dilation):
    rng, inputs, kernel, conv, taps = random_case(height, width, size, stride, padding,
                                                  dilation, seed=1)
    # offsets up to 3 pixels: fractional positions, and some outside the map
    offsets = rng.uniform(-3, 3, taps[:3] + (2 * taps[3],)).astype("float32")
    offsets[0, 0, 0, :2] = 0.0  # and one exactly on the grid
    modulation = rng.uniform(0, 1, taps).astype("float32")
    got = deformable_conv2d(inputs, kernel, offsets, modulation, conv.strides, padding,
                            conv.dilation_rate)
    want = brute_force(inputs, kernel, offsets, modulation, stride, padding, dilation)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_the_layer_starts_as_half_the_convolution_and_learns_its_offsets():
    x = np.random.default_rng(2).normal(size=(2, 6, 6, 3)).astype("float32")
    ours = DeformableConv2D(4, 3, padding="same", name="dcn")
    plain = keras.layers.Conv2D(4, 3, padding="same")
    ours.build(x.shape)
    plain.build(x.shape)
    ours.kernel.assign(plain.kernel)
    ours.bias.assign(np.full(4, 0.3, "float32"))
    plain.bias.assign(ours.bias)
    # zero-initialised offset convolution: no offset, modulation sigmoid(0) = 0.5
    assert ours.offset_conv.name == "dcn_offset"
    assert ours.offset_conv.kernel.shape == (3, 3, 3, 27)
    np.testing.assert_allclose(ours(x), 0.5 * (plain(x) - 0.3) + 0.3, atol=1e-5)
    # a large modulation logit: modulation 1, the plain convolution
    ours.offset_conv.bias.assign(np.r_[np.zeros(18), np.full(9, 40.0)].astype("float32"))
    np.testing.assert_allclose(ours(x), plain(x), atol=1e-5)
    # the offsets get a gradient
    import tensorflow as tf
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(ours(x) ** 2)
    grads = tape.gradient(loss, ours.offset_conv.trainable_weights)
    assert float(tf.reduce_sum(tf.abs(grads[0]))) > 0
    assert [w.shape for w in ours.conv_weights] == [(3, 3, 3, 4), (4,)]


def test_deformable_stages_of_a_resnet_backbone(tmp_path):
    net = build_model("fcn32s", weights=None, deformable_stages=1)
    assert isinstance(net.get_layer("conv5_block2_2_conv"), DeformableConv2D)
    assert not isinstance(net.get_layer("conv4_block6_2_conv"), DeformableConv2D)
    assert net.get_config()["deformable_stages"] == 1
    x = np.random.default_rng(3).integers(0, 256, (1, 64, 64, 3), np.uint8)
    path = str(tmp_path / "dcn.keras")
    net.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded(x), net(x), atol=1e-5)
    with pytest.raises(ValueError, match="ResNet"):
        build_model("gcn", backbone="mobilenetv2", deformable_stages=1)


@pytest.mark.parametrize("name", ["resnet50v2",
                                  pytest.param("resnet101v2", marks=pytest.mark.slow)])
def test_pretrained_convolutions_load_into_the_deformable_ones(name, tmp_path):
    from models.backbones import BACKBONES, build_backbone
    from models.nn import image_input
    from test_keras_native import write_named_h5
    plain = getattr(keras.applications, BACKBONES[name].application or "ResNet50V2")(
        include_top=False, weights=None, input_shape=(None, None, 3))
    named, keras3 = str(tmp_path / "notop.h5"), str(tmp_path / "plain.weights.h5")
    write_named_h5(plain, named)
    plain.save_weights(keras3)
    for weights in (named, keras3):  # by name, and by class and order
        inputs = image_input()
        net = build_backbone(inputs, name, weights, deformable_stages=2)
        model = keras.Model(inputs, net.output)
        deformable = [layer for layer in model.layers
                      if isinstance(layer, DeformableConv2D)]
        # every 3x3 convolution of conv4 and conv5, none before
        assert {layer.name[:5] for layer in deformable} == {"conv4", "conv5"}
        assert len(deformable) == len([layer for layer in plain.layers if
                                       layer.name.endswith("_2_conv")
                                       and layer.name[:5] in ("conv4", "conv5")])
        for layer in deformable:
            np.testing.assert_array_equal(layer.kernel,
                                          plain.get_layer(layer.name).kernel)
            assert not np.any(layer.offset_conv.kernel)  # DCNv2's start: no offsets
