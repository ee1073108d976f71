"""`SegNet`, the base every architecture subclasses, and the GCN of the article.

A `SegNet` owns a `keras.Model` (`.model`) that takes a batch of raw uint8 RGB images of
any size its architecture allows and returns per-pixel class logits (N, H, W, C). The
base also owns the loss, prediction over a `DataSet` / `tf.data` stream / array, and
saving and loading. A subclass only writes `build(inputs)`.

Example:
    >>> net = GCN(num_classes=3, weights=None, input_size=64)
    >>> net.model(np.zeros((2, 64, 96, 3), np.uint8)).shape
    TensorShape([2, 64, 96, 3])
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import keras
import numpy as np

from datasets.data import NUM_CLASSES
from models import checkpoint
from models.backbones import features, resnet50_v2
from models.layers import (boundary_refine_block, conv, global_conv_block, image_input,
                           preprocess_for_resnet_v2, upsample)
from models.losses import make_loss

ARCHITECTURES: dict[str, type["SegNet"]] = {}


def register(name: str):
    """Class decorator: makes an architecture buildable by name (`--model NAME`)."""
    def wrap(cls):
        cls.architecture = name
        ARCHITECTURES[name] = cls
        return cls
    return wrap


class SegNet(ABC):
    """Base of all segmentation networks.

    Args:
        num_classes: classes including background (3: background, cat, dog).
        weights: backbone weights: "imagenet", a local file path, or None (random).
        loss: loss name from `models.losses.LOSSES` ("ce": masked cross-entropy).
        **kwargs: architecture options, stored in `config` with the above (except
            `weights`) so `load` can rebuild the same network.
    """

    architecture = "segnet"
    output_stride = 32  # height and width must be multiples of this

    def __init__(self, num_classes: int = NUM_CLASSES, weights=None, loss: str = "ce",
                 **kwargs):
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2. Received: {num_classes}")
        self.num_classes = num_classes
        self.loss_name = loss
        self.loss = make_loss(loss)
        self.options = kwargs
        inputs = image_input()
        logits = self.build(inputs, weights)
        self.model = keras.Model(inputs, logits, name=self.architecture)

    @abstractmethod
    def build(self, inputs, weights):
        """Builds the graph from the uint8 `inputs` tensor; returns logits (N, H, W, C)."""

    # ----------------------------------------------------------------- config

    @property
    def config(self) -> dict:
        return {"architecture": self.architecture, "num_classes": self.num_classes,
                "loss": self.loss_name, **self.options}

    @staticmethod
    def from_config(config: dict) -> "SegNet":
        """Rebuilds an architecture (random weights) from `config`."""
        config = dict(config)
        name = config.pop("architecture")
        if name not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {name!r}; choose from "
                             f"{sorted(ARCHITECTURES)}")
        return ARCHITECTURES[name](weights=None, **config)

    # ----------------------------------------------------------------- sizes

    def check_input_size(self, height: int, width: int) -> None:
        """Raises a ValueError with the fix when the size does not fit the network."""
        s = self.output_stride
        if height % s or width % s or height <= 0 or width <= 0:
            raise ValueError(f"{self.architecture} needs a height and width that are "
                             f"multiples of {s}; received {height}x{width}. Choose "
                             f"--image-size as a multiple of {s} (e.g. "
                             f"{max(s, round(height / s) * s)}).")

    # ----------------------------------------------------------------- predict

    def _batches(self, data, batch_size):
        """Yields uint8 image batches from a DataSet, a tf.data stream or an array."""
        if hasattr(data, "images") and hasattr(data, "num_examples"):  # DataSet
            data = data.images
        if isinstance(data, np.ndarray):
            if data.ndim == 3:
                data = data[None]
            for i in range(0, len(data), batch_size):
                yield data[i:i + batch_size]
            return
        for batch in data:  # a tf.data.Dataset of images or (images, ...) tuples
            yield batch[0] if isinstance(batch, (tuple, list)) else batch

    def predict(self, data, batch_size: int = 8, verbose: bool = False) -> np.ndarray:
        """Class probabilities (N, H, W, C) float32 for every image of `data`."""
        out = []
        batches = self._batches(data, batch_size)
        if verbose:
            from tqdm import tqdm
            batches = tqdm(batches, desc="predicting", unit="batch", leave=False)
        for images in batches:
            out.append(self.predict_batch(images))
        if not out:
            raise ValueError("nothing to predict: the data holds no image")
        return np.concatenate(out)

    def predict_batch(self, images) -> np.ndarray:
        """Probabilities (n, H, W, C) for one batch of uint8 images (n, H, W, 3)."""
        height, width = images.shape[1], images.shape[2]
        self.check_input_size(int(height), int(width))
        logits = self._infer(images)
        return keras.ops.convert_to_numpy(keras.ops.softmax(logits, axis=-1))

    def _infer(self, images):
        if not hasattr(self, "_infer_fn"):
            import tensorflow as tf
            # Compiled once per input shape; reduce_retracing keeps varied sizes cheap.
            self._infer_fn = tf.function(lambda x: self.model(x, training=False),
                                         reduce_retracing=True)
        return self._infer_fn(images)

    # ----------------------------------------------------------------- save / load

    def save(self, path: str, optimizer=None, state: dict | None = None) -> None:
        """Writes an atomic one-file checkpoint (see `models.checkpoint`)."""
        opt_vars = None
        if optimizer is not None:
            opt_vars = [keras.ops.convert_to_numpy(v) for v in optimizer.variables]
        checkpoint.save(path, self.config,
                        [keras.ops.convert_to_numpy(w) for w in self.model.weights],
                        [w.path for w in self.model.weights], opt_vars, state)

    def load_weights_from(self, ckpt: dict) -> None:
        """Assigns the weights of a loaded checkpoint dict, checking they match."""
        names = [w.path for w in self.model.weights]
        if names != ckpt["weight_names"]:
            raise checkpoint.CheckpointError(
                "checkpoint weights do not match this network (different architecture "
                "or options)")
        for var, value in zip(self.model.weights, ckpt["weights"]):
            var.assign(value)

    @staticmethod
    def load(path: str) -> "SegNet":
        """Rebuilds the network saved in the checkpoint `path`, with its weights."""
        ckpt = checkpoint.load(path)
        net = SegNet.from_config(ckpt["config"])
        net.load_weights_from(ckpt)
        return net


@register("gcn")
class GCN(SegNet):
    """Global Convolutional Network on ResNet-50 v2 (the article's model).

    Peng et al., "Large Kernel Matters -- Improve Semantic Segmentation by Global
    Convolutional Network", CVPR 2017, https://arxiv.org/abs/1703.02719 (Fig. 2).
    Each of the stride 4, 8, 16, 32 features goes through a GCN block (C channels,
    C = num_classes) and a BR block; from the coarsest level down, the map is
    upsampled x2, added to the next level and refined by BR; two more BR + x2 steps
    reach full size; a 1x1 convolution gives the logits.

    Args:
        input_size: the training image side; sets the default `k`.
        k: GCN kernel size; default `input_size // 32 - 1` (15 at 512), as the article.
    """

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


def build_model(name: str, **kwargs) -> SegNet:
    """An architecture by its command-line name, e.g. `build_model("gcn", k=7)`."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[name](**kwargs)


from models import fcn, deeplab, unet, segnet  # noqa: E402,F401  (registers architectures)
