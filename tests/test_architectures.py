"""FCN-32s/16s/8s, DeepLab v3+, U-Net and SegNet: shapes, names, sizes, training
steps, save/load; FCN's bilinear start, DeepLab's dilated backbone and its weights;
and the Dice losses, with golden values worked out by hand."""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from models import ARCHITECTURES, build_model, deeplab, fcn, layers
from models.losses import LOSSES, CrossEntropyDiceLoss, DiceLoss, make_loss
from models.nn import SegNet
from models.segnet import MaxPoolingWithArgmax, MaxUnpooling

# Test configurations: (registered name, options). DeepLab keeps the paper's ASPP rates
# 6/12/18: on the 4x4 stride-16 map of a 64-pixel image they reach only padding, and
# `AtrousConv2D` skips those taps (TensorFlow's own dilated convolution took ~17 s
# per CPU training step there).
CONFIGS = {
    "fcn32s": ("fcn32s", {}),
    "fcn16s": ("fcn16s", {}),
    "fcn8s": ("fcn8s", {}),
    "fcn8s_resize": ("fcn8s", {"upsample": "resize"}),
    "deeplabv3plus": ("deeplabv3plus", {}),
    "unet": ("unet", {}),
    "segnet": ("segnet", {}),
}
NETS = {}  # built once per module: ResNet-50 builds take seconds


@pytest.fixture(scope="module", params=list(CONFIGS))
def net(request):
    if request.param not in NETS:
        keras.utils.set_random_seed(0)
        name, options = CONFIGS[request.param]
        NETS[request.param] = build_model(name, weights=None, **options)
    return NETS[request.param]


