"""Draw with a trained Sketch-RNN from the terminal.

Usage:
    # 16 random sketches in one SVG grid
    python seq2seqVAE_sample.py --run_dir=examples/sheep --count=16 --temperature=0.5 --seed=1

    # the first 8 test sketches above their reconstructions, as a PNG
    python seq2seqVAE_sample.py --run_dir=examples/sheep --mode=reconstruct --count=8 \\
        --format=png --data_dir=datasets

    # 8 steps from test sketch 3 to test sketch 7, one GIF of the pen per step
    python seq2seqVAE_sample.py --run_dir=examples/sheep --mode=interpolate --indices=3,7 \\
        --count=8 --format=gif

Pictures go to --output_dir (default <run_dir>/drawings): <mode>.svg or <mode>.png, one grid,
or <mode>-NNN.gif, one per sketch. A grid fits each sketch into a --cell_size square; with
--cell_size=0, and in GIFs, sketches are drawn at the data's size, un-normalised with the
run's stored scale factor. reconstruct and interpolate read the test sketches of the run's
data sets from --data_dir (downloading a known data set that is missing).
"""

import argparse
import math
import os
import sys

# Bounds of the flags where a larger value only exhausts memory.
MAX_COUNT = 10_000
MAX_CELL_SIZE = 10_000


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Draw random samples, reconstructions or interpolations with a trained "
                    "Sketch-RNN run, as SVG, PNG or GIF.")
    parser.add_argument("--run_dir", required=True,
                        help="run folder with model_config.json and checkpoints/")
    parser.add_argument("--checkpoint", default=None,
                        help="weights file to load (default: checkpoints/best.weights.h5, else "
                             "the newest checkpoint)")
    parser.add_argument("--mode", default="sample", choices=["sample", "reconstruct", "interpolate"],
                        help="random sketches, test sketches re-drawn from their z, or the sketches "
                             "between two test sketches")
    parser.add_argument("--count", type=int, default=10,
                        help="sketches to draw (interpolate: steps, both ends included)")
    parser.add_argument("--temperature", type=float, default=0.5,
                        help="sampling temperature tau > 0: lower is tidier, 1 is the model's own "
                             "distribution")
    parser.add_argument("--greedy", action="store_true",
                        help="draw the most likely points instead of sampling (ignores temperature)")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the random draws (default: a fresh one, printed)")
    parser.add_argument("--format", default="svg", choices=["svg", "png", "gif"],
                        help="svg or png: one grid picture; gif: one animation per sketch")
    parser.add_argument("--output_dir", default=None,
                        help="folder for the pictures (default: <run_dir>/drawings)")
    parser.add_argument("--data_dir", default="datasets",
                        help="folder of the run's .npz data sets (reconstruct, interpolate)")
    parser.add_argument("--indices", default=None,
                        help="test sketches to use: reconstruct, a comma list (default: the first "
                             "--count); interpolate, two (default: 0,1)")
    parser.add_argument("--method", default="slerp", choices=["slerp", "lerp"],
                        help="interpolation between the two latent vectors")
    parser.add_argument("--cell_size", type=float, default=150,
                        help="pixels per grid cell, each sketch scaled to fit its own; 0 draws every "
                             "sketch at the data's size (then sizes compare, but one long stray "
                             "line makes every cell large)")
    parser.add_argument("--columns", type=int, default=None,
                        help="sketches per row of a grid (default: up to 10; reconstruct and "
                             "interpolate: one row)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        written = draw(args)
    except (ValueError, OSError, RuntimeError) as err:
        # The user's flags, files and data: one line, no traceback.
        print(f"error: {err}", file=sys.stderr)
        return 2
    except MemoryError:
        print("error: out of memory; draw fewer sketches (--count) or smaller cells (--cell_size)",
              file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


def draw(args):
    """Draws what the flags ask for; returns the paths written."""
    check_args(args)
    import numpy as np

    import utils
    from seq2seqVAE import load_run

    check_run(args)
    output_dir = check_output_dir(args)
    drawer = load_run(args.run_dir, args.checkpoint)
    seed = args.seed
    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1)[0] % 1_000_000)
        print(f"seed {seed} (--seed={seed} draws the same again)", file=sys.stderr)
    draw_options = dict(temperature=args.temperature, greedy=args.greedy, seed=seed)
    columns = args.columns
    tau = "greedy" if args.greedy else f"tau {args.temperature:g}"

    if args.mode == "sample":
        sketches = drawer.sample(args.count, **draw_options)
        grid, labels = sketches, None
    else:
        if not drawer.hps.conditional:
            raise ValueError(f"--mode={args.mode}: the run in {args.run_dir} has no encoder "
                             "(conditional=False); only --mode=sample draws with it")
        test = drawer.load_sketches(args.data_dir, "test")
        indices = parse_indices(args, len(test))
        if args.mode == "reconstruct":
            originals = [test[i] for i in indices]
            sketches = drawer.reconstruct(originals, **draw_options)
            grid = originals + sketches
            labels = [f"test {i}" for i in indices] + [tau] * len(sketches)
        else:
            first, last = indices
            sketches = drawer.interpolate(test[first], test[last], steps=args.count,
                                          method=args.method, **draw_options)
            # The two test sketches at the ends, the decoded path between them.
            grid = [test[first]] + sketches + [test[last]]
            positions = [f"{t:.2f}" for t in np.linspace(0.0, 1.0, args.count)]
            labels = [f"test {first}"] + positions + [f"test {last}"]
        columns = columns or len(grid) // (2 if args.mode == "reconstruct" else 1)

    os.makedirs(output_dir, exist_ok=True)
    scale = drawer.scale_factor
    if args.format == "gif":
        written = []
        for number, sketch in enumerate(sketches):
            path = os.path.join(output_dir, f"{args.mode}-{number:03d}.gif")
            utils.sketch_to_gif(sketch, path, scale_factor=scale)
            written.append(path)
        return written
    path = os.path.join(output_dir, f"{args.mode}.{args.format}")
    write = utils.sketches_to_svg if args.format == "svg" else utils.sketches_to_png
    write(grid, path, columns=columns, labels=labels, scale_factor=scale,
          cell_size=args.cell_size or None)
    return [path]


