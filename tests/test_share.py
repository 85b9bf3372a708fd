"""`convert_model.py --run_dir RUN --share OUT [--float16]`: a trained run made ready to share.

References: NumPy's own float16 rounding of the original weights, the original files
byte for byte, and, for the shipped example model, its teacher-forced reconstruction loss
with the original weights.
"""

import json
import shutil
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest

import convert_model
import utils
from sketch_rnn.drawing import load_run
from sketch_rnn.hparams import HParams
from sketch_rnn.mixture import reconstruction_loss
from sketch_rnn.model import build_model, compile_model

ROOT = Path(__file__).resolve().parents[1]
LEGACY_SHEEP = ROOT / "tests" / "fixtures" / "legacy_sheep"
TINY = HParams.parse("enc_rnn_size=8,dec_rnn_size=12,z_size=4,num_mixture=2,max_seq_len=20,"
                     "batch_size=4,lstm_matmul_dtype=float32")


@pytest.fixture
def trained_run(tmp_path):
    """A run folder as the training command leaves it: a checkpoint with optimizer state,
    best weights and best.json, the log, the test losses and a config with extra keys."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "logs").mkdir()
    keras.utils.set_random_seed(3)
    model = compile_model(build_model(TINY), TINY)
    model.optimizer.build(model.trainable_variables)
    model.save_weights(run / "checkpoints" / "best.weights.h5")
    model.save_weights(run / "checkpoints" / "ckpt-epoch0002-step00000010.weights.h5")
    (run / "checkpoints" / "best.json").write_text(json.dumps({"epoch": 2, "step": 10}))
    (run / "logs" / "training_log.csv").write_text("epoch,loss\n0,1.5\n1,1.25\n")
    (run / "test_losses.json").write_text(json.dumps({"loss": 1.0}))
    config = {"hparams": TINY.to_dict(), "scale_factor": 2.5, "max_seq_len": 20,
              "data_set": ["cat"], "max_seq_len_cap": 250, "num_sketches": {"train": 9}}
    (run / "model_config.json").write_text(json.dumps(config))
    return run, [np.asarray(w) for w in model.get_weights()]


def weight_arrays(path):
    """Every array in a Keras weights file, by its path in the file."""
    found = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, item: found.update({name: item[()]})
                     if isinstance(item, h5py.Dataset) else None)
    return found


@pytest.mark.parametrize("float16", [False, True])
def test_share_keeps_weights_config_and_logs_and_drops_the_optimizer(trained_run, tmp_path, capsys,
                                                                     float16):
    run, weights = trained_run
    out = tmp_path / "shared"
    argv = [f"--run_dir={run}", f"--share={out}"] + (["--float16"] if float16 else [])
    assert convert_model.main(argv) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and ("float16" if float16 else "float32") in printed

    original = weight_arrays(run / "checkpoints" / "best.weights.h5")
    shared = weight_arrays(out / "checkpoints" / "best.weights.h5")
    assert any(name.startswith("optimizer") for name in original)
    assert set(shared) == {name for name in original if not name.startswith("optimizer")}
    for name, array in shared.items():
        if original[name].dtype == np.float32:
            expected = original[name].astype(np.float16) if float16 else original[name]
            assert array.dtype == expected.dtype, name
            np.testing.assert_array_equal(array, expected, err_msg=name)
        else:  # seed states stay as they are
            np.testing.assert_array_equal(array, original[name], err_msg=name)
    if float16:  # the command reports the largest change the rounding made
        largest = max(float(np.abs(original[name] - array.astype(np.float32)).max(initial=0))
                      for name, array in shared.items() if original[name].dtype == np.float32)
        assert largest > 0
        assert f"largest weight change from float16 rounding: {largest:.2e}" in printed

    # It loads as a run, into float32 variables holding the (rounded) weights.
    drawer = load_run(str(out))
    for got, want in zip(drawer.model.get_weights(), weights):
        got = np.asarray(got)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want.astype(np.float16).astype(want.dtype)
                                      if float16 and want.dtype == np.float32 else want)

    config = json.loads((out / "model_config.json").read_text())
    before = json.loads((run / "model_config.json").read_text())
    assert {k: config[k] for k in before} == before  # extra keys kept, nothing changed
    assert config["source"] == {"shared_from": run.name, "weights": "best.weights.h5",
                                "float16": float16, "epoch": 2, "step": 10}
    for inside in ("logs/training_log.csv", "test_losses.json"):
        assert (out / inside).read_bytes() == (run / inside).read_bytes()
    assert not (out / "checkpoints" / "best.json").exists()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["best.weights.h5"]


def test_sharing_a_shared_run_keeps_the_epoch_and_step_of_its_weights(trained_run, tmp_path):
    # A shared run has no best.json: its config's source says where the weights came from.
    from sketch_rnn.run_folder import checkpoint_position

    run, _ = trained_run
    assert convert_model.main([f"--run_dir={run}", f"--share={tmp_path / 'once'}"]) == 0
    assert convert_model.main([f"--run_dir={tmp_path / 'once'}", f"--share={tmp_path / 'twice'}",
                               "--float16"]) == 0
    source = json.loads((tmp_path / "twice" / "model_config.json").read_text())["source"]
    assert (source["epoch"], source["step"], source["float16"]) == (2, 10, True)
    weights = tmp_path / "twice" / "checkpoints" / "best.weights.h5"
    assert checkpoint_position(str(tmp_path / "twice"), str(weights)) == {"epoch": 2, "step": 10}
    # another folder's best weights are not described by this run's config
    assert checkpoint_position(str(tmp_path / "twice"),
                               str(tmp_path / "once" / "checkpoints" / "best.weights.h5")) == {}


def test_share_of_a_named_checkpoint_says_which(trained_run, tmp_path):
    run, _ = trained_run
    checkpoint = run / "checkpoints" / "ckpt-epoch0002-step00000010.weights.h5"
    out = tmp_path / "shared"
    assert convert_model.main([f"--run_dir={run}", f"--share={out}",
                               f"--checkpoint={checkpoint}"]) == 0
    source = json.loads((out / "model_config.json").read_text())["source"]
    assert source["weights"] == checkpoint.name
    assert (source["epoch"], source["step"]) == (2, 10)  # from the file's name


@pytest.mark.parametrize("argv, message", [
    (["--share=OUT"], "--share: give the trained run folder with --run_dir"),
    (["--run_dir=RUN", "--share=OUT", "--to=X"], "--share: the new folder is --share's value"),
    (["--run_dir=RUN", "--float16", "--to_magenta_js=x.json"], "--float16 is a flag of --share"),
    (["--run_dir=RUN", "--share=OUT", "--z_seed=0"], "--z_seed does nothing with --share"),
    (["--run_dir=RUN", "--share=OUT", "--hparams=seed=3"], "--hparams does nothing with --share"),
    (["--run_dir=RUN", "--share=OUT", "--data_dir=d"], "--data_dir does nothing with --share"),
])
def test_share_flag_mistakes_are_one_line_errors(argv, message, capsys):
    assert convert_model.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"error: {message}"), err


def test_share_refuses_a_folder_that_is_not_empty_and_the_run_itself(trained_run, tmp_path, capsys):
    run, _ = trained_run
    out = tmp_path / "shared"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert convert_model.main([f"--run_dir={run}", f"--share={out}"]) == 2
    assert "--share:" in capsys.readouterr().err and (out / "keep.txt").read_text() == "mine"
    assert convert_model.main([f"--run_dir={run}", f"--share={run}", "--force"]) == 2
    assert f"--share: {run} is the input" in capsys.readouterr().err
    assert (run / "checkpoints" / "best.json").exists()
    # The folder of runs that holds it: --force would have deleted the run and its neighbours.
    (tmp_path / "notes.txt").write_text("mine")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert convert_model.main([f"--run_dir={run}", f"--share={tmp_path}", "--force"]) == 2
    assert f"--share: {tmp_path} holds the input {run}" in capsys.readouterr().err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    # --force replaces a run folder, not a folder of other things.
    assert convert_model.main([f"--run_dir={run}", f"--share={out}", "--force"]) == 2
    assert "is not a run folder (model_config.json and checkpoints/)" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"


def test_share_says_which_files_it_copied_and_keeps_an_imported_runs_source(trained_run, tmp_path,
                                                                            capsys):
    run, _ = trained_run
    (run / "test_losses.json").unlink()
    config = json.loads((run / "model_config.json").read_text())
    origin = {"format": "magenta checkpoint", "global_step": 31}
    (run / "model_config.json").write_text(json.dumps({**config, "source": origin}))
    assert convert_model.main([f"--run_dir={run}", f"--share={tmp_path / 'a'}"]) == 0
    assert capsys.readouterr().out.splitlines()[0].endswith(
        "with the run's config and training log")
    assert json.loads((tmp_path / "a" / "model_config.json").read_text())["source"]["origin"] == origin
    (run / "logs" / "training_log.csv").unlink()
    assert convert_model.main([f"--run_dir={run}", f"--share={tmp_path / 'b'}"]) == 0
    assert capsys.readouterr().out.splitlines()[0].endswith("with the run's config")


def test_weights_beyond_float16_range_are_refused(trained_run, tmp_path, capsys):
    run, _ = trained_run
    with h5py.File(run / "checkpoints" / "best.weights.h5", "r+") as f:
        name = "layers/dense_3/vars/0"  # the last Dense layer built: the mixture head's kernel
        values = f[name][()]
        values[0, 0] = 1e5
        f[name][...] = values
    out = tmp_path / "shared"
    assert convert_model.main([f"--run_dir={run}", f"--share={out}", "--float16"]) == 2
    err = capsys.readouterr().err
    assert "beyond float16's range" in err and name in err
    assert not out.exists()


def test_a_trained_model_keeps_its_loss_in_float16(tmp_path, shared_datasets):
    """A real trained model (the small sheep shipped before, float32): float16 weights change
    its test reconstruction loss by < 0.1%."""
    out = tmp_path / "sheep16"
    assert convert_model.main([f"--run_dir={LEGACY_SHEEP}", f"--share={out}", "--float16"]) == 0

    def loss(run_dir):
        drawer = load_run(str(run_dir))
        sketches = drawer.load_sketches(str(shared_datasets), "test")[:100]
        x = utils.to_stroke5(sketches, drawer.hps.max_seq_len)
        z = drawer.encode(sketches)
        params = drawer.decoder.predict([x[:, :-1], z], verbose=0)
        return float(reconstruction_loss(x[:, 1:], params, drawer.hps.num_mixture,
                                         drawer.hps.max_seq_len, mask_pen=True))

    full, half = loss(LEGACY_SHEEP), loss(out)
    assert half == pytest.approx(full, rel=1e-3)
    assert half != full  # the weights did change
    shutil.rmtree(out)
