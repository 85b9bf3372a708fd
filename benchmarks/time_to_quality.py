"""Time to a good model: validation nats per stroke point against training time, ours and the official code.

Usage:
    python benchmarks/time_to_quality.py --data ../shared/datasets/aaron_sheep.npz \\
        --official_python /tmp/official/bin/python \\
        --wheel /tmp/official/wheel/magenta-2.1.4-py3-none-any.whl \\
        [--minutes 20] [--eval_every_minutes 2] [--hparams "k=v,..."] [--json] \\
        [--plot curves.png] [--skip_official] [--official_hparams "k=v,..."]

Trains our model for a wall-clock budget (`--minutes` of training time) on the data set, the
way the training command does (its data preparation, batches, schedules and `model.fit`),
and evaluates the validation split before the first step, every `--eval_every_minutes` of
training time and at the end of the budget. The clock runs from building the model
(graph tracing and the first step's compilation count) and stops while the validation split
is evaluated: evaluation time is reported, not counted. The training command's per-epoch
extras (validation, checkpoints, TensorBoard pictures) are left out, as the official loop's
summaries, evaluations and checkpoints are.

The figure is nats per stroke point: the validation reconstruction loss (offsets and pen
state, masked after each sketch's end as the official evaluation model masks it) summed over
every real point and divided by their number. It does not depend on padding or max_seq_len,
so the two implementations compare directly although they pad differently (ours to the
data's longest sketch of at most max_seq_len=250 points, the official code to the data's
longest). Ours comes from `callbacks.evaluate` (the compiled, dropout-free pass of training's
validation, z noise from a fixed seed); the official one from its evaluation model
(is_training=0, no dropout, sharing the training model's weights), r_cost converted by
`official_nats_per_point`, z noise fed from a fixed seed too.

Then, in the same invocation and after ours (one at a time: the machine has 2 cores), the
official training loop runs unchanged from Magenta's wheel in its own environment
(`official_time_to_quality.py`, see `official_reference.py` for the environment) on the same
data and budget. Printed: both curves, the speed-up (the official run's training time at its
last evaluation divided by the time ours took to reach that evaluation's value, interpolated
linearly between our evaluations at its first crossing) and the difference at equal time
(the official value minus ours at the end of the shorter curve: positive means ours is
lower). Only ratios taken in one run count: the CPU (named in the output) and its load
differ between runs.

`--hparams` overrides our defaults; the overrides that the official code also has (model
size, cells, schedules, dropout, augmentation, batch size...) are given to it too, so the two
train the same model. `--official_hparams` replaces what the official code is given: "" runs
it with its defaults, to measure a lever of ours against the official defaults. max_seq_len is
ours only (the official code always pads to the data's longest sketch), as are our speed
settings (bucket_batches, lstm_matmul_dtype...). The seed (hparam `seed`) seeds both: our data
order, augmentation, dropout and z noise; the official NumPy and graph seeds.

This module's top level imports the standard library only: `official_time_to_quality.py`
imports its clock and the conversion in the official environment.
"""

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# The official get_default_hparams() names that mean the same in ours, given to both sides.
# Not passed: data_set, num_steps and is_training (the driver sets them), save_every (ours
# is a checkpoint interval, the official one an evaluation interval) and max_seq_len (the
# official load_dataset overwrites it with the data's longest sketch).
OFFICIAL_SHARED_HPARAMS = (
    "dec_rnn_size", "dec_model", "enc_rnn_size", "enc_model", "z_size", "kl_weight",
    "kl_weight_start", "kl_tolerance", "batch_size", "grad_clip", "num_mixture", "learning_rate",
    "decay_rate", "kl_decay_rate", "min_learning_rate", "use_recurrent_dropout",
    "recurrent_dropout_prob", "use_input_dropout", "input_dropout_prob", "use_output_dropout",
    "output_dropout_prob", "random_scale_factor", "augment_stroke_prob", "conditional",
)
RECORD = "@ttq "  # prefix of the official driver's machine-readable lines on its stdout


# ---------------------------------------------------------------------------------------
# Curves: time to reach a value, value at a time
# ---------------------------------------------------------------------------------------


def points_of(curve):
    """[(minutes, nats_per_point), ...] of a curve given as records or pairs."""
    return [(float(p["minutes"]), float(p["nats_per_point"])) if isinstance(p, dict) else
            (float(p[0]), float(p[1])) for p in curve]


