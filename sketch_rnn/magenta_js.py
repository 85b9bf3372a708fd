"""The magenta.js model format: export a run's decoder to `@magenta/sketch`, import its models.

The format is the one `@magenta/sketch` 0.2.0 loads (`SketchRNN.instantiateFromJSON`, read
from the npm package): a JSON array `[info, dims, blobs]`.

- `info`, an object: the library reads `scale_factor` (input offsets are divided by
  `scale_factor / pixelFactor`, outputs multiplied by it; `pixelFactor` is 2 unless set).
  The published models also carry `name`, `mode` (2 = "gen", a decoder-only model),
  `version` and `max_seq_len`; the library ignores every other key.
- `dims`: the shapes of the five tensors in `blobs`.
- `blobs`: five base64 strings of little-endian int16 values q; the weight is
  `10 * q / 32767`, so weights are rounded to a grid of step 10 / 32767 (about 3.05e-4) and
  must lie within +-10. In order:
    0. output kernel (H, 123) and 1. output bias (123): 3 pen logits, then 20 each of
       mixture logits, mu_x, mu_y, log sigma_x, log sigma_y and pre-tanh correlations:
       our `mixture_head`'s layout (the library hard-codes 20 Gaussians);
    2. LSTM input kernel (5, 4H), 3. recurrent kernel (H, 4H), 4. bias (4H): the gate
       blocks in TensorFlow 1's BasicLSTMCell order i, j, f, o, where ours are i, f, g, o
       (j is our g); `tf.basicLSTMCell` adds a forget bias of 1.0 to f at every step, which
       ours holds in the bias itself.

The library runs one LSTM from `zeroState()` (h = c = 0) on stroke-5 points, the first
being `zeroInput()`, our start token (0, 0, 1, 0, 0). It has no latent vector: a
conditional model is exported for one z, whose share of the input kernel is folded into
the bias. Its initial state tanh(W z + b) (eq. 4) has no place in the format; the export
puts it in `info.initial_state` (`{"h": [...], "c": [...]}`), which the library ignores and
`examples/web/` passes to `update()`. Code that starts from `zeroState()` draws with the same
weights from another starting state.

Import reads such a file into a decoder-only `lstm` run folder with the dequantised weights.
"""

import base64
import binascii
import dataclasses
import json
import math
import os

import numpy as np

from sketch_rnn.datasets import check_data_set_names
from sketch_rnn.files import (
    check_regular_file,
    check_scale_factor,
    first_line,
    is_within,
    refuse_link,
    write_atomically,
)
from sketch_rnn.hparams import HParams
from sketch_rnn.official_weights import swap_middle_gates
from sketch_rnn.run_folder import write_run_folder

MAX_WEIGHT = 10.0  # the library's `maxWeight`: q = 32767 stands for 10.0
QUANTISATION_STEP = MAX_WEIGHT / 32767  # the grid weights are rounded to
FORGET_BIAS = 1.0  # the library's `forgetBias`, added to the f gate at every step
NUM_MIXTURE = 20  # the library's `NMIXTURE`
POINT_SIZE = 5  # stroke-5 input
OUTPUT_SIZE = 6 * NUM_MIXTURE + 3
MODE_GEN = 2  # info.mode of a decoder-only ("gen") model
FORMAT_VERSION = 6  # info.version of the published models of this layout
MAX_FILE_BYTES = 1 << 30  # a model of dec_rnn_size 8192 (our limit) is about 0.7 GB
BLOB_NAMES = ("output kernel", "output bias", "LSTM input kernel", "LSTM recurrent kernel",
              "LSTM bias")


# ---- quantisation ----

def quantise(values, name):
    """Float weights -> the format's base64 string of little-endian int16 (round to nearest).

    Raises:
        ValueError: naming the tensor if a weight lies outside +-10 or is not finite.
    """
    values = np.asarray(values, np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name}: holds a value that is not finite; magenta.js cannot store it")
    largest = float(np.max(np.abs(values))) if values.size else 0.0
    if largest > MAX_WEIGHT:
        raise ValueError(f"{name}: holds a weight of magnitude {largest:.4g}, beyond the "
                         f"+-{MAX_WEIGHT:g} that the magenta.js format can store")
    q = np.rint(values.reshape(-1) * (32767 / MAX_WEIGHT)).astype("<i2")
    return base64.b64encode(q.tobytes()).decode("ascii")


