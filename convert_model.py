"""Convert Sketch-RNN models between this project's run folders and other formats.

Usage:
    # an official run folder (Magenta's TensorFlow 1 checkpoint + model_config.json) -> a run folder
    python convert_model.py --from_magenta /tmp/sketch_rnn/models/aaron_sheep/lstm \\
        --to experiments/sheep_official --data_dir datasets
    # the same with the data's scale factor given instead of computed from the data set
    python convert_model.py --from_magenta CKPT_DIR --to RUN_DIR --scale_factor 18.5198

    # a magenta.js model file (@magenta/sketch 0.2.0's format) -> a decoder-only run folder
    python convert_model.py --from_magenta_js cat.gen.json --to experiments/cat_js

    # a run folder -> a magenta.js model file; a conditional model is exported for one z:
    # the posterior mean of a test sketch of its data set, or a draw z ~ N(0, I)
    python convert_model.py --run_dir examples/sheep --to_magenta_js sheep.gen.json \\
        --z_from 5 --data_dir datasets
    python convert_model.py --run_dir examples/sheep --to_magenta_js sheep.gen.json --z_seed 0

    # a trained run -> a run folder to share: its best weights without the optimizer state
    # (float16 with --float16: half the size), its config, training log and test losses
    python convert_model.py --run_dir experiments/sheep --share sheep_to_share --float16

The official checkpoint stores no scale factor (the official code computes it from the
training data each time it loads it): without --scale_factor it is computed the same way, the
standard deviation of the training sketches' dx and dy, from the run's data sets in --data_dir
(known data sets are downloaded there if missing). The new run folder opens with `load_run`,
seq2seqVAE_sample.py and the notebook. The README's "Interoperability" section says more.

magenta.js stores weights as 16-bit integers on a grid of step 10/32767; the README's
"Interoperability" section says what that and the initial state of a conditional model do.
"""

import os
import sys

from sketch_rnn.cli import ArgumentParser, quiet_tensorflow


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


def add_magenta_js_arguments(parser):
    """The flags of the two magenta.js modes."""
    group = parser.add_argument_group("magenta.js (@magenta/sketch 0.2.0)")
    group.add_argument("--from_magenta_js", metavar="MODEL.json",
                       help="import this magenta.js model file into the run folder --to")
    group.add_argument("--to_magenta_js", metavar="OUT.json",
                       help="export the decoder of --run_dir to this magenta.js model file")
    group.add_argument("--z_from", type=int, default=None, metavar="INDEX",
                       help="export a conditional model for the posterior mean z of this test "
                            "sketch of the run's data set (read from --data_dir)")
    group.add_argument("--z_seed", type=int, default=None, metavar="SEED",
                       help="export a conditional model for z ~ N(0, I) drawn with this seed")


def add_share_arguments(parser):
    """The flags of sharing a trained run."""
    group = parser.add_argument_group("sharing a trained run")
    group.add_argument("--share", metavar="OUT_DIR",
                       help="write a copy of --run_dir to share: its weights (--checkpoint, "
                            "default its best) without the optimizer state, model_config.json, "
                            "logs/training_log.csv and test_losses.json")
    group.add_argument("--float16", action="store_true",
                       help="--share: store the weights as float16 (half the size; loaded back "
                            "into float32, each weight within 2**-11 of its value)")


def parse_args(argv=None):
    parser = ArgumentParser(
        description="Convert Sketch-RNN models between this project's run folders and other "
                    "formats.")
    parser.add_argument("--to", metavar="RUN_DIR", help="the new run folder an import writes")
    parser.add_argument("--force", action="store_true",
                        help="replace the run folder --to or --share names if it holds one, or "
                             "the file --to_magenta_js names if it exists (never the input, nor "
                             "a folder holding it)")
    parser.add_argument("--run_dir", help="a run folder of this project to export")
    parser.add_argument("--checkpoint", default=None,
                        help="the weights file of --run_dir to export (default: its best)")
    parser.add_argument("--data_dir", default=None,
                        help="folder of the run's .npz data sets (default: datasets)")
    add_magenta_arguments(parser)
    add_magenta_js_arguments(parser)
    add_share_arguments(parser)
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


def check_magenta_js_arguments(args):
    """One-line errors for flags that do not make one magenta.js conversion."""
    if args.from_magenta_js and args.to_magenta_js:
        raise ValueError("--from_magenta_js and --to_magenta_js: give one conversion at a time")
    if args.from_magenta_js:
        if not args.to:
            raise ValueError("--from_magenta_js: give the new run folder with --to")
        if args.run_dir or args.z_from is not None or args.z_seed is not None:
            raise ValueError("--from_magenta_js: --run_dir, --z_from and --z_seed are for exports")
    if args.to_magenta_js:
        if not args.run_dir:
            raise ValueError("--to_magenta_js: give the run folder to export with --run_dir")
        if args.to:
            raise ValueError("--to_magenta_js: --to is for imports; the output is the file named "
                             "by --to_magenta_js")


def check_share_arguments(args):
    """One-line errors for flags that do not make one share."""
    if not args.share:
        if args.float16:
            raise ValueError("--float16 is a flag of --share")
        return
    if not args.run_dir:
        raise ValueError("--share: give the trained run folder with --run_dir")
    if args.to:
        raise ValueError("--share: the new folder is --share's value; --to is for imports")


