"""Drawing with a model: sub-models, the compiled sampler, temperature, loading a run folder.

The references are independent of the code under test: the whole model's teacher-forced
pass (built by `build_model`), and a step-by-step sampler written here in NumPy from the
official `sample()` (inverse-CDF choices, a Cholesky factor for the correlated offsets).
"""

import json
import math
import re
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import keras
import numpy as np
import pytest

import utils
from seq2seqVAE import (
    HParams,
    SketchRNNDrawer,
    build_model,
    compile_model,
    interpolate,
    lerp,
    load_run,
    reconstruction_loss,
    slerp,
)

TINY = "enc_rnn_size=8,dec_rnn_size=16,z_size=4,num_mixture=3,max_seq_len=12,batch_size=4"


def tiny_model(overrides="", seed=0):
    """A tiny model with every weight random and large enough to matter, and z = z_mean.

    The latent layer draws z = z_mean + exp(z_log_var / 2) * noise even when not training;
    z_log_var = -80 makes that noise 4e-18, so the full model decodes the encoder's mean.
    """
    hps = HParams.parse(",".join(filter(None, [TINY, overrides])))
    keras.utils.set_random_seed(seed)
    model = build_model(hps)
    rng = np.random.default_rng(seed)
    for variable in model.trainable_variables:
        variable.assign(rng.normal(scale=0.5, size=variable.shape).astype(np.float32))
    if hps.conditional:
        log_var = model.get_layer("z_log_var")
        log_var.kernel.assign(np.zeros(log_var.kernel.shape, np.float32))
        log_var.bias.assign(np.full(log_var.bias.shape, -80.0, np.float32))
    return model


def random_sketches(rng, count, max_len):
    sketches = []
    for _ in range(count):
        length = int(rng.integers(2, max_len + 1))
        sketch = np.zeros((length, 3), np.float32)
        sketch[:, :2] = rng.normal(size=(length, 2))
        sketch[:, 2] = rng.random(length) < 0.3
        sketch[-1, 2] = 1
        sketches.append(sketch)
    return sketches


def initial_state(drawer, z, batch):
    """The decoder's start state, a list in its cell's order (h, c, ...)."""
    if drawer.hps.conditional:
        return [np.asarray(s) for s in drawer.initial_state(z)]
    cell = drawer.model.get_layer("decoder_lstm").cell
    return [np.zeros((batch, n), np.float32) for n in cell.state_sizes]


CELLS = ["lstm", "layer_norm", "hyper"]


@pytest.mark.parametrize("conditional", [True, False])
@pytest.mark.parametrize("cell", CELLS)
def test_decoder_sub_models_match_the_teacher_forced_full_model(conditional, cell):
    # float32 matmuls: with bf16 ones, XLA may round a product in one graph and not in another.
    model = tiny_model(f"conditional={conditional},enc_model={cell},dec_model={cell},"
                       "lstm_matmul_dtype=float32")
    drawer = SketchRNNDrawer(model)
    hps = model.hps
    x = utils.to_stroke5(random_sketches(np.random.default_rng(1), 3, hps.max_seq_len), hps.max_seq_len)
    expected = keras.ops.convert_to_numpy(model(x, training=False))  # (B, T, 6M + 3)
    batch = len(x)

    z = None
    if conditional:
        z, _ = drawer.encoder.predict(x, verbose=0)
        whole = drawer.decoder.predict([x[:, :-1], z], verbose=0)
    else:
        whole = drawer.decoder.predict(x[:, :-1], verbose=0)
    np.testing.assert_allclose(whole, expected, atol=1e-5)

    state = initial_state(drawer, z, batch)
    for t in range(hps.max_seq_len):
        inputs = [x[:, t:t + 1]] + ([z] if conditional else []) + state
        params, *state = (np.asarray(a) for a in drawer.decoder_step(inputs))
        np.testing.assert_allclose(params[:, 0], expected[:, t], atol=1e-5, err_msg=f"step {t}")


