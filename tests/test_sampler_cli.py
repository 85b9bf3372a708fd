"""The sampling command as people use it: completion, sketch files, flags, quiet start.

References: hand-computed stroke conversions, the SVG the command writes (its colours and
labels), and the standard error stream of a real process.
"""

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from test_sampling import tiny_model, write_run

import seq2seqVAE_sample
import utils
from sketch_rnn import cli

REPO = Path(__file__).resolve().parents[1]
SVG = "{http://www.w3.org/2000/svg}"
# TensorFlow's C++ log lines (absl): "I0000 00:00:1796056402.551503   30563 port.cc:153] ..."
CPP_LOG = re.compile(r"^[IWEF]\d{4} |cudart|oneDNN|absl::InitializeLog", re.M)

# Two strokes of absolute points: an L, then a dot.
STROKES = [[[10, 20], [13, 24], [13, 30]], [[0, 0]]]
STROKES_AS_STROKE3 = [[0, 0, 0], [3, 4, 0], [0, 6, 1], [-13, -30, 1]]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("cli") / "run"
    write_run(run, tiny_model("max_seq_len=250", seed=21), "best.weights.h5", scale_factor=2.0)
    return run


def test_read_sketch_reads_npy_and_both_json_forms(tmp_path):
    rows = np.array(STROKES_AS_STROKE3, np.float32)
    np.save(tmp_path / "rows.npy", rows.astype(np.int16))
    (tmp_path / "rows.json").write_text(json.dumps(STROKES_AS_STROKE3))
    (tmp_path / "points.json").write_text(json.dumps(STROKES))
    for name in ("rows.npy", "rows.json", "points.json"):
        sketch = utils.read_sketch(tmp_path / name)
        assert sketch.dtype == np.float32
        np.testing.assert_array_equal(sketch, rows, err_msg=name)
    # As other tools write the points: with a byte-order mark and CRLF, with a time after x, y.
    timed = [[[x, y, 16 * i] for i, (x, y) in enumerate(stroke)] for stroke in STROKES]
    (tmp_path / "timed.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(timed, indent=1).replace(
        "\n", "\r\n").encode())
    np.testing.assert_array_equal(utils.read_sketch(tmp_path / "timed.json"), rows)
    # QuickDraw's layout, [[x...], [y...]] per stroke, as prepare_data.py reads it
    axes = [[[x for x, _ in stroke], [y for _, y in stroke]] for stroke in STROKES]
    (tmp_path / "axes.json").write_text(json.dumps([axes[0], [[0], [0]]]))
    np.testing.assert_array_equal(utils.read_sketch(tmp_path / "axes.json"), rows)
    # Round trip: the absolute points come back from the stroke-3 rows.
    lines = utils.stroke_lines(utils.read_sketch(tmp_path / "points.json"))
    origin = np.array(STROKES[0][0])
    for line, stroke in zip(lines, STROKES):
        np.testing.assert_array_equal(line + origin, stroke)


@pytest.mark.parametrize("name, content, fragment", [
    ("a.json", "[[1, 2, 0], [3, 4]]", "expected a stroke-3 sketch"),
    ("a.json", '{"drawing": []}', "expected a stroke-3 sketch"),
    ("a.json", "[[1, 2, 2]]", "the pen column (the third) must be 0 or 1"),
    ("a.json", "[[1, 2, true]]", "expected a stroke-3 sketch"),
    ("a.json", "[[1, 2, 0", "not valid JSON"),
    ("a.json", "[[[0, 1], [2, 3]]]", "read both as [x, y] points and as QuickDraw's"),
    ("a.txt", "[[1, 2, 0]]", "expected a .npy or .json sketch"),
    ("a.npy", np.zeros((4, 2)), "shape (4, 2)"),
    ("a.npy", np.array([np.zeros((2, 3))], dtype=object), "not a numeric .npy array"),
    ("a.npy", np.array([[np.nan, 0, 0]]), "NaN or infinite"),
])
def test_bad_sketch_files_are_one_line_errors(tmp_path, name, content, fragment):
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content)
    else:
        np.save(path, content, allow_pickle=True)
    with pytest.raises(ValueError) as error:
        utils.read_sketch(path)
    message = str(error.value)
    assert "\n" not in message and str(path) in message and fragment in message, message


def test_first_strokes():
    sketch = np.array([[1, 0, 0], [1, 0, 1], [0, 1, 1], [2, 2, 0], [1, 1, 1]], np.float32)
    np.testing.assert_array_equal(utils.first_strokes(sketch, 1), sketch[:2])
    np.testing.assert_array_equal(utils.first_strokes(sketch, 2), sketch[:3])
    np.testing.assert_array_equal(utils.first_strokes(sketch, 3), sketch)
    np.testing.assert_array_equal(utils.first_strokes(sketch, 9), sketch)
    assert utils.first_strokes(sketch, 0).shape == (0, 3)


