"""Training on from a run's weights alone (--warm_start, sketch_rnn.warm_start)."""

import csv
import json
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest

import convert_model
import seq2seqVAE_train
from sketch_rnn.hparams import HParams
from sketch_rnn.model import build_model, compile_model
from sketch_rnn.warm_start import ramp_factor, rebuild_adam_moments

TINY = ("enc_rnn_size=16,dec_rnn_size=32,z_size=8,num_mixture=4,batch_size=20,"
        "steps_per_epoch=4,max_seq_len=250")


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


def learning_rate(step):
    """The default schedule, written out: (1e-3 - 1e-5) * 0.9999**step + 1e-5."""
    return (1e-3 - 1e-5) * 0.9999**step + 1e-5


def read_log(run):
    with open(Path(run) / "logs" / "training_log.csv") as f:
        return list(csv.DictReader(f))


def optimizer_step(checkpoint):
    with h5py.File(checkpoint, "r") as f:
        return int(np.asarray(f["optimizer/vars/0"]))  # Adam's iterations come first


@pytest.fixture(scope="module")
def shared_run(shared_datasets, tmp_path_factory):
    """A tiny run trained 2 epochs of 4 steps, shared as float16 without optimizer state."""
    folder = tmp_path_factory.mktemp("warm")
    code = seq2seqVAE_train.main([f"--data_dir={shared_datasets}", f"--experiment_dir={folder / 'run'}",
                                  f"--hparams={TINY},epochs=2", "--verbose=0"])
    assert code == 0
    assert convert_model.main(["--run_dir", str(folder / "run"), "--share", str(folder / "shared"),
                               "--float16"]) == 0
    return folder


@pytest.mark.slow
def test_a_warm_start_goes_on_from_the_weights_epoch_and_step(shared_run, shared_datasets):
    new = shared_run / "new"
    train = [f"--data_dir={shared_datasets}", f"--experiment_dir={new}", "--verbose=0"]
    assert seq2seqVAE_train.main([*train, f"--warm_start={shared_run / 'shared'}",
                                  "--warm_start_steps=4", "--hparams=epochs=3"]) == 0
    config = json.loads((new / "model_config.json").read_text())
    shared = json.loads((shared_run / "shared" / "model_config.json").read_text())
    assert config["warm_start"] == {"from": "shared", "weights": "best.weights.h5", "epoch": 2,
                                    "step": 8, "moment_steps": 4, "ramp_steps": 8}
    assert config["hparams"] == {**shared["hparams"], "epochs": 3}
    assert config["scale_factor"] == shared["scale_factor"]
    # One epoch, steps 8-11: the last batch began at step 11, 3/8 of the way up the ramp.
    (row,) = read_log(new)
    assert int(row["epoch"]) == 2
    assert float(row["lr"]) == pytest.approx(learning_rate(11) * 3 / 8, rel=1e-5)
    # The weights are the shared run's: its validation loss, not a new model's.
    assert float(row["val_loss"]) == pytest.approx(float(read_log(shared_run / "run")[-1]["val_loss"]),
                                                   rel=0.02)
    checkpoint = new / "checkpoints" / "ckpt-epoch0003-step00000012.weights.h5"
    assert optimizer_step(checkpoint) == 12
    # Resumed, the run keeps its ramp: the next epoch's last batch began at step 15, 7/8 up.
    assert seq2seqVAE_train.main([*train, f"--checkpoint={new}", "--hparams=epochs=4"]) == 0
    assert float(read_log(new)[-1]["lr"]) == pytest.approx(learning_rate(15) * 7 / 8, rel=1e-5)


@pytest.mark.parametrize("flags, message", [
    (["--warm_start={shared}", "--checkpoint={shared}"],
     "--warm_start starts a new run and --checkpoint resumes one: give one"),
    (["--warm_start={shared}", "--warm_start_steps=0"], "--warm_start_steps must be > 0, got 0"),
    (["--warm_start={shared}/logs"], "/logs is not a run folder (model_config.json and checkpoints/)"),
    (["--warm_start={shared}", "--hparams=dec_rnn_size=64"],
     "best.weights.h5 does not fit this model"),
])
def test_warm_start_errors_are_one_line(flags, message, shared_run, shared_datasets, capsys):
    shared = shared_run / "shared"
    argv = [f"--data_dir={shared_datasets}", f"--experiment_dir={shared_run / 'refused'}",
            "--verbose=0", *(flag.format(shared=shared) for flag in flags)]
    assert seq2seqVAE_train.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