def reference_sample(drawer, z, noise, temperature, greedy, state=None, point=None,
                     pen_temperature=None):
    """The official sample(), batched over sketches, with the decoder_step sub-model and NumPy.

    It starts from the decoder's initial state reading the start token, or from `state` (a
    list in the cell's order) reading `point` (B, 5). `pen_temperature` (ours, not official)
    divides the pen logits instead of the temperature.
    """
    hps = drawer.hps
    m = hps.num_mixture
    steps, batch, _ = noise.shape
    temperature = np.broadcast_to(np.asarray(temperature, np.float64), (batch,))
    pen_temperature = temperature if pen_temperature is None else np.broadcast_to(
        np.asarray(pen_temperature, np.float64), (batch,))
    if state is None:
        state = initial_state(drawer, z, batch)
    if point is None:
        point = np.tile(np.array([0, 0, 1, 0, 0], np.float32), (batch, 1))
    out = np.zeros((batch, steps, 5), np.float32)
    ended = np.zeros(batch, bool)

    def pick(logits, uniform, tau):
        if greedy:
            return int(np.argmax(logits))
        p = np.exp((logits - logits.max()) / tau)
        p /= p.sum()
        return min(int(np.searchsorted(np.cumsum(p), uniform, side="left")), len(p) - 1)

    for t in range(steps):
        inputs = [point[:, None]] + ([z] if hps.conditional else []) + state
        params, *state = (np.asarray(a) for a in drawer.decoder_step(inputs))
        params = params[:, 0].astype(np.float64)
        for b in range(batch):
            pen_logits, rest = params[b, :3], params[b, 3:]
            pi, mu_x, mu_y, log_sx, log_sy, rho = rest.reshape(6, m)
            k = pick(pi, noise[t, b, 0], temperature[b])
            pen = pick(pen_logits, noise[t, b, 1], pen_temperature[b])
            mean = np.array([mu_x[k], mu_y[k]])
            if greedy:
                offset = mean
            else:
                sx = math.exp(log_sx[k]) * math.sqrt(temperature[b])
                sy = math.exp(log_sy[k]) * math.sqrt(temperature[b])
                r = math.tanh(rho[k])
                cov = np.array([[sx * sx, r * sx * sy], [r * sx * sy, sy * sy]])
                offset = mean + np.linalg.cholesky(cov) @ noise[t, b, 2:4]
            out[b, t, :2] = offset
            out[b, t, 2 + pen] = 1
            ended[b] |= pen == 2
        point = out[:, t]
        if ended.all():
            return out[:, :t + 1]
    return out


def draws(seed, steps, batch):
    rng = np.random.default_rng(seed)
    noise = np.concatenate([rng.random((steps, batch, 2)), rng.standard_normal((steps, batch, 2))], -1)
    return noise.astype(np.float32)


# Each pair of the three two-valued settings in some case (4 cases, not all 8), per cell.
@pytest.mark.parametrize("conditional, greedy, matmul_dtype", [
    (True, False, "float32"), (True, True, "bfloat16"), (False, False, "bfloat16"),
    (False, True, "float32")])
@pytest.mark.parametrize("cell", CELLS)
def test_compiled_sampler_matches_step_by_step_reference(conditional, greedy, matmul_dtype, cell):
    model = tiny_model(f"conditional={conditional},lstm_matmul_dtype={matmul_dtype},dec_model={cell}",
                       seed=3)
    drawer = SketchRNNDrawer(model)
    batch, steps = 5, model.hps.max_seq_len
    z = np.random.default_rng(2).normal(size=(batch, 4)).astype(np.float32) if conditional else None
    noise = draws(4, steps, batch)
    temperature = np.array([0.1, 0.3, 0.6, 1.0, 1.5], np.float32)
    # the pen's own temperature in half the cases (greedy ignores both)
    pen_temperature = np.array([1.0, 1.0, 0.2, 0.5, 1.0], np.float32) if conditional else None
    ours = drawer.sample_stroke5(z, noise, temperature, greedy, pen_temperature=pen_temperature)
    expected = reference_sample(drawer, z, noise, temperature, greedy,
                                pen_temperature=pen_temperature)
    assert ours.shape == expected.shape
    # bf16: the compiled loop and the step model may round a product's result to bf16 at
    # different points (XLA fuses the casts on JAX), a few 1e-3 after several steps and up to
    # 0.017 at temperature 1.5 on a CPU without native bf16 (an AMD EPYC without AVX-512);
    # every discrete choice must still agree.
    np.testing.assert_array_equal(ours[..., 2:], expected[..., 2:])
    np.testing.assert_allclose(ours, expected, atol=1e-4 if matmul_dtype == "float32" else 3e-2)


