"""The backbones of GCN, FCN, DeepLab v3+ and SOLO: one registry, name -> how to build
it, how it wants its pixels, and where its stride 4, 8, 16 and 32 features are.

    >>> inputs = models.nn.image_input()                       # uint8 images
    >>> net = build_backbone(inputs, "xception", weights="imagenet", output_stride=16)
    >>> net.taps[4], net.output                                # stride 4 and 16 maps

`resnet50v2` (the article's) is written out in `models.resnet50v2`; every other one is
the `keras.applications` network itself (`models.applications`): its layer names, its
ImageNet download, its weights files. Each gets its own preprocessing inside the
model (uint8 in) and supports output stride 32, 16 or 8 by dilating its last stage(s)
(`models.dilation`), which changes no weight.

A tap is the last map of its stride, where the next stage is about to downsample --
the end points DeepLab and GCN take (for ResNet v2: `conv4_block5_out`, the block
before the strided one). At output stride 16 or 8 the deeper taps keep that
resolution; their names stay.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import keras
from keras import layers

from models.applications import application_backbone
from models.backbone_weights import WeightsError, check_weights  # noqa: F401 (API)
from models.resnet50v2 import (IMAGENET_NOTOP_FILE, RESNET50V2_FEATURES,  # noqa: F401
                               RESNET50V2_STAGES, resnet50_v2)

RESNET_STAGES = ("conv2", "conv3", "conv4", "conv5")


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone.

    Attributes:
        application: the `keras.applications` function (None: `models.resnet50v2`).
        taps: {stride: layer name}, or "name:input" for the layer's input.
        output: the network's last layer.
        preprocessing: "tf" (RGB to [-1, 1]), "torch" (ImageNet mean and std) or
            "included" (the network's own first layers do it).
        weights_file: the notop file Keras downloads (named in the offline advice).
        paper: its reference.
        kwargs: more arguments of `application`.
        deformable_stages: the stages `deformable_stages=N` counts back from.
        input_padding: pixels of zeros around the image that align the strides.
    """

    name: str
    application: str | None
    taps: dict
    output: str
    preprocessing: str
    weights_file: str
    paper: str
    kwargs: dict = field(default_factory=dict)
    deformable_stages: tuple = ()
    input_padding: int = 0


