"""Google's QuickDraw "simplified" pipeline on polylines, and polylines to stroke-3.

A drawing here is a list of strokes, each a float64 array of shape (n, 2) of absolute
(x, y) points, y growing downwards. Google made its "simplified" QuickDraw data from the raw
drawings in four steps (quickdraw-dataset README, "Preprocessing"), then rounded the
coordinates to integers:

1. align the drawing to the top-left corner (minimum x and y are 0);
2. scale it uniformly so that its largest coordinate is 255 (the longest side);
3. resample every stroke at 1-pixel spacing along its length;
4. simplify every stroke with the Ramer-Douglas-Peucker algorithm, epsilon 2.0.

`simplify_drawing` runs them with the settings of a `Pipeline`. Reproduced on the raw
drawings in ../shared whose simplified version Google also published (74 drawings, 555
strokes, matched by key_id), these steps give Google's integer points exactly for 552
strokes (rounding half to even, as NumPy; rounding halves up matches 547);
tests/test_prepare_data.py measures it.

Google's RDP measures a point's distance to the *line* through the two ends of a run (as
the `rdp` package's ``pldist``): a maintained fast library, `simplification` (Rust), measures
to the *segment*, which keeps the tip of a stroke that doubles back on itself and matched only
430 of those 555 strokes. The line distance is the default, written here with NumPy (the
`rdp` package, which has it, is pure Python and takes 0.13 s a drawing, 5 hours for a
150,000-drawing category); ``rdp_distance="segment"`` uses `simplification`.
"""

import dataclasses

import numpy as np

RDP_DISTANCES = ("line", "segment")


