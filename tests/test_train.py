"""The training command end to end on the real aaron_sheep data, in subprocesses (and, for
--warm_start, in-process)."""

import csv
import json
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

import convert_model
import seq2seqVAE_sample
import seq2seqVAE_train

REPO = Path(__file__).resolve().parents[1]
TINY = ("enc_rnn_size=16,dec_rnn_size=32,z_size=8,num_mixture=4,batch_size=20,"
        "steps_per_epoch=4,max_seq_len=250")

pytestmark = pytest.mark.slow


def learning_rate(step):
    """The default schedule, written out: (1e-3 - 1e-5) * 0.9999**step + 1e-5."""
    return (1e-3 - 1e-5) * 0.9999**step + 1e-5


def run_train(shared_datasets, experiment_dir, *flags, check=True, timeout=600):
    command = [sys.executable, str(REPO / "seq2seqVAE_train.py"), f"--data_dir={shared_datasets}",
               "--data_set=aaron_sheep", f"--experiment_dir={experiment_dir}", "--verbose=2", *flags]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    if check and result.returncode != 0:
        raise AssertionError(f"training failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


def read_log(experiment_dir):
    with open(Path(experiment_dir) / "logs" / "training_log.csv") as f:
        return list(csv.DictReader(f))


def optimizer_step(checkpoint):
    with h5py.File(checkpoint, "r") as f:
        return int(np.asarray(f["optimizer/vars/0"]))  # Adam's iterations come first


def newest_checkpoint(experiment_dir):
    return sorted((Path(experiment_dir) / "checkpoints").glob("ckpt-*.weights.h5"))[-1]


def stopped_after_one_epoch(run, folder):
    """`folder` as a run of `run`'s config would be after its first epoch: the config and
    that epoch's checkpoint. The checkpoint of a longer run's first epoch is the checkpoint
    of a one-epoch run: same batches (drawn from seed and epoch), same steps."""
    (folder / "checkpoints").mkdir(parents=True)
    shutil.copy(Path(run) / "model_config.json", folder)
    (first,) = (Path(run) / "checkpoints").glob("ckpt-epoch0001-*.weights.h5")
    shutil.copy(first, folder / "checkpoints")
    return folder


@pytest.fixture(scope="module")
def two_epoch_run(shared_datasets, tmp_path_factory):
    experiment_dir = tmp_path_factory.mktemp("straight")
    result = run_train(shared_datasets, experiment_dir, f"--hparams={TINY},epochs=2")
    return experiment_dir, result


def test_run_folder_holds_config_checkpoints_logs_and_test_losses(two_epoch_run, shared_datasets):
    experiment_dir, result = two_epoch_run
    config = json.loads((experiment_dir / "model_config.json").read_text())
    assert config["hparams"]["dec_rnn_size"] == 32 and config["data_set"] == ["aaron_sheep"]
    # The scale factor is the std of the training offsets (clamped to +-1000), computed here
    # independently from the raw file.
    with np.load(shared_datasets / "aaron_sheep.npz", allow_pickle=True, encoding="latin1") as data:
        offsets = np.concatenate([s[:, :2] for s in data["train"] if len(s) <= 250])
    assert config["scale_factor"] == pytest.approx(np.std(np.clip(offsets, -1000, 1000)), rel=1e-5)
    rows = read_log(experiment_dir)
    assert len(rows) == 2
    for column in ("loss", "reconstruction_loss", "kl_loss", "val_loss", "val_reconstruction_loss",
                   "val_kl_loss", "kl_weight", "lr"):
        assert np.isfinite(float(rows[-1][column])), column
    assert optimizer_step(newest_checkpoint(experiment_dir)) == 8
    assert (experiment_dir / "checkpoints" / "best.weights.h5").exists()
    test_losses = json.loads((experiment_dir / "test_losses.json").read_text())
    assert set(test_losses) >= {"loss", "reconstruction_loss", "kl_loss"}
    assert list((experiment_dir / "logs" / "tensorboard" / "train").glob("events.out.tfevents.*"))
    assert "Test:" in result.stdout


def test_logged_schedules_follow_the_official_formulas(two_epoch_run):
    experiment_dir, _ = two_epoch_run
    last = read_log(experiment_dir)[-1]
    step = 7  # the schedules were last set before the 8th minibatch
    assert float(last["lr"]) == pytest.approx(learning_rate(step), rel=1e-5)
    assert float(last["kl_weight"]) == pytest.approx(0.5 - (0.5 - 0.01) * 0.99995**step, rel=1e-5)


def test_resume_continues_exactly_where_the_run_stopped(two_epoch_run, shared_datasets, tmp_path):
    straight_dir, _ = two_epoch_run
    first = newest_checkpoint(stopped_after_one_epoch(straight_dir, tmp_path))
    assert optimizer_step(first) == 4
    resumed = run_train(shared_datasets, tmp_path, "--hparams=epochs=2", f"--checkpoint={first}",
                        "--initial_epoch=1")
    assert "resuming from" in resumed.stdout
    assert optimizer_step(newest_checkpoint(tmp_path)) == optimizer_step(newest_checkpoint(straight_dir))
    straight, split = read_log(straight_dir), read_log(tmp_path)
    assert [row["epoch"] for row in split] == ["1"]
    for column in ("lr", "kl_weight"):
        assert float(split[0][column]) == pytest.approx(float(straight[1][column]), rel=1e-6)
    # Same batches, same optimizer moments, same dropout and z noise: the same losses.
    for column in ("loss", "reconstruction_loss", "kl_loss", "val_loss"):
        assert float(split[0][column]) == pytest.approx(float(straight[1][column]), rel=1e-4), column

    # A third epoch with a new learning-rate schedule: Adam's moments go on, the rate follows
    # the new formula from that step on, and the config records the change for the next resume.
    run_train(shared_datasets, tmp_path, "--hparams=epochs=3,learning_rate=2e-4,min_learning_rate=1e-4",
              f"--checkpoint={tmp_path}")
    assert optimizer_step(newest_checkpoint(tmp_path)) == 12
    step = 11
    assert float(read_log(tmp_path)[1]["lr"]) == pytest.approx((2e-4 - 1e-4) * 0.9999**step + 1e-4,
                                                                rel=1e-5)
    config = json.loads((tmp_path / "model_config.json").read_text())
    assert config["schedule_changes"] == [{
        "after_epoch": 2, "before": {"learning_rate": 1e-3, "min_learning_rate": 1e-5},
        "hparams": {"learning_rate": 2e-4, "min_learning_rate": 1e-4}}]
    resumed_again = seq2seqVAE_train.prepare(seq2seqVAE_train.parse_args([
        f"--data_dir={shared_datasets}", f"--experiment_dir={tmp_path}", "--hparams=epochs=4",
        f"--checkpoint={tmp_path}"]))
    assert (resumed_again["hps"].learning_rate, resumed_again["hps"].min_learning_rate) == (2e-4, 1e-4)
    assert resumed_again["schedule_change"] is None


def test_resume_from_the_run_folder_picks_the_newest_complete_checkpoint(two_epoch_run,
                                                                         shared_datasets, tmp_path):
    shutil.copytree(two_epoch_run[0], tmp_path, dirs_exist_ok=True)
    newest = newest_checkpoint(tmp_path)
    newest.write_bytes(newest.read_bytes()[:1000])  # a truncated file, as after a crash
    result = run_train(shared_datasets, tmp_path, "--hparams=epochs=2", f"--checkpoint={tmp_path}")
    assert "skipping incomplete checkpoint" in result.stderr
    assert "ckpt-epoch0001-step00000004" in result.stdout


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_keeps_the_last_checkpoint_and_says_how_to_resume(signum, shared_datasets, tmp_path):
    command = [sys.executable, str(REPO / "seq2seqVAE_train.py"), f"--data_dir={shared_datasets}",
               "--data_set=aaron_sheep", f"--experiment_dir={tmp_path}", "--verbose=2",
               f"--hparams={TINY},epochs=1000,save_every=2"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=REPO)
    deadline = time.time() + 300
    checkpoints = tmp_path / "checkpoints"
    while time.time() < deadline and len(list(checkpoints.glob("ckpt-*.weights.h5"))) < 2:
        time.sleep(0.2)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signum, stderr[-2000:]  # 130, 143: as the shell reports
    assert "Stopping after this batch" in stderr
    assert "The last checkpoint is intact" in stderr and f"--checkpoint={tmp_path}" in stderr
    assert not list(checkpoints.glob(".tmp-*"))
    for checkpoint in checkpoints.glob("ckpt-*.weights.h5"):
        with h5py.File(checkpoint, "r") as f:
            assert "layers" in f and "optimizer" in f
    # The epoch it stopped in ends with no validation and no row in the log: the log holds
    # one row per epoch the newest checkpoint finished, so a resumed run that redoes the
    # interrupted epoch writes its row once.
    from callbacks import list_checkpoints

    _, finished, _ = list_checkpoints(str(checkpoints))[-1]
    assert [row["epoch"] for row in read_log(tmp_path)] == [str(e) for e in range(finished)]


@pytest.mark.parametrize("checkpoint_flags", [
    ["--checkpoint=runs/old/checkpoints/ckpt-epoch0002-step00000008.weights.h5", "--initial_epoch=2"],
    ["--checkpoint", "runs/old", "--initial_epoch", "2"],  # values as the next word
    ["--check", "runs/old", "--init=2"],  # argparse's abbreviations
    ["--warm_start", "examples/sheep", "--warm_start_steps=20"],  # a warm-started run resumes
], ids=["with =", "next word", "abbreviated", "warm start"])
def test_the_resume_hint_is_the_command_with_only_its_checkpoint_changed(checkpoint_flags):
    from seq2seqVAE_train import parse_args, resume_command

    run = "runs/my sheep"  # a space, which the shell needs quoted
    typed = ["--data_set=aaron_sheep", f"--experiment_dir={run}", *checkpoint_flags,
             "--hparams", "epochs=9,batch_size=20", "--verbose=2"]
    hint = resume_command(typed, run)
    words = shlex.split(hint)
    assert words[:2] == ["python", "seq2seqVAE_train.py"]
    resumed, original = parse_args(words[2:]), parse_args(typed)
    assert resumed.checkpoint == run and resumed.initial_epoch is None
    assert resumed.warm_start is None and resumed.warm_start_steps is None
    for flag in ("data_set", "experiment_dir", "hparams", "verbose", "data_dir"):
        assert getattr(resumed, flag) == getattr(original, flag), flag


def test_other_cells_train_resume_and_draw_through_the_commands(shared_datasets, tmp_path):
    # The LSTM's runs are the tests above; a hyper encoder is exercised by test_sampling.py.
    cells = "enc_model=layer_norm,dec_model=hyper"
    hparams = f"{TINY},steps_per_epoch=2,{cells}"
    straight, split = tmp_path / "straight", tmp_path / "split"
    result = run_train(shared_datasets, straight, f"--hparams={hparams},epochs=2")
    encoder, decoder = (kind.split("=")[1] for kind in cells.split(","))
    assert f"encoder_fw ({encoder}, 16 units): generic unroll" in result.stdout
    assert f"decoder_lstm ({decoder}, 32 units): generic unroll" in result.stdout
    run_train(shared_datasets, stopped_after_one_epoch(straight, split), "--hparams=epochs=2",
              f"--checkpoint={split}")
    for column in ("loss", "reconstruction_loss", "kl_loss", "val_loss"):
        assert float(read_log(split)[0][column]) == pytest.approx(
            float(read_log(straight)[1][column]), rel=1e-4), column
    pictures = tmp_path / "pictures"
    command = [f"--run_dir={split}", f"--output_dir={pictures}", f"--data_dir={shared_datasets}",
               "--seed=1"]
    for mode in ("sample", "reconstruct"):  # in this process: the command's code, one start-up
        assert seq2seqVAE_sample.main(command + [f"--mode={mode}", "--count=3", "--format=png"]) == 0
        assert (pictures / f"{mode}-t0.50-s1.png").stat().st_size > 1000


@pytest.fixture(scope="module")
def shared_run(two_epoch_run, tmp_path_factory):
    """The two-epoch run (4 steps each), shared as float16 without optimizer state."""
    folder = tmp_path_factory.mktemp("warm")
    assert convert_model.main(["--run_dir", str(two_epoch_run[0]), "--share",
                               str(folder / "shared"), "--float16"]) == 0
    return folder


def test_a_warm_start_goes_on_from_the_weights_epoch_and_step(shared_run, two_epoch_run,
                                                              shared_datasets):
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
    assert float(row["val_loss"]) == pytest.approx(float(read_log(two_epoch_run[0])[-1]["val_loss"]),
                                                   rel=0.005)
    checkpoint = new / "checkpoints" / "ckpt-epoch0003-step00000012.weights.h5"
    assert optimizer_step(checkpoint) == 12
    # Resumed, the run keeps its ramp: the next epoch's last batch began at step 15, 7/8 up.
    assert seq2seqVAE_train.main([*train, f"--checkpoint={new}", "--hparams=epochs=4"]) == 0
    assert float(read_log(new)[-1]["lr"]) == pytest.approx(learning_rate(15) * 7 / 8, rel=1e-5)
    # A start from this run records it and, as `previous`, the start it came from.
    newer = seq2seqVAE_train.parse_args([*train, f"--warm_start={new}", "--warm_start_steps=4",
                                         "--hparams=epochs=5"])
    record = seq2seqVAE_train.warm_start_settings(newer)[0]
    assert record["from"] == "new" and record["step"] == 4 * record["epoch"]
    assert record["previous"] == config["warm_start"]


@pytest.mark.parametrize("flags, message", [
    (["--warm_start={shared}", "--checkpoint={shared}"],
     "--warm_start starts a new run and --checkpoint/--initial_epoch resume one: give one"),
    (["--warm_start={shared}", "--initial_epoch=2"],
     "--warm_start starts a new run and --checkpoint/--initial_epoch resume one: give one"),
    (["--warm_start_steps=20"], "--warm_start_steps is a flag of --warm_start"),
    (["--warm_start={shared}", "--warm_start_steps=0"], "--warm_start_steps must be > 0, got 0"),
    (["--warm_start={shared}/logs"], "/logs is not a run folder (model_config.json and checkpoints/)"),
    (["--warm_start={shared}"], "shared is at epoch 2 of epochs=2; train on with --hparams=epochs=N, N > 2"),
    (["--warm_start={shared}", "--hparams=dec_rnn_size=64,epochs=3"],
     "best.weights.h5 does not fit this model"),
])
def test_warm_start_errors_are_one_line(flags, message, shared_run, shared_datasets, tmp_path, capsys):
    shared = shared_run / "shared"
    argv = [f"--data_dir={shared_datasets}", f"--experiment_dir={tmp_path / 'refused'}",
            "--verbose=0", *(flag.format(shared=shared) for flag in flags)]
    assert seq2seqVAE_train.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_a_warm_start_needs_its_own_run_folder(shared_run, shared_datasets, capsys):
    argv = [f"--data_dir={shared_datasets}", f"--warm_start={shared_run / 'shared'}"]
    assert seq2seqVAE_train.main(argv) == 2
    assert capsys.readouterr().err == ("error: --warm_start: give the new run's folder with "
                                       "--experiment_dir\n")
