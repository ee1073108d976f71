"""bench/model_table.py's FLOP count for the layers the backbones brought: separable
convolutions, Dense on a map, convolutions inside a nested Sequential, deformable
convolutions; golden values worked out by hand."""

import os
import sys

import keras

from models.deformable import DeformableConv2D
from scripts import ROOT

sys.path.insert(0, os.path.join(ROOT, "bench"))
import model_table  # noqa: E402


def test_multiply_accumulates_of_each_new_layer_kind():
    inputs = keras.Input((8, 8, 4))
    # 8x8 out, depthwise 3x3 on 4 channels + pointwise 4 -> 6: 64 * (36 + 24) = 3840
    x = keras.layers.SeparableConv2D(6, 3, padding="same")(inputs)
    # Dense on the 8x8x6 map, 6 -> 5 (ConvNeXt's pointwise convolution): 64 * 30 = 1920
    x = keras.layers.Dense(5)(x)
    # nested Sequential, 2x2 stride 2: 4x4 out, 4 taps x 5 in x 2 out: 16 * 40 = 640
    x = keras.Sequential([keras.layers.Conv2D(2, 2, strides=2)])(x)
    # deformable 3x3 on 4x4x2 -> 3 channels: 16 * 9 * 2 * 3 = 864, plus its offset
    # convolution to 3 * 9 = 27 channels: 16 * 9 * 2 * 27 = 7776
    x = DeformableConv2D(3, 3, padding="same")(x)
    model = keras.Model(inputs, x)
    assert model_table.conv_macs(model) == 3840 + 1920 + 640 + 864 + 7776