PEN_LOGITS, PI_LOGITS = [1.0, 0.0, -1.0], [0.0, 1.0]  # a known mixture: see known_mixture


def known_mixture():
    """A drawer whose head ignores its input: every point is drawn from one known mixture,
    PEN_LOGITS and PI_LOGITS, components at x = -50 and x = +50 with sigma_x 1.5, sigma_y 0.5
    and rho 0.6."""
    hps = HParams.parse(TINY + ",num_mixture=2")
    model = build_model(hps)
    head = model.get_layer("mixture_head")
    sigma_x, sigma_y, rho = 1.5, 0.5, 0.6
    bias = np.concatenate([PEN_LOGITS, PI_LOGITS, [-50, 50], [0, 0], [math.log(sigma_x)] * 2,
                           [math.log(sigma_y)] * 2, [math.atanh(rho)] * 2]).astype(np.float32)
    head.kernel.assign(np.zeros(head.kernel.shape, np.float32))
    head.bias.assign(bias)
    return SketchRNNDrawer(model), (sigma_x, sigma_y, rho)


def softmax_at(logits, tau):
    e = np.exp(np.asarray(logits) / tau)
    return e / e.sum()


def test_temperature_scales_logits_and_variances_as_the_paper():
    drawer, (sigma_x, sigma_y, rho) = known_mixture()
    tau, n = 0.4, 20000
    z = np.zeros((n, drawer.hps.z_size), np.float32)
    points = drawer.sample_stroke5(z, draws(0, 1, n), tau, greedy=False)[:, 0]  # (n, 5)
    second = points[:, 0] > 0  # the components sit at x = -50 and x = +50
    assert second.mean() == pytest.approx(softmax_at(PI_LOGITS, tau)[1], abs=0.02)
    np.testing.assert_allclose(points[:, 2:].mean(0), softmax_at(PEN_LOGITS, tau), atol=0.02)
    dx = points[:, 0] - np.where(second, 50, -50)
    dy = points[:, 1]
    # Variances times tau (the paper), not tau^2 (the official Python sampler's net effect).
    assert dx.var() == pytest.approx(tau * sigma_x**2, rel=0.05)
    assert dy.var() == pytest.approx(tau * sigma_y**2, rel=0.05)
    assert np.corrcoef(dx, dy)[0, 1] == pytest.approx(rho, abs=0.02)

    greedy = drawer.sample(3, greedy=True, seed=1, max_steps=5)
    for sketch in greedy:  # component 2's mean, pen p1, never ending
        np.testing.assert_allclose(sketch, np.tile([50.0, 0.0, 0.0], (5, 1)))


def test_the_pen_temperature_sets_the_pen_states_alone():
    """pen_temperature divides the pen logits only: the pen states follow softmax(logits / it)
    while the component and the offset, from the same draws, are those of the paper's rule."""
    drawer, _ = known_mixture()
    tau, n = 0.4, 20000
    z = np.zeros((n, drawer.hps.z_size), np.float32)
    noise = draws(0, 1, n)
    paper = drawer.sample_stroke5(z, noise, tau)[:, 0]
    for pen_tau in (1.0, 2.5):
        points = drawer.sample_stroke5(z, noise, tau, pen_temperature=pen_tau)[:, 0]
        np.testing.assert_allclose(points[:, 2:].mean(0), softmax_at(PEN_LOGITS, pen_tau), atol=0.02)
        np.testing.assert_array_equal(points[:, :2], paper[:, :2])
    # None, the default, is the temperature itself: the same draws give the same points
    np.testing.assert_array_equal(drawer.sample_stroke5(z, noise, tau, pen_temperature=tau)[:, 0], paper)
    with pytest.raises(ValueError, match="pen_temperature must be > 0"):
        drawer.sample(2, temperature=0.5, pen_temperature=0.0)


