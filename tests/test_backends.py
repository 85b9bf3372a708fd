"""The model, training and sampling tests again on the JAX Keras backend.

A Keras process has one backend, so this runs them in a child process with
KERAS_BACKEND=jax; the tests marked tensorflow_only (the TensorFlow engines and the
references written with tf.GradientTape) are skipped there. It runs from the TensorFlow
suite (the README's one test command) and is skipped where JAX is not installed.

The child works beside the TensorFlow tests, much of whose time is Python and compiling on
one core. In the README's run (pytest-xdist, two workers) this test goes first: the worker that
takes it starts the child and waits for it while the other worker runs the suite. Without
pytest-xdist (-n 0), the child starts when the suite has been collected (`conftest.py` calls
`start_jax_run`) and this test, moved to the end of the suite, waits for it.
"""

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import keras
import pytest

REPO = Path(__file__).resolve().parents[1]
ON_JAX = ["tests/test_cells.py", "tests/test_model.py", "tests/test_sampling.py",
          "tests/test_train.py", "tests/test_warm_start.py"]
# Of the training command's tests, one run (the others check argument handling, resuming and
# the other cells' runs, the same code on every backend, and a training run on JAX costs about
# a minute of compiling; what a resume restores is checked on JAX by test_model.py's
# weights-and-seed-state round trip): the rest of the suite in full.
TRAINING = "run_folder_holds or schedules or not test_train"
RUNS_HERE = keras.backend.backend() == "tensorflow" and importlib.util.find_spec("jax") is not None
TIMEOUT = 1800

_child = {}  # the running child: "process", "output" (a file), "command", "basetemp"


def start_jax_run():
    """Starts the child pytest on JAX, once; does nothing where this test is skipped."""
    if not RUNS_HERE or _child:
        return
    output = tempfile.TemporaryFile("w+")
    basetemp = tempfile.mkdtemp(prefix="sketch-rnn-jax-tests-")  # its own, beside the parent's
    command = [sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider",
               f"--basetemp={basetemp}", "-k", TRAINING, *ON_JAX]
    process = subprocess.Popen(command, cwd=REPO, env=dict(os.environ, KERAS_BACKEND="jax"),
                               stdout=output, stderr=subprocess.STDOUT, text=True)
    _child.update(process=process, output=output, command=command, basetemp=basetemp)


def stop_jax_run():
    """Ends the child if it still runs (the suite stopped before this test), removes its
    temporary folder and forgets it."""
    if _child:
        if _child["process"].poll() is None:
            _child["process"].kill()
            _child["process"].wait()
        _child["output"].close()
        shutil.rmtree(_child["basetemp"], ignore_errors=True)
        _child.clear()


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="started from the TF suite")
@pytest.mark.skipif(importlib.util.find_spec("jax") is None,
                    reason="JAX is not installed (pip install -r requirements-jax.txt)")
def test_model_training_and_sampling_tests_pass_on_jax():
    start_jax_run()  # when conftest did not (this file run on its own under another plugin set)
    try:
        returncode = _child["process"].wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        stop_jax_run()
        pytest.fail(f"the JAX run was still running {TIMEOUT} s after this test began waiting")
    _child["output"].seek(0)
    stdout = _child["output"].read()
    command = _child["command"]
    stop_jax_run()
    summary = stdout.strip().splitlines()[-1] if stdout.strip() else ""
    print(f"KERAS_BACKEND=jax {' '.join(command[1:])}: {summary}")
    assert returncode == 0, stdout[-9000:]
    assert " passed" in summary and "failed" not in summary
