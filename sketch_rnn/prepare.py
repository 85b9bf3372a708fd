"""Turning drawings into a Sketch-RNN data set: filters, sampling, splits, the .npz file.

`prepare(files, out, settings)` reads each file with `readers.read_drawings`, runs every
drawing through the QuickDraw pipeline (`simplify.simplify_drawing`) unless it is already
simplified, converts it to stroke-3, keeps or drops it (filters, empty, too long, a
reservoir sample per class), splits what is kept per class with a seeded shuffle, and writes
the .npz atomically. Only the kept sketches stay in memory, as int16 arrays where their
values are integers: an ndjson file of any size streams through.
"""

import collections
import dataclasses
import math
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from sketch_rnn import readers
from sketch_rnn.datasets import SPLITS
from sketch_rnn.files import first_line, write_atomically
from sketch_rnn.pictures import stroke_lines
from sketch_rnn.simplify import CONVERT_ONLY, Pipeline, compact, lines_to_stroke3, simplify_drawing

# Reasons a drawing is dropped, in the summary's order.
UNRECOGNIZED = "unrecognized"
COUNTRY = "other country"
EMPTY = "empty"
TOO_LONG = "too long"
SAMPLED_OUT = "over --max_per_class"
MALFORMED = "malformed"
SHOWN_PROBLEMS = 10  # malformed drawings and bad files named in the summary


@dataclasses.dataclass(frozen=True)
class Settings:
    """What `prepare` does; each field is a flag of prepare_data.py.

    Attributes:
        pipeline: the steps run on drawings that are not yet simplified.
        reprocess: run ``pipeline`` also on simplified ndjson and stroke-3 input.
        drop_first_point: start each sketch from its first point as Magenta's
            ``lines_to_strokes`` (see `simplify.lines_to_stroke3`).
        recognized_only: drop QuickDraw drawings whose ``recognized`` is false.
        countries: drop QuickDraw drawings of other country codes (upper case; empty: keep
            all). Drawings without a country code (SVG, plain JSON) are kept, as those
            without ``recognized`` are by ``recognized_only``.
        max_per_class: keep at most this many sketches per class, a uniform sample
            (0: all).
        max_seq_len: drop sketches of more stroke-3 rows than this (0: no limit).
        split: fractions of each class for train, valid and test.
        seed: seed of the sampling and the split.
        json_layout: how .json strokes are read ("auto", "points", "axes").
        svg_tolerance: largest distance between an SVG curve and its polyline, in output
            units.
    """

    pipeline: Pipeline = Pipeline()
    reprocess: bool = False
    drop_first_point: bool = False
    recognized_only: bool = False
    countries: frozenset = frozenset()
    max_per_class: int = 0
    max_seq_len: int = 250
    split: tuple = (0.9, 0.05, 0.05)
    seed: int = 0
    json_layout: str = "auto"
    svg_tolerance: float = 0.5

    def __post_init__(self):
        if len(self.split) != 3 or not all(math.isfinite(f) and f > 0 for f in self.split) \
                or abs(sum(self.split) - 1) > 1e-6:
            raise ValueError(f"--split must be three fractions > 0 for train, valid and test that "
                             f"add up to 1, got {','.join(str(f) for f in self.split)}")
        if self.max_per_class < 0 or self.max_seq_len < 0:
            raise ValueError("--max_per_class and --max_seq_len must be >= 0 (0: no limit)")
        if not (math.isfinite(self.svg_tolerance) and self.svg_tolerance > 0):
            raise ValueError(f"--svg_tolerance must be a number > 0, got {self.svg_tolerance}")
        if self.json_layout not in readers.JSON_LAYOUTS:
            raise ValueError(f"--json_layout must be one of {', '.join(readers.JSON_LAYOUTS)}")


class TooFewSketches(ValueError):
    """Fewer than 3 sketches were kept; ``summary`` says what was read and dropped."""

    def __init__(self, message, summary):
        super().__init__(message)
        self.summary = summary


class Reservoir:
    """The kept sketches of one class: all of them, or a uniform sample of ``size``.

    Algorithm R (Vitter): the i-th sketch offered (from 0) replaces a random slot with
    probability size / (i + 1), so every sketch offered is kept with the same probability.
    """

    def __init__(self, size, rng):
        self.size, self.rng = size, rng
        self.sketches = []
        self.offered = 0

    def offer(self, sketch):
        """Keeps ``sketch`` or not; returns False when it (or the one it replaced) is dropped."""
        self.offered += 1
        if not self.size or len(self.sketches) < self.size:
            self.sketches.append(sketch)
            return True
        slot = int(self.rng.integers(self.offered))
        if slot < self.size:
            self.sketches[slot] = sketch
        return False


