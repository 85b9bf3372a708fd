"""Draw with a trained Sketch-RNN from the terminal.

Usage:
    # 16 random sketches in one SVG grid: <run_dir>/drawings/sample-t0.50-s1.svg
    python seq2seqVAE_sample.py --run_dir=examples/sheep --count=16 --temperature=0.5 --seed=1

    # the first 8 test sketches above their reconstructions, as a PNG
    python seq2seqVAE_sample.py --run_dir=examples/sheep --mode=reconstruct --count=8 \\
        --format=png --data_dir=datasets

    # 8 steps from test sketch 3 to test sketch 7, one GIF of the pen per step
    python seq2seqVAE_sample.py --run_dir=examples/sheep --mode=interpolate --indices=3,7 \\
        --count=8 --format=gif --gif_size=200

    # 6 continuations of the first 3 strokes of test sketches 2 and 5, one row each
    python seq2seqVAE_sample.py --run_dir=examples/sheep --mode=complete --indices=2,5 \\
        --prefix_strokes=3 --count=6 --format=png
    # ... or of a drawing of your own: a .npy or .json stroke-3 file in the data's units
    python seq2seqVAE_sample.py --run_dir=examples/sheep --mode=complete --prefix=mine.json

    # a picture (PNG, JPEG) redrawn as strokes 5 times, by a run trained with encoder=cnn
    python seq2seqVAE_sample.py --run_dir=experiments/pix2seq --mode=reconstruct \\
        --image=doodle.png --count=5 --format=png

Pictures go to --output_dir (default <run_dir>/drawings), named after the mode, temperature
and seed: <mode>-t<temperature>-s<seed>.svg or .png, one grid, or <mode>-t<temperature>-
s<seed>-NNN.gif, one per drawn sketch ("greedy" for the temperature with --greedy;
-p<pen temperature> after it with --pen_temperature). A file
that exists is an error unless --force. A grid fits each sketch into a --cell_size square;
with --cell_size=0, and in GIFs without --gif_size, sketches are drawn at the data's size,
un-normalised with the run's stored scale factor. reconstruct, interpolate and complete read
the test sketches of the run's data sets from --data_dir (downloading a known data set that
is missing). complete draws the prefix in blue and the continuations in black. reconstruct
with --image (a run trained with encoder=cnn) redraws pictures instead of test sketches: each
is converted to what the model read in training and redrawn --count times, one row per picture.
"""

import math
import os
import sys

from sketch_rnn import cli

# Bounds of the flags where a larger value only exhausts memory.
MAX_COUNT = 10_000
MAX_CELL_SIZE = 10_000
MODES = ["sample", "reconstruct", "interpolate", "complete"]


