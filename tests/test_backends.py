"""The model, training and sampling tests again on the JAX Keras backend.

A Keras process has one backend, so this runs them in a child process with
KERAS_BACKEND=jax; the tests marked tensorflow_only (the TensorFlow engines and the
references written with tf.GradientTape) are skipped there. It runs from the TensorFlow
suite (the README's one test command) and is skipped where JAX is not installed.
"""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import keras
import pytest

REPO = Path(__file__).resolve().parents[1]
ON_JAX = ["tests/test_cells.py", "tests/test_model.py", "tests/test_sampling.py",
          "tests/test_train.py"]
# Of the training command's tests, one run (the others check argument handling, resuming and
# the other cells' runs, the same code on every backend, and a training run on JAX costs about
# a minute of compiling; what a resume restores is checked on JAX by test_model.py's
# weights-and-seed-state round trip): the rest of the suite in full.
TRAINING = "run_folder_holds or schedules or not test_train"


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="started from the TF suite")
@pytest.mark.skipif(importlib.util.find_spec("jax") is None,
                    reason="JAX is not installed (pip install -r requirements-jax.txt)")
def test_model_training_and_sampling_tests_pass_on_jax():
    env = dict(os.environ, KERAS_BACKEND="jax")
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", TRAINING,
               *ON_JAX]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=1800)
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    print(f"KERAS_BACKEND=jax {' '.join(command[1:])}: {summary}")
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert " passed" in summary and "failed" not in summary
