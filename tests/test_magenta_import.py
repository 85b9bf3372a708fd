"""Official Sketch-RNN checkpoints imported with convert_model.py --from_magenta.

The fixtures in tests/fixtures/magenta/ were made by Magenta's own training command and
evaluated by Magenta's own graph (tests/fixtures/magenta/make_fixtures.py says how): each
holds an official checkpoint, its model_config.json and outputs/ (one .npy per array), what the official model
computes for 4 aaron_sheep test sketches. Here the imported model must compute the same
numbers.
"""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import convert_model
import seq2seqVAE_sample
from sketch_rnn.drawing import load_run
from sketch_rnn.magenta_checkpoint import data_scale_factor

pytestmark = pytest.mark.tensorflow_only  # the checkpoint reader is TensorFlow's

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "magenta"
NAMES = ("lstm", "layer_norm", "hyper", "decoder_only")
TOLERANCE = 1e-5  # absolute, on every output (float32 matmuls on both sides)


def official_outputs(name):
    return {path.stem: np.load(path, allow_pickle=False)
            for path in (FIXTURES / name / "outputs").glob("*.npy")}


def convert(source, run_dir, *flags):
    """convert_model.py --from_magenta in this process; returns its exit code."""
    return convert_model.main(["--from_magenta", str(source), "--to", str(run_dir), *flags])


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """name -> a run folder converted from that fixture (once per module), float32 matmuls."""
    runs = {}

    def get(name):
        if name not in runs:
            run_dir = tmp_path_factory.mktemp("runs") / name
            scale = float(official_outputs(name)["scale_factor"])
            assert convert(FIXTURES / name, run_dir, "--scale_factor", str(scale),
                           "--hparams", "lstm_matmul_dtype=float32") == 0
            runs[name] = run_dir
        return runs[name]

    return get


def mixture_coefficients(params, num_mixture):
    """The official get_mixture_coef of our head's output, in NumPy (softmax, exp, tanh)."""
    def softmax(a):
        e = np.exp(a - a.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    pen_logits = params[..., :3]
    pi, mu1, mu2, log_s1, log_s2, corr = np.split(params[..., 3:], 6, axis=-1)
    assert pi.shape[-1] == num_mixture
    return {"pi": softmax(pi), "mu1": mu1, "mu2": mu2, "sigma1": np.exp(log_s1),
            "sigma2": np.exp(log_s2), "corr": np.tanh(corr), "pen": softmax(pen_logits),
            "pen_logits": pen_logits}


@pytest.mark.parametrize("name", NAMES)
def test_official_checkpoints_compute_the_official_numbers_once_imported(name, converted):
    official = official_outputs(name)
    with open(FIXTURES / name / "model_config.json") as f:
        config = json.load(f)
    drawer = load_run(converted(name), jit_compile=False)  # as the sampler and notebook load it
    hps = drawer.hps
    for key in ("enc_model", "dec_model", "enc_rnn_size", "dec_rnn_size", "z_size",
                "num_mixture", "conditional", "max_seq_len"):
        assert getattr(hps, key) == config[key], key
    assert hps.lstm_matmul_dtype == "float32"
    assert drawer.scale_factor == pytest.approx(float(official["scale_factor"]), rel=1e-12)
    assert drawer.data_sets == ["aaron_sheep"]

    batch = official["input_data"]  # (4, T + 1, 5): the start token, then the sketch
    differences = {}
    if hps.conditional:
        mu, presig = drawer.encoder.predict(batch, verbose=0)
        differences["mu"] = np.abs(mu - official["mu"]).max()
        differences["presig"] = np.abs(presig - official["presig"]).max()
        params = drawer.decoder.predict([batch[:, :-1], official["z"]], verbose=0)
    else:
        params = drawer.decoder.predict(batch[:, :-1], verbose=0)
    ours = mixture_coefficients(params, hps.num_mixture)
    for key, value in ours.items():
        assert value.shape == official[key].shape, key
        differences[key] = np.abs(value - official[key]).max()
    print(name, {key: f"{value:.1e}" for key, value in differences.items()})
    assert max(differences.values()) < TOLERANCE, differences


def test_the_scale_factor_is_computed_from_the_data_as_the_official_code_does(shared_datasets):
    official = float(official_outputs("lstm")["scale_factor"])  # the official DataLoader's
    ours = data_scale_factor(str(shared_datasets), ["aaron_sheep"], max_seq_len=250)
    assert ours == pytest.approx(official, rel=1e-6)  # theirs is a float32 std, ours float64


@pytest.mark.parametrize("name", ["lstm", "decoder_only"])
def test_the_sampler_draws_from_an_imported_run(name, converted, shared_datasets, tmp_path):
    from PIL import Image

    if name == "lstm":  # without --scale_factor: computed from the data set, as training does
        run_dir = tmp_path / "run"
        assert convert(FIXTURES / name, run_dir, "--data_dir", str(shared_datasets)) == 0
        stored = json.loads((run_dir / "model_config.json").read_text())["scale_factor"]
        assert stored == pytest.approx(float(official_outputs(name)["scale_factor"]), rel=1e-6)
    else:
        run_dir = tmp_path / "run"
        shutil.copytree(converted(name), run_dir)
    assert seq2seqVAE_sample.main(["--run_dir", str(run_dir), "--count", "4", "--format", "png",
                                   "--seed", "1", "--temperature", "0.5"]) == 0
    with Image.open(run_dir / "drawings" / "sample-t0.50-s1.png") as picture:
        pixels = np.asarray(picture.convert("L"))
    assert pixels.min() < 128 < pixels.max()  # strokes drawn on a light background


# ---- what is refused ----

def read_variables(prefix):
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(prefix))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def write_checkpoint(folder, variables, config=None):
    """An official-looking run folder: `variables` saved by TensorFlow's SaveV2 (the op the
    official Saver runs), a `checkpoint` file, and the lstm fixture's model_config.json."""
    import tensorflow as tf

    folder.mkdir()
    names = sorted(variables)
    tf.raw_ops.SaveV2(prefix=str(folder / "vector-7"), tensor_names=names,
                      shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(variables[name]) for name in names])
    (folder / "checkpoint").write_text('model_checkpoint_path: "vector-7"\n')
    if config is None:
        shutil.copyfile(FIXTURES / "lstm" / "model_config.json", folder / "model_config.json")
    else:
        (folder / "model_config.json").write_text(json.dumps(config))
    return folder


