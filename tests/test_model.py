"""The model's math against independent NumPy references, and HParams handling."""

import dataclasses
import json

import keras
import numpy as np
import pytest
from keras import ops
from recurrences import lstm_layer, lstm_recurrence, lstm_recurrence_autodiff

from seq2seqVAE import (
    HParams,
    build_model,
    compile_model,
    get_mixture_coef,
    kl_divergence,
    load_config,
    reconstruction_loss,
)

TINY = "enc_rnn_size=8,dec_rnn_size=16,z_size=4,num_mixture=3,max_seq_len=12,batch_size=3"


def numpy_reconstruction_loss(targets, params, m, max_seq_len, mask_pen=False):
    """The official loss, written directly from tf_2d_normal / tf_lossfunc in NumPy."""
    pen_logits = params[..., :3]
    pi, mu1, mu2, s1, s2, corr = np.split(params[..., 3:], 6, axis=-1)
    pi = np.exp(pi - pi.max(-1, keepdims=True))
    pi /= pi.sum(-1, keepdims=True)
    s1, s2, corr = np.exp(s1), np.exp(s2), np.tanh(corr)
    x1, x2 = targets[..., 0:1], targets[..., 1:2]
    n1, n2 = x1 - mu1, x2 - mu2
    z = (n1 / s1) ** 2 + (n2 / s2) ** 2 - 2 * corr * n1 * n2 / (s1 * s2)
    density = np.exp(-z / (2 * (1 - corr**2))) / (2 * np.pi * s1 * s2 * np.sqrt(1 - corr**2))
    offset_loss = -np.log((density * pi).sum(-1) + 1e-6)
    fs = 1.0 - targets[..., 4]
    log_pen = pen_logits - pen_logits.max(-1, keepdims=True)
    log_pen = log_pen - np.log(np.exp(log_pen).sum(-1, keepdims=True))
    pen_loss = -(targets[..., 2:5] * log_pen).sum(-1)
    if mask_pen:
        pen_loss = pen_loss * fs
    return (offset_loss * fs + pen_loss).sum() / (targets.shape[0] * max_seq_len)


def random_stroke5_targets(rng, batch, steps):
    targets = np.zeros((batch, steps, 5), np.float32)
    for b in range(batch):
        length = rng.integers(2, steps)
        targets[b, :length, :2] = rng.normal(size=(length, 2))
        pen = (rng.random(length) < 0.2).astype(np.float32)
        pen[-1] = 1
        targets[b, :length, 3] = pen
        targets[b, :length, 2] = 1 - pen
        targets[b, length:, 4] = 1
    return targets


@pytest.mark.parametrize("mask_pen", [False, True])
def test_reconstruction_loss_matches_numpy_reference(mask_pen):
    rng = np.random.default_rng(0)
    m, steps, max_seq_len = 5, 9, 12
    targets = random_stroke5_targets(rng, 4, steps)
    params = rng.normal(scale=0.7, size=(4, steps, 6 * m + 3)).astype(np.float32)
    ours = float(reconstruction_loss(targets, params, m, max_seq_len, mask_pen=mask_pen))
    reference = numpy_reconstruction_loss(targets.astype(np.float64), params.astype(np.float64),
                                          m, max_seq_len, mask_pen)
    assert ours == pytest.approx(reference, rel=1e-5)


def test_reconstruction_loss_hand_computed_single_gaussian():
    # One mixture, one step, standard normal at the origin, target (0, 0), pen p1:
    # -log(1/(2 pi) + 1e-6) + the pen CE of uniform logits, log(3); divided by max_seq_len=2.
    params = np.zeros((1, 1, 9), np.float32)
    targets = np.array([[[0, 0, 1, 0, 0]]], np.float32)
    expected = (-np.log(1 / (2 * np.pi) + 1e-6) + np.log(3)) / 2
    assert float(reconstruction_loss(targets, params, 1, 2)) == pytest.approx(expected, rel=1e-6)


def test_get_mixture_coef_layout():
    m = 2
    params = np.arange(6 * m + 3, dtype=np.float32)[None] / 100
    coef = get_mixture_coef(params, m)
    np.testing.assert_allclose(coef["pen_logits"], params[:, :3])
    np.testing.assert_allclose(coef["pi_logits"], params[:, 3:5])
    np.testing.assert_allclose(coef["log_sigma_y"], params[:, 11:13])
    np.testing.assert_allclose(coef["rho"], np.tanh(params[:, 13:15]), rtol=1e-6)


