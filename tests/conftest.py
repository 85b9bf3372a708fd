"""Shared pytest fixtures, and the skipping of TensorFlow-only tests on other backends."""

import fcntl
import json
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import keras
import pytest

WEB_DIR = Path(__file__).resolve().parents[1] / "examples" / "web"


def pytest_configure(config):
    """A suite started in the background by a script (`python -m pytest &`, where the shell
    makes the job ignore SIGINT) still runs its commands as from a terminal: the Ctrl-C tests'
    children inherit a live SIGINT, not an ignored one."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


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
    # one install at a time: both pytest-xdist workers may need it at once
    with open(Path(tempfile.gettempdir()) / "sketch-rnn-keras-npm-ci.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        have = json.loads(installed.read_text())["packages"] if installed.is_file() else None
        if have is None or any(have.get(name, {}).get("version") != entry.get("version")
                               for name, entry in wanted.items() if name):
            result = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=WEB_DIR, capture_output=True,
                                    text=True, timeout=900)
            if result.returncode != 0:
                lines = (result.stderr or result.stdout).strip().splitlines() or ["no output"]
                pytest.skip(f"npm ci in {WEB_DIR} failed (no network?): {lines[-1]}")
    return modules


JAX_RUN = "test_model_training_and_sampling_tests_pass_on_jax"  # tests/test_backends.py
_jax_run_modules = []  # the module that started the JAX run, to end it at the session's end


def in_xdist_worker(config):
    """True in a pytest-xdist worker (pytest.ini runs the suite on one per core, at most 4)."""
    return hasattr(config, "workerinput")


LONGEST_FIRST = ["test_train.py", "test_robustness.py", "test_distribute.py", "test_fused_lstm.py",
                 "test_sampling.py", "test_evaluate.py", "test_prepare_data.py"]


def position(file_name):
    """Where a test file goes in a pytest-xdist run: the longest first, then the rest in order."""
    return LONGEST_FIRST.index(file_name) if file_name in LONGEST_FIRST else len(LONGEST_FIRST)


def pytest_collection_modifyitems(config, items):
    """Tests marked tensorflow_only (the TensorFlow engines, tf.GradientTape references) are
    skipped on the other Keras backends (KERAS_BACKEND=jax, as tests/test_backends.py runs).
    In pytest-xdist workers on TensorFlow, the JAX run's test goes first (the worker that takes
    it starts the child and waits for it while the other worker runs the suite), then the files
    with the longest end-to-end runs, so that neither worker is left with one at the end
    (pytest.ini's --no-loadscope-reorder keeps this order)."""
    if keras.backend.backend() == "tensorflow":
        if in_xdist_worker(config):
            items.sort(key=lambda item: (item.name != JAX_RUN, position(item.path.name)))  # stable
        return
    skip = pytest.mark.skip(reason=f"TensorFlow only; this run is on {keras.backend.backend()}")
    for item in items:
        if "tensorflow_only" in item.keywords:
            item.add_marker(skip)


def pytest_collection_finish(session):
    """On TensorFlow without pytest-xdist, starts the JAX run of tests/test_backends.py in a
    child process beside the rest of the suite, and moves its test, which waits for it, to the
    end. Here, after every plugin has chosen and ordered the tests (-k, -m, --lf, --ff): only
    when it runs."""
    if (keras.backend.backend() != "tensorflow" or session.config.option.collectonly
            or in_xdist_worker(session.config)):
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
