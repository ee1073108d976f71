"""Layers that exist only for speed: each computes what a Keras layer computes (tested
against it), faster on this project's hardware.

* `FusedBatchNormalization`: Keras' batch norm, trained with TensorFlow's fused kernel.
* `AtrousConv2D`: a dilated 3x3 convolution that skips the taps which read only
  padding, so a large rate on a small map costs no more than its real work.

A learner can read every model as if these were `keras.layers.BatchNormalization`
and `keras.layers.Conv2D(dilation_rate=r)`. `batch_norm_class("keras")` gives the Keras
layer itself: the architectures' `batch_norm` argument (`train.py --batch-norm`) builds
their backbone with either, to measure what the fused kernel buys.
"""

from __future__ import annotations

import keras
from keras import layers


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


BATCH_NORMS = ("fused", "keras")


def batch_norm_class(kind: str = "fused") -> type:
    """`FusedBatchNormalization` ("fused", the default everywhere) or Keras' own
    `BatchNormalization` ("keras"): the same weights and outputs, two kernels."""
    if kind not in BATCH_NORMS:
        raise ValueError(f"batch_norm must be one of {BATCH_NORMS}. Received: {kind!r}")
    return FusedBatchNormalization if kind == "fused" else layers.BatchNormalization


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
