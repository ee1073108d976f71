"""SegNet: a decoder that upsamples with the encoder's max-pooling indices.

Badrinarayanan, Kendall and Cipolla, "SegNet: A Deep Convolutional Encoder-Decoder
Architecture for Image Segmentation", TPAMI 2017, https://arxiv.org/abs/1511.00561
(Sec. 3, Fig. 2 and 3).

Each encoder pooling remembers where every maximum came from; the matching decoder
step puts each value back at that place and zeros elsewhere (max-unpooling), then
convolutions fill in the sparse map. Boundaries stay sharp at the cost of storing
the indices only, not whole feature maps as U-Net does.

Example:
    >>> net = SegNetArch(weights=None, base_filters=16)
    >>> net(np.zeros((1, 64, 96, 3), np.uint8)).shape
    TensorShape([1, 64, 96, 3])
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

from common.labels import NUM_CLASSES
from models.layers import conv, conv_bn_relu
from models.nn import SegNet, image_input


@keras.saving.register_keras_serializable(package="segmentation")
class MaxPoolingWithArgmax(layers.Layer):
    """`pool_size` x `pool_size` max pooling (stride = size) that also returns, for
    every output value, the flat index of the input element it came from, batch
    included (`tf.nn.max_pool_with_argmax`). Returns `(values, indices)`.

    XLA has no kernel for this op, so the layer turns off `jit_compile`."""

    def __init__(self, pool_size: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = pool_size
        self.supports_jit = False

    def call(self, x):
        values, indices = tf.nn.max_pool_with_argmax(
            x, self.pool_size, self.pool_size, padding="VALID",
            include_batch_in_index=True)
        return values, indices

    def compute_output_spec(self, x):
        p = self.pool_size
        shape = (x.shape[0], *(None if s is None else s // p for s in x.shape[1:3]),
                 x.shape[3])
        return (keras.KerasTensor(shape, dtype=x.dtype),
                keras.KerasTensor(shape, dtype="int64"))

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size}


@keras.saving.register_keras_serializable(package="segmentation")
class MaxUnpooling(layers.Layer):
    """Inverse of `MaxPoolingWithArgmax`: `MaxUnpooling()([values, indices])` writes
    each value at its remembered index in a zero map `pool_size` times larger."""

    def __init__(self, pool_size: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = pool_size

    def call(self, inputs):
        values, indices = inputs
        shape = tf.shape(values, out_type=tf.int64)
        p = self.pool_size
        out_shape = tf.stack([shape[0], shape[1] * p, shape[2] * p, shape[3]])
        flat = tf.scatter_nd(tf.reshape(indices, [-1, 1]), tf.reshape(values, [-1]),
                             tf.reduce_prod(out_shape, keepdims=True))
        return tf.reshape(flat, out_shape)

    def compute_output_shape(self, input_shape):
        shape, p = input_shape[0], self.pool_size
        return (shape[0], *(None if s is None else s * p for s in shape[1:3]),
                shape[3])

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size}


def apply_encoder_level(x, filters: int, convs: int, name: str):
    """`convs` 3x3 conv-BN-ReLU, then 2x2 max pooling that keeps its indices."""
    for i in range(1, convs + 1):
        x = conv_bn_relu(x, filters, 3, name=f"{name}_{i}")
    return MaxPoolingWithArgmax(2, name=f"{name}_pool")(x)


def apply_decoder_level(x, indices, filters: int, out_filters: int, convs: int,
                        name: str):
    """Max-unpooling with the encoder's indices, then `convs` 3x3 conv-BN-ReLU; the
    last one changes the channels to the next (shallower) level's `out_filters`."""
    x = MaxUnpooling(2, name=f"{name}_unpool")([x, indices])
    for i in range(1, convs + 1):
        x = conv_bn_relu(x, out_filters if i == convs else filters, 3,
                         name=f"{name}_{i}")
    return x


@keras.saving.register_keras_serializable(package="segmentation")
class SegNetArch(SegNet):
    """SegNet (Badrinarayanan et al. 2017, https://arxiv.org/abs/1511.00561), CPU-sized.

    (Named `SegNetArch` because `SegNet` is the base class of every architecture.)
    Encoder: `depth` levels of `convs_per_level` 3x3 conv-BN-ReLU and 2x2 max pooling
    that keeps its argmax, channels doubling from `base_filters`. Decoder: the mirror
    image, each level max-unpooling with the indices of its encoder level; a 1x1
    convolution gives the logits.

    Differences from the paper: 4 levels of 2 convolutions from 16 channels instead of
    VGG-16's 13 convolutions (5 levels, 64 to 512 channels), and no ImageNet
    initialisation of the encoder: it always starts from random weights.

    Args:
        weights: must be None (a ValueError says so otherwise).
        base_filters: channels of the first level; level i has base_filters * 2**i.
        depth: number of poolings; input sides must be multiples of 2**depth.
        convs_per_level: 3x3 convolutions in each encoder and decoder level.
    """

    architecture = "segnet"
    pretrained_backbone = False  # scripts: train from scratch, weights=None

    def __init__(self, num_classes: int = NUM_CLASSES, weights=None, loss: str = "ce",
                 base_filters: int = 16, depth: int = 4, convs_per_level: int = 2,
                 **kwargs):
        if weights is not None:
            raise ValueError(f"segnet has no pretrained backbone; it trains from "
                             f"random weights. Pass --weights none. Received: "
                             f"{weights!r}")
        if min(base_filters, depth, convs_per_level) < 1:
            raise ValueError(f"base_filters, depth and convs_per_level must be "
                             f"positive. Received: {base_filters}, {depth}, "
                             f"{convs_per_level}")

        # === Functional model ===
        inputs = image_input()
        x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocess")(inputs)
        indices = []
        for level in range(depth):
            x, argmax = apply_encoder_level(x, base_filters * 2 ** level,
                                            convs_per_level, name=f"encoder{level + 1}")
            indices.append(argmax)
        for level in reversed(range(depth)):
            x = apply_decoder_level(x, indices[level], base_filters * 2 ** level,
                                    base_filters * 2 ** max(level - 1, 0),
                                    convs_per_level, name=f"decoder{level + 1}")
        logits = conv(x, num_classes, 1, name="logits")
        super().__init__(inputs, logits, num_classes=num_classes, loss=loss, **kwargs)

        # === Config ===
        self.base_filters = base_filters
        self.depth = depth
        self.convs_per_level = convs_per_level
        self.output_stride = 2 ** depth

    def get_config(self) -> dict:
        return {**super().get_config(), "base_filters": self.base_filters,
                "depth": self.depth, "convs_per_level": self.convs_per_level}
