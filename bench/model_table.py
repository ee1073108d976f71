"""Prints a markdown table of every registered architecture: parameters, forward
FLOPs at one image size, the paper it comes from and what this project changed; with
`--backbones`, parameters and FLOPs of each architecture on each backbone.

FLOPs are counted analytically from the convolution layers, on a copy of the model
with a fixed input size so that every layer's shape is known (nothing is run):

    Conv2D           MACs = H_out * W_out * k_h * k_w * C_in * C_out
    DepthwiseConv2D  MACs = H_out * W_out * k_h * k_w * C_in
    SeparableConv2D  MACs = H_out * W_out * (k_h * k_w * C_in + C_in * C_out)
    Conv2DTranspose  MACs = H_in  * W_in  * k_h * k_w * C_in * C_out
    Dense on a map   MACs = H * W * C_in * C_out (ConvNeXt's pointwise convolutions)
    FLOPs = 2 * MACs (a multiply and an add), batch 1.

A dilated convolution counts as its k_h x k_w taps; a `DeformableConv2D` as its
convolution plus the one predicting its offsets (the bilinear sampling is left out);
convolutions inside a nested `Sequential` (ConvNeXt's stem) count too. Biases, batch
norm (foldable into the convolution at inference), activations, pooling, unpooling
and resizing are left out: together they are well under 1% of these networks'
convolution work. (Checked against the TensorFlow profiler on a frozen graph: within
0.5% for ResNet50V2, FCN-8s and U-Net.)

    python bench/model_table.py [--size 512]
    python bench/model_table.py --backbones [--sizes 256 512]
"""

from __future__ import annotations

import argparse
import math
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import learning  # noqa: E402,F401 (TensorFlow CPU settings, as the scripts)
import keras  # noqa: E402

from models import ARCHITECTURES  # noqa: E402
from models.backbones import BACKBONES  # noqa: E402
from models.deformable import DeformableConv2D  # noqa: E402

SEMANTIC = [m for m in ARCHITECTURES if m != "solo"]  # SOLO: instances, not pixels

PAPERS = {
    "gcn": "Peng et al. 2017, Large Kernel Matters (GCN), arXiv:1703.02719",
    "fcn32s": "Long et al. 2015, Fully Convolutional Networks, arXiv:1411.4038",
    "fcn16s": "Long et al. 2015, Fully Convolutional Networks, arXiv:1411.4038",
    "fcn8s": "Long et al. 2015, Fully Convolutional Networks, arXiv:1411.4038",
    "deeplabv3plus": "Chen et al. 2018, DeepLab v3+, arXiv:1802.02611",
    "unet": "Ronneberger et al. 2015, U-Net, arXiv:1505.04597",
    "segnet": "Badrinarayanan et al. 2017, SegNet, arXiv:1511.00561",
}
CHANGES = {
    "gcn": "ResNet-50 v2 backbone (paper: ResNet-152); k = size/32 - 1 as the article",
    "fcn32s": "ResNet-50 v2 instead of VGG-16; score on `post_relu`; "
              "final x32 fixed bilinear as the paper",
    "fcn16s": "ResNet-50 v2 instead of VGG-16 (pool4 -> conv4_block5_out); "
              "zero-init skip score; x2 learned from bilinear",
    "fcn8s": "as FCN-16s plus pool3 -> conv3_block3_out; `upsample=resize` option",
    "deeplabv3plus": "ResNet-50 v2 (paper: Xception / ResNet-101); OS 16, atrous conv5; "
                     "no multi-grid; ASPP convs not separable",
    "unet": "'same' padding (no crops), batch norm, 16 base filters (paper 64), "
            "random init",
    "segnet": "4 levels x 2 convs from 16 filters (paper: VGG-16, 13 convs, 64-512), "
              "random init",
}


CONVOLUTIONS = (keras.layers.Conv2DTranspose, keras.layers.Conv2D,
                keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D,
                keras.layers.Dense)


def conv_macs(model: keras.Model) -> int:
    """Multiply-accumulates of the convolution layers of a fixed-size `model`."""
    return sum(layer_macs(layer, layer.input.shape) for layer in model.layers
               if isinstance(layer, (*CONVOLUTIONS, keras.Sequential)))


