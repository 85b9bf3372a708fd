"""bucket_tail: trimmed batches keep that many steps of end-of-sketch pen loss after their
longest sketch (batch_generator.SketchBatches `tail`, seq2seqVAE_train.training_batches)."""

import dataclasses

import numpy as np
import pytest

import utils
from batch_generator import SketchBatches
from seq2seqVAE import HParams, build_model, compile_model
from seq2seqVAE_train import training_batches
from sketch_rnn.raster import batch_renderer

MAX_SEQ_LEN = 12
LENGTHS = (4, 6, 9, 5)  # one batch of these; its longest sketch has 9 points


def sketches_of(lengths, seed=0):
    """Stroke-3 sketches of the given lengths, the pen lifted every third point and at the end."""
    rng = np.random.default_rng(seed)
    sketches = []
    for n in lengths:
        sketch = np.zeros((n, 3), np.float32)
        sketch[:, :2] = rng.normal(scale=2.0, size=(n, 2))
        sketch[2::3, 2] = 1
        sketch[-1, 2] = 1
        sketches.append(sketch)
    return sketches


def loader_of(lengths=LENGTHS, **kwargs):
    return utils.DataLoader(sketches_of(lengths), batch_size=len(lengths), max_seq_len=MAX_SEQ_LEN,
                            **kwargs)


# ---- the batches' shape ----


@pytest.mark.parametrize("tail", [0, 1, 3, 100])
def test_a_trimmed_batch_keeps_tail_steps_after_its_longest_sketch_up_to_max_seq_len(tail):
    loader = loader_of()
    padded, _ = SketchBatches(loader, 4, shuffle=False)[0]
    x, y = SketchBatches(loader, 4, shuffle=False, bucket_batches=1, trim=True, tail=tail)[0]
    steps = min(MAX_SEQ_LEN, 9 + tail)  # 9, 10, 12, 12
    assert x.shape == (4, steps + 1, 5) and y.shape == (4, steps, 5)
    np.testing.assert_array_equal(x, padded[:, : steps + 1])
    np.testing.assert_array_equal(y, x[:, 1:])
    # Every sketch's targets end with at least `tail` end-of-sketch states (p3 = 1).
    for row, n in enumerate(LENGTHS):
        np.testing.assert_array_equal(y[row, n:], np.tile([0, 0, 0, 0, 1], (steps - n, 1)))
        assert steps - n >= min(tail, MAX_SEQ_LEN - n)


def test_each_distributed_share_keeps_tail_steps_after_its_own_longest_sketch():
    loader = loader_of()
    batches = SketchBatches(loader, 4, shuffle=False, bucket_batches=1, trim=True, tail=2)
    (x0, _), (x1, _) = batches.piece(0, 0, 0, 2), batches.piece(0, 0, 1, 2)
    padded, _ = SketchBatches(loader, 4, shuffle=False)[0]
    # Shares: sketches of 4 and 6 points, then of 9 and 5.
    assert x0.shape == (2, 6 + 2 + 1, 5) and x1.shape == (2, min(MAX_SEQ_LEN, 9 + 2) + 1, 5)
    np.testing.assert_array_equal(x0, padded[:2, : 6 + 2 + 1])
    np.testing.assert_array_equal(x1, padded[2:, : 11 + 1])


def test_a_cnn_batch_trims_its_strokes_and_keeps_its_pictures():
    hps = HParams.parse(f"encoder=cnn,img_size=16,max_seq_len={MAX_SEQ_LEN}")
    loader = loader_of()
    render = batch_renderer(hps)
    padded, _ = SketchBatches(loader, 4, shuffle=False, render=render)[0]
    x, y = SketchBatches(loader, 4, shuffle=False, bucket_batches=1, trim=True, tail=2,
                         render=render)[0]
    assert x["strokes"].shape == (4, 9 + 2 + 1, 5)
    np.testing.assert_array_equal(x["strokes"], padded["strokes"][:, : 9 + 2 + 1])
    np.testing.assert_array_equal(x["image"], padded["image"])
    assert x["image"].shape == (4, 16, 16, 1) and x["image"].max() > 0
    np.testing.assert_array_equal(y, x["strokes"][:, 1:])


# ---- the training objective ----


