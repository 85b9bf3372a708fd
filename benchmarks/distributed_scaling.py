"""Training throughput on 1 and 2 workers (tf.distribute MultiWorkerMirroredStrategy) on this machine.

Usage:
    flock /tmp/heavy.lock python benchmarks/distributed_scaling.py [--steps 8] [--warmup 3]
        [--hparams k=v,...] [--data ../shared/datasets/aaron_sheep.npz] [--json]

Runs, each in fresh processes, with the default hparams (global batch 100) unless --hparams:
- one: one process, no strategy, every core (TensorFlow's default thread pools);
- two_workers: two worker processes on 127.0.0.1 (TF_CONFIG, MultiWorkerMirroredStrategy),
  each training on half of every global batch with 1/2 of the cores' threads
  (intra-op threads = cores / 2), so that both runs have the same CPU budget;
- half_batch: one process, every core, batch_size / 2: the step time a worker of a
  two-machine cluster would take on its own machine.
Each prints the median seconds per step after --warmup steps (tracing, first-batch costs)
over --steps steps, and sketches per second (global batch / step time). The two workers
also time an all-reduce of the model's gradient (every trainable parameter, float32) on
the loopback interface, the communication of one step.

On one machine the two workers share its cores: two_workers / one measures what data
parallelism costs (the all-reduce, the synchronisation, smaller matmuls per replica), not a
speed-up. A speed-up needs more hardware; the closing lines estimate a two-machine cluster
of such machines: the half_batch step, plus the loopback all-reduce (the software's cost),
plus the gradient's bytes at a few network bandwidths.
A benchmark, not a test: run it under flock /tmp/heavy.lock, on an idle machine if you can.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=8, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--hparams", default="", help="overrides of the default hparams")
    parser.add_argument("--data", default=os.path.join(REPO, "..", "shared", "datasets",
                                                       "aaron_sheep.npz"))
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: one run
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------------
# One process of one run
# ---------------------------------------------------------------------------------------


def worker(args, settings):
    """Trains warmup + steps steps; returns step times and (with a strategy) all-reduce times."""
    import tensorflow as tf

    if settings["threads"]:
        tf.config.threading.set_intra_op_parallelism_threads(settings["threads"])
        tf.config.threading.set_inter_op_parallelism_threads(settings["threads"])
    from sketch_rnn.tf_backend import distribute

    strategy = distribute.make_strategy("multi_worker" if os.environ.get("TF_CONFIG") else "none")
    import contextlib
    import dataclasses

    import keras
    import numpy as np

    import utils
    from batch_generator import SketchBatches
    from callbacks import KLWeightAnnealing, LearningRateDecay
    from seq2seqVAE import HParams, build_model, compile_model

    hps = HParams.parse(args.hparams)
    hps = dataclasses.replace(hps, batch_size=settings["batch_size"])
    data = utils.load_npz(args.data)
    hps = dataclasses.replace(hps, max_seq_len=utils.longest_sketch(
        (data["train"], data["valid"], data["test"]), hps.max_seq_len) or hps.max_seq_len)
    loader = utils.DataLoader(data["train"], batch_size=hps.batch_size, max_seq_len=hps.max_seq_len,
                              random_scale_factor=hps.random_scale_factor,
                              augment_stroke_prob=hps.augment_stroke_prob, name="train")
    loader.normalize(loader.calculate_normalizing_scale_factor())
    steps = args.warmup + args.steps
    batches = SketchBatches(loader, hps.batch_size, augment=True, shuffle=True, seed=hps.seed,
                            steps_per_epoch=steps)
    keras.utils.set_random_seed(hps.seed)
    with strategy.scope() if strategy else contextlib.nullcontext():
        model = compile_model(build_model(hps), hps)
    stamps = []

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            float(logs["loss"])  # waits for the step to finish
            stamps.append(time.perf_counter())

    callbacks = [LearningRateDecay(hps), KLWeightAnnealing(hps), Clock()]
    if strategy is None:
        model.fit(batches, epochs=1, callbacks=callbacks, shuffle=False, verbose=0)
    else:
        model.fit(distribute.distributed_batches(strategy, batches, 0, 1), steps_per_epoch=steps,
                  epochs=1, callbacks=callbacks, shuffle=False, verbose=0)
    step_times = list(np.diff(stamps[args.warmup - 1:]))
    parameters = int(sum(np.prod(v.shape) for v in model.trainable_weights))
    result = {"step_times": [float(t) for t in step_times], "parameters": parameters,
              "replicas": 1 if strategy is None else strategy.num_replicas_in_sync}
    if strategy is not None:
        result["allreduce_times"] = time_allreduce(strategy, model)
    return result


def time_allreduce(strategy, model, repeats=20):
    """Seconds of one all-reduce of tensors shaped as the model's gradients (median of runs)."""
    import tensorflow as tf

    shapes = [tuple(v.shape) for v in model.trainable_weights]

    @tf.function
    def step():
        def replica_fn():
            context = tf.distribute.get_replica_context()
            grads = [tf.fill(shape, tf.cast(context.replica_id_in_sync_group, tf.float32))
                     for shape in shapes]
            return context.all_reduce(tf.distribute.ReduceOp.SUM, grads)

        summed = strategy.run(replica_fn)
        return tf.add_n([tf.reduce_sum(t) for t in strategy.experimental_local_results(summed)[0]])

    float(step())  # trace and warm the connections
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        float(step())
        times.append(time.perf_counter() - start)
    return times