def layer_macs(layer, input_shape) -> int:
    """One layer's multiply-accumulates on an input of `input_shape`."""
    if isinstance(layer, keras.Sequential):  # its inner shapes, layer after layer
        macs, shape = 0, input_shape
        for sub in layer.layers:
            macs += layer_macs(sub, shape)
            shape = sub.compute_output_shape(shape)
        return macs
    if not isinstance(layer, CONVOLUTIONS):
        return 0
    if isinstance(layer, keras.layers.Dense):  # a 1x1 convolution on a map
        return math.prod(input_shape[1:]) * layer.units
    _, h, w, c_out = layer.compute_output_shape(input_shape)
    c_in = input_shape[-1]
    k = layer.kernel_size[0] * layer.kernel_size[1]
    if isinstance(layer, keras.layers.Conv2DTranspose):
        return input_shape[1] * input_shape[2] * k * c_in * layer.filters
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return h * w * k * c_out
    if isinstance(layer, keras.layers.SeparableConv2D):
        return h * w * (k * c_in * layer.depth_multiplier
                        + c_in * layer.depth_multiplier * c_out)
    macs = h * w * k * c_in // layer.groups * c_out
    if isinstance(layer, DeformableConv2D):
        macs += layer_macs(layer.offset_conv, input_shape)
    return macs


def describe(name: str, size: int, sizes=(), **options) -> dict:
    """Parameters and forward GFLOPs of the `name` network (default options, or
    `options`) at size x size (and at each of `sizes`: `gflops_at`)."""
    net = ARCHITECTURES[name](weights=None, **options)
    flops = {}
    for side in dict.fromkeys((size, *sizes)):
        fixed = keras.models.clone_model(
            net, input_tensors=keras.Input((side, side, 3), dtype="uint8"))
        flops[side] = 2 * conv_macs(fixed) / 1e9
    trainable = sum(int(w.numpy().size) for w in net.trainable_weights)
    return {"name": name, "params": net.count_params(), "trainable": trainable,
            "gflops": flops[size], "gflops_at": flops, "stride": net.output_stride,
            "config": net.get_config()}


WITH_BACKBONE = ("gcn", "fcn32s", "fcn16s", "fcn8s", "deeplabv3plus")


def backbone_rows():
    """Each architecture on each backbone (default options); DeepLab v3+ also with
    its ASPP the other way (separable where the backbone's default is not)."""
    for backbone in BACKBONES:
        for name in WITH_BACKBONE:
            yield name, {"backbone": backbone}
        yield "deeplabv3plus", {"backbone": backbone,
                                "separable": backbone != "xception"}


def backbone_table(sizes) -> None:
    print("| model | backbone | params (M) | "
          + " | ".join(f"GFLOPs @{s}" for s in sizes) + " |")
    print("|---|---|---:|" + "---:|" * len(sizes))
    for name, options in backbone_rows():
        r = describe(name, sizes[0], sizes, **options)
        label = name
        if name == "deeplabv3plus":
            label += " (separable ASPP)" if r["config"]["separable"] else " (atrous ASPP)"
        print(f"| {label} | {options['backbone']} | {r['params'] / 1e6:.2f} | "
              + " | ".join(f"{r['gflops_at'][s]:.1f}" for s in sizes) + " |",
              flush=True)
    print("\nFLOPs = 2 x multiply-accumulates of the convolution layers, batch 1, "
          "counted analytically (see the module docstring); weights=None; GCN at its "
          "default input_size 512 (k = 15) at every size; DeepLab v3+ at output "
          "stride 16, the others at 32.")


def main(args) -> None:
    if args.backbones:
        backbone_table(args.sizes)
        return
    rows = [describe(name, args.size) for name in SEMANTIC]  # the table's order
    print(f"| model | params (M) | trainable (M) | GFLOPs @{args.size}x{args.size} "
          f"| sides multiple of | paper | what we changed |")
    print("|---|---:|---:|---:|---:|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['params'] / 1e6:.2f} | {r['trainable'] / 1e6:.2f} "
              f"| {r['gflops']:.1f} | {r['stride']} | {PAPERS.get(r['name'], '?')} "
              f"| {CHANGES.get(r['name'], '?')} |")
    print(f"\nFLOPs = 2 x multiply-accumulates of the convolution layers, batch 1, "
          f"counted analytically (see the module docstring); default options, "
          f"weights=None.")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=512, help="square input side")
    p.add_argument("--backbones", action="store_true",
                   help="the architectures with a backbone, on each backbone")
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512],
                   help="--backbones: the square input sides")
    return p


if __name__ == "__main__":
    main(get_args_parser().parse_args())