def reference_loss(params, targets, num_mixture, pen_steps):
    """Training L_R (eq. 9) in NumPy on a padded batch, the pen term kept on steps < pen_steps.

    params: (B, T, 6M + 3) as the mixture head emits them: 3 pen logits, then M each of
    mixture logits, mu_x, mu_y, log sigma_x, log sigma_y and the correlation before tanh.
    The offset term counts the sketch's points only; the sum is divided by B * T, T being
    max_seq_len (the padded batch's length), as the official code normalises it.
    """
    params, targets = params.astype(np.float64), targets.astype(np.float64)
    m = num_mixture
    pen_logits = params[..., :3]
    pi_logits, mu_x, mu_y, log_sx, log_sy, rho = (
        params[..., 3 + i * m : 3 + (i + 1) * m] for i in range(6))
    rho = np.tanh(rho)
    sx, sy = np.exp(log_sx), np.exp(log_sy)
    pi = np.exp(pi_logits) / np.sum(np.exp(pi_logits), axis=-1, keepdims=True)
    dx, dy = targets[..., 0:1], targets[..., 1:2]
    zx, zy = (dx - mu_x) / sx, (dy - mu_y) / sy
    z = zx**2 + zy**2 - 2 * rho * zx * zy
    density = np.exp(-z / (2 * (1 - rho**2))) / (2 * np.pi * sx * sy * np.sqrt(1 - rho**2))
    offset_loss = -np.log(np.sum(pi * density, axis=-1) + 1e-6)  # (B, T)
    pen_probs = np.exp(pen_logits) / np.sum(np.exp(pen_logits), axis=-1, keepdims=True)
    pen_loss = -np.sum(targets[..., 2:5] * np.log(pen_probs), axis=-1)  # (B, T)
    points = targets[..., 4] == 0  # the sketch's own points
    kept = np.arange(targets.shape[1]) < pen_steps
    rows, max_seq_len = targets.shape[:2]
    return (np.sum(offset_loss * points) + np.sum(pen_loss[:, kept])) / (rows * max_seq_len)


@pytest.fixture(scope="module")
def tiny():
    """A tiny decoder-only model (no z noise, no dropout: its loss is a function of the batch),
    its initial weights and its mixture parameters on the full padded batch."""
    hps = HParams.parse(f"dec_rnn_size=16,num_mixture=3,max_seq_len={MAX_SEQ_LEN},batch_size=4,"
                        "conditional=False,use_recurrent_dropout=False,lstm_matmul_dtype=float32,"
                        "random_scale_factor=0.2,bucket_batches=1")
    loader = loader_of(random_scale_factor=hps.random_scale_factor)
    padded = SketchBatches(loader, 4, augment=True, seed=hps.seed, bucket_batches=1)[0]
    model = compile_model(build_model(hps), hps)
    weights = model.get_weights()
    params = np.asarray(model(padded[0]))
    return hps, loader, model, weights, padded, params


@pytest.mark.parametrize("tail", [0, 2, 100])
def test_the_training_loss_keeps_the_pen_term_up_to_tail_steps_after_the_longest_sketch(tiny, tail):
    hps, loader, model, weights, (x_pad, y_pad), params = tiny
    hps = dataclasses.replace(hps, bucket_tail=tail)
    x, y = training_batches(hps, loader)[0]  # augmented as the padded batch: same seed, epoch, i
    np.testing.assert_array_equal(x, x_pad[:, : x.shape[1]])
    model.set_weights(weights)
    loss = model.train_on_batch(x, y, return_dict=True)["loss"]  # before the step's update
    expected = reference_loss(params, y_pad, hps.num_mixture, pen_steps=max(LENGTHS) + tail)
    np.testing.assert_allclose(loss, expected, rtol=2e-5)
    # The tail matters: no tail drops pen terms that a full batch (the official objective) has.
    full = reference_loss(params, y_pad, hps.num_mixture, pen_steps=MAX_SEQ_LEN)
    if max(LENGTHS) + tail < MAX_SEQ_LEN:
        assert expected < full - 1e-3
    else:  # the tail reaches max_seq_len: the padded batch
        assert x.shape == x_pad.shape and expected == full


# ---- the hparam ----


@pytest.mark.parametrize("overrides, message", [
    ("bucket_batches=10,bucket_tail=-1", "hparam 'bucket_tail' must be >= 0, got -1"),
    ("bucket_batches=10,bucket_tail=two", "'bucket_tail' expects int, got 'two'"),
    ("bucket_batches=10,bucket_tail=2.5", "'bucket_tail' expects int, got '2.5'"),
    ("bucket_tail=5", "hparam 'bucket_tail' applies to trimmed batches only (bucket_batches > 0)"),
])
def test_bad_bucket_tail_values_are_refused_in_one_line(overrides, message):
    with pytest.raises(ValueError) as error:
        HParams.parse(overrides)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_stored_config_with_a_bad_bucket_tail_is_refused_naming_the_key():
    for value in (True, 1.0, -3):
        with pytest.raises(ValueError, match="model_config.json: hparam 'bucket_tail' must be"):
            HParams.from_dict({"bucket_batches": 10, "bucket_tail": value}, source="model_config.json")
    assert HParams.from_dict({"bucket_batches": 10, "bucket_tail": 20}).bucket_tail == 20
    assert HParams().bucket_tail == 0
