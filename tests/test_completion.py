"""Completing a partial sketch: `SketchRNNDrawer.complete` and `prefix_state`.

The references are independent of the code under test: the decoder state is computed by
stepping the `decoder_step` sub-model by hand over the start token and the prefix (the
completion itself runs the decoder layer over the prefix and then the compiled loop), and
the continuations are drawn by the step-by-step NumPy sampler of test_sampling.py started
from that state.
"""

import numpy as np
import pytest
from test_sampling import assert_same_drawing, random_sketches, reference_sample, tiny_model

import utils
from seq2seqVAE import SketchRNNDrawer

PREFIX_LENGTH = 5


def model_for(conditional, cell="lstm", seed=0):
    # float32 matmuls: numbers are compared across graphs.
    return tiny_model(f"conditional={conditional},dec_model={cell},lstm_matmul_dtype=float32",
                      seed=seed)


def a_prefix(seed=1, length=PREFIX_LENGTH):
    rng = np.random.default_rng(seed)
    prefix = random_sketches(rng, 1, length)[0]
    while len(prefix) != length:
        prefix = random_sketches(rng, 1, length)[0]
    prefix[-1, 2] = 0  # the pen stays down: the continuation carries on the stroke
    return prefix


def stepped_state(drawer, inputs, z):
    """The decoder's state after reading `inputs` (B, K, 5), one decoder_step call per point,
    from the initial state (eq. 4; zeros for a decoder-only model)."""
    batch = len(inputs)
    if drawer.hps.conditional:
        state = [np.asarray(s) for s in drawer.initial_state(z)]
    else:
        cell = drawer.model.get_layer("decoder_lstm").cell
        state = [np.zeros((batch, n), np.float32) for n in cell.state_sizes]
    for t in range(inputs.shape[1]):
        step_inputs = [inputs[:, t:t + 1]] + ([z] if drawer.hps.conditional else []) + state
        _, *state = (np.asarray(a) for a in drawer.decoder_step(step_inputs))
    return state


def own_z(drawer, prefix):
    """z_mean of the prefix, from the encoder sub-model directly."""
    z_mean, _ = drawer.encoder.predict(utils.to_stroke5([prefix], drawer.hps.max_seq_len), verbose=0)
    return z_mean


def completion_noise(seed, n, steps):
    """The draws complete() documents: one stream per continuation, uniforms then normals."""
    noise = np.empty((steps, n, 4), np.float32)
    for b, stream in enumerate(np.random.SeedSequence(seed).spawn(n)):
        rng = np.random.default_rng(stream)
        noise[:, b, :2] = rng.random((steps, 2))
        noise[:, b, 2:] = rng.standard_normal((steps, 2))
    return noise


@pytest.mark.parametrize("conditional", [True, False])
@pytest.mark.parametrize("cell", ["lstm", "hyper"])
def test_state_after_the_prefix_is_the_teacher_forced_state(conditional, cell):
    drawer = SketchRNNDrawer(model_for(conditional, cell))
    prefix = a_prefix()
    inputs = utils.to_stroke5([prefix], len(prefix))  # S0, S1 .. S_K
    z = own_z(drawer, prefix) if conditional else None
    expected = stepped_state(drawer, inputs, z)
    ours = drawer.prefix_state(prefix)
    assert len(ours) == len(expected)
    for got, want in zip(ours, expected):
        assert got.shape == want.shape == (1, want.shape[1])
        np.testing.assert_allclose(got, want, atol=1e-5)
    if conditional:  # given latent vectors: one state per vector
        several = np.random.default_rng(2).normal(size=(3, drawer.hps.z_size)).astype(np.float32)
        expected = stepped_state(drawer, np.repeat(inputs, 3, axis=0), several)
        for got, want in zip(drawer.prefix_state(prefix, z=several), expected):
            np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("conditional", [True, False])
