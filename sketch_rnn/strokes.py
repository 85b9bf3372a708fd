"""Stroke formats (section 3.1 of the paper), one sketch file, augmentation and scaling.

A sketch in *stroke-3* format is an (N, 3) array of rows (dx, dy, pen_lifted): the pen
moves by (dx, dy) from the previous point and ``pen_lifted`` is 1 after the last point
of a stroke. The model reads and writes *stroke-5* rows (dx, dy, p1, p2, p3), where
p1 = pen down, p2 = pen lifted after this point, p3 = the sketch has ended. The
conversions and the augmentation follow the official Magenta ``sketch_rnn/utils.py`` so
that numbers match the paper's code.
"""

import json
import os

import numpy as np

from sketch_rnn import readers
from sketch_rnn.files import check_regular_file, first_line

# S0, the token that starts every sequence (section 3.1).
START_TOKEN = np.array([0, 0, 1, 0, 0], dtype=np.float32)


def to_stroke5(sketches, max_len):
    """Pads stroke-3 sketches into a stroke-5 batch led by S0 (official pad_batch).

    Args:
        sketches: sequence of B arrays of shape (N_b, 3), rows (dx, dy, pen_lifted).
        max_len: time steps after the start token; every N_b must be <= max_len.

    Returns:
        float32 array of shape (B, max_len + 1, 5): row 0 is S0 = (0, 0, 1, 0, 0),
        rows 1..N_b are (dx, dy, 1 - pen, pen, 0) and the rows after the sketch are the
        end-of-sketch token (0, 0, 0, 0, 1).

    Raises:
        ValueError: if a sketch has more than max_len points.
    """
    batch = np.zeros((len(sketches), max_len + 1, 5), dtype=np.float32)  # (B, T+1, 5)
    batch[:, 0] = START_TOKEN
    for b, sketch in enumerate(sketches):
        n = len(sketch)
        if n > max_len:
            raise ValueError(
                f"sketch {b} of the batch has {n} points, more than max_len={max_len}"
            )
        batch[b, 1 : n + 1, 0:2] = sketch[:, 0:2]
        batch[b, 1 : n + 1, 3] = sketch[:, 2]
        batch[b, 1 : n + 1, 2] = 1 - sketch[:, 2]
        batch[b, n + 1 :, 4] = 1
    return batch


def to_stroke3(stroke5):
    """Converts one stroke-5 sketch back to stroke-3 (official to_normal_strokes).

    Args:
        stroke5: array of shape (T, 5) WITHOUT the start token (e.g. ``batch[b, 1:]``
            or a sampled sequence).

    Returns:
        array of shape (N, 3), rows (dx, dy, p2), cut before the first row whose p3 is 1
        (all T rows when no row ends the sketch). Unlike the official code, a sequence
        whose first row is the end token gives an empty (0, 3) sketch, not T rows.
    """
    stroke5 = np.asarray(stroke5)
    ends = np.flatnonzero(stroke5[:, 4] == 1)
    n = ends[0] if len(ends) else len(stroke5)
    stroke3 = np.zeros((n, 3), dtype=stroke5.dtype)
    stroke3[:, 0:2] = stroke5[:n, 0:2]
    stroke3[:, 2] = stroke5[:n, 3]
    return stroke3


def first_strokes(stroke3, count):
    """The first `count` strokes of a stroke-3 sketch: its rows up to the count-th pen lift.

    Returns all of it when it has fewer strokes (a last stroke without a pen lift counts).
    """
    if count < 0:
        raise ValueError(f"the number of strokes must be at least 0, got {count}")
    stroke3 = np.asarray(stroke3)
    lifts = np.flatnonzero(stroke3[:, 2] == 1)
    if count == 0:
        return stroke3[:0]
    return stroke3[:lifts[count - 1] + 1] if count <= len(lifts) else stroke3


def strokes_to_stroke3(strokes):
    """Strokes of absolute points, a list of (n_i, 2) sequences of (x, y), as stroke-3.

    The first point is the origin (its row is (0, 0, 0)); each stroke's last row lifts the pen.
    """
    points = np.concatenate([np.asarray(stroke, np.float64).reshape(-1, 2) for stroke in strokes])
    pen = np.concatenate([np.arange(len(stroke)) == len(stroke) - 1 for stroke in strokes])
    stroke3 = np.zeros((len(points), 3), np.float32)
    stroke3[:, :2] = np.diff(points, axis=0, prepend=points[:1])
    stroke3[:, 2] = pen
    return stroke3


MAX_SKETCH_FILE_BYTES = 4 << 20


