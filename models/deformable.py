"""Modulated deformable convolution (Deformable ConvNets v2).

Zhu, Hu, Lin and Dai, "Deformable ConvNets v2: More Deformable, Better Results",
CVPR 2019, https://arxiv.org/abs/1811.11168, Sec. 3.1, Eq. (1):

    y(p) = sum_k  w_k * x(p + p_k + dp_k) * dm_k

A regular k x k convolution reads its input at the fixed grid of taps p_k around p. Here
every output position learns, from the input itself, a 2-D offset dp_k per tap and a
modulation dm_k in [0, 1] that weighs that tap; x at the fractional position
p + p_k + dp_k is read by bilinear interpolation (zero outside the map, as a
zero-padded convolution). The offsets and modulations come from a plain convolution of
the same kernel size, stride and dilation (3 k^2 channels) whose weights start at zero:
the layer starts as the regular convolution with every tap weighed 0.5 (sigmoid(0),
as the paper), and learns where to look.

`DeformableConv2D` is a `keras.layers.Conv2D` with that sampling in place of the fixed
grid: its kernel has a `Conv2D`'s name and shape, so a pretrained convolution's weights
load into it (the offset convolution then stays at zero). `train.py
--deformable-stages N` puts one in every 3x3 convolution of the last N stages of a
ResNet backbone (the paper uses conv3-conv5, N = 3).
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers


def deformable_conv2d(inputs, kernel, offsets, modulation, strides=(1, 1),
                      padding: str = "valid", dilation_rate=(1, 1)):
    """The sampling and weighted sum of DCNv2 (Eq. 1), without the bias.

    Args:
        inputs: (N, H, W, C) feature map.
        kernel: (kh, kw, C, F), a `Conv2D` kernel.
        offsets: (N, Ho, Wo, 2 kh kw): (dy, dx) of each tap, taps in row-major order
            (tap k = i * kw + j), in input pixels.
        modulation: (N, Ho, Wo, kh kw), the weight of each tap.
        strides, padding ("valid" or "same", as `Conv2D`), dilation_rate.

    Returns:
        (N, Ho, Wo, F). With zero offsets and a modulation of one this is
        `Conv2D`'s output (tested).
    """
    kh, kw, channels, filters = kernel.shape
    (sh, sw), (dh, dw) = strides, dilation_rate
    shape = tf.shape(inputs)
    n, height, width = shape[0], shape[1], shape[2]
    out_h, out_w = tf.shape(offsets)[1], tf.shape(offsets)[2]
    top, left = 0, 0
    if padding == "same":  # TensorFlow's split: the odd pixel of padding goes last
        top = tf.maximum((out_h - 1) * sh + (kh - 1) * dh + 1 - height, 0) // 2
        left = tf.maximum((out_w - 1) * sw + (kw - 1) * dw + 1 - width, 0) // 2
    # Where each tap reads on the regular grid: (Ho, 1, 1) + (kh, 1) -> (Ho, 1, K)
    rows = tf.range(out_h)[:, None] * sh - top + tf.range(kh)[None, :] * dh
    cols = tf.range(out_w)[:, None] * sw - left + tf.range(kw)[None, :] * dw
    grid_y = tf.reshape(tf.repeat(rows, kw, axis=1), (1, -1, 1, kh * kw))
    grid_x = tf.reshape(tf.tile(cols, (1, kh)), (1, 1, -1, kh * kw))
    offsets = tf.cast(offsets, tf.float32)
    y = tf.cast(grid_y, tf.float32) + offsets[..., 0::2]  # (N, Ho, Wo, K)
    x = tf.cast(grid_x, tf.float32) + offsets[..., 1::2]
    sampled = bilinear_sample(inputs, y, x)  # (N, Ho, Wo, K, C)
    sampled = sampled * tf.cast(modulation, inputs.dtype)[..., None]
    sampled = tf.reshape(sampled, (n, out_h, out_w, kh * kw * channels))
    weights = tf.reshape(tf.cast(kernel, inputs.dtype), (kh * kw * channels, filters))
    return tf.matmul(sampled, weights)  # taps x channels, as the kernel is laid out


def bilinear_sample(inputs, y, x):
    """`inputs` (N, H, W, C) read at fractional positions `y`, `x` (N, ...) with
    bilinear interpolation; a neighbour outside the map counts as zero.
    Returns (N, ..., C)."""
    shape = tf.shape(inputs)
    n, height, width, channels = shape[0], shape[1], shape[2], shape[3]
    flat = tf.reshape(inputs, (n, height * width, channels))
    y0, x0 = tf.floor(y), tf.floor(x)
    out = 0.0
    for dy in (0.0, 1.0):
        for dx in (0.0, 1.0):
            yc, xc = y0 + dy, x0 + dx
            weight = (1.0 - tf.abs(y - yc)) * (1.0 - tf.abs(x - xc))
            inside = ((yc >= 0) & (yc <= tf.cast(height - 1, y.dtype))
                      & (xc >= 0) & (xc <= tf.cast(width - 1, x.dtype)))
            weight = tf.where(inside, weight, 0.0)
            yi = tf.clip_by_value(tf.cast(yc, tf.int32), 0, height - 1)
            xi = tf.clip_by_value(tf.cast(xc, tf.int32), 0, width - 1)
            index = tf.reshape(yi * width + xi, (n, -1))
            values = tf.gather(flat, index, batch_dims=1)  # (N, points, C)
            values = tf.reshape(values, tf.concat([tf.shape(y), [channels]], 0))
            out = out + values * tf.cast(weight, inputs.dtype)[..., None]
    return out


@keras.saving.register_keras_serializable(package="segmentation")
class DeformableConv2D(layers.Conv2D):
    """A `Conv2D` whose taps move: modulated deformable convolution (DCNv2, Zhu et al.
    2019, https://arxiv.org/abs/1811.11168, Sec. 3.1).

    Takes `Conv2D`'s arguments (channels-last, `groups=1`). A zero-initialised
    convolution `<name>_offset` of the same kernel size, stride, padding and
    dilation predicts 3 k^2 channels per output pixel: (dy, dx) for each tap, then
    the tap's modulation logit (sigmoid: 0.5 at the start, as the paper).

    Example:
        >>> conv = DeformableConv2D(64, 3, padding="same", name="conv5_block1_2_conv")
        >>> conv(np.zeros((1, 8, 8, 32), "float32")).shape
        TensorShape([1, 8, 8, 64])
    """

    def __init__(self, filters, kernel_size, **kwargs):
        super().__init__(filters, kernel_size, **kwargs)
        if self.groups != 1 or self.data_format != "channels_last":
            raise ValueError(f"DeformableConv2D is channels-last with groups=1. "
                             f"Received: groups={self.groups}, "
                             f"data_format={self.data_format!r}")
        taps = self.kernel_size[0] * self.kernel_size[1]
        self.offset_conv = layers.Conv2D(
            3 * taps, self.kernel_size, strides=self.strides, padding=self.padding,
            dilation_rate=self.dilation_rate, kernel_initializer="zeros",
            bias_initializer="zeros", dtype=self.dtype_policy, name=f"{self.name}_offset")

    def build(self, input_shape):
        super().build(input_shape)  # kernel (and bias) first: a Conv2D's weights
        self.offset_conv.build(input_shape)

    @property
    def conv_weights(self) -> list:
        """The weights a plain `Conv2D` of this shape has (kernel, bias)."""
        return [self.kernel, self.bias] if self.use_bias else [self.kernel]

    def convolution_op(self, inputs, kernel):
        predicted = tf.cast(self.offset_conv(inputs), tf.float32)
        taps = self.kernel_size[0] * self.kernel_size[1]
        offsets, logits = predicted[..., :2 * taps], predicted[..., 2 * taps:]
        return deformable_conv2d(inputs, kernel, offsets, tf.sigmoid(logits),
                                 self.strides, self.padding, self.dilation_rate)