def test_greedy_decoding_is_deterministic():
    drawer = SketchRNNDrawer(tiny_model(seed=5))
    z = np.random.default_rng(0).normal(size=(4, 4)).astype(np.float32)
    first = drawer.decode(z, greedy=True, seed=1)
    second = drawer.decode(z, greedy=True, seed=2)
    assert any(len(s) > 1 for s in first)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("conditional", [True, False])
def test_uncompiled_sampler_matches_the_reference(conditional):
    """jit_compile=False runs the same loop eagerly (on JAX, with NumPy inputs as they come)."""
    model = tiny_model(f"conditional={conditional},lstm_matmul_dtype=float32", seed=3)
    drawer = SketchRNNDrawer(model, jit_compile=False)
    batch, steps = 3, model.hps.max_seq_len
    z = np.random.default_rng(2).normal(size=(batch, 4)).astype(np.float32) if conditional else None
    noise = draws(4, steps, batch)
    temperature = np.full(batch, 0.5, np.float32)
    ours = drawer.sample_stroke5(z, noise, temperature, False)
    expected = reference_sample(drawer, z, noise, temperature, False)
    np.testing.assert_array_equal(ours[..., 2:], expected[..., 2:])
    np.testing.assert_allclose(ours, expected, atol=1e-4)


def assert_same_drawing(a, b):
    """The same pen states, and offsets equal up to float32 rounding: a matmul over another
    batch size may round its last bit differently (seen on an AMD EPYC without AVX-512)."""
    assert a.shape == b.shape
    np.testing.assert_array_equal(a[:, 2:], b[:, 2:])
    np.testing.assert_allclose(a[:, :2], b[:, :2], rtol=1e-5, atol=1e-6)


def test_seeded_sampling_is_reproducible():
    drawer = SketchRNNDrawer(tiny_model(seed=6))
    first = drawer.sample(6, temperature=0.7, seed=5)
    again = drawer.sample(6, temperature=0.7, seed=5)
    other = drawer.sample(6, temperature=0.7, seed=6)
    fewer = drawer.sample(3, temperature=0.7, seed=5)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(first, fewer):  # each sketch has its own stream: the batch size is irrelevant
        assert_same_drawing(a, b)
    assert any(len(a) != len(b) or not np.array_equal(a, b) for a, b in zip(first, other))


def test_sampled_sketches_are_valid_stroke3_cut_at_their_end():
    model = tiny_model(seed=7)
    head = model.get_layer("mixture_head")
    bias = np.array(head.bias)  # a copy: a JAX array is read-only
    bias[2] = 1.0  # p3 (end) likely enough that every sketch ends within max_seq_len
    head.bias.assign(bias)
    drawer = SketchRNNDrawer(model)
    batch, steps = 16, model.hps.max_seq_len
    z = np.random.default_rng(0).normal(size=(batch, 4)).astype(np.float32)
    noise = draws(8, steps, batch)
    stroke5 = drawer.sample_stroke5(z, noise, 1.0)
    assert np.all(np.isfinite(stroke5))
    assert np.all(stroke5[..., 2:].sum(-1) == 1)  # one-hot pen states
    ends = [int(np.flatnonzero(s[:, 4] == 1)[0]) for s in stroke5]  # every sketch ended
    assert stroke5.shape[1] == max(ends) + 1 < steps  # the loop stopped at the last end

    sketches = drawer.sample(batch, seed=3)
    assert len(sketches) == batch
    for sketch in sketches:
        assert sketch.ndim == 2 and sketch.shape[1] == 3 and len(sketch) < steps
        assert np.all(np.isfinite(sketch))
        assert set(np.unique(sketch[:, 2])) <= {0.0, 1.0}
    decoded = drawer.decode(z, seed=0)
    again = drawer.sample_stroke5(z, np.stack(list(_noise_of(drawer, 0, batch)), axis=1), 1.0)
    for sketch, full in zip(decoded, again):
        end = int(np.flatnonzero(full[:, 4] == 1)[0])
        np.testing.assert_array_equal(sketch, utils.to_stroke3(full[:end]))