# ---------------------------------------------------------------------------------------
# The runs
# ---------------------------------------------------------------------------------------


def launch(args, settings, workers):
    """Runs `workers` processes of one configuration; returns their results."""
    from sketch_rnn.tf_backend.distribute import local_cluster

    command = [sys.executable, os.path.abspath(__file__), f"--steps={args.steps}",
               f"--warmup={args.warmup}", f"--hparams={args.hparams}", f"--data={args.data}",
               f"--worker={json.dumps(settings)}"]
    cluster = local_cluster(workers)
    processes = []
    for index in range(workers):
        env = dict(os.environ)
        env.pop("TF_CONFIG", None)
        if workers > 1:
            env["TF_CONFIG"] = json.dumps({"cluster": cluster,
                                           "task": {"type": "worker", "index": index}})
        processes.append(subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True))
    results = []
    for process in processes:
        out, err = process.communicate(timeout=3600)
        if process.returncode != 0:
            raise SystemExit(f"a worker failed ({process.returncode}):\n{err[-3000:]}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def summary(results, global_batch):
    step = statistics.median(t for r in results for t in r["step_times"])
    return {"seconds_per_step": step, "sketches_per_second": global_batch / step,
            "global_batch": global_batch, "replicas": results[0]["replicas"]}


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args, json.loads(args.worker))))
        return 0
    from sketch_rnn.hparams import HParams

    batch = HParams.parse(args.hparams).batch_size
    if batch % 2:
        raise SystemExit(f"--hparams: batch_size={batch} must be even (two workers)")
    cores = os.cpu_count() or 2
    runs = {}
    one = launch(args, {"batch_size": batch, "threads": 0}, 1)
    runs["one"] = summary(one, batch)
    two = launch(args, {"batch_size": batch, "threads": max(1, cores // 2)}, 2)
    runs["two_workers"] = summary(two, batch)
    half = launch(args, {"batch_size": batch // 2, "threads": 0}, 1)
    runs["half_batch"] = summary(half, batch // 2)
    parameters = one[0]["parameters"]
    gradient_bytes = 4 * parameters
    allreduce = statistics.median(t for r in two for t in r["allreduce_times"])
    # A ring all-reduce over N workers sends and receives 2 (N - 1) / N of the gradient per
    # worker: the whole gradient for N = 2. Keras all-reduces after the backward pass (no
    # overlap); the loopback all-reduce stands for the software's own cost per step.
    estimates = {}
    for name, gbit in (("1 GbE", 1), ("10 GbE", 10), ("25 GbE", 25), ("100 Gb/s", 100)):
        wire = allreduce + gradient_bytes * 8 / (gbit * 1e9)
        step = runs["half_batch"]["seconds_per_step"] + wire
        estimates[name] = {"allreduce_seconds": wire, "sketches_per_second": batch / step,
                           "speedup": (batch / step) / runs["one"]["sketches_per_second"]}
    report = {"cores": cores, "load_average": os.getloadavg()[0], "parameters": parameters,
              "gradient_bytes": gradient_bytes, "loopback_allreduce_seconds": allreduce,
              "runs": runs, "two_machine_estimates": estimates,
              "steps": args.steps, "warmup": args.warmup, "hparams": args.hparams}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{cores} cores, load average {report['load_average']:.1f}; {parameters:,} trainable "
          f"parameters = {gradient_bytes / 1e6:.1f} MB of float32 gradient per step")
    print(f"{'run':12} {'replicas':>8} {'batch':>6} {'s/step':>8} {'sketches/s':>11}")
    for name, run in runs.items():
        print(f"{name:12} {run['replicas']:>8} {run['global_batch']:>6} "
              f"{run['seconds_per_step']:>8.3f} {run['sketches_per_second']:>11.1f}")
    ratio = runs["two_workers"]["sketches_per_second"] / runs["one"]["sketches_per_second"]
    print(f"two workers / one: {ratio:.2f}x (same cores); all-reduce of the gradient on loopback: "
          f"{allreduce * 1000:.1f} ms")
    print("two machines, estimated as half_batch step + loopback all-reduce + gradient / bandwidth:")
    for name, e in estimates.items():
        print(f"  {name:9} all-reduce {e['allreduce_seconds'] * 1000:7.1f} ms  "
              f"{e['sketches_per_second']:6.1f} sketches/s  {e['speedup']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
