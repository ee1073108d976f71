"""A peer to measure against, when keras-hub is installed (it is not a requirement):
keras-hub's DeepLabV3+ with a ResNet-50 v2 encoder (random weights), its ASPP on the
stride-32 features, compiled like ours (SGD with momentum, cross-entropy that skips
the ignore label, the same two metrics)."""

from __future__ import annotations

import importlib.util

import keras

from common.labels import IGNORE_LABEL, NUM_CLASSES
from models.metrics import make_metrics


def available() -> bool:
    return importlib.util.find_spec("keras_hub") is not None


def keras_hub_deeplab(jit_compile="auto") -> keras.Model:
    import keras_hub
    encoder = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7],
        stackwise_num_filters=[64, 128, 256, 512], stackwise_num_blocks=[3, 4, 6, 3],
        stackwise_num_strides=[1, 2, 2, 2], block_type="bottleneck_block",
        use_pre_activation=True)
    backbone = keras_hub.models.DeepLabV3Backbone(
        image_encoder=encoder, low_level_feature_key="P2",
        spatial_pyramid_pooling_key="P5", dilation_rates=[6, 12, 18], upsampling_size=8)
    model = keras_hub.models.DeepLabV3ImageSegmenter(backbone=backbone,
                                                     num_classes=NUM_CLASSES)
    model.compile(optimizer=keras.optimizers.SGD(1e-3, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(
                      from_logits=True, ignore_class=IGNORE_LABEL),
                  metrics=make_metrics(NUM_CLASSES), jit_compile=jit_compile)
    return model