def run_share(args):
    """Writes the shared copy of a run; returns the lines to print."""
    from sketch_rnn.run_folder import share_run_folder

    result = share_run_folder(args.run_dir, args.share, checkpoint=args.checkpoint,
                              float16=args.float16, force=args.force)
    kind = "float16" if args.float16 else "float32"
    names = {os.path.join("logs", "training_log.csv"): "training log",
             "test_losses.json": "test losses"}
    copied = ["config"] + [names[inside] for inside in result["files"]]
    with_ = " and ".join([", ".join(copied[:-1]), copied[-1]] if len(copied) > 1 else copied)
    lines = [f"{args.share}: {result['checkpoint']} without the optimizer state, {kind} "
             f"({result['bytes'] / 1e6:.1f} MB), with the run's {with_}"]
    if args.float16:
        lines.append(f"largest weight change from float16 rounding: {result['max_change']:.2e}")
    return lines


def run_magenta(args):
    """Runs the official-checkpoint import; returns the lines to print."""
    from sketch_rnn.magenta_checkpoint import import_magenta_checkpoint

    data_sets = [name.strip() for name in args.data_set.split(",")] if args.data_set else None
    result = import_magenta_checkpoint(args.from_magenta, args.to, scale_factor=args.scale_factor,
                                       data_dir=args.data_dir or "datasets", data_sets=data_sets,
                                       overrides=args.hparams, force=args.force)
    hps = result["hps"]
    model = (f"encoder {hps.enc_model} {hps.enc_rnn_size}, z {hps.z_size}, decoder "
             if hps.conditional else "decoder-only ")
    return [f"{args.to}: imported {result['checkpoint']} (global step {result['global_step']}; "
            f"{model}{hps.dec_model} {hps.dec_rnn_size}, "
            f"{hps.num_mixture} Gaussians; scale factor {result['scale_factor']:.6g}, "
            f"data set {','.join(result['data_sets'])})"]


def run_magenta_js(args):
    """Runs the magenta.js conversion the flags ask for; returns the lines to print."""
    from sketch_rnn import magenta_js

    if args.from_magenta_js:
        hps, info = magenta_js.import_magenta_js(args.from_magenta_js, args.to, force=args.force)
        lines = [f"{args.to}: a decoder-only lstm run ({hps.dec_rnn_size} units) imported from "
                 f"{args.from_magenta_js}"]
        if "initial_state" in info:
            lines.append("the file's info.initial_state is not kept: a decoder-only run starts "
                         "from zeros, as @magenta/sketch's zeroState()")
        return lines
    result = magenta_js.export_magenta_js(args.run_dir, args.to_magenta_js, z_from=args.z_from,
                                          z_seed=args.z_seed, data_dir=args.data_dir or "datasets",
                                          force=args.force,
                                          checkpoint=args.checkpoint)
    lines = [f"{args.to_magenta_js}: the decoder of {args.run_dir} in the magenta.js format "
             f"(largest weight change from quantisation {result['max_quantisation_error']:.2e})"]
    if result["z"] is not None:
        lines.append("its z is folded into the LSTM bias; its initial state is in info.initial_state "
                     "(code that starts from zeroState() draws from another state)")
    return lines


# (flag that selects it, its flag check, the function that runs it), one per conversion
MODES = (("from_magenta", check_magenta_arguments, run_magenta),
         ("from_magenta_js", check_magenta_js_arguments, run_magenta_js),
         ("to_magenta_js", check_magenta_js_arguments, run_magenta_js),
         ("share", check_share_arguments, run_share))
# The flags each conversion reads besides its own; any other one given would do nothing.
USES = {"from_magenta": ("to", "force", "scale_factor", "data_set", "hparams", "data_dir"),
        "from_magenta_js": ("to", "force"),
        "to_magenta_js": ("run_dir", "checkpoint", "z_from", "z_seed", "data_dir", "force"),
        "share": ("run_dir", "checkpoint", "float16", "force")}
OPTIONS = ("to", "force", "run_dir", "checkpoint", "data_dir", "scale_factor", "data_set",
           "hparams", "z_from", "z_seed", "float16")


def check_unused_flags(args, mode):
    """One line for a flag given that the conversion `mode` would not read."""
    defaults = {"force": False, "float16": False, "hparams": ""}  # every other flag's is None
    for flag in OPTIONS:
        if getattr(args, flag) != defaults.get(flag) and flag not in USES[mode]:
            advice = (" (give the checkpoint prefix DIR/vector-N as --from_magenta)"
                      if (mode, flag) == ("from_magenta", "checkpoint") else "")
            raise ValueError(f"--{flag} does nothing with --{mode}{advice}")


def main(argv=None):
    args = parse_args(argv)
    try:
        for _, check, _ in MODES:
            check(args)
        chosen = [(flag, run) for flag, _, run in MODES if getattr(args, flag)]
        if len(chosen) != 1:
            flags = ", ".join(f"--{flag}" for flag, _ in chosen) or "none"
            raise ValueError(f"give exactly one conversion (given: {flags}): --from_magenta "
                             "CKPT_DIR --to RUN_DIR, --from_magenta_js MODEL.json --to RUN_DIR, "
                             "--run_dir RUN_DIR --to_magenta_js OUT.json, or --run_dir RUN_DIR "
                             "--share OUT_DIR")
        check_unused_flags(args, chosen[0][0])
        quiet_tensorflow()  # the flags are fine: now Keras, without TensorFlow's start-up lines
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
