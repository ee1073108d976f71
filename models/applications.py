"""A `keras.applications` network as a backbone: its own layers, names and weights,
rebuilt inside the segmenter's graph at the output stride asked for.

`application_backbone` builds the plain network with `keras.applications`
(`include_top=False`, any input size), so `weights="imagenet"` is Keras' own download
and load. It then makes a copy of every layer from its config -- with the changes of
`models.dilation.atrous_plan` for output stride 16 or 8, each `BatchNormalization`
as its fused twin (`models.fast_layers`), and for `deformable_stages` the ResNet 3x3
convolutions as `DeformableConv2D` -- and calls the copies on the caller's tensor in
the network's order. The copies are layers of the segmenter itself, so
`segmenter.get_layer("block4_sepconv2_bn")` works, and they take the plain network's
weights array by array, in order.

Keras leaves a few layers unnamed (Xception's shortcut convolutions and additions,
ConvNeXt's last layer norm), and numbers them per session (`conv2d_7`). Their copies
get stable names, the network's name then Keras' own numbering within the network
(`xception_conv2d_1`), so a saved segmenter reads back the same.
"""

from __future__ import annotations

import re

import keras
from keras import layers

from models import backbone_weights
from models.backbone_weights import WeightsError, check_weights
from models.deformable import DeformableConv2D
from models.dilation import atrous_plan
from models.fast_layers import batch_norm_class


def application_backbone(spec, x, weights=None, output_stride: int = 32,
                         batch_norm: str = "fused", deformable_stages: int = 0) -> dict:
    """The `keras.applications` network of `spec` (a `models.backbones.BackboneSpec`)
    called on `x`, layer by layer.

    Args:
        x: the (preprocessed) image tensor of the segmenter's graph.
        weights: "imagenet" (Keras' download), a weights file (a named `.h5`, by
            layer name; a `.weights.h5` from `save_weights`, by Keras' own loader into
            the plain network, then copied in order), or None (random).
        output_stride: 32, 16 or 8.
        batch_norm: "fused" or "keras".
        deformable_stages: ResNets only; the last N stages' 3x3 convolutions become
            `DeformableConv2D`.

    Returns:
        {layer name: output tensor, "<layer name>:input": input tensor} of every
        layer, in order.
    """
    check_weights(weights, spec.weights_file)
    plain = plain_network(spec, weights)
    plan = atrous_plan(plain, output_stride)
    unnamed = unnamed_layers(plain, spec.name)
    deformable = deformable_names(plain, spec, deformable_stages)
    norm = batch_norm_class(batch_norm)
    outputs, pairs = {}, []  # (plain layer, its copy)

    def copy_layer(layer):
        """A new layer from `layer`'s config, with this backbone's changes."""
        if not isinstance(layer, layers.Layer):  # an op, e.g. ConvNeXt's `inputs + x`
            return type(layer).from_config(layer.get_config())
        config = layer.get_config()
        config["name"] = unnamed.get(layer.name, (layer.name,))[0]
        apply_plan(config, plan.get(layer.name, {}))
        cls = type(layer)
        if cls is layers.BatchNormalization:
            cls = norm
            config.pop("synchronized", None)  # the fused layer decides (see its doc)
        elif layer.name in deformable:
            cls = DeformableConv2D
        copy = cls.from_config(config)
        pairs.append((layer, copy))
        return copy

    def call(layer, *args, **kwargs):
        out = layer(*args, **kwargs)
        outputs[layer.name] = out
        outputs[f"{layer.name}:input"] = args[0]
        return out
    # Keras' own graph replay: each layer's copy called on the copies' outputs, from x
    keras.models.clone_model(plain, input_tensors=x, clone_function=copy_layer,
                             call_function=call)
    if weights is not None and weights != "imagenet" and backbone_weights.is_named_h5(
            weights):
        load_named(spec, [copy for _, copy in pairs], weights, unnamed)
    elif weights is not None:  # already in the plain network: Keras loaded them
        backbone_weights.copy_in_order(*zip(*pairs))
    return outputs


