"""The pretrained ResNet-50 v2 feature extractor, with its `keras.applications` names.

`weights` is one of:
* "imagenet": the real Keras download (needs the internet once; Keras caches the file
  in ~/.keras/models/),
* a path to a local weights file (offline use: the same notop `.h5` file Keras would
  download, or a `.weights.h5` saved from this backbone),
* None: random initialisation (tests, or training from scratch).
"""

from __future__ import annotations

import os

import keras

# The features at strides 4, 8, 16 and 32. In Keras' ResNet v2 a stage's stride sits
# in its last block, so these are the slim end points the article used:
# block1/unit_2, block2/unit_3, block3/unit_5 and block4/unit_3.
RESNET50V2_FEATURES = {
    4: "conv2_block2_out",
    8: "conv3_block3_out",
    16: "conv4_block5_out",
    32: "conv5_block3_out",
}
IMAGENET_NOTOP_FILE = "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5"


class WeightsError(RuntimeError):
    """Pretrained weights could not be loaded; the message says what to do instead."""


def check_weights(weights) -> None:
    """Fails early, with the fix, on a `weights` value that cannot work."""
    if weights is None or weights == "imagenet":
        return
    if not isinstance(weights, (str, os.PathLike)):
        raise ValueError(f"weights must be 'imagenet', a file path or None. "
                         f"Received: {weights!r}")
    if not os.path.isfile(weights):
        raise WeightsError(f"weights file not found: {weights}. Pass --weights imagenet "
                           f"(online), --weights none, or the path of an existing "
                           f"{IMAGENET_NOTOP_FILE}")


def resnet50_v2(x, weights=None) -> keras.Model:
    """Builds ResNet-50 v2 (no top) on the preprocessed tensor `x` and loads `weights`.

    Returns the `keras.applications` model; its layers become part of any model built
    from `x`, so `model.get_layer("conv4_block5_out")` works on the segmenter.
    """
    check_weights(weights)
    try:
        return keras.applications.ResNet50V2(include_top=False, weights=weights,
                                             input_tensor=x)
    except Exception as e:  # noqa: BLE001 -- any failure gets the same advice
        if weights == "imagenet":
            raise WeightsError(
                f"could not download the ImageNet weights for ResNet-50 v2 ({e}). "
                f"Offline, get {IMAGENET_NOTOP_FILE} on a machine that is online "
                f"(it is cached in ~/.keras/models/ there) and pass its path: "
                f"--weights /path/to/{IMAGENET_NOTOP_FILE}") from None
        raise WeightsError(f"could not load the weights file {weights} into ResNet-50 "
                           f"v2 ({e}). It must be the notop ResNet50V2 file "
                           f"{IMAGENET_NOTOP_FILE} or a file saved from this "
                           f"backbone.") from None


def features(backbone: keras.Model, strides=(4, 8, 16, 32)) -> list:
    """The backbone's outputs at the given strides, shallowest first."""
    return [backbone.get_layer(RESNET50V2_FEATURES[s]).output for s in strides]