def parse_args(argv=None):
    parser = cli.ArgumentParser(
        description="Draw random samples, reconstructions, interpolations or completions with a "
                    "trained Sketch-RNN run, as SVG, PNG or GIF.")
    parser.add_argument("--run_dir", required=True,
                        help="run folder with model_config.json and checkpoints/")
    parser.add_argument("--checkpoint", default=None,
                        help="weights file to load (default: checkpoints/best.weights.h5, else "
                             "the newest checkpoint)")
    parser.add_argument("--mode", default="sample", choices=MODES,
                        help="random sketches, test sketches re-drawn from their z, the sketches "
                             "between two test sketches, or continuations of a partial sketch")
    parser.add_argument("--count", type=int, default=10,
                        help="sketches to draw (interpolate: steps, both ends included; complete: "
                             "continuations per prefix; default: 10)")
    parser.add_argument("--temperature", type=float, default=0.5,
                        help="sampling temperature tau > 0: lower is tidier, 1 is the model's own "
                             "distribution (default: 0.5)")
    parser.add_argument("--pen_temperature", type=float, default=None,
                        help="temperature of the pen states alone (lift, end), > 0; by default "
                             "--temperature, as in the paper. At a low --temperature, 1 lets "
                             "sketches end where the model would instead of looping on")
    parser.add_argument("--greedy", action="store_true",
                        help="draw the most likely points instead of sampling (ignores temperature)")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the random draws (default: a fresh one, printed)")
    parser.add_argument("--format", default="svg", choices=["svg", "png", "gif"],
                        help="svg or png: one grid picture; gif: one animation per drawn sketch")
    parser.add_argument("--output_dir", default=None,
                        help="folder for the pictures (default: <run_dir>/drawings)")
    parser.add_argument("--force", action="store_true",
                        help="overwrite pictures of the same name (by default that is an error)")
    parser.add_argument("--data_dir", default="datasets",
                        help="folder of the run's .npz data sets (reconstruct, interpolate, complete; "
                             "default: datasets; missing known sets are downloaded there)")
    parser.add_argument("--indices", default=None,
                        help="test sketches to use: reconstruct, a comma list (default: the first "
                             "--count); interpolate, two (default: 0,1); complete, a comma list of "
                             "sketches to take prefixes from (default: 0)")
    parser.add_argument("--prefix_strokes", type=int, default=None,
                        help="complete: how many strokes of each sketch make its prefix (default: "
                             "half of a test sketch's strokes, rounded up; all of a --prefix file)")
    parser.add_argument("--prefix", default=None,
                        help="complete: a sketch file to continue instead of test sketches, in the "
                             "data's units: a .npy (N, 3) stroke-3 array, or a .json list of "
                             "[dx, dy, pen_lifted] rows or of strokes of absolute [x, y] points")
    parser.add_argument("--image", action="append", default=None,
                        help="reconstruct: redraw this picture of a sketch (PNG, JPEG, ...: dark "
                             "lines on a light background or the reverse) --count times; repeat "
                             "the flag for more pictures; needs a model trained with encoder=cnn")
    parser.add_argument("--method", default="slerp", choices=["slerp", "lerp"],
                        help="interpolate: between the two latent vectors along the great circle "
                             "(slerp, the default) or the straight line (lerp); a lerp picture's "
                             "name says so")
    parser.add_argument("--independent_noise", action="store_true",
                        help="interpolate: give each frame its own random draws (by default all "
                             "frames share one stream, so neighbours differ only by z); the "
                             "picture's name says so")
    parser.add_argument("--labels", action="store_true",
                        help="label every drawn sketch of a grid with its temperature, seed and "
                             "number (its stream of the seed)")
    parser.add_argument("--cell_size", type=float, default=150,
                        help="pixels per grid cell, each sketch scaled to fit its own; 0 draws every "
                             "sketch at the data's size (then sizes compare, but one long stray "
                             "line makes every cell large; default: 150)")
    parser.add_argument("--columns", type=int, default=None,
                        help="sketches per row of a grid (default: up to 10; reconstruct and "
                             "interpolate: one row; complete: a row per prefix)")
    parser.add_argument("--gif_size", type=float, default=0,
                        help="gif: pixels of the square GIF, the sketch scaled to fit (default 0: "
                             "the data's size)")
    parser.add_argument("--gif_frame_ms", type=int, default=40,
                        help="gif: milliseconds per frame (100 frames at most; the last one "
                             "stays 1 s)")
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
    cli.quiet_tensorflow()
    import numpy as np

    import utils
    from seq2seqVAE import load_run

    check_run(args)
    output_dir = check_output_dir(args)
    prefix_file = None if args.prefix is None else utils.read_sketch(args.prefix)  # before the model
    test, indices = read_test_sketches(args)  # before the model too: data errors come first
    seed = args.seed
    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1)[0] % 1_000_000)
    picture = picture_name(args, seed, indices)
    # Before the model loads: a grid's picture is one file; GIFs are numbered from 000.
    first = f"{picture}-000.gif" if args.format == "gif" else f"{picture}.{args.format}"
    check_free([os.path.join(output_dir, first)], args.force)
    drawer = load_run(args.run_dir, args.checkpoint)
    draw_options = dict(temperature=args.temperature, greedy=args.greedy, seed=seed,
                        pen_temperature=args.pen_temperature)
    tau = "greedy" if args.greedy else f"tau {args.temperature:g}"
    if args.pen_temperature is not None:  # check_args refuses it with --greedy
        tau += f", pen {args.pen_temperature:g}"

    def drawn_labels(count):
        """The labels of `count` sketches drawn from the seed's streams 0, 1, ..."""
        if args.labels:
            return [f"{tau}, seed {seed} #{i}" for i in range(count)]
        return [tau] * count

    columns, prefix_lengths, gif_prefixes = args.columns, None, None
    if args.mode == "sample":
        sketches = drawer.sample(args.count, **draw_options)
        grid, labels = sketches, (drawn_labels(len(sketches)) if args.labels else None)
    elif args.mode == "complete":
        grid, labels, sketches, prefix_lengths, gif_prefixes = [], [], [], [], []
        for prefix, name in read_prefixes(args, drawer.scale_factor, prefix_file, test, indices):
            try:
                completions = drawer.complete(prefix, args.count, **draw_options)
            except ValueError as err:
                raise ValueError(f"{name}: {err}") from None
            grid += [prefix] + completions
            labels += [name] + drawn_labels(len(completions))
            sketches += completions
            prefix_lengths += [len(prefix)] * (1 + len(completions))
            gif_prefixes += [len(prefix)] * len(completions)
        columns = columns or args.count + 1
    elif args.image:
        grid, labels, sketches = redraw_pictures(args, drawer, draw_options, drawn_labels)
        columns = columns or args.count
    else:
        if args.mode == "reconstruct":
            originals = [test[i] for i in indices]
            sketches = drawer.reconstruct(originals, **draw_options)
            grid = originals + sketches
            labels = [f"test {i}" for i in indices] + drawn_labels(len(sketches))
        else:
            first, last = indices
            sketches = drawer.interpolate(test[first], test[last], steps=args.count,
                                          method=args.method, shared_noise=not args.independent_noise,
                                          **draw_options)
            # The two test sketches at the ends, the decoded path between them.
            grid = [test[first]] + sketches + [test[last]]
            positions = [f"{t:.2f}" for t in np.linspace(0.0, 1.0, args.count)]
            if args.labels:
                noise = "own noise" if args.independent_noise else "seed"
                positions = [f"{p}, {tau}, {noise} {seed}" for p in positions]
            labels = [f"test {first}"] + positions + [f"test {last}"]
        columns = columns or len(grid) // (2 if args.mode == "reconstruct" else 1)

    if args.seed is None:  # drawn: now the seed is worth saying
        print(f"seed {seed} (--seed={seed} draws the same again)", file=sys.stderr)
    if args.format == "gif":
        paths = [os.path.join(output_dir, f"{picture}-{number:03d}.gif")
                 for number in range(len(sketches))]
    else:
        paths = [os.path.join(output_dir, f"{picture}.{args.format}")]
    check_free(paths, args.force)
    os.makedirs(output_dir, exist_ok=True)
    scale = drawer.scale_factor
    if args.format == "gif":
        for number, (sketch, path) in enumerate(zip(sketches, paths)):
            utils.sketch_to_gif(sketch, path, scale_factor=scale, size=args.gif_size or None,
                                duration=args.gif_frame_ms,
                                prefix_length=gif_prefixes[number] if gif_prefixes else 0)
        return paths
    write = utils.sketches_to_svg if args.format == "svg" else utils.sketches_to_png
    write(grid, paths[0], columns=columns, labels=labels, scale_factor=scale,
          cell_size=args.cell_size or None, prefix_lengths=prefix_lengths)
    return paths


