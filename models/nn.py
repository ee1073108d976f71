"""`SegNet`, the base of every network: a Keras model from uint8 images to logits.

The article's `SegNet` was a plain class that built a TF-slim graph and its loss. Here
the network *is* the Keras model (keras-hub's pattern): a subclass such as `GCN` builds
its functional graph in `__init__` and hands the input and output to
`SegNet.__init__`; its config is its constructor arguments, so a saved run opens as
the same class:

    >>> import keras, models
    >>> net = keras.models.load_model("runs/demo/best.keras")   # a models.GCN
    >>> net.predict_labels(images)                              # (N, H, W) uint8

Where the article's names meet `keras.Model`'s, Keras' meaning wins:

    article                    here
    SegNet.build()             the subclass' __init__ (Keras' `build` keeps its meaning)
    SegNet.predict(set, n)     predict_probabilities(set, n) (Keras' `predict`: logits)
    the loss of build()        models.losses.make_loss(model.loss_name)
    saver.save / restore       model.save(...) / keras.models.load_model(...)
"""

from __future__ import annotations

import keras
import numpy as np

from common.labels import NUM_CLASSES


@keras.saving.register_keras_serializable(package="segmentation")
class SegNet(keras.Model):
    """Base of all segmentation networks: uint8 RGB images (N, H, W, 3) of any size the
    architecture allows in, per-pixel class logits (N, H, W, C) out.

    Subclasses build their graph, then call
    `super().__init__(inputs, outputs, num_classes=..., ...)`; they set
    `architecture` (the `--model` name), and `output_stride` where sizes must be
    multiples of something other than 32.

    Args:
        inputs, outputs: the functional graph (`outputs` a tensor, or a dict of them).
        num_classes: classes including background (3: background, cat, dog).
        loss: the name of its loss in `models.losses.LOSSES` (what the trainer
            compiles it with), or None for a model that computes its own (SOLO).
        input_size: the side of the square images it is trained on; the default size
            at which `test.py` and `draw.py` predict, and what some architectures
            derive defaults from (GCN's kernel size, SOLO's scale ranges).
        **kwargs: `keras.Model`'s (`name`, `trainable`).
    """

    architecture = "segnet"
    task = "semantic"            # what train.py / test.py / draw.py do with it
    output_stride = 32           # height and width must be multiples of this
    pretrained_backbone = True   # False: trains from random weights only

    def __init__(self, inputs, outputs, *, num_classes: int = NUM_CLASSES,
                 loss: str | None = "ce", input_size: int = 512, **kwargs):
        check_sizes(num_classes, input_size)
        # A mixed-precision policy computes in float16/bfloat16; logits stay float32,
        # so the softmax and the loss do too.
        if isinstance(outputs, dict):
            outputs = {k: _as_float32(v, f"{k}_float32") for k, v in outputs.items()}
        else:
            outputs = _as_float32(outputs, "logits_float32")
        kwargs.setdefault("name", self.architecture)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        # === Config ===
        self.num_classes = num_classes
        self.loss_name = loss
        self.input_size = input_size

    def get_config(self) -> dict:
        """The constructor arguments that rebuild this network (its weights aside)."""
        return {"name": self.name, "trainable": self.trainable,
                "num_classes": self.num_classes, "loss": self.loss_name,
                "input_size": self.input_size}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        """Rebuilds the architecture with random weights (Keras then loads the saved
        ones into it)."""
        return cls(**config)

    # === Sizes ===

    def check_input_size(self, height: int, width: int) -> None:
        """Raises a ValueError with the fix when the size does not fit the network."""
        s = self.output_stride
        if height % s or width % s or height <= 0 or width <= 0:
            raise ValueError(f"{self.architecture} needs a height and width that are "
                             f"multiples of {s}; received {height}x{width}. Choose "
                             f"--image-size as a multiple of {s} (e.g. "
                             f"{max(s, round(height / s) * s)}).")

    # === Prediction ===

    def predict_labels(self, images) -> np.ndarray:
        """Class labels (n, H, W) uint8 for one batch of uint8 images (n, H, W, 3).

        The arg-max runs in the compiled graph, so one byte per pixel comes back.
        """
        images = np.asarray(images)
        self.check_input_size(*images.shape[1:3])
        if getattr(self, "_labels_function", None) is None:
            import tensorflow as tf

            def labels(x):
                return tf.cast(tf.argmax(self(x, training=False), -1), tf.uint8)
            # one trace per input shape; reduce_retracing keeps varied sizes cheap
            self._labels_function = tf.function(labels, reduce_retracing=True)
        return self._labels_function(images).numpy()

    def probabilities(self, images) -> np.ndarray:
        """Class probabilities (n, H, W, C) float32 of one batch of uint8 images."""
        images = np.asarray(images)
        self.check_input_size(*images.shape[1:3])
        logits = self.predict_on_batch(images)
        return keras.ops.convert_to_numpy(keras.ops.softmax(logits, axis=-1))

    def predict_probabilities(self, data, batch_size: int = 8,
                              verbose: bool = False) -> np.ndarray:
        """The article's `predict`: probabilities (N, H, W, C) float32 of every image
        of `data`, a `datasets.data.DataSet`, a uint8 array (N, H, W, 3) or a
        `tf.data` stream of images (or of `(images, ...)` tuples)."""
        batches = image_batches(data, batch_size)
        if verbose:
            from tqdm import tqdm
            batches = tqdm(batches, desc="predicting", unit="batch", leave=False)
        out = [self.probabilities(images) for images in batches]
        if not out:
            raise ValueError("nothing to predict: the data holds no image")
        return np.concatenate(out)


def image_batches(data, batch_size: int):
    """Yields uint8 image batches from a DataSet, an array or a tf.data stream."""
    if hasattr(data, "images") and hasattr(data, "num_examples"):  # a DataSet
        data = data.images
    if isinstance(data, np.ndarray):
        if data.ndim == 3:
            data = data[None]
        for i in range(0, len(data), batch_size):
            yield data[i:i + batch_size]
        return
    for batch in data:
        yield np.asarray(batch[0] if isinstance(batch, (tuple, list)) else batch)


def check_sizes(num_classes: int, input_size: int) -> None:
    """Fails early, naming the argument, on a class count or size that cannot work."""
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be at least 1. Received: {num_classes}")
    if int(input_size) < 1:
        raise ValueError(f"input_size must be positive. Received: {input_size}")


def image_input(name: str = "image"):
    """The model input: a batch of uint8 RGB images of any height and width."""
    return keras.Input(shape=(None, None, 3), dtype="uint8", name=name)


def _as_float32(tensor, name: str):
    if tensor.dtype == "float32":
        return tensor
    return keras.layers.Activation("linear", dtype="float32", name=name)(tensor)
