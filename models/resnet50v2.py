"""ResNet-50 v2 written out block by block: the article's backbone, with output stride
32, 16 or 8 and the `keras.applications` layer names.

He et al., "Identity Mappings in Deep Residual Networks", ECCV 2016,
https://arxiv.org/abs/1603.05027 (pre-activation bottlenecks). The layers are named
and made in the order of `keras.applications.ResNet50V2` (`conv4_block5_out`, ...), so
its ImageNet weights load into this builder by layer name, at any output stride: a
dilation changes no weight shape. The other backbones are built from
`keras.applications` itself (`models.applications`); this one stays written out, so
that the graphs -- and the checkpoints -- of the article's models stay exactly as they
were, and because it is the one a learner reads.

`weights` is one of:
* "imagenet": the real Keras download of the notop file (needs the internet once;
  Keras caches it in ~/.keras/models/),
* a path to a local weights file: that same notop `.h5` file (offline use), or a
  `.weights.h5` that `save_weights` wrote from a plain `keras.applications.ResNet50V2`,
* None: random initialisation (tests, or training from scratch).
"""

from __future__ import annotations

import keras
from keras import layers

from models import backbone_weights
from models.backbone_weights import WeightsError, check_weights
from models.deformable import DeformableConv2D
from models.fast_layers import batch_norm_class

# The features at strides 4, 8, 16 and 32. In Keras' ResNet v2 a stage's stride sits
# in its last block, so these are the slim end points the article used:
# block1/unit_2, block2/unit_3, block3/unit_5 and block4/unit_3.
RESNET50V2_FEATURES = {
    4: "conv2_block2_out",
    8: "conv3_block3_out",
    16: "conv4_block5_out",
    32: "conv5_block3_out",
}
# (stage, bottleneck filters, blocks, stride of the stage's last block). As in Keras
# (and TF-slim) ResNet v2, a stage downsamples in its LAST block; conv5 keeps the
# stride of conv4_block6.
RESNET50V2_STAGES = (("conv2", 64, 3, 2), ("conv3", 128, 4, 2), ("conv4", 256, 6, 2),
                     ("conv5", 512, 3, 1))
IMAGENET_NOTOP_FILE = "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5"
# Where and what `keras.applications.ResNet50V2(weights="imagenet")` downloads.
IMAGENET_URL = ("https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
                + IMAGENET_NOTOP_FILE)
IMAGENET_MD5 = "fac2f116257151a9d068a22e544a4917"


def apply_residual_block_v2(x, filters: int, name: str, stride: int = 1,
                            dilation: int = 1, conv_shortcut: bool = False,
                            batch_norm: str = "fused", deformable: bool = False):
    """Pre-activation bottleneck, layer for layer `keras.applications`'
    `residual_block_v2`, plus a dilation rate for its 3x3 convolution and a name for
    its shortcut pooling (Keras leaves that one auto-named). `deformable`: the 3x3
    convolution is a `DeformableConv2D` (DCNv2), same name and kernel."""
    norm = batch_norm_class(batch_norm)
    preact = norm(epsilon=1.001e-5, name=f"{name}_preact_bn")(x)
    preact = layers.ReLU(name=f"{name}_preact_relu")(preact)
    if conv_shortcut:
        shortcut = layers.Conv2D(4 * filters, 1, strides=stride,
                                 name=f"{name}_0_conv")(preact)
    elif stride > 1:  # a 1x1 "pooling" that only subsamples
        shortcut = layers.MaxPooling2D(1, strides=stride, name=f"{name}_0_pool")(x)
    else:
        shortcut = x
    x = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_1_conv")(preact)
    x = norm(epsilon=1.001e-5, name=f"{name}_1_bn")(x)
    x = layers.ReLU(name=f"{name}_1_relu")(x)
    # Padding by the dilation keeps the size; a dilated 3x3 spans 2 * dilation + 1.
    x = layers.ZeroPadding2D(dilation, name=f"{name}_2_pad")(x)
    conv3x3 = DeformableConv2D if deformable else layers.Conv2D
    x = conv3x3(filters, 3, strides=stride, dilation_rate=dilation, use_bias=False,
                name=f"{name}_2_conv")(x)
    x = norm(epsilon=1.001e-5, name=f"{name}_2_bn")(x)
    x = layers.ReLU(name=f"{name}_2_relu")(x)
    x = layers.Conv2D(4 * filters, 1, name=f"{name}_3_conv")(x)
    return layers.Add(name=f"{name}_out")([shortcut, x])