class Progress:
    """A progress line on stderr, by bytes read: redrawn on a terminal, every 10% otherwise."""

    def __init__(self, total, stream=None):
        self.total = max(total, 1)
        self.done = 0
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.last_draw = 0.0
        self.last_tenth = 0
        self.drawings = 0
        self.kept = 0

    def add(self, nbytes):
        self.done += nbytes
        self.draw()

    def draw(self, final=False):
        fraction = min(self.done / self.total, 1.0)
        text = (f"{_size(self.done)} of {_size(self.total)}, {self.drawings} drawings read, "
                f"{self.kept} kept")
        if self.tty:
            now = time.monotonic()
            if final or now - self.last_draw > 0.2:
                self.last_draw = now
                bar = "#" * int(30 * fraction) + "-" * (30 - int(30 * fraction))
                self.stream.write(f"\rreading [{bar}] {text}" + ("\n" if final else ""))
                self.stream.flush()
        elif final or self.last_tenth < int(10 * fraction) < 10:
            # 100% only at the end: a drawing's bytes are counted before the drawing is.
            self.last_tenth = int(10 * fraction)
            self.stream.write(f"reading: {10 * self.last_tenth}% ({text})\n")
            self.stream.flush()


def _size(nbytes):
    for unit in ("bytes", "KB", "MB", "GB"):
        if nbytes < 1024 or unit == "GB":
            return f"{nbytes:.0f} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024


class Summary:
    """Counts of what was read, kept and dropped, and the problems to name."""

    def __init__(self):
        self.files = 0
        self.bytes = 0
        self.read = 0
        self.dropped = collections.Counter()
        self.malformed = []  # (where, reason), the first SHOWN_PROBLEMS
        self.bad_files = []  # messages of files that could not be read
        self.per_class = collections.Counter()  # drawings read per class

    def drop(self, reason):
        self.dropped[reason] += 1


def _stroke3(drawing, settings):
    """The stroke-3 sketch of a Drawing, through the pipeline unless already simplified."""
    if drawing.stroke3 is not None and not settings.reprocess:
        return compact(drawing.stroke3)
    if drawing.stroke3 is not None:
        strokes = stroke_lines(drawing.stroke3)
    else:
        strokes = [stroke for stroke in drawing.strokes if len(stroke)]
    if not strokes:
        return np.zeros((0, 3), dtype=np.int16)
    pipeline = settings.pipeline if (settings.reprocess or not drawing.simplified) else CONVERT_ONLY
    return lines_to_stroke3(simplify_drawing(strokes, pipeline), settings.drop_first_point)


def collect(files, settings, summary, progress=None):
    """Reads ``files`` and returns {class name: Reservoir} of the kept stroke-3 sketches."""
    rng = np.random.default_rng(settings.seed)
    classes = {}
    for path in files:
        summary.files += 1
        try:
            for item in readers.read_drawings(
                    path, settings.json_layout, settings.svg_tolerance, settings.pipeline.size,
                    on_bytes=progress.add if progress else None):
                summary.read += 1
                if progress:
                    progress.drawings += 1
                if isinstance(item, readers.Malformed):
                    summary.drop(MALFORMED)
                    if len(summary.malformed) < SHOWN_PROBLEMS:
                        summary.malformed.append((item.where, item.reason))
                    continue
                summary.per_class[item.label] += 1
                if settings.recognized_only and item.recognized is False:
                    summary.drop(UNRECOGNIZED)
                    continue
                if (settings.countries and item.countrycode is not None
                        and item.countrycode.upper() not in settings.countries):
                    summary.drop(COUNTRY)
                    continue
                try:
                    with np.errstate(over="ignore", invalid="ignore"):
                        sketch = _stroke3(item, settings)
                    if not np.all(np.isfinite(sketch)):
                        raise ValueError("its coordinates are too large: offsets overflow float32")
                except (ValueError, TypeError) as err:
                    summary.drop(MALFORMED)
                    if len(summary.malformed) < SHOWN_PROBLEMS:
                        summary.malformed.append((item.where, first_line(err)))
                    continue
                if len(sketch) == 0:
                    summary.drop(EMPTY)
                    continue
                if settings.max_seq_len and len(sketch) > settings.max_seq_len:
                    summary.drop(TOO_LONG)
                    continue
                if item.label not in classes:
                    classes[item.label] = Reservoir(settings.max_per_class, rng)
                if classes[item.label].offer(sketch):
                    if progress:
                        progress.kept += 1
                else:
                    summary.drop(SAMPLED_OUT)
        except readers.BadFile as err:
            summary.bad_files.append(str(err))
            print(f"skipped {err}", file=sys.stderr)
        except (ValueError, TypeError, IndexError, RecursionError) as err:
            # a reader failing on something no test foresaw: the file is named, the rest read
            message = f"{path}: cannot be read ({type(err).__name__}: {first_line(err)})"
            summary.bad_files.append(message)
            print(f"skipped {message}", file=sys.stderr)
        summary.bytes += _file_size(path)
    return classes


