"""DeepLab v3+ on an atrous (dilated) backbone: ResNet-50 v2 by default, Xception as
the paper builds it.

Chen et al., "Encoder-Decoder with Atrous Separable Convolution for Semantic Image
Segmentation", ECCV 2018, https://arxiv.org/abs/1802.02611 (DeepLab v3+), on the
encoder of Chen et al., "Rethinking Atrous Convolution for Semantic Image
Segmentation", 2017, https://arxiv.org/abs/1706.05587 (DeepLab v3).

The backbone (`models.backbones`) runs at output stride 16 or 8: its last stage(s)
trade their stride for dilation and keep every layer name and weight shape of the
`keras.applications` network, so its ImageNet weights load unchanged. With
`backbone="xception"` the model is the paper's (Sec. 3.2-3.3): Xception at output
stride 16 and atrous separable convolutions in the ASPP as in the decoder
(`separable`, on by default for Xception only).

Example:
    >>> net = DeepLabV3Plus(weights=None, output_stride=16)
    >>> net(np.zeros((1, 64, 96, 3), np.uint8)).shape
    TensorShape([1, 64, 96, 3])
    >>> DeepLabV3Plus(backbone="xception").get_layer("aspp_rate6_depthwise")
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

from common.labels import NUM_CLASSES
from models.backbones import build_backbone
from models.fast_layers import batch_norm_class
from models.layers import conv, conv_bn_relu, upsample
from models.nn import SegNet, image_input

# ----------------------------------------------------------------------- head

@keras.saving.register_keras_serializable(package="segmentation")
class ResizeLike(layers.Layer):
    """Bilinear resize of `x` to the height and width of `reference`, which may be
    known only at run time: `ResizeLike()([x, reference])`."""

    def call(self, inputs):
        x, reference = inputs
        return tf.image.resize(x, tf.shape(reference)[1:3], method="bilinear")

    def compute_output_shape(self, input_shape):
        x_shape, ref_shape = input_shape
        return (x_shape[0], ref_shape[1], ref_shape[2], x_shape[3])


def apply_separable_conv_bn_relu(x, filters: int, name: str, dilation: int = 1,
                                 batch_norm: str = "fused"):
    """Atrous separable convolution (DeepLab v3+, Sec. 3.1, Fig. 3): a dilated 3x3
    depthwise convolution then a 1x1 pointwise one, each with batch norm and ReLU
    (Sec. 3.2: "extra batch normalization and ReLU activation are added after each
    3 x 3 depthwise convolution")."""
    x = layers.DepthwiseConv2D(3, padding="same", dilation_rate=dilation,
                               use_bias=False, name=f"{name}_depthwise")(x)
    x = batch_norm_class(batch_norm)(name=f"{name}_depthwise_bn")(x)
    x = layers.ReLU(name=f"{name}_depthwise_relu")(x)
    return conv_bn_relu(x, filters, 1, name=f"{name}_pointwise", batch_norm=batch_norm)


def apply_aspp(x, filters: int, rates, name: str = "aspp", separable: bool = False,
               batch_norm: str = "fused"):
    """Atrous Spatial Pyramid Pooling with image-level features (DeepLab v3, Sec. 3.3).

    Five parallel branches on the stride-16 (or 8) features: a 1x1 convolution, three
    3x3 convolutions dilated by `rates` (`separable`: atrous separable ones, DeepLab
    v3+ Sec. 3.1), and the global average, projected by 1x1 and spread back over the
    map; concatenated and fused by a 1x1 convolution.
    """
    bn = {"batch_norm": batch_norm}
    branches = [conv_bn_relu(x, filters, 1, name=f"{name}_1x1", **bn)]
    for rate in rates:
        if separable:
            branches.append(apply_separable_conv_bn_relu(
                x, filters, name=f"{name}_rate{rate}", dilation=rate, **bn))
        else:
            branches.append(conv_bn_relu(x, filters, 3, name=f"{name}_rate{rate}",
                                         dilation_rate=rate, **bn))
    pooled = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_pool")(x)
    pooled = conv_bn_relu(pooled, filters, 1, name=f"{name}_pool_1x1", **bn)
    branches.append(ResizeLike(name=f"{name}_pool_resize")([pooled, x]))
    x = layers.Concatenate(name=f"{name}_concat")(branches)
    x = conv_bn_relu(x, filters, 1, name=f"{name}_project", **bn)
    return layers.Dropout(0.1, name=f"{name}_dropout")(x)


def apply_decoder(x, low_level, num_classes: int, upsample_factor: int,
                  name: str = "decoder", batch_norm: str = "fused"):
    """The v3+ decoder (Sec. 3.1, Fig. 2): upsample the encoder output to stride 4,
    join the stride-4 backbone features reduced to 48 channels, refine with two 3x3
    separable convolutions and score the classes; the caller upsamples x4."""
    x = upsample(x, upsample_factor, name=f"{name}_upsample")
    low_level = conv_bn_relu(low_level, 48, 1, name=f"{name}_low_level",
                             batch_norm=batch_norm)
    x = layers.Concatenate(name=f"{name}_concat")([x, low_level])
    for i in (1, 2):
        x = apply_separable_conv_bn_relu(x, 256, name=f"{name}_refine{i}",
                                         batch_norm=batch_norm)
    return conv(x, num_classes, 1, name=f"{name}_scores")


@keras.saving.register_keras_serializable(package="segmentation")
class DeepLabV3Plus(SegNet):
    """DeepLab v3+ (Chen et al. 2018, https://arxiv.org/abs/1802.02611).

    Encoder: the backbone (ResNet-50 v2 by default) with atrous convolution in its
    last stage(s) so the features stay at `output_stride`, then ASPP (rates 6/12/18
    at output stride 16, doubled at 8, plus image pooling), all with batch norm.
    Decoder: the stride-4 features (`conv2_block2_out`; Xception's
    `block3_sepconv2_bn`) reduced to 48 channels join the upsampled encoder output,
    two atrous separable 3x3 convolutions refine them, a 1x1 convolution scores the
    classes and a bilinear x4 upsampling gives full-size logits.

    `backbone="xception"` is the paper's model (Sec. 3.2-3.3): Xception at output
    stride 16, atrous separable convolutions in ASPP and decoder. Its Xception is
    Keras' (Chollet's original), not the paper's modified aligned Xception: 8 middle
    blocks (paper 16), max pooling where the paper strides a separable convolution,
    no batch norm + ReLU after each depthwise convolution, and ImageNet weights of
    Keras (docs/models.md lists the differences). On ResNet-50 v2 (the default), the
    ASPP convolutions are plain atrous ones (the paper's ResNet-101 runs) and there
    are no multi-grid rates in the last stage.

    Args:
        output_stride: 16 (default, the paper's training setting) or 8 (finer and
            about 3x the backbone cost). Input sides must be multiples of it.
        aspp_rates: the three ASPP dilation rates; default (6, 12, 18) at output
            stride 16 and (12, 24, 36) at 8, the paper's choice for 513-pixel crops.
            On small images the stride-16 map is smaller than a rate-18 kernel, whose
            outer taps then read only padding (DeepLab v3, Sec. 3.3); the ASPP's
            `AtrousConv2D` skips those taps, so such a rate costs only its centre.
        separable: atrous separable ASPP convolutions (depthwise dilated 3x3, batch
            norm, ReLU, pointwise 1x1); None (default): on for Xception, off for the
            other backbones. The decoder's are separable always.
        backbone, batch_norm, deformable_stages: as `models.gcn.GCN`; `batch_norm`
            also sets the ASPP's and decoder's.
    """

    architecture = "deeplabv3plus"

    def __init__(self, num_classes: int = NUM_CLASSES, weights=None, loss: str = "ce",
                 output_stride: int = 16, aspp_rates=None, separable: bool | None = None,
                 backbone: str = "resnet50v2", batch_norm: str = "fused",
                 deformable_stages: int = 0, **kwargs):
        if output_stride not in (8, 16):
            raise ValueError(f"output_stride must be 8 or 16. Received: {output_stride}")
        if aspp_rates is None:
            aspp_rates = [r * 16 // output_stride for r in (6, 12, 18)]
        aspp_rates = [int(r) for r in aspp_rates]
        if len(aspp_rates) != 3 or min(aspp_rates) < 1:
            raise ValueError(f"aspp_rates must be three positive integers. "
                             f"Received: {aspp_rates}")
        if separable is None:  # the paper's choice for its backbone
            separable = backbone == "xception"

        # === Functional model ===
        inputs = image_input()
        net = build_backbone(inputs, backbone, weights, output_stride, batch_norm,
                             deformable_stages)
        x = apply_aspp(net.output, 256, rates=aspp_rates, separable=bool(separable),
                       batch_norm=batch_norm)
        x = apply_decoder(x, net.taps[4], num_classes,
                          upsample_factor=output_stride // 4, batch_norm=batch_norm)
        logits = upsample(x, 4, name="logits")
        super().__init__(inputs, logits, num_classes=num_classes, loss=loss, **kwargs)

        # === Config ===
        # Every stride of the graph divides `output_stride`: the backbone stops there
        # and the decoder upsamples by exact factors, so this is the size constraint.
        self.output_stride = output_stride
        self.aspp_rates = aspp_rates
        self.separable = bool(separable)
        self.backbone = backbone
        self.batch_norm = batch_norm
        self.deformable_stages = deformable_stages

    def get_config(self) -> dict:
        return {**super().get_config(), "output_stride": self.output_stride,
                "aspp_rates": list(self.aspp_rates), "separable": self.separable,
                "backbone": self.backbone, "batch_norm": self.batch_norm,
                "deformable_stages": self.deformable_stages}
