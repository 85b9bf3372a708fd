"""Training speed on aaron_sheep: ours against a plain baseline of our own model, in one run.

Usage:
    python benchmarks/train_speed.py [--json] [--steps 0] [--padded_steps 10]
        [--lever k=v,...] [--cells lstm,layer_norm,hyper] [--skip_baseline] [--no_sampling]
        [--official official_lstm.txt ...] [--before /tmp/before]
        [--reference official=3.26] [--data ../shared/datasets/aaron_sheep.npz] [--data_length]

Prints, for the default hparams (batch 100, enc 256, dec 512, z 128, M 20) and for a plain
baseline of the same model (every batch padded to max_seq_len, autodiff LSTM, fp32, no XLA):
seconds per training step, sketches per second, and the GFLOPS achieved, counted over the
sketches' real lengths, as a fraction of the fp32 and bf16 matmul peaks measured in the
same process. Length-bucketed configurations are timed over every batch of one epoch (their
batches differ in length; the mean length is printed), padded ones over --padded_steps.
`--lever k=v` adds a configuration (hparam overrides of the defaults), so each optimisation
shows as a ratio; `--cells lstm,layer_norm,hyper` adds one configuration per cell type, its
encoder and decoder both of that type (enc_model = dec_model; the lstm one is the defaults).
Every configuration pads to its own max_seq_len: the defaults to 250, as the official code's
placeholder; `--data_length` adds the defaults padded to the longest sketch of the data set's
train, valid and test splits (at most 250), the length the training command pads to.

Comparisons, each printed as a ratio and as a column of the closing table:
`--official FILE` reads the output of `official_reference.py --json` (one file per cell type)
and compares each configuration with the official run of the same enc_model and dec_model;
`--before DIR` times another checkout of this project (e.g. a `git worktree` of an older
commit) with its own `benchmarks/train_speed.py` in a subprocess, in this run, and compares
the defaults with its defaults; `--reference name=s_per_step` compares every configuration
with one number.

FLOPs follow the official model's shapes: z is part of every decoder step's input, and a
training step costs three forward passes. Only matmuls are counted: the layer-norm cell has
the LSTM's; the hyper cell adds its hyper LSTM (hyper_num_units, reading [x, h]) and the
hyper-norm embeddings and projections; normalisations and gates are not counted.

A benchmark, not a test: run it on an otherwise idle machine.
"""

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

BASELINE = ("bucket_batches=0,custom_lstm_gradient=False,fused_lstm_cell=False,lstm_matmul_dtype=float32,"
            "jit_compile=False")


def cell_step_flops(kind, input_dim, units):
    """Matmul FLOPs of one step of one sequence through the cell named `kind`.

    The LSTM and the layer-norm LSTM: x W and h U, (D + H) x 4H. The hyper LSTM adds its
    hyper cell over [x, h] (D + H + Hh) x 4Hh, the embeddings of its output Hh x 12E (8 zw,
    4 zb) and their projections to the main cell's units 12 x E x H.
    """
    from sketch_rnn.cells import make_cell

    flops = 2 * (input_dim + units) * 4 * units
    if kind == "hyper":
        cell = make_cell(kind, units)  # Hh and E: the cell's defaults, as build_model uses them
        hyper, embedding = cell.hyper_num_units, cell.hyper_embedding_size
        flops += 2 * (input_dim + units + hyper) * 4 * hyper
        flops += 2 * hyper * 12 * embedding + 2 * 12 * embedding * units
    return flops


def forward_flops(hps, lengths):
    """Forward-pass FLOPs of the model over sketches of the given real lengths."""
    import numpy as np

    from sketch_rnn.cells import make_cell

    steps = float(np.sum(lengths))
    he, hd, nz = hps.enc_rnn_size, hps.dec_rnn_size, hps.z_size
    encoder = 2 * steps * cell_step_flops(hps.enc_model, 5, he)  # both directions
    decoder_state = sum(make_cell(hps.dec_model, hd).state_sizes)  # (h, c), hyper's too
    latent = len(lengths) * (2 * 2 * (2 * he) * nz + 2 * nz * decoder_state)
    decoder = steps * cell_step_flops(hps.dec_model, 5 + nz, hd)
    head = steps * 2 * hd * (6 * hps.num_mixture + 3)
    return encoder + latent + decoder + head