def plain_network(spec, weights) -> keras.Model:
    """The `keras.applications` network itself, with Keras' ImageNet weights, a
    `.weights.h5` file's (Keras' own loader), or random ones."""
    make = getattr(keras.applications, spec.application)
    kwargs = dict(include_top=False, input_shape=(None, None, 3), **spec.kwargs)
    if weights != "imagenet":
        plain = make(weights=None, **kwargs)
        if weights is not None and not backbone_weights.is_named_h5(weights):
            try:
                plain.load_weights(weights)
            except (OSError, ValueError, KeyError) as e:
                raise WeightsError(f"could not load the weights file {weights} into "
                                   f"{spec.application} ({e}). {advice(spec)}") from None
        return plain
    try:
        return make(weights="imagenet", **kwargs)
    except Exception as e:  # noqa: BLE001 -- any failure gets the same advice
        raise WeightsError(f"could not download the ImageNet weights for "
                           f"{spec.application} ({e}). Offline, get "
                           f"{spec.weights_file} on a machine that is online (it is "
                           f"cached in ~/.keras/models/ there) and pass its path: "
                           f"--weights /path/to/{spec.weights_file}") from None


def load_named(spec, copies: list, path: str, unnamed: dict) -> None:
    """A Keras 2 style `.h5` into the copies, by layer name (unnamed ones by order)."""
    kinds = {new: kind for new, kind in unnamed.values()}
    try:
        backbone_weights.load_by_name(path, copies, spec.application, kinds)
    except (OSError, ValueError, KeyError) as e:
        raise WeightsError(f"could not load the weights file {path} into "
                           f"{spec.application} ({e}). {advice(spec)}") from None


def advice(spec) -> str:
    return (f"It must be the notop file {spec.weights_file}, a .h5 of the same layer "
            f"names, or a .weights.h5 saved from keras.applications."
            f"{spec.application}(include_top=False).")


def apply_plan(config: dict, change: dict) -> None:
    """Writes `atrous_plan`'s changes into a layer config (nested for a Sequential)."""
    inner = change.get("layers")
    if inner is None:
        config.update(change)
        return
    for sub in config["layers"]:
        sub["config"].update(inner.get(sub["config"]["name"], {}))


def unnamed_layers(model: keras.Model, prefix: str) -> dict:
    """{Keras' session name: (stable name, kind)} of the layers Keras left unnamed:
    `conv2d_7` -> (`xception_conv2d_1`, `conv2d`), numbered within the network."""
    counts, names = {}, {}
    for layer in model.layers:
        kind = snake_case(type(layer).__name__)
        if isinstance(layer, layers.InputLayer) or not re.fullmatch(
                rf"{kind}(_\d+)?", layer.name):
            continue
        n = counts[kind] = counts.get(kind, -1) + 1
        names[layer.name] = (f"{prefix}_{kind}" + (f"_{n}" if n else ""), kind)
    return names


def deformable_names(model: keras.Model, spec, stages: int) -> set:
    """The 3x3 convolutions of the last `stages` stages of a ResNet (`convN_blockM_2_conv`)."""
    if not stages:
        return set()
    if not spec.deformable_stages:
        raise ValueError(f"deformable_stages applies to the ResNet backbones. Received: "
                         f"backbone={spec.name!r}, deformable_stages={stages}")
    if not 0 <= stages <= len(spec.deformable_stages):
        raise ValueError(f"deformable_stages must be 0 to {len(spec.deformable_stages)}"
                         f". Received: {stages}")
    chosen = spec.deformable_stages[-stages:]
    return {layer.name for layer in model.layers
            if re.fullmatch(rf"({'|'.join(chosen)})_block\d+_2_conv", layer.name)}


def snake_case(name: str) -> str:
    """Keras' default layer name of a class: Conv2D -> conv2d, ReLU -> re_lu."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()