def _noise_of(drawer, seed, batch):
    """The draws decode() makes: one stream per sketch, uniforms then normals."""
    steps = drawer.hps.max_seq_len
    for stream in np.random.SeedSequence(seed).spawn(batch):
        rng = np.random.default_rng(stream)
        yield np.concatenate([rng.random((steps, 2)), rng.standard_normal((steps, 2))], 1).astype(np.float32)


def test_encode_mean_and_sample():
    drawer = SketchRNNDrawer(tiny_model(seed=8))
    model = drawer.model
    log_var = model.get_layer("z_log_var")
    log_var.bias.assign(np.zeros(log_var.bias.shape, np.float32))  # unit variance around the mean
    sketches = random_sketches(np.random.default_rng(0), 5, drawer.hps.max_seq_len)
    mean = drawer.encode(sketches)
    expected, _ = drawer.encoder.predict(utils.to_stroke5(sketches, drawer.hps.max_seq_len), verbose=0)
    np.testing.assert_allclose(mean, expected, atol=1e-6)
    drawn = drawer.encode(sketches, sample=True, seed=1)
    np.testing.assert_array_equal(drawn, drawer.encode(sketches, sample=True, seed=1))
    assert 0.3 < np.std(drawn - mean) < 3


def test_interpolation():
    z0 = np.array([3.0, 0.0, 0.0])
    z1 = np.array([0.0, 3.0, 0.0])
    np.testing.assert_allclose(lerp(z0, z1, 0.5), [1.5, 1.5, 0.0])
    path = slerp(z0, z1, np.linspace(0, 1, 5))
    np.testing.assert_allclose(path[0], z0, atol=1e-6)
    np.testing.assert_allclose(path[-1], z1, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(path, axis=1), 3.0, rtol=1e-6)  # on the circle
    np.testing.assert_allclose(path[2], [3 / math.sqrt(2), 3 / math.sqrt(2), 0], rtol=1e-6)
    np.testing.assert_allclose(slerp(z0, 2 * z0, [0.5]), [[4.5, 0, 0]])  # parallel: lerp
    assert interpolate(z0, z1, 7, "lerp").shape == (7, 3)
    with pytest.raises(ValueError, match="slerp"):
        interpolate(z0, z1, 3, "cubic")


def test_the_inputs_people_pass_work_or_say_what_to_pass():
    drawer = SketchRNNDrawer(tiny_model(seed=16))
    a, b = random_sketches(np.random.default_rng(4), 2, drawer.hps.max_seq_len)
    z = drawer.encode([a, b])
    # nested lists are sketches too, and a 1-D z is one sketch's
    np.testing.assert_array_equal(drawer.encode([a.tolist(), b.tolist()]), z)
    np.testing.assert_array_equal(drawer.decode(z[0], seed=3)[0], drawer.decode(z[:1], seed=3)[0])
    assert drawer.encode([]).shape == (0, drawer.hps.z_size) and drawer.decode(z[:0]) == []
    for one_sketch in (a, a.tolist()):
        with pytest.raises(ValueError, match=re.escape("for one sketch pass [sketch]")):
            drawer.encode(one_sketch)
    with pytest.raises(ValueError, match=re.escape("sketch 1 has shape (3, 2)")):
        drawer.encode([a, np.zeros((3, 2))])
    # greedy takes no temperature: 0 (its limit) is accepted, and any gives the same sketch
    greedy = drawer.decode(z, greedy=True, temperature=0.0)
    for got, want in zip(drawer.decode(z, greedy=True, temperature=2.0), greedy):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        drawer.decode(z, temperature=0.0)
    # reconstruct is decode(encode(...)) with decode's options
    short = drawer.reconstruct([a, b], seed=5, max_steps=3, shared_noise=True)
    for got, want in zip(short, drawer.decode(z, seed=5, max_steps=3, shared_noise=True)):
        np.testing.assert_array_equal(got, want)
    assert all(len(sketch) <= 3 for sketch in short)
    with pytest.raises(ValueError, match="this model is conditional: z is 'encode'"):
        drawer.complete(a[:4], 2, z=None)


