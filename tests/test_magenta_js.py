"""The magenta.js format: export, import, and the exported file run by `@magenta/sketch` in Node.js.

References, independent of the code under test:
- `@magenta/sketch` 0.2.0 itself, from npm, run in Node.js (`tests/js/mixture_params.js`);
- `magenta_js_reference`, the library's model written here in NumPy from its source
  (`SketchRNN.update`: `tf.basicLSTMCell` with gates i, j, f, o and forget bias 1.0;
  `getPDF`), reading the file's blobs without the module's code;
- our own model in float32, whose outputs the file must give within the effect of its
  quantisation. That tolerance is measured, not picked: rounding to the format's grid moves
  each weight by at most half a step, so `quantisation_tolerance` moves the weights by
  independent uniform draws of that size and takes 3 times the largest output change seen.
"""

import base64
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import convert_model
import utils
from sketch_rnn import magenta_js
from sketch_rnn.drawing import initial_state_model, load_run
from sketch_rnn.hparams import HParams
from sketch_rnn.model import build_model
from sketch_rnn.run_folder import write_run_folder

ROOT = Path(__file__).resolve().parents[1]
SHEEP = ROOT / "examples" / "sheep"
NODE_SCRIPT = ROOT / "tests" / "js" / "mixture_params.js"
SHEEP_INDEX = 5  # the test sketch whose z the sheep model is exported for
STEP = magenta_js.QUANTISATION_STEP
NAMES = ("pi", "mu_x", "mu_y", "sigma_x", "sigma_y", "corr", "pen")


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def pdf_of_outputs(y):
    """The head's outputs (T, 123) -> the distribution as `getPDF(state, 1, 1)` gives it."""
    pen, pi, mu_x, mu_y, s_x, s_y, corr = np.split(np.asarray(y, np.float64), [3, 23, 43, 63, 83, 103], -1)
    return {"pi": softmax(pi), "mu_x": mu_x, "mu_y": mu_y, "sigma_x": np.exp(s_x),
            "sigma_y": np.exp(s_y), "corr": np.tanh(corr), "pen": softmax(pen)}


def ours(model, points, z=None, state=None):
    """Our model's distribution of each next point, teacher-forced on `points` (T, 5), from
    `state` (h, c), zeros if None (also for a conditional model: give its initial state)."""
    decoder, head = model.get_layer("decoder_lstm"), model.get_layer("mixture_head")
    options = {}
    if z is not None:
        options["constant"] = np.asarray(z, np.float32)[None]
    if state is not None:
        options["initial_state"] = tuple(np.asarray(s, np.float32)[None] for s in state)
    outputs, *_ = decoder(np.asarray(points, np.float32)[None], **options)
    return pdf_of_outputs(np.asarray(head(outputs))[0])


def magenta_js_reference(value, points, state=None):
    """@magenta/sketch's `update` and `getPDF` in NumPy (float64) on a model file's value."""
    _, dims, blobs = value
    tensors = [10.0 * np.frombuffer(base64.b64decode(b), "<i2").astype(np.float64).reshape(d) / 32767
               for b, d in zip(blobs, dims)]
    output_kernel, output_bias, w_xh, w_hh, bias = tensors
    kernel = np.concatenate([w_xh, w_hh])  # the library's concat2d([xh, hh], 0)
    units = w_hh.shape[0]
    h, c = (np.zeros(units), np.zeros(units)) if state is None else map(np.asarray, state)
    sigmoid = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    outputs = []
    for x in np.asarray(points, np.float64):
        i, j, f, o = np.split(np.concatenate([x, h]) @ kernel + bias, 4)
        c = sigmoid(i) * np.tanh(j) + c * sigmoid(1.0 + f)
        h = np.tanh(c) * sigmoid(o)
        outputs.append(h @ output_kernel + output_bias)
    return pdf_of_outputs(np.array(outputs))