def test_kl_matches_closed_form():
    rng = np.random.default_rng(1)
    mu = rng.normal(size=(6, 4))
    log_var = rng.normal(size=(6, 4))
    # KL(N(mu, sigma^2) || N(0, 1)) per dimension = (mu^2 + sigma^2 - 1 - log sigma^2) / 2.
    closed_form = np.mean((mu**2 + np.exp(log_var) - 1 - log_var) / 2)
    assert float(kl_divergence(mu, log_var)) == pytest.approx(closed_form, rel=1e-6)
    assert float(kl_divergence(np.zeros((2, 3)), np.zeros((2, 3)))) == 0.0


def _lstm_pair(units=6, input_dim=4):
    ours = lstm_layer(units, return_sequences=True)
    reference = keras.layers.LSTM(units, return_sequences=True, return_state=True)
    x = np.zeros((1, 3, input_dim), np.float32)
    ours(x)
    reference(x)
    rng = np.random.default_rng(2)
    weights = [rng.normal(scale=0.5, size=w.shape).astype(np.float32) for w in ours.get_weights()]
    ours.set_weights(weights)
    reference.set_weights(weights)
    return ours, reference


def test_sketch_lstm_equals_keras_lstm_with_the_same_weights():
    ours, reference = _lstm_pair()
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 7, 4)).astype(np.float32)
    h0 = rng.normal(size=(2, 6)).astype(np.float32)
    c0 = rng.normal(size=(2, 6)).astype(np.float32)
    out, h, c = ours(x, initial_state=[h0, c0])
    ref_out, ref_h, ref_c = reference(x, initial_state=[h0, c0])
    np.testing.assert_allclose(out, ref_out, atol=1e-5)
    np.testing.assert_allclose(h, ref_h, atol=1e-5)
    np.testing.assert_allclose(c, ref_c, atol=1e-5)


def test_constant_input_equals_concatenated_input():
    # The decoder appends z to every step; projecting z once must equal Keras on the concat.
    ours, reference = _lstm_pair(input_dim=4)
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 5, 1)).astype(np.float32)
    z = rng.normal(size=(2, 3)).astype(np.float32)
    out, _, _ = ours(x, constant=z)
    ref_out, _, _ = reference(np.concatenate([x, np.repeat(z[:, None], 5, axis=1)], -1))
    np.testing.assert_allclose(out, ref_out, atol=1e-5)


def test_step_mask_equals_running_each_sketch_at_its_length_in_both_directions():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(3, 8, 4)).astype(np.float32)
    lengths = [8, 5, 2]
    mask = np.arange(8)[None] < np.array(lengths)[:, None]
    for backwards in (False, True):
        ours = lstm_layer(6, go_backwards=backwards)
        reference = keras.layers.LSTM(6, go_backwards=backwards)
        ours(x)
        reference(x)
        reference.set_weights(ours.get_weights())
        h, _ = ours(x, step_mask=mask)
        for i, length in enumerate(lengths):
            expected = reference(x[i:i + 1, :length])
            np.testing.assert_allclose(h[i:i + 1], expected, atol=1e-5)


def test_recurrent_dropout_only_in_training_and_seeded():
    x = np.random.default_rng(6).normal(size=(2, 6, 3)).astype(np.float32)
    a = lstm_layer(5, recurrent_dropout_keep=0.5, return_sequences=True, seed=7)
    b = lstm_layer(5, recurrent_dropout_keep=0.5, return_sequences=True, seed=7)
    a(x)
    b(x)
    b.set_weights(a.get_weights())
    inference = a(x, training=False)[0]
    plain = lstm_layer(5, return_sequences=True)
    plain(x)
    plain.set_weights(a.get_weights())
    np.testing.assert_allclose(inference, plain(x)[0], atol=1e-6)
    dropped_a = a(x, training=True)[0]
    dropped_b = b(x, training=True)[0]
    assert not np.allclose(dropped_a, inference)
    np.testing.assert_allclose(dropped_a, dropped_b, atol=1e-6)


def test_accelerated_path_on_cpu_computes_the_same_function():
    hps = HParams.parse(TINY)
    plain = build_model(hps)
    fast = build_model(dataclasses.replace(hps, accelerate_LSTM=True))
    fast.set_weights(plain.get_weights())
    x = np.zeros((2, 13, 5), np.float32)
    x[:, 0, 2] = 1
    x[:, 1:6, :2] = np.random.default_rng(8).normal(size=(2, 5, 2))
    x[:, 1:6, 2] = 1
    x[:, 6:, 4] = 1
    # Same z noise: the latent layers share a seed; compare the deterministic part instead.
    encoder_inputs = plain.input
    for name in ("z_mean", "z_log_var"):
        p = keras.Model(encoder_inputs, plain.get_layer(name).output)(x)
        f = keras.Model(fast.input, fast.get_layer(name).output)(x)
        np.testing.assert_allclose(p, f, atol=1e-5)