def _resnet_v2(depth: int, conv3: int, conv4: int) -> BackboneSpec:
    """ResNet-101/152 v2: ResNet-50 v2's layout with more blocks in conv3 and conv4."""
    return BackboneSpec(
        f"resnet{depth}v2", f"ResNet{depth}V2",
        {4: "conv2_block2_out", 8: f"conv3_block{conv3 - 1}_out",
         16: f"conv4_block{conv4 - 1}_out", 32: "conv5_block3_out"}, "post_relu", "tf",
        f"resnet{depth}v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "He et al. 2016, arXiv:1603.05027", deformable_stages=RESNET_STAGES)


BACKBONES: dict[str, BackboneSpec] = {spec.name: spec for spec in (
    BackboneSpec("resnet50v2", None, RESNET50V2_FEATURES, "post_relu", "tf",
                 IMAGENET_NOTOP_FILE, "He et al. 2016, arXiv:1603.05027",
                 deformable_stages=RESNET_STAGES),
    _resnet_v2(101, 4, 23),
    _resnet_v2(152, 8, 36),  # the depth of the GCN paper's backbone
    # Entry-flow block 3 (Keras' numbering; the paper's block 2) before its strided
    # pooling: DeepLab v3+'s low-level features (256 channels).
    BackboneSpec("xception", "Xception",
                 {4: "block3_sepconv2_bn", 8: "block4_sepconv2_bn",
                  16: "block13_sepconv2_bn", 32: "block14_sepconv2_act"},
                 "block14_sepconv2_act", "tf",
                 "xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
                 "Chollet 2017, arXiv:1610.02357", input_padding=3),
    # The expansions that feed each strided depthwise convolution (as TensorFlow's
    # segmentation tutorial): wider than the thin block outputs.
    BackboneSpec("mobilenetv2", "MobileNetV2",
                 {4: "block_3_expand_relu", 8: "block_6_expand_relu",
                  16: "block_13_expand_relu", 32: "out_relu"}, "out_relu", "tf",
                 "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
                 "Sandler et al. 2018, arXiv:1801.04381"),
    BackboneSpec("densenet121", "DenseNet121",
                 {4: "pool2_relu", 8: "pool3_relu", 16: "pool4_relu", 32: "relu"},
                 "relu", "torch", "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
                 "Huang et al. 2017, arXiv:1608.06993"),
    # Stage outputs: the fused MBConv stages have no unstrided expansion to tap.
    BackboneSpec("efficientnetv2s", "EfficientNetV2S",
                 {4: "block2d_add", 8: "block3d_add", 16: "block5i_add",
                  32: "top_activation"}, "top_activation", "included",
                 "efficientnetv2-s_notop.h5", "Tan and Le 2021, arXiv:2104.00298"),
    # A ConvNeXt block ends in a bare `inputs + x` (an op, no layer): a stage's output
    # is read as the input of the downsampling after it, the last one as the final
    # layer norm's.
    BackboneSpec("convnext_tiny", "ConvNeXtTiny",
                 {4: "convnext_tiny_downsampling_block_0:input",
                  8: "convnext_tiny_downsampling_block_1:input",
                  16: "convnext_tiny_downsampling_block_2:input",
                  32: "convnext_tiny_layer_normalization:input"},
                 "convnext_tiny_layer_normalization", "included", "convnext_tiny_notop.h5",
                 "Liu et al. 2022, arXiv:2201.03545"),
)}
# keras.applications' DenseNet preprocessing ("torch" mode): x / 255, then ImageNet's
# channel mean and standard deviation.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class Backbone(NamedTuple):
    """A backbone built into a segmenter's graph: `taps` {4, 8, 16, 32: tensor} (the
    deeper ones at `output_stride` when it is below 32) and its last map `output`."""

    name: str
    taps: dict
    output: object


def get_spec(name: str) -> BackboneSpec:
    if name not in BACKBONES:
        raise ValueError(f"backbone must be one of {sorted(BACKBONES)}. "
                         f"Received: {name!r}")
    return BACKBONES[name]


def build_backbone(inputs, name: str = "resnet50v2", weights=None,
                   output_stride: int = 32, batch_norm: str = "fused",
                   deformable_stages: int = 0) -> Backbone:
    """Preprocessing and the backbone `name` on the uint8 image tensor `inputs`.

    Args:
        weights: "imagenet" (Keras' download), a weights file saved from the
            `keras.applications` network (`.h5` by layer name, `.weights.h5`), or None.
        output_stride: 32, 16 or 8.
        batch_norm: "fused" (`FusedBatchNormalization`, the default: TensorFlow's fused
            training kernel) or "keras" (Keras' own layer); the same weights.
        deformable_stages: ResNets: the last N stages use `DeformableConv2D`.
    """
    spec = get_spec(name)
    if output_stride not in (8, 16, 32):
        raise ValueError(f"output_stride must be 8, 16 or 32. Received: {output_stride}")
    x = preprocess(inputs, spec.preprocessing)
    if spec.input_padding:
        x = layers.ZeroPadding2D(spec.input_padding, name=f"{name}_align_pad")(x)
    if spec.application is None:
        model = resnet50_v2(x, weights, output_stride, batch_norm, deformable_stages)
        outputs = {n: model.get_layer(n).output for n in (*spec.taps.values(),
                                                          spec.output)}
    else:
        outputs = application_backbone(spec, x, weights, output_stride, batch_norm,
                                       deformable_stages)
    return Backbone(name, {s: outputs[n] for s, n in spec.taps.items()},
                    outputs[spec.output])


def preprocess(inputs, mode: str):
    """uint8 RGB [0, 255] -> what the ImageNet weights expect, as layers of the model
    (`keras.applications.<network>.preprocess_input`'s arithmetic)."""
    if mode == "tf":  # ResNet v2, Xception, MobileNetV2: [-1, 1]
        return layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocess")(inputs)
    if mode == "torch":  # DenseNet: (x / 255 - mean) / std
        x = layers.Rescaling(1.0 / 255, name="preprocess_scale")(inputs)
        return layers.Normalization(mean=IMAGENET_MEAN,
                                    variance=[s ** 2 for s in IMAGENET_STD],
                                    name="preprocess")(x)
    if mode == "included":  # EfficientNetV2, ConvNeXt: their own first layers, fed
        return layers.Rescaling(1.0, name="preprocess_float")(inputs)  # floats
    raise ValueError(f"unknown preprocessing {mode!r}")


def features(backbone: keras.Model, strides=(4, 8, 16, 32)) -> list:
    """ResNet-50 v2's outputs at the given (undilated) strides, shallowest first."""
    return [backbone.get_layer(RESNET50V2_FEATURES[s]).output for s in strides]
