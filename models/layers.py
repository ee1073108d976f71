"""Building blocks shared by the architectures in `models.nn`.

Each block is a plain function that takes a tensor and returns one, and names every
layer it makes after its `name` argument, so `model.get_layer("gcn_stride16_br")`
works as an API.
"""

from __future__ import annotations

import keras
from keras import layers


def conv(x, filters: int, kernel_size, name: str, strides=1, use_bias: bool = True,
         activation=None):
    """A 'same'-padded convolution."""
    return layers.Conv2D(filters, kernel_size, strides=strides, padding="same",
                         use_bias=use_bias, activation=activation, name=name)(x)


@keras.saving.register_keras_serializable(package="segmentation")
class FusedBatchNormalization(layers.BatchNormalization):
    """`keras.layers.BatchNormalization` whose training step runs TensorFlow's fused
    kernel (`FusedBatchNormV3`, and its fused gradient).

    Keras 3 computes batch norm unfused (moments, then element-wise arithmetic);
    forward and backward on an 8x64x64x256 batch that took about 1.75x the fused
    kernel's time on this project's CPU, and ResNet-50 v2 has ~50 of these layers.
    Same weights, same moving-average update, same outputs up to float rounding
    (tested against the Keras layer); inference, masks, renorm, float16 inputs and
    other axes use Keras' own code.

    Built under a `tf.distribute` strategy with several replicas, it defaults to
    `synchronized=True` (Keras' cross-replica statistics, so a per-replica batch of
    one or two images still normalises by the global batch), which the fused kernel
    cannot compute; Keras' own code then runs.
    """

    def __init__(self, *args, synchronized=None, **kwargs):
        if synchronized is None:
            import tensorflow as tf
            synchronized = tf.distribute.get_strategy().num_replicas_in_sync > 1
        super().__init__(*args, synchronized=synchronized, **kwargs)

    def call(self, inputs, training=None, mask=None):
        if not (training and self.trainable and mask is None and not self.renorm
                and not self.synchronized
                and inputs.dtype == "float32" and len(inputs.shape) == 4
                and self.axis in (-1, 3)):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf
        channels = inputs.shape[-1]
        gamma = self.gamma if self.scale else tf.ones(channels)
        beta = self.beta if self.center else tf.zeros(channels)
        outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            inputs, gamma, beta, epsilon=self.epsilon, is_training=True)
        # The kernel returns the variance with Bessel's correction; Keras averages
        # the plain (biased) one into its moving statistics.
        n = tf.cast(tf.reduce_prod(tf.shape(inputs)[:3]), variance.dtype)
        variance = variance * (n - 1.0) / tf.maximum(n, 1.0)
        self.moving_mean.assign(self.moving_mean * self.momentum
                                + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum
                                    + variance * (1.0 - self.momentum))
        return outputs


