"""Output stride 16 or 8 for any `keras.applications` network: which layers trade
their stride for dilation, found by walking the graph.

DeepLab v3 (Chen et al. 2017, https://arxiv.org/abs/1706.05587, Sec. 3.1): once the
features have reached the output stride, every later stride 2 becomes 1 and every
later convolution is dilated by the product of the strides removed before it, which
keeps each kernel's field of view (the TF-slim rule; `models.resnet50v2` writes it out
for ResNet-50 v2). `atrous_plan` applies the rule to a built network: it follows each
tensor's stride and dilation rate through the graph (branches and merges included:
Xception's shortcuts, EfficientNet's squeeze-and-excitation) and returns the config
changes of the layers concerned. No weight changes shape, so the network's weights
load unchanged.

Padding keeps every map the size it should have: a 'valid' convolution fed by a
`ZeroPadding2D` (ResNet, MobileNetV2) gets that padding widened to the dilated
kernel's half span; any other 'valid' one that now keeps its stride-1 size needs
(ConvNeXt's 2x2 downsampling, DenseNet's 2x2 average pooling) becomes 'same'.
"""

from __future__ import annotations

import keras
from keras import layers

# Layers with a stride (pooling included); Conv2D covers its subclasses.
STRIDED = (layers.Conv2D, layers.DepthwiseConv2D, layers.SeparableConv2D,
           layers.MaxPooling2D, layers.AveragePooling2D)
DILATABLE = (layers.Conv2D, layers.DepthwiseConv2D, layers.SeparableConv2D)


def atrous_plan(model: keras.Model, output_stride: int) -> dict:
    """{layer name: config changes} that make `model` (a functional network of stride
    32 or less) keep `output_stride`. A nested `Sequential` (ConvNeXt's downsampling)
    gets {"layers": {inner name: changes}}. Empty at an output stride of 32."""
    plan, state, producer = {}, {}, {}
    for layer in model.operations:  # layers and bare ops (ConvNeXt's `inputs + x`)
        if isinstance(layer, layers.InputLayer):
            state[id(layer.output)] = (1, 1)
            continue
        inputs = [state[id(t)] for t in keras.tree.flatten(layer.input)]
        stride, rate = max(s for s, _ in inputs), max(r for _, r in inputs)
        if isinstance(layer, keras.Sequential):
            inner = {}
            for sub in layer.layers:
                change, stride, rate = plan_layer(sub, stride, rate, output_stride)
                if change:
                    inner[sub.name] = change
            if inner:
                plan[layer.name] = {"layers": inner}
        else:
            change, stride, rate = plan_layer(layer, stride, rate, output_stride)
            source = producer.get(id(layer.input))
            if change.get("padding") == "same" and isinstance(source, layers.ZeroPadding2D):
                # widen the explicit padding instead: the layer stays 'valid'
                del change["padding"]
                plan[source.name] = {"padding": half_span(layer, change)}
            if change:
                plan[layer.name] = change
        for t in keras.tree.flatten(layer.output):
            state[id(t)], producer[id(t)] = (stride, rate), layer
    return plan


def plan_layer(layer, stride: int, rate: int, output_stride: int):
    """(config changes, nominal stride after, dilation rate after) of one layer whose
    input has reached nominal `stride` with dilation `rate` so far."""
    if not isinstance(layer, STRIDED):
        return {}, stride, rate
    step = layer.strides[0]
    change, rate_after = {}, rate
    if step > 1 and stride * step > output_stride:  # trade the stride for dilation
        change["strides"] = (1, 1)
        rate_after = rate * step
    if rate > 1 and isinstance(layer, DILATABLE) and max(layer.kernel_size) > 1:
        change["dilation_rate"] = (rate, rate)
    if change and layer.padding == "valid" and max(window(layer)) > 1:
        change["padding"] = "same"
    return change, stride * step, rate_after


def window(layer) -> tuple:
    """A convolution's kernel size or a pooling's window."""
    return tuple(getattr(layer, "kernel_size", None) or layer.pool_size)


def half_span(layer, change: dict) -> tuple:
    """The symmetric padding that keeps a stride-1 'valid' layer's input size: half
    of the dilated kernel's span, (k - 1) * rate / 2 on each side."""
    rate = change.get("dilation_rate", (1, 1))
    (kh, kw), (rh, rw) = window(layer), rate
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"cannot pad {layer.name!r} symmetrically: even kernel "
                         f"{(kh, kw)}")
    return ((rh * (kh - 1) // 2,) * 2, (rw * (kw - 1) // 2,) * 2)