def test_a_mistyped_flag_suggests_the_close_one(capsys):
    with pytest.raises(SystemExit) as exit_:
        seq2seqVAE_sample.parse_args(["--run_dir=x", "--temprature=0.3"])
    assert exit_.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert ("unrecognized arguments: --temprature=0.3 "
            "(--temprature: did you mean --temperature?)") in last, last
    with pytest.raises(SystemExit):
        seq2seqVAE_sample.parse_args(["--run_dir=x", "--zzz"])
    assert "did you mean" not in capsys.readouterr().err  # nothing close: no guess


def test_tensorflow_log_lines_are_hidden_below_the_level():
    info = "I0000 00:00:1796056402.551838   30563 cudart_stub.cc:31] Could not find cuda drivers"
    error = "E0000 00:00:1796056406.145005   30563 cuda_platform.cc:52] failed call to cuInit"
    preamble = cli.ABSL_PREAMBLE + " are written to STDERR"
    assert [cli._hidden(line, 3) for line in (info, error, preamble, "error: mine")] == [
        True, True, True, False]
    assert [cli._hidden(line, 1) for line in (info, error, preamble)] == [True, False, True]
    assert not any(cli._hidden(line, 0) for line in (info, error, preamble))


def test_complete_from_a_json_file_draws_the_prefix_in_its_colour(tiny_run, tmp_path, capsys):
    prefix = tmp_path / "mine.json"
    prefix.write_text(json.dumps(STROKES))
    out = tmp_path / "pictures"
    argv = [f"--run_dir={tiny_run}", f"--output_dir={out}", "--mode=complete", f"--prefix={prefix}",
            "--count=3", "--seed=4", "--temperature=0.7", "--labels"]
    assert seq2seqVAE_sample.main(argv) == 0
    root = ET.parse(out / "complete-t0.70-s4.svg").getroot()
    prefix_paths = [p for p in root.iter(f"{SVG}path") if p.get("stroke") == utils.PREFIX_COLOR]
    assert len(prefix_paths) == 2 * 4  # the prefix's two strokes, alone and in 3 completions
    assert [t.text for t in root.iter(f"{SVG}text")] == [
        "mine.json"] + [f"tau 0.7, seed 4 #{i}" for i in range(3)]

    capsys.readouterr()
    bad = tmp_path / "bad.json"
    bad.write_text("[[1, 2, 0], [3, 4]]")
    assert seq2seqVAE_sample.main(argv[:-1] + [f"--prefix={bad}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {bad}: expected a stroke-3 sketch") and "\n" not in err


def test_completions_read_the_prefix_in_model_units(tiny_run, tmp_path):
    """The file is in the data's units: the command divides it by the run's scale factor (2.0)."""
    from seq2seqVAE import load_run

    rows = np.array(STROKES_AS_STROKE3, np.float32)
    np.save(tmp_path / "rows.npy", rows)
    out = tmp_path / "pictures"
    common = [f"--run_dir={tiny_run}", f"--output_dir={out}", "--mode=complete",
              f"--prefix={tmp_path / 'rows.npy'}", "--count=2", "--seed=5", "--greedy"]
    assert seq2seqVAE_sample.main(common) == 0
    scaled = rows.copy()
    scaled[:, :2] /= 2.0
    completions = load_run(str(tiny_run)).complete(scaled, 2, greedy=True, seed=5)
    expected = utils.sketches_to_svg([scaled] + completions, columns=3, scale_factor=2.0,
                                     labels=["rows.npy", "greedy", "greedy"], cell_size=150,
                                     prefix_lengths=[len(rows)] * 3)
    assert (out / "complete-greedy-s5.svg").read_text() == expected


def test_a_prefix_that_is_the_whole_test_sketch_is_warned_about(capsys):
    two = np.array(STROKES_AS_STROKE3[1:], np.float32)  # 2 strokes
    test = [two, np.concatenate([two] * 3)]  # 2 and 6 strokes
    args = seq2seqVAE_sample.parse_args(["--run_dir=x", "--mode=complete", "--indices=0,1",
                                         "--prefix_strokes=2"])
    prefixes = seq2seqVAE_sample.read_prefixes(args, 1.0, test=test, indices=[0, 1])
    assert [label for _, label in prefixes] == ["test 0, 2/2 strokes", "test 1, 2/6 strokes"]
    warnings = capsys.readouterr().err.strip().splitlines()
    assert len(warnings) == 1 and warnings[0].startswith("warning: test sketch 0 has 2 strokes")


def test_reconstructing_more_than_the_test_split_holds_is_said(capsys):
    args = seq2seqVAE_sample.parse_args(["--run_dir=x", "--mode=reconstruct", "--count=4"])
    assert seq2seqVAE_sample.parse_indices(args, 1) == [0]
    assert capsys.readouterr().err.strip() == (
        "note: --count=4, but the test split has 1 sketch: reconstructing 1")
    assert seq2seqVAE_sample.parse_indices(args, 9) == [0, 1, 2, 3]
    assert capsys.readouterr().err == ""


def test_one_stroke_is_one_stroke_in_the_warning(capsys):
    one = np.array(STROKES_AS_STROKE3[:3], np.float32)  # 1 stroke
    args = seq2seqVAE_sample.parse_args(["--run_dir=x", "--mode=complete", "--indices=0"])
    seq2seqVAE_sample.read_prefixes(args, 1.0, test=[one], indices=[0])
    assert capsys.readouterr().err.startswith("warning: test sketch 0 has 1 stroke, so")


@pytest.mark.parametrize("flags, fragment", [
    (["--indices=1,2"], "--indices applies to reconstruct, interpolate and complete"),
    (["--mode=reconstruct", "--format=gif", "--labels"], "--labels applies to svg and png grids"),
    (["--mode=reconstruct", "--format=gif", "--columns=3"], "--columns applies to svg and png"),
    (["--mode=reconstruct", "--method=lerp"], "--method applies to --mode=interpolate"),
    (["--independent_noise"], "--independent_noise applies to --mode=interpolate"),
    (["--prefix_strokes=2"], "--prefix_strokes applies to --mode=complete"),
    (["--greedy", "--pen_temperature=1"], "--pen_temperature applies to sampling; --greedy"),
])
def test_flags_that_do_nothing_in_a_mode_are_refused(flags, fragment, tmp_path):
    args = seq2seqVAE_sample.parse_args([f"--run_dir={tmp_path}", *flags])
    with pytest.raises(ValueError, match=re.escape(fragment)):
        seq2seqVAE_sample.check_args(args)


@pytest.mark.parametrize("flags, name", [
    (["--mode=interpolate"], "interpolate-0-1-t0.50-s7"),
    (["--mode=interpolate", "--indices=6,1", "--method=lerp"], "interpolate-6-1-lerp-t0.50-s7"),
    (["--mode=interpolate", "--independent_noise", "--temperature=0.125"],
     "interpolate-0-1-independent-t0.125-s7"),
    (["--mode=interpolate", "--indices=2,5", "--method=lerp", "--independent_noise", "--greedy"],
     "interpolate-2-5-lerp-independent-greedy-s7"),
    (["--mode=complete", "--temperature=1"], "complete-t1.00-s7"),
    (["--temperature=0.3", "--pen_temperature=1"], "sample-t0.30-p1.00-s7"),
])
def test_picture_names_tell_the_drawings_apart(flags, name):
    args = seq2seqVAE_sample.parse_args(["--run_dir=x", *flags])
    indices = seq2seqVAE_sample.parse_indices(args, 10) if args.mode == "interpolate" else None
    assert seq2seqVAE_sample.picture_name(args, 7, indices) == name


def test_the_test_data_is_read_and_indices_checked_before_the_model_loads(
        tiny_run, tmp_path, shared_datasets, capsys, monkeypatch):
    monkeypatch.setattr("seq2seqVAE.load_run", None)  # loading the model would be a TypeError
    common = [f"--run_dir={tiny_run}", f"--output_dir={tmp_path}", "--mode=reconstruct"]
    monkeypatch.setenv("SKETCH_RNN_BASE_URL", "http://127.0.0.1:1")  # no server there
    assert seq2seqVAE_sample.main(common + [f"--data_dir={tmp_path / 'none'}"]) == 2
    assert "could not download" in capsys.readouterr().err
    assert seq2seqVAE_sample.main(common + [f"--data_dir={shared_datasets}", "--indices=300"]) == 2
    assert capsys.readouterr().err.strip().endswith(
        "error: --indices: 300 is not a test sketch (there are 300, 0 to 299)")


def test_the_command_prints_no_tensorflow_log_lines(tiny_run, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    prefix = tmp_path / "mine.json"
    prefix.write_text(json.dumps(STROKES))
    command = [sys.executable, str(REPO / "seq2seqVAE_sample.py"), f"--run_dir={tiny_run}",
               f"--output_dir={tmp_path / 'out'}", "--mode=complete", f"--prefix={prefix}",
               "--count=2", "--seed=1", "--format=png"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == str(tmp_path / "out" / "complete-t0.50-s1.png")
    assert not CPP_LOG.search(result.stderr), result.stderr
