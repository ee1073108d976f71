"""Dense CRF post-processing: sharper masks from a network's class probabilities.

A segmentation network sees each pixel through a large, blurry receptive field, so its
masks are blobs whose edges miss the object's real outline. A fully connected CRF
(Krähenbühl & Koltun, "Efficient Inference in Fully Connected CRFs with Gaussian Edge
Potentials", NIPS 2011, https://arxiv.org/abs/1210.5644) pulls every pixel towards the
labels of pixels that are near it *and* of the same colour, so the edges snap to colour
edges. DeepLab v1 and v2 (Chen et al., ICLR 2015, https://arxiv.org/abs/1412.7062;
TPAMI 2018, https://arxiv.org/abs/1606.00915) used it after the network (DeepLab v3
dropped it). Inference is mean-field with the Potts model; with P the network's
probabilities and Q the refined ones:

    U = log(max(P, 1e-8));  Q = P
    repeat `iterations` times:  Q_i = softmax_c(U_i + sum_{j != i} k(i, j) Q_j)
    k(i, j) = bilateral_weight * exp(-|p_i - p_j|^2 / 2 bilateral_sigma_xy^2
                                     - |I_i - I_j|^2 / 2 bilateral_sigma_rgb^2)
            + spatial_weight * exp(-|p_i - p_j|^2 / 2 spatial_sigma^2)

p is a pixel's (row, column) and I its RGB colour in 0..255. The paper sums over every
pixel with a permutohedral lattice; here the sum runs either over every pixel exactly
(`window=None`, O(N^2): the reference, tiny images only) or over a `window` x `window`
neighbourhood (the truncated, convolutional form: each pixel's window gathered at
once, weighted and summed; plain TensorFlow ops that run on a GPU, memory
window^2 x H x W x (C + 1) floats).

Settings. DeepLab's published CRF settings (10 iterations, ~500-px images, found by
grid search on 100 validation images): DeepLab v1 LargeFOV bilateral weight 4,
sigma_xy 121, sigma_rgb 5, spatial weight 3, sigma 3; DeepLab v2 (ResNet-101) 4, 67,
3 and 3, 1. Ours (`DEFAULT_SETTINGS`) were searched the same way, one setting at a
time, with `bench/refine.py --sweep` on the demo test split (64 px, GCN) and on the
truth of 12 real Oxford images coarsened to a stride-16 grid (128 px); README,
"Sharper masks". What we measured: the window bounds each pixel's reach, so the
bilateral weight wants to be higher than DeepLab's full-image kernel (10 beat 4, a
little); sigma_rgb must be far wider than DeepLab's 3-5 (5 gave two thirds of the
boundary gain of 30: small, resized JPEG coats vary by tens of levels); sigma_xy
hardly matters inside an 11-px window; DeepLab v2's spatial sigma 1 does as well as
no spatial term, sigma 3 worse; 10 iterations add a little at the boundaries (+0.01
demo, +0.02 real) for 1.3-1.4x the time. Windows of 15 and 21 gain more on the demo
(boundary mIoU 0.77 -> 0.80 / 0.86) at 2 / 3.5x the time; 11 stays the default for
CPUs. At 512 px an 11-px window reaches less of the object: on a GPU try 21.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

# Chosen with bench/refine.py (README, "Sharper masks"); DeepLab's in the docstring.
DEFAULT_SETTINGS = {"iterations": 5, "spatial_sigma": 1.0, "spatial_weight": 3.0,
                    "bilateral_sigma_xy": 20.0, "bilateral_sigma_rgb": 30.0,
                    "bilateral_weight": 10.0, "window": 11}
MAX_EXACT_PIXELS = 128 * 128  # window=None builds an N x N kernel matrix (64 MB here)
EPSILON = 1e-8


def dense_crf(image, probs, iterations: int = DEFAULT_SETTINGS["iterations"],
              spatial_sigma: float = DEFAULT_SETTINGS["spatial_sigma"],
              spatial_weight: float = DEFAULT_SETTINGS["spatial_weight"],
              bilateral_sigma_xy: float = DEFAULT_SETTINGS["bilateral_sigma_xy"],
              bilateral_sigma_rgb: float = DEFAULT_SETTINGS["bilateral_sigma_rgb"],
              bilateral_weight: float = DEFAULT_SETTINGS["bilateral_weight"],
              window: int | None = DEFAULT_SETTINGS["window"]) -> np.ndarray:
    """Refines class probabilities with a dense CRF (mean-field, Potts model).

    Args:
        image: uint8 RGB image (H, W, 3), or a batch (N, H, W, 3).
        probs: class probabilities (H, W, C) (or (N, H, W, C)), e.g. the softmax of a
            network's logits.
        iterations: mean-field updates (0 returns `probs`).
        spatial_sigma, spatial_weight: the smoothness kernel (position only), in pixels.
        bilateral_sigma_xy, bilateral_sigma_rgb, bilateral_weight: the appearance kernel
            (position in pixels and colour in 0..255).
        window: odd side of the neighbourhood each pixel sums over (neighbours outside
            the image do not exist); None sums over every pixel (exact; at most
            `MAX_EXACT_PIXELS` pixels).

    Returns:
        float32 probabilities shaped like `probs`.

    Example:
        >>> refined = dense_crf(image, net.probabilities(image[None])[0])
        >>> labels = refined.argmax(-1)
    """
    image, probs = _check_inputs(image, probs)
    _check_settings(iterations, spatial_sigma, spatial_weight, bilateral_sigma_xy,
                    bilateral_sigma_rgb, bilateral_weight, window)
    if image.ndim == 4:  # a batch: one image at a time bounds the memory
        return np.stack([dense_crf(i, p, iterations, spatial_sigma, spatial_weight,
                                   bilateral_sigma_xy, bilateral_sigma_rgb,
                                   bilateral_weight, window)
                         for i, p in zip(image, probs)])
    if window is None and image.shape[0] * image.shape[1] > MAX_EXACT_PIXELS:
        raise ValueError(f"window=None (the exact O(N^2) form) is for images of at most "
                         f"{MAX_EXACT_PIXELS} pixels; use an odd window such as 11. "
                         f"Received: {image.shape[0]}x{image.shape[1]}")
    # Tensors, not Python numbers: new settings reuse the graph; only a new window or
    # image size traces it again.
    kernel = tf.constant([spatial_sigma, spatial_weight, bilateral_sigma_xy,
                          bilateral_sigma_rgb, bilateral_weight], tf.float32)
    refine = _refiner(None if window is None else int(window))
    refined = refine(tf.constant(image, tf.float32), tf.constant(probs, tf.float32),
                     tf.constant(int(iterations)), kernel)
    return refined.numpy()


def _check_inputs(image, probs):
    image, probs = np.asarray(image), np.asarray(probs)
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 RGB (0..255). Received: dtype {image.dtype}")
    if image.ndim not in (3, 4) or image.shape[-1] != 3:
        raise ValueError(f"image must be (H, W, 3) or (N, H, W, 3). Received: shape "
                         f"{image.shape}")
    if probs.shape[:-1] != image.shape[:-1] or probs.ndim != image.ndim:
        raise ValueError(f"probs must be (H, W, C) over the image's pixels, "
                         f"{image.shape[:-1]}. Received: shape {probs.shape}")
    if probs.shape[-1] < 2:
        raise ValueError(f"probs needs at least 2 classes. Received: {probs.shape[-1]}")
    if not np.issubdtype(probs.dtype, np.floating) or not np.isfinite(probs).all():
        raise ValueError(f"probs must be finite floats. Received: dtype {probs.dtype}")
    if probs.size and (probs.min() < -1e-6 or probs.max() > 1 + 1e-6):
        raise ValueError(f"probs must be probabilities in [0, 1] (the softmax of the "
                         f"logits, not the logits). Received: values in "
                         f"[{probs.min():.3g}, {probs.max():.3g}]")
    return image, probs


def _check_settings(iterations, spatial_sigma, spatial_weight, bilateral_sigma_xy,
                    bilateral_sigma_rgb, bilateral_weight, window):
    if int(iterations) != iterations or iterations < 0:
        raise ValueError(f"iterations must be an integer >= 0. Received: {iterations}")
    for name, value in (("spatial_sigma", spatial_sigma),
                        ("bilateral_sigma_xy", bilateral_sigma_xy),
                        ("bilateral_sigma_rgb", bilateral_sigma_rgb)):
        if not value > 0:
            raise ValueError(f"{name} must be > 0. Received: {value}")
    for name, value in (("spatial_weight", spatial_weight),
                        ("bilateral_weight", bilateral_weight)):
        if not value >= 0:
            raise ValueError(f"{name} must be >= 0. Received: {value}")
    if window is not None and (int(window) != window or window < 1 or window % 2 == 0):
        raise ValueError(f"window must be None (every pixel) or an odd integer >= 1. "
                         f"Received: {window}")


def _kernel(d2, c2, kernel):
    """k(i, j) from squared position distances `d2` and squared colour distances `c2`."""
    sigma, weight, sigma_xy, sigma_rgb, bilateral_weight = tf.unstack(kernel)
    return (bilateral_weight * tf.exp(-d2 / (2 * sigma_xy ** 2) - c2 / (2 * sigma_rgb ** 2))
            + weight * tf.exp(-d2 / (2 * sigma ** 2)))


def _exact_message(image, kernel):
    """The message function of the exact form: Q (H, W, C) -> sum_{j != i} k(i, j) Q_j."""
    size = tf.shape(image)
    rows, cols = tf.meshgrid(tf.range(size[0]), tf.range(size[1]), indexing="ij")
    position = tf.cast(tf.reshape(tf.stack([rows, cols], -1), (-1, 2)), tf.float32)
    colour = tf.reshape(image, (-1, 3))

    def squared_distances(x):
        return tf.reduce_sum(tf.square(x[:, None, :] - x[None, :, :]), -1)

    k = _kernel(squared_distances(position), squared_distances(colour), kernel)
    k = tf.linalg.set_diag(k, tf.zeros(tf.shape(k)[0]))  # j != i

    def message(q):
        return tf.reshape(k @ tf.reshape(q, (size[0] * size[1], -1)), tf.shape(q))
    return message


def _window_message(image, kernel, window):
    """The message function of the truncated form: every offset (dy, dx) of the window
    but (0, 0) adds k(i, i + offset) * Q_{i + offset}; zero padding makes the pixels
    outside the image contribute nothing. One gather fetches all the offsets at once
    (a loop of slices would make a graph of thousands of ops, slow to build)."""
    r = window // 2
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    offsets = np.delete(np.arange(window * window), window * window // 2)  # no (0, 0)
    dy, dx = (np.stack(np.divmod(offsets, window)) - r).astype(np.int32)[..., None, None]
    rows = tf.range(h)[None, :, None] + r + dy
    cols = tf.range(w)[None, None, :] + r + dx
    index = rows * (w + 2 * r) + cols  # (K, H, W): pixel i + offset k, padded, flat

    def neighbours(x):  # (K, H, W, channels): x at each offset; zeros outside the image
        x = tf.pad(x, [[r, r], [r, r], [0, 0]])
        return tf.gather(tf.reshape(x, (-1, tf.shape(x)[-1])), index)

    d2 = tf.constant((dy ** 2 + dx ** 2)[..., None], tf.float32)  # (K, 1, 1, 1)
    c2 = tf.reduce_sum(tf.square(neighbours(image) - image), -1, keepdims=True)
    weights = _kernel(d2, c2, kernel)  # (K, H, W, 1), computed once: Q does not enter

    def message(q):
        return tf.reduce_sum(weights * neighbours(q), 0)
    return message


_REFINERS = {}


def _refiner(window):
    """The compiled mean-field loop for `window` (a graph per window and image size)."""
    if window not in _REFINERS:
        _REFINERS[window] = tf.function(
            lambda image, probs, iterations, kernel: _mean_field(
                image, probs, iterations, kernel, window), reduce_retracing=True)
    return _REFINERS[window]


def _mean_field(image, probs, iterations, kernel, window):
    """`iterations` mean-field updates Q = softmax(U + message(Q)) from Q = P."""
    if window is None:
        message = _exact_message(image, kernel)
    else:
        message = _window_message(image, kernel, window)
    unary = tf.math.log(tf.maximum(probs, EPSILON))
    q = probs
    for _ in tf.range(iterations):
        q = tf.nn.softmax(unary + message(q), axis=-1)
    return q
