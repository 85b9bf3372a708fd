"""Shared pytest fixtures."""

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shared_datasets():
    """Path of the real Sketch-RNN data sets kept beside the repo (../shared/datasets)."""
    path = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
    if not path.is_dir():
        pytest.skip(f"real data sets not found at {path}")
    return path