def test_sketches_in_the_data_units_are_warned_about():
    drawer = SketchRNNDrawer(tiny_model(seed=17), scale_factor=18.5)  # aaron_sheep's
    rng = np.random.default_rng(5)
    model_units = np.zeros((10, 3), np.float32)
    model_units[:, :2] = rng.standard_normal((10, 2))  # spread 1, as the data loader gives
    model_units[[4, 9], 2] = 1
    data_units = model_units.copy()
    data_units[:, :2] *= drawer.scale_factor  # as read from the .npz
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # none for model units
        drawer.encode([model_units])
        drawer.complete(model_units[:5], 1, seed=0)
    for draw in (lambda: drawer.encode([data_units]), lambda: drawer.complete(data_units[:5], 1)):
        with pytest.warns(UserWarning, match="divide dx and dy by drawer.scale_factor"):
            draw()


def test_interpolation_frames_share_one_noise_stream():
    drawer = SketchRNNDrawer(tiny_model(seed=15))
    sketch = random_sketches(np.random.default_rng(3), 1, drawer.hps.max_seq_len)[0]
    # From a sketch to itself every frame has the same z: with one noise stream for all
    # frames (the default) they are the same drawing; each with its own, they differ.
    shared = drawer.interpolate(sketch, sketch, steps=4, temperature=1.0, seed=2)
    independent = drawer.interpolate(sketch, sketch, steps=4, temperature=1.0, seed=2,
                                     shared_noise=False)
    for frame in shared[1:]:
        np.testing.assert_array_equal(frame, shared[0])
    assert len({frame.tobytes() for frame in independent}) > 1
    np.testing.assert_array_equal(independent[0], shared[0])  # the shared stream is frame 0's

    _, noise = drawer._random_draws(5, 2, None, with_z=False, shared_noise=True)
    first = next(_noise_of(drawer, 2, 1))  # stream 0, as decode() draws it
    for b in range(5):
        np.testing.assert_array_equal(noise[:, b], first)


def test_unconditional_model_samples_without_z():
    drawer = SketchRNNDrawer(tiny_model("conditional=False", seed=9))
    assert drawer.encoder is None
    assert len(drawer.sample(3, seed=0)) == 3
    with pytest.raises(ValueError, match="conditional=False"):
        drawer.decode(np.zeros((1, 4), np.float32))
    with pytest.raises(ValueError, match="conditional=False"):
        drawer.encode(random_sketches(np.random.default_rng(0), 1, 5))


def test_bad_arguments_are_clear_errors():
    drawer = SketchRNNDrawer(tiny_model(seed=10))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        drawer.sample(2, temperature=0.0)
    with pytest.raises(ValueError, match=r"z must have shape \(B, 4\)"):
        drawer.decode(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match="more than max_len=12"):
        drawer.encode([np.zeros((13, 3), np.float32)])


def write_run(folder, model, checkpoint_name, scale_factor=4.5):
    (folder / "checkpoints").mkdir(parents=True, exist_ok=True)
    config = {"hparams": model.hps.to_dict(), "scale_factor": scale_factor,
              "max_seq_len": model.hps.max_seq_len, "data_set": ["aaron_sheep"]}
    (folder / "model_config.json").write_text(json.dumps(config))
    model.save_weights(str(folder / "checkpoints" / checkpoint_name))


