"""Loading a backbone's weights from a file: by layer name, or by class and order.

Two file formats reach a backbone:

* a Keras 2 style `.h5` -- the notop file `keras.applications` downloads, or one
  written the same way -- lists its layers by name (`layer_names`, `weight_names`):
  each goes to the layer of that name. A few `keras.applications` layers have no name
  of their own (Xception's shortcut convolutions, ConvNeXt's last layer norm); Keras
  numbers those per session (`conv2d_7`), so the file's and ours never agree. Those
  pair up by kind and order instead: the file's unmatched `conv2d_*` layers, in the
  file's order, go to our unnamed convolutions in the network's order.
* a Keras 3 `.weights.h5` (`save_weights`) has no layer names, only keys by layer
  class and order (`layers/conv2d_7/vars`): the k-th of a class goes to our k-th.
"""

from __future__ import annotations

import os
import re

import h5py
from keras import layers

from models.deformable import DeformableConv2D


class WeightsError(RuntimeError):
    """Pretrained weights could not be loaded; the message says what to do instead."""


def check_weights(weights, file_hint: str) -> None:
    """Fails early, with the fix, on a `weights` value that cannot work;
    `file_hint` names the file to pass instead."""
    if weights is None or weights == "imagenet":
        return
    if not isinstance(weights, (str, os.PathLike)):
        raise ValueError(f"weights must be 'imagenet', a file path or None. "
                         f"Received: {weights!r}")
    if not os.path.isfile(weights):
        raise WeightsError(f"weights file not found: {weights}. Pass --weights imagenet "
                           f"(online), --weights none, or the path of an existing "
                           f"{file_hint}")


def is_named_h5(path) -> bool:
    """True for a Keras 2 style `.h5` that names its layers (False for anything else,
    which the other loader then turns down with its own message)."""
    try:
        with h5py.File(path, "r") as f:
            group = f["model_weights"] if "model_weights" in f else f
            return "layer_names" in group.attrs
    except OSError:
        return False


def assign(layer, values: list) -> None:
    """`layer.set_weights(values)`; a `DeformableConv2D` given a plain convolution's
    weights takes them and keeps its zero offset convolution (DCNv2's start)."""
    if isinstance(layer, DeformableConv2D) and len(values) == len(layer.conv_weights):
        for variable, value in zip(layer.conv_weights, values):
            if tuple(variable.shape) != value.shape:
                raise ValueError(f"layer {layer.name!r} expects {variable.shape}, the "
                                 f"file has {value.shape}")
            variable.assign(value)
        return
    layer.set_weights(values)


def load_by_name(path, model_layers: list, what: str, unnamed: dict | None = None):
    """Loads a Keras 2 style `.h5` into `model_layers` by layer name.

    Args:
        unnamed: {our layer name: Keras' kind (`conv2d`)} of the layers Keras leaves
            unnamed, in the network's order; paired with the file's leftovers by kind
            and order (see the module docstring).
    """
    unnamed = unnamed or {}
    ours = {layer.name: layer for layer in model_layers if layer.weights}
    loaded, leftovers = set(), {}
    with h5py.File(path, "r") as f:
        group = f["model_weights"] if "model_weights" in f else f
        for name in (_text(n) for n in group.attrs["layer_names"]):
            layer_group = group[name]
            values = [layer_group[_text(n)][()]
                      for n in layer_group.attrs.get("weight_names", [])]
            if not values:
                continue
            if name in ours:
                assign(ours[name], values)
                loaded.add(name)
            else:
                kind = re.sub(r"_\d+$", "", name)
                leftovers.setdefault(kind, []).append((name, values))
    for kind, items in leftovers.items():
        targets = [n for n, k in unnamed.items()
                   if k == kind and n in ours and n not in loaded]
        if len(items) > len(targets):
            raise ValueError(f"the file has weights for a layer {items[len(targets)][0]!r}"
                             f" that {what} does not have")
        for target, (_, values) in zip(targets, items):
            assign(ours[target], values)
            loaded.add(target)
    missing = sorted(set(ours) - loaded)
    if missing:
        raise ValueError(f"the file has no weights for {len(missing)} layer(s), e.g. "
                         f"{missing[:3]}")


def load_by_class_order(path, model_layers: list, what: str) -> None:
    """Assigns a Keras 3 weights file's `layers/<class>_<k>/vars` groups by class and
    order (Keras numbers a model's layers of each class 0, 1, 2, ... in order)."""
    saved: dict[str, list] = {}
    with h5py.File(path, "r") as f:
        group = f["layers"]
        for key in group:
            variables = group[key].get("vars")
            if variables is None or not len(variables):
                continue
            kind, _, number = key.rpartition("_")
            if not number.isdigit():
                kind, number = key, "0"
            values = [variables[str(i)][()] for i in range(len(variables))]
            saved.setdefault(kind, []).append((int(number), values))
    kinds = ((layers.BatchNormalization, "batch_normalization"), (layers.Conv2D, "conv2d"))
    ours: dict[str, list] = {}
    for layer in (layer for layer in model_layers if layer.weights):
        kind = next((k for cls, k in kinds if isinstance(layer, cls)), None)
        if kind is None:
            raise ValueError(f"no rule to match layer {layer.name!r} in the file")
        ours.setdefault(kind, []).append(layer)
    for kind, layer_list in ours.items():
        values = [v for _, v in sorted(saved.get(kind, []), key=lambda item: item[0])]
        if len(values) != len(layer_list):
            raise ValueError(f"the file has {len(values)} {kind} layer(s) with "
                             f"weights; {what} has {len(layer_list)}")
        for layer, layer_values in zip(layer_list, values):
            assign(layer, layer_values)


def copy_in_order(source_layers, target_layers) -> None:
    """Copies weights layer by layer between two copies of one network, given as two
    lists of matching layers (a batch norm may have become its fused twin)."""
    source = [layer for layer in source_layers if layer.weights]
    target = [layer for layer in target_layers if layer.weights]
    if len(source) != len(target):
        raise ValueError(f"{len(source)} layers with weights against {len(target)}")
    for a, b in zip(source, target):
        assign(b, a.get_weights())


def _text(name) -> str:
    return name.decode() if isinstance(name, bytes) else name