def _file_size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def split_counts(sizes, fractions):
    """How many sketches of each class go to train, valid and test.

    Each class gives round(n * fraction) to valid and to test and the rest to train; a
    split left empty overall then takes one sketch from the train part of the class that
    has the most.

    Args:
        sizes: {class: number of sketches}.
        fractions: (train, valid, test).

    Returns:
        {class: [n_train, n_valid, n_test]}.

    Raises:
        ValueError: if fewer than 3 sketches are kept (each split needs one).
    """
    total = sum(sizes.values())
    if total < 3:
        raise ValueError(f"only {total} sketch{'es' if total != 1 else ''} kept: the train, "
                         "valid and test splits need at least one each")
    counts = {}
    for name, n in sizes.items():
        valid, test = round(n * fractions[1]), round(n * fractions[2])
        if valid + test > n - 1:  # keep at least one for training when the class can
            valid = min(valid, max(n - 1, 0) // 2)
            test = min(test, max(n - 1 - valid, 0))
        counts[name] = [n - valid - test, valid, test]
    for split in (1, 2):
        if not any(c[split] for c in counts.values()):
            donor = max(counts, key=lambda name: counts[name][0])
            counts[donor][0] -= 1
            counts[donor][split] += 1
    return counts


def split_sketches(classes, fractions, seed):
    """Shuffles each class (seeded) and splits it; each split is shuffled across classes.

    Args:
        classes: {class name: list of sketches}.
        fractions: (train, valid, test).
        seed: the seed.

    Returns:
        (names, splits): the sorted class names and {split: (sketches, labels)}, labels
        indexing ``names``.
    """
    rng = np.random.default_rng([seed, 1])  # apart from the sampling's stream
    names = sorted(classes)
    counts = split_counts({name: len(classes[name]) for name in names}, fractions)
    parts = {split: ([], []) for split in SPLITS}
    for label, name in enumerate(names):
        sketches = classes[name]
        order = rng.permutation(len(sketches))
        start = 0
        for split, count in zip(SPLITS, counts[name]):
            for index in order[start:start + count]:
                parts[split][0].append(sketches[index])
                parts[split][1].append(label)
            start += count
    splits = {}
    for split, (sketches, labels) in parts.items():
        order = rng.permutation(len(sketches))
        splits[split] = ([sketches[i] for i in order], np.asarray(labels, dtype=np.int32)[order])
    return names, splits


def object_array(sketches, dtype):
    """A 1-D object array of the sketches as ``dtype`` (np.array would stack equal shapes)."""
    array = np.empty(len(sketches), dtype=object)
    for index, sketch in enumerate(sketches):
        array[index] = np.asarray(sketch, dtype=dtype)
    return array


def write_npz(path, arrays):
    """Writes ``arrays`` as a compressed .npz via a temporary file and a rename.

    Nothing is left at ``path`` (or beside it) if writing fails or is interrupted, and a
    symbolic link at ``path`` is refused: ``write_atomically``, streaming the archive.
    """
    write_atomically(path, lambda f: np.savez_compressed(f, **arrays), "--out")


def build_arrays(names, splits):
    """The .npz's arrays: the three splits, and labels and class names for several classes.

    Sketches are int16 when every value of every sketch is an integer that fits, else all
    float32.
    """
    every = [sketch for sketches, _ in splits.values() for sketch in sketches]
    dtype = np.int16 if all(sketch.dtype == np.int16 for sketch in every) else np.float32
    arrays = {split: object_array(sketches, dtype) for split, (sketches, _) in splits.items()}
    if len(names) > 1:
        for split, (_, labels) in splits.items():
            arrays[f"{split}_labels"] = labels
        arrays["classes"] = np.array(names, dtype=str)
    return arrays


def prepare(files, out, settings=Settings(), show_progress=True):
    """Converts ``files`` into the Sketch-RNN data set ``out`` and returns the Summary.

    Args:
        files: the files to read (see `readers.find_inputs`).
        out: the .npz to write.
        settings: a `Settings`.
        show_progress: draw a progress line on stderr.

    Returns:
        (summary, names, arrays): the `Summary`, the class names and the written arrays.

    Raises:
        TooFewSketches: if fewer than 3 sketches are kept (nothing is written).
    """
    total = sum(_file_size(path) for path in files)
    progress = Progress(total) if show_progress else None
    summary = Summary()
    try:
        classes = collect(files, settings, summary, progress)
    finally:
        if progress:
            progress.draw(final=True)
    kept = {name: reservoir.sketches for name, reservoir in classes.items()}
    total_kept = sum(len(sketches) for sketches in kept.values())
    if total_kept < 3:
        raise TooFewSketches(f"{out}: not written: {total_kept} sketches kept, and the train, "
                             "valid and test splits need one each", summary)
    names, splits = split_sketches(kept, settings.split, settings.seed)
    arrays = build_arrays(names, splits)
    write_npz(out, arrays)
    return summary, names, arrays


def report(summary, arrays, names, out):
    """The summary printed at the end: files, drawings read, kept per split, dropped and why."""
    lines = [f"read {summary.read} drawing{'s' if summary.read != 1 else ''} from "
             f"{summary.files} file{'s' if summary.files != 1 else ''} ({_size(summary.bytes)})"]
    if arrays:
        counts = {split: len(arrays[split]) for split in SPLITS}
        dtype = arrays["train"][0].dtype if len(arrays["train"]) else np.dtype(np.int16)
        lines.append(f"kept {sum(counts.values())}: " + ", ".join(
            f"{split} {n}" for split, n in counts.items()) + f" ({dtype} offsets)")
    dropped = sum(summary.dropped.values())
    if dropped:
        reasons = [(MALFORMED, "malformed"), (UNRECOGNIZED, "unrecognized (--recognized_only)"),
                   (COUNTRY, "from other countries (--countrycode)"), (EMPTY, "empty"),
                   (TOO_LONG, "too long (--max_seq_len)"), (SAMPLED_OUT, "over --max_per_class")]
        lines.append(f"dropped {dropped}: " + ", ".join(
            f"{summary.dropped[key]} {text}" for key, text in reasons if summary.dropped[key]))
    for where, reason in summary.malformed:
        lines.append(f"  malformed: {where}: {reason}")
    if summary.dropped[MALFORMED] > len(summary.malformed):
        lines.append(f"  ... and {summary.dropped[MALFORMED] - len(summary.malformed)} more "
                     "malformed")
    if summary.bad_files:
        lines.append(f"skipped {len(summary.bad_files)} file"
                     f"{'s' if len(summary.bad_files) != 1 else ''} that could not be read:")
        lines += [f"  {message}" for message in summary.bad_files[:SHOWN_PROBLEMS]]
        if len(summary.bad_files) > SHOWN_PROBLEMS:
            lines.append(f"  ... and {len(summary.bad_files) - SHOWN_PROBLEMS} more")
    if names and len(names) > 1:
        lines += _classes_missing_from_splits(arrays, names)
        shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
        lines.append(f"{len(names)} classes ({shown}): labels in train_labels, valid_labels, "
                     "test_labels, names in classes")
    if out is not None:
        lines.append(f"wrote {out}")
    return "\n".join(lines)


def _classes_missing_from_splits(arrays, names):
    """Lines naming the classes with no sketch in valid or test (too few to split), if any."""
    missing = []
    for label, name in enumerate(names):
        absent = [split for split in SPLITS[1:] if not np.any(arrays[f"{split}_labels"] == label)]
        if absent:
            count = sum(int(np.sum(arrays[f"{split}_labels"] == label)) for split in SPLITS)
            missing.append(f"{name} ({count}: none in {' or '.join(absent)})")
    if not missing:
        return []
    shown = ", ".join(missing[:SHOWN_PROBLEMS]) + (", ..." if len(missing) > SHOWN_PROBLEMS else "")
    return [f"warning: {len(missing)} class{'es' if len(missing) != 1 else ''} too small to be "
            f"evaluated: {shown}"]


def data_set_hint(out):
    """The training command's flags that read ``out``, quoted for a POSIX shell."""
    out = Path(out)
    folder = out.parent if str(out.parent) else Path(".")
    return f"--data_dir={shlex.quote(str(folder))} --data_set={shlex.quote(out.stem)}"