def read_test_sketches(args):
    """(test sketches in model units, the indices of those the mode uses) if it draws from
    test sketches, else (None, None); read with the run's config, before its model is built."""
    from sketch_rnn.drawing import load_split, read_run_config

    if args.mode == "sample" or args.image or args.prefix is not None:
        return None, None
    hps, scale_factor, data_sets = read_run_config(args.run_dir)
    if args.mode != "complete" and not hps.conditional:
        raise ValueError(f"--mode={args.mode}: the run in {args.run_dir} has no encoder "
                         "(conditional=False); --mode=sample and --mode=complete draw with it")
    test = load_split(args.data_dir, "test", data_sets, hps.max_seq_len, scale_factor)
    return test, parse_indices(args, len(test))


def redraw_pictures(args, drawer, draw_options, drawn_labels):
    """--image: each picture redrawn --count times; returns (grid, labels, sketches)."""
    import numpy as np

    hps = drawer.hps
    if not (hps.conditional and hps.encoder == "cnn"):
        kind = "has no encoder" if not hps.conditional else "encodes strokes (encoder=rnn)"
        raise ValueError(f"--image: the run in {args.run_dir} {kind}; pictures need a run trained "
                         "with --hparams=encoder=cnn")
    z = drawer.encode_image(args.image)  # (pictures, Nz), the posterior means
    sketches = drawer.decode(np.repeat(z, args.count, axis=0), **draw_options)
    labels = []
    for path in args.image:
        labels += [f"{os.path.basename(path)}, " + label for label in drawn_labels(args.count)]
    return sketches, labels, sketches