def images_and_labels(height=64, width=64):
    """2 images whose colour tells the class: top half background, bottom-left cat,
    bottom-right dog, an ignored band between them; plus noise."""
    labels = np.zeros((2, height, width), np.uint8)
    labels[:, height // 2:, :width // 2] = 1
    labels[:, height // 2:, width // 2:] = 2
    labels[:, height // 2 - 2:height // 2 + 2] = 255
    colours = np.array([[60, 60, 60], [200, 80, 40], [40, 90, 210], [128, 128, 128]])
    noise = np.random.default_rng(0).normal(0, 20, (2, height, width, 3))
    images = colours[np.where(labels == 255, 3, labels)] + noise
    return np.clip(images, 0, 255).astype(np.uint8), labels


def snake_case(name):
    """Keras' default layer name for a class name: Conv2D -> conv2d, ReLU -> re_lu."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def is_default_name(layer):
    return re.sub(r"_\d+$", "", layer.name) == snake_case(type(layer).__name__)


def test_every_architecture_is_registered():
    assert {"fcn32s", "fcn16s", "fcn8s", "deeplabv3plus", "unet", "segnet"} <= set(
        ARCHITECTURES)


# ----------------------------------------------------------------- every architecture

def test_output_shapes_square_and_non_square(net):
    s = net.output_stride
    for height, width in ((64, 64), (64, 96), (3 * s, 2 * s)):
        x = np.random.default_rng(1).integers(0, 256, (2, height, width, 3), np.uint8)
        assert tuple(net(x, training=False).shape) == (2, height, width, 3)


def test_every_layer_has_a_chosen_name(net):
    assert is_default_name(keras.layers.Conv2D(1, 1))  # the check itself works
    names = [layer.name for layer in net.layers]
    assert len(names) == len(set(names))
    assert [layer.name for layer in net.layers if is_default_name(layer)] == []
    assert net.get_layer("logits").output.shape[-1] == 3


def test_wrong_input_size_is_a_clear_error(net):
    s = net.output_stride
    with pytest.raises(ValueError, match=f"multiples of {s}"):
        net.check_input_size(70, 70)
    with pytest.raises(ValueError, match=f"multiples of {s}"):
        net.probabilities(np.zeros((1, 64, 70, 3), np.uint8))
    net.check_input_size(2 * s, 3 * s)


def test_keras_load_model_gives_the_same_predictions(net, tmp_path):
    x = np.random.default_rng(2).integers(0, 256, (2, 64, 96, 3), dtype=np.uint8)
    path = str(tmp_path / "best.keras")
    net.save(path)
    model = keras.models.load_model(path)  # Keras' own loader (after `import models`)
    assert isinstance(model, keras.Model) and model.input.dtype == "uint8"
    np.testing.assert_array_equal(model(x, training=False), net(x, training=False))
    loaded = keras.models.load_model(path)
    assert type(loaded) is type(net) and loaded.get_config() == net.get_config()


def test_a_few_sgd_steps_lower_the_loss(net):
    keras.utils.set_random_seed(1)
    images, labels = images_and_labels()
    # Eagerly: tracing a ResNet-50 training graph takes longer than these 5 steps.
    net.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                      loss=make_loss(net.loss_name), run_eagerly=True)
    losses = [float(net.train_on_batch(images, labels)) for _ in range(5)]
    assert losses[-1] < 0.9 * losses[0], losses


# ----------------------------------------------------------------- options

@pytest.mark.parametrize("make", [
    lambda: fcn.FCN8s(upsample="deconv"),
    lambda: deeplab.DeepLabV3Plus(output_stride=32),
    lambda: deeplab.DeepLabV3Plus(aspp_rates=(6, 12)),
    lambda: build_model("unet", weights="imagenet"),
    lambda: build_model("segnet", weights="imagenet"),
    lambda: build_model("unet", base_filters=0),
])
def test_bad_options_fail_early(make):
    with pytest.raises(ValueError, match="Received"):
        make()


# ----------------------------------------------------------------- FCN

@pytest.mark.parametrize("factor", [2, 8, 32])
def test_transposed_convolution_starts_as_bilinear_upsampling(factor):
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, fcn.apply_upsample(inputs, factor, name="up"))
    assert model.get_layer("up").kernel.shape == (2 * factor, 2 * factor, 3, 3)
    i, j = np.meshgrid(np.arange(5), np.arange(6), indexing="ij")
    smooth = np.stack([np.sin(0.7 * i) + np.cos(0.5 * j), i * j / 10.0, -i + 0.3 * j],
                      -1)[None].astype("float32")
    got = np.asarray(model(smooth))
    want = tf.image.resize(smooth, (5 * factor, 6 * factor), method="bilinear").numpy()
    assert got.shape == want.shape
    # At the border the transposed convolution sees zeros where resize repeats the
    # edge pixel, so only the interior must agree.
    np.testing.assert_allclose(got[:, factor:-factor, factor:-factor],
                               want[:, factor:-factor, factor:-factor], atol=1e-5)


def test_fcn_last_upsampling_is_fixed_bilinear():
    net = NETS.get("fcn8s") or build_model("fcn8s")
    last = net.get_layer("logits")
    assert isinstance(last, keras.layers.Conv2DTranspose) and not last.trainable
    assert last.strides == (8, 8)
    bilinear = fcn.BilinearUpsampling()(last.kernel.shape)
    np.testing.assert_array_equal(last.kernel, bilinear)
    # the skip scores are learned, added to the x2-upsampled coarser score
    assert net.get_layer("fuse_stride8").input[0].shape[-1] == 3
    assert net.get_layer("upsample_stride32").trainable


# ----------------------------------------------------------------- DeepLab

def test_deeplab_output_stride_16_dilates_conv5():
    net = NETS.get("deeplabv3plus") or deeplab.DeepLabV3Plus()
    assert net.output_stride == 16
    assert net.get_layer("conv4_block6_2_conv").strides == (1, 1)
    assert net.get_layer("conv4_block6_2_conv").dilation_rate == (1, 1)
    assert net.get_layer("conv5_block1_2_conv").dilation_rate == (2, 2)
    assert net.get_layer("conv3_block4_2_conv").strides == (2, 2)
    backbone = keras.Model(net.input, net.get_layer("post_relu").output)
    assert tuple(backbone(np.zeros((1, 64, 96, 3), np.uint8)).shape) == (1, 4, 6, 2048)


def test_deeplab_default_rates_and_output_stride_8():
    net = deeplab.DeepLabV3Plus(output_stride=8)
    assert net.get_config()["aspp_rates"] == [12, 24, 36]  # the paper's 6/12/18, doubled
    assert net.get_layer("aspp_rate36_conv").dilation_rate == (36, 36)
    for name, rate in (("conv3_block4_2_conv", 1), ("conv4_block1_2_conv", 2),
                       ("conv4_block6_2_conv", 2), ("conv5_block3_2_conv", 4)):
        assert net.get_layer(name).dilation_rate == (rate, rate), name
        assert net.get_layer(name).strides == (1, 1), name
    backbone = keras.Model(net.input, net.get_layer("post_relu").output)
    assert tuple(backbone(np.zeros((1, 64, 96, 3), np.uint8)).shape) == (1, 8, 12, 2048)
    net.check_input_size(72, 40)  # multiples of 8 suffice
    assert tuple(net(np.zeros((1, 40, 72, 3), np.uint8)).shape) == (1, 40, 72, 3)


# ----------------------------------------------------------------- SegNet layers

def test_max_unpooling_puts_each_maximum_back_in_place():
    x = np.array([[1, 5, 0, 2],
                  [3, 4, 7, 6],
                  [8, 10, 11, 13],
                  [9, 12, 14, 15]], "float32")
    x = np.stack([x, -x], -1)[None]  # 2 channels, the second with other maxima
    x = np.concatenate([x, x + 20])  # and a second image: indices include the batch
    values, indices = MaxPoolingWithArgmax(2)(x)
    np.testing.assert_array_equal(values[0, ..., 0], [[5, 7], [12, 15]])
    np.testing.assert_array_equal(values[0, ..., 1], [[-1, 0], [-8, -11]])
    unpooled = np.asarray(MaxUnpooling(2)([values, indices]))
    expected = np.where(x == np.repeat(np.repeat(values, 2, 1), 2, 2), x, 0)
    np.testing.assert_array_equal(unpooled, expected)


# ----------------------------------------------------------------- losses

def _logits(probabilities):
    """Logits whose softmax is exactly `probabilities` (rows summing to 1)."""
    return np.log(np.asarray(probabilities, "float32"))


def test_dice_golden_values_and_ignored_pixels():
    # 1 image of 1x2 pixels, 2 classes: pixel 1 is class 0 with p = (0.8, 0.2),
    # pixel 2 is class 1 with p = (0.4, 0.6). With smooth = 1:
    #   class 0: sum(p*t) = 0.8, sum(p) = 1.2, sum(t) = 1 -> 2.6 / 3.2 = 0.8125
    #   class 1: sum(p*t) = 0.6, sum(p) = 0.8, sum(t) = 1 -> 2.2 / 2.8 = 0.785714
    #   loss = mean(1 - 0.8125, 1 - 0.785714) = (0.1875 + 0.214286) / 2 = 0.200893
    logits = _logits([[[[0.8, 0.2], [0.4, 0.6]]]])
    y = np.array([[[0, 1]]], "uint8")
    assert float(DiceLoss()(y, logits)) == pytest.approx(0.200893, abs=1e-6)
    # With smooth = 0: (1 - 1.6 / 2.2 + 1 - 1.2 / 1.8) / 2 = (0.272727 + 0.333333) / 2
    assert float(DiceLoss(smooth=0.0)(y, logits)) == pytest.approx(0.303030, abs=1e-6)
    # A third pixel labelled 255 changes nothing, whatever its probabilities.
    logits3 = _logits([[[[0.8, 0.2], [0.4, 0.6], [0.1, 0.9]]]])
    y3 = np.array([[[0, 1, 255]]], "uint8")
    assert float(DiceLoss()(y3, logits3)) == pytest.approx(0.200893, abs=1e-6)
    # Every pixel ignored: each class scores (0 + 1) / (0 + 1) = 1, so the loss is 0.
    assert float(DiceLoss()(np.full_like(y3, 255), logits3)) == 0.0


def test_dice_sums_over_the_whole_batch_not_per_image():
    # The same two pixels as two 1x1 images: the batch-wide sums are those above, so
    # (smooth = 0) the loss is 0.303030 again. Averaging per image would give
    # image 1: (1 - 1.6/1.8 + 1 - 0/0.2) / 2 = 0.5556, image 2: (1 - 0 + 1 - 1.2/1.6)
    # / 2 = 0.625, mean 0.59.
    logits = _logits([[[[0.8, 0.2]]], [[[0.4, 0.6]]]])
    y = np.array([[[0]], [[1]]], "uint8")
    assert float(DiceLoss(smooth=0.0)(y, logits)) == pytest.approx(0.303030, abs=1e-6)


def test_dice_of_a_perfect_prediction_is_zero():
    y = np.array([[[0, 1, 2, 255]]], "uint8")
    logits = 50.0 * np.eye(3, dtype="float32")[np.minimum(y, 2)]
    assert float(DiceLoss()(y, logits)) == pytest.approx(0.0, abs=1e-6)


def test_ce_plus_dice_is_the_sum_and_all_losses_are_registered():
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(2, 8, 8, 3)).astype("float32")
    y = rng.integers(0, 3, (2, 8, 8)).astype("uint8")
    y[:, :2] = 255
    total = float(CrossEntropyDiceLoss()(y, logits))
    parts = float(make_loss("ce")(y, logits)) + float(DiceLoss()(y, logits))
    assert total == pytest.approx(parts, rel=1e-6)
    assert isinstance(make_loss("dice"), DiceLoss)
    assert isinstance(make_loss("ce+dice"), CrossEntropyDiceLoss)
    assert {"ce", "dice", "ce+dice"} <= set(LOSSES)


def test_a_net_trains_with_the_dice_loss():
    keras.utils.set_random_seed(5)
    net = build_model("unet", loss="ce+dice", base_filters=8)
    images, labels = images_and_labels(32, 32)
    net.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                loss=make_loss(net.loss_name))
    losses = [float(net.train_on_batch(images, labels)) for _ in range(5)]
    assert losses[-1] < losses[0], losses


# ----------------------------------------------------------------- atrous convolution

@pytest.mark.parametrize("height,width,rate", [
    (4, 4, 18),   # every off-centre tap beyond the map: the centre alone
    (4, 6, 5),    # rows beyond, columns partly inside
    (7, 5, 2),    # all taps partly inside
    (6, 6, 1),    # no dilation
])
def test_atrous_conv_is_tensorflows_dilated_convolution(height, width, rate):
    x = np.random.default_rng(rate).normal(size=(2, height, width, 5)).astype("float32")
    reference = keras.layers.Conv2D(4, 3, dilation_rate=rate, padding="same")
    ours = layers.AtrousConv2D(4, 3, dilation_rate=rate, padding="same")
    reference.build(x.shape)
    ours.build(x.shape)
    for a, b in zip(ours.weights, reference.weights):
        a.assign(np.random.default_rng(7).normal(size=b.shape))
        b.assign(a)
    np.testing.assert_allclose(ours(x), reference(x), rtol=1e-5, atol=1e-5)
    # also where the size is known only at run time (one graph for every size)
    dynamic = tf.function(ours, input_signature=[tf.TensorSpec((None, None, None, 5))])
    np.testing.assert_allclose(dynamic(x), reference(x), rtol=1e-5, atol=1e-5)


def test_aspp_uses_the_atrous_convolution_with_the_papers_rates():
    net = NETS.get("deeplabv3plus") or deeplab.DeepLabV3Plus()
    for rate in (6, 12, 18):
        conv = net.get_layer(f"aspp_rate{rate}_conv")
        assert isinstance(conv, layers.AtrousConv2D) and conv.dilation_rate == (rate, rate)
    with pytest.raises(ValueError, match="Received"):
        layers.AtrousConv2D(4, 3, dilation_rate=2, padding="valid")


@pytest.mark.parametrize("training", [True, False])
def test_fused_batch_norm_is_keras_batch_norm(training):
    x = np.random.default_rng(0).normal(2.0, 3.0, (4, 5, 6, 7)).astype("float32")
    ours = layers.FusedBatchNormalization(momentum=0.9, epsilon=1e-3)
    theirs = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-3)
    for layer in (ours, theirs):
        layer.build(x.shape)
    rng = np.random.default_rng(1)
    for a, b in zip(ours.weights, theirs.weights):
        b.assign(rng.uniform(0.5, 1.5, b.shape).astype("float32"))
        a.assign(b)
    for _ in range(2):  # twice: the moving averages must follow Keras' update
        np.testing.assert_allclose(ours(x, training=training),
                                   theirs(x, training=training), rtol=1e-4, atol=1e-4)
    for a, b in zip(ours.weights, theirs.weights):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    x_var = tf.Variable(x)
    grads = []
    for layer in (ours, theirs):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(x_var, training=training) ** 2 * x_var)
        grads.append(tape.gradient(loss, [x_var] + layer.trainable_weights))
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3)