def resnet50_v2(x, weights=None, output_stride: int = 32, batch_norm: str = "fused",
                deformable_stages: int = 0) -> keras.Model:
    """ResNet-50 v2 (no top) on the preprocessed tensor `x` (RGB in [-1, 1]).

    With `output_stride` 16 or 8 (DeepLab v3, https://arxiv.org/abs/1706.05587,
    Sec. 3.1), once the network has reached that stride each later stride 2 becomes
    1 and every later 3x3 convolution is dilated by the product of the strides
    removed before it (the TF-slim rule), which keeps each kernel's field of view:
    OS 16 dilates conv5 by 2; OS 8 dilates conv4 by 2 and conv5 by 4. At 32 this is
    `keras.applications.ResNet50V2`, layer for layer.

    Args:
        x: the preprocessed image tensor.
        weights: "imagenet", a local weights file, or None (see the module docstring);
            loaded straight into these layers by name.
        output_stride: 32, 16 or 8.
        batch_norm: "fused" (`FusedBatchNormalization`) or "keras".
        deformable_stages: the last N stages (0-4) get deformable 3x3 convolutions.

    Returns:
        A `keras.Model` from `x`'s source input to "post_relu". Its layers become part
        of any model built on `x`, so `model.get_layer("conv4_block5_out")` works on
        the segmenter.
    """
    if output_stride not in (8, 16, 32):
        raise ValueError(f"output_stride must be 8, 16 or 32. Received: {output_stride}")
    if not 0 <= deformable_stages <= len(RESNET50V2_STAGES):
        raise ValueError(f"deformable_stages must be 0 to {len(RESNET50V2_STAGES)}. "
                         f"Received: {deformable_stages}")
    check_weights(weights, IMAGENET_NOTOP_FILE)
    inputs = x
    x = layers.ZeroPadding2D(3, name="conv1_pad")(x)
    x = layers.Conv2D(64, 7, strides=2, name="conv1_conv")(x)
    x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    current_stride, rate = 4, 1
    first_deformable = len(RESNET50V2_STAGES) - deformable_stages
    for s, (stage, filters, blocks, stage_stride) in enumerate(RESNET50V2_STAGES):
        for i in range(1, blocks + 1):
            stride = stage_stride if i == blocks else 1
            if current_stride == output_stride:  # trade the stride for dilation
                block_stride, dilation, rate = 1, rate, rate * stride
            else:
                block_stride, dilation = stride, 1
                current_stride *= stride
            x = apply_residual_block_v2(x, filters, f"{stage}_block{i}", block_stride,
                                        dilation, conv_shortcut=(i == 1),
                                        batch_norm=batch_norm,
                                        deformable=s >= first_deformable)
    x = batch_norm_class(batch_norm)(epsilon=1.001e-5, name="post_bn")(x)
    x = layers.ReLU(name="post_relu")(x)
    sources = keras.utils.get_source_inputs(inputs)
    backbone = keras.Model(sources[0] if len(sources) == 1 else sources, x,
                           name="resnet50v2")
    if weights is not None:
        load_weights(backbone, _weights_file(weights))
    return backbone


def _weights_file(weights) -> str:
    """The local path of `weights`: the file itself, or Keras' cached download."""
    if weights != "imagenet":
        return weights
    try:
        return keras.utils.get_file(IMAGENET_NOTOP_FILE, IMAGENET_URL,
                                    cache_subdir="models", file_hash=IMAGENET_MD5)
    except Exception as e:  # noqa: BLE001 -- any failure gets the same advice
        raise WeightsError(
            f"could not download the ImageNet weights for ResNet-50 v2 ({e}). "
            f"Offline, get {IMAGENET_NOTOP_FILE} on a machine that is online (it is "
            f"cached in ~/.keras/models/ there) and pass its path: "
            f"--weights /path/to/{IMAGENET_NOTOP_FILE}") from None


def load_weights(backbone: keras.Model, path: str) -> None:
    """Loads a ResNet-50 v2 weights file into `backbone`'s layers.

    The notop `.h5` that `keras.applications` downloads lists its layers by name, so
    each goes to the layer of that name. A Keras 3 `.weights.h5` (from `save_weights`
    on a plain `keras.applications.ResNet50V2`) has no layer names, only Keras' keys
    by layer class and order (`conv2d_7`, `batch_normalization_3`); the k-th layer of
    a class goes to this builder's k-th, which fits because it makes its layers in
    the same order.
    """
    try:
        if backbone_weights.is_named_h5(path):
            backbone_weights.load_by_name(path, backbone.layers, "ResNet-50 v2")
        else:
            backbone_weights.load_by_class_order(path, backbone.layers, "ResNet-50 v2")
    except (OSError, ValueError, KeyError) as e:
        raise WeightsError(f"could not load the weights file {path} into ResNet-50 v2 "
                           f"({e}). It must be the notop ResNet50V2 file "
                           f"{IMAGENET_NOTOP_FILE} or a .weights.h5 saved from "
                           f"keras.applications.ResNet50V2.") from None