def conv_bn_relu(x, filters: int, kernel_size, name: str, strides=1, dilation_rate=1):
    """Convolution (no bias: batch norm adds one) -> batch norm -> ReLU. A dilated
    3x3 one is an `AtrousConv2D`."""
    if dilation_rate != 1:
        x = AtrousConv2D(filters, 3, dilation_rate=dilation_rate, padding="same",
                         use_bias=False, name=f"{name}_conv")(x)
    else:
        x = conv(x, filters, kernel_size, f"{name}_conv", strides, use_bias=False)
    x = FusedBatchNormalization(epsilon=1.001e-5, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


@keras.saving.register_keras_serializable(package="segmentation")
class AtrousConv2D(layers.Conv2D):
    """A 'same'-padded, stride-1 dilated 3x3 convolution computed as the sum of its
    taps, each a 1x1 convolution of the input shifted by the rate; taps that reach
    past the feature map, and so see only padding, are skipped.

    The result is `Conv2D(dilation_rate=r, padding="same")`'s, with the same weights,
    but the cost never exceeds the useful work: TensorFlow computes a dilated
    convolution on a zero-padded (space-to-batch) copy of the input, so on a small map
    a large rate (DeepLab's ASPP rate 18 on the 4x4 stride-16 map of a 64-pixel image)
    costs many times the convolution itself, while only the centre tap ever reads a
    pixel of the map (DeepLab v3, https://arxiv.org/abs/1706.05587, Sec. 3.3).
    """

    def __init__(self, filters, kernel_size=3, **kwargs):
        super().__init__(filters, kernel_size, **kwargs)
        if (self.kernel_size != (3, 3) or self.strides != (1, 1)
                or self.padding != "same" or self.data_format != "channels_last"):
            raise ValueError(f"AtrousConv2D is a 3x3, stride-1, 'same', channels-last "
                             f"convolution. Received: kernel_size={self.kernel_size}, "
                             f"strides={self.strides}, padding={self.padding!r}")

    def call(self, inputs):
        import tensorflow as tf
        rate_h, rate_w = self.dilation_rate
        height, width = inputs.shape[1], inputs.shape[2]
        kernel = tf.cast(self.kernel, inputs.dtype)
        padded = tf.pad(inputs, [[0, 0], [rate_h, rate_h], [rate_w, rate_w], [0, 0]])
        size = tf.shape(inputs)[1:3]
        out = None
        for i in range(3):
            if i != 1 and height is not None and rate_h >= height:
                continue  # this row of taps reads only padding
            for j in range(3):
                if j != 1 and width is not None and rate_w >= width:
                    continue
                shifted = tf.slice(padded, [0, i * rate_h, j * rate_w, 0],
                                   tf.concat([[-1], size, [-1]], 0))
                tap = tf.nn.conv2d(shifted, kernel[i:i + 1, j:j + 1], 1, "VALID")
                out = tap if out is None else out + tap
        if self.use_bias:
            out = tf.nn.bias_add(out, tf.cast(self.bias, out.dtype))
        return out if self.activation is None else self.activation(out)


def global_conv_block(x, filters: int, k: int, name: str):
    """Global Convolutional Network block (Peng et al. 2017, Sec. 3.1, Fig. 2B).

    A k x k receptive field at the cost of 2k weights per channel pair: (k x 1 then
    1 x k) + (1 x k then k x 1), summed. No non-linearity inside, as in the paper.
    """
    left = conv(x, filters, (k, 1), f"{name}_left_kx1")
    left = conv(left, filters, (1, k), f"{name}_left_1xk")
    right = conv(x, filters, (1, k), f"{name}_right_1xk")
    right = conv(right, filters, (k, 1), f"{name}_right_kx1")
    return layers.Add(name=f"{name}_sum")([left, right])


def boundary_refine_block(x, name: str):
    """Boundary Refinement block (Peng et al. 2017, Sec. 3.2, Fig. 2C).

    The residual branch is conv3x3 -> ReLU -> conv3x3, added to the input. (The article
    fed `x` to the second conv, which skipped the ReLU branch entirely.)
    """
    filters = x.shape[-1]
    r = conv(x, filters, 3, f"{name}_conv1", activation="relu")
    r = conv(r, filters, 3, f"{name}_conv2")
    return layers.Add(name=f"{name}_sum")([x, r])


@keras.saving.register_keras_serializable(package="segmentation")
class Upsample(layers.Layer):
    """Resizes by an integer factor; unlike `UpSampling2D` it also works when the
    height and width are unknown until run time (one graph for every image size)."""

    def __init__(self, factor: int = 2, interpolation: str = "bilinear", **kwargs):
        super().__init__(**kwargs)
        self.factor = int(factor)
        self.interpolation = interpolation

    def call(self, x):
        import tensorflow as tf
        size = tf.shape(x)[1:3] * self.factor
        return tf.cast(tf.image.resize(x, size, method=self.interpolation), x.dtype)

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        scale = lambda d: None if d is None else d * self.factor  # noqa: E731
        return (n, scale(h), scale(w), c)

    def get_config(self):
        return {**super().get_config(), "factor": self.factor,
                "interpolation": self.interpolation}


def upsample(x, factor: int, name: str, interpolation: str = "bilinear"):
    """Resizes by an integer factor (bilinear by default)."""
    return Upsample(factor, interpolation, name=name)(x)


def preprocess_for_resnet_v2(inputs, name: str = "preprocess"):
    """uint8 RGB [0, 255] -> float32 [-1, 1], what the ImageNet ResNet v2 weights expect.

    (The article fed raw BGR 0..255 to weights trained on RGB in [-1, 1].)
    """
    return layers.Rescaling(1.0 / 127.5, offset=-1.0, name=name)(inputs)


def image_input(name: str = "image"):
    """The model input: a batch of uint8 RGB images of any height and width."""
    return keras.Input(shape=(None, None, 3), dtype="uint8", name=name)