def dequantise(text, count, name):
    """The format's base64 int16 string -> (count,) float32, computed as the library does
    (`10 * q / 32767` in double precision, stored as float32)."""
    if not isinstance(text, str):
        raise ValueError(f"{name}: expected a base64 string, got {type(text).__name__}")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{name}: not valid base64") from None
    if len(raw) != 2 * count:
        raise ValueError(f"{name}: holds {len(raw) // 2} int16 values, its dims say {count}")
    q = np.frombuffer(raw, "<i2").astype(np.float64)
    return (MAX_WEIGHT * q / 32767).astype(np.float32)


# ---- the decoder's weights, in our layout and in the format's ----

def decoder_weights(model, z=None):
    """The decoder LSTM and mixture head of a model as NumPy arrays in our layout.

    Args:
        model: a SketchRNN (`build_model`) with an `lstm` decoder.
        z: (z_size,) for a conditional model: its share of the input kernel is folded into
            the bias; None for a decoder-only model.

    Returns:
        dict of float64 arrays: `kernel` (5, 4H), `recurrent_kernel` (H, 4H), `bias` (4H)
        with gates i, f, g, o; `output_kernel` (H, 6M + 3), `output_bias` (6M + 3).
    """
    cell = model.get_layer("decoder_lstm").cell
    head = model.get_layer("mixture_head")
    kernel = np.asarray(cell.kernel.numpy(), np.float64)
    bias = np.asarray(cell.bias.numpy(), np.float64)
    if z is not None:
        bias = bias + np.asarray(z, np.float64) @ kernel[POINT_SIZE:]
    return {"kernel": kernel[:POINT_SIZE],
            "recurrent_kernel": np.asarray(cell.recurrent_kernel.numpy(), np.float64),
            "bias": bias,
            "output_kernel": np.asarray(head.kernel.numpy(), np.float64),
            "output_bias": np.asarray(head.bias.numpy(), np.float64)}


def to_magenta_js(weights, info):
    """Weights in our layout (`decoder_weights`) and an info dict -> the format's JSON value."""
    forget_bias = np.zeros_like(weights["bias"])
    units = len(forget_bias) // 4
    forget_bias[2 * units:3 * units] = FORGET_BIAS  # the f block in the i, j, f, o order
    tensors = [weights["output_kernel"], weights["output_bias"],
               swap_middle_gates(weights["kernel"]), swap_middle_gates(weights["recurrent_kernel"]),
               swap_middle_gates(weights["bias"]) - forget_bias]
    blobs = [quantise(t, f"the {name}") for t, name in zip(tensors, BLOB_NAMES)]
    return [info, [list(t.shape) for t in tensors], blobs]


def from_magenta_js(value, source):
    """The format's JSON value -> (weights in our layout as float32, info dict).

    Raises:
        ValueError: naming `source` and the entry that does not fit the format.
    """
    def wrong(reason):
        return ValueError(f"{source}: not a magenta.js sketch-rnn model ({reason})")

    if not (isinstance(value, list) and len(value) == 3):
        raise wrong("expected a JSON array [info, dims, weights]")
    info, dims, blobs = value
    if not isinstance(info, dict):
        raise wrong("its first entry, info, must be an object")
    if not (isinstance(dims, list) and isinstance(blobs, list) and len(dims) == len(blobs) == 5):
        def count(entry, what):
            return f"{len(entry)} {what}" if isinstance(entry, list) else f"no list of {what}"
        raise wrong("expected the dims and base64 weights of 5 tensors (a decoder-only 'gen' "
                    f"model), got {count(dims, 'dims')} and {count(blobs, 'weights')}")
    for d, name in zip(dims, BLOB_NAMES):
        if not (isinstance(d, list) and d and all(isinstance(n, int) and not isinstance(n, bool)
                                                  and 0 < n <= 1 << 20 for n in d)):
            raise wrong(f"the dims of the {name} must be a list of positive integers, got {d!r:.80}")
    units = dims[3][0]
    expected = [[units, OUTPUT_SIZE], [OUTPUT_SIZE], [POINT_SIZE, 4 * units], [units, 4 * units],
                [4 * units]]
    for d, shape, name in zip(dims, expected, BLOB_NAMES):
        if d != shape:
            raise wrong(f"the {name} has dims {d}, expected {shape} for an LSTM of {units} units "
                        f"and {NUM_MIXTURE} Gaussians")
    arrays = [dequantise(text, math.prod(d), f"{source}: the {name}").reshape(d)
              for text, d, name in zip(blobs, dims, BLOB_NAMES)]
    output_kernel, output_bias, kernel, recurrent_kernel, bias = arrays
    bias = bias.copy()
    bias[2 * units:3 * units] += FORGET_BIAS  # into our bias, which the LSTM uses as it is
    weights = {"kernel": swap_middle_gates(kernel), "recurrent_kernel": swap_middle_gates(recurrent_kernel),
               "bias": swap_middle_gates(bias), "output_kernel": output_kernel,
               "output_bias": output_bias}
    return weights, info