def check_args(args):
    """One-line errors for flag values argparse cannot check."""
    if args.count < 1 or (args.mode == "interpolate" and args.count < 2):
        least = 2 if args.mode == "interpolate" else 1
        raise ValueError(f"--count must be at least {least} for --mode={args.mode}, got {args.count}")
    if args.count > MAX_COUNT:
        raise ValueError(f"--count must be at most {MAX_COUNT}, got {args.count}")
    if not (math.isfinite(args.temperature) and args.temperature > 0):
        raise ValueError(f"--temperature must be a finite number > 0 (use --greedy for the limit), "
                         f"got {args.temperature}")
    if not (args.cell_size == 0 or 20 < args.cell_size <= MAX_CELL_SIZE):
        raise ValueError(f"--cell_size must be more than 20 and at most {MAX_CELL_SIZE} pixels "
                         f"(or 0), got {args.cell_size:g}")
    if args.columns is not None and not 1 <= args.columns <= MAX_COUNT:
        raise ValueError(f"--columns must be from 1 to {MAX_COUNT}, got {args.columns}")
    if args.seed is not None and not 0 <= args.seed < 2**32:
        raise ValueError(f"--seed must be from 0 to 2**32 - 1, got {args.seed}")
    if not os.path.isdir(args.run_dir):
        raise ValueError(f"--run_dir: {args.run_dir} is not a folder")


def check_run(args):
    """The checkpoint flag's file, before anything reads it (load_run checks the config)."""
    import utils

    if args.checkpoint is not None:
        utils.check_regular_file(args.checkpoint, "--checkpoint")


def check_output_dir(args):
    """The output folder, refused (one line) if it or a picture we would write is a link.

    Checked before the model loads; the pictures are written with utils.write_atomically,
    which checks again.
    """
    import utils

    output_dir = args.output_dir or os.path.join(args.run_dir, "drawings")
    if args.output_dir is None:  # inside the run folder, where a link could lead anywhere
        utils.refuse_link(output_dir, "--output_dir")
    if os.path.isdir(output_dir):
        for name in sorted(os.listdir(output_dir)):
            if name.startswith(args.mode) and name.endswith(f".{args.format}"):
                utils.refuse_link(os.path.join(output_dir, name), "--output_dir")
    return output_dir


def parse_indices(args, available):
    """The test sketch indices the mode uses, checked against the `available` sketches."""
    if args.indices is None:
        indices = list(range(min(args.count, available))) if args.mode == "reconstruct" else [0, 1]
    else:
        try:
            indices = [int(text) for text in args.indices.split(",")]
        except ValueError:
            raise ValueError(f"--indices: expected comma-separated integers, got '{args.indices}'") from None
    if args.mode == "interpolate" and len(indices) != 2:
        raise ValueError(f"--indices: interpolate takes two test sketches, got {len(indices)}")
    for index in indices:
        if not 0 <= index < available:
            raise ValueError(f"--indices: {index} is not a test sketch (there are {available}, 0 to "
                             f"{available - 1})")
    return indices


if __name__ == "__main__":
    sys.exit(main())