def time_to_reach(curve, target):
    """Training minutes at which `curve` first gets down to `target`, or None if it never does.

    Between two evaluations the curve is taken as linear: at its first crossing, between the
    last point above `target` and the first at or below it, the time is interpolated.

    Args:
        curve: (minutes, value) points or records with those keys, in time order.
        target: the value to reach.
    """
    points = points_of(curve)
    for i, (minutes, value) in enumerate(points):
        if value <= target:
            if i == 0:
                return minutes
            before_minutes, before_value = points[i - 1]  # before_value > target
            fraction = (before_value - target) / (before_value - value)
            return before_minutes + fraction * (minutes - before_minutes)
    return None


def value_at(curve, minutes):
    """The curve's value at `minutes`, linear between evaluations; None outside its span."""
    points = points_of(curve)
    if not points or not points[0][0] <= minutes <= points[-1][0]:
        return None
    for (t0, v0), (t1, v1) in zip(points, points[1:]):
        if t0 <= minutes <= t1:
            return v0 if t1 == t0 else v0 + (v1 - v0) * (minutes - t0) / (t1 - t0)
    return points[-1][1]  # a single point


def compare_curves(ours, official):
    """The speed-up and the difference at equal time of two curves.

    Returns:
        dict: `official_minutes` and `official_nats_per_point` (the official curve's last
        point), `ours_minutes_to_official_final` (time_to_reach along ours, None if never),
        `speedup` (official_minutes / that time; None if ours never got there, or if ours
        was there from its first evaluation, the initial weights: then the official run has
        not learned anything that a speed-up could measure),
        `equal_time_minutes` (the end of the shorter curve) and `difference_at_equal_time`
        (official minus ours there, both interpolated: positive when ours is lower).
    """
    official_points, our_points = points_of(official), points_of(ours)
    official_minutes, official_final = official_points[-1]
    reached = time_to_reach(our_points, official_final)
    measurable = reached is not None and our_points[0][1] > official_final
    equal_time = min(our_points[-1][0], official_minutes)
    ours_then, official_then = value_at(our_points, equal_time), value_at(official_points, equal_time)
    return {
        "official_minutes": official_minutes,
        "official_nats_per_point": official_final,
        "ours_minutes_to_official_final": reached,
        "speedup": official_minutes / reached if measurable else None,
        "equal_time_minutes": equal_time,
        "difference_at_equal_time": (None if ours_then is None or official_then is None
                                     else official_then - ours_then),
    }


def official_nats_per_point(r_costs, batch_sizes, max_seq_len, points):
    """Nats per stroke point from the official evaluation model's r_cost of each batch.

    The official r_cost is the mean of the masked per-row loss over batch_size * max_seq_len
    rows (`tf.reduce_mean` of the loss of every padded row, zero after a sketch's end in the
    evaluation model), so a batch's sum over its real points is r_cost * B * max_seq_len.

    Args:
        r_costs: the r_cost of each batch.
        batch_sizes: each batch's number of sketches B.
        max_seq_len: the padded length T of every batch.
        points: each batch's number of real points (the sum of its sequence lengths).
    """
    total = sum(float(r) * int(b) * int(max_seq_len) for r, b in zip(r_costs, batch_sizes))
    return total / sum(int(p) for p in points)


def hparam_items(overrides):
    """The non-empty items of a "k=v,k2=v2" override string, stripped, each with its name."""
    items = [item.strip() for item in (overrides or "").split(",") if item.strip()]
    return [(item, item.split("=", 1)[0].strip()) for item in items]


def split_hparams(overrides):
    """The items of `--hparams` that the official code is given too, as "k=v,..."."""
    return ",".join(item for item, name in hparam_items(overrides) if name in OFFICIAL_SHARED_HPARAMS)


# ---------------------------------------------------------------------------------------
# The training clock and the evaluation marks (both sides)
# ---------------------------------------------------------------------------------------


class TrainingClock:
    """Wall-clock seconds since `start()`, less the time spent inside `paused()`."""

    def __init__(self):
        self.started = None
        self.paused_seconds = 0.0

    def start(self):
        self.started = time.perf_counter()

    def seconds(self):
        return time.perf_counter() - self.started - self.paused_seconds

    def minutes(self):
        return self.seconds() / 60

    @contextlib.contextmanager
    def paused(self):
        began = time.perf_counter()
        try:
            yield
        finally:
            self.paused_seconds += time.perf_counter() - began


