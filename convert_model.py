"""Convert Sketch-RNN models between this project's run folders and other formats.

Usage:
    # an official run folder (Magenta's TensorFlow 1 checkpoint + model_config.json) -> a run folder
    python convert_model.py --from_magenta /tmp/sketch_rnn/models/aaron_sheep/lstm \\
        --to experiments/sheep_official --data_dir datasets
    # the same with the data's scale factor given instead of computed from the data set
    python convert_model.py --from_magenta CKPT_DIR --to RUN_DIR --scale_factor 18.5198

The official checkpoint stores no scale factor (the official code computes it from the
training data each time it loads it): without --scale_factor it is computed the same way, the
standard deviation of the training sketches' dx and dy, from the run's data sets in --data_dir
(known data sets are downloaded there if missing). The new run folder opens with `load_run`,
seq2seqVAE_sample.py and the notebook. The README's "Interoperability" section says more.
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's start-up chatter


def add_magenta_arguments(parser):
    """The flags of the official-checkpoint import."""
    group = parser.add_argument_group("official Sketch-RNN checkpoints (Magenta, TensorFlow 1)")
    group.add_argument("--from_magenta", metavar="CKPT_DIR",
                       help="import this official run folder (model_config.json and a checkpoint, "
                            "or a checkpoint prefix DIR/vector-N) into the run folder --to")
    group.add_argument("--scale_factor", type=float, default=None,
                       help="the data's scale factor (default: computed from the run's data sets "
                            "in --data_dir, as the official code does)")
    group.add_argument("--data_set", default=None,
                       help="data set names (comma list) to record and compute the scale factor "
                            "from, instead of the official config's data_set")
    group.add_argument("--hparams", default="",
                       help="settings the official model has not, for the new run (e.g. "
                            '"lstm_matmul_dtype=float32")')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Convert Sketch-RNN models between this project's run folders and other "
                    "formats.")
    parser.add_argument("--to", metavar="RUN_DIR", help="the new run folder an import writes")
    parser.add_argument("--force", action="store_true",
                        help="replace --to if it is a folder that is not empty")
    parser.add_argument("--data_dir", default="datasets",
                        help="folder of the run's .npz data sets")
    add_magenta_arguments(parser)
    return parser.parse_args(argv)


def check_magenta_arguments(args):
    """One-line errors for flags that do not make one official-checkpoint import."""
    if not args.from_magenta:
        for flag in ("scale_factor", "data_set"):
            if getattr(args, flag) is not None:
                raise ValueError(f"--{flag} is a flag of --from_magenta")
        return
    if not args.to:
        raise ValueError("--from_magenta: give the new run folder with --to")


def run_magenta(args):
    """Runs the official-checkpoint import; returns the lines to print."""
    from sketch_rnn.magenta_checkpoint import import_magenta_checkpoint

    data_sets = [name.strip() for name in args.data_set.split(",")] if args.data_set else None
    result = import_magenta_checkpoint(args.from_magenta, args.to, scale_factor=args.scale_factor,
                                       data_dir=args.data_dir, data_sets=data_sets,
                                       overrides=args.hparams, force=args.force)
    hps = result["hps"]
    model = (f"encoder {hps.enc_model} {hps.enc_rnn_size}, z {hps.z_size}, decoder "
             if hps.conditional else "decoder-only ")
    return [f"{args.to}: imported {result['checkpoint']} (step {result['global_step']}; "
            f"{model}{hps.dec_model} {hps.dec_rnn_size}, "
            f"{hps.num_mixture} Gaussians; scale factor {result['scale_factor']:.6g}, "
            f"data set {','.join(result['data_sets'])})"]


MODES = (("from_magenta", run_magenta),)  # (flag that selects it, function), one per conversion


def main(argv=None):
    args = parse_args(argv)
    try:
        check_magenta_arguments(args)
        chosen = [(flag, run) for flag, run in MODES if getattr(args, flag)]
        if len(chosen) != 1:
            flags = ", ".join(f"--{flag}" for flag, _ in (chosen or MODES))
            raise ValueError(f"give exactly one conversion ({flags}); "
                             "e.g. --from_magenta CKPT_DIR --to RUN_DIR")
        lines = chosen[0][1](args)
    except (ValueError, OSError, RuntimeError) as err:
        # The user's files and flags: one line, no traceback.
        print(f"error: {err}", file=sys.stderr)
        return 2
    for line in lines:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