def tampered(variables, case):
    """The lstm fixture's variables with one thing wrong; returns (variables, expected words)."""
    variables = dict(variables)
    if case == "extra variable":
        variables["vector_rnn/RNN/extra_w"] = np.zeros((2, 2), np.float32)
        return variables, "unexpected variable 'vector_rnn/RNN/extra_w'"
    if case == "variable outside the model's scope":
        variables["another_model/w"] = np.zeros((2,), np.float32)
        return variables, "unexpected variable 'another_model/w'"
    if case == "optimizer slot of no model variable":
        variables["vector_rnn/vector_rnn/RNN/gone_w/Adam"] = np.zeros((2,), np.float32)
        return variables, "unexpected variable 'vector_rnn/vector_rnn/RNN/gone_w/Adam'"
    if case == "missing variable":
        del variables["vector_rnn/ENC_RNN/bw/LSTMCell/bias"]
        return variables, "missing variable 'vector_rnn/ENC_RNN/bw/LSTMCell/bias'"
    if case == "wrong shape":
        variables["vector_rnn/RNN/LSTMCell/W_hh"] = np.zeros((32, 120), np.float32)
        return variables, "'vector_rnn/RNN/LSTMCell/W_hh' has shape [32, 120], expected [32, 128]"
    if case == "wrong dtype":
        variables["vector_rnn/RNN/output_w"] = variables["vector_rnn/RNN/output_w"].astype(np.float64)
        return variables, "'vector_rnn/RNN/output_w' is float64, expected float32"
    if case == "non-finite value":
        variables["vector_rnn/RNN/output_b"] = variables["vector_rnn/RNN/output_b"].copy()
        variables["vector_rnn/RNN/output_b"][4] = np.nan
        return variables, "'vector_rnn/RNN/output_b' holds NaN or inf"
    raise AssertionError(case)


TAMPERED = ("extra variable", "variable outside the model's scope",
            "optimizer slot of no model variable", "missing variable", "wrong shape",
            "wrong dtype", "non-finite value")


def assert_refused(capsys, code, *expected):
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err  # one line, no traceback
    for words in expected:
        assert words in err, err


@pytest.mark.parametrize("case", TAMPERED)
def test_a_tampered_checkpoint_is_refused_naming_the_variable(case, tmp_path, capsys):
    variables, expected = tampered(read_variables(FIXTURES / "lstm" / "vector-30"), case)
    source = write_checkpoint(tmp_path / "official", variables)
    code = convert(source, tmp_path / "run", "--scale_factor", "18.5")
    assert_refused(capsys, code, expected, str(source / "vector-7"))
    assert sorted(os.listdir(tmp_path)) == ["official"]  # no run folder, no leftovers


