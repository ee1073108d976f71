"""GCN, the article's model: a Global Convolutional Network on ResNet-50 v2 (or any
backbone of `models.backbones`; the paper's is ResNet-152, `backbone="resnet152v2"`).

Peng et al., "Large Kernel Matters -- Improve Semantic Segmentation by Global
Convolutional Network", CVPR 2017, https://arxiv.org/abs/1703.02719. Read this file
beside Fig. 2 of the paper: (B) is `global_conv_block`, (C) `boundary_refine_block`,
(A) the graph in `GCN.__init__`.

Example:
    >>> net = GCN(weights=None, input_size=64)
    >>> net(np.zeros((2, 64, 96, 3), np.uint8)).shape
    TensorShape([2, 64, 96, 3])
"""

from __future__ import annotations

import keras
from keras import layers

from common.labels import NUM_CLASSES
from models.backbones import build_backbone
from models.layers import conv, upsample
from models.nn import SegNet, image_input


def global_conv_block(x, filters: int, k: int, name: str):
    """Global Convolutional Network block (Peng et al. 2017, Sec. 3.1, Fig. 2B).

    A k x k receptive field at the cost of 2k weights per channel pair: (k x 1 then
    1 x k) + (1 x k then k x 1), summed. No non-linearity inside, as in the paper.
    """
    left = conv(x, filters, (k, 1), f"{name}_left_kx1")
    left = conv(left, filters, (1, k), f"{name}_left_1xk")
    right = conv(x, filters, (1, k), f"{name}_right_1xk")
    right = conv(right, filters, (k, 1), f"{name}_right_kx1")
    return layers.Add(name=f"{name}_sum")([left, right])


def boundary_refine_block(x, name: str):
    """Boundary Refinement block (Peng et al. 2017, Sec. 3.2, Fig. 2C).

    The residual branch is conv3x3 -> ReLU -> conv3x3, added to the input. (The article
    fed `x` to the second conv, which skipped the ReLU branch entirely.)
    """
    filters = x.shape[-1]
    r = conv(x, filters, 3, f"{name}_conv1", activation="relu")
    r = conv(r, filters, 3, f"{name}_conv2")
    return layers.Add(name=f"{name}_sum")([x, r])


@keras.saving.register_keras_serializable(package="segmentation")
class GCN(SegNet):
    """Global Convolutional Network (the article's model, Fig. 2A).

    Each of the stride 4, 8, 16, 32 features goes through a GCN block (C channels,
    C = num_classes) and a BR block; from the coarsest level down, the map is
    upsampled x2, added to the next level and refined by BR; two more BR + x2 steps
    reach full size; a 1x1 convolution gives the logits.

    Args:
        num_classes: classes including background.
        weights: backbone weights ("imagenet", a local file, or None).
        loss: loss name ("ce", "dice", "ce+dice").
        input_size: the training image side; sets the default `k`.
        k: GCN kernel size; default `input_size // 32 - 1` (15 at 512), as the article.
        backbone: a `models.backbones.BACKBONES` name; "resnet50v2" (the article's).
        batch_norm: the backbone's batch norm, "fused" or "keras" (same weights).
        deformable_stages: ResNets: deformable 3x3 convolutions in the last N stages.
        **kwargs: `keras.Model`'s (`name`, `trainable`).
    """

    architecture = "gcn"

    def __init__(self, num_classes: int = NUM_CLASSES, weights=None, loss: str = "ce",
                 input_size: int = 512, k: int | None = None,
                 backbone: str = "resnet50v2", batch_norm: str = "fused",
                 deformable_stages: int = 0, **kwargs):
        if k is None:
            k = max(1, input_size // 32 - 1)
        if k < 1:
            raise ValueError(f"k must be a positive integer. Received: {k}")

        # === Functional model ===
        inputs = image_input()
        net = build_backbone(inputs, backbone, weights, batch_norm=batch_norm,
                             deformable_stages=deformable_stages)
        feats = [net.taps[s] for s in (4, 8, 16, 32)]
        top = None
        for stride, feat in zip((32, 16, 8, 4), reversed(feats)):
            name = f"gcn_stride{stride}"
            score = global_conv_block(feat, num_classes, k, name=f"{name}_gc")
            score = boundary_refine_block(score, name=f"{name}_br")
            if top is not None:
                score = layers.Add(name=f"{name}_topdown_sum")([top, score])
                score = boundary_refine_block(score, name=f"{name}_topdown_br")
            top = upsample(score, 2, name=f"{name}_up")
        x = boundary_refine_block(top, name="gcn_stride2_br")
        x = upsample(x, 2, name="gcn_stride2_up")
        x = boundary_refine_block(x, name="gcn_stride1_br")
        logits = conv(x, num_classes, 1, name="logits")
        super().__init__(inputs, logits, num_classes=num_classes, loss=loss,
                         input_size=input_size, **kwargs)

        # === Config ===
        self.k = k
        self.backbone = backbone
        self.batch_norm = batch_norm
        self.deformable_stages = deformable_stages

    def get_config(self) -> dict:
        return {**super().get_config(), "k": self.k, "backbone": self.backbone,
                "batch_norm": self.batch_norm,
                "deformable_stages": self.deformable_stages}