def read_sketch(path):
    """Reads one sketch from a .npy or .json file, as stroke-3 in the file's units.

    Accepted: a .npy (N, 3) numeric array of (dx, dy, pen_lifted) rows; a .json list of
    [dx, dy, pen_lifted] rows, or a .json drawing: a list of strokes, each a list of absolute
    [x, y] points or QuickDraw's [[x...], [y...]] lists, read as prepare_data.py reads one
    (numbers after y, such as a time, are ignored; a file that reads both ways is refused).
    Nothing in the file can run code (numpy object arrays are refused).

    Raises:
        FileNotFoundError, UnsafePathError, ValueError: one line naming the file and what
        was expected.
    """
    path = os.fspath(path)
    check_regular_file(path)
    if os.path.getsize(path) > MAX_SKETCH_FILE_BYTES:
        raise ValueError(f"{path}: larger than {MAX_SKETCH_FILE_BYTES >> 20} MiB, too large for a sketch")
    expected = ("expected a stroke-3 sketch: (N, 3) rows of (dx, dy, pen_lifted), or a JSON "
                "list of strokes of [x, y] points")
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".npy":
        try:
            sketch = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as err:
            raise ValueError(f"{path}: not a numeric .npy array ({first_line(err)})") from None
        if sketch.dtype.kind not in "iuf":
            raise ValueError(f"{path}: holds {sketch.dtype} values; {expected}")
    elif suffix == ".json":
        try:
            with open(path, encoding="utf-8-sig") as f:  # a byte-order mark is allowed
                data = json.load(f)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: not valid JSON ({first_line(err)})") from None

        def is_number(value):
            return isinstance(value, (int, float)) and not isinstance(value, bool)

        def is_row(item, width):
            return isinstance(item, list) and len(item) == width and all(map(is_number, item))

        if not isinstance(data, list) or not data:
            raise ValueError(f"{path}: {expected}")
        if all(is_row(row, 3) for row in data):
            sketch = np.array(data, np.float64)
        elif all(isinstance(stroke, list) and stroke and all(isinstance(p, list) for p in stroke)
                 for stroke in data):
            # A drawing, read as prepare_data.py reads one: its strokes' layout (points, or
            # QuickDraw's x and y lists) is the one that fits, and an ambiguous file is refused.
            layouts = readers.fitting_layouts([data])
            if len(layouts) == 2:
                raise ValueError(f"{path}: its strokes read both as [x, y] points and as "
                                 "QuickDraw's [[x...], [y...]] (they are short); write the "
                                 "sketch as stroke-3 rows [dx, dy, pen_lifted]")
            if not layouts:
                raise ValueError(f"{path}: {expected}")
            try:
                sketch = strokes_to_stroke3(readers.canvas_strokes(data, layouts[0]))
            except ValueError as err:
                raise ValueError(f"{path}: {expected} ({first_line(err)})") from None
        else:
            raise ValueError(f"{path}: {expected}")
    else:
        raise ValueError(f"{path}: unknown kind of file; expected a .npy or .json sketch")
    if sketch.ndim != 2 or sketch.shape[1] != 3 or len(sketch) == 0:
        raise ValueError(f"{path}: holds an array of shape {sketch.shape}; {expected}")
    if not np.all(np.isfinite(sketch)):
        raise ValueError(f"{path}: holds NaN or infinite values")
    if not np.all(np.isin(sketch[:, 2], (0, 1))):
        raise ValueError(f"{path}: the pen column (the third) must be 0 or 1")
    return sketch.astype(np.float32)


def augment_strokes(strokes, prob, rng):
    """Randomly drops points inside strokes (official augment_strokes).

    A dropped point's offset is added to the previous kept point, so the drawing keeps
    its total displacement and its pen lifts. Only points drawn with the pen down that
    follow a pen-down point can go, and never the first two after a pen lift, so stroke
    ends and short strokes survive.

    Args:
        strokes: array of shape (N, 3) in stroke-3 format.
        prob: probability of dropping each eligible point.
        rng: ``np.random.Generator``.

    Returns:
        new array of shape (M, 3), M <= N, same dtype as ``strokes``.
    """
    strokes = np.asarray(strokes)
    if prob <= 0 or len(strokes) == 0:
        return strokes.copy()
    draws = rng.random(len(strokes))
    kept = []
    prev_pen = 1  # the official code starts from the point (0, 0, 1)
    count = 0  # points since the last pen lift (or since the last point after one)
    for i, point in enumerate(strokes):
        pen = point[2]
        if pen == 1 or prev_pen == 1:
            count = 0
        else:
            count += 1
        if pen == 0 and prev_pen == 0 and count > 2 and draws[i] < prob:
            kept[-1][0:2] += point[0:2]
        else:
            kept.append(point.copy())
            prev_pen = pen
    return np.array(kept, dtype=strokes.dtype)


def random_scale(strokes, factor, rng):
    """Stretches x and y independently by factors drawn from U(1 - factor, 1 + factor).

    Args:
        strokes: array of shape (N, 3) in stroke-3 format.
        factor: maximum relative stretch (official random_scale_factor).
        rng: ``np.random.Generator``.

    Returns:
        new float array of shape (N, 3) (float32 for integer input).
    """
    strokes = np.asarray(strokes)
    scaled = strokes.astype(np.result_type(strokes.dtype, np.float32))  # a copy
    x_scale, y_scale = rng.uniform(1.0 - factor, 1.0 + factor, size=2)
    scaled[:, 0] *= x_scale
    scaled[:, 1] *= y_scale
    return scaled


STROKE_LIMIT = 1000  # offsets are clamped to +-this before scaling, as the official loader does


def clamp_and_scale(sketch, scale_factor, limit=STROKE_LIMIT):
    """A stroke-3 sketch in model units, as the data loader gives it to the model: a float32
    copy with dx, dy clamped to [-limit, limit] and divided by the data's scale factor."""
    sketch = np.clip(sketch, -limit, limit).astype(np.float32)
    sketch[:, 0:2] /= scale_factor
    return sketch
