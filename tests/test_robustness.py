"""What a training run survives: bad input, damaged or hostile run files, NaN losses, SIGKILL.

Each bad input must give exit code 2 and ONE line on stderr ("error: ..." naming the thing
and what was expected), with no traceback, and must leave every file saved before untouched.
Most cases call `seq2seqVAE_train.main(argv)` in-process (fast); the slow tests run the real
command in subprocesses: one-line errors as a user sees them, a NaN loss, reproducibility,
and SIGKILL at random moments followed by resumes.
"""

import csv
import dataclasses
import io
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

import seq2seqVAE_train
import utils

REPO = Path(__file__).resolve().parents[1]
TINY = ("enc_rnn_size=16,dec_rnn_size=32,z_size=8,num_mixture=4,batch_size=20,"
        "steps_per_epoch=4,max_seq_len=60")
MAX_SEQ_LEN = 60
# TensorFlow's own C++ start-up lines (absl format "I0000 00:00:..." and its preamble) are
# not the command's output; everything else on stderr is.
TF_LOG_LINE = re.compile(r"^([IWEF]\d{4} [\d:.]+\s+\d+ \S+:\d+\] |WARNING: All log messages before "
                         r"absl::InitializeLog\(\) is called)")


# ---- helpers ----


def random_sketches(rng, count, dtype=np.float64, max_len=40):
    """`count` stroke-3 sketches of 5..max_len points with fractional offsets, as an object array."""
    sketches = np.empty(count, dtype=object)
    for i in range(count):
        n = int(rng.integers(5, max_len, endpoint=True))
        sketch = np.zeros((n, 3), dtype=dtype)
        sketch[:, :2] = rng.normal(0.0, 20.0, size=(n, 2))
        sketch[:, 2] = rng.random(n) < 0.2
        sketch[-1, 2] = 1
        sketches[i] = sketch
    return sketches


def good_splits(seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return {"train": random_sketches(rng, 200, dtype), "valid": random_sketches(rng, 40, dtype),
            "test": random_sketches(rng, 40, dtype)}


def write_data(folder, splits, name="sketches"):
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / f"{name}.npz", **splits)
    return folder / f"{name}.npz"


def run_main(capsys, *argv):
    code = seq2seqVAE_train.main([*argv, "--verbose=0"])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *fragments):
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


def snapshot(folder):
    """Every file under `folder` with its bytes and modification time."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def h5_arrays(source):
    """name -> array of every dataset in an HDF5 file (a path or bytes)."""
    arrays = {}
    with h5py.File(io.BytesIO(source) if isinstance(source, bytes) else source, "r") as f:
        f.visititems(lambda name, item: arrays.__setitem__(name, item[()])
                     if isinstance(item, h5py.Dataset) else None)
    return arrays


def checkpoint_state(source):
    """(global step, learning rate, KL weight) stored in a checkpoint, and whether all is finite."""
    arrays = h5_arrays(source)
    finite = all(np.all(np.isfinite(a)) for a in arrays.values() if a.dtype.kind in "iuf")
    return (int(arrays["optimizer/vars/0"]), float(arrays["optimizer/vars/1"]),
            float(arrays["layers/latent_sample/vars/0"]), finite)


def tiny_hparams(**changes):
    from seq2seqVAE import HParams

    return dataclasses.replace(HParams.parse(TINY), **changes)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A run folder trained for one tiny epoch on float64 data, and its data folder."""
    root = tmp_path_factory.mktemp("finished")
    data_dir = root / "data"
    write_data(data_dir, good_splits())
    run_dir = root / "run"
    code = seq2seqVAE_train.main([f"--data_dir={data_dir}", "--data_set=sketches",
                                  f"--experiment_dir={run_dir}", "--verbose=0",
                                  f"--hparams={TINY},epochs=1"])
    assert code == 0
    return data_dir, run_dir


def resume_args(data_dir, run_dir):
    return (f"--data_dir={data_dir}", "--data_set=sketches", f"--experiment_dir={run_dir}",
            f"--checkpoint={run_dir}")


# ---- float64 data ----


