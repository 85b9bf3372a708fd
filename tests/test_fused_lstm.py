"""The fused LSTM engine (tf_backend/lstm_cell.cc) against the generic unroll and the TF-op loop."""

import dataclasses
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
from recurrences import lstm_layer, lstm_recurrence, lstm_recurrence_autodiff

from seq2seqVAE import (
    HParams,
    build_model,
    compile_model,
)
from sketch_rnn.tf_backend import fused_lstm

pytestmark = pytest.mark.tensorflow_only

TINY = "enc_rnn_size=8,dec_rnn_size=16,z_size=4,num_mixture=3,max_seq_len=12,batch_size=3"


@pytest.fixture(scope="module")
def module():
    built = fused_lstm.load()
    assert built is not None, "the fused kernel did not build on this machine (see the warning)"
    return built


def _case(rng, steps=9, batch=5, units=6):
    import tensorflow as tf

    lengths = np.array([steps, steps - 3, 1, steps - 1, 4][:batch])
    return {
        "projected": tf.constant(rng.normal(size=(steps, batch, 4 * units)), tf.float32),
        "kernel": tf.Variable(rng.normal(scale=0.5, size=(units, 4 * units)), dtype=tf.float32),
        "h0": tf.constant(rng.normal(size=(batch, units)), tf.float32),
        "c0": tf.constant(rng.normal(size=(batch, units)), tf.float32),
        "mask": tf.constant((np.arange(steps)[:, None] < lengths)[..., None]),
        "dropout": tf.constant((rng.random((steps, batch, units)) < 0.8) / 0.8, tf.float32),
        "weights": tf.constant(rng.normal(size=(steps, batch, units)), tf.float32),
    }


def _outputs_and_gradients(recurrence, case, use_mask, use_dropout, reverse, last_h=True, **kwargs):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        tape.watch([case["projected"], case["h0"], case["c0"]])
        # Computed, as in a model (the fused loop updates it in place; a constant it copies).
        projected = 2.0 * case["projected"]
        hs, h, c = recurrence(projected, case["kernel"], case["h0"], case["c0"],
                              case["mask"] if use_mask else None,
                              case["dropout"] if use_dropout else None, reverse=reverse, **kwargs)
        # Reaches every output: the sequence, the last h (unless not `last_h`, as the
        # decoder, whose last h is unused) and the last c.
        loss = tf.reduce_sum(hs * case["weights"]) + tf.reduce_sum(c * c)
        if last_h:
            loss += 0.3 * tf.reduce_sum(h)
    grads = tape.gradient(loss, [case["projected"], case["kernel"], case["h0"], case["c0"]])
    return [hs, h, c, *grads]


