"""Test-time augmentation, and the label predictor test.py and draw.py share.

DeepLab (Chen et al., https://arxiv.org/abs/1606.00915, Sec. 4; v3+ Sec. 4.3) evaluates
each image at several scales and mirrored, and averages the class probabilities: a
pet that is small at one scale is seen at a size the network handles better at
another, and the flip averages away left/right biases of the filters. Each pass:
resize the image (bilinear) to `scale` x its size rounded to the network's stride,
predict, softmax, flip back, resize the probabilities back (bilinear); then average.

    >>> probs = tta_probabilities(net, images)                  # (N, H, W, C)
    >>> predict = label_predictor(net, tta={"scales": [1.0, 1.25], "flip": True},
    ...                           crf=models.crf.DEFAULT_SETTINGS)
    >>> labels = predict(images)                                 # (N, H, W) uint8
"""

from __future__ import annotations

import logging
import math

import numpy as np
import tensorflow as tf

DEFAULT_SCALES = (0.75, 1.0, 1.25)
_noted: set[str] = set()


def _note_once(message: str) -> None:
    """Logs `message` the first time only (it would repeat for every batch)."""
    if message not in _noted:
        _noted.add(message)
        logging.info(message)


def scaled_sizes(net, height: int, width: int, scales=DEFAULT_SCALES) -> list:
    """`[(scale, (h, w)), ...]`: the input size each scale uses, rounded to the nearest
    multiple of `net.output_stride` (at least one stride). Scales the network cannot
    take are left out with a logged note, and a scale that rounds to the size of an
    earlier one is left out too (it would predict the same thing again).

    Raises:
        ValueError: no scale fits the network.
    """
    scales = [float(s) for s in scales]
    if not scales or min(scales) <= 0:
        raise ValueError(f"--tta-scales needs one or more positive scales. Received: "
                         f"{scales}")
    stride = net.output_stride
    fixed = tuple(net.input_shape[1:3])  # (None, None) unless built for one size
    used, seen = [], set()
    for scale in scales:
        size = tuple(max(stride, math.floor(side * scale / stride + 0.5) * stride)
                     for side in (height, width))
        if any(f is not None and f != s for f, s in zip(fixed, size)):
            _note_once(f"--tta: scale {scale} skipped: the network takes "
                       f"{fixed[0]}x{fixed[1]} images only, not {size[0]}x{size[1]}")
            continue
        try:
            net.check_input_size(*size)
        except ValueError as e:
            _note_once(f"--tta: scale {scale} skipped: {e}")
            continue
        if size in seen:
            _note_once(f"--tta: scale {scale} gives {size[0]}x{size[1]} like another "
                       f"scale at {height}x{width} (stride {stride}); predicted once")
            continue
        seen.add(size)
        used.append((scale, size))
    if not used:
        raise ValueError(f"--tta: none of the scales {scales} fits "
                         f"{net.architecture} at {height}x{width}; choose others "
                         f"with --tta-scales")
    return used


def tta_probabilities(net, images, scales=DEFAULT_SCALES, flip: bool = True):
    """Class probabilities (N, H, W, C) float32 of uint8 images (N, H, W, 3), averaged
    over `scales` and, with `flip`, horizontal mirrors.

    With `scales=(1.0,)` and `flip=False` this is the plain softmax of the logits
    (`net.probabilities`) for sizes that are multiples of the stride.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be uint8 (N, H, W, 3). Received: "
                         f"{images.dtype} {images.shape}")
    height, width = images.shape[1:3]
    total, count = 0.0, 0
    for _, size in scaled_sizes(net, height, width, scales):
        x = images
        if size != (height, width):
            resized = tf.image.resize(images, size, method="bilinear")
            x = tf.cast(tf.round(tf.clip_by_value(resized, 0, 255)), tf.uint8).numpy()
        for mirrored in (False, True) if flip else (False,):
            probs = net.probabilities(x[:, :, ::-1] if mirrored else x)
            if mirrored:
                probs = probs[:, :, ::-1]
            if size != (height, width):
                probs = tf.image.resize(probs, (height, width), method="bilinear").numpy()
            total += probs
            count += 1
    return np.asarray(total / count, dtype=np.float32)


def probability_predictor(net, tta: dict | None = None, crf: dict | None = None):
    """A function uint8 images (N, H, W, 3) -> class probabilities (N, H, W, C).

    Args:
        net: a `SegNet`.
        tta: None (one plain pass) or `tta_probabilities`' options, e.g.
            `{"scales": [0.75, 1.0, 1.25], "flip": True}`.
        crf: None, or `models.crf.dense_crf` settings applied to the probabilities.
    """
    def predict(images):
        if tta is None:
            probs = net.probabilities(images)
        else:
            probs = tta_probabilities(net, images, **tta)
        if crf is not None:
            from models.crf import dense_crf
            probs = dense_crf(np.asarray(images), probs, **crf)
        return probs
    return predict


def label_predictor(net, tta: dict | None = None, crf: dict | None = None):
    """A function uint8 images (N, H, W, 3) -> labels (N, H, W) uint8: the arg-max of
    `probability_predictor`; with neither `tta` nor `crf`, `net.predict_labels`,
    whose arg-max runs in the graph."""
    if tta is None and crf is None:
        return net.predict_labels
    probabilities = probability_predictor(net, tta, crf)
    return lambda images: probabilities(images).argmax(-1).astype(np.uint8)
