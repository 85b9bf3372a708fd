"""Training on from a run's weights alone: sketch_rnn.warm_start (the training command's
--warm_start is tested in test_train.py, on its tiny run)."""

import keras
import numpy as np

from sketch_rnn.hparams import HParams
from sketch_rnn.model import build_model, compile_model
from sketch_rnn.warm_start import ramp_factor, rebuild_adam_moments


def random_sketches(batch, length, seed):
    rng = np.random.default_rng(seed)
    x = np.zeros((batch, length + 1, 5), np.float32)
    x[:, 0, 2] = 1  # the start token
    x[:, 1:, :2] = rng.normal(size=(batch, length, 2))
    pen = rng.integers(0, 2, size=(batch, length))
    x[:, 1:, 2], x[:, 1:, 3] = 1 - pen, pen
    x[:, -1, 2:] = (0, 0, 1)
    return x


def test_rebuilt_moments_are_the_bias_corrected_means_and_the_weights_stay():
    # A decoder-only model without dropout, given the same batch each step, has one gradient
    # g throughout: the bias-corrected moments are then exactly m = g and v = g**2, so
    # v == m**2; uncorrected after 3 steps, m = 0.271 g and v = 0.003 g**2.
    hps = HParams.parse("dec_rnn_size=16,num_mixture=3,max_seq_len=12,batch_size=4,"
                        "conditional=False,use_recurrent_dropout=False")
    model = compile_model(build_model(hps), hps)
    x = random_sketches(4, 12, seed=0)
    before = [np.array(w) for w in model.get_weights()]
    rebuild_adam_moments(model, [(x, x[:, 1:])], steps=3, global_step=1234, verbose=False)
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)  # learning rate 0 leaves the weights
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 1234
    optimizer = model.optimizer
    moments = [keras.ops.convert_to_numpy(m) for m in optimizer._momentums]
    velocities = [keras.ops.convert_to_numpy(v) for v in optimizer._velocities]
    assert sum(np.count_nonzero(m) for m in moments) > 100
    for m, v in zip(moments, velocities):
        np.testing.assert_allclose(v, m**2, rtol=1e-3, atol=1e-12)


def test_the_ramp_rises_from_the_start_step():
    start = {"step": 100, "ramp_steps": 8}
    assert [ramp_factor(s, start) for s in (99, 100, 102, 108, 500)] == [0.0, 0.0, 0.25, 1.0, 1.0]
    assert ramp_factor(3, None) == 1.0
