"""DeepLab v3+ on an atrous (dilated) ResNet-50 v2.

Chen et al., "Encoder-Decoder with Atrous Separable Convolution for Semantic Image
Segmentation", ECCV 2018, https://arxiv.org/abs/1802.02611 (DeepLab v3+), on the
encoder of Chen et al., "Rethinking Atrous Convolution for Semantic Image
Segmentation", 2017, https://arxiv.org/abs/1706.05587 (DeepLab v3).

The backbone is `models.backbones.resnet50_v2` at output stride 16 or 8: its last
stage(s) trade their stride for dilation and keep every layer name and weight shape of
`keras.applications.ResNet50V2`, so the ImageNet weights load into it by layer name.

Example:
    >>> net = DeepLabV3Plus(weights=None, output_stride=16)
    >>> net(np.zeros((1, 64, 96, 3), np.uint8)).shape
    TensorShape([1, 64, 96, 3])
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

from common.labels import NUM_CLASSES
from models.backbones import features, resnet50_v2
from models.fast_layers import FusedBatchNormalization
from models.layers import conv, conv_bn_relu, preprocess_for_resnet_v2, upsample
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


def apply_separable_conv_bn_relu(x, filters: int, name: str, dilation: int = 1):
    """Atrous separable convolution (DeepLab v3+, Sec. 3.1, Fig. 3): a dilated 3x3
    depthwise convolution then a 1x1 pointwise one, each with batch norm and ReLU."""
    x = layers.DepthwiseConv2D(3, padding="same", dilation_rate=dilation,
                               use_bias=False, name=f"{name}_depthwise")(x)
    x = FusedBatchNormalization(name=f"{name}_depthwise_bn")(x)
    x = layers.ReLU(name=f"{name}_depthwise_relu")(x)
    return conv_bn_relu(x, filters, 1, name=f"{name}_pointwise")


def apply_aspp(x, filters: int, rates, name: str = "aspp"):
    """Atrous Spatial Pyramid Pooling with image-level features (DeepLab v3, Sec. 3.3).

    Five parallel branches on the stride-16 (or 8) features: a 1x1 convolution, three
    3x3 convolutions dilated by `rates`, and the global average, projected by 1x1 and
    spread back over the map; concatenated and fused by a 1x1 convolution.
    """
    branches = [conv_bn_relu(x, filters, 1, name=f"{name}_1x1")]
    for rate in rates:
        branches.append(conv_bn_relu(x, filters, 3, name=f"{name}_rate{rate}",
                                     dilation_rate=rate))
    pooled = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_pool")(x)
    pooled = conv_bn_relu(pooled, filters, 1, name=f"{name}_pool_1x1")
    branches.append(ResizeLike(name=f"{name}_pool_resize")([pooled, x]))
    x = layers.Concatenate(name=f"{name}_concat")(branches)
    x = conv_bn_relu(x, filters, 1, name=f"{name}_project")
    return layers.Dropout(0.1, name=f"{name}_dropout")(x)


def apply_decoder(x, low_level, num_classes: int, upsample_factor: int,
                  name: str = "decoder"):
    """The v3+ decoder (Sec. 3.1, Fig. 2): upsample the encoder output to stride 4,
    join the stride-4 backbone features reduced to 48 channels, refine with two 3x3
    separable convolutions and score the classes; the caller upsamples x4."""
    x = upsample(x, upsample_factor, name=f"{name}_upsample")
    low_level = conv_bn_relu(low_level, 48, 1, name=f"{name}_low_level")
    x = layers.Concatenate(name=f"{name}_concat")([x, low_level])
    x = apply_separable_conv_bn_relu(x, 256, name=f"{name}_refine1")
    x = apply_separable_conv_bn_relu(x, 256, name=f"{name}_refine2")
    return conv(x, num_classes, 1, name=f"{name}_scores")


@keras.saving.register_keras_serializable(package="segmentation")
class DeepLabV3Plus(SegNet):
    """DeepLab v3+ (Chen et al. 2018, https://arxiv.org/abs/1802.02611) on ResNet-50 v2.

    Encoder: ResNet-50 v2 with atrous convolution in its last stage(s) so the features
    stay at `output_stride`, then ASPP (rates 6/12/18 at output stride 16, doubled at
    8, plus image pooling), all with batch norm. Decoder: the stride-4 features
    (`conv2_block2_out`) reduced to 48 channels join the upsampled encoder output,
    two atrous separable 3x3 convolutions refine them, a 1x1 convolution scores the
    classes and a bilinear x4 upsampling gives full-size logits.

    Differences from the paper: a ResNet-50 v2 backbone (the paper's best uses an
    aligned Xception; its ResNet-101 runs have no separable convolutions in the
    encoder) and no multi-grid rates in the last stage.

    Args:
        output_stride: 16 (default, the paper's training setting) or 8 (finer and
            about 3x the backbone cost). Input sides must be multiples of it.
        aspp_rates: the three ASPP dilation rates; default (6, 12, 18) at output
            stride 16 and (12, 24, 36) at 8, the paper's choice for 513-pixel crops.
            On small images the stride-16 map is smaller than a rate-18 kernel, whose
            outer taps then read only padding (DeepLab v3, Sec. 3.3); the ASPP's
            `AtrousConv2D` skips those taps, so such a rate costs only its centre.
    """

    architecture = "deeplabv3plus"

    def __init__(self, num_classes: int = NUM_CLASSES, weights=None, loss: str = "ce",
                 output_stride: int = 16, aspp_rates=None, **kwargs):
        if output_stride not in (8, 16):
            raise ValueError(f"output_stride must be 8 or 16. Received: {output_stride}")
        if aspp_rates is None:
            aspp_rates = [r * 16 // output_stride for r in (6, 12, 18)]
        aspp_rates = [int(r) for r in aspp_rates]
        if len(aspp_rates) != 3 or min(aspp_rates) < 1:
            raise ValueError(f"aspp_rates must be three positive integers. "
                             f"Received: {aspp_rates}")

        # === Functional model ===
        inputs = image_input()
        x = preprocess_for_resnet_v2(inputs)
        backbone = resnet50_v2(x, weights, output_stride=output_stride)
        low_level = features(backbone, strides=(4,))[0]
        x = apply_aspp(backbone.output, 256, rates=aspp_rates)
        x = apply_decoder(x, low_level, num_classes, upsample_factor=output_stride // 4)
        logits = upsample(x, 4, name="logits")
        super().__init__(inputs, logits, num_classes=num_classes, loss=loss, **kwargs)

        # === Config ===
        # Every stride of the graph divides `output_stride`: the backbone stops there
        # and the decoder upsamples by exact factors, so this is the size constraint.
        self.output_stride = output_stride
        self.aspp_rates = aspp_rates

    def get_config(self) -> dict:
        return {**super().get_config(), "output_stride": self.output_stride,
                "aspp_rates": list(self.aspp_rates)}
