"""Shared fixtures: the real Oxford sample beside the checkout, and quiet TensorFlow."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")

import learning  # noqa: E402,F401 (TensorFlow CPU settings, as the scripts have them)
import pytest  # noqa: E402

SAMPLE_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..",
                                          "shared", "data", "oxford_pet_sample"))


@pytest.fixture(scope="session")
def oxford_sample():
    """`../shared/data/oxford_pet_sample` (52 real pairs); skips where it is absent."""
    if not os.path.isdir(os.path.join(SAMPLE_DIR, "images")):
        pytest.skip(f"real Oxford sample not found at {SAMPLE_DIR}")
    return SAMPLE_DIR