def picture_name(args, seed, indices=None):
    """<mode>-t<temperature>-s<seed>, "greedy" for the temperature with --greedy, and
    -p<pen temperature> after the temperature with --pen_temperature; an interpolation names
    its two test sketches after the mode (`indices`, from parse_indices), then what it does
    other than the default (lerp, independent noise)."""
    def decimals(t):  # two, more only where they are needed
        return f"{t:.2f}" if round(t, 2) == t else f"{t:g}"

    if args.greedy:
        tau = "greedy"
    else:
        tau = f"t{decimals(args.temperature)}"
        if args.pen_temperature is not None:
            tau += f"-p{decimals(args.pen_temperature)}"
    variant = ""
    if args.mode == "interpolate":
        first, last = indices
        variant = f"-{first}-{last}" + ("-lerp" if args.method == "lerp" else "") + (
            "-independent" if args.independent_noise else "")
    return f"{args.mode}{variant}-{tau}-s{seed}"


def check_free(paths, force):
    """Refuses (one line) to overwrite a picture unless --force."""
    if force:
        return
    for path in paths:
        if os.path.lexists(path):
            raise ValueError(f"{path} exists; pass --force to overwrite it, or another --seed, "
                             "--temperature or --output_dir")


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
    if args.pen_temperature is not None and not (math.isfinite(args.pen_temperature)
                                                 and args.pen_temperature > 0):
        raise ValueError(f"--pen_temperature must be a finite number > 0, got {args.pen_temperature}")
    if not (args.cell_size == 0 or 20 < args.cell_size <= MAX_CELL_SIZE):
        raise ValueError(f"--cell_size must be more than 20 and at most {MAX_CELL_SIZE} pixels "
                         f"(or 0), got {args.cell_size:g}")
    if not (args.gif_size == 0 or 20 < args.gif_size <= MAX_CELL_SIZE):
        raise ValueError(f"--gif_size must be more than 20 and at most {MAX_CELL_SIZE} pixels "
                         f"(or 0), got {args.gif_size:g}")
    if not 10 <= args.gif_frame_ms <= 60_000:
        raise ValueError(f"--gif_frame_ms must be from 10 to 60000, got {args.gif_frame_ms}")
    if args.columns is not None and not 1 <= args.columns <= MAX_COUNT:
        raise ValueError(f"--columns must be from 1 to {MAX_COUNT}, got {args.columns}")
    if args.seed is not None and not 0 <= args.seed < 2**32:
        raise ValueError(f"--seed must be from 0 to 2**32 - 1, got {args.seed}")
    if args.mode != "complete":
        for flag in ("prefix", "prefix_strokes"):
            if getattr(args, flag) is not None:
                raise ValueError(f"--{flag} applies to --mode=complete, not --mode={args.mode}")
    if args.image and args.mode != "reconstruct":
        raise ValueError(f"--image applies to --mode=reconstruct, not --mode={args.mode}")
    if args.image and args.indices is not None:
        raise ValueError("--image and --indices: give one (pictures to redraw, or test sketches)")
    if args.indices is not None and args.mode == "sample":
        raise ValueError("--indices applies to reconstruct, interpolate and complete; "
                         "--mode=sample draws from z ~ N(0, I)")
    if args.format == "gif":
        for flag in ("labels", "columns"):
            if getattr(args, flag) not in (None, False):
                raise ValueError(f"--{flag} applies to svg and png grids; a gif is one sketch "
                                 "(--gif_size, --gif_frame_ms)")
    if args.method != "slerp" and args.mode != "interpolate":
        raise ValueError(f"--method applies to --mode=interpolate, not --mode={args.mode}")
    parse_indices(args, None)  # their form and number, before anything loads
    if args.greedy and args.pen_temperature is not None:
        raise ValueError("--pen_temperature applies to sampling; --greedy takes the most likely "
                         "pen state at every step")
    if args.independent_noise and args.mode != "interpolate":
        raise ValueError(f"--independent_noise applies to --mode=interpolate, not --mode={args.mode}")
    if args.prefix is not None and args.indices is not None:
        raise ValueError("--prefix and --indices: give one (a file to continue, or test sketches)")
    if args.prefix_strokes is not None and not 1 <= args.prefix_strokes <= MAX_COUNT:
        raise ValueError(f"--prefix_strokes must be from 1 to {MAX_COUNT}, got {args.prefix_strokes}")
    if not os.path.isdir(args.run_dir):
        raise ValueError(f"--run_dir: {args.run_dir} is not a folder")