def quantisation_tolerance(weights, points, state=None, draws=3, seed=0):
    """Per parameter, 3x the largest change of the distribution over `points` when every
    decoder weight (our layout) moves by an independent U(-step/2, step/2) draw."""
    units = weights["recurrent_kernel"].shape[0]
    model = build_model(HParams.parse(f"conditional=False,dec_rnn_size={units},lstm_matmul_dtype=float32"))
    magenta_js.set_decoder_weights(model, weights)
    exact = ours(model, points, state=state)
    rng = np.random.default_rng(seed)
    largest = dict.fromkeys(NAMES, 0.0)
    for _ in range(draws):
        magenta_js.set_decoder_weights(model, {k: w + rng.uniform(-STEP / 2, STEP / 2, w.shape)
                                               for k, w in weights.items()})
        moved = ours(model, points, state=state)
        for name in NAMES:
            largest[name] = max(largest[name], float(np.max(np.abs(moved[name] - exact[name]))))
    return {name: 3 * value for name, value in largest.items()}


def assert_close(actual, expected, tolerance, what):
    for name in NAMES:
        error = float(np.max(np.abs(np.asarray(actual[name]) - expected[name])))
        limit = tolerance[name] if isinstance(tolerance, dict) else tolerance
        assert error <= limit, f"{what}: {name} differs by {error:.3g} > {limit:.3g}"


def with_start_token(sketch):
    """A stroke-3 sketch (model units) as the decoder's inputs: S0, S1, ..., S_N (stroke-5)."""
    return utils.to_stroke5([sketch], len(sketch))[0]


def float32_model(hps_overrides, seed=0):
    """A small decoder-only model with random weights of the size training gives them."""
    hps = HParams.parse("conditional=False,lstm_matmul_dtype=float32," + hps_overrides)
    keras.utils.set_random_seed(seed)
    model = build_model(hps)
    rng = np.random.default_rng(seed)
    for variable in model.trainable_variables:
        variable.assign(rng.normal(scale=0.6, size=variable.shape).astype(np.float32))
    return model


