"""GCN, the article's model: Global Convolutional Network on ResNet-50 v2.

Peng et al., "Large Kernel Matters -- Improve Semantic Segmentation by Global
Convolutional Network", CVPR 2017, https://arxiv.org/abs/1703.02719 (Sec. 3, Fig. 2).

Example:
    >>> net = GCN(weights=None, input_size=64)
    >>> net.model(np.zeros((2, 64, 96, 3), np.uint8)).shape
    TensorShape([2, 64, 96, 3])
"""

from __future__ import annotations

import keras

from learning.labels import NUM_CLASSES
from models.backbones import features, resnet50_v2
from models.layers import (boundary_refine_block, conv, global_conv_block,
                           preprocess_for_resnet_v2, upsample)
from models.nn import SegNet


@keras.saving.register_keras_serializable(package="segmentation")
class GCN(SegNet):
    """Global Convolutional Network on ResNet-50 v2 (the article's model).

    Each of the stride 4, 8, 16, 32 features goes through a GCN block (C channels,
    C = num_classes) and a BR block; from the coarsest level down, the map is
    upsampled x2, added to the next level and refined by BR; two more BR + x2 steps
    reach full size; a 1x1 convolution gives the logits (Fig. 2A).

    Args:
        num_classes: classes including background.
        weights: backbone weights ("imagenet", a local file, or None).
        loss: loss name ("ce", "dice", "ce+dice").
        input_size: the training image side; sets the default `k`.
        k: GCN kernel size; default `input_size // 32 - 1` (15 at 512), as the article.
    """

    architecture = "gcn"

    def __init__(self, num_classes: int = NUM_CLASSES, weights=None, loss: str = "ce",
                 input_size: int = 512, k: int | None = None):
        if k is None:
            k = max(1, input_size // 32 - 1)
        if k < 1:
            raise ValueError(f"k must be a positive integer. Received: {k}")
        super().__init__(num_classes, weights, loss, input_size=input_size, k=k)

    def build(self, inputs, weights):
        c, k = self.num_classes, self.options["k"]
        x = preprocess_for_resnet_v2(inputs)
        feats = features(resnet50_v2(x, weights))  # strides 4, 8, 16, 32
        top = None
        for stride, feat in zip((32, 16, 8, 4), reversed(feats)):
            name = f"gcn_stride{stride}"
            score = global_conv_block(feat, c, k, name=f"{name}_gc")
            score = boundary_refine_block(score, name=f"{name}_br")
            if top is not None:
                score = keras.layers.Add(name=f"{name}_topdown_sum")([top, score])
                score = boundary_refine_block(score, name=f"{name}_topdown_br")
            top = upsample(score, 2, name=f"{name}_up")
        x = boundary_refine_block(top, name="gcn_stride2_br")
        x = upsample(x, 2, name="gcn_stride2_up")
        x = boundary_refine_block(x, name="gcn_stride1_br")
        return conv(x, c, 1, name="logits")