def check_run(args):
    """The files the flags name, before anything reads them (load_run checks the config)."""
    import utils

    if args.checkpoint is not None:
        utils.check_regular_file(args.checkpoint, "--checkpoint")
    if args.prefix is not None:
        utils.check_regular_file(args.prefix, "--prefix")
    for path in args.image or ():
        utils.check_regular_file(path, "--image")


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


def read_prefixes(args, scale_factor, prefix_file=None, test=None, indices=None):
    """complete's prefixes in model units, each with its label: the --prefix file's sketch
    (`prefix_file`, in the data's units, divided by `scale_factor`) or those of the `test`
    sketches (model units) at `indices`."""
    import numpy as np

    import utils

    if prefix_file is not None:
        sketch = prefix_file
        if args.prefix_strokes is not None:
            sketch = utils.first_strokes(sketch, args.prefix_strokes)
        sketch = utils.clamp_and_scale(sketch, scale_factor)  # as the data loader does
        return [(sketch, os.path.basename(args.prefix))]
    prefixes = []
    for index in indices:
        strokes = int(np.sum(test[index][:, 2] == 1))
        count = args.prefix_strokes or max(1, -(-strokes // 2))
        if count >= strokes:
            print(f"warning: test sketch {index} has {strokes} stroke{'s' if strokes != 1 else ''}, "
                  "so its prefix is the "
                  f"whole sketch and there is nothing to complete; ask for fewer with "
                  f"--prefix_strokes", file=sys.stderr)
        prefix = utils.first_strokes(test[index], count)
        prefixes.append((prefix, f"test {index}, {min(count, strokes)}/{strokes} strokes"))
    return prefixes


def parse_indices(args, available):
    """The test sketch indices the mode uses, checked against the `available` sketches
    (None: their form and number only, before the test sketches are loaded)."""
    if args.indices is None and available is None:
        return None
    if args.indices is None:
        indices = {"reconstruct": list(range(min(args.count, available))), "interpolate": [0, 1],
                   "complete": [0]}[args.mode]
        if args.mode == "reconstruct" and args.count > available:
            print(f"note: --count={args.count}, but the test split has {available} sketch"
                  f"{'es' if available != 1 else ''}: reconstructing {len(indices)}", file=sys.stderr)
    else:
        try:
            indices = [int(text) for text in args.indices.split(",")]
        except ValueError:
            raise ValueError(f"--indices: expected comma-separated integers, got '{args.indices}'") from None
    if args.mode == "interpolate" and len(indices) != 2:
        raise ValueError(f"--indices: interpolate takes two test sketches, got {len(indices)}")
    for index in indices:
        if index < 0:
            raise ValueError(f"--indices: {index} is not a test sketch (they count from 0)")
        if available is not None and index >= available:
            raise ValueError(f"--indices: {index} is not a test sketch (there are {available}, 0 to "
                             f"{available - 1})")
    return indices


if __name__ == "__main__":
    sys.exit(main())