def test_the_untampered_copy_converts(tmp_path):
    """The tampering tests' way of writing checkpoints makes files the converter accepts."""
    source = write_checkpoint(tmp_path / "official", read_variables(FIXTURES / "lstm" / "vector-30"))
    assert convert(source, tmp_path / "run", "--scale_factor", "18.5") == 0


@pytest.mark.parametrize("change, expected", [
    (lambda c: {**c, "attention": True}, ["unknown official hparam 'attention'"]),
    (lambda c: list(c), ["holds a list of hparam names, not their values"]),
    (lambda c: {**c, "dec_model": "gru"}, ["'dec_model' must be one of lstm, layer_norm, hyper"]),
    (lambda c: {**c, "data_set": ["../../etc/passwd"]}, ["names a file in a folder"]),
    (lambda c: {**c, "data_set": [".."]}, ["is not a data set name"]),
])
def test_an_official_config_we_cannot_represent_is_refused(change, expected, tmp_path, capsys):
    source = tmp_path / "official"
    shutil.copytree(FIXTURES / "lstm", source)
    config = json.loads((source / "model_config.json").read_text())
    (source / "model_config.json").write_text(json.dumps(change(config)))
    code = convert(source, tmp_path / "run", "--scale_factor", "18.5")
    assert_refused(capsys, code, str(source / "model_config.json"), *expected)
    assert not (tmp_path / "run").exists()


def test_hparams_of_the_official_model_cannot_be_overridden(tmp_path, capsys):
    code = convert(FIXTURES / "lstm", tmp_path / "run", "--scale_factor", "18.5",
                   "--hparams", "dec_rnn_size=64")
    assert_refused(capsys, code, "'dec_rnn_size' comes from the official model_config.json")
    code = convert(FIXTURES / "lstm", tmp_path / "run", "--scale_factor", "18.5",
                   "--hparams", "encoder=cnn")
    assert_refused(capsys, code, "encoder=cnn: an official checkpoint holds")


def test_an_existing_run_folder_is_replaced_only_with_force(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert convert(FIXTURES / "lstm", run_dir, "--scale_factor", "18.5") == 0
    first = (run_dir / "checkpoints" / "best.weights.h5").read_bytes()
    code = convert(FIXTURES / "decoder_only", run_dir, "--scale_factor", "18.5")
    assert_refused(capsys, code, "is not empty", "--force")
    assert (run_dir / "checkpoints" / "best.weights.h5").read_bytes() == first
    assert convert(FIXTURES / "decoder_only", run_dir, "--scale_factor", "18.5", "--force") == 0
    assert sorted(os.listdir(run_dir)) == ["checkpoints", "model_config.json"]
    assert not json.loads((run_dir / "model_config.json").read_text())["hparams"]["conditional"]
    assert sorted(os.listdir(tmp_path)) == ["run"]  # the old folder is gone, no leftovers


def test_force_replaces_only_a_run_folder_and_never_the_input(tmp_path, capsys):
    # A folder that is not a run folder is not replaced, --force or not: one of notes, or
    # another official folder (a model_config.json, but no checkpoints/).
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "notes.txt").write_text("mine")
    other = tmp_path / "other_official"
    shutil.copytree(FIXTURES / "decoder_only", other)
    for folder in (notes, other):
        before = sorted(os.listdir(folder))
        code = convert(FIXTURES / "lstm", folder, "--scale_factor", "18.5", "--force")
        assert_refused(capsys, code, "is not a run folder (model_config.json and checkpoints/)")
        assert sorted(os.listdir(folder)) == before
    # The official folder itself, or a folder holding it, would delete the input.
    source = tmp_path / "runs" / "official"
    shutil.copytree(FIXTURES / "lstm", source)
    before = sorted(os.listdir(source))
    for target in (source, tmp_path / "runs"):
        code = convert(source, target, "--scale_factor", "18.5", "--force")
        assert_refused(capsys, code, f"holds the input {source / 'vector-30.index'}")
        assert sorted(os.listdir(source)) == before
    code = convert(source / "vector-30", source, "--scale_factor", "18.5", "--force")  # a prefix
    assert_refused(capsys, code, "holds the input")
    assert sorted(os.listdir(source)) == before


def test_data_set_replaces_official_entries_that_are_not_names(tmp_path, capsys):
    # Magenta joins its data_dir with each entry: a file in a sub-folder is a valid official config.
    source = tmp_path / "official"
    shutil.copytree(FIXTURES / "decoder_only", source)
    config = json.loads((source / "model_config.json").read_text())
    (source / "model_config.json").write_text(json.dumps({**config, "data_set": ["quickdraw/cat.npz"]}))
    code = convert(source, tmp_path / "refused", "--scale_factor", "18.5")
    assert_refused(capsys, code, "'quickdraw/cat' names a file in a folder", "--data_set")
    assert convert(source, tmp_path / "run", "--scale_factor", "18.5", "--data_set", "cat") == 0
    assert json.loads((tmp_path / "run" / "model_config.json").read_text())["data_set"] == ["cat"]


