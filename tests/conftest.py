"""Shared pytest fixtures, and the skipping of TensorFlow-only tests on other backends."""

import json
import shutil
import subprocess
from pathlib import Path

import keras
import pytest

WEB_DIR = Path(__file__).resolve().parents[1] / "examples" / "web"


@pytest.fixture(scope="session")
def shared_datasets():
    """Path of the real Sketch-RNN data sets kept beside the repo (../shared/datasets)."""
    path = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
    if not path.is_dir():
        pytest.skip(f"real data sets not found at {path}")
    return path


@pytest.fixture(scope="session")
def node_modules():
    """examples/web/node_modules, installed by `npm ci` from the committed package-lock.json
    when missing or out of date (it holds @magenta/sketch and playwright-core). Skips the
    test when Node.js or npm is absent, or when npm cannot install (no network)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("Node.js (node and npm) is not installed")
    modules = WEB_DIR / "node_modules"
    wanted = json.loads((WEB_DIR / "package-lock.json").read_text())["packages"]
    installed = modules / ".package-lock.json"  # what npm last installed there
    if not installed.is_file() or any(
            json.loads(installed.read_text())["packages"].get(name, {}).get("version") != entry.get("version")
            for name, entry in wanted.items() if name):
        result = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=WEB_DIR, capture_output=True,
                                text=True, timeout=900)
        if result.returncode != 0:
            lines = (result.stderr or result.stdout).strip().splitlines() or ["no output"]
            pytest.skip(f"npm ci in {WEB_DIR} failed (no network?): {lines[-1]}")
    return modules


JAX_RUN = "test_model_training_and_sampling_tests_pass_on_jax"  # tests/test_backends.py
_jax_run_modules = []  # the module that started the JAX run, to end it at the session's end


def pytest_collection_modifyitems(config, items):
    """Tests marked tensorflow_only (the TensorFlow engines, tf.GradientTape references) are
    skipped on the other Keras backends (KERAS_BACKEND=jax, as tests/test_backends.py runs)."""
    if keras.backend.backend() == "tensorflow":
        return
    skip = pytest.mark.skip(reason=f"TensorFlow only; this run is on {keras.backend.backend()}")
    for item in items:
        if "tensorflow_only" in item.keywords:
            item.add_marker(skip)


def pytest_collection_finish(session):
    """On TensorFlow, starts the JAX run of tests/test_backends.py in a child process beside
    the rest of the suite, and moves its test, which waits for it, to the end. Here, after
    every plugin has chosen and ordered the tests (-k, -m, --lf, --ff): only when it runs."""
    if keras.backend.backend() != "tensorflow" or session.config.option.collectonly:
        return
    jax_runs = [item for item in session.items if item.name == JAX_RUN]
    if jax_runs:
        for item in jax_runs:
            session.items.remove(item)
            session.items.append(item)
        jax_runs[0].module.start_jax_run()
        _jax_run_modules.append(jax_runs[0].module)


def pytest_sessionfinish(session):
    """Ends the JAX run if the suite stopped before its test waited for it (-x, Ctrl-C)."""
    for module in _jax_run_modules:
        module.stop_jax_run()
