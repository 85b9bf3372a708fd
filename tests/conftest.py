"""Shared pytest fixtures, and the skipping of TensorFlow-only tests on other backends."""

from pathlib import Path

import keras
import pytest


@pytest.fixture(scope="session")
def shared_datasets():
    """Path of the real Sketch-RNN data sets kept beside the repo (../shared/datasets)."""
    path = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
    if not path.is_dir():
        pytest.skip(f"real data sets not found at {path}")
    return path


def pytest_collection_modifyitems(config, items):
    """Tests marked tensorflow_only (the TensorFlow engines, tf.GradientTape references) are
    skipped on the other Keras backends (KERAS_BACKEND=jax, as tests/test_backends.py runs)."""
    if keras.backend.backend() == "tensorflow":
        return
    skip = pytest.mark.skip(reason=f"TensorFlow only; this run is on {keras.backend.backend()}")
    for item in items:
        if "tensorflow_only" in item.keywords:
            item.add_marker(skip)
