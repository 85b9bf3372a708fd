"""Evaluate a trained Sketch-RNN run: its losses on the validation and test sketches.

Usage:
    # the run's best weights on valid and test, as a table
    python evaluate.py --run_dir=examples/sheep --data_dir=datasets

    # any checkpoint, the test split only, as one JSON object
    python evaluate.py --run_dir=experiments/cat_guitar --split=test --json \\
        --checkpoint=experiments/cat_guitar/checkpoints/ckpt-epoch0003-step00000222.weights.h5

The losses are the official evaluation's, computed by the code that computes training's
validation (`callbacks.evaluate`): no dropout, z sampled from the posterior with a fixed seed,
the reconstruction loss masked after each sketch's last point and divided by
batch_size * max_seq_len. `loss` weighs the KL term with the run's final kl_weight (a run
trained with kl_weight=0 has no KL term: its loss is the reconstruction loss). A run whose
sketches are of several classes (several data sets, or a file with labels, such as
prepare_data.py writes) is evaluated on the merged split (what training reports) and on each
class's sketches alone. nats/point is the reconstruction loss summed over the sketches'
points, divided by their number.
"""

import contextlib
import json
import os
import sys

from sketch_rnn.cli import ArgumentParser, quiet_tensorflow

SPLITS = ("valid", "test", "train")


