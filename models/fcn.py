"""Fully Convolutional Networks: FCN-32s, FCN-16s and FCN-8s on ResNet-50 v2 (or any
backbone of `models.backbones`).

Long, Shelhamer and Darrell, "Fully Convolutional Networks for Semantic Segmentation",
CVPR 2015, https://arxiv.org/abs/1411.4038 (Sec. 4.2, Fig. 3).

A 1x1 convolution scores the classes on the stride-32 features (FCN-32s). FCN-16s
adds a score of the stride-16 features to the x2-upsampled stride-32 score; FCN-8s
does the same once more with the stride-8 features. The fused score is upsampled to
the input size.

Upsampling is a transposed convolution initialised to bilinear interpolation, with a
kernel of twice the stride: a kernel size divisible by the stride spreads every input
pixel evenly, which avoids the checkerboard artefacts of uneven overlap (Odena et al.,
"Deconvolution and Checkerboard Artifacts", Distill 2016). `upsample="resize"`
replaces each learned transposed convolution by bilinear resizing then a 3x3
convolution, the fix that article recommends.

Example:
    >>> net = FCN8s(weights=None)
    >>> net(np.zeros((1, 64, 96, 3), np.uint8)).shape
    TensorShape([1, 64, 96, 3])
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from common.labels import NUM_CLASSES
from models.backbones import build_backbone
from models.layers import conv, upsample
from models.nn import SegNet, image_input

UPSAMPLE_MODES = ("transpose", "resize")


@keras.saving.register_keras_serializable(package="segmentation")
class BilinearUpsampling(keras.initializers.Initializer):
    """Initialises a (2f, 2f, C, C) transposed-convolution kernel (stride f, 'same'
    padding) to bilinear upsampling by f, channel by channel (FCN, Sec. 3.3).

    Tap k of the 1-D filter weighs `1 - |k - (f - 0.5)| / f`: with 'same' padding the
    output matches half-pixel bilinear resizing (`tf.image.resize`) away from the
    borders, where the transposed convolution sees zeros instead of edge pixels.
    """

    def __call__(self, shape, dtype=None):
        size, _, out_channels, in_channels = shape
        if size != shape[1] or size % 2 or out_channels != in_channels:
            raise ValueError(f"bilinear upsampling needs a (2f, 2f, C, C) kernel. "
                             f"Received: {shape}")
        factor = size // 2
        taps = 1 - np.abs(np.arange(size) - (factor - 0.5)) / factor
        kernel = np.zeros(shape, "float32")
        for c in range(in_channels):
            kernel[:, :, c, c] = np.outer(taps, taps)
        return keras.ops.convert_to_tensor(kernel, dtype=dtype)


def apply_upsample(x, factor: int, name: str, mode: str = "transpose",
                   trainable: bool = True):
    """x `factor` upsampling of a score map.

    "transpose": a transposed convolution, kernel 2 x factor, stride factor, started
    at bilinear interpolation. "resize": bilinear resize then a 3x3 convolution when
    `trainable` (resize only when not, as a fixed transposed convolution would be).
    """
    if mode == "transpose":
        return layers.Conv2DTranspose(
            x.shape[-1], 2 * factor, strides=factor, padding="same", use_bias=False,
            kernel_initializer=BilinearUpsampling(), trainable=trainable, name=name)(x)
    if not trainable:
        return upsample(x, factor, name=name)
    x = upsample(x, factor, name=f"{name}_resize")
    return conv(x, x.shape[-1], 3, name=name)


def apply_score(x, num_classes: int, name: str, zero_init: bool = False):
    """The 1x1 convolution scoring the classes; a skip's starts at zero (FCN, Sec. 4.2)
    so adding it leaves the coarser prediction unchanged at first."""
    initializer = "zeros" if zero_init else "glorot_uniform"
    return layers.Conv2D(num_classes, 1, kernel_initializer=initializer,
                         name=name)(x)


class FCN(SegNet):
    """FCN on ResNet-50 v2 (Long et al. 2015, https://arxiv.org/abs/1411.4038).

    The paper's VGG-16 "pool3 / pool4 / conv7" become the ResNet-50 v2 features at
    strides 8 / 16 / 32 (`conv3_block3_out`, `conv4_block5_out`, `post_relu`; another
    backbone's stride 8 and 16 taps and its last layer). As in
    the paper, the skip score layers start at zero, the x2 upsamplings are learned
    from bilinear, and the last upsampling to the input size stays fixed bilinear.
    Subclasses set `skip_strides`: () for 32s, (16,) for 16s, (16, 8) for 8s.

    Args:
        upsample: "transpose" (default, the paper) or "resize" (resize-convolution).
        num_classes, weights, loss, backbone, batch_norm, deformable_stages,
            **kwargs: as `models.gcn.GCN`.
    """

    skip_strides: tuple = ()

    def __init__(self, num_classes: int = NUM_CLASSES, weights=None, loss: str = "ce",
                 upsample: str = "transpose", backbone: str = "resnet50v2",
                 batch_norm: str = "fused", deformable_stages: int = 0, **kwargs):
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"upsample must be one of {UPSAMPLE_MODES}. "
                             f"Received: {upsample!r}")

        # === Functional model ===
        inputs = image_input()
        net = build_backbone(inputs, backbone, weights, batch_norm=batch_norm,
                             deformable_stages=deformable_stages)
        score = apply_score(net.output, num_classes, name="score_stride32")
        stride = 32
        for skip_stride in self.skip_strides:
            score = apply_upsample(score, 2, f"upsample_stride{stride}", upsample)
            skip = apply_score(net.taps[skip_stride], num_classes, name=f"score_stride{skip_stride}",
                               zero_init=True)
            score = layers.Add(name=f"fuse_stride{skip_stride}")([score, skip])
            stride = skip_stride
        logits = apply_upsample(score, stride, "logits", upsample, trainable=False)
        super().__init__(inputs, logits, num_classes=num_classes, loss=loss, **kwargs)

        # === Config ===
        self.upsample = upsample
        self.backbone = backbone
        self.batch_norm = batch_norm
        self.deformable_stages = deformable_stages

    def get_config(self) -> dict:
        return {**super().get_config(), "upsample": self.upsample,
                "backbone": self.backbone, "batch_norm": self.batch_norm,
                "deformable_stages": self.deformable_stages}


@keras.saving.register_keras_serializable(package="segmentation")
class FCN32s(FCN):
    """FCN-32s: the stride-32 score upsampled x32 (Long et al. 2015, Sec. 4.1)."""

    architecture = "fcn32s"


@keras.saving.register_keras_serializable(package="segmentation")
class FCN16s(FCN):
    """FCN-16s: stride-32 and stride-16 scores fused, upsampled x16 (Sec. 4.2)."""

    architecture = "fcn16s"

    skip_strides = (16,)


@keras.saving.register_keras_serializable(package="segmentation")
class FCN8s(FCN):
    """FCN-8s: stride-32, 16 and 8 scores fused, upsampled x8 (Sec. 4.2)."""

    architecture = "fcn8s"

    skip_strides = (16, 8)