def matmul_peak(dtype, m, k, n, seconds=1.0):
    """GFLOPS of an (m, k) @ (k, n) matmul in `dtype`, repeated for about `seconds`."""
    import tensorflow as tf

    a = tf.random.normal((m, k), dtype=tf.float32)
    b = tf.random.normal((k, n), dtype=tf.float32)
    a, b = tf.cast(a, dtype), tf.cast(b, dtype)

    @tf.function
    def repeat(a, b, times):
        total = tf.zeros((m, n), dtype)
        for _ in tf.range(times):
            total += tf.matmul(a, b)
        return total

    repeat(a, b, 2).numpy()
    times = 4
    while True:
        start = time.perf_counter()
        repeat(a, b, times).numpy()
        elapsed = time.perf_counter() - start
        if elapsed > seconds or times > 1 << 20:
            return 2 * m * k * n * times / elapsed / 1e9
        times *= 2


def time_training(hps, loader, steps, warmup=3):
    """Seconds per step, real-length training FLOPs per step, mean batch length of `hps`,
    and the engine of each recurrent layer (one line each).

    Padded batches all cost the same, so `steps` of them are timed. Length-bucketed batches
    differ (the first few of an epoch are not typical), so every batch of one epoch is timed
    when `steps` is 0, else `steps` batches spread evenly over the epoch.
    """
    import keras
    import numpy as np

    from batch_generator import SketchBatches
    from seq2seqVAE import build_model, compile_model, describe_engines

    keras.utils.clear_session()  # the previous configuration's graphs and variables
    keras.utils.set_random_seed(hps.seed)
    model = compile_model(build_model(hps), hps)
    batches = SketchBatches(loader, hps.batch_size, augment=True, seed=hps.seed,
                            bucket_batches=hps.bucket_batches, trim=hps.bucket_batches > 0,
                            tail=hps.bucket_tail)
    if hps.bucket_batches > 0:
        count = len(batches) if steps <= 0 else min(steps, len(batches))
        indices = np.linspace(0, len(batches) - 1, count).round().astype(int)
    else:
        indices = np.arange(max(steps, 1)) % len(batches)
    data = [batches[int(i)] for i in indices]
    for i in range(warmup):  # compiles, and retraces once for a second batch length
        x, y = batches[(len(batches) - 1 - i) % len(batches)]
        model.train_on_batch(x, y)
    start = time.perf_counter()
    for x, y in data:
        model.train_on_batch(x, y)
    elapsed = time.perf_counter() - start
    flops = sum(3 * forward_flops(hps, np.sum(x[:, 1:, 4] == 0, axis=1)) for x, _ in data)
    mean_length = float(np.mean([x.shape[1] - 1 for x, _ in data]))
    return elapsed / len(data), flops / len(data), mean_length, describe_engines(model)


def cells_of(hps):
    """The configuration's cells, for people: "enc lstm, dec lstm"."""
    return f"enc {hps.enc_model}, dec {hps.dec_model}"


def read_official(path):
    """The result in the output of `official_reference.py --json` saved to `path`.

    Returns:
        its JSON line as a dict; outputs of versions without --hparams ran the official
        defaults, lstm cells.
    """
    try:
        with open(path) as f:
            lines = [line for line in f if line.lstrip().startswith("{")]
        result = json.loads(lines[-1]) if lines else {}
    except (OSError, json.JSONDecodeError) as error:
        raise SystemExit(f"error: --official {path}: {error}") from None
    if "official_s_per_step" not in result:
        raise SystemExit(f"error: --official {path}: no JSON line of official_reference.py --json in it")
    result.setdefault("enc_model", "lstm")
    result.setdefault("dec_model", "lstm")
    result["file"] = path
    return result


