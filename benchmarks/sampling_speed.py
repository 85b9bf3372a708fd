"""How fast the drawer samples, against a Python loop of predict() calls.

Usage:
    python benchmarks/sampling_speed.py [--json] [--repeats=5] [--no_loop]

Measures, with default hparams (dec_rnn_size 512, num_mixture 20, max_seq_len 250; the
recurrent matmul in bfloat16 where lstm_matmul_dtype=auto picks it) and random weights whose
end-of-sketch logit is pushed down so that every sketch runs all 250 steps:

  (a) 100 sketches drawn in one `SketchRNNDrawer.sample` call;
  (b) one sketch drawn the same way;
  (c) one sketch drawn by a Python loop that calls the decoder step sub-model's
      `predict()` once per step and samples in NumPy, as earlier Keras ports' notebooks did.

(a) and (b) are timed with and without XLA (`jit_compile`); the drawer's default is the
faster. Times are medians over --repeats calls after a first call that compiles (its time
is reported too). Run it on an idle machine: the script warns when a training run is going.
"""

import argparse
import inspect
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def build_drawer(jit_compile):
    """A default-size model with random weights that never ends a sketch early."""
    import keras

    from seq2seqVAE import HParams, SketchRNNDrawer, build_model

    keras.utils.set_random_seed(0)
    model = build_model(HParams())
    head = model.get_layer("mixture_head")
    bias = keras.ops.convert_to_numpy(head.bias)
    bias[2] = -1e4  # p3, the end of the sketch: never drawn, so all max_seq_len steps run
    head.bias.assign(bias)
    return SketchRNNDrawer(model, jit_compile=jit_compile)


def timed(function, repeats):
    """(first call's seconds, median of `repeats` further calls)."""
    start = time.perf_counter()
    function()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return first, statistics.median(times)


def predict_loop(drawer, seed=0):
    """One sketch, one decoder_step.predict() per step, choices made in NumPy."""
    hps = drawer.hps
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((1, hps.z_size)).astype(np.float32)
    h, c = drawer.initial_state.predict(z, verbose=0)
    point = np.array([[[0, 0, 1, 0, 0]]], np.float32)
    m = hps.num_mixture
    for _ in range(hps.max_seq_len):
        params, h, c = drawer.decoder_step.predict([point, z, h, c], verbose=0)
        params = params[0, 0].astype(np.float64)
        pi, mu_x, mu_y, log_sx, log_sy, rho = params[3:].reshape(6, m)
        pi = np.exp(pi - pi.max())
        k = rng.choice(m, p=pi / pi.sum())
        pen = np.exp(params[:3] - params[:3].max())
        pen_state = rng.choice(3, p=pen / pen.sum())
        sx, sy, r = np.exp(log_sx[k]), np.exp(log_sy[k]), np.tanh(rho[k])
        cov = [[sx * sx, r * sx * sy], [r * sx * sy, sy * sy]]
        dx, dy = rng.multivariate_normal([mu_x[k], mu_y[k]], cov)
        point = np.zeros((1, 1, 5), np.float32)
        point[0, 0, :2] = dx, dy
        point[0, 0, 2 + pen_state] = 1
        if pen_state == 2:
            break


def machine_state():
    """CPU count, load average, and any training run going on this machine."""
    try:
        ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
        training = [line for line in ps.splitlines() if "seq2seqVAE_train" in line]
    except (OSError, subprocess.CalledProcessError):
        training = []
    return {"cpus": os.cpu_count(), "load_average_1min": os.getloadavg()[0],
            "training_runs_going": len(training)}


def measure(repeats=5, loop=True):
    """Runs the measurements (see the module docstring).

    Returns:
        a flat dict of numbers: `sample_100_s` (a), `sample_1_s` (b) with the drawer's
        default setting, both also per setting (`_xla`, `_no_xla`) with their first,
        compiling call (`first_call_*`), `predict_loop_1_s` (c) and
        `speedup_vs_predict_loop` = (c) / (b) unless loop is False, and the machine's state
        (`cpus`, `load_average_1min`, `training_runs_going`), and `recurrent_matmul_bf16`
        (1 if the default model's recurrent matmul runs in bfloat16 here, else 0).
    """
    from seq2seqVAE import HParams, SketchRNNDrawer, resolved_matmul_dtype

    results = machine_state()
    results["recurrent_matmul_bf16"] = int(resolved_matmul_dtype(HParams()) == "bfloat16")
    if results["training_runs_going"]:
        print("warning: a training run is going on this machine; times will be slow",
              file=sys.stderr)
    for xla in (True, False):
        drawer = build_drawer(jit_compile=xla)
        tag = "xla" if xla else "no_xla"
        first, batch = timed(lambda d=drawer: d.sample(100, temperature=0.5, seed=1), repeats)
        first_one, one = timed(lambda d=drawer: d.sample(1, temperature=0.5, seed=2), 4 * repeats)
        if any(len(s) != 250 for s in drawer.sample(3, seed=0)):
            raise RuntimeError("a sketch ended before 250 steps: the times would not compare")
        results[f"sample_100_s_{tag}"] = batch
        results[f"sample_1_s_{tag}"] = one
        results[f"first_call_100_s_{tag}"] = first
        results[f"first_call_1_s_{tag}"] = first_one
    default_xla = inspect.signature(SketchRNNDrawer).parameters["jit_compile"].default
    default = "xla" if default_xla else "no_xla"
    results["sample_100_s"] = results[f"sample_100_s_{default}"]
    results["sample_1_s"] = results[f"sample_1_s_{default}"]
    if loop:
        drawer = build_drawer(jit_compile=True)
        start = time.perf_counter()
        predict_loop(drawer)
        results["predict_loop_1_s"] = time.perf_counter() - start
        results["speedup_vs_predict_loop"] = results["predict_loop_1_s"] / results["sample_1_s"]
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON line instead of a table")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls after the first")
    parser.add_argument("--no_loop", action="store_true", help="skip (c), the slow predict() loop")
    args = parser.parse_args(argv)
    results = measure(args.repeats, loop=not args.no_loop)
    if args.json:
        print(json.dumps(results, sort_keys=True))
        return
    print(f"machine: {results['cpus']} CPUs, load average {results['load_average_1min']:.2f} "
          f"before the run, {results['training_runs_going']} training runs going")
    dtype = "bfloat16" if results["recurrent_matmul_bf16"] else "float32"
    print(f"250 steps per sketch, dec_rnn_size 512, num_mixture 20, recurrent matmul in {dtype}; "
          "median seconds")
    print(f"{'':34s} {'XLA':>8s} {'no XLA':>8s}")
    for label, key in (("(a) 100 sketches, one call", "sample_100_s"), ("(b) 1 sketch", "sample_1_s")):
        print(f"{label:34s} {results[key + '_xla']:8.3f} {results[key + '_no_xla']:8.3f}")
    for label, key in (("    first call (compiles), 100", "first_call_100_s"),
                       ("    first call (compiles), 1", "first_call_1_s")):
        print(f"{label:34s} {results[key + '_xla']:8.3f} {results[key + '_no_xla']:8.3f}")
    if "predict_loop_1_s" in results:
        print(f"{'(c) 1 sketch, predict() per step':34s} {results['predict_loop_1_s']:8.3f}")
        print(f"(c) / (b): {results['speedup_vs_predict_loop']:.0f}x")


if __name__ == "__main__":
    main()
