"""U-Net: a contracting and an expanding path joined by concatenated skips.

Ronneberger, Fischer and Brox, "U-Net: Convolutional Networks for Biomedical Image
Segmentation", MICCAI 2015, https://arxiv.org/abs/1505.04597 (Sec. 2, Fig. 1).

Example:
    >>> net = UNet(weights=None, base_filters=16)
    >>> net(np.zeros((1, 64, 96, 3), np.uint8)).shape
    TensorShape([1, 64, 96, 3])
"""

from __future__ import annotations

import keras
from keras import layers

from common.labels import NUM_CLASSES
from models.layers import conv, conv_bn_relu
from models.nn import SegNet, image_input


def apply_double_conv(x, filters: int, name: str):
    """Two 3x3 convolutions, each with batch norm and ReLU: one U-Net level."""
    x = conv_bn_relu(x, filters, 3, name=f"{name}_1")
    return conv_bn_relu(x, filters, 3, name=f"{name}_2")


def apply_up_block(x, skip, filters: int, name: str):
    """Expanding step: a 2x2 up-convolution (transposed, stride 2) that halves the
    channels, concatenation with the contracting path's map of the same size, and two
    3x3 convolutions."""
    x = layers.Conv2DTranspose(filters, 2, strides=2, name=f"{name}_upconv")(x)
    x = layers.Concatenate(name=f"{name}_concat")([skip, x])
    return apply_double_conv(x, filters, name=f"{name}_conv")


@keras.saving.register_keras_serializable(package="segmentation")
class UNet(SegNet):
    """U-Net (Ronneberger et al. 2015, https://arxiv.org/abs/1505.04597), CPU-sized.

    `depth` contracting steps (two 3x3 convolutions, then 2x2 max pooling, doubling
    the channels from `base_filters`), a bottom level, and `depth` expanding steps
    (2x2 up-convolution, concatenation with the skip, two 3x3 convolutions); a 1x1
    convolution gives the logits.

    Differences from the paper: 'same' padding, so the output has the input's size
    and no cropping is needed (the paper's unpadded convolutions shrink the map and
    crop the skips); batch norm after every convolution (the paper has none);
    `base_filters` 16 instead of 64 so it trains on a CPU. There is no pretrained
    encoder: it always starts from random weights.

    Args:
        weights: must be None (a ValueError says so otherwise).
        base_filters: channels of the first level; level i has base_filters * 2**i.
        depth: number of poolings; input sides must be multiples of 2**depth.
    """

    architecture = "unet"
    pretrained_backbone = False  # scripts: train from scratch, weights=None

    def __init__(self, num_classes: int = NUM_CLASSES, weights=None, loss: str = "ce",
                 base_filters: int = 16, depth: int = 4, **kwargs):
        if weights is not None:
            raise ValueError(f"unet has no pretrained backbone; it trains from random "
                             f"weights. Pass --weights none. Received: {weights!r}")
        if base_filters < 1 or depth < 1:
            raise ValueError(f"base_filters and depth must be positive. Received: "
                             f"base_filters={base_filters}, depth={depth}")

        # === Functional model ===
        inputs = image_input()
        x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocess")(inputs)
        skips = []
        for level in range(depth):
            x = apply_double_conv(x, base_filters * 2 ** level, name=f"down{level + 1}")
            skips.append(x)
            x = layers.MaxPooling2D(2, name=f"down{level + 1}_pool")(x)
        x = apply_double_conv(x, base_filters * 2 ** depth, name="bottom")
        for level in reversed(range(depth)):
            x = apply_up_block(x, skips[level], base_filters * 2 ** level,
                               name=f"up{level + 1}")
        logits = conv(x, num_classes, 1, name="logits")
        super().__init__(inputs, logits, num_classes=num_classes, loss=loss, **kwargs)

        # === Config ===
        self.base_filters = base_filters
        self.depth = depth
        self.output_stride = 2 ** depth

    def get_config(self) -> dict:
        return {**super().get_config(), "base_filters": self.base_filters,
                "depth": self.depth}