def test_float64_strokes_train_like_integer_ones(finished_run):
    data_dir, run_dir = finished_run
    # fractional offsets in float64, as in the kanji RDP files
    assert utils.load_npz(data_dir / "sketches.npz")["train"][0].dtype == np.float64
    with open(run_dir / "logs" / "training_log.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert all(math.isfinite(float(row[key])) for key in ("loss", "val_loss", "lr", "kl_weight"))
    assert json.loads((run_dir / "test_losses.json").read_text())["loss"] > 0
    assert (run_dir / "checkpoints" / "ckpt-epoch0001-step00000004.weights.h5").exists()


# ---- bad data: one line, for a new run and for a resumed one ----


def bad_splits(case):
    splits = good_splits(seed=1)
    if case == "no valid split":
        del splits["valid"]
    elif case == "empty test split":
        splits["test"] = np.empty(0, dtype=object)
    elif case == "(N, 2) sketch":
        splits["train"][3] = splits["train"][3][:, :2].copy()
    elif case == "NaN":
        splits["valid"][5][2, 0] = np.nan
    elif case == "inf":
        splits["train"][7][1, 1] = -np.inf
    elif case == "pen value 2":
        splits["train"][9][0, 2] = 2
    elif case == "pen value 0.5":
        splits["test"][0][1, 2] = 0.5
    elif case == "every sketch too long":
        splits["train"] = random_sketches(np.random.default_rng(2), 30, max_len=200)
        for sketch_index in range(30):
            splits["train"][sketch_index] = np.tile(splits["train"][sketch_index], (MAX_SEQ_LEN, 1))
    return splits


DATA_CASES = {
    "missing file, unknown name": ["unknown data set 'sketches'", "not a file in",
                                   "not a QuickDraw category or one of aaron_sheep, kanji, omniglot",
                                   "(give the folder holding sketches.npz as data_dir, --data_dir)"],
    "not an npz": ["sketches.npz is not a valid .npz file"],
    "hostile pickle": ["sketches.npz: refusing to load", "not numpy arrays"],
    "no valid split": ["has no key 'valid'", "'train', 'valid' and 'test'"],
    "empty test split": ["key 'test' is empty", "expected at least one sketch"],
    "(N, 2) sketch": ["key 'train': sketch 3 has shape", ", 2), expected (N, 3)"],
    "NaN": ["key 'valid': sketch 5 holds NaN or infinite values"],
    "inf": ["key 'train': sketch 7 holds NaN or infinite values"],
    "pen value 2": ["key 'train': sketch 9 has pen value 2.0", "expected 0 or 1"],
    "pen value 0.5": ["key 'test': sketch 0 has pen value 0.5", "expected 0 or 1"],
    "every sketch too long": ["every train sketch of sketches is longer than max_seq_len=60"],
}


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


def write_bad_data(folder, case):
    folder.mkdir(parents=True, exist_ok=True)
    if case == "missing file, unknown name":
        return
    if case == "not an npz":
        (folder / "sketches.npz").write_text("<html>404 Not Found</html>")
    elif case == "hostile pickle":
        splits = good_splits()
        splits["train"][0] = Payload(folder / "marker")
        write_data(folder, splits)
    else:
        write_data(folder, bad_splits(case))


@pytest.mark.parametrize("case", DATA_CASES)
def test_bad_data_is_one_line_and_a_new_run_writes_nothing(case, tmp_path, capsys):
    write_bad_data(tmp_path / "data", case)
    code, _, err = run_main(capsys, f"--data_dir={tmp_path / 'data'}", "--data_set=sketches",
                            f"--experiment_dir={tmp_path / 'run'}", f"--hparams={TINY}")
    line = assert_one_line_error(code, err, *DATA_CASES[case])
    if case != "every sketch too long":  # that one names the data set and the hparam
        assert str(tmp_path / "data") in line  # names the file or folder
    assert not (tmp_path / "run").exists()  # not even an empty run folder
    assert not (tmp_path / "data" / "marker").exists()


@pytest.mark.parametrize("case", DATA_CASES)
def test_bad_data_on_resume_leaves_the_run_untouched(case, finished_run, tmp_path, capsys):
    _, run_dir = finished_run
    write_bad_data(tmp_path / "data", case)
    before = snapshot(run_dir)
    code, _, err = run_main(capsys, *resume_args(tmp_path / "data", run_dir))
    fragments = DATA_CASES[case]
    if case == "every sketch too long":  # a resumed run keeps the length its data had
        stored = json.loads((run_dir / "model_config.json").read_text())["hparams"]["max_seq_len"]
        fragments = [f"every train sketch of sketches is longer than max_seq_len={stored}, "
                     f"the length of the run in {run_dir / 'model_config.json'}"]
    assert_one_line_error(code, err, *fragments)
    assert snapshot(run_dir) == before


def test_missing_known_data_set_without_network_says_where_to_put_it(tmp_path, capsys):
    code, _, err = run_main(capsys, f"--data_dir={tmp_path / 'data'}", "--data_set=aaron_sheep",
                            "--base_url=http://127.0.0.1:1", f"--experiment_dir={tmp_path / 'run'}")
    assert_one_line_error(code, err, "could not download http://127.0.0.1:1/aaron_sheep/aaron_sheep.npz",
                          f"save it as {tmp_path / 'data' / 'aaron_sheep.npz'}")
    assert not (tmp_path / "data").exists()  # no partial download, nor the folder made for it
    assert not (tmp_path / "run").exists()


def test_data_dir_naming_a_file_says_which_flags_to_give(finished_run, tmp_path, capsys):
    data_dir, _ = finished_run
    code, _, err = run_main(capsys, f"--data_dir={data_dir / 'sketches.npz'}",
                            f"--experiment_dir={tmp_path / 'run'}", f"--hparams={TINY}")
    assert_one_line_error(code, err, f"--data_dir: {data_dir / 'sketches.npz'} is a file",
                          f"--data_dir={data_dir} --data_set=sketches")
    assert not (tmp_path / "run").exists()


def test_kanji_finds_the_upstream_file_short_kanji_npz(tmp_path):
    # hardmaru/sketch-rnn-datasets calls the file short_kanji.npz; the official code and this
    # project's download know the set as kanji. Either name finds a file saved under either.
    splits = good_splits()
    for saved_as in ("short_kanji", "kanji"):
        for old in tmp_path.glob("*.npz"):
            old.unlink()
        write_data(tmp_path, splits, name=saved_as)
        for name in ("kanji", "short_kanji"):
            train, _, _ = utils.load_strokes(tmp_path, name, download=False)
            assert len(train) == len(splits["train"]), (saved_as, name)
    with pytest.raises(FileNotFoundError, match="omniglot.npz"):
        utils.load_strokes(tmp_path, "omniglot", download=False)


# ---- bad hparams, flags and run folders ----


@pytest.mark.parametrize("hparams, fragments", [
    ("dec_rnn_sise=64", ["unknown hparam 'dec_rnn_sise'", "did you mean 'dec_rnn_size'"]),
    ("batch_size=ten", ["'batch_size' expects int, got 'ten'"]),
    ("batch_size=2.5", ["'batch_size' expects int, got '2.5'"]),
    ("conditional=maybe", ["'conditional' expects bool, got 'maybe'"]),
    ("batch_size", ["expected key=value, got 'batch_size'"]),
    ("recurrent_dropout_prob=1.5", ["'recurrent_dropout_prob' must be in (0, 1], got 1.5"]),
    ("batch_size=1000", ["batch_size=1000 is larger than the 200 training sketches"]),
])
def test_bad_hparams_are_one_line_naming_the_key(hparams, fragments, finished_run, tmp_path, capsys):
    data_dir, _ = finished_run
    code, _, err = run_main(capsys, f"--data_dir={data_dir}", "--data_set=sketches",
                            f"--experiment_dir={tmp_path / 'run'}", f"--hparams={hparams}")
    assert_one_line_error(code, err, "--hparams", *fragments)
    assert not (tmp_path / "run").exists()  # not even an empty run folder


@pytest.mark.parametrize("hparams", ["learning_rate=nan", "kl_weight=inf"])
def test_non_finite_hparams_are_refused(hparams, finished_run, tmp_path):
    data_dir, _ = finished_run
    args = seq2seqVAE_train.parse_args([f"--data_dir={data_dir}", "--data_set=sketches",
                                        f"--experiment_dir={tmp_path / 'run'}", f"--hparams={hparams}"])
    with pytest.raises(ValueError, match=hparams.split("=")[0]):
        seq2seqVAE_train.prepare(args)  # checks everything main() does before training


@pytest.mark.parametrize("flags, fragments", [
    (["--hparams=dec_rnn_size=64"], ["dec_rnn_size=64 does not match the run being resumed",
                                     "dec_rnn_size=32 in"]),
    (["--hparams=max_seq_len=100"], ["max_seq_len=100 does not match the run being resumed"]),
    (["--hparams=dec_rnn_sise=64"], ["unknown hparam 'dec_rnn_sise'"]),
    (["--data_set=cat"], ["was trained on sketches, not cat"]),
    (["--checkpoint=/nonexistent/ckpt.weights.h5"], ["/nonexistent/ckpt.weights.h5 does not exist"]),
    (["--initial_epoch=-1"], ["--initial_epoch must be >= 0, got -1"]),
])
def test_resume_that_does_not_match_the_run_is_refused(flags, fragments, finished_run, capsys):
    data_dir, run_dir = finished_run
    before = snapshot(run_dir)
    args = [a for a in resume_args(data_dir, run_dir)
            if not any(a.startswith(f.split("=")[0] + "=") for f in flags)]
    code, _, err = run_main(capsys, *args, *flags)
    assert_one_line_error(code, err, *fragments)
    assert snapshot(run_dir) == before


def test_a_new_run_in_a_folder_holding_one_is_refused(finished_run, capsys):
    data_dir, run_dir = finished_run
    before = snapshot(run_dir)
    code, _, err = run_main(capsys, f"--data_dir={data_dir}", "--data_set=sketches",
                            f"--experiment_dir={run_dir}", f"--hparams={TINY}")
    assert_one_line_error(code, err, f"{run_dir} already holds a run", f"--checkpoint={run_dir}")
    assert snapshot(run_dir) == before


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder nobody can write in: chmod for a normal user; root ignores permission bits,
    so then the immutable attribute (chattr +i) if the file system allows it."""
    folder = tmp_path / "read_only"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    if not shutil.which("chattr") or subprocess.run(["chattr", "+i", str(folder)],
                                                    capture_output=True).returncode != 0:
        pytest.skip("running as root, and chattr +i is not allowed here: no folder is read-only")
    yield folder
    subprocess.run(["chattr", "-i", str(folder)], check=True)


@pytest.mark.parametrize("where", ["a file", "under a file", "read-only folder"])
def test_unusable_experiment_dir_is_one_line(where, finished_run, tmp_path, capsys, request):
    data_dir, _ = finished_run
    (tmp_path / "file").write_text("precious\n")
    experiment_dir = {"a file": tmp_path / "file", "under a file": tmp_path / "file" / "run"}.get(where)
    if where == "read-only folder":
        experiment_dir = request.getfixturevalue("read_only_folder") / "run"
    code, _, err = run_main(capsys, f"--data_dir={data_dir}", "--data_set=sketches",
                            f"--experiment_dir={experiment_dir}", f"--hparams={TINY}")
    expected = (f"--experiment_dir: {experiment_dir} is a file, expected a folder" if where == "a file"
                else f"--experiment_dir: cannot write to {experiment_dir} (")
    assert_one_line_error(code, err, expected)
    assert (tmp_path / "file").read_text() == "precious\n"


@pytest.mark.slow
def test_cli_errors_are_one_line_without_traceback_in_a_real_process(finished_run, tmp_path):
    # In-process tests cannot see what Python prints for an uncaught exception; this one can.
    # TF_CPP_MIN_LOG_LEVEL=3 quiets most of TensorFlow's C++ start-up lines; the rest are
    # recognised by their format.
    data_dir, run_dir = finished_run
    write_bad_data(tmp_path / "data", "NaN")
    broken = tmp_path / "broken.weights.h5"
    shutil.copy(sorted((run_dir / "checkpoints").glob("ckpt-*.weights.h5"))[-1], broken)
    with h5py.File(broken, "a") as f:
        del f["layers/dense/vars/0"]
        f["layers/dense/vars/0"] = np.zeros((3, 3), np.float32)
    before = snapshot(run_dir)
    for flags in ([f"--data_dir={tmp_path / 'data'}", "--data_set=sketches",
                   f"--experiment_dir={tmp_path / 'new'}", f"--hparams={TINY}"],
                  [*resume_args(data_dir, run_dir)[:3], f"--checkpoint={broken}", "--initial_epoch=1"]):
        result = subprocess.run([sys.executable, str(REPO / "seq2seqVAE_train.py"), *flags],
                                capture_output=True, text=True, timeout=300, cwd=REPO,
                                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        ours = [line for line in result.stderr.splitlines() if not TF_LOG_LINE.match(line)]
        assert result.returncode == 2, result.stderr[-3000:]
        assert len(ours) == 1 and ours[0].startswith("error: "), result.stderr[-3000:]
        assert "Traceback" not in result.stderr
    assert snapshot(run_dir) == before


# ---- model files: damaged checkpoints and model_config.json never run code ----


def corrupt_checkpoint(kind, good, path, marker):
    data = good.read_bytes()
    if kind == "truncated":
        path.write_bytes(data[: len(data) // 3])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "not HDF5":
        path.write_text("import os; os.system('touch marker')\n")
    else:
        path.write_bytes(data)
        with h5py.File(path, "a") as f:
            kernel = f["layers/dense/vars/0"][()]  # z_mean's kernel
            del f["layers/dense/vars/0"]
            kernel[0, 0] = np.nan
            f["layers/dense/vars/0"] = {
                "wrong shape": np.zeros((3, 3), np.float32),
                "code instead of numbers": f"__import__('os').system('touch {marker}')",
                "NaN weights": kernel,
            }[kind]


@pytest.mark.parametrize("kind, fragment", [
    ("truncated", "is truncated or not a checkpoint of this project"),
    ("empty", "is truncated or not a checkpoint of this project"),
    ("not HDF5", "is truncated or not a checkpoint of this project"),
    ("wrong shape", "does not fit this model"),
    ("code instead of numbers", "does not fit this model"),
    ("NaN weights", "holds NaN or infinite values in z_mean/kernel"),
])
def test_damaged_checkpoint_given_explicitly_is_one_line(kind, fragment, finished_run, tmp_path, capsys):
    data_dir, run_dir = finished_run
    good = sorted((run_dir / "checkpoints").glob("ckpt-*.weights.h5"))[-1]
    damaged = tmp_path / "ckpt-epoch0001-step00000004.weights.h5"
    corrupt_checkpoint(kind, good, damaged, tmp_path / "marker")
    before = snapshot(run_dir)
    code, _, err = run_main(capsys, *resume_args(data_dir, run_dir)[:3], f"--checkpoint={damaged}")
    assert_one_line_error(code, err, f"--checkpoint: {damaged}", fragment)
    assert snapshot(run_dir) == before
    assert not (tmp_path / "marker").exists() and not (REPO / "marker").exists()


def test_run_folder_with_only_damaged_checkpoints_is_one_line(finished_run, tmp_path, capsys):
    data_dir, run_dir = finished_run
    copy = shutil.copytree(run_dir, tmp_path / "run")
    for checkpoint in (copy / "checkpoints").glob("ckpt-*.weights.h5"):
        checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    code, _, err = run_main(capsys, *resume_args(data_dir, copy))
    # the skipped files are warned about first, one line each, then the error
    *warnings, error = err.strip().splitlines()
    assert all(w.startswith("warning: skipping incomplete checkpoint") for w in warnings) and warnings
    assert_one_line_error(code, error, f"no complete checkpoint in {copy / 'checkpoints'}")


@pytest.mark.parametrize("text, fragment", [
    ("{\"val_loss\": 0.5,", "not valid JSON"),
    ("[0.5, 3]", "expected an object"),
    ("{\"val_loss\": \"low\", \"step\": 4}", "val_loss is 'low', expected a number"),
    ("{\"val_loss\": 0.5, \"step\": 4.5}", "step is 4.5, expected a whole number"),
], ids=["truncated", "a list", "loss not a number", "step not whole"])
def test_a_damaged_best_json_is_one_line_before_training(text, fragment, finished_run, tmp_path,
                                                         capsys):
    # Left as it was, the first epoch's end would compare against it (or crash there) and
    # could overwrite best.weights.h5, the run's best model.
    data_dir, run_dir = finished_run
    copy = shutil.copytree(run_dir, tmp_path / "run")
    best = copy / "checkpoints" / "best.json"
    best.write_text(text)
    before = snapshot(copy)
    code, _, err = run_main(capsys, *resume_args(data_dir, copy), "--hparams=epochs=2")
    assert_one_line_error(code, err, str(best), fragment)
    assert snapshot(copy) == before


def edit_config(run_dir, edit):
    path = run_dir / "model_config.json"
    config = json.loads(path.read_text())
    config = edit(config)
    path.write_text(config if isinstance(config, str) else json.dumps(config))


KERAS_PAYLOAD = {"module": "builtins", "class_name": "eval", "registered_name": "eval",
                 "config": {"function": "__import__('os').system('touch marker')"},
                 "__class__": "os.system"}


@pytest.mark.parametrize("edit, fragments", [
    pytest.param(lambda c: {**c, "hparams": {**c["hparams"], "__class__": "os.system"}},
                 ["unknown hparam '__class__'"], id="__class__ hparam"),
    pytest.param(lambda c: {**c, "hparams": {**c["hparams"], "dec_rnn_size": KERAS_PAYLOAD}},
                 ["hparam 'dec_rnn_size' must be int"], id="keras payload as an hparam"),
    pytest.param(lambda c: KERAS_PAYLOAD, ["not a model_config.json written by this project"],
                 id="keras payload as the config"),
    pytest.param(lambda c: json.dumps(c)[:200], ["not a model_config.json written by this project"],
                 id="truncated"),
    pytest.param(lambda c: {k: v for k, v in c.items() if k != "scale_factor"},
                 ["'scale_factor' must be a positive number, got None"], id="no scale_factor"),
    pytest.param(lambda c: {**c, "scale_factor": "__import__('os').system('touch marker')"},
                 ["'scale_factor' must be a positive number"], id="code as scale_factor"),
    pytest.param(lambda c: {**c, "data_set": KERAS_PAYLOAD},
                 ["'data_set' must be a list of data set names"], id="keras payload as data_set"),
])
def test_bad_model_config_is_one_line_and_runs_nothing(edit, fragments, finished_run, tmp_path, capsys,
                                                       monkeypatch):
    data_dir, run_dir = finished_run
    copy = shutil.copytree(run_dir, tmp_path / "run")
    edit_config(copy, edit)
    monkeypatch.chdir(tmp_path)  # where a payload's relative 'marker' would appear
    before = snapshot(copy)
    code, _, err = run_main(capsys, *resume_args(data_dir, copy))
    assert_one_line_error(code, err, str(copy / "model_config.json"), *fragments)
    assert snapshot(copy) == before
    assert not (tmp_path / "marker").exists()


def test_model_config_whose_hparams_are_not_a_dict_is_one_line(finished_run, tmp_path, capsys):
    data_dir, run_dir = finished_run
    copy = shutil.copytree(run_dir, tmp_path / "run")
    edit_config(copy, lambda c: {**c, "hparams": ["os.system", "touch marker"]})
    code, _, err = run_main(capsys, *resume_args(data_dir, copy))
    assert_one_line_error(code, err, "model_config.json")


def test_unknown_top_level_config_keys_are_inert(finished_run, tmp_path, monkeypatch):
    # Only 'hparams', 'scale_factor' and 'data_set' are read, by json.load and checked; a
    # payload beside them is never looked at, let alone deserialised.
    data_dir, run_dir = finished_run
    copy = shutil.copytree(run_dir, tmp_path / "run")
    edit_config(copy, lambda c: {**c, **KERAS_PAYLOAD})
    monkeypatch.chdir(tmp_path)
    run = seq2seqVAE_train.prepare(seq2seqVAE_train.parse_args(list(resume_args(data_dir, copy))))
    stored = json.loads((run_dir / "model_config.json").read_text())
    assert run["hps"].to_dict() == stored["hparams"] and run["scale_factor"] == stored["scale_factor"]
    assert not (tmp_path / "marker").exists()


@pytest.mark.parametrize("damage", ["__class__ hparam", "code instead of numbers", "truncated"])
def test_loading_a_run_to_draw_refuses_damaged_files_and_runs_nothing(damage, finished_run, tmp_path,
                                                                       monkeypatch):
    from seq2seqVAE import load_run

    _, run_dir = finished_run
    copy = shutil.copytree(run_dir, tmp_path / "run")
    monkeypatch.chdir(tmp_path)
    if damage == "__class__ hparam":
        edit_config(copy, lambda c: {**c, "hparams": {**c["hparams"], "__class__": "os.system"}})
    else:
        best = copy / "checkpoints" / "best.weights.h5"
        corrupt_checkpoint(damage, best, best, tmp_path / "marker")
    with pytest.raises(ValueError) as error:
        load_run(copy, jit_compile=False)
    assert str(copy) in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "marker").exists()


def test_model_has_no_code_carrying_layers_and_checkpoints_hold_only_arrays(finished_run):
    import keras

    from seq2seqVAE import build_model

    for conditional in (True, False):
        model = build_model(tiny_hparams(conditional=conditional))
        assert not [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.Lambda)]
    _, run_dir = finished_run
    for checkpoint in (run_dir / "checkpoints").glob("*.weights.h5"):
        with h5py.File(checkpoint, "r") as f:
            names = []
            f.visit(names.append)
            # Keras labels each group with its layer's name; nothing names a class or a config
            assert not list(f.attrs)
            assert {key for name in names for key in f[name].attrs} <= {"name"}
        assert all(a.dtype.kind in "iuf" for a in h5_arrays(checkpoint).values())


# ---- NaN and inf ----


def tiny_compiled_model():
    from seq2seqVAE import build_model, compile_model

    hps = tiny_hparams()
    model = compile_model(build_model(hps), hps)
    model.optimizer.build(model.trainable_variables)
    return model


def test_checkpoint_refuses_non_finite_weights_and_names_the_last_good_one(tmp_path, capsys):
    from callbacks import Checkpoint

    model = tiny_compiled_model()
    checkpointer = Checkpoint(str(tmp_path), save_every=1)
    checkpointer.set_model(model)
    checkpointer.on_epoch_begin(0)
    checkpointer.on_epoch_end(0, {"val_loss": 1.0})
    good = tmp_path / "ckpt-epoch0001-step00000000.weights.h5"
    assert good.exists() and (tmp_path / "best.weights.h5").exists()
    before = snapshot(tmp_path)

    kernel = model.get_layer("mixture_head").kernel
    kernel.assign(np.where(np.eye(*kernel.shape, dtype=bool), np.nan, np.asarray(kernel)))
    model.stop_training = False
    checkpointer.on_epoch_end(1, {"val_loss": 0.5})  # a better val_loss must not save NaN either
    assert model.stop_training and checkpointer.stopped_on_nan  # the epoch is over: fit ends
    assert snapshot(tmp_path) == before
    assert f"the weights are no longer finite at step 0; nothing was saved after it. " \
           f"Last good checkpoint: {good}" in capsys.readouterr().out


def test_a_non_finite_batch_loss_stops_before_saving(tmp_path, capsys):
    from callbacks import Checkpoint, TrainingStopped

    model = tiny_compiled_model()
    checkpointer = Checkpoint(str(tmp_path), save_every=1)
    checkpointer.set_model(model)
    with pytest.raises(TrainingStopped):
        checkpointer.on_train_batch_end(0, {"loss": float("inf")})
    assert checkpointer.stopped_on_nan and os.listdir(tmp_path) == []
    out = capsys.readouterr().out
    assert "the training loss became inf at step 0" in out
    assert "Last good checkpoint: none was written yet" in out


def stop_in_epoch_1(tmp_path, act, *callbacks):
    """Fits a plain Keras model (so that only the stop is under test) for up to 5 epochs of
    four batches, calling `act(model)` as epoch 1's second batch begins, and checks that the
    run ended after that batch: epoch 0 validated, logged and saved as usual; epoch 1 with no
    validation, no log row and no epoch-end checkpoint; the log file closed."""
    import keras

    from callbacks import Checkpoint, TrainingStopped, end_callbacks

    class ActAt(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epoch, self.batches, self.validations = 0, 0, 0

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_begin(self, batch, logs=None):
            self.batches += 1
            if (self.epoch, batch) == (1, 1):
                act(self.model)

        def on_test_begin(self, logs=None):
            self.validations += 1

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x, y = np.ones((8, 3), "float32"), np.zeros((8, 1), "float32")
    spy = ActAt()
    logger = keras.callbacks.CSVLogger(str(tmp_path / "log.csv"))
    checkpointer = Checkpoint(str(tmp_path / "checkpoints"))
    callbacks = [spy, logger, checkpointer, *callbacks]
    with pytest.raises(TrainingStopped):
        model.fit(x, y, batch_size=2, epochs=5, validation_data=(x, y), callbacks=callbacks,
                  verbose=0)
    end_callbacks(callbacks)
    assert spy.batches == 4 + 2 and spy.validations == 1
    with open(tmp_path / "log.csv") as f:
        assert [row["epoch"] for row in csv.DictReader(f)] == ["0"]
    assert logger.csv_file.closed
    assert [p.name for p in sorted((tmp_path / "checkpoints").glob("ckpt-*"))] == [
        "ckpt-epoch0001-step00000004.weights.h5"]
    return checkpointer


def test_a_stop_requested_mid_epoch_leaves_that_epoch_unvalidated_and_unlogged(tmp_path):
    from callbacks import StopAfterBatch

    stopper = StopAfterBatch()  # what Ctrl-C asks of, from the signal handler
    checkpointer = stop_in_epoch_1(tmp_path, lambda model: stopper.request(), stopper)
    assert not checkpointer.stopped_on_nan


def test_a_nan_loss_mid_epoch_leaves_that_epoch_unvalidated_and_unlogged(tmp_path, capsys):
    # The stop comes from the checkpointer: the batch runs with a NaN kernel, so its loss is NaN.
    def break_the_kernel(model):
        kernel = model.layers[0].kernel
        kernel.assign(np.full(kernel.shape, np.nan, "float32"))

    checkpointer = stop_in_epoch_1(tmp_path, break_the_kernel)
    assert checkpointer.stopped_on_nan
    assert "the training loss became nan at step 6" in capsys.readouterr().out


def test_stale_temporary_files_of_dead_writers_are_removed(tmp_path):
    from callbacks import Checkpoint

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    stale = [f".tmp-{dead_pid}-ckpt-epoch0001-step00000004.weights.h5", f"best.json.tmp-{dead_pid}",
             f".tmp-{dead_pid}-best.weights.h5"]
    kept = [f".tmp-{os.getpid()}-ckpt-epoch0001-step00000008.weights.h5", "notes.tmp-x.txt"]
    for name in stale + kept:
        (tmp_path / name).write_bytes(b"\x89HDF\r\n")
    Checkpoint(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == sorted(kept)


@pytest.mark.slow
def test_nan_loss_stops_the_run_and_no_checkpoint_holds_nan(tmp_path):
    # A learning rate of 1e30 makes the weights enormous after one step: the second batch's
    # loss is NaN (reliably, the run is seeded). The run must stop there with exit code 1.
    write_data(tmp_path / "data", good_splits())
    result = subprocess.run(
        [sys.executable, str(REPO / "seq2seqVAE_train.py"), f"--data_dir={tmp_path / 'data'}",
         "--data_set=sketches", f"--experiment_dir={tmp_path / 'run'}", "--verbose=2",
         f"--hparams={TINY},epochs=3,save_every=1,learning_rate=1e30"],
        capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 1, result.stderr[-3000:]
    match = re.search(r"Stopping: the training loss became nan at step (\d+); nothing was saved "
                      r"after it\. Last good checkpoint: (\S+)", result.stdout)
    assert match, result.stdout
    checkpoints = sorted((tmp_path / "run" / "checkpoints").glob("*.weights.h5"))
    assert checkpoints and Path(match.group(2)) == checkpoints[-1]
    for checkpoint in checkpoints:
        step, _, _, finite = checkpoint_state(checkpoint)
        assert finite and step < int(match.group(1))
    assert not (tmp_path / "run" / "checkpoints" / "best.weights.h5").exists()
    assert not (tmp_path / "run" / "test_losses.json").exists()


# ---- reproducibility ----


@pytest.mark.slow
def test_same_seed_and_data_give_the_same_first_epoch(tmp_path):
    write_data(tmp_path / "data", good_splits())
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("other seed", 1)):
        runs[name] = subprocess.Popen(
            [sys.executable, str(REPO / "seq2seqVAE_train.py"), f"--data_dir={tmp_path / 'data'}",
             "--data_set=sketches", f"--experiment_dir={tmp_path / name}", "--verbose=2",
             f"--hparams={TINY},epochs=1,seed={seed}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO)
    for process in runs.values():
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-3000:]

    def first_epoch(name):
        with open(tmp_path / name / "logs" / "training_log.csv") as f:
            return next(csv.DictReader(f))

    assert first_epoch("a") == first_epoch("b")  # every column, to the last digit
    assert first_epoch("a")["loss"] != first_epoch("other seed")["loss"]
    weights = [h5_arrays(tmp_path / name / "checkpoints" / "ckpt-epoch0001-step00000004.weights.h5")
               for name in ("a", "b")]
    for key, value in weights[0].items():
        np.testing.assert_array_equal(value, weights[1][key], err_msg=key)


# ---- SIGKILL at random moments, then resume ----


SAVE_EVERY = 2
STEPS_PER_EPOCH = 4


def learning_rate_and_kl_weight(step):
    from callbacks import kl_weight_at, learning_rate_at

    hps = tiny_hparams()
    return learning_rate_at(step, hps), kl_weight_at(step, hps)


def visible_checkpoints(folder):
    """(step, epoch, path) of every checkpoint under its real name, oldest first."""
    from callbacks import list_checkpoints

    return [(step, epoch, Path(path)) for step, epoch, path in list_checkpoints(str(folder))]


def check_every_visible_file_is_whole(run_dir, config_bytes):
    """No half-written file under a real name: each checkpoint opens, holds the step its name
    says and schedules that follow the formulas; the JSON files parse."""
    checkpoints = run_dir / "checkpoints"
    for step, _, path in visible_checkpoints(checkpoints):
        stored_step, lr, kl_weight, finite = checkpoint_state(path)
        assert stored_step == step and finite, path
        # the schedules were last set before the step-th minibatch, i.e. at step - 1
        assert (lr, kl_weight) == pytest.approx(learning_rate_and_kl_weight(step - 1), rel=1e-6), path
    if (checkpoints / "best.weights.h5").exists():
        assert checkpoint_state(checkpoints / "best.weights.h5")[3]
        assert set(json.loads((checkpoints / "best.json").read_text())) >= {"val_loss", "step"}
    assert (run_dir / "model_config.json").read_bytes() == config_bytes


def log_rows(run_dir):
    path = run_dir / "logs" / "training_log.csv"
    if not path.exists():
        return []
    with open(path) as f:
        return list(csv.DictReader(f))


def start_training(data_dir, run_dir, log_path, *flags):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log_path, "w") as log:
        return subprocess.Popen(
            [sys.executable, str(REPO / "seq2seqVAE_train.py"), f"--data_dir={data_dir}",
             "--data_set=sketches", f"--experiment_dir={run_dir}", "--verbose=2", *flags],
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env)


def wait_for(condition, process, log_path, timeout=180, poll=0.0005):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        if process.poll() is not None:
            raise AssertionError(f"training ended early ({process.returncode}):\n"
                                 f"{Path(log_path).read_text()[-3000:]}")
        time.sleep(poll)
    process.kill()
    raise AssertionError(f"timed out:\n{Path(log_path).read_text()[-3000:]}")


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_continues_exactly(tmp_path):
    rng = random.Random(4)
    data_dir, run_dir = tmp_path / "data", tmp_path / "run"
    checkpoints = run_dir / "checkpoints"
    write_data(data_dir, good_splits())
    # "random": SIGKILL a random 0-4 s after the run's first new checkpoint, wherever it is
    # then (a step, a write, validation, the CSV log); "write": SIGKILL the moment a temporary
    # checkpoint file of this process appears, i.e. in the middle of writing it.
    moments = ["random", "write", "random", "write"]
    config_bytes, resume_from, stale, killed_mid_write = None, None, [], 0
    for round_index, moment in enumerate(moments):
        log_path = tmp_path / f"round{round_index}.log"
        rows_before = len(log_rows(run_dir))
        if resume_from is None:
            process = start_training(data_dir, run_dir, log_path,
                                     f"--hparams={TINY},epochs=1000,save_every={SAVE_EVERY}")
            start_step = 0
        else:
            process = start_training(data_dir, run_dir, log_path, f"--checkpoint={run_dir}")
            start_step, start_epoch, _ = resume_from
        old = {path for _, _, path in visible_checkpoints(checkpoints)}
        if moment == "random":
            step, _, path = wait_for(lambda old=old: [c for c in visible_checkpoints(checkpoints)
                                                      if c[2] not in old],
                                     process, log_path, poll=0.01)[0]
            first_bytes = path.read_bytes()  # before the run prunes it
            time.sleep(rng.uniform(0.0, 4.0))
        else:
            prefix = f".tmp-{process.pid}-"
            temporary = wait_for(lambda prefix=prefix: checkpoints.is_dir() and [
                n for n in os.listdir(checkpoints) if n.startswith(prefix)], process, log_path)[0]
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
        log = log_path.read_text()

        if moment == "random":
            # the run continued the global step: its first checkpoint is one interval on
            assert step == start_step + SAVE_EVERY, log
            assert checkpoint_state(first_bytes)[0] == step
        else:
            match = re.search(r"step(\d+)", temporary)
            if match:  # not best.weights.h5
                assert int(match.group(1)) == start_step + SAVE_EVERY, log
            killed_mid_write += (checkpoints / temporary).exists()
        if resume_from is not None:
            assert f"resuming from {resume_from[2]}" in log
            assert not any((checkpoints / name).exists() for name in stale), "left from a killed run"
        if config_bytes is None:
            config_bytes = (run_dir / "model_config.json").read_bytes()

        check_every_visible_file_is_whole(run_dir, config_bytes)
        # Every epoch this process finished logged the schedules of its last minibatch,
        # continuing from the checkpoint it started from.
        for k, row in enumerate(log_rows(run_dir)[rows_before:], start=1):
            last_step = start_step + k * STEPS_PER_EPOCH - 1
            lr, kl_weight = learning_rate_and_kl_weight(last_step)
            assert float(row["lr"]) == pytest.approx(lr, rel=1e-6), (round_index, k)
            assert float(row["kl_weight"]) == pytest.approx(kl_weight, rel=1e-6), (round_index, k)
            if resume_from is not None:
                assert int(row["epoch"]) == start_epoch + k - 1

        # At most save_every steps are lost: the process was at most save_every - 1 steps past
        # its newest started checkpoint, and exactly at it if it died writing that one.
        resume_from = visible_checkpoints(checkpoints)[-1]
        started = [int(m.group(1)) for n in os.listdir(checkpoints)
                   if (m := re.search(r"^\.tmp-\d+-ckpt-epoch\d+-step(\d+)", n))]
        newest_started = max([resume_from[0], *started])
        furthest = newest_started if newest_started > resume_from[0] else newest_started + SAVE_EVERY - 1
        assert furthest - resume_from[0] <= SAVE_EVERY
        stale = [n for n in os.listdir(checkpoints) if ".tmp-" in n]
        print(f"round {round_index} ({moment}): started at step {start_step}, killed; "
              f"temporary files {stale}; resuming from {resume_from[2].name}")
        if round_index == len(moments) - 1 and not killed_mid_write and len(moments) < 8:
            moments.append("write")  # the kill came just after a rename: try again
    assert killed_mid_write >= 1, "no SIGKILL landed inside a checkpoint write"

    # A last resume runs to the end of its epoch and finishes normally.
    start_step, start_epoch, path = resume_from
    log_path = tmp_path / "final.log"
    process = start_training(data_dir, run_dir, log_path, f"--checkpoint={run_dir}",
                             f"--hparams=epochs={start_epoch + 1}")
    assert process.wait(timeout=300) == 0, log_path.read_text()[-3000:]
    log = log_path.read_text()
    assert f"resuming from {path}" in log and "Test:" in log
    assert not [n for n in os.listdir(checkpoints) if ".tmp-" in n]
    check_every_visible_file_is_whole(run_dir, config_bytes)
    assert visible_checkpoints(checkpoints)[-1][:2] == (start_step + STEPS_PER_EPOCH, start_epoch + 1)