def run_node(node_modules, model_path, request, tmp_path):
    request_path = tmp_path / "request.json"
    request_path.write_text(json.dumps(request))
    result = subprocess.run(["node", str(NODE_SCRIPT), str(model_path), str(request_path)],
                            env={"NODE_PATH": str(node_modules), "PATH": "/usr/local/bin:/usr/bin:/bin"},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    output = json.loads(result.stdout)
    params = {name: np.array([p[name] for p in output["params"]]) for name in NAMES}
    return params, np.array(output["sample"], np.float64)


def assert_valid_sample(rows, max_steps):
    """A sketch as `SketchRNN.sample` writes one: stroke-5 rows, one-hot pens, ends at p3."""
    assert rows.ndim == 2 and rows.shape[1] == 5 and 1 <= len(rows) <= max_steps
    assert np.all(np.isfinite(rows))
    assert np.all(np.isin(rows[:, 2:], [0, 1])) and np.all(rows[:, 2:].sum(1) == 1)
    assert np.all(rows[:-1, 4] == 0) and (rows[-1, 4] == 1 or len(rows) == max_steps)
    stroke3 = utils.to_stroke3(np.concatenate([rows, [[0, 0, 0, 0, 1]]]))
    assert len(stroke3) >= 1


# ---- quantisation ----

def test_quantisation_rounds_to_the_nearest_step_of_the_library_grid():
    values = np.array([0.0, 10.0, -10.0, 0.49 * STEP, 0.51 * STEP, -1.0, 1e-3])
    q = np.frombuffer(base64.b64decode(magenta_js.quantise(values, "w")), "<i2")
    # By hand: v * 32767 / 10, rounded: 1e-3 -> 3.2767 -> 3, -1 -> -3276.7 -> -3277.
    assert q.tolist() == [0, 32767, -32767, 0, 1, -3277, 3]
    stored = magenta_js.dequantise(magenta_js.quantise(values, "w"), len(values), "w")
    np.testing.assert_array_equal(stored, (10.0 * q.astype(np.float64) / 32767).astype(np.float32))
    assert np.max(np.abs(stored - values)) <= STEP / 2 + 1e-7


@pytest.mark.parametrize("values, fragment", [([0.5, 10.5], "magnitude 10.5"),
                                              ([np.nan], "not finite")])
def test_weights_the_format_cannot_store_are_refused_by_name(values, fragment):
    with pytest.raises(ValueError, match=fragment) as error:
        magenta_js.quantise(values, "the LSTM bias")
    assert str(error.value).startswith("the LSTM bias")


# ---- export and import without Node.js ----

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A decoder-only run folder of 12 units with random weights, exported and re-imported."""
    folder = tmp_path_factory.mktemp("tiny")
    model = float32_model("dec_rnn_size=12,max_seq_len=30")
    write_run_folder(str(folder / "run"), model, 3.5, ["cat"], source="test")
    exported = folder / "tiny.gen.json"
    assert convert_model.main(["--run_dir", str(folder / "run"), "--to_magenta_js", str(exported)]) == 0
    assert convert_model.main(["--from_magenta_js", str(exported), "--to", str(folder / "back")]) == 0
    sketch = np.random.default_rng(1).normal(size=(25, 3))
    sketch[:, 2] = np.arange(25) % 6 == 5  # the pen lifts after every 6th point
    points = with_start_token(sketch)
    return {"model": model, "file": exported, "back": folder / "back", "points": points}


def test_tiny_decoder_only_model_round_trips_within_quantisation(tiny_run):
    value = json.loads(tiny_run["file"].read_text())
    info, dims, _ = value
    assert info["mode"] == 2 and info["scale_factor"] == 3.5 and info["max_seq_len"] == 30
    assert dims == [[12, 123], [123], [5, 48], [12, 48], [48]]
    weights = magenta_js.decoder_weights(tiny_run["model"])
    tolerance = quantisation_tolerance(weights, tiny_run["points"])
    original = ours(tiny_run["model"], tiny_run["points"])
    # The file, as the library computes with it, is the original model within quantisation...
    assert_close(magenta_js_reference(value, tiny_run["points"]), original, tolerance, "file")
    # ... and so is the imported run, which holds the file's weights exactly.
    back = load_run(str(tiny_run["back"]))
    assert back.hps.dec_rnn_size == 12 and not back.hps.conditional and back.scale_factor == 3.5
    assert back.data_sets == ["cat"] and back.hps.max_seq_len == 30
    imported = ours(back.model, tiny_run["points"])
    assert_close(imported, original, tolerance, "imported run")
    assert_close(imported, magenta_js_reference(value, tiny_run["points"]), 1e-5, "imported vs file")
    sketches = back.sample(3, temperature=0.5, seed=0)
    assert all(s.ndim == 2 and s.shape[1] == 3 for s in sketches)


@pytest.fixture(scope="module")
def sheep():
    """The shipped example model, float32."""
    return magenta_js.load_float32_run(str(SHEEP))


@pytest.fixture(scope="module")
def sheep_export(tmp_path_factory, shared_datasets, sheep):
    """examples/sheep exported for the z of a test sketch, and imported back."""
    folder = tmp_path_factory.mktemp("sheep")
    exported = folder / "sheep.gen.json"
    assert convert_model.main(["--run_dir", str(SHEEP), "--to_magenta_js", str(exported), "--z_from",
                               str(SHEEP_INDEX), "--data_dir", str(shared_datasets)]) == 0
    assert convert_model.main(["--from_magenta_js", str(exported), "--to", str(folder / "back")]) == 0
    original = sheep
    sketch = original.load_sketches(str(shared_datasets), "test")[SHEEP_INDEX]
    z = original.encode([sketch])[0]
    h, c = (s[0] for s in initial_state_model(original.model).predict(z[None], verbose=0))
    points = with_start_token(sketch)
    weights = magenta_js.decoder_weights(original.model, z)
    return {"file": exported, "back": folder / "back", "model": original.model, "z": z,
            "state": (h, c), "points": points, "value": json.loads(exported.read_text()),
            "tolerance": quantisation_tolerance(weights, points, (h, c)),
            "zero_tolerance": quantisation_tolerance(weights, points)}


def test_sheep_export_holds_its_z_and_initial_state(sheep_export):
    info = sheep_export["value"][0]
    assert info["name"] == "aaron_sheep" and info["mode"] == 2
    assert info["scale_factor"] == json.loads((SHEEP / "model_config.json").read_text())["scale_factor"]
    np.testing.assert_allclose(info["z"], sheep_export["z"], atol=1e-6)
    np.testing.assert_allclose(info["initial_state"]["h"], sheep_export["state"][0], atol=1e-6)
    np.testing.assert_allclose(info["initial_state"]["c"], sheep_export["state"][1], atol=1e-6)


def test_the_web_page_model_is_the_shipped_sheep_at_its_z(sheep):
    """examples/web/sheep.gen.json is examples/sheep exported for the z its info names."""
    value = json.loads((ROOT / "examples" / "web" / "sheep.gen.json").read_text())
    info = value[0]
    z = np.array(info["z"], np.float32)
    expected = magenta_js.to_magenta_js(magenta_js.decoder_weights(sheep.model, z), info)
    assert value[1] == expected[1] and value[2] == expected[2]
    h, c = (s[0] for s in initial_state_model(sheep.model).predict(z[None], verbose=0))
    np.testing.assert_allclose(info["initial_state"]["h"], h, atol=1e-6)
    np.testing.assert_allclose(info["initial_state"]["c"], c, atol=1e-6)
    assert info["scale_factor"] == sheep.scale_factor and info["mode"] == 2


def test_sheep_round_trips_within_quantisation(sheep_export):
    """ours -> magenta.js -> ours, on a real sheep: the imported decoder-only run starts from
    zeros, as the library's zeroState(), so it is compared with the original decoder at the
    exported z started from zeros; the file with info.initial_state, as the original model."""
    points, z, value = sheep_export["points"], sheep_export["z"], sheep_export["value"]
    back = load_run(str(sheep_export["back"]), jit_compile=False)
    units = sheep_export["model"].hps.dec_rnn_size
    assert not back.hps.conditional and back.hps.dec_rnn_size == units
    zero_start = ours(sheep_export["model"], points, z, state=[np.zeros(units)] * 2)
    assert_close(ours(back.model, points), zero_start, sheep_export["zero_tolerance"], "imported run")
    assert_close(magenta_js_reference(value, points), zero_start, sheep_export["zero_tolerance"],
                 "file from zeroState()")
    state = (value[0]["initial_state"]["h"], value[0]["initial_state"]["c"])
    assert_close(magenta_js_reference(value, points, state),
                 ours(sheep_export["model"], points, z, sheep_export["state"]),
                 sheep_export["tolerance"], "file from info.initial_state")


# ---- @magenta/sketch in Node.js ----

def test_magenta_sketch_in_node_draws_the_sheep_as_we_do(sheep_export, node_modules, tmp_path):
    points = sheep_export["points"]
    request = {"points": points.tolist(), "initial_state": "info", "seed": 3, "temperature": 0.5,
               "max_steps": 250}
    js, sample = run_node(node_modules, sheep_export["file"], request, tmp_path)
    float_model = ours(sheep_export["model"], points, sheep_export["z"], sheep_export["state"])
    back = load_run(str(sheep_export["back"]), jit_compile=False)
    dequantised = ours(back.model, points, state=sheep_export["state"])
    for name in NAMES:  # the README's figures (pytest -s shows them)
        print(f"{name}: |JS - ours| {np.max(np.abs(js[name] - float_model[name])):.2e}, "
              f"|JS - imported| {np.max(np.abs(js[name] - dequantised[name])):.2e}, "
              f"tolerance {sheep_export['tolerance'][name]:.2e}")
    # Within quantisation of our float model...
    assert_close(js, float_model, sheep_export["tolerance"], "@magenta/sketch vs ours")
    # ... and, computing with the same dequantised weights, equal to the imported run but for
    # float32 rounding (measured: under 1e-5).
    assert_close(js, dequantised, 1e-4, "@magenta/sketch vs the imported run")
    assert_valid_sample(sample, 250)
    assert len(sample) > 10  # a sheep takes more than a few points at tau 0.5


def test_magenta_sketch_in_node_runs_a_decoder_only_export(tiny_run, node_modules, tmp_path):
    request = {"points": tiny_run["points"].tolist(), "initial_state": "zero", "seed": 1,
               "temperature": 0.7, "max_steps": 30}
    js, sample = run_node(node_modules, tiny_run["file"], request, tmp_path)
    weights = magenta_js.decoder_weights(tiny_run["model"])
    assert_close(js, ours(tiny_run["model"], tiny_run["points"]),
                 quantisation_tolerance(weights, tiny_run["points"]), "@magenta/sketch vs ours")
    assert_valid_sample(sample, 30)


# ---- what cannot be converted, and bad input ----

def write_tiny_run(folder, overrides):
    hps_text = "conditional=False,dec_rnn_size=4,max_seq_len=10,lstm_matmul_dtype=float32," + overrides
    model = build_model(HParams.parse(hps_text))
    write_run_folder(str(folder), model, 1.0, ["cat"], source="test")
    return folder


@pytest.mark.parametrize("overrides, fragment", [
    ("dec_model=layer_norm", "decoder cell is 'layer_norm'"),
    ("dec_model=hyper", "decoder cell is 'hyper'"),
    ("num_mixture=5", "num_mixture is 5"),
    ("conditional=True,enc_rnn_size=4,z_size=2", "give either --z_from"),
])
def test_models_the_format_cannot_hold_are_one_line_errors(overrides, fragment, tmp_path, capsys):
    run = write_tiny_run(tmp_path / "run", overrides)
    assert convert_model.main(["--run_dir", str(run), "--to_magenta_js", str(tmp_path / "out.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and fragment in err and err.count("\n") == 1
    assert not (tmp_path / "out.json").exists()


@pytest.mark.parametrize("where", ["missing/out.json", "."])
def test_an_output_that_cannot_be_a_file_is_one_line(where, tmp_path, capsys):
    run = write_tiny_run(tmp_path / "run", "")
    out = tmp_path / where
    assert convert_model.main(["--run_dir", str(run), "--to_magenta_js", str(out)]) == 2
    assert capsys.readouterr().err == f"error: {out}: expected a file name in an existing folder\n"


def test_an_existing_output_is_replaced_only_with_force(tmp_path, capsys):
    run = write_tiny_run(tmp_path / "run", "")
    out = tmp_path / "out.json"
    out.write_text("a model exported earlier")
    assert convert_model.main(["--run_dir", str(run), "--to_magenta_js", str(out)]) == 2
    assert capsys.readouterr().err == (f"error: --to_magenta_js: {out} exists; pass --force to "
                                       "replace it\n")
    assert out.read_text() == "a model exported earlier"
    assert convert_model.main(["--run_dir", str(run), "--to_magenta_js", str(out), "--force"]) == 0
    assert json.loads(out.read_text())  # the export, which test_export_* check


def test_a_z_for_a_decoder_only_model_is_refused(tmp_path, capsys):
    run = write_tiny_run(tmp_path / "run", "")
    args = ["--run_dir", str(run), "--to_magenta_js", str(tmp_path / "out.json"), "--z_seed", "1"]
    assert convert_model.main(args) == 2
    assert "decoder-only" in capsys.readouterr().err


def test_a_weight_beyond_the_format_range_is_refused_naming_the_tensor(tmp_path, capsys):
    model = build_model(HParams.parse("conditional=False,dec_rnn_size=4,lstm_matmul_dtype=float32"))
    head = model.get_layer("mixture_head")
    head.bias.assign(np.full(head.bias.shape, 12.0, np.float32))
    write_run_folder(str(tmp_path / "run"), model, 1.0, ["cat"], source="test")
    assert convert_model.main(["--run_dir", str(tmp_path / "run"), "--to_magenta_js",
                               str(tmp_path / "out.json")]) == 2
    assert "the output bias: holds a weight of magnitude 12" in capsys.readouterr().err


def good_value():
    """A valid 4-unit model file's JSON value, from a model built here."""
    model = build_model(HParams.parse("conditional=False,dec_rnn_size=4,lstm_matmul_dtype=float32"))
    return magenta_js.to_magenta_js(magenta_js.decoder_weights(model), {"scale_factor": 2.0})


def damage(edit):
    value = good_value()
    edit(value)
    return json.dumps(value)


@pytest.mark.parametrize("make_text, fragment", [
    (lambda: "{not json", "not JSON"),
    (lambda: '{"a": 1}', "expected a JSON array [info, dims, weights]"),
    (lambda: damage(lambda v: v.__setitem__(0, [])), "info, must be an object"),
    (lambda: damage(lambda v: v[1].append([4])), "5 tensors (a decoder-only 'gen' model), got 6 "
                                                  "dims and 5 weights"),
    (lambda: damage(lambda v: v[2].pop()), "got 5 dims and 4 weights"),
    (lambda: damage(lambda v: v[1].__setitem__(0, [4, 60])), "output kernel has dims [4, 60]"),
    (lambda: damage(lambda v: v[1].__setitem__(2, "x")), "LSTM input kernel must be a list"),
    (lambda: damage(lambda v: v[2].__setitem__(4, "@@@")), "LSTM bias: not valid base64"),
    (lambda: damage(lambda v: v[2].__setitem__(1, v[2][1][:8])), "output bias: holds 3 int16 values"),
    (lambda: damage(lambda v: v[0].pop("scale_factor")), "'scale_factor' must be a positive number"),
    (lambda: damage(lambda v: v[0].update(max_seq_len=-3)), "max_seq_len' must be > 0"),
    (lambda: "[" * 100000 + "]" * 100000, "not JSON"),
], ids=["not json", "not a list", "info", "six tensors", "four weights", "dims", "dims type",
        "base64", "length", "scale factor", "max_seq_len", "deep nesting"])
def test_bad_model_files_are_one_line_naming_the_file(make_text, fragment, tmp_path, capsys):
    path = tmp_path / "bad.gen.json"
    path.write_text(make_text())
    assert convert_model.main(["--from_magenta_js", str(path), "--to", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}") and fragment in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_import_into_a_folder_holding_a_run_is_refused(tiny_run, capsys):
    assert convert_model.main(["--from_magenta_js", str(tiny_run["file"]), "--to",
                              str(tiny_run["back"])]) == 2
    assert "is not empty" in capsys.readouterr().err


def test_import_into_the_folder_holding_the_file_is_refused_even_with_force(tmp_path, capsys):
    path = tmp_path / "owl.gen.json"
    text = json.dumps(good_value())
    path.write_text(text)
    (tmp_path / "model_config.json").write_text("{}")  # looks like a run folder: --force would replace it
    assert convert_model.main(["--from_magenta_js", str(path), "--to", str(tmp_path), "--force"]) == 2
    assert f"--to: {tmp_path} holds the input {path}" in capsys.readouterr().err
    assert path.read_text() == text


def test_an_export_into_the_run_it_reads_is_refused(tiny_run, tmp_path, capsys):
    run = tiny_run["file"].parent / "run"
    weights = run / "checkpoints" / "best.weights.h5"
    before = weights.read_bytes()
    for out in (weights, run / "model_config.json", run / "new.gen.json"):
        assert convert_model.main(["--run_dir", str(run), "--to_magenta_js", str(out),
                                   "--force"]) == 2
        assert "is in the run folder or is the --checkpoint" in capsys.readouterr().err
    outside = tmp_path / "best.weights.h5"
    outside.write_bytes(before)
    assert convert_model.main(["--run_dir", str(run), "--checkpoint", str(outside),
                               "--to_magenta_js", str(outside), "--force"]) == 2
    assert "is in the run folder or is the --checkpoint" in capsys.readouterr().err
    # The export function refuses it too, for a Python caller (force or not).
    with pytest.raises(ValueError, match="is in the run folder"):
        magenta_js.export_magenta_js(str(run), str(weights), force=True)
    assert weights.read_bytes() == before and outside.read_bytes() == before


def test_a_whole_max_seq_len_written_as_a_float_is_taken(tmp_path):
    value = good_value()
    value[0]["max_seq_len"] = 120.0  # JavaScript writes numbers so
    path = tmp_path / "owl.gen.json"
    path.write_text(json.dumps(value))
    hps, _ = magenta_js.import_magenta_js(str(path), str(tmp_path / "run"))
    assert hps.max_seq_len == 120 and isinstance(hps.max_seq_len, int)


@pytest.mark.parametrize("args, fragment", [
    ([], "give exactly one conversion"),
    (["--from_magenta_js", "a.json"], "--to"),
    (["--to_magenta_js", "a.json"], "--run_dir"),
    (["--from_magenta_js", "a.json", "--to_magenta_js", "b.json", "--to", "r"], "one conversion"),
    (["--from_magenta_js", "a.json", "--to", "r", "--checkpoint", "c.h5"],
     "--checkpoint does nothing with --from_magenta_js"),
    (["--run_dir", "r", "--to_magenta_js", "b.json", "--hparams", "seed=1"],
     "--hparams does nothing with --to_magenta_js"),
])
def test_flags_that_make_no_conversion_are_one_line(args, fragment, capsys):
    assert convert_model.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and fragment in err


def test_cli_error_in_a_real_process_has_no_traceback(tmp_path):
    # In-process tests cannot see what Python prints for an uncaught exception; this one can.
    path = tmp_path / "damaged.gen.json"
    path.write_text(damage(lambda v: v[2].__setitem__(0, "@@")))
    result = subprocess.run([sys.executable, str(ROOT / "convert_model.py"), "--from_magenta_js",
                             str(path), "--to", str(tmp_path / "run")],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr == f"error: {path}: the output kernel: not valid base64\n"


def test_imported_names_fall_back_to_the_file_name(tmp_path):
    value = good_value()
    value[0]["name"] = "../etc"
    path = tmp_path / "owl.gen.json"
    path.write_text(json.dumps(value))
    magenta_js.import_magenta_js(str(path), str(tmp_path / "run"))
    assert json.loads((tmp_path / "run" / "model_config.json").read_text())["data_set"] == ["owl"]
    hps = load_run(str(tmp_path / "run"), jit_compile=False).hps
    assert dataclasses.asdict(hps)["max_seq_len"] == 250  # the file names none


def test_a_model_file_given_where_a_run_folder_or_weights_go_says_to_import_it(tmp_path, capsys):
    import seq2seqVAE_sample

    path = tmp_path / "owl.gen.json"
    path.write_text(json.dumps(good_value()))
    with pytest.raises(ValueError, match="is a file, not a run folder .*--from_magenta_js"):
        load_run(path)  # a pathlib.Path, as a notebook passes it
    code = seq2seqVAE_sample.main([f"--run_dir={SHEEP}", f"--checkpoint={path}",
                                   f"--output_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "not a Keras weights file (.weights.h5, HDF5); a magenta.js model? import it" in err