def set_decoder_weights(model, weights):
    """Loads `decoder_weights`-layout arrays into a decoder-only model's LSTM and head."""
    cell = model.get_layer("decoder_lstm").cell
    head = model.get_layer("mixture_head")
    cell.kernel.assign(np.asarray(weights["kernel"], np.float32))
    cell.recurrent_kernel.assign(np.asarray(weights["recurrent_kernel"], np.float32))
    cell.bias.assign(np.asarray(weights["bias"], np.float32))
    head.kernel.assign(np.asarray(weights["output_kernel"], np.float32))
    head.bias.assign(np.asarray(weights["output_bias"], np.float32))


# ---- run folders ----

def load_float32_run(run_dir, checkpoint=None):
    """`load_run` with float32 recurrent matmuls, so that z and the initial state of an
    export do not depend on the machine's bfloat16 support."""
    from sketch_rnn.drawing import SketchRNNDrawer, load_run
    from sketch_rnn.model import build_model

    drawer = load_run(run_dir, checkpoint=checkpoint, jit_compile=False)
    if drawer.hps.lstm_matmul_dtype == "float32":
        return drawer
    model = build_model(dataclasses.replace(drawer.hps, lstm_matmul_dtype="float32"))
    model.set_weights(drawer.model.get_weights())
    return SketchRNNDrawer(model, scale_factor=drawer.scale_factor, data_sets=drawer.data_sets,
                           jit_compile=False)


# ---- export and import ----

def choose_z(drawer, z_from=None, z_seed=None, data_dir="datasets"):
    """The latent vector a conditional model is exported for, and a description of it.

    Args:
        drawer: the run's `SketchRNNDrawer`.
        z_from: index of a test sketch of the run's data set: z is its posterior mean.
        z_seed: seed of a draw z ~ N(0, I) (`np.random.default_rng(z_seed)`).
        data_dir: folder of the run's .npz data sets, for `z_from`.

    Returns:
        ((z_size,) float32, str).
    """
    hps = drawer.hps
    if not hps.conditional:
        if z_from is not None or z_seed is not None:
            raise ValueError("this model is decoder-only (conditional=False): it has no z to choose; "
                             "drop --z_from/--z_seed")
        return None, None
    if (z_from is None) == (z_seed is None):
        raise ValueError("this model is conditional: it is exported for one z; give either "
                         "--z_from (a test sketch's index) or --z_seed (z ~ N(0, I))")
    if z_seed is not None:
        z = np.random.default_rng(z_seed).standard_normal(hps.z_size).astype(np.float32)
        return z, f"z ~ N(0, I) drawn with numpy seed {z_seed}"
    test = drawer.load_sketches(data_dir, "test")
    if not 0 <= z_from < len(test):
        raise ValueError(f"--z_from: the run's test split has {len(test)} sketches "
                         f"(0..{len(test) - 1}), got {z_from}")
    z = drawer.encode([test[z_from]])[0]
    return z, f"z = the posterior mean of test sketch {z_from} of {','.join(drawer.data_sets)}"


