"""Turn your own drawings into a Sketch-RNN data set (.npz) that the training command reads.

Usage:
    # QuickDraw ndjson files (raw or simplified), one class per file or per 'word'
    python prepare_data.py cat.ndjson dog.ndjson --out datasets/pets.npz --max_per_class 10000
    # a folder of SVG drawings (subfolders become classes), JSON strokes, stroke-3 files
    python prepare_data.py my_drawings/ --out datasets/mine.npz
    # then train on it
    python seq2seqVAE_train.py --data_dir=datasets --data_set=mine

Inputs are files or folders (walked for .ndjson, .svg, .json, .npy, .npz), in any mix; see
sketch_rnn/readers.py for what each format may hold. Drawings that are not yet simplified
(raw QuickDraw ndjson, SVG, JSON strokes) go through Google's QuickDraw pipeline: align to the
top-left, scale the longest side to 255, resample every 1 pixel, Ramer-Douglas-Peucker with
epsilon 2.0, round to integers. Simplified ndjson and stroke-3 files are only converted unless
--reprocess. The output has train/valid/test object arrays of stroke-3 sketches (int16 when
integer), and train_labels/valid_labels/test_labels and classes when there are several classes.
It is written atomically: an error or Ctrl-C leaves no file. A summary says what was read,
kept and dropped, and why.
"""

import argparse
import math
import sys
from pathlib import Path

from sketch_rnn.cli import ArgumentParser


def _fractions(text):
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three fractions such as 0.9,0.05,0.05, "
                                         f"got {text!r}") from None
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected three fractions (train,valid,test), got "
                                          f"{text!r}")
    return values


def _at_least_zero(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            expected = "a whole number" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not (math.isfinite(value) and value >= 0):
            raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
        return value
    return parse


class _DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default, unless it has none worth showing (None, "", False)."""

    def _get_help_string(self, action):
        if action.default in (None, "", False) or action.required:
            return action.help
        return super()._get_help_string(action)


def parse_args(argv=None):
    parser = ArgumentParser(
        description="Convert drawings (QuickDraw ndjson, SVG, JSON strokes, stroke-3 .npy/.npz) "
                    "into a Sketch-RNN .npz data set.",
        formatter_class=_DefaultsHelpFormatter)
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="files or folders (walked for .ndjson .svg .json .npy .npz)")
    parser.add_argument("--out", required=True,
                        help="the .npz to write; train with --data_dir=<its folder> "
                             "--data_set=<its name without .npz>")
    pipeline = parser.add_argument_group(
        "the QuickDraw pipeline (on raw ndjson, SVG and JSON strokes; Google's defaults)")
    pipeline.add_argument("--no_align", action="store_true",
                          help="do not move each drawing to the top-left corner (min x, y = 0)")
    pipeline.add_argument("--longest_side", type=_at_least_zero(float), default=255.0,
                          help="scale each drawing uniformly to this longest side; 0 keeps its "
                               "scale")
    pipeline.add_argument("--resample_spacing", type=_at_least_zero(float), default=1.0,
                          help="resample each stroke at this distance along it; 0 skips it")
    pipeline.add_argument("--rdp_epsilon", type=_at_least_zero(float), default=2.0,
                          help="Ramer-Douglas-Peucker tolerance; 0 skips simplification")
    pipeline.add_argument("--rdp_distance", choices=("line", "segment"), default="line",
                          help="RDP's distance: to the line through a run's ends (Google's) or to "
                               "the segment (keeps the tips of strokes that double back)")
    pipeline.add_argument("--no_round", action="store_true",
                          help="keep float coordinates (float32 offsets) instead of rounding "
                               "them to integers (int16)")
    pipeline.add_argument("--reprocess", action="store_true",
                          help="run the pipeline also on simplified ndjson and stroke-3 input, "
                               "which is otherwise only converted")
    pipeline.add_argument("--drop_first_point", action="store_true",
                          help="leave out each sketch's first row (0, 0, p), as Magenta's "
                               "lines_to_strokes: the first point becomes the pen's start")
    pipeline.add_argument("--svg_tolerance", type=float, default=0.5,
                          help="largest distance between an SVG curve or arc and its polyline, "
                               "in output units (of the --longest_side grid)")
    pipeline.add_argument("--json_layout", choices=("auto", "points", "axes"), default="auto",
                          help="JSON strokes as [[x, y], ...] points or [[x...], [y...]] axes; "
                               "auto tells them apart per file")
    keep = parser.add_argument_group("what to keep")
    keep.add_argument("--recognized_only", action="store_true",
                      help="drop QuickDraw drawings whose 'recognized' is false")
    keep.add_argument("--countrycode", default="",
                      help="drop QuickDraw drawings of other country codes (comma list, "
                           "e.g. US,GB); drawings without one are kept")
    keep.add_argument("--max_per_class", type=_at_least_zero(int), default=0,
                      help="keep a uniform random sample of at most this many sketches per "
                           "class; 0 keeps all")
    keep.add_argument("--max_seq_len", type=_at_least_zero(int), default=250,
                      help="drop sketches of more stroke-3 rows than this (the training "
                           "default); 0: no limit")
    keep.add_argument("--split", type=_fractions, default="0.9,0.05,0.05",
                      help="fractions of each class for train,valid,test")
    keep.add_argument("--seed", type=int, default=0, help="seed of the sampling and the split")
    parser.add_argument("--force", action="store_true",
                        help="replace --out if it exists (a data set downloaded there, say)")
    parser.add_argument("--no_progress", action="store_true",
                        help="no progress line on stderr (the summary is still printed)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from sketch_rnn import prepare, readers
    from sketch_rnn.simplify import Pipeline

    try:
        out = Path(args.out)
        if out.suffix != ".npz":
            raise ValueError(f"--out must name a .npz file (the training command reads "
                             f"<data_dir>/<data_set>.npz), got {args.out}")
        if out.is_dir():
            raise ValueError(f"--out: {out} is a folder, expected a .npz file name")
        if out.exists() and not args.force:
            raise ValueError(f"--out: {out} exists; pass --force to replace it")
        settings = prepare.Settings(
            pipeline=Pipeline(align=not args.no_align, size=args.longest_side,
                              spacing=args.resample_spacing, epsilon=args.rdp_epsilon,
                              rdp_distance=args.rdp_distance, round=not args.no_round),
            reprocess=args.reprocess, drop_first_point=args.drop_first_point,
            recognized_only=args.recognized_only,
            countries=frozenset(c.strip().upper() for c in args.countrycode.split(",")
                                if c.strip()),
            max_per_class=args.max_per_class, max_seq_len=args.max_seq_len, split=args.split,
            seed=args.seed, json_layout=args.json_layout, svg_tolerance=args.svg_tolerance)
        files = readers.find_inputs(args.inputs, exclude=[out])
        if not files:
            raise ValueError("no input files left (the only one given is --out)")
        out.parent.mkdir(parents=True, exist_ok=True)
        summary, names, arrays = prepare.prepare(files, out, settings,
                                                 show_progress=not args.no_progress)
    except KeyboardInterrupt:
        print("\ninterrupted: nothing written", file=sys.stderr)
        return 130
    except prepare.TooFewSketches as err:
        print(prepare.report(err.summary, {}, None, None))
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(prepare.report(summary, arrays, names, out))
    print(f"train with: python seq2seqVAE_train.py {prepare.data_set_hint(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