class EvaluationMarks:
    """When to evaluate: at the start, at each multiple of `every` minutes, at the budget's end.

    Training is checked after each step: an evaluation is due at the first step that ends
    past a mark (marks passed meanwhile are not made up), and the last one at the first step
    that ends past the budget, after which training stops.
    """

    def __init__(self, budget_minutes, every_minutes):
        self.budget = budget_minutes
        self.every = every_minutes
        self.next = 0.0

    def due(self, minutes):
        return minutes >= self.next or self.finished(minutes)

    def finished(self, minutes):
        return minutes >= self.budget

    def evaluated(self, minutes):
        self.next = (math.floor(minutes / self.every) + 1) * self.every


def stalls(step_seconds, steps_per_epoch, factor=3.0):
    """The steps that took more than `factor` times the median step (the first excepted: it
    traces and compiles), as records {step, seconds, epoch_step}: `step` counts from 1,
    `epoch_step` is the step's place in its epoch (1 for an epoch's first). `step_seconds`
    run from one step's end to the next's, waits for data and epoch ends included."""
    if len(step_seconds) < 3:
        return []
    typical = sorted(step_seconds[1:])[len(step_seconds[1:]) // 2]
    return [{"step": i + 1, "seconds": seconds, "epoch_step": i % steps_per_epoch + 1}
            for i, seconds in enumerate(step_seconds) if i > 0 and seconds > factor * typical]


def curve_point(minutes, nats_per_point, step, eval_seconds, **extra):
    return {"minutes": minutes, "nats_per_point": nats_per_point, "step": step,
            "eval_seconds": eval_seconds, **extra}


def describe_point(side, point):
    return (f"{side:>8} {point['minutes']:7.2f} min  step {point['step']:6d}  "
            f"{point['nats_per_point']:.4f} nats/point  (evaluation {point['eval_seconds']:.1f} s)")


# ---------------------------------------------------------------------------------------
# Ours
# ---------------------------------------------------------------------------------------


def train_ours(data, minutes, every, overrides):
    """Trains our model for `minutes` of training time; returns the curve and the run's facts."""
    import keras

    from callbacks import KLWeightAnnealing, LearningRateDecay, evaluate
    from seq2seqVAE import build_model, compile_model, describe_engines, resolved_matmul_dtype
    from seq2seqVAE_train import one_device_input, prepare, training_batches

    load_average = os.getloadavg()
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ttq-ours-") as folder:
        # The training command's data preparation: max_seq_len from the data (capped), the
        # scale factor of the training split, augmentation on the training loader only.
        run = prepare(argparse.Namespace(
            data_dir=os.path.dirname(os.path.abspath(data)), data_set=os.path.basename(data)[:-4],
            experiment_dir=folder, hparams=overrides, checkpoint=None, initial_epoch=None,
            base_url=None))
    hps, loaders = run["hps"], run["loaders"]
    load_seconds = time.perf_counter() - began

    clock = TrainingClock()
    marks = EvaluationMarks(minutes, every)
    curve = []
    state = {"stopped": "budget"}

    def evaluate_now(model):
        now = clock.minutes()
        with clock.paused():
            began = time.perf_counter()
            figures = evaluate(model, loaders["valid"], kl_weight=hps.kl_weight)
            point = curve_point(now, float(figures["nats_per_point"]),
                                int(keras.ops.convert_to_numpy(model.optimizer.iterations)),
                                time.perf_counter() - began,
                                reconstruction_loss=float(figures["reconstruction_loss"]))
            curve.append(point)
            print(describe_point("ours", point), flush=True)
            if not math.isfinite(point["nats_per_point"]):
                state["stopped"] = "not finite"
                model.stop_training = True
        marks.evaluated(point["minutes"])

    # Each step's wall-clock time from the previous step's end (its evaluation excepted): the
    # wait for its batch and any work between epochs count, as they count on the clock.
    step_seconds = []

    class Marks(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.last = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            step_seconds.append(time.perf_counter() - self.last)
            now = clock.minutes()
            if marks.due(now):
                evaluate_now(self.model)
            if marks.finished(now):
                self.model.stop_training = True
            self.last = time.perf_counter()

    clock.start()
    keras.utils.set_random_seed(hps.seed)
    model = compile_model(build_model(hps), hps)
    batches = training_batches(hps, loaders["train"])
    evaluate_now(model)  # the initial weights
    epochs = 10**5  # enough for any budget (the training command's feed spans them all)
    fit_data, feed_callbacks = one_device_input(batches, 0, epochs)
    callbacks = [*feed_callbacks, LearningRateDecay(hps), KLWeightAnnealing(hps),
                 keras.callbacks.TerminateOnNaN(), Marks()]
    history = model.fit(**fit_data, epochs=epochs, callbacks=callbacks, shuffle=False, verbose=0)
    if any(not math.isfinite(v) for v in history.history.get("loss", [])[-1:]):
        state["stopped"] = "not finite"
    steps = curve[-1]["step"]
    return {
        "curve": curve,
        "max_seq_len": hps.max_seq_len,
        "scale_factor": run["scale_factor"],
        "valid_sketches": len(loaders["valid"]),
        "valid_points": int(loaders["valid"].lengths.sum()),
        "steps": steps,
        "train_minutes": curve[-1]["minutes"],
        "s_per_step": curve[-1]["minutes"] * 60 / steps if steps else None,
        "eval_seconds": sum(p["eval_seconds"] for p in curve),
        "load_seconds": load_seconds,
        "load_average_start": list(load_average),
        "hparams": overrides,
        "lstm_matmul_dtype": resolved_matmul_dtype(hps),
        "engines": describe_engines(model),
        "stopped": state["stopped"],
        "step_seconds": step_seconds,
        "stalls": stalls(step_seconds, len(batches)),
    }


# ---------------------------------------------------------------------------------------
# The official code, in its own environment
# ---------------------------------------------------------------------------------------


def run_official(python, wheel, data, minutes, every, overrides, seed):
    """Runs official_time_to_quality.py in the official environment; returns its result.

    Its progress lines are shown as they come, prefixed with `official|`.

    Raises:
        RuntimeError: one line and the end of its output if it fails.
    """
    command = [python, os.path.join(HERE, "official_time_to_quality.py"), "--wheel", wheel,
               "--data", os.path.abspath(data), "--minutes", str(minutes),
               "--eval_every_minutes", str(every), "--seed", str(seed), "--hparams", overrides]
    # Its own packages, not ours: no PYTHONPATH, no virtual environment of ours.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    result, tail = None, []
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=env, cwd=ROOT) as process:
        try:
            for line in process.stdout:
                line = line.rstrip("\n")
                if line.startswith(RECORD):
                    record = json.loads(line[len(RECORD):])
                    if record.get("event") == "point":
                        print(describe_point("official", record["point"]), flush=True)
                    elif record.get("event") == "result":
                        result = record["result"]
                else:
                    tail = (tail + [line])[-40:]
                    print(f"official| {line}", flush=True)
            process.wait()
        except BaseException:  # Ctrl-C or an error here: do not leave it training
            process.kill()
            raise
    if process.returncode != 0 or result is None:
        raise RuntimeError(f"the official run failed (exit code {process.returncode}); its last "
                           "lines:\n" + "\n".join(tail))
    return result


# ---------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------


def side_by_side(ours, official, every, minutes):
    """Rows (label, ours, official): the initial weights' figures, then both curves
    interpolated at each mark (`every` minutes, and the budget)."""
    marks = [k * every for k in range(1, int(math.floor(minutes / every + 1e-9)) + 1)]
    if not marks or marks[-1] < minutes:
        marks.append(minutes)
    rows = [("initial", points_of(ours)[0][1], points_of(official)[0][1] if official else None)]
    return rows + [(f"{mark:.2f}", value_at(ours, mark), value_at(official, mark) if official else None)
                   for mark in marks]


def format_report(report, every, minutes):
    ours, official = report["ours"], report.get("official")
    lines = ["", f"time to quality: {report['data']} on {report['cpu']} ({os.cpu_count()} cores), "
                 f"load average {' '.join(f'{x:.2f}' for x in report['load_average_start'])} at start"]
    for side, result in (("ours", ours), ("official", official)):
        if result:
            lines.append(f"{side:>8}: {result['steps']} steps in {result['train_minutes']:.2f} min "
                         f"({result['s_per_step']:.3f} s/step counting the start-up, "
                         f"{result['curve'][0]['minutes'] * 60:.1f} s to build the model), padded to "
                         f"{result['max_seq_len']}, evaluation {result['eval_seconds']:.0f} s not "
                         f"counted; valid {result['valid_sketches']} sketches, "
                         f"{result['valid_points']} points; stopped: {result['stopped']}")
    stalled = ours.get("stalls") or []
    if stalled:
        lines.append(f"    ours: {len(stalled)} steps took over 3x the median step (data and "
                     "epoch ends included), "
                     f"{sum(s['seconds'] for s in stalled):.0f} s in all: " + ", ".join(
                         f"step {s['step']} (epoch step {s['epoch_step']}) {s['seconds']:.1f} s"
                         for s in stalled[:8]) + (" ..." if len(stalled) > 8 else ""))
    if official and (ours["valid_sketches"], ours["valid_points"]) != (
            official["valid_sketches"], official["valid_points"]):
        lines.append("  note: the two evaluated different validation sketches (ours drops those "
                     "longer than max_seq_len): the figures are per point of different sets")
    lines.append("")
    lines.append(f"{'minutes':>8} {'ours':>9} {'official':>9} {'off.-ours':>10}   (nats per point, "
                 "linear between evaluations)")
    for label, mine, theirs in side_by_side(ours["curve"], official and official["curve"], every, minutes):
        cells = [f"{v:9.4f}" if v is not None else f"{'-':>9}" for v in (mine, theirs)]
        difference = f"{theirs - mine:10.4f}" if mine is not None and theirs is not None else f"{'-':>10}"
        lines.append(f"{label:>8} {cells[0]} {cells[1]} {difference}")
    if official:
        reached = report["ours_minutes_to_official_final"]
        lines.append("")
        if reached is None:
            lines.append(f"ours did not reach the official's final {report['official_nats_per_point']:.4f} "
                         f"nats/point (at {report['official_minutes']:.2f} min) within the budget")
        elif report["speedup"] is None:
            lines.append(f"no speed-up: the official's final {report['official_nats_per_point']:.4f} "
                         "nats/point is no better than our initial weights' (a budget too short)")
        else:
            lines.append(f"ours reached the official's final {report['official_nats_per_point']:.4f} "
                         f"nats/point (at {report['official_minutes']:.2f} min) after {reached:.2f} min: "
                         f"speed-up {report['speedup']:.2f}x")
        if report["difference_at_equal_time"] is not None:
            lines.append(f"at {report['equal_time_minutes']:.2f} min: official minus ours "
                         f"{report['difference_at_equal_time']:+.4f} nats/point (positive: ours lower)")
    return "\n".join(lines)


def plot_curves(path, report):
    """Both curves, nats per point against training minutes, written to `path` atomically."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import utils

    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=100)
    ours_label = f"ours ({report['hparams']})" if report.get("hparams") else "ours"
    official_label = f"official code ({report.get('official_hparams') or 'defaults'})"
    for side, label, style in (("ours", ours_label, "o-"), ("official", official_label, "s-")):
        if report.get(side):
            points = points_of(report[side]["curve"])
            axes.plot([p[0] for p in points], [p[1] for p in points], style, label=label, markersize=4)
    if report.get("official"):
        axes.axhline(report["official_nats_per_point"], color="gray", linestyle=":", linewidth=1,
                     label="official, final")
        if report["speedup"] is not None:
            axes.axvline(report["ours_minutes_to_official_final"], color="gray", linestyle="--",
                         linewidth=1, label=f"ours reaches it ({report['speedup']:.1f}x)")
    axes.set_xlabel("training minutes (evaluation not counted)")
    axes.set_ylabel("validation nats per stroke point")
    axes.set_title(f"{os.path.basename(report['data'])}, {report['cpu']}", fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format=os.path.splitext(path)[1][1:] or "png")
    plt.close(figure)
    utils.write_atomically(path, buffer.getvalue())


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="the data set, a Sketch-RNN .npz file")
    parser.add_argument("--minutes", type=float, default=20.0,
                        help="training-time budget of each side, in minutes (default 20)")
    parser.add_argument("--eval_every_minutes", type=float, default=2.0,
                        help="evaluate the validation split every this many training minutes (default 2)")
    parser.add_argument("--hparams", default="",
                        help='our hparam overrides, "k=v,k2=v2"; those the official code has are '
                             "given to it too")
    parser.add_argument("--official_hparams", default=None,
                        help='the official code\'s hparam overrides, "k=v,..." (default: those of '
                             "--hparams it has too); give \"\" to run it with its defaults while "
                             "ours tries a lever")
    parser.add_argument("--official_python", help="python of the official environment "
                                                  "(see benchmarks/official_reference.py)")
    parser.add_argument("--wheel", help="magenta-2.1.4-py3-none-any.whl (pip download magenta==2.1.4)")
    parser.add_argument("--skip_official", action="store_true", help="train ours only")
    parser.add_argument("--json", action="store_true", help="print one JSON line at the end")
    parser.add_argument("--plot", metavar="FILE.png", help="draw both curves into this picture")
    args = parser.parse_args(argv)
    if not args.data.endswith(".npz") or not os.path.isfile(args.data):
        parser.error(f"--data {args.data}: expected an existing .npz file")
    if not (args.minutes > 0 and math.isfinite(args.minutes)):
        parser.error(f"--minutes must be a positive number, got {args.minutes}")
    if not (args.eval_every_minutes > 0 and math.isfinite(args.eval_every_minutes)):
        parser.error(f"--eval_every_minutes must be a positive number, got {args.eval_every_minutes}")
    if not args.skip_official:
        if not args.official_python or not args.wheel:
            parser.error("--official_python and --wheel are needed (or --skip_official)")
        if not (os.path.isfile(args.official_python) and os.access(args.official_python, os.X_OK)):
            parser.error(f"--official_python {args.official_python}: not an executable file")
        if not os.path.isfile(args.wheel):
            parser.error(f"--wheel {args.wheel}: no such file")
    if args.official_hparams:
        for item, name in hparam_items(args.official_hparams):
            if "=" not in item or name not in OFFICIAL_SHARED_HPARAMS:
                parser.error(f"--official_hparams {item!r}: expected name=value with a name of "
                             f"{', '.join(OFFICIAL_SHARED_HPARAMS)}")
    if args.plot:
        directory = os.path.dirname(os.path.abspath(args.plot))
        if not os.path.isdir(directory):
            parser.error(f"--plot {args.plot}: no folder {directory}")
    return args


def main(argv=None):
    args = parse_args(argv)
    sys.path.insert(0, ROOT)
    from benchmarks.machine import cpu_name
    from sketch_rnn.cli import quiet_tensorflow
    from sketch_rnn.hparams import HParams

    try:
        hps = HParams.parse(args.hparams)  # refused here, before minutes of training
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    quiet_tensorflow()
    report = {"data": args.data, "minutes": args.minutes, "eval_every_minutes": args.eval_every_minutes,
              "cpu": cpu_name(), "cores": os.cpu_count(), "load_average_start": list(os.getloadavg()),
              "hparams": args.hparams,
              "official_hparams": (split_hparams(args.hparams) if args.official_hparams is None
                                   else args.official_hparams)}
    print(f"ours: training for {args.minutes:g} min on {args.data}", flush=True)
    try:
        report["ours"] = train_ours(args.data, args.minutes, args.eval_every_minutes, args.hparams)
    except (ValueError, OSError) as error:  # the data or the hparams: one line
        raise SystemExit(f"error: {error}") from None
    report["ours_curve"] = report["ours"]["curve"]
    report["ours_nats_per_point"] = report["ours_curve"][-1]["nats_per_point"]
    failure = None
    report["official"] = None
    if not args.skip_official:
        print(f"official: training for {args.minutes:g} min on {args.data} "
              f"(hparams [{report['official_hparams'] or 'defaults'}], seed {hps.seed})", flush=True)
        try:
            report["official"] = run_official(args.official_python, args.wheel, args.data, args.minutes,
                                              args.eval_every_minutes, report["official_hparams"], hps.seed)
        except RuntimeError as error:
            failure = str(error)
    if report["official"]:
        report["official_curve"] = report["official"]["curve"]
        report.update(compare_curves(report["ours_curve"], report["official_curve"]))
    else:
        report.update(official_curve=None, official_nats_per_point=None, speedup=None)
    print(format_report(report, args.eval_every_minutes, args.minutes), flush=True)
    if args.plot:
        plot_curves(args.plot, report)
        print(f"wrote {args.plot}")
    if failure:
        print(f"error: {failure}", file=sys.stderr)
    if args.json:
        print(json.dumps(report, sort_keys=True))
    return 1 if failure else 0


if __name__ == "__main__":
    sys.exit(main())