def time_before(folder, args):
    """Times another checkout's defaults with its own benchmarks/train_speed.py, in a subprocess.

    Its sampling benchmark is left out: `benchmarks.sampling_speed` is made unimportable, which
    that script handles by skipping it. Returns its --json summary.
    """
    folder = os.path.abspath(folder)
    script = os.path.join(folder, "benchmarks", "train_speed.py")
    if not os.path.isfile(script):
        raise SystemExit(f"error: --before {folder}: no benchmarks/train_speed.py in it")
    run_script = ("import runpy, sys; sys.modules['benchmarks.sampling_speed'] = None; "
                  "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")
    command = [sys.executable, "-c", run_script, script, "--skip_baseline", "--json",
               "--steps", str(args.steps), "--padded_steps", str(args.padded_steps),
               "--data", os.path.abspath(args.data)]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # its code, not ours
    run = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"error: --before {folder}: its train_speed.py failed:\n{run.stderr[-3000:]}")
    lines = run.stdout.splitlines()
    for line in lines:
        if not line.startswith("{"):
            print(f"{'':>12}before| {line}", flush=True)
    return json.loads([line for line in lines if line.startswith("{")][-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared",
                                                       "datasets", "aaron_sheep.npz"))
    parser.add_argument("--steps", type=int, default=0,
                        help="timed steps of bucketed configurations (0: one whole epoch)")
    parser.add_argument("--padded_steps", type=int, default=10,
                        help="timed steps of padded configurations (bucket_batches=0)")
    parser.add_argument("--reference", action="append", default=[], metavar="NAME=S_PER_STEP",
                        help="another implementation's s/step on this machine, e.g. official=3.26 "
                             "(from official_reference.py), to print each configuration's speed-up over it")
    parser.add_argument("--official", action="append", default=[], metavar="FILE",
                        help="saved output of official_reference.py --json (one per cell type): "
                             "each configuration is compared with the official run of its cells")
    parser.add_argument("--before", metavar="DIR",
                        help="another checkout of this project (e.g. git worktree add /tmp/before "
                             "<commit>): its defaults are timed by its own train_speed.py, in this run")
    parser.add_argument("--lever", action="append", default=[],
                        help="extra configuration as hparam overrides, e.g. jit_compile=True")
    parser.add_argument("--cells", default="",
                        help="comma-separated cell types (lstm, layer_norm, hyper): one configuration "
                             "each, with enc_model and dec_model of that type")
    parser.add_argument("--skip_baseline", action="store_true",
                        help="do not time the plain baseline (padded, autodiff LSTM, fp32)")
    parser.add_argument("--no_sampling", action="store_true",
                        help="do not run the sampling benchmark (benchmarks/sampling_speed.py)")
    parser.add_argument("--data_length", action="store_true",
                        help="add the defaults padded to the data's longest sketch (at most 250), "
                             "as the training command pads, beside the defaults padded to 250")
    parser.add_argument("--json", action="store_true", help="print one JSON line at the end")
    args = parser.parse_args(argv)

    import utils
    from seq2seqVAE import HParams
    from sketch_rnn.hparams import CELL_NAMES

    train, valid, test = utils.load_strokes(os.path.dirname(args.data),
                                            os.path.basename(args.data)[:-len(".npz")], download=False)
    configs = [("default", "")]
    if args.data_length:
        longest = utils.longest_sketch((train, valid, test), HParams().max_seq_len)
        configs.append(("data length", f"max_seq_len={longest}"))
    if not args.skip_baseline:
        configs.append(("baseline", BASELINE))
    for cell in filter(None, (c.strip() for c in args.cells.split(","))):
        if cell not in CELL_NAMES:
            parser.error(f"--cells: unknown cell '{cell}'; expected {', '.join(CELL_NAMES)}")
        configs.append((f"{cell} cells", f"enc_model={cell},dec_model={cell}"))
    configs += [(lever, lever) for lever in args.lever]
    parsed = {}  # name -> (overrides, HParams), every configuration checked before any timing
    for name, overrides in configs:
        try:
            config = HParams.parse(overrides)
        except ValueError as error:
            parser.error(f"configuration '{name}': {error}")
        same = [other for other, (_, seen) in parsed.items() if seen == config]
        if same:
            print(f"'{name}' is the same configuration as '{same[0]}': timed once")
            continue
        parsed[name] = (overrides, config)
    official = [read_official(path) for path in args.official]
    if args.before and not os.path.isdir(args.before):
        parser.error(f"--before {args.before}: no such folder")

    import keras
    import tensorflow as tf

    from benchmarks.machine import cpu_name

    hps = HParams()
    scale_factor = utils.DataLoader(train, max_seq_len=hps.max_seq_len).calculate_normalizing_scale_factor()
    loaders = {}

    def loader_for(config):
        """The training sketches for the configuration's max_seq_len, scaled by one factor."""
        if config.max_seq_len not in loaders:
            loaders[config.max_seq_len] = utils.DataLoader(
                train, batch_size=config.batch_size, max_seq_len=config.max_seq_len,
                scale_factor=scale_factor)
        return loaders[config.max_seq_len]

    peaks = {
        "fp32_square": matmul_peak(tf.float32, 4096, 4096, 4096),
        "bf16_square": matmul_peak(tf.bfloat16, 4096, 4096, 4096),
        "fp32_model": matmul_peak(tf.float32, 100, 512, 2048),
        "bf16_model": matmul_peak(tf.bfloat16, 100, 512, 2048),
    }
    cpu = cpu_name()
    print(f"machine: {cpu}, {os.cpu_count()} cores, TensorFlow {tf.__version__}, "
          f"Keras {keras.__version__}")
    print("matmul peaks (GFLOPS): " + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items()))
    print("GFLOPS count matmuls only, each cell's own (the hyper cell's hyper LSTM and "
          "hyper-norm included), over the sketches' real lengths")

    def compare(name, r):
        """Prints and records the ratios of configuration `name` (result `r`)."""
        for result in official:
            if (result["enc_model"], result["dec_model"]) == (r["enc_model"], r["dec_model"]):
                r["official_s_per_step"] = result["official_s_per_step"]
                r["vs_official"] = result["official_s_per_step"] / r["s_per_step"]
                print(f"{'':>12}{r['vs_official']:.2f}x the official code with the same cells "
                      f"({result['official_s_per_step']:.2f} s/step, {result['file']})")
        if "before" in results and name != "before":
            r["vs_before"] = results["before"]["s_per_step"] / r["s_per_step"]
            print(f"{'':>12}{r['vs_before']:.2f}x the code before ({args.before}, its defaults, "
                  f"{results['before']['s_per_step']:.3f} s/step)")
        for reference in args.reference:
            other, other_seconds = reference.split("=")
            print(f"{'':>12}{float(other_seconds) / r['s_per_step']:.2f}x {other} "
                  f"({float(other_seconds):.2f} s/step)")

    results = {}
    if args.before:  # first, so that every configuration compares with it
        before = time_before(args.before, args)
        results["before"] = {
            "s_per_step": before["s_per_step"],
            "sketches_per_s": before["sketches_per_s"],
            "gflops": before["gflops"],
            "enc_model": "lstm", "dec_model": "lstm",  # its defaults
            "overrides": f"its defaults ({os.path.abspath(args.before)})",
        }
        print(f"{'before':>10}: {before['s_per_step']:.3f} s/step, "
              f"{before['sketches_per_s']:.1f} sketches/s [{args.before}, its defaults]", flush=True)
        compare("before", results["before"])
    for name, (overrides, config) in parsed.items():
        steps = args.steps if config.bucket_batches > 0 else args.padded_steps
        seconds, flops, mean_length, engines = time_training(config, loader_for(config), steps)
        results[name] = {
            "s_per_step": seconds,
            "sketches_per_s": config.batch_size / seconds,
            "gflops": flops / seconds / 1e9,
            "real_gflop_per_step": flops / 1e9,
            "mean_batch_length": mean_length,
            "max_seq_len": config.max_seq_len,
            "enc_model": config.enc_model,
            "dec_model": config.dec_model,
            "overrides": overrides,
            "engines": engines,
        }
        r = results[name]
        print(f"{name:>10}: {r['s_per_step']:.3f} s/step, {r['sketches_per_s']:.1f} sketches/s, "
              f"{r['gflops']:.0f} GFLOPS over real lengths = {r['gflops'] / peaks['fp32_model']:.0%} "
              f"of the fp32 peak, {r['gflops'] / peaks['bf16_model']:.0%} of the bf16 peak "
              f"(at the model's shapes); batches {mean_length:.0f} steps long on average "
              f"[{cells_of(config)}; {overrides or 'defaults'}]", flush=True)
        for line in engines:
            print(f"{'':>12}{line}")
        compare(name, r)
    if "baseline" in results:
        speedup = results["baseline"]["s_per_step"] / results["default"]["s_per_step"]
        print(f"default vs baseline: {speedup:.2f}x")

    print(f"\n{'configuration':<16} {'cells':<30} {'s/step':>7} {'sketches/s':>10} {'GFLOPS':>6} "
          f"{'vs official, same cells':>23} {'vs before':>9}")
    for name, r in results.items():
        vs_official = f"{r['vs_official']:.2f}x" if "vs_official" in r else "-"
        vs_before = f"{r['vs_before']:.2f}x" if "vs_before" in r else "-"
        print(f"{name:<16} {'enc ' + r['enc_model'] + ', dec ' + r['dec_model']:<30} "
              f"{r['s_per_step']:>7.3f} {r['sketches_per_s']:>10.1f} {r['gflops']:>6.0f} "
              f"{vs_official:>23} {vs_before:>9}")

    sampling = {}
    try:
        from benchmarks.sampling_speed import measure as measure_sampling
    except ImportError:
        measure_sampling = None
    if measure_sampling is not None and not args.no_sampling:
        sampling = measure_sampling()
        print("sampling: " + ", ".join(f"{k} {v:.4g}" for k, v in sampling.items()))

    if args.json:
        summary = {
            "cpu": cpu,
            "cores": os.cpu_count(),
            "sketches_per_s": results["default"]["sketches_per_s"],
            "s_per_step": results["default"]["s_per_step"],
            "gflops": results["default"]["gflops"],
            "matmul_peaks_gflops": peaks,
            "configs": results,
            "official": official,
            "sampling": sampling,
        }
        if "baseline" in results:
            summary["baseline_sketches_per_s"] = results["baseline"]["sketches_per_s"]
            summary["baseline_s_per_step"] = results["baseline"]["s_per_step"]
        if "before" in results:
            summary["before_s_per_step"] = results["before"]["s_per_step"]
            summary["default_vs_before"] = results["default"]["vs_before"]
        summary.update({f"sampling_{k}": v for k, v in sampling.items()})
        print(json.dumps(summary, sort_keys=True))


if __name__ == "__main__":
    main()