def test_weights_and_seed_state_round_trip(tmp_path):
    hps = HParams.parse(TINY)
    model = compile_model(build_model(hps), hps)
    x = np.zeros((3, 13, 5), np.float32)
    x[:, 0, 2] = 1
    x[:, 1:, 4] = 1
    model.fit(x, x[:, 1:], epochs=1, verbose=0)
    path = str(tmp_path / "m.weights.h5")
    model.save_weights(path)
    expected = model(x, training=True)
    clone = compile_model(build_model(hps), hps)
    clone.optimizer.build(clone.trainable_variables)
    clone.load_weights(path)
    assert int(clone.optimizer.iterations) == 1
    np.testing.assert_allclose(clone(x, training=True), expected, atol=1e-6)


def test_unconditional_model_has_no_encoder_and_no_kl():
    hps = HParams.parse(TINY + ",conditional=False")
    model = build_model(hps)
    names = {layer.name for layer in model.layers}
    assert "encoder_fw" not in names and "latent" not in names
    x = np.zeros((2, 13, 5), np.float32)
    x[:, 0, 2] = 1
    x[:, 1:, 4] = 1
    model(x)
    assert model.losses == []


def test_hparams_parse_types_and_errors():
    hps = HParams.parse("batch_size=7,learning_rate=0.01,conditional=false,use_recurrent_dropout=1")
    assert (hps.batch_size, hps.learning_rate, hps.conditional, hps.use_recurrent_dropout) == (
        7, 0.01, False, True)
    with pytest.raises(ValueError, match="unknown hparam 'batch_szie'.*did you mean 'batch_size'"):
        HParams.parse("batch_szie=10")
    # The official code's training-loop settings say what takes their place here.
    with pytest.raises(ValueError, match="'num_steps' is not an hparam here .*epochs"):
        HParams.parse("num_steps=1000")
    with pytest.raises(ValueError, match="'data_set' is not an hparam here .*--data_set"):
        HParams.parse("data_set=cat")
    with pytest.raises(ValueError, match="'batch_size' expects int, got 'ten'"):
        HParams.parse("batch_size=ten")
    with pytest.raises(ValueError, match="'conditional' expects bool"):
        HParams.parse("conditional=maybe")
    with pytest.raises(ValueError, match="expected key=value"):
        HParams.parse("batch_size")
    with pytest.raises(ValueError, match="'recurrent_dropout_prob' must be in"):
        HParams.parse("recurrent_dropout_prob=1.5")


def test_hparams_defaults_are_the_official_ones():
    hps = HParams()
    official = dict(batch_size=100, enc_rnn_size=256, dec_rnn_size=512, z_size=128, num_mixture=20,
                    kl_weight=0.5, kl_weight_start=0.01, kl_tolerance=0.2, kl_decay_rate=0.99995,
                    learning_rate=0.001, decay_rate=0.9999, min_learning_rate=0.00001,
                    grad_clip=1.0, use_recurrent_dropout=True, recurrent_dropout_prob=0.9,
                    random_scale_factor=0.15, augment_stroke_prob=0.10, conditional=True,
                    max_seq_len=250)
    assert {k: getattr(hps, k) for k in official} == official


def test_config_round_trip_and_bad_config(tmp_path):
    hps = HParams.parse("z_size=16,seed=3")
    (tmp_path / "model_config.json").write_text(json.dumps({"hparams": hps.to_dict()}))
    loaded, _ = load_config(tmp_path)
    assert loaded == hps
    (tmp_path / "model_config.json").write_text(json.dumps({"hparams": {"z_size": "16"}}))
    with pytest.raises(ValueError, match="model_config.json: hparam 'z_size' must be int"):
        load_config(tmp_path)
    with pytest.raises(FileNotFoundError, match="no model_config.json"):
        load_config(tmp_path / "nowhere")


def test_model_output_shape_and_total_loss():
    hps = HParams.parse(TINY)
    model = compile_model(build_model(hps), hps)
    x = np.zeros((3, 13, 5), np.float32)
    x[:, 0, 2] = 1
    x[:, 1:4, :2] = 0.5
    x[:, 1:4, 2] = 1
    x[:, 4:, 4] = 1
    params = model(x)
    assert tuple(params.shape) == (3, 12, 6 * 3 + 3)
    logs = model.evaluate(x, x[:, 1:], return_dict=True, verbose=0)
    # total = L_R + w_KL * max(KL, tolerance), w_KL at its initial value kl_weight.
    kl_term = hps.kl_weight * max(logs["kl_loss"], hps.kl_tolerance)
    assert logs["loss"] == pytest.approx(logs["reconstruction_loss"] + kl_term, rel=1e-5)
    assert float(ops.convert_to_numpy(model.get_layer("latent").kl_weight)) == hps.kl_weight


