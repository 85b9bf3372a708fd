"""The engines against the generic unroll, and the dispatcher's choices and reasons.

The generic unroll (`sketch_rnn.unroll`, the cell's own `step` in a `keras.ops` scan,
differentiated by the backend) is the reference: every faster engine must give the same
outputs, final state and gradients through the `Recurrent` layer, masked or not, in both
directions, with recurrent dropout.
"""

import numpy as np
import pytest

from seq2seqVAE import HParams, LSTMCell, Recurrent, build_model, describe_engines, make_cell
from sketch_rnn import backend, engines

pytestmark = pytest.mark.tensorflow_only  # the faster engines are TensorFlow's

TINY = "enc_rnn_size=8,dec_rnn_size=16,z_size=4,num_mixture=3,max_seq_len=12,batch_size=3"


def layer_on(engine, backwards, seed=5, dropout=True):
    """A Recurrent LSTM layer forced onto `engine`."""
    options = {"generic": dict(custom_gradient=False), "tf_lstm": dict(fused=False),
               "fused_lstm": dict(fused=True)}[engine]
    layer = Recurrent(LSTMCell(6), recurrent_dropout_keep=0.7 if dropout else 1.0,
                      go_backwards=backwards, return_sequences=True, seed=seed, **options)
    return layer


@pytest.mark.parametrize("engine", ["tf_lstm", "fused_lstm"])
@pytest.mark.parametrize("backwards", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_every_lstm_engine_equals_the_generic_unroll(engine, backwards, masked):
    import tensorflow as tf

    rng = np.random.default_rng(30)
    x = rng.normal(size=(4, 9, 3)).astype(np.float32)
    constant = rng.normal(size=(4, 2)).astype(np.float32)
    h0, c0 = (rng.normal(size=(4, 6)).astype(np.float32) for _ in range(2))
    mask = np.arange(9)[None] < np.array([3, 9, 1, 6])[:, None] if masked else None
    loss_weights = rng.normal(size=(4, 9, 6)).astype(np.float32)
    results = {}
    for name in ("generic", engine):
        layer = layer_on(name, backwards)
        layer(x, constant=constant)
        if name == "generic":
            weights = [rng.normal(scale=0.5, size=w.shape).astype(np.float32) for w in layer.get_weights()]
        layer.set_weights(weights)
        assert layer.engine.name == name
        inputs = [tf.constant(v) for v in (x, constant, h0, c0)]
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            outputs, h, c = layer(inputs[0], constant=inputs[1], initial_state=inputs[2:],
                                  step_mask=mask, training=True)  # the same seeded dropout masks
            loss = tf.reduce_sum(outputs * loss_weights) + tf.reduce_sum(h * c)
        gradients = tape.gradient(loss, inputs + layer.trainable_variables)
        results[name] = [outputs, h, c, *map(tf.convert_to_tensor, gradients)]  # dense: gathers
    names = ["outputs", "h", "c", "d_x", "d_constant", "d_h0", "d_c0", "d_kernel",
             "d_recurrent_kernel", "d_bias"]
    for name, ours, reference in zip(names, results[engine], results["generic"]):
        np.testing.assert_allclose(ours, reference, atol=5e-5, err_msg=name)


@pytest.mark.parametrize("kind", ["layer_norm", "hyper"])
def test_cells_without_a_faster_engine_run_on_the_generic_unroll(kind):
    layer = Recurrent(make_cell(kind, 4))
    layer(np.zeros((2, 3, 5), np.float32))
    assert layer.engine.name == "generic"
    assert layer.engine.reason == f"no faster engine for the {kind} cell"


def test_the_dispatcher_says_why(monkeypatch):
    from sketch_rnn.tf_backend import fused_lstm

    cell = LSTMCell(4)
    assert engines.choose(cell, custom_gradient=False).reason == "custom_lstm_gradient=False"
    assert engines.choose(cell, fused=False).name == "tf_lstm"
    on_cpu = engines.choose(cell, accelerate=True)
    assert on_cpu.name == "fused_lstm" and on_cpu.reason.startswith("accelerate_LSTM: no GPU")
    assert engines.choose(make_cell("hyper", 4), accelerate=True).reason == (
        "accelerate_LSTM: cuDNN has no hyper cell; no faster engine for the hyper cell")
    # Where the C++ kernel cannot be built, the TF-op engine runs, and the line says why.
    monkeypatch.setattr(fused_lstm, "_loaded", {"module": None, "reason": "no C++ compiler"})
    fallback = engines.choose(cell)
    assert (fallback.name, fallback.reason) == ("tf_lstm", "no C++ compiler")
    # On a GPU, accelerate_LSTM picks cuDNN (not run here: no GPU on this machine).
    monkeypatch.setattr(backend, "gpu_available", lambda: True)
    assert engines.choose(cell, accelerate=True).name == "cudnn"
    assert engines.choose(make_cell("layer_norm", 4), accelerate=True).name == "generic"


def test_describe_names_each_rnn_its_cell_and_engine():
    hps = HParams.parse(TINY + ",enc_model=layer_norm,dec_model=lstm")
    lines = describe_engines(build_model(hps))
    assert lines[0] == ("encoder_fw (layer_norm, 8 units): generic unroll (keras.ops scan) "
                        "(no faster engine for the layer_norm cell)")
    assert lines[1].startswith("encoder_bw (layer_norm, 8 units): generic unroll")
    assert lines[2].startswith("decoder_lstm (lstm, 16 units): fused C++ kernel")
