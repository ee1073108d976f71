"""Prints a markdown table of every registered architecture: parameters, forward
FLOPs at one image size, the paper it comes from and what this project changed.

FLOPs are counted analytically from the convolution layers, on a copy of the model
with a fixed input size so that every layer's shape is known (nothing is run):

    Conv2D           MACs = H_out * W_out * k_h * k_w * C_in * C_out
    DepthwiseConv2D  MACs = H_out * W_out * k_h * k_w * C_in
    Conv2DTranspose  MACs = H_in  * W_in  * k_h * k_w * C_in * C_out
    FLOPs = 2 * MACs (a multiply and an add), batch 1.

A dilated convolution counts as its k_h x k_w taps. Biases, batch norm (foldable into
the convolution at inference), activations, pooling, unpooling and resizing are left
out: together they are well under 1% of these networks' convolution work. (Checked
against the TensorFlow profiler on a frozen graph: within 0.5% for ResNet50V2, FCN-8s
and U-Net.)

    python bench/model_table.py [--size 512]
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import learning  # noqa: E402,F401 (TensorFlow CPU settings, as the scripts)
import keras  # noqa: E402

from models import ARCHITECTURES  # noqa: E402

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


def conv_macs(model: keras.Model) -> int:
    """Multiply-accumulates of the convolution layers of a fixed-size `model`."""
    macs = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2DTranspose):
            _, h, w, c_in = layer.input.shape
            macs += h * w * layer.kernel.shape[0] * layer.kernel.shape[1] * c_in \
                * layer.filters
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            _, h, w, c_out = layer.output.shape
            macs += h * w * layer.kernel_size[0] * layer.kernel_size[1] * c_out
        elif isinstance(layer, keras.layers.Conv2D):
            _, h, w, c_out = layer.output.shape
            c_in = layer.input.shape[-1] // layer.groups
            macs += h * w * layer.kernel_size[0] * layer.kernel_size[1] * c_in * c_out
    return macs


def describe(name: str, size: int) -> dict:
    """Parameters and forward GFLOPs of the default `name` network at size x size."""
    net = ARCHITECTURES[name](weights=None)
    fixed = keras.models.clone_model(
        net, input_tensors=keras.Input((size, size, 3), dtype="uint8"))
    trainable = sum(int(w.numpy().size) for w in net.trainable_weights)
    return {"name": name, "params": net.count_params(), "trainable": trainable,
            "gflops": 2 * conv_macs(fixed) / 1e9, "stride": net.output_stride}


def main(args) -> None:
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
    return p


if __name__ == "__main__":
    main(get_args_parser().parse_args())
