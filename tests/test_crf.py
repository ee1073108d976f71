"""The dense CRF against a brute-force mean field written out here, its argument
checks, a two-colour sanity case; and the boundary band it is measured by."""

import numpy as np
import pytest

from learning.evaluators import IGNORE_LABEL, boundary_band
from models.crf import DEFAULT_SETTINGS, dense_crf

SETTINGS = {"iterations": 3, "spatial_sigma": 2.0, "spatial_weight": 1.0,
            "bilateral_sigma_xy": 3.0, "bilateral_sigma_rgb": 60.0,
            "bilateral_weight": 2.0}


def brute_force_crf(image, probs, window, iterations, spatial_sigma, spatial_weight,
                    bilateral_sigma_xy, bilateral_sigma_rgb, bilateral_weight):
    """The mean-field update of models/crf.py's docstring, pixel pair by pixel pair,
    in float64."""
    h, w, _ = probs.shape
    colour = image.astype(np.float64)
    unary = np.log(np.maximum(probs, 1e-8))
    q = probs.astype(np.float64)
    for _ in range(iterations):
        message = np.zeros_like(q)
        for i in range(h):
            for j in range(w):
                for y in range(h):
                    for x in range(w):
                        near = window is None or (abs(y - i) <= window // 2
                                                  and abs(x - j) <= window // 2)
                        if (y, x) == (i, j) or not near:
                            continue
                        d2 = (y - i) ** 2 + (x - j) ** 2
                        c2 = np.sum((colour[i, j] - colour[y, x]) ** 2)
                        k = (bilateral_weight * np.exp(-d2 / (2 * bilateral_sigma_xy ** 2)
                                                       - c2 / (2 * bilateral_sigma_rgb ** 2))
                             + spatial_weight * np.exp(-d2 / (2 * spatial_sigma ** 2)))
                        message[i, j] += k * q[y, x]
        z = unary + message
        z = np.exp(z - z.max(-1, keepdims=True))
        q = z / z.sum(-1, keepdims=True)
    return q


@pytest.fixture(scope="module")
def small():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)
    probs = rng.random((7, 9, 3))
    return image, probs / probs.sum(-1, keepdims=True)


@pytest.mark.parametrize("window", [None, 3, 5])
def test_both_forms_match_the_brute_force_mean_field(small, window):
    image, probs = small
    expected = brute_force_crf(image, probs, window, **SETTINGS)
    got = dense_crf(image, probs, window=window, **SETTINGS)
    assert got.shape == probs.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert np.abs(got - probs).max() > 0.05  # the CRF did change something


def test_a_window_covering_the_image_is_the_exact_form(small):
    image, probs = small
    # 17 = 2 * 9 - 1: every pixel reaches every other one.
    np.testing.assert_allclose(dense_crf(image, probs, window=17, **SETTINGS),
                               dense_crf(image, probs, window=None, **SETTINGS),
                               atol=1e-6)


def test_outputs_are_probabilities_and_batches_are_per_image(small):
    image, probs = small
    out = dense_crf(image, probs)  # the defaults
    assert out.min() >= 0 and np.allclose(out.sum(-1), 1, atol=1e-5)
    batch = dense_crf(np.stack([image, image[::-1]]), np.stack([probs, probs[::-1]]))
    np.testing.assert_allclose(batch[0], out, atol=1e-6)
    np.testing.assert_allclose(batch[1], dense_crf(image[::-1], probs[::-1]), atol=1e-6)
    # No iteration: the probabilities as given.
    np.testing.assert_allclose(dense_crf(image, probs, iterations=0), probs, atol=1e-6)


def test_the_crf_fixes_a_noisy_label_but_keeps_the_colour_edge():
    # Left half red (class 0), right half blue (class 1); the network is 80% sure
    # everywhere except one red pixel it gets wrong (60% class 1) and a red column
    # next to the edge it is unsure about (55% class 1).
    image = np.zeros((12, 12, 3), np.uint8)
    image[:, :6] = (200, 30, 30)
    image[:, 6:] = (30, 30, 200)
    p1 = np.where(np.arange(12) < 6, 0.2, 0.8) * np.ones((12, 1))
    p1[5, 2] = 0.6
    p1[:, 5] = 0.55
    probs = np.stack([1 - p1, p1], -1)
    assert (probs.argmax(-1)[:, :6] == 1).sum() == 13  # 13 wrong pixels before
    labels = dense_crf(image, probs).argmax(-1)
    assert (labels[:, :6] == 0).all() and (labels[:, 6:] == 1).all()


