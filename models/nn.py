"""`SegNet`, the base every architecture subclasses, and the `keras.Model` it builds.

A `SegNet` owns a `keras.Model` (`.model`) that takes a batch of raw uint8 RGB images of
any size its architecture allows and returns per-pixel class logits (N, H, W, C). The
base also owns the loss and prediction over a `DataSet` / `tf.data` stream / array (the
article's API); saving is Keras' own `.keras` format. A subclass writes `build(inputs,
weights)` and registers itself with `keras.saving.register_keras_serializable`, so
`keras.models.load_model` can rebuild it by name after `import models`.

Example:
    >>> net = GCN(num_classes=3, weights=None, input_size=64)
    >>> net.model(np.zeros((2, 64, 96, 3), np.uint8)).shape
    TensorShape([2, 64, 96, 3])
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import keras
import numpy as np

from learning.labels import NUM_CLASSES
from models import checkpoint
from models.layers import image_input
from models.losses import make_loss


def _per_replica_logs(logs):
    """A step's scalar logs as shape-(1,) tensors when training across machines.

    There Keras averages each log over the replicas with `reduce("MEAN", axis=0)`,
    which needs a batch axis; on one machine the logs pass unchanged."""
    import tensorflow as tf
    strategy = tf.distribute.get_strategy()
    multi_worker = getattr(strategy.extended, "_in_multi_worker_mode", lambda: False)
    if not (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            and multi_worker()):
        return logs
    return {k: tf.reshape(v, [1]) if len(v.shape) == 0 else v for k, v in logs.items()}


@keras.saving.register_keras_serializable(package="segmentation")
class SegmentationModel(keras.Model):
    """The functional `keras.Model` of a `SegNet`: uint8 images in, logits out.

    Its config is the architecture's (`SegNet.get_config`), not a list of layers:
    `from_config` rebuilds the network through its `SegNet` class, exactly as it was
    first built, and Keras then loads the weights into it by layer. `.segnet` gives
    the `SegNet` back (for `predict`, `output_stride`, ...).
    """

    def __init__(self, inputs, outputs, segnet: "SegNet", **kwargs):
        super().__init__(inputs, outputs, **kwargs)
        self.segnet = segnet

    def get_config(self):
        return {"name": self.name,
                "segnet": keras.saving.serialize_keras_object(self.segnet)}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        segnet = keras.saving.deserialize_keras_object(config["segnet"],
                                                       custom_objects=custom_objects)
        return segnet.model

    # --- Workarounds for Keras 3 fit under MultiWorkerMirroredStrategy ----------
    # Keras' TensorFlow trainer does two reductions that fail across several
    # machines (keras-team/keras#20585); the two methods below sidestep them and
    # change nothing on one machine.

    def train_step(self, data):
        return _per_replica_logs(super().train_step(data))

    def test_step(self, data):
        return _per_replica_logs(super().test_step(data))

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Keras' TensorFlow trainer learns the shapes of a distributed batch by
        averaging it over the replicas, a reduction `MultiWorkerMirroredStrategy`
        cannot do on an `(images, labels)` pair, nor on uint8 (keras-team/keras
        #20585). The first replica's share has the shapes and dtypes it needs."""
        import tensorflow as tf
        if iterator is None or data_batch is not None or self.distribute_strategy is None:
            return super()._maybe_symbolic_build(iterator, data_batch)
        for _, _, batches in iterator:
            batch = next(batches)
            break
        first = keras.tree.map_structure(
            lambda v: v.values[0] if isinstance(v, tf.distribute.DistributedValues) else v,
            batch)
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=first)


class SegNet(ABC):
    """Base of all segmentation networks.

    Args:
        num_classes: classes including background (3: background, cat, dog).
        weights: backbone weights: "imagenet", a local file path, or None (random).
        loss: loss name from `models.losses.LOSSES` ("ce": cross-entropy over the
            counted pixels).
        **kwargs: architecture options, stored in `config` with the above (except
            `weights`) so a saved model can be rebuilt.
    """

    architecture = "segnet"
    output_stride = 32           # height and width must be multiples of this
    pretrained_backbone = True   # False: trains from random weights only

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
        if logits.dtype != "float32":  # a mixed-precision policy: float32 logits
            logits = keras.layers.Activation("linear", dtype="float32",
                                             name="logits_float32")(logits)
        self.model = SegmentationModel(inputs, logits, segnet=self,
                                       name=self.architecture)

    @abstractmethod
    def build(self, inputs, weights):
        """Builds the graph from the uint8 `inputs` tensor; returns logits (N, H, W, C)."""

    # ----------------------------------------------------------------- config

    def get_config(self) -> dict:
        """The constructor arguments that rebuild this network (weights aside)."""
        return {"num_classes": self.num_classes, "loss": self.loss_name, **self.options}

    @classmethod
    def from_config(cls, config: dict) -> "SegNet":
        """Rebuilds the architecture with random weights."""
        return cls(weights=None, **config)

    @property
    def config(self) -> dict:
        """`get_config()` plus the architecture's `--model` name, as in config.json."""
        return {"architecture": self.architecture, **self.get_config()}

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
        logits = self._infer(images)
        return keras.ops.convert_to_numpy(keras.ops.softmax(logits, axis=-1))

    def predict_labels(self, images) -> np.ndarray:
        """Class labels (n, H, W) uint8 for one batch of uint8 images (n, H, W, 3).

        The arg-max runs in the graph, so only one byte per pixel comes back.
        """
        return keras.ops.convert_to_numpy(self._infer(images, labels=True))

    def _infer(self, images, labels: bool = False):
        """Logits (or arg-max labels) of a batch, after checking its size."""
        self.check_input_size(int(images.shape[1]), int(images.shape[2]))
        if not hasattr(self, "_infer_fns"):
            import tensorflow as tf

            def labels_of(x):
                return tf.cast(tf.argmax(self.model(x, training=False), -1), tf.uint8)
            # Compiled once per input shape; reduce_retracing keeps varied sizes cheap.
            self._infer_fns = {
                False: tf.function(lambda x: self.model(x, training=False),
                                   reduce_retracing=True),
                True: tf.function(labels_of, reduce_retracing=True)}
        return self._infer_fns[labels](images)

    # ----------------------------------------------------------------- save / load

    def save(self, path: str, include_optimizer: bool = False) -> None:
        """Writes the model to a `.keras` file atomically (`models.checkpoint`).

        Keras saves a compiled model's optimizer state with it; without
        `include_optimizer` an uncompiled twin sharing the same layers is saved, so the
        file holds the config and weights only.
        """
        model = self.model
        if not include_optimizer and getattr(model, "optimizer", None) is not None:
            model = SegmentationModel(model.inputs, model.outputs, segnet=self,
                                      name=model.name)
        checkpoint.save_model(model, path)

    @staticmethod
    def load(path: str) -> "SegNet":
        """The network saved in the `.keras` file `path`, with its weights."""
        return SegNet.from_model(checkpoint.load_model(path))

    @staticmethod
    def from_model(model: keras.Model) -> "SegNet":
        """The `SegNet` of a model this project built (e.g. from `load_model`)."""
        segnet = getattr(model, "segnet", None)
        if not isinstance(segnet, SegNet):
            raise checkpoint.CheckpointError(
                f"model {model.name!r} was not built by this project's SegNet "
                f"classes; train it with train.py")
        return segnet