def export_magenta_js(run_dir, out_path, z_from=None, z_seed=None, data_dir="datasets",
                      checkpoint=None, force=False, flag="--to_magenta_js"):
    """Writes a run's decoder as a magenta.js model file (see the module docstring).

    Args:
        run_dir: one of our run folders (`load_run`).
        out_path: the .json file to write (atomically).
        z_from, z_seed, data_dir: the z of a conditional model (`choose_z`).
        checkpoint: the weights file; the run's best by default.
        force: replace an existing out_path (never one inside run_dir, nor the checkpoint).
        flag: the command's flag for out_path, which the errors name.

    Returns:
        dict: `z` (None for a decoder-only model), `initial_state` ({"h", "c"} or None),
        `max_quantisation_error` (the largest |weight - stored weight|).

    Raises:
        ValueError: one line, for an out_path that exists (without force) or would replace
            what the export reads, a decoder the format cannot hold (not `lstm`, not 20
            Gaussians, a weight beyond +-10), a missing z choice, or a bad index.
    """
    from sketch_rnn.drawing import initial_state_model

    folder = os.path.dirname(os.path.abspath(out_path))
    if not os.path.isdir(folder) or os.path.isdir(out_path):
        raise ValueError(f"{out_path}: expected a file name in an existing folder")
    refuse_link(out_path)
    if is_within(out_path, run_dir) or (checkpoint and os.path.exists(out_path) and os.path.exists(
            checkpoint) and os.path.samefile(out_path, checkpoint)):
        raise ValueError(f"{flag}: {out_path} is in the run folder or is the --checkpoint the "
                         "export reads; write it elsewhere")
    if os.path.isfile(out_path) and not force:
        raise ValueError(f"{flag}: {out_path} exists; pass --force to replace it")
    drawer = load_float32_run(run_dir, checkpoint)
    hps = drawer.hps
    if hps.dec_model != "lstm":
        raise ValueError(f"{run_dir}: its decoder cell is '{hps.dec_model}'; the magenta.js format "
                         "holds an 'lstm' decoder only")
    if hps.num_mixture != NUM_MIXTURE:
        raise ValueError(f"{run_dir}: num_mixture is {hps.num_mixture}; @magenta/sketch draws with "
                         f"{NUM_MIXTURE} Gaussians")
    z, z_text = choose_z(drawer, z_from, z_seed, data_dir)
    info = {"name": ",".join(drawer.data_sets), "mode": MODE_GEN, "version": FORMAT_VERSION,
            "scale_factor": drawer.scale_factor, "max_seq_len": hps.max_seq_len,
            "source": f"sketch-rnn-keras run {os.path.basename(os.path.normpath(run_dir))}"}
    initial_state = None
    if z is not None:
        h, c = (np.asarray(s)[0] for s in initial_state_model(drawer.model).predict(z[None], verbose=0))
        initial_state = {"h": [float(v) for v in h], "c": [float(v) for v in c]}
        info.update({"z": [float(v) for v in z], "z_source": z_text, "initial_state": initial_state})
    weights = decoder_weights(drawer.model, z)
    value = to_magenta_js(weights, info)
    stored, _ = from_magenta_js(value, out_path)
    error = max(float(np.max(np.abs(stored[k] - weights[k]))) for k in weights)
    write_atomically(out_path, json.dumps(value, separators=(",", ":")))
    return {"z": z, "initial_state": initial_state, "max_quantisation_error": error}


def read_magenta_js(path):
    """Reads a magenta.js model file: returns (weights in our layout, info). One-line errors."""
    check_regular_file(path)
    if os.path.getsize(path) > MAX_FILE_BYTES:
        raise ValueError(f"{path}: larger than {MAX_FILE_BYTES} bytes; not a magenta.js model")
    with open(path, "rb") as f:
        raw = f.read()
    try:
        value = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text; not a magenta.js model") from None
    except (json.JSONDecodeError, RecursionError) as err:
        raise ValueError(f"{path}: not a magenta.js model (not JSON: {first_line(err)})") from None
    return from_magenta_js(value, path)


def _data_set_names(info, path):
    """The imported run's data set names: info.name if it is a list of bare names, else the
    file's name without `.gen.json`, else "magenta_js"."""
    stem = os.path.basename(path).removesuffix(".json").removesuffix(".gen")
    candidates = [info.get("name"), stem]
    for candidate in candidates:
        if isinstance(candidate, str):
            names = candidate.split(",")
            try:
                check_data_set_names(names)
                return names
            except ValueError:
                continue
    return ["magenta_js"]


def import_magenta_js(json_path, run_dir, force=False):
    """Turns a magenta.js model file into a decoder-only `lstm` run folder.

    The weights are the file's, dequantised; `max_seq_len` and the scale factor come from its
    info (max_seq_len 250 when it has none). `info.initial_state` (written by our export of a
    conditional model) cannot be kept: a decoder-only run starts from zeros, as
    `@magenta/sketch`'s `zeroState()`.

    Returns:
        (the HParams of the new run, the file's info).
    """
    weights, info = read_magenta_js(json_path)  # before Keras is imported: bad files fail fast
    from sketch_rnn.model import build_model

    scale_factor = check_scale_factor(info.get("scale_factor"), f"{json_path}: info")
    max_seq_len = info.get("max_seq_len", 250)
    if isinstance(max_seq_len, float) and max_seq_len.is_integer():
        max_seq_len = int(max_seq_len)  # JavaScript has one number type: 250.0 is 250
    units = weights["recurrent_kernel"].shape[0]
    try:
        hps = HParams.from_dict({"conditional": False, "dec_model": "lstm", "dec_rnn_size": units,
                                 "num_mixture": NUM_MIXTURE, "max_seq_len": max_seq_len,
                                 "lstm_matmul_dtype": "float32"}, source=f"{json_path}: info")
    except ValueError as err:
        raise ValueError(first_line(err)) from None
    model = build_model(hps)
    set_decoder_weights(model, weights)
    write_run_folder(run_dir, model, scale_factor, _data_set_names(info, json_path),
                     source=f"imported from the magenta.js model {os.path.basename(json_path)}",
                     force=force, reads=[json_path])
    return hps, info