@pytest.mark.parametrize("change, message", [
    ({"window": 4}, "window must be None"),
    ({"window": 0}, "window must be None"),
    ({"iterations": -1}, "iterations"),
    ({"bilateral_sigma_rgb": 0.0}, "bilateral_sigma_rgb must be > 0"),
    ({"spatial_weight": -1.0}, "spatial_weight must be >= 0"),
])
def test_bad_settings_say_which_and_what_was_received(small, change, message):
    image, probs = small
    with pytest.raises(ValueError, match=message) as info:
        dense_crf(image, probs, **change)
    assert "Received:" in str(info.value)


def test_bad_inputs_say_what_was_received(small):
    image, probs = small
    with pytest.raises(ValueError, match="uint8.*Received: dtype float32"):
        dense_crf(image.astype(np.float32), probs)
    with pytest.raises(ValueError, match=r"Received: shape \(7, 8, 3\)"):
        dense_crf(image, probs[:, :8])
    with pytest.raises(ValueError, match="not the logits"):
        dense_crf(image, np.log(probs))
    with pytest.raises(ValueError, match="at least 2 classes"):
        dense_crf(image, probs[..., :1])
    big = np.zeros((129, 128, 3), np.uint8)
    with pytest.raises(ValueError, match="use an odd window.*Received: 129x128"):
        dense_crf(big, np.full((129, 128, 2), 0.5), window=None)


def test_default_settings_are_the_documented_ones():
    assert DEFAULT_SETTINGS["window"] % 2 == 1
    assert set(DEFAULT_SETTINGS) == {"iterations", "spatial_sigma", "spatial_weight",
                                     "bilateral_sigma_xy", "bilateral_sigma_rgb",
                                     "bilateral_weight", "window"}


# --------------------------------------------------------------------------- band


def test_boundary_band_by_hand():
    row = np.array([[0, 0, 0, 1, 1, 1, 1]])
    # width 1: the two pixels that touch; width 2: two on each side.
    assert boundary_band(row, 1).astype(int).tolist() == [[0, 0, 1, 1, 0, 0, 0]]
    assert boundary_band(row, 2).astype(int).tolist() == [[0, 1, 1, 1, 1, 0, 0]]
    # A trimap's unknown ring (ignored) is never in the band, but it is the outline:
    # Oxford draws it between pet and background, up to tens of pixels wide, so the
    # classes themselves are rarely within a few pixels of each other.
    gap = np.array([[0, 0, IGNORE_LABEL, 1, 1]])
    assert boundary_band(gap, 1).astype(int).tolist() == [[0, 1, 0, 1, 0]]
    assert boundary_band(gap, 2).astype(int).tolist() == [[1, 1, 0, 1, 1]]
    wide = np.array([[0] * 3 + [IGNORE_LABEL] * 10 + [1] * 3])  # a 10-px ring
    assert boundary_band(wide, 2).astype(int).tolist() == [[0, 1, 1] + [0] * 10
                                                          + [1, 1, 0]]
    # The edge of an image against its padding (ignored too) is no boundary.
    padded = np.array([[0, 0, IGNORE_LABEL, IGNORE_LABEL]])
    assert not boundary_band(padded, 3, padding=padded == IGNORE_LABEL).any()


def test_boundary_band_is_a_disc_and_takes_batches():
    labels = np.zeros((2, 9, 9), np.uint8)
    labels[:, 4, 4] = 2  # one pixel of class 2 in a background of class 0
    band = boundary_band(labels, 2)
    dy, dx = np.mgrid[-4:5, -4:5]
    expected = dy ** 2 + dx ** 2 <= 4  # Euclidean radius 2 around the pixel
    assert (band[0] == expected).all() and (band[1] == expected).all()
    with pytest.raises(ValueError, match="Received: 0"):
        boundary_band(labels, 0)
