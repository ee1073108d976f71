"""The parts SOLO is built from: a small CPU backbone, the feature pyramid, the head
towers shared by every level, and CoordConv's coordinate channels.

Wang et al., "SOLO: Segmenting Objects by Locations", ECCV 2020,
https://arxiv.org/abs/1912.04488 (Sec. 3.2, Fig. 3); `models.solo` puts them together.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

from models.layers import conv, conv_bn_relu, upsample


@keras.saving.register_keras_serializable(package="segmentation")
class CoordinateChannels(layers.Layer):
    """Appends two channels, the x and y pixel coordinates scaled to [-1, 1].

    CoordConv (Liu et al., "An Intriguing Failing of Convolutional Neural Networks and
    the CoordConv Solution", NeurIPS 2018, https://arxiv.org/abs/1807.03247): a
    convolution is translation invariant, but SOLO's mask channel k must paint the
    object at cell k's place, so the mask branch needs to know where it is (SOLO
    Sec. 3.1.2)."""

    def call(self, x):
        shape = tf.shape(x)
        ys = tf.linspace(-1.0, 1.0, shape[1])
        xs = tf.linspace(-1.0, 1.0, shape[2])
        yy, xx = tf.meshgrid(ys, xs, indexing="ij")
        coords = tf.broadcast_to(tf.stack([xx, yy], axis=-1)[None],
                                 tf.concat([shape[:3], [2]], 0))
        return tf.concat([x, tf.cast(coords, x.dtype)], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:3], input_shape[3] + 2)


def small_backbone(x, filters=(16, 32, 64, 128)) -> list:
    """A 4-stage conv net for the CPU demo: features at strides 4, 8, 16, 32.

    A stride-2 stem, then per stage a stride-2 3x3 and a 3x3 convolution, each with
    batch norm and ReLU; stage n (C2..C5) has `filters[n - 2]` channels."""
    x = conv_bn_relu(x, filters[0], 3, name="small_stem", strides=2)
    feats = []
    for level, f in enumerate(filters, start=2):
        x = conv_bn_relu(x, f, 3, name=f"small_c{level}_1", strides=2)
        x = conv_bn_relu(x, f, 3, name=f"small_c{level}_2")
        feats.append(x)
    return feats


def apply_fpn(feats, width: int, num_outputs: int) -> list:
    """Feature Pyramid Network (Lin et al., CVPR 2017, https://arxiv.org/abs/1612.03144,
    Sec. 3): a 1x1 lateral convolution per level C2..C5, a top-down path (x2 nearest
    upsampling, added to the next finer lateral), then a 3x3 convolution for each of
    the `num_outputs` finest levels, P2 first."""
    laterals = [conv(f, width, 1, name=f"fpn_lateral_c{n}")
                for n, f in enumerate(feats, start=2)]
    merged = [laterals[-1]]
    for n in range(len(feats), 1, -1):  # from C5's level down to P2
        up = upsample(merged[0], 2, name=f"fpn_p{n + 1}_up", interpolation="nearest")
        merged.insert(0, layers.Add(name=f"fpn_p{n}_sum")([laterals[n - 2], up]))
    return [conv(m, width, 3, name=f"fpn_p{n}")
            for n, m in enumerate(merged[:num_outputs], start=2)]


def make_tower(prefix: str, width: int, depth: int, groups: int) -> list:
    """The layers of a head tower, shared by every level (Sec. 3.2): `depth` times a
    3x3 convolution, group norm (the paper's GN) and ReLU."""
    tower = []
    for d in range(1, depth + 1):
        tower += [layers.Conv2D(width, 3, padding="same", use_bias=False,
                                name=f"{prefix}_conv{d}"),
                  layers.GroupNormalization(groups, name=f"{prefix}_gn{d}"),
                  layers.ReLU(name=f"{prefix}_relu{d}")]
    return tower


def apply_layers(x, tower: list):
    """`x` through the layers of `tower` in order."""
    for layer in tower:
        x = layer(x)
    return x
