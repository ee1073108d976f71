"""Small building blocks every architecture uses.

Each block is a plain function that takes a tensor and returns one, and names every
layer it makes after its `name` argument, so `model.get_layer("gcn_stride16_br_conv1")`
works as an API. Blocks of one architecture live beside it (GCN's in `models.gcn`,
ASPP in `models.deeplab`, ...); layers that exist only for speed in
`models.fast_layers`; the deformable convolution (a new op) in `models.deformable`.
Their layers are importable from here too.
"""

from __future__ import annotations

import keras
from keras import layers

from models.deformable import DeformableConv2D  # noqa: F401 (models.layers' API)
from models.fast_layers import (AtrousConv2D, FusedBatchNormalization,  # noqa: F401
                                batch_norm_class)


def conv(x, filters: int, kernel_size, name: str, strides=1, use_bias: bool = True,
         activation=None):
    """A 'same'-padded convolution."""
    return layers.Conv2D(filters, kernel_size, strides=strides, padding="same",
                         use_bias=use_bias, activation=activation, name=name)(x)


def conv_bn_relu(x, filters: int, kernel_size, name: str, strides=1, dilation_rate=1,
                 batch_norm: str = "fused"):
    """Convolution (no bias: batch norm adds one) -> batch norm ("fused" or "keras",
    `models.fast_layers`) -> ReLU. A dilated 3x3 one is an `AtrousConv2D`."""
    if dilation_rate != 1:
        x = AtrousConv2D(filters, 3, dilation_rate=dilation_rate, padding="same",
                         use_bias=False, name=f"{name}_conv")(x)
    else:
        x = conv(x, filters, kernel_size, f"{name}_conv", strides, use_bias=False)
    x = batch_norm_class(batch_norm)(epsilon=1.001e-5, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


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

    (The article fed raw BGR 0..255 to weights trained on RGB in [-1, 1].) Each backbone's
    own preprocessing is `models.backbones.preprocess`.
    """
    return layers.Rescaling(1.0 / 127.5, offset=-1.0, name=name)(inputs)