@pytest.mark.parametrize("use_mask", [False, True])
@pytest.mark.parametrize("use_dropout", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
def test_fused_cell_equals_autodiff_in_float32(module, use_mask, use_dropout, reverse):
    case = _case(np.random.default_rng(20))
    fused = _outputs_and_gradients(lstm_recurrence, case, use_mask, use_dropout, reverse, fused=True)
    reference = _outputs_and_gradients(lstm_recurrence_autodiff, case, use_mask, use_dropout, reverse)
    names = ["hs", "h", "c", "d_projected", "d_kernel", "d_h0", "d_c0"]
    for name, ours, expected in zip(names, fused, reference):
        np.testing.assert_allclose(ours, expected, atol=2e-5, err_msg=name)


@pytest.mark.parametrize("use_mask", [False, True])
def test_fused_cell_without_a_loss_on_the_last_h(module, use_mask):
    case = _case(np.random.default_rng(24))
    args = dict(use_mask=use_mask, use_dropout=True, reverse=False, last_h=False)
    fused = _outputs_and_gradients(lstm_recurrence, case, fused=True, **args)
    reference = _outputs_and_gradients(lstm_recurrence_autodiff, case, **args)
    for ours, expected in zip(fused, reference):
        np.testing.assert_allclose(ours, expected, atol=2e-5)


@pytest.mark.parametrize("matmul_dtype", [None, "bfloat16"])
def test_fused_cell_in_a_graph_updates_buffers_in_place_and_equals_the_reference(module, matmul_dtype):
    # Eagerly every step copies its buffers; inside a tf.function they are updated in place
    # (and the step's d_gates handed on as a view where aligned: B * 4H * 4 bytes here is not).
    import tensorflow as tf

    case = _case(np.random.default_rng(25), steps=6, batch=5, units=3)
    args = dict(use_mask=True, use_dropout=True, reverse=True, matmul_dtype=matmul_dtype)
    before = fused_lstm.copies()
    fused = tf.function(lambda: _outputs_and_gradients(lstm_recurrence, case, fused=True, **args))()
    assert fused_lstm.copies() == before
    reference = _outputs_and_gradients(lstm_recurrence, case, fused=False, **args)
    for ours, expected in zip(fused, reference):
        np.testing.assert_allclose(ours, expected, atol=2e-5 if matmul_dtype is None else 2e-2)


def test_fused_cell_in_bfloat16_matches_the_tensorflow_op_loop(module):
    # Same rounding points (h and d_gates rounded to bf16 before each matmul), so the two
    # agree far more closely than either agrees with float32.
    case = _case(np.random.default_rng(21), steps=20, batch=4, units=16)
    args = dict(use_mask=True, use_dropout=True, reverse=False, matmul_dtype="bfloat16")
    fused = _outputs_and_gradients(lstm_recurrence, case, fused=True, **args)
    ops_loop = _outputs_and_gradients(lstm_recurrence, case, fused=False, **args)
    exact = _outputs_and_gradients(lstm_recurrence, case, True, True, False, fused=True)
    for ours, reference, full in zip(fused, ops_loop, exact):
        ours, reference, full = (np.asarray(t) for t in (ours, reference, full))
        assert np.linalg.norm(ours - reference) <= 2e-3 * np.linalg.norm(reference)
        assert np.linalg.norm(ours - full) <= 0.02 * np.linalg.norm(full)


def test_the_ops_name_a_bad_shape(module):
    import tensorflow as tf

    def forward(projected, h, buffers, inside=None, step=0, active=None, rows=None):
        inside = tf.zeros([0], tf.bool) if inside is None else inside
        active = tf.zeros([0], tf.int32) if active is None else active
        recurrent = tf.zeros((projected.shape[1] if rows is None else rows, projected.shape[2]))
        return module.sketch_lstm_forward_step(step, recurrent, h, h, inside, tf.zeros([0]), active,
                                               *buffers)

    projected, h = tf.zeros((3, 2, 16)), tf.zeros((2, 4))
    buffers = [tf.zeros((3, 2, 4)), tf.zeros((3, 2, 4)), projected, tf.zeros((3, 2, 4))]
    forward(projected, h, buffers)  # the right shapes
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"expected a state \(B, H\) = \(2, 4\)"):
        forward(projected, tf.zeros((2, 5)), buffers)
    with pytest.raises(tf.errors.InvalidArgumentError, match="`inside` with T \\* B elements"):
        forward(projected, h, buffers, inside=tf.zeros([5], tf.bool))
    with pytest.raises(tf.errors.InvalidArgumentError, match="step 3 is outside 0..2"):
        forward(projected, h, buffers, step=3)
    with pytest.raises(tf.errors.InvalidArgumentError, match="`active` \\(T,\\) with `inside`"):
        forward(projected, h, buffers, active=tf.constant([2, 2, 2]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="`recurrent` \\(B, 4H\\)"):
        forward(projected, h, buffers, rows=1)  # fewer rows, but no `active`

    inside = tf.constant([[True, True], [True, False], [False, False]])
    h_matmul = forward(projected, h, buffers, inside=inside, active=tf.constant([2, 1, 0]))[1]
    assert h_matmul.shape == (1, 4)  # handed on: the next step's one active row
    with pytest.raises(tf.errors.InvalidArgumentError, match="active\\[1\\] = 3 is outside 0..2"):
        forward(projected, h, buffers, inside=inside, active=tf.constant([2, 3, 0]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="inside the sequence at step 0, but only 1"):
        forward(projected, h, buffers, inside=inside, active=tf.constant([1, 1, 0]), rows=1)
    with pytest.raises(tf.errors.InvalidArgumentError, match="`packed` needs `active`"):
        module.sketch_lstm_forward_step(0, tf.zeros((2, 16)), h, h, tf.zeros([0], tf.bool), tf.zeros([0]),
                                        tf.zeros([0], tf.int32), *buffers, packed=True)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("matmul_dtype", [None, "bfloat16"])
@pytest.mark.parametrize("units", [4, 32])  # 32: d_gates rows of 512 bytes, handed on as views
def test_steps_with_few_or_no_rows_inside(module, reverse, matmul_dtype, units):
    # Rows in no order, steps where one row is inside and steps where none is: each step
    # multiplies only the rows up to its last one inside, and the result is unchanged.
    import tensorflow as tf

    case = _case(np.random.default_rng(26), steps=9, batch=5, units=units)
    lengths = np.array([2, 6, 0, 3, 6])
    case["mask"] = tf.constant((np.arange(9)[:, None] < lengths)[..., None])
    args = dict(use_mask=True, use_dropout=True, reverse=reverse)
    fused = tf.function(lambda: _outputs_and_gradients(
        lstm_recurrence, case, fused=True, matmul_dtype=matmul_dtype, **args))()
    if matmul_dtype is None:
        reference = _outputs_and_gradients(lstm_recurrence_autodiff, case, **args)
    else:  # the TF-op loop rounds at the same points
        reference = _outputs_and_gradients(lstm_recurrence, case, fused=False, matmul_dtype=matmul_dtype,
                                           **args)
    names = ["hs", "h", "c", "d_projected", "d_kernel", "d_h0", "d_c0"]
    for name, ours, expected in zip(names, fused, reference):
        np.testing.assert_allclose(ours, expected, atol=2e-5 if matmul_dtype is None else 2e-3, err_msg=name)


@pytest.mark.parametrize("backwards", [False, True])
def test_a_masked_layer_sorts_its_rows_and_returns_them_in_order(module, backwards):
    # The fused engine sorts a masked batch longest first (longest_first); each sketch
    # must still get its own result, as Keras's LSTM run on that sketch alone.
    import tensorflow as tf

    rng = np.random.default_rng(27)
    x = rng.normal(size=(4, 8, 3)).astype(np.float32)
    h0, c0 = (rng.normal(size=(4, 5)).astype(np.float32) for _ in range(2))
    lengths = [3, 7, 3, 5]
    mask = np.arange(8)[None] < np.array(lengths)[:, None]
    ours = lstm_layer(5, go_backwards=backwards, return_sequences=True, fused_cell=True)
    reference = keras.layers.LSTM(5, go_backwards=backwards, return_sequences=True, return_state=True)
    ours(x)
    reference(x)
    reference.set_weights(ours.get_weights())
    outputs, h, c = ours(x, initial_state=[h0, c0], step_mask=mask)
    for i, length in enumerate(lengths):
        alone = reference(x[i:i + 1, :length], initial_state=[h0[i:i + 1], c0[i:i + 1]])
        expected, expected_h, expected_c = alone
        if backwards:  # Keras returns the reversed sequence's outputs in processing order
            expected = expected[:, ::-1]
        np.testing.assert_allclose(outputs[i, :length], expected[0], atol=1e-5)
        np.testing.assert_allclose(h[i], expected_h[0], atol=1e-5)
        np.testing.assert_allclose(c[i], expected_c[0], atol=1e-5)
    # And the gradients are those of the unfused, autodiff layer.
    unfused = lstm_layer(5, go_backwards=backwards, return_sequences=True, custom_gradient=False)
    unfused(x)
    unfused.set_weights(ours.get_weights())
    weights = rng.normal(size=(4, 8, 5)).astype(np.float32)
    grads = []
    for layer in (ours, unfused):
        with tf.GradientTape() as tape:
            outputs, h, c = layer(x, initial_state=[h0, c0], step_mask=mask)
            loss = tf.reduce_sum(outputs * weights) + tf.reduce_sum(h * c)
        grads.append(tape.gradient(loss, layer.trainable_variables))
    for ours_grad, expected in zip(*grads):
        np.testing.assert_allclose(ours_grad, expected, atol=1e-4)


def test_training_step_is_the_same_with_and_without_the_fused_cell(module):
    hps = HParams.parse(TINY + ",lstm_matmul_dtype=float32")
    rng = np.random.default_rng(22)
    x = np.zeros((3, 13, 5), np.float32)
    x[:, 0, 2] = 1
    x[:, 1:9, :2] = rng.normal(size=(3, 8, 2))
    x[:, 1:9, 2] = 1
    x[:, 9:, 4] = 1
    losses, weights = [], []
    for fused in (True, False):
        keras.utils.set_random_seed(3)
        model = compile_model(build_model(dataclasses.replace(hps, fused_lstm_cell=fused)), hps)
        losses.append(model.train_on_batch(x, x[:, 1:], return_dict=True))
        weights.append(model.get_weights())
    for key in losses[0]:
        assert losses[0][key] == pytest.approx(losses[1][key], rel=1e-5), key
    for ours, reference in zip(*weights):
        np.testing.assert_allclose(ours, reference, atol=1e-6)


def test_a_training_step_updates_the_sequence_buffers_in_place(module):
    # A copy would still be correct, but would cost a pass over a (T, B, 4H) buffer per step.
    hps = HParams.parse(TINY)
    model = compile_model(build_model(hps), hps)
    x = np.zeros((3, 13, 5), np.float32)
    x[:, :, 2] = 1
    before = fused_lstm.copies()
    model.train_on_batch(x, x[:, 1:])
    model.train_on_batch(x, x[:, 1:])
    assert fused_lstm.copies() == before


def test_no_compiler_means_a_warning_and_the_tensorflow_ops(monkeypatch, tmp_path):
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("SKETCH_RNN_KERNEL_DIR", str(tmp_path))
    monkeypatch.setattr(fused_lstm, "_loaded", {})
    with pytest.warns(UserWarning, match="fused LSTM kernel is off.*no C\\+\\+ compiler.*set CXX"):
        assert fused_lstm.load() is None
    # The layer still runs, on the TensorFlow-op loop.
    case = _case(np.random.default_rng(23))
    fallback = _outputs_and_gradients(lstm_recurrence, case, True, False, False, fused=True)
    reference = _outputs_and_gradients(lstm_recurrence_autodiff, case, True, False, False)
    for ours, expected in zip(fallback, reference):
        np.testing.assert_allclose(ours, expected, atol=2e-5)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("problem", ["compiler fails", "folder not writable"])
def test_a_failed_build_means_a_warning_naming_the_cause(monkeypatch, tmp_path, problem):
    monkeypatch.setattr(fused_lstm, "_loaded", {})
    if problem == "compiler fails":
        monkeypatch.setenv("CXX", "false")  # on PATH, fails without a word
        monkeypatch.setenv("SKETCH_RNN_KERNEL_DIR", str(tmp_path))
        expected = "false could not build .*lstm_cell.cc"
    else:
        (tmp_path / "a-file").write_text("")
        monkeypatch.setenv("SKETCH_RNN_KERNEL_DIR", str(tmp_path / "a-file" / "kernels"))
        expected = "cannot write the kernel to .*a-file.*set SKETCH_RNN_KERNEL_DIR"
    with pytest.warns(UserWarning, match=expected):
        assert fused_lstm.load() is None


def test_a_missing_source_means_a_warning(monkeypatch, tmp_path):
    monkeypatch.setattr(fused_lstm, "_loaded", {})
    monkeypatch.setattr(fused_lstm, "SOURCE", str(tmp_path / "missing.cc"))
    with pytest.warns(UserWarning, match="fused LSTM kernel is off.*missing.cc"):
        assert fused_lstm.load() is None


def test_the_kernel_is_built_once_cached_and_rebuilt_when_damaged(tmp_path):
    # In fresh processes: one process must not load two copies of the op library. The first
    # build is this machine's (this process loads it from the default folder, compiling it
    # if no test has yet); a copy of it in a new folder is that folder's cache, so that the
    # kernel compiles once here, after the damage, instead of twice.
    assert fused_lstm.load() is not None
    for name in os.listdir(fused_lstm.kernel_dir()):
        if name.startswith("lstm_cell-") and name.endswith(".so"):
            shutil.copy2(os.path.join(fused_lstm.kernel_dir(), name), tmp_path)
    built = sorted(os.listdir(tmp_path))
    assert built, "no kernel in the default folder after load()"
    stamps = {name: os.stat(tmp_path / name).st_mtime_ns for name in built}
    env = dict(os.environ, SKETCH_RNN_KERNEL_DIR=str(tmp_path))
    code = "from sketch_rnn.tf_backend import fused_lstm; assert fused_lstm.load() is not None"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def load_in_a_new_process():
        process = subprocess.run([sys.executable, "-c", code], cwd=root, env=env,
                                 capture_output=True, text=True)
        assert process.returncode == 0, process.stderr
        return process.stderr

    assert "compiling" not in load_in_a_new_process()  # found in the cache, not rebuilt
    assert sorted(os.listdir(tmp_path)) == built
    assert {name: os.stat(tmp_path / name).st_mtime_ns for name in built} == stamps
    # A damaged library (a disk error, a killed copy) is compiled again, not loaded.
    for name in built:
        (tmp_path / name).write_bytes(b"not a library")
    assert "compiling the fused LSTM kernel" in load_in_a_new_process()
    assert sorted(os.listdir(tmp_path)) == built
    rebuilt = [name for name in built if (tmp_path / name).stat().st_size > 1000]
    assert len(rebuilt) == 1 and rebuilt[0].startswith("lstm_cell-")