def parse_args(argv=None):
    parser = ArgumentParser(
        description="Report a trained Sketch-RNN run's reconstruction loss, KL and total on its "
                    "validation and test sketches, per data set, as a table or JSON.")
    parser.add_argument("--run_dir", required=True,
                        help="run folder with model_config.json and checkpoints/")
    parser.add_argument("--checkpoint", default=None,
                        help="weights file to evaluate (default: checkpoints/best.weights.h5, else "
                             "the newest checkpoint)")
    parser.add_argument("--data_dir", default="datasets",
                        help="folder of the run's .npz data sets (default: datasets; missing known sets "
                             "are downloaded there)")
    parser.add_argument("--split", default="valid,test",
                        help="comma list of the splits to evaluate: valid, test, train (default: "
                             "valid,test)")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the z noise (default: the one training's validation uses)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object instead of the table")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        splits = check_args(args)
        quiet_tensorflow()
        # With --json, stdout holds the JSON alone: loading's notes go to stderr.
        with contextlib.redirect_stdout(sys.stderr if args.json else sys.stdout):
            report = evaluate_run(args.run_dir, args.checkpoint, args.data_dir, splits, args.seed)
    except (ValueError, OSError, RuntimeError) as err:
        # The user's flags, files and data: one line, no traceback.
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0


def check_args(args):
    """The splits asked for; one-line errors for flags that cannot work."""
    from utils import check_regular_file

    splits = [name.strip() for name in args.split.split(",")]
    for name in splits:
        if name not in SPLITS:
            raise ValueError(f"--split: unknown split {name!r}; expected a comma list of "
                             f"{', '.join(SPLITS)}")
    if not os.path.isdir(args.run_dir):
        raise ValueError(f"--run_dir: {args.run_dir} is not a folder")
    if not os.path.isfile(os.path.join(args.run_dir, "model_config.json")):
        raise ValueError(f"--run_dir: {args.run_dir} holds no model_config.json, so it is not a "
                         "training run's folder")
    if args.checkpoint is not None:
        check_regular_file(args.checkpoint, "--checkpoint")
    if args.seed is not None and not 0 <= args.seed < 2**32:
        raise ValueError(f"--seed must be in [0, 2**32), got {args.seed}")
    return list(dict.fromkeys(splits))


def evaluate_run(run_dir, checkpoint, data_dir, splits, seed=None):
    """Evaluates a run's weights on its splits, merged and per class.

    A sketch's class is its file's label for it (`utils.load_labelled_strokes`), else its
    data set: a run of cat,guitar is evaluated on cats and on guitars, a run of one file
    with labels on each labelled class.

    Returns:
        dict: `run_dir`, `checkpoint`, its `epoch` and `step` where known, `kl_weight` (the
        final one, which `loss` uses; 0 without a KL term), `checkpoint_kl_weight` (the
        annealed weight the checkpoint stores, which training's val_loss used),
        `kl_tolerance`, `z_seed`, `data_sets`, `classes`, and `splits`: {split: {"all":
        figures, <class>: figures, ...}}, figures as `callbacks.evaluate` returns them (one
        class: "all" and its name give the same figures).
    """
    import keras

    import utils
    from callbacks import EVALUATION_SEED, evaluate
    from seq2seqVAE import compile_model, load_run
    from sketch_rnn.drawing import default_checkpoint
    from sketch_rnn.run_folder import checkpoint_position

    seed = EVALUATION_SEED if seed is None else seed
    checkpoint = checkpoint or default_checkpoint(run_dir)
    drawer = load_run(run_dir, checkpoint, jit_compile=False)
    hps, model = drawer.hps, compile_model(drawer.model, drawer.hps)
    stored_kl_weight = (float(keras.ops.convert_to_numpy(model.get_layer("latent").kl_weight))
                        if hps.has_kl_term else 0.0)
    strokes, labels, classes = utils.load_labelled_strokes(data_dir, ",".join(drawer.data_sets))
    report = {"run_dir": run_dir, "checkpoint": checkpoint, **checkpoint_position(run_dir, checkpoint),
              "kl_weight": hps.kl_weight if hps.has_kl_term else 0.0,
              "checkpoint_kl_weight": stored_kl_weight, "kl_tolerance": hps.kl_tolerance,
              "z_seed": seed, "data_sets": drawer.data_sets, "classes": classes, "splits": {}}
    for split in splits:
        loader = utils.DataLoader(strokes[split], batch_size=hps.batch_size,
                                  max_seq_len=hps.max_seq_len, name=split, labels=labels[split])
        if len(loader) == 0:  # every sketch is longer than max_seq_len
            report["splits"][split] = {"all": None, **{name: None for name in classes}}
            continue
        loader.normalize(drawer.scale_factor)
        figures = evaluate(model, loader, kl_weight=report["kl_weight"], seed=seed,
                           classes=classes)
        per_class = figures.pop("classes", None)
        if per_class is None:  # the split holds one class: its figures are the split's
            per_class = {classes[int(loader.labels[0])]: figures}
        report["splits"][split] = {"all": figures, **per_class}
    return report


def format_table(report):
    """The report as a header line and one row per split and data set."""
    position = "".join(f", {k} {report[k]}" for k in ("epoch", "step") if k in report)
    loss = (f"reconstruction + {report['kl_weight']:g} * max(KL, {report['kl_tolerance']:g})"
            if report["kl_weight"] > 0 else "reconstruction (no KL term)")
    lines = [f"{report['run_dir']}: {report['checkpoint']}{position}",
             f"loss = {loss}; z noise seed {report['z_seed']}", ""]
    header = ("split", "class", "sketches", "points", "reconstruction", "KL", "loss", "nats/point")
    rows = []
    several = len(report["classes"]) > 1
    for split, results in report["splits"].items():
        for name, figures in results.items():
            if several or name != "all":
                label = "all: " + ",".join(report["classes"]) if name == "all" else name
                rows.append((split, label, figures))
    widths = [max(len(header[1]), *(len(label) for _, label, _ in rows))]
    lines.append(f"{header[0]:<6} {header[1]:<{widths[0]}} " + " ".join(
        f"{h:>{max(len(h), 8)}}" for h in header[2:]))
    for split, label, figures in rows:
        if figures is None:
            cells = ["(every sketch longer than max_seq_len)"]
        else:
            values = [f"{figures['sketches']}", f"{figures['points']}",
                      f"{figures['reconstruction_loss']:.4f}",
                      f"{figures['kl_loss']:.4f}" if "kl_loss" in figures else "-",
                      f"{figures['loss']:.4f}", f"{figures['nats_per_point']:.4f}"]
            cells = [f"{v:>{max(len(h), 8)}}" for v, h in zip(values, header[2:])]
        lines.append(f"{split:<6} {label:<{widths[0]}} " + " ".join(cells))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