@dataclasses.dataclass(frozen=True)
class Pipeline:
    """Which steps `simplify_drawing` runs; the defaults are Google's.

    Attributes:
        align: move the drawing so that its smallest x and y are 0.
        size: scale uniformly so that the largest coordinate (after aligning: the longest
            side) is this; 0 keeps the drawing's scale.
        spacing: resample each stroke at this distance along it; 0 skips resampling.
        epsilon: RDP tolerance; 0 skips simplification.
        rdp_distance: "line" (Google's: distance to the line through the run's ends) or
            "segment" (distance to the segment, via the `simplification` library).
        round: round the coordinates to integers after the other steps, as Google's data.
    """

    align: bool = True
    size: float = 255.0
    spacing: float = 1.0
    epsilon: float = 2.0
    rdp_distance: str = "line"
    round: bool = True

    def __post_init__(self):
        for name in ("size", "spacing", "epsilon"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a number >= 0 (0 turns the step off), got {value}")
        if self.rdp_distance not in RDP_DISTANCES:
            raise ValueError(f"rdp_distance must be one of {', '.join(RDP_DISTANCES)}, "
                             f"got {self.rdp_distance!r}")


# Only the conversion to stroke-3: for data that is already simplified.
CONVERT_ONLY = Pipeline(align=False, size=0.0, spacing=0.0, epsilon=0.0, round=False)


def align_top_left(strokes):
    """Translates the drawing so that its smallest x and smallest y are 0."""
    low = np.min([stroke.min(axis=0) for stroke in strokes], axis=0)
    return [stroke - low for stroke in strokes]


def scale_to(strokes, size):
    """Scales uniformly so that the largest coordinate is ``size`` (aspect ratio kept).

    After `align_top_left` the largest coordinate is the longest side of the bounding box.
    A drawing whose largest coordinate is 0 (a single point at the origin) is left as is.
    """
    largest = max(float(stroke.max()) for stroke in strokes)
    if largest <= 0:
        return strokes
    return [stroke * (size / largest) for stroke in strokes]


def resample(stroke, spacing):
    """Points every ``spacing`` along a polyline (arc length), from its start, and its end.

    A stroke of zero length (a dot) becomes two copies of its point, as in Google's
    simplified data, where every stroke has at least two points.

    Args:
        stroke: (n, 2) float array.
        spacing: distance between consecutive output points, > 0.

    Returns:
        (m, 2) float64 array: the points at arc lengths 0, spacing, 2*spacing, ... and the
        stroke's last point.
    """
    steps = np.hypot(*np.diff(stroke, axis=0).T)
    along = np.concatenate([[0.0], np.cumsum(steps)])
    length = along[-1]
    if length == 0:
        return np.repeat(stroke[:1], 2, axis=0)
    at = np.arange(0.0, length, spacing)
    if at[-1] < length:
        at = np.append(at, length)
    return np.stack([np.interp(at, along, stroke[:, 0]), np.interp(at, along, stroke[:, 1])],
                    axis=1)


def rdp_line(stroke, epsilon):
    """Ramer-Douglas-Peucker with the distance to the line through each run's two ends.

    A point is kept when it is farther than ``epsilon`` from that line (from the end point
    itself when the run's ends coincide), as in Google's QuickDraw preprocessing.

    Args:
        stroke: (n, 2) float array.
        epsilon: tolerance.

    Returns:
        the kept points, in order (the first and last always).
    """
    n = len(stroke)
    if n < 3:
        return stroke
    keep = np.zeros(n, dtype=bool)
    keep[0] = keep[-1] = True
    runs = [(0, n - 1)]
    while runs:
        first, last = runs.pop()
        if last - first < 2:
            continue
        start = stroke[first]
        inner = stroke[first + 1:last] - start
        direction = stroke[last] - start
        norm = np.hypot(*direction)
        if norm == 0:
            distance = np.hypot(inner[:, 0], inner[:, 1])
        else:  # |cross(direction, inner)| / |direction|
            distance = np.abs(direction[0] * inner[:, 1] - direction[1] * inner[:, 0]) / norm
        farthest = int(np.argmax(distance))
        if distance[farthest] > epsilon:
            split = first + 1 + farthest
            keep[split] = True
            runs.append((first, split))
            runs.append((split, last))
    return stroke[keep]


def rdp_segment(stroke, epsilon):
    """Ramer-Douglas-Peucker with the distance to the segment, by `simplification` (Rust)."""
    from simplification.cutil import simplify_coords

    if len(stroke) < 3:
        return stroke
    return np.asarray(simplify_coords(np.ascontiguousarray(stroke, dtype=np.float64), epsilon),
                      dtype=np.float64).reshape(-1, 2)


def simplify_drawing(strokes, pipeline=Pipeline()):
    """Runs the pipeline's steps (align, scale, resample, RDP, round) on a drawing.

    Args:
        strokes: list of (n, 2) float arrays, each with at least one point.
        pipeline: a `Pipeline`; the default is Google's.

    Returns:
        list of (m, 2) float64 arrays (integers when ``pipeline.round``).
    """
    strokes = [np.asarray(stroke, dtype=np.float64) for stroke in strokes]
    if not strokes:
        return strokes
    if pipeline.align:
        strokes = align_top_left(strokes)
    if pipeline.size > 0:
        strokes = scale_to(strokes, pipeline.size)
    if pipeline.spacing > 0:
        strokes = [resample(stroke, pipeline.spacing) for stroke in strokes]
    if pipeline.epsilon > 0:
        rdp = rdp_line if pipeline.rdp_distance == "line" else rdp_segment
        strokes = [rdp(stroke, pipeline.epsilon) for stroke in strokes]
    if pipeline.round:
        strokes = [np.round(stroke) for stroke in strokes]
    return strokes


INT16_MAX = np.iinfo(np.int16).max


def lines_to_stroke3(strokes, drop_first_point=False):
    """Stroke-3 rows (dx, dy, pen_lifted) of a drawing given as absolute polylines.

    Each point becomes a row holding its offset from the previous point (across strokes),
    with pen_lifted = 1 on the last point of every stroke. The first row is (0, 0, p): the
    sketch starts at its first point, which is therefore kept and drawn. With
    ``drop_first_point`` that row is left out, as Magenta's ``lines_to_strokes`` does (and
    as aaron_sheep.npz and short_kanji.npz were made): the first point becomes the origin
    the pen starts from, lifted, so the first segment is not drawn.

    Args:
        strokes: list of (n, 2) arrays (empty strokes are skipped).
        drop_first_point: see above.

    Returns:
        an (N, 3) array: int16 when every value is an integer that fits in int16, float32
        otherwise. N may be 0.
    """
    strokes = [stroke for stroke in strokes if len(stroke)]
    if not strokes:
        return np.zeros((0, 3), dtype=np.int16)
    points = np.concatenate(strokes).astype(np.float64, copy=False).reshape(-1, 2)
    rows = np.zeros((len(points), 3), dtype=np.float64)
    rows[1:, :2] = np.diff(points, axis=0)
    rows[np.cumsum([len(stroke) for stroke in strokes]) - 1, 2] = 1
    if drop_first_point:
        rows = rows[1:]
    return compact(rows)


def compact(stroke3):
    """``stroke3`` as int16 when its values are integers that fit, else as float32."""
    stroke3 = np.asarray(stroke3)
    if stroke3.dtype == np.int16:
        return stroke3
    if stroke3.size == 0 or (np.all(np.isfinite(stroke3)) and np.all(stroke3 == np.round(stroke3))
                             and np.abs(stroke3).max() <= INT16_MAX):
        return stroke3.astype(np.int16)
    return stroke3.astype(np.float32)