@pytest.mark.tensorflow_only
@pytest.mark.parametrize("use_mask", [False, True])
@pytest.mark.parametrize("use_dropout", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
def test_hand_written_backward_pass_equals_autodiff(use_mask, use_dropout, reverse):
    import tensorflow as tf

    rng = np.random.default_rng(9)
    steps, batch, units = 7, 3, 4
    projected = tf.constant(rng.normal(size=(steps, batch, 4 * units)), tf.float32)
    kernel = tf.Variable(rng.normal(scale=0.5, size=(units, 4 * units)), dtype=tf.float32)
    h0 = tf.constant(rng.normal(size=(batch, units)), tf.float32)
    c0 = tf.constant(rng.normal(size=(batch, units)), tf.float32)
    lengths = np.array([7, 4, 1])
    mask = tf.constant((np.arange(steps)[:, None] < lengths)[..., None])
    dropout = tf.constant((rng.random((steps, batch, units)) < 0.8) / 0.8, tf.float32)
    weights = tf.constant(rng.normal(size=(steps, batch, units)), tf.float32)
    results = []
    for recurrence in (lstm_recurrence, lstm_recurrence_autodiff):
        with tf.GradientTape() as tape:
            tape.watch([projected, h0, c0])
            hs, h, c = recurrence(projected, kernel, h0, c0, mask if use_mask else None,
                                  dropout if use_dropout else None, reverse=reverse)
            # A loss that reaches every output: the sequence, the last h and the last c.
            loss = tf.reduce_sum(hs * weights) + 0.3 * tf.reduce_sum(h) + tf.reduce_sum(c * c)
        results.append([hs, h, c, *tape.gradient(loss, [projected, kernel, h0, c0])])
    for ours, reference in zip(*results):
        np.testing.assert_allclose(ours, reference, atol=1e-5)


def test_evaluation_losses_do_not_depend_on_the_padding():
    # Evaluation masks every term after a sketch's end, so trimming batches is exact.
    hps = HParams.parse(TINY + ",use_recurrent_dropout=False")
    model = compile_model(build_model(hps), hps)
    rng = np.random.default_rng(10)
    targets = random_stroke5_targets(rng, 3, 8)
    targets = np.concatenate([targets, np.tile([[[0, 0, 0, 0, 1]]], (3, 4, 1))], axis=1)
    x = np.concatenate([np.tile([[[0, 0, 1, 0, 0]]], (3, 1, 1)), targets], axis=1).astype(np.float32)
    longest = int(np.sum(targets[..., 4] == 0, axis=1).max())
    trimmed = x[:, :longest + 1]
    latent = model.get_layer("latent")
    state = ops.convert_to_numpy(latent.seed_generator.state)
    full = model.evaluate(x, x[:, 1:], return_dict=True, verbose=0)
    latent.seed_generator.state.assign(state)  # the same z noise for both passes
    cut = model.evaluate(trimmed, trimmed[:, 1:], return_dict=True, verbose=0)
    assert longest < 11
    for key in ("loss", "reconstruction_loss", "kl_loss"):
        assert cut[key] == pytest.approx(full[key], rel=1e-5), key


@pytest.mark.tensorflow_only
def test_bfloat16_recurrent_matmuls_stay_close_to_float32():
    import tensorflow as tf

    rng = np.random.default_rng(11)
    steps, batch, units = 20, 4, 16
    projected = tf.constant(rng.normal(size=(steps, batch, 4 * units)), tf.float32)
    kernel = tf.constant(rng.normal(scale=0.3, size=(units, 4 * units)), tf.float32)
    zeros = tf.zeros((batch, units))
    results = {}
    for dtype in (None, "bfloat16"):
        with tf.GradientTape() as tape:
            tape.watch([projected, kernel])
            hs, _, _ = lstm_recurrence(projected, kernel, zeros, zeros, matmul_dtype=dtype)
            loss = tf.reduce_sum(tf.square(hs))
        results[dtype] = [hs, *tape.gradient(loss, [projected, kernel])]
    for exact, rounded in zip(results[None], results["bfloat16"]):
        # bf16 keeps 8 bits of mantissa: relative errors of a few parts in a thousand per matmul.
        assert np.linalg.norm(rounded - exact) <= 0.02 * np.linalg.norm(exact)


def test_auto_matmul_dtype_follows_the_cpu(monkeypatch):
    from sketch_rnn import model

    monkeypatch.setattr(model, "_cpu_has_native_bfloat16", lambda: True)
    assert model.resolved_matmul_dtype(HParams()) == "bfloat16"
    monkeypatch.setattr(model, "_cpu_has_native_bfloat16", lambda: False)
    assert model.resolved_matmul_dtype(HParams()) == "float32"
    assert model.resolved_matmul_dtype(HParams(lstm_matmul_dtype="bfloat16")) == "bfloat16"


def test_the_encoder_summarises_each_direction_by_its_final_h():
    # z_mean = Dense(concat(h_fw, h_bw)) with h the LSTMs' outputs at the sketch's last
    # point, computed here with plain keras.layers.LSTM on the unpadded sketches.
    hps = HParams.parse(TINY + ",use_recurrent_dropout=False,lstm_matmul_dtype=float32")
    model = build_model(hps)
    rng = np.random.default_rng(12)
    targets = random_stroke5_targets(rng, 2, 12)
    x = np.concatenate([np.tile([[[0, 0, 1, 0, 0]]], (2, 1, 1)), targets], axis=1).astype(np.float32)
    z_mean = keras.Model(model.input, model.get_layer("z_mean").output)(x)
    dense = model.get_layer("z_mean")
    for b in range(2):
        length = int(np.sum(targets[b, :, 4] == 0))
        finals = []
        for name, backwards in (("encoder_fw", False), ("encoder_bw", True)):
            reference = keras.layers.LSTM(hps.enc_rnn_size, go_backwards=backwards)
            reference(targets[b:b + 1, :length])
            reference.set_weights(model.get_layer(name).get_weights())
            finals.append(reference(targets[b:b + 1, :length]))
        expected = dense(np.concatenate(finals, axis=-1))
        np.testing.assert_allclose(z_mean[b:b + 1], expected, atol=1e-5)


def test_resuming_from_an_older_checkpoint_moves_the_later_ones_aside(tmp_path):
    from callbacks import Checkpoint, checkpoint_name, list_checkpoints

    hps = HParams.parse(TINY)
    model = compile_model(build_model(hps), hps)
    model.optimizer.build(model.trainable_variables)
    model.optimizer.iterations.assign(4)  # resumed at global step 4
    for epochs_done, step in ((1, 4), (2, 8), (3, 12)):
        (tmp_path / checkpoint_name(epochs_done, step)).write_bytes(b"older run")
    callback = Checkpoint(str(tmp_path), keep=2)
    callback.set_model(model)
    callback.on_train_begin()
    assert [step for step, _, _ in list_checkpoints(str(tmp_path))] == [4]
    aside = tmp_path / "abandoned-at-step00000004"
    assert sorted(p.name for p in aside.iterdir()) == [checkpoint_name(2, 8), checkpoint_name(3, 12)]
    assert callback.last_saved.endswith(checkpoint_name(1, 4))
    # New checkpoints are the newest now, so pruning keeps them.
    model.optimizer.iterations.assign(6)
    callback.epoch = 1
    callback._save_step(6)
    callback.epoch = 2
    model.optimizer.iterations.assign(8)
    callback._save_step(8)
    assert [step for step, _, _ in list_checkpoints(str(tmp_path))] == [6, 8]


@pytest.mark.tensorflow_only
@pytest.mark.parametrize("addend_shape", [(6,), (3, 6)])
def test_add_over_time_gradients_equal_the_plain_sum(addend_shape):
    import tensorflow as tf

    from sketch_rnn.tf_backend import add_over_time

    rng = np.random.default_rng(12)
    sequence = tf.constant(rng.normal(size=(5, 3, 6)), tf.float32)
    addend = tf.constant(rng.normal(size=addend_shape), tf.float32)
    weights = tf.constant(rng.normal(size=(5, 3, 6)), tf.float32)
    results = []
    for add in (add_over_time, lambda a, b: a + b):
        with tf.GradientTape() as tape:
            tape.watch([sequence, addend])
            total = add(sequence, addend)
            loss = tf.reduce_sum(total * weights)
        results.append([total, *tape.gradient(loss, [sequence, addend])])
    # The reference: d addend is the weights summed over every axis the addend is broadcast on.
    expected = np.asarray(weights).sum(axis=(0, 1) if len(addend_shape) == 1 else 0)
    np.testing.assert_allclose(results[0][2], expected, rtol=1e-5, atol=1e-5)
    for ours, reference in zip(*results):
        np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-5)