def test_load_run_rebuilds_the_model_from_its_folder(tmp_path):
    trained = tiny_model(seed=11)
    compile_model(trained, trained.hps)
    trained.optimizer.build(trained.trainable_variables)  # a training checkpoint: with optimizer
    write_run(tmp_path, trained, "ckpt-epoch0002-step00000020.weights.h5")
    other = tiny_model(seed=12)
    other.save_weights(str(tmp_path / "checkpoints" / "ckpt-epoch0001-step00000010.weights.h5"))

    drawer = load_run(str(tmp_path))  # no best.weights.h5: the newest step checkpoint
    assert drawer.scale_factor == 4.5 and drawer.data_sets == ["aaron_sheep"]
    assert drawer.hps == trained.hps
    for loaded, saved in zip(drawer.model.weights, trained.weights):
        np.testing.assert_array_equal(np.asarray(loaded), np.asarray(saved), err_msg=loaded.path)
    reference = SketchRNNDrawer(trained)
    for a, b in zip(drawer.sample(4, seed=0), reference.sample(4, seed=0)):
        np.testing.assert_array_equal(a, b)

    other.save_weights(str(tmp_path / "checkpoints" / "best.weights.h5"))
    best = load_run(str(tmp_path))  # best.weights.h5 first
    np.testing.assert_array_equal(np.asarray(best.model.get_layer("mixture_head").kernel),
                                  np.asarray(other.get_layer("mixture_head").kernel))


def test_load_run_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="model_config.json"):
        load_run(str(tmp_path))
    write_run(tmp_path, tiny_model(seed=13), "unrelated.weights.h5")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_run(str(tmp_path))
    bigger = tiny_model("dec_rnn_size=32")
    bigger.save_weights(str(tmp_path / "bigger.weights.h5"))
    with pytest.raises(ValueError, match="cannot load .*bigger.weights.h5 into the model of"):
        load_run(str(tmp_path), checkpoint=str(tmp_path / "bigger.weights.h5"))
    # Another model's file: Keras warns about each part that does not fit, then raises; the
    # one-line error is all that is said.
    other = Path(__file__).parent / "fixtures" / "legacy_sheep" / "checkpoints" / "best.weights.h5"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match="cannot load .*legacy_sheep"):
            load_run(str(tmp_path), checkpoint=str(other))
    assert [str(w.message) for w in caught] == []


