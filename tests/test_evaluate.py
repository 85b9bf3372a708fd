"""evaluate.py, the training command's final test, its TensorBoard pictures and its quiet start.

One tiny run of the training command (2 epochs of 2 steps, float32 matmuls) serves most
tests: its logged validation figures and test_losses.json are the references evaluate.py
must reproduce from the saved weights.
"""

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
TINY = ("enc_rnn_size=16,dec_rnn_size=32,z_size=8,num_mixture=4,batch_size=20,steps_per_epoch=2,"
        "epochs=2,lstm_matmul_dtype=float32")
FIGURES = ("loss", "reconstruction_loss", "kl_loss", "nats_per_point")
CHATTER = ("I0000", "oneDNN", "cudart_stub", "absl::InitializeLog", "cuInit")

pytestmark = pytest.mark.slow


# A shell's environment: importing JAX (Keras does, when it is installed) sets
# TF_CPP_MIN_LOG_LEVEL=1 in this process, which child processes would inherit.
SHELL_ENV = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}


def run(script, *flags, env=SHELL_ENV):
    return subprocess.run([sys.executable, str(REPO / script), *flags], capture_output=True,
                          text=True, timeout=600, cwd=REPO, env=env)


@pytest.fixture(scope="module")
def tiny_run(shared_datasets, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    result = run("seq2seqVAE_train.py", f"--data_dir={shared_datasets}", "--data_set=aaron_sheep",
                 f"--experiment_dir={run_dir}", "--verbose=2", f"--hparams={TINY}")
    assert result.returncode == 0, result.stderr[-3000:]
    with open(run_dir / "logs" / "training_log.csv") as f:
        log = list(csv.DictReader(f))
    return run_dir, result, log


def test_evaluate_reproduces_training_figures_for_the_same_weights(tiny_run, shared_datasets):
    run_dir, result, log = tiny_run
    best = json.loads((run_dir / "checkpoints" / "best.json").read_text())
    row = log[best["epoch"] - 1]  # the epoch whose weights best.weights.h5 holds
    # A TF_CPP_MIN_LOG_LEVEL the user set is kept: 0 shows TensorFlow's start-up lines (here,
    # without a GPU, that it found none), on stderr; stdout holds the JSON alone.
    evaluated = run("evaluate.py", f"--run_dir={run_dir}", f"--data_dir={shared_datasets}", "--json",
                    env={**SHELL_ENV, "TF_CPP_MIN_LOG_LEVEL": "0"})
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "cudart_stub" in evaluated.stderr or "I0000" in evaluated.stderr
    report = json.loads(evaluated.stdout)
    assert report["checkpoint"].endswith("best.weights.h5") and report["epoch"] == best["epoch"]
    valid = report["splits"]["valid"]["all"]
    assert valid["reconstruction_loss"] == pytest.approx(float(row["val_reconstruction_loss"]), rel=1e-6)
    assert valid["kl_loss"] == pytest.approx(float(row["val_kl_loss"]), rel=1e-6)
    # Training's val_loss weighed the KL term with the annealed weight of that step, which
    # the checkpoint stores; evaluate.py's loss uses the final one.
    assert report["checkpoint_kl_weight"] == pytest.approx(float(row["kl_weight"]), rel=1e-6)
    assert float(row["val_loss"]) == pytest.approx(
        valid["reconstruction_loss"] + float(row["kl_weight"]) * max(valid["kl_loss"], 0.2), rel=1e-6)
    assert valid["loss"] == pytest.approx(
        valid["reconstruction_loss"] + 0.5 * max(valid["kl_loss"], 0.2), rel=1e-6)
    # The final test evaluated the best weights, with the final KL weight, and said so.
    test_losses = json.loads((run_dir / "test_losses.json").read_text())
    assert test_losses["weights"] == "checkpoints/best.weights.h5"
    assert test_losses["kl_weight"] == 0.5 and test_losses["epoch"] == best["epoch"]
    assert "weights: checkpoints/best.weights.h5" in result.stdout
    for key in FIGURES:
        assert report["splits"]["test"]["all"][key] == pytest.approx(test_losses[key], rel=1e-6), key
    assert report["splits"]["test"]["aaron_sheep"] == report["splits"]["test"]["all"]


def test_the_final_test_loads_the_best_weights(tiny_run, shared_datasets, tmp_path, capsys):
    # In the tiny run the best weights may be the last ones: here the model in memory holds
    # untrained weights, and the test must still report the best checkpoint's figures.
    import seq2seqVAE_train
    import utils
    from seq2seqVAE import HParams, build_model, compile_model, load_config

    run_dir, _, _ = tiny_run
    shutil.copytree(run_dir / "checkpoints", tmp_path / "checkpoints")
    hps, config = load_config(str(run_dir))
    untrained = compile_model(build_model(HParams(**{**hps.to_dict(), "seed": 7})), hps)
    loader = utils.DataLoader(utils.load_strokes(str(shared_datasets), "aaron_sheep")[2],
                              batch_size=hps.batch_size, max_seq_len=hps.max_seq_len, name="test")
    loader.normalize(config["scale_factor"])
    assert seq2seqVAE_train.evaluate_test_split(
        untrained, hps, loader, str(tmp_path / "checkpoints"), str(tmp_path)) == 0
    assert "weights: checkpoints/best.weights.h5" in capsys.readouterr().out
    written = json.loads((tmp_path / "test_losses.json").read_text())
    recorded = json.loads((run_dir / "test_losses.json").read_text())
    for key in FIGURES:
        assert written[key] == pytest.approx(recorded[key], rel=1e-6), key


def test_evaluate_takes_any_checkpoint(tiny_run, shared_datasets):
    import evaluate

    run_dir, _, log = tiny_run
    first = run_dir / "checkpoints" / "ckpt-epoch0001-step00000002.weights.h5"
    report = evaluate.evaluate_run(str(run_dir), str(first), str(shared_datasets), ["valid"])
    assert (report["epoch"], report["step"]) == (1, 2)
    valid = report["splits"]["valid"]["all"]
    assert valid["reconstruction_loss"] == pytest.approx(float(log[0]["val_reconstruction_loss"]),
                                                         rel=1e-6)
    assert valid["kl_loss"] == pytest.approx(float(log[0]["val_kl_loss"]), rel=1e-6)
    table = evaluate.format_table(report)
    assert "ckpt-epoch0001-step00000002" in table and "nats/point" in table
    assert f"{valid['reconstruction_loss']:.4f}" in table.splitlines()[-1]


def numpy_nats(targets, params, num_mixture):
    """Masked L_R summed over the real points, and their number, from the head's output."""
    m = num_mixture
    pen_logits, pi_logits = params[..., :3], params[..., 3:3 + m]
    mu_x, mu_y, log_sx, log_sy, rho_raw = (params[..., 3 + i * m:3 + (i + 1) * m] for i in range(1, 6))
    sx, sy, rho = np.exp(log_sx), np.exp(log_sy), np.tanh(rho_raw)
    pi = np.exp(pi_logits - pi_logits.max(-1, keepdims=True))
    pi /= pi.sum(-1, keepdims=True)
    dx, dy = targets[..., 0:1], targets[..., 1:2]
    nx, ny = (dx - mu_x) / sx, (dy - mu_y) / sy
    z = nx**2 + ny**2 - 2 * rho * nx * ny
    density = np.exp(-z / (2 * (1 - rho**2))) / (2 * np.pi * sx * sy * np.sqrt(1 - rho**2))
    offset_loss = -np.log((pi * density).sum(-1) + 1e-6)
    log_pen = pen_logits - np.log(np.exp(pen_logits).sum(-1, keepdims=True))
    pen_loss = -(targets[..., 2:5] * log_pen).sum(-1)
    real = targets[..., 4] == 0  # up to each sketch's last point
    return float(((offset_loss + pen_loss) * real).sum()), int(real.sum())


def test_nats_per_point_against_numpy(tiny_run, shared_datasets):
    import keras

    import callbacks
    import utils
    from batch_generator import evaluation_batches
    from seq2seqVAE import compile_model, load_run

    run_dir, _, _ = tiny_run
    drawer = load_run(str(run_dir), jit_compile=False)
    hps, model = drawer.hps, compile_model(drawer.model, drawer.hps)
    strokes = utils.load_strokes(str(shared_datasets), "aaron_sheep")[1][:7]  # 7 valid sketches
    loader = utils.DataLoader(strokes, batch_size=hps.batch_size, max_seq_len=hps.max_seq_len)
    loader.normalize(drawer.scale_factor)
    figures = callbacks.evaluate(model, loader, seed=5)

    # The same batch, with z drawn as the evaluation draws it: the latent layer's generator
    # started at seed 5.
    x, y = evaluation_batches(loader, hps.batch_size)[0]
    model.get_layer("latent").seed_generator.state.assign(
        keras.ops.convert_to_numpy(keras.random.SeedGenerator(5).state))
    params = keras.ops.convert_to_numpy(model(x, training=False)).astype(np.float64)
    total, points = numpy_nats(y.astype(np.float64), params, hps.num_mixture)
    assert points == figures["points"] == sum(len(s) for s in strokes)
    assert figures["nats_per_point"] == pytest.approx(total / points, rel=1e-5)
    assert figures["reconstruction_loss"] == pytest.approx(total / (7 * hps.max_seq_len), rel=1e-5)
    # The same seed again gives the same figures; another seed other z.
    assert callbacks.evaluate(model, loader, seed=5)["reconstruction_loss"] == \
        figures["reconstruction_loss"]
    assert callbacks.evaluate(model, loader, seed=6)["reconstruction_loss"] != \
        figures["reconstruction_loss"]


def test_several_data_sets_are_evaluated_merged_and_one_by_one(tiny_run, shared_datasets, tmp_path):
    import evaluate
    import utils

    run_dir, _, _ = tiny_run
    sheep = utils.load_npz(str(shared_datasets / "aaron_sheep.npz"))
    data_dir = tmp_path / "data"
    data_dir.mkdir()

    def save(name, start, stop, parts=None):
        arrays = parts or {split: sheep[split][start:stop] for split in ("train", "valid", "test")}
        packed = {}
        for split, sketches in arrays.items():
            packed[split] = np.empty(len(sketches), dtype=object)
            packed[split][:] = list(sketches)
        np.savez(data_dir / f"{name}.npz", **packed)
        return arrays

    a, b = save("a", 0, 30), save("b", 30, 55)
    save("ab", 0, 0, {split: list(a[split]) + list(b[split]) for split in a})

    def evaluate_as(names):
        folder = tmp_path / "_".join(names)
        (folder / "checkpoints").mkdir(parents=True)
        shutil.copy(run_dir / "checkpoints" / "best.weights.h5", folder / "checkpoints")
        config = json.loads((run_dir / "model_config.json").read_text())
        (folder / "model_config.json").write_text(json.dumps({**config, "data_set": names}))
        return evaluate.evaluate_run(str(folder), None, str(data_dir), ["valid"])

    # References: a run of set a alone, and one of a file holding a's sketches, then b's.
    both, only_a, merged = (evaluate_as(names) for names in (["a", "b"], ["a"], ["ab"]))
    results = both["splits"]["valid"]
    assert set(results) == {"all", "a", "b"}
    assert [results[k]["sketches"] for k in ("all", "a", "b")] == [55, 30, 25]
    assert results["all"]["points"] == results["a"]["points"] + results["b"]["points"]
    for key in FIGURES:
        assert results["a"][key] == pytest.approx(only_a["splits"]["valid"]["all"][key], rel=1e-6)
        assert results["all"][key] == pytest.approx(merged["splits"]["valid"]["all"][key], rel=1e-6)
    assert results["b"]["reconstruction_loss"] != results["a"]["reconstruction_loss"]
    rows = evaluate.format_table(both).splitlines()
    assert any(row.startswith("valid  all: a,b") for row in rows)
    assert any(row.split()[:2] == ["valid", "b"] for row in rows)


def test_tensorboard_gets_pictures_of_samples_and_reconstructions(tiny_run):
    import tensorflow as tf
    from PIL import Image

    run_dir, _, _ = tiny_run
    images = {}
    for path in (run_dir / "logs" / "tensorboard" / "drawings").glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                images[value.tag, event.step] = value.tensor.string_val
    assert set(images) == {(tag, step) for tag in ("samples", "reconstructions") for step in (0, 1)}
    for (tag, _), strings in images.items():
        width, height, png = int(strings[0]), int(strings[1]), strings[2]
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        image = Image.open(io.BytesIO(png))
        # 6 sketches of 96 pixels a row; reconstructions: the sketches above what the model drew.
        assert image.size == (width, height) == (6 * 96, 96 if tag == "samples" else 2 * 96)
        pixels = np.asarray(image.convert("L"))
        assert (pixels < 128).mean() > 0.001, f"{tag}: nothing drawn"


def test_the_training_command_starts_without_tensorflow_chatter(tiny_run):
    _, result, _ = tiny_run
    for marker in CHATTER:
        assert marker not in result.stderr, result.stderr[:2000]


@pytest.mark.parametrize("script, flags, advice", [
    ("seq2seqVAE_train.py", ["--epochss=3"], "--hparams=epochs="),
    ("seq2seqVAE_train.py", ["--data_sett=cat"], "did you mean --data_set?"),
    ("seq2seqVAE_train.py", ["--verbose=5"], "invalid choice: 5"),
    ("evaluate.py", ["--run_dir=x", "--chekpoint=y"], "did you mean --checkpoint?"),
    ("seq2seqVAE_sample.py", ["--run_dir=x", "--temprature=1"], "did you mean --temperature?"),
    ("convert_model.py", ["--run_dir=x", "--to_magneta_js=y.json"], "did you mean --to_magenta_js?"),
    ("prepare_data.py", ["x.ndjson", "--out=x.npz", "--recognised_only"],
     "did you mean --recognized_only?"),
    ("prepare_data.py", ["x.ndjson", "--out=x.npz", "--split=0.9,0.1"], "expected three fractions"),
], ids=lambda value: value if isinstance(value, str) and value.endswith(".py") else None)
def test_flag_mistakes_are_one_line_and_suggest_the_close_match(script, flags, advice):
    wrong = run(script, *flags)
    assert wrong.returncode == 2 and advice in wrong.stderr
    assert wrong.stderr.count("\n") == 1 and "usage:" not in wrong.stderr, wrong.stderr
    assert f"{script} --help lists the flags" in wrong.stderr


def test_converting_prints_no_tensorflow_chatter(tiny_run, tmp_path):
    run_dir, _, _ = tiny_run
    shared = run("convert_model.py", f"--run_dir={run_dir}", f"--share={tmp_path / 'shared'}")
    assert shared.returncode == 0, shared.stderr[-2000:]
    for marker in CHATTER:
        assert marker not in shared.stderr, shared.stderr[:2000]


@pytest.mark.parametrize("flags, message", [
    (["--run_dir={missing}"], "--run_dir: {missing} is not a folder"),
    (["--run_dir={empty}"], "holds no model_config.json"),
    (["--run_dir={run}", "--checkpoint={missing}"], "--checkpoint: {missing} does not exist"),
    (["--run_dir={run}", "--split=tset"], "--split: unknown split 'tset'"),
])
def test_bad_flags_are_one_line(tiny_run, tmp_path, flags, message):
    run_dir, _, _ = tiny_run
    names = dict(missing=tmp_path / "nothing", empty=tmp_path, run=run_dir)
    result = run("evaluate.py", *(flag.format(**names) for flag in flags))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0 and message.format(**names) in result.stderr


def test_a_checkpoint_that_does_not_fit_is_one_line(tiny_run, shared_datasets, capsys):
    import evaluate

    run_dir, _, _ = tiny_run
    other = run_dir / "model_config.json"  # not a weights file
    assert evaluate.main([f"--run_dir={run_dir}", f"--checkpoint={other}",
                          f"--data_dir={shared_datasets}"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and error.startswith(f"error: cannot load {other}")