def test_continuations_are_drawn_from_the_state_after_the_prefix(conditional):
    drawer = SketchRNNDrawer(model_for(conditional, seed=3))
    prefix = a_prefix(seed=4)
    n, seed, tau = 4, 7, np.float32(0.8)
    completions = drawer.complete(prefix, n, temperature=tau, seed=seed)

    # The reference: the decoder steps through S0 .. S_{K-1} by hand, then the NumPy sampler
    # reads S_K (the prefix's last point) and draws on with complete()'s documented draws.
    inputs = np.repeat(utils.to_stroke5([prefix], len(prefix)), n, axis=0)
    z = np.repeat(own_z(drawer, prefix), n, axis=0) if conditional else None
    state = stepped_state(drawer, inputs[:, :-1], z)
    noise = completion_noise(seed, n, drawer.hps.max_seq_len - len(prefix))
    expected = reference_sample(drawer, z, noise, tau, False, state=state, point=inputs[:, -1])

    assert len(completions) == n
    drawn_any = False
    for sketch, reference in zip(completions, expected):
        np.testing.assert_array_equal(sketch[:len(prefix)], prefix)  # the prefix, unchanged
        continuation = sketch[len(prefix):]
        want = utils.to_stroke3(reference)
        assert continuation.shape == want.shape
        np.testing.assert_array_equal(continuation[:, 2], want[:, 2])
        np.testing.assert_allclose(continuation, want, atol=1e-4)
        drawn_any |= len(continuation) > 0
    assert drawn_any


def test_seeded_completions_repeat_and_other_seeds_differ():
    drawer = SketchRNNDrawer(model_for(True, seed=5))
    prefix = a_prefix(seed=6)
    first = drawer.complete(prefix, 5, temperature=1.0, seed=11)
    again = drawer.complete(prefix, 5, temperature=1.0, seed=11)
    fewer = drawer.complete(prefix, 2, temperature=1.0, seed=11)
    other = drawer.complete(prefix, 5, temperature=1.0, seed=12)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(first, fewer):  # each continuation has its own stream
        assert_same_drawing(a, b)
    assert any(len(a) != len(b) or not np.array_equal(a, b) for a, b in zip(first, other))
    # Within one call, the continuations differ from each other.
    assert len({a.tobytes() for a in first}) > 1


def test_an_empty_prefix_draws_as_sample_and_decode_do():
    decoder_only = SketchRNNDrawer(model_for(False, seed=8))
    empty = np.zeros((0, 3), np.float32)
    for a, b in zip(decoder_only.complete(empty, 3, 0.6, seed=2), decoder_only.sample(3, 0.6, seed=2)):
        np.testing.assert_array_equal(a, b)
    conditional = SketchRNNDrawer(model_for(True, seed=9))
    z = np.random.default_rng(0).normal(size=(3, conditional.hps.z_size)).astype(np.float32)
    for a, b in zip(conditional.complete(empty, 3, 0.6, z=z, seed=2), conditional.decode(z, 0.6, seed=2)):
        np.testing.assert_array_equal(a, b)


def test_completion_errors_are_clear():
    conditional = SketchRNNDrawer(model_for(True, seed=10))
    decoder_only = SketchRNNDrawer(model_for(False, seed=10))
    prefix = a_prefix()
    with pytest.raises(ValueError, match="nothing to encode"):
        conditional.complete(np.zeros((0, 3), np.float32))
    with pytest.raises(ValueError, match=r"prefix must be an \(N, 3\)"):
        conditional.complete(prefix[:, :2])
    with pytest.raises(ValueError, match="pen column"):
        conditional.complete(prefix + 0.5)
    with pytest.raises(ValueError, match="more than the model's max_seq_len=12"):
        conditional.complete(np.zeros((13, 3), np.float32))
    with pytest.raises(ValueError, match=r"z must have shape \(4,\) or \(3, 4\)"):
        conditional.complete(prefix, 3, z=np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match="conditional=False"):
        decoder_only.complete(prefix, z=np.zeros(4, np.float32))