def test_sampling_command_writes_pictures(tmp_path, shared_datasets, capsys, monkeypatch):
    from PIL import Image

    import seq2seqVAE_sample

    run = tmp_path / "run"
    write_run(run, tiny_model("max_seq_len=250", seed=14), "best.weights.h5")
    out = tmp_path / "pictures"
    common = [f"--run_dir={run}", f"--output_dir={out}", f"--data_dir={shared_datasets}", "--seed=3"]

    assert seq2seqVAE_sample.main(common + ["--count=5"]) == 0
    first = (out / "sample-t0.50-s3.svg").read_text()
    assert ET.fromstring(first).tag == "{http://www.w3.org/2000/svg}svg"
    capsys.readouterr()
    with monkeypatch.context() as patch:  # said before the model loads and draws
        patch.setattr("seq2seqVAE.load_run", None)
        assert seq2seqVAE_sample.main(common + ["--count=5"]) == 2  # nothing overwritten
    assert capsys.readouterr().err.strip() == (
        f"error: {out / 'sample-t0.50-s3.svg'} exists; pass --force to overwrite it, or another "
        "--seed, --temperature or --output_dir")
    assert seq2seqVAE_sample.main(common + ["--count=5", "--force"]) == 0
    assert (out / "sample-t0.50-s3.svg").read_text() == first  # seeded: the same drawing
    assert seq2seqVAE_sample.main(common + ["--count=2", "--pen_temperature=1", "--labels"]) == 0
    texts = ET.parse(out / "sample-t0.50-p1.00-s3.svg").getroot().iter("{http://www.w3.org/2000/svg}text")
    assert [t.text for t in texts] == ["tau 0.5, pen 1, seed 3 #0", "tau 0.5, pen 1, seed 3 #1"]

    assert seq2seqVAE_sample.main(common + ["--mode=reconstruct", "--count=3", "--format=png",
                                            "--temperature=0.25"]) == 0
    assert Image.open(out / "reconstruct-t0.25-s3.png").format == "PNG"

    assert seq2seqVAE_sample.main(common + ["--mode=interpolate", "--indices=2,5", "--count=4",
                                            "--format=gif", "--gif_size=64", "--greedy"]) == 0
    gifs = sorted(out.glob("interpolate-*.gif"))
    assert [p.name for p in gifs] == [f"interpolate-2-5-greedy-s3-00{i}.gif" for i in range(4)]
    assert Image.open(gifs[0]).size == (64, 64)
    assert seq2seqVAE_sample.main(common + ["--mode=interpolate", "--indices=2,5", "--count=4"]) == 0
    texts = ET.parse(out / "interpolate-2-5-t0.50-s3.svg").getroot().iter("{http://www.w3.org/2000/svg}text")
    assert [t.text for t in texts] == ["test 2", "0.00", "0.33", "0.67", "1.00", "test 5"]

    capsys.readouterr()
    assert seq2seqVAE_sample.main(common + ["--mode=interpolate", "--indices=1,2,3"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: --indices: interpolate takes two test sketches, got 3")


ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("run_dir, margin", [
    # shipped (epoch 232): -0.272 from its own z, 0.045 from z = 0, 0.179 from another
    # sketch's z (100 test sketches)
    (ROOT / "examples" / "sheep", 0.1),
    # the small model shipped before, in the weight layout from before the cells (converted
    # on load, sketch_rnn/legacy.py): 0.430 from its own z, 0.500 from z = 0
    (ROOT / "tests" / "fixtures" / "legacy_sheep", 0.04),
], ids=["shipped", "legacy"])
def test_trained_models_still_decode_their_encodings(run_dir, margin, shared_datasets):
    """The trained models in the repository work with today's code: z carries the sketch.

    The teacher-forced reconstruction loss of test sketches decoded from their own z_mean
    must stay near the test loss recorded when it was trained, and well below the loss of
    decoding them from z = 0. A change to what the encoder or decoder compute (a layer's
    outputs, the weight layout) breaks this and means the example must be retrained.
    """
    drawer = load_run(str(run_dir))
    hps = drawer.hps
    sketches = drawer.load_sketches(str(shared_datasets), "test")[:100]
    x = utils.to_stroke5(sketches, hps.max_seq_len)

    def loss_from(z):
        params = drawer.decoder.predict([x[:, :-1], z], verbose=0)
        return float(reconstruction_loss(x[:, 1:], params, hps.num_mixture, hps.max_seq_len,
                                         mask_pen=True))

    own = loss_from(drawer.encode(sketches))
    blank = loss_from(np.zeros((len(sketches), hps.z_size), np.float32))
    recorded = json.loads((run_dir / "test_losses.json").read_text())["reconstruction_loss"]
    assert own < recorded + 0.05
    assert own < blank - margin


def test_the_shipped_sheep_ends_its_reconstructions_with_the_pen_at_its_own_temperature(
        shared_datasets):
    """At tau 0.3 the paper's rule also sharpens the pen toward "down", and many
    reconstructions of test sheep never draw the end token: they run to max_seq_len, looping
    over a finished sheep (49 of these 100 with seed 1 at epoch 232). With the pen at 1 they
    end near the test sketch's own length (0 ran to the end; median length 0.95 of it)."""
    drawer = load_run(str(ROOT / "examples" / "sheep"))
    sketches = drawer.load_sketches(str(shared_datasets), "test")[:100]
    z = drawer.encode(sketches)
    limit = drawer.hps.max_seq_len - 1  # stroke-3 rows of a sketch that never ended

    def lengths(**options):
        return np.array([len(s) for s in drawer.decode(z, temperature=0.3, seed=1, **options)])

    paper, pen_free = lengths(), lengths(pen_temperature=1.0)
    assert (paper >= limit).sum() >= 25
    assert (pen_free >= limit).sum() <= 3
    ratio = np.median(pen_free / np.array([len(s) for s in sketches]))
    assert 0.7 < ratio < 1.3, ratio