@pytest.mark.parametrize("argv, message", [
    (["--checkpoint", "x.weights.h5"], "--checkpoint does nothing with --from_magenta (give the "
                                       "checkpoint prefix DIR/vector-N as --from_magenta)"),
    (["--z_from", "3"], "--z_from does nothing with --from_magenta"),
    (["--float16"], "--float16 is a flag of --share"),
    (["--z_seed", "0"], "--z_seed does nothing with --from_magenta"),  # 0 is a value given
])
def test_flags_an_import_does_not_read_are_refused(argv, message, tmp_path, capsys):
    code = convert(FIXTURES / "lstm", tmp_path / "run", "--scale_factor", "18.5", *argv)
    assert_refused(capsys, code, message)
    assert not (tmp_path / "run").exists()


def test_a_run_folder_of_ours_is_not_taken_for_an_official_one(converted, tmp_path, capsys):
    code = convert(converted("lstm"), tmp_path / "run")
    assert_refused(capsys, code, "a run folder of this project, not an official one")


def test_the_official_folder_given_where_a_run_folder_goes_says_to_import_it(capsys, tmp_path):
    from sketch_rnn.drawing import default_checkpoint
    from sketch_rnn.hparams import load_config

    with pytest.raises(ValueError, match="the official Magenta code's hparams.*--from_magenta"):
        load_config(str(FIXTURES / "lstm"))
    with pytest.raises(FileNotFoundError, match="no checkpoint.*official Magenta run folder"):
        default_checkpoint(str(FIXTURES / "lstm"))
    code = seq2seqVAE_sample.main([f"--run_dir={FIXTURES / 'lstm'}", f"--output_dir={tmp_path}"])
    assert_refused(capsys, code, "convert_model.py --from_magenta")


def test_an_official_checkpoint_file_given_as_weights_says_to_import_it(converted, tmp_path, capsys):
    code = seq2seqVAE_sample.main([f"--run_dir={converted('lstm')}", f"--output_dir={tmp_path}",
                                   f"--checkpoint={FIXTURES / 'lstm' / 'vector-30.index'}"])
    assert_refused(capsys, code, "not a Keras weights file",
                   "an official TensorFlow 1 checkpoint? import its run folder")


@pytest.mark.parametrize("damage", ["truncated", "flipped byte"])
def test_a_damaged_checkpoint_is_one_line(damage, tmp_path, capsys):
    source = tmp_path / "official"
    shutil.copytree(FIXTURES / "lstm", source)
    data = source / "vector-30.data-00000-of-00001"
    content = bytearray(data.read_bytes())
    if damage == "truncated":
        content = content[:20000]  # the model's variables come first; some are cut
    else:
        content[1000] ^= 0xFF  # TensorFlow's checksum catches it
    data.write_bytes(bytes(content))
    code = convert(source, tmp_path / "run", "--scale_factor", "18.5")
    assert_refused(capsys, code, f"{source / 'vector-30'}: cannot read variable 'vector_rnn/")
    assert not (tmp_path / "run").exists()


def test_the_checkpoint_is_found_where_the_checkpoint_file_says_or_beside_it(tmp_path):
    from sketch_rnn.magenta_checkpoint import find_checkpoint

    source = tmp_path / "official"
    shutil.copytree(FIXTURES / "lstm", source)
    assert find_checkpoint(str(source)) == str(source / "vector-30")
    assert find_checkpoint(str(source / "vector-30")) == str(source / "vector-30")
    # As Magenta's trainer writes it: an absolute path, here from another machine.
    (source / "checkpoint").write_text('model_checkpoint_path: "/home/someone/sheep/vector-30"\n'
                                       'all_model_checkpoint_paths: "/home/someone/sheep/vector-30"\n')
    assert find_checkpoint(str(source)) == str(source / "vector-30")
    # Written on Windows: the file's name is the last part of a backslash path.
    (source / "checkpoint").write_text('model_checkpoint_path: "C:\\\\Users\\\\me\\\\vector-30"\n')
    assert find_checkpoint(str(source)) == str(source / "vector-30")
    (source / "checkpoint").unlink()  # then the folder's one .index file
    assert find_checkpoint(str(source)) == str(source / "vector-30")
