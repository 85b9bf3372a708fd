"""Training speed on aaron_sheep: ours against a plain baseline of our own model, in one run.

Usage:
    python benchmarks/train_speed.py [--json] [--steps 0] [--padded_steps 10]
        [--lever k=v,...] [--reference official=3.26] [--data ../shared/datasets/aaron_sheep.npz]

Prints, for the default hparams (batch 100, enc 256, dec 512, z 128, M 20) and for a plain
baseline of the same model (every batch padded to max_seq_len, autodiff LSTM, fp32, no XLA):
seconds per training step, sketches per second, and the GFLOPS achieved, counted over the
sketches' real lengths, as a fraction of the fp32 and bf16 matmul peaks measured in the
same process. Length-bucketed configurations are timed over every batch of one epoch (their
batches differ in length; the mean length is printed), padded ones over --padded_steps.
`--lever k=v` adds a configuration (hparam overrides of the defaults), so each optimisation
shows as a ratio; `--reference name=s_per_step` prints the speed-up over another
implementation timed on the same machine. FLOPs follow the official model's shapes: z is
part of every decoder step's input, and a training step costs three forward passes.

A benchmark, not a test: run it on an otherwise idle machine.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

BASELINE = ("bucket_batches=0,custom_lstm_gradient=False,fused_lstm_cell=False,lstm_matmul_dtype=float32,"
            "jit_compile=False")


def forward_flops(hps, lengths):
    """Forward-pass FLOPs of the model over sketches of the given real lengths."""
    import numpy as np

    steps = float(np.sum(lengths))
    he, hd, nz = hps.enc_rnn_size, hps.dec_rnn_size, hps.z_size
    encoder = 2 * steps * 2 * (5 + he) * 4 * he
    latent = len(lengths) * (2 * 2 * (2 * he) * nz + 2 * nz * 2 * hd)
    decoder = steps * 2 * (5 + nz + hd) * 4 * hd
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
    """Seconds per step, real-length training FLOPs per step and mean batch length of `hps`.

    Padded batches all cost the same, so `steps` of them are timed. Length-bucketed batches
    differ (the first few of an epoch are not typical), so every batch of one epoch is timed
    when `steps` is 0, else `steps` batches spread evenly over the epoch.
    """
    import keras
    import numpy as np

    from batch_generator import SketchBatches
    from seq2seqVAE import build_model, compile_model

    keras.utils.set_random_seed(hps.seed)
    model = compile_model(build_model(hps), hps)
    batches = SketchBatches(loader, hps.batch_size, augment=True, seed=hps.seed,
                            bucket_batches=hps.bucket_batches, trim=hps.bucket_batches > 0)
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
    return elapsed / len(data), flops / len(data), mean_length


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
    parser.add_argument("--lever", action="append", default=[],
                        help="extra configuration as hparam overrides, e.g. jit_compile=True")
    parser.add_argument("--skip_baseline", action="store_true")
    parser.add_argument("--json", action="store_true", help="print one JSON line at the end")
    args = parser.parse_args(argv)

    import keras
    import tensorflow as tf

    import utils
    from seq2seqVAE import HParams

    train, _, _ = utils.load_strokes(os.path.dirname(args.data),
                                     os.path.basename(args.data)[:-len(".npz")], download=False)
    hps = HParams()
    loader = utils.DataLoader(train, batch_size=hps.batch_size, max_seq_len=hps.max_seq_len)
    loader.normalize()

    peaks = {
        "fp32_square": matmul_peak(tf.float32, 4096, 4096, 4096),
        "bf16_square": matmul_peak(tf.bfloat16, 4096, 4096, 4096),
        "fp32_model": matmul_peak(tf.float32, 100, 512, 2048),
        "bf16_model": matmul_peak(tf.bfloat16, 100, 512, 2048),
    }
    print(f"machine: {os.cpu_count()} cores, TensorFlow {tf.__version__}, Keras {keras.__version__}")
    print("matmul peaks (GFLOPS): " + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items()))

    configs = [("default", "")]
    if not args.skip_baseline:
        configs.append(("baseline", BASELINE))
    configs += [(lever, lever) for lever in args.lever]
    results = {}
    for name, overrides in configs:
        config = HParams.parse(overrides)
        steps = args.steps if config.bucket_batches > 0 else args.padded_steps
        seconds, flops, mean_length = time_training(config, loader, steps)
        results[name] = {
            "s_per_step": seconds,
            "sketches_per_s": config.batch_size / seconds,
            "gflops": flops / seconds / 1e9,
            "real_gflop_per_step": flops / 1e9,
            "mean_batch_length": mean_length,
        }
        r = results[name]
        print(f"{name:>10}: {r['s_per_step']:.3f} s/step, {r['sketches_per_s']:.1f} sketches/s, "
              f"{r['gflops']:.0f} GFLOPS over real lengths = {r['gflops'] / peaks['fp32_model']:.0%} "
              f"of the fp32 peak, {r['gflops'] / peaks['bf16_model']:.0%} of the bf16 peak "
              f"(at the model's shapes); batches {mean_length:.0f} steps long on average "
              f"[{overrides or 'defaults'}]", flush=True)
        for reference in args.reference:
            other, other_seconds = reference.split("=")
            print(f"{'':>12}{float(other_seconds) / seconds:.2f}x {other} "
                  f"({float(other_seconds):.2f} s/step)")
    if "baseline" in results:
        speedup = results["baseline"]["s_per_step"] / results["default"]["s_per_step"]
        print(f"default vs baseline: {speedup:.2f}x")

    sampling = {}
    try:
        from benchmarks.sampling_speed import measure as measure_sampling
    except ImportError:
        measure_sampling = None
    if measure_sampling is not None:
        sampling = measure_sampling()
        print("sampling: " + ", ".join(f"{k} {v:.4g}" for k, v in sampling.items()))

    if args.json:
        summary = {
            "sketches_per_s": results["default"]["sketches_per_s"],
            "s_per_step": results["default"]["s_per_step"],
            "gflops": results["default"]["gflops"],
            "matmul_peaks_gflops": peaks,
            "configs": results,
            "sampling": sampling,
        }
        if "baseline" in results:
            summary["baseline_sketches_per_s"] = results["baseline"]["sketches_per_s"]
            summary["baseline_s_per_step"] = results["baseline"]["s_per_step"]
        summary.update({f"sampling_{k}": v for k, v in sampling.items()})
        print(json.dumps(summary, sort_keys=True))


if __name__ == "__main__":
    main()
