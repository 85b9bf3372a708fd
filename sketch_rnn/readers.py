"""Readers of drawings: QuickDraw ndjson, SVG, JSON lists of strokes, stroke-3 .npy/.npz.

`read_drawings(path, ...)` yields, for one file, a `Drawing` for each drawing it holds and a
`Malformed` for each one it cannot read (an ndjson line that is not JSON, a stroke of
mismatched lists...). A file that is not what its extension says (an .svg that is not
SVG, an .npz that is not a zip, an .ndjson of binary) raises `BadFile`, one line naming it.

Formats (by extension):

- ``.ndjson``: one QuickDraw drawing per line, a JSON object whose ``drawing`` holds per
  stroke ``[[x...], [y...]]`` (Google's *simplified* format) or ``[[x...], [y...], [t...]]``
  (the *raw* format, float screen pixels and milliseconds), told apart per line. The class is
  the ``word`` key, else the file's stem. Read line by line: memory does not grow with the file.
- ``.svg``: one drawing per file; every ``path`` (lines, Bezier curves and arcs flattened to
  polylines within a tolerance), ``polyline``, ``polygon``, ``line``, ``rect``, ``circle``
  and ``ellipse`` outline becomes strokes, one per subpath, with transforms and the viewBox
  applied (by the svgelements library). The class is the name of the file's folder.
- ``.json``: a drawing as a list of strokes, each stroke either a list of points
  ``[[x, y], [x, y], ...]`` (what a web canvas records; numbers after y, such as a time,
  are ignored) or QuickDraw's ``[[x...], [y...]]`` / ``[[x...], [y...], [t...]]``; or a list
  of such drawings; or an object with a ``drawing`` key (and optionally ``word``,
  ``recognized``, ``countrycode``), or a list of those. The layout of bare strokes is the
  one that fits every stroke of the file (points: every point has the same count of
  numbers; QuickDraw: every stroke has 2 lists, or every one 3); short strokes fit both and
  then ``json_layout`` must say. The class is the ``word`` key, else the stem for a file of
  several drawings, else the folder's name.
- ``.npy``: one stroke-3 sketch (an (N, 3) array) or an object array of them; ``.npz``: a
  Sketch-RNN data set, whose train, valid and test sketches are all read (loaded with
  `load_npz`, which lets no file run code). The class is the file's stem, or the
  ``classes`` and ``*_labels`` arrays of a file this command wrote.
"""

import dataclasses
import json
import math
import os
from pathlib import Path

import numpy as np

from sketch_rnn.datasets import SPLITS
from sketch_rnn.files import check_regular_file, first_line
from sketch_rnn.safe_loading import load_npy, load_npz

EXTENSIONS = (".ndjson", ".svg", ".json", ".npy", ".npz")
MAX_LINE_BYTES = 8 << 20  # the longest raw QuickDraw drawings take well under 1 MB
MAX_JSON_BYTES = 256 << 20  # a .json file is parsed whole; bigger collections belong in ndjson
JSON_LAYOUTS = ("auto", "points", "axes")
MAX_SVG_ELEMENTS = 100_000  # after <use> references are expanded
MAX_CURVE_PIECES = 10_000  # per SVG curve: a bound for absurd coordinates, never met by drawings


class BadFile(ValueError):
    """A whole file cannot be read as its extension says; the message names it."""


@dataclasses.dataclass
class Drawing:
    """One drawing read from a file.

    Attributes:
        label: its class name.
        where: where it came from, for messages ("cat.ndjson line 12").
        strokes: list of (n, 2) float64 arrays of absolute points, or None for stroke-3 input.
        stroke3: the (N, 3) sketch of stroke-3 input, else None.
        simplified: already through Google's pipeline (simplified ndjson) or already a
            sketch (stroke-3 files): only converted by default.
        recognized: QuickDraw's ``recognized`` flag, None when absent.
        countrycode: QuickDraw's ``countrycode``, None when absent.
    """

    label: str
    where: str
    strokes: list = None
    stroke3: np.ndarray = None
    simplified: bool = False
    recognized: bool = None
    countrycode: str = None


@dataclasses.dataclass
class Malformed:
    """A drawing of a file that could not be read, and why."""

    where: str
    reason: str


class _Invalid(ValueError):
    """A drawing's JSON is not a list of strokes; becomes a Malformed."""


def _number_array(values, what):
    """A 1-D float64 array of finite numbers, or _Invalid."""
    if not isinstance(values, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise _Invalid(f"{what} is not a list of numbers")
    array = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(array)):
        raise _Invalid(f"{what} holds a value that is not finite")
    return array


def _axes_stroke(stroke, index):
    """QuickDraw's [[x...], [y...]] or [[x...], [y...], [t...]] as an (n, 2) array."""
    if not isinstance(stroke, list) or len(stroke) not in (2, 3):
        raise _Invalid(f"stroke {index} is not 2 or 3 lists [[x...], [y...](, [t...])]")
    x = _number_array(stroke[0], f"stroke {index}'s x")
    y = _number_array(stroke[1], f"stroke {index}'s y")
    if len(x) != len(y):
        raise _Invalid(f"stroke {index} has {len(x)} x but {len(y)} y values")
    return np.stack([x, y], axis=1)


def _points_stroke(stroke, index):
    """A canvas stroke [[x, y], [x, y], ...] as an (n, 2) array."""
    if not isinstance(stroke, list):
        raise _Invalid(f"stroke {index} is not a list of points")
    points = []
    for point in stroke:
        if not isinstance(point, list) or len(point) < 2:
            raise _Invalid(f"stroke {index} has a point that is not a list [x, y, ...]")
        points.append(point[:2])
    xy = _number_array([value for point in points for value in point], f"stroke {index}")
    return xy.reshape(-1, 2)


def _split_points(xs, ys, lengths):
    """Strokes from flat x and y lists, or None when a value is not a finite number."""
    try:
        points = np.array([xs, ys])
    except (ValueError, TypeError):  # nested lists
        return None
    if points.dtype.kind not in "iuf" or points.ndim != 2:
        return None
    points = points.T.astype(np.float64)
    if not np.all(np.isfinite(points)):
        return None
    return np.split(points, np.cumsum(lengths)[:-1])


def quickdraw_strokes(drawing):
    """Strokes of a QuickDraw ``drawing`` value, and whether it is raw (3 lists a stroke).

    Raises:
        _Invalid: if it is not a list of strokes of 2 lists of numbers each, or all of 3.
    """
    if not isinstance(drawing, list):
        raise _Invalid("'drawing' is not a list of strokes")
    sizes = {len(stroke) for stroke in drawing if isinstance(stroke, list)}
    if sizes == {2, 3}:
        raise _Invalid("'drawing' mixes strokes of 2 lists (simplified) and 3 lists (raw)")
    # One conversion for the whole drawing; on failure, stroke by stroke to say what is wrong.
    if all(isinstance(stroke, list) and len(stroke) in (2, 3) and isinstance(stroke[0], list)
           and isinstance(stroke[1], list) and len(stroke[0]) == len(stroke[1])
           for stroke in drawing):
        strokes = _split_points([x for stroke in drawing for x in stroke[0]],
                                [y for stroke in drawing for y in stroke[1]],
                                [len(stroke[0]) for stroke in drawing]) if drawing else []
        if strokes is not None:
            return strokes, sizes == {3}
    strokes = [_axes_stroke(stroke, index) for index, stroke in enumerate(drawing)]
    return strokes, sizes == {3}


def _strokes_of(drawings):
    for drawing in drawings:
        if isinstance(drawing, list):
            yield from drawing


def _fits_axes(drawings):
    """Every stroke is [[x...], [y...]] of equal lengths, all with or all without [t...]; a
    time axis has one time per point and never goes back (QuickDraw's milliseconds)."""
    sizes = set()
    for stroke in _strokes_of(drawings):
        if not (isinstance(stroke, list) and len(stroke) in (2, 3)
                and all(isinstance(axis, list) for axis in stroke)
                and len(stroke[0]) == len(stroke[1])):
            return False
        if len(stroke) == 3 and not _is_time_axis(stroke[2], len(stroke[0])):
            return False
        sizes.add(len(stroke))
    return len(sizes) <= 1


def _is_time_axis(times, points):
    """True for `points` numbers that never decrease."""
    numbers = all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in times)
    return numbers and len(times) == points and all(a <= b for a, b in zip(times, times[1:]))


def _fits_points(drawings):
    """Every stroke is a list of points [x, y, ...], all of the same count of numbers."""
    widths = set()
    for stroke in _strokes_of(drawings):
        if not isinstance(stroke, list):
            return False
        for point in stroke:
            if not (isinstance(point, list) and len(point) >= 2):
                return False
            widths.add(len(point))
    return len(widths) <= 1


def fitting_layouts(drawings):
    """Which of "points" and "axes" read every stroke of ``drawings`` (lists of strokes)."""
    return [name for name, test in (("points", _fits_points), ("axes", _fits_axes))
            if test(drawings)]


def json_layout(drawings, path):
    """The layout of a .json file's strokes: the one of "points" and "axes" that fits them.

    Raises:
        BadFile: if both fit (short strokes such as [[0, 1], [2, 3]] read either way) or none.
    """
    fits = fitting_layouts(drawings)
    if len(fits) == 1 or not any(True for _ in _strokes_of(drawings)):
        return fits[0] if fits else "points"
    if fits:
        raise BadFile(f"{path}: its strokes read both as points [[x, y], ...] and as axes "
                      "[[x...], [y...]] (they are short): say which with --json_layout")
    raise BadFile(f"{path}: not drawings: its strokes are neither lists of points [[x, y], ...] "
                  "nor QuickDraw's [[x...], [y...]]")


def canvas_strokes(drawing, layout):
    """Strokes of a JSON drawing in the given layout ("points" or "axes")."""
    if not isinstance(drawing, list):
        raise _Invalid("a drawing is not a list of strokes")
    read = _points_stroke if layout == "points" else _axes_stroke
    return [read(stroke, index) for index, stroke in enumerate(drawing)]


def _depth(value):
    """How many lists deep the first number of ``value`` sits (0 for a number)."""
    depth = 0
    while isinstance(value, list):
        if not value:
            return depth + 1
        value, depth = value[0], depth + 1
    return depth


def _record_fields(record):
    """``recognized`` and ``countrycode`` of a QuickDraw record, checked."""
    recognized = record.get("recognized")
    if recognized is not None and not isinstance(recognized, bool):
        raise _Invalid(f"'recognized' is {recognized!r}, expected true or false")
    country = record.get("countrycode")
    if country is not None and not isinstance(country, str):
        raise _Invalid(f"'countrycode' is {country!r}, expected a string")
    return recognized, country


def _record_drawing(record, default_label, where):
    """A Drawing from a QuickDraw record (an ndjson line or a JSON object)."""
    if not isinstance(record, dict):
        raise _Invalid(f"a JSON {type(record).__name__}, expected an object with a 'drawing' key")
    if "drawing" not in record:
        raise _Invalid("no 'drawing' key")
    label = record.get("word", default_label)
    if not isinstance(label, str) or not label.strip():
        raise _Invalid(f"'word' is {label!r}, expected a class name")
    strokes, raw = quickdraw_strokes(record["drawing"])
    recognized, country = _record_fields(record)
    return Drawing(label=label.strip(), where=where, strokes=strokes, simplified=not raw,
                   recognized=recognized, countrycode=country)


def _first_line(error):
    return first_line(error, limit=160)


def read_ndjson(path, on_bytes=None):
    """Yields a Drawing or Malformed per non-empty line of a QuickDraw ndjson file.

    Lines are read one at a time (at most MAX_LINE_BYTES each; a longer one is skipped as
    malformed without being held in memory).

    Raises:
        BadFile: if the file holds binary data or its first line is not a JSON object.
    """
    name = Path(path).name
    stem = Path(path).stem
    with open(path, "rb") as f:
        number = 0
        first = True
        while True:
            line = f.readline(MAX_LINE_BYTES)
            if not line:
                break
            number += 1
            size = len(line)
            too_long = size == MAX_LINE_BYTES and not line.endswith(b"\n")
            if too_long:
                line = b""
                while chunk := f.readline(MAX_LINE_BYTES):  # skip to the next newline
                    size += len(chunk)
                    if chunk.endswith(b"\n"):
                        break
            if on_bytes:
                on_bytes(size)
            where = f"{name} line {number}"
            if too_long:
                if first:
                    raise BadFile(f"{path}: not an ndjson file: line 1 is longer than "
                                  f"{MAX_LINE_BYTES} bytes")
                yield Malformed(where, f"longer than {MAX_LINE_BYTES} bytes")
                continue
            if not line.strip():
                continue
            if b"\0" in line:
                if first:
                    raise BadFile(f"{path}: not an ndjson file: it holds binary data (NUL bytes)")
                yield Malformed(where, "holds NUL bytes")
                continue
            try:
                record = json.loads(line)
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
                if first:
                    raise BadFile(f"{path}: not an ndjson file: line {number} is not JSON "
                                  f"({_first_line(err)})") from None
                yield Malformed(where, f"not JSON ({_first_line(err)})")
                continue
            if first and not isinstance(record, dict):
                raise BadFile(f"{path}: not a QuickDraw ndjson file: line {number} is a JSON "
                              f"{type(record).__name__}, expected an object with a 'drawing' key")
            first = False
            try:
                yield _record_drawing(record, stem, where)
            except _Invalid as err:
                yield Malformed(where, str(err))


def read_json(path, layout="auto", on_bytes=None):
    """Yields the drawings of a .json file (see the module docstring for its layouts).

    Raises:
        BadFile: if it is not JSON, larger than MAX_JSON_BYTES, or not drawings.
    """
    path = Path(path)
    size = os.path.getsize(path)
    if size > MAX_JSON_BYTES:
        raise BadFile(f"{path}: {size} bytes, more than the {MAX_JSON_BYTES} a .json file may "
                      "have (it is read whole); write one drawing per line as .ndjson instead")
    with open(path, "rb") as f:
        raw = f.read()
    if on_bytes:
        on_bytes(len(raw))
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise BadFile(f"{path}: not a JSON file ({_first_line(err)})") from None
    folder = path.resolve().parent.name or path.stem
    if value == []:
        return  # no drawings
    if isinstance(value, dict) or (isinstance(value, list) and value
                                   and all(isinstance(item, dict) for item in value)):
        records = [value] if isinstance(value, dict) else value
        for index, record in enumerate(records):
            where = path.name if isinstance(value, dict) else f"{path.name} drawing {index}"
            try:
                yield _record_drawing(record, folder if isinstance(value, dict) else path.stem,
                                      where)
            except _Invalid as err:
                if isinstance(value, dict):
                    raise BadFile(f"{path}: not a drawing: {err}") from None
                yield Malformed(where, str(err))
        return
    depth = _depth(value)
    if depth == 3:
        drawings, label, single = [value], folder, True
    elif depth == 4:
        drawings, label, single = value, path.stem, False
    else:
        raise BadFile(f"{path}: not a drawing or a list of drawings: expected strokes as lists "
                      "of [x, y] points or of [[x...], [y...]], found numbers nested "
                      f"{depth} lists deep")
    file_layout = json_layout(drawings, path) if layout == "auto" else layout
    for index, drawing in enumerate(drawings):
        where = path.name if single else f"{path.name} drawing {index}"
        try:
            yield Drawing(label=label, where=where, strokes=canvas_strokes(drawing, file_layout))
        except _Invalid as err:
            if single:
                raise BadFile(f"{path}: not a drawing: {err}") from None
            yield Malformed(where, str(err))


def _flatten_segment(segment, tolerance):
    """Points of one svgelements path segment after its start, within ``tolerance``."""
    import svgelements as se

    end = np.array([segment.end.x, segment.end.y], dtype=np.float64)
    if isinstance(segment, (se.Line, se.Close)):
        return end[None]
    if isinstance(segment, se.Arc):
        # a chord of an arc of parametric angle d strays at most max(rx, ry) * (1 - cos(d/2))
        radius = max(abs(segment.rx), abs(segment.ry))
        sweep = abs(segment.sweep)
        if radius <= tolerance:
            pieces = max(1, math.ceil(sweep / (math.pi / 2)))
        else:
            pieces = max(1, math.ceil(sweep / (2 * math.acos(1 - tolerance / radius))))
    elif isinstance(segment, (se.QuadraticBezier, se.CubicBezier)):
        # uniform pieces of a curve of second derivative at most M stray by at most M / (8 n^2)
        control = np.array([(p.x, p.y) for p in (
            [segment.start, segment.control, segment.end]
            if isinstance(segment, se.QuadraticBezier)
            else [segment.start, segment.control1, segment.control2, segment.end])])
        second = np.hypot(*np.diff(control, n=2, axis=0).T).max()
        bound = (len(control) - 1) * (len(control) - 2) * second
        pieces = max(1, math.ceil(math.sqrt(bound / (8 * tolerance))))
    else:
        return end[None]
    pieces = min(pieces, MAX_CURVE_PIECES)
    positions = np.linspace(0.0, 1.0, pieces + 1)[1:]
    points = np.asarray(segment.npoint(positions), dtype=np.float64).reshape(-1, 2)
    points[-1] = end
    return points


def _check_expansion(path):
    """Refuses an SVG whose <use> references expand it to over MAX_SVG_ELEMENTS elements.

    svgelements copies the referenced element for every <use>, so ten nested groups of ten
    <use> each would make 10^10 shapes from a file of a few hundred bytes.
    """
    import xml.etree.ElementTree as ElementTree

    root = ElementTree.parse(path).getroot()
    by_id = {element.get("id"): element for element in root.iter() if element.get("id")}
    sizes, active = {}, set()

    def size(element):
        if id(element) in sizes:
            return sizes[id(element)]
        if id(element) in active:
            raise BadFile(f"{path}: not a usable SVG file: a <use> refers to itself")
        active.add(id(element))
        total = 1 + sum(size(child) for child in element)
        if element.tag.rsplit("}", 1)[-1] == "use":
            target = element.get("href") or element.get("{http://www.w3.org/1999/xlink}href")
            if target and target.startswith("#") and target[1:] in by_id:
                total += size(by_id[target[1:]])
        active.discard(id(element))
        sizes[id(element)] = total = min(total, MAX_SVG_ELEMENTS + 1)
        return total

    if size(root) > MAX_SVG_ELEMENTS:
        raise BadFile(f"{path}: not a usable SVG file: its <use> references expand it to more "
                      f"than {MAX_SVG_ELEMENTS} elements")


def svg_shapes(path):
    """The path segments of every visible shape of an SVG file, transforms and viewBox applied.

    Returns:
        list, one per shape (path, polyline, polygon, line, rect, circle, ellipse), of its
        svgelements segments in document order.

    Raises:
        BadFile: if it is not an SVG document.
    """
    import xml.etree.ElementTree as ElementTree

    import svgelements as se

    try:
        _check_expansion(path)
        document = se.SVG.parse(str(path))
        if not isinstance(document, se.SVG):
            raise BadFile(f"{path}: not an SVG file: its root element is not <svg>")
        # svgelements leaves out display:none; visibility (inherited, and a child may set it
        # back to visible) it resolves onto each shape, and a hidden shape is not drawn.
        return [list(element.segments(transformed=True)) for element in document.elements()
                if isinstance(element, se.Shape)
                and element.values.get("visibility") not in ("hidden", "collapse")]
    except BadFile:
        raise
    except ElementTree.ParseError as err:
        raise BadFile(f"{path}: not an SVG file: XML error ({_first_line(err)})") from None
    except RecursionError:
        raise BadFile(f"{path}: not a usable SVG file: its <use> references nest too deep") from None
    except Exception as err:  # svgelements fails in many ways on odd documents
        raise BadFile(f"{path}: not a usable SVG file ({type(err).__name__}: "
                      f"{_first_line(err)})") from None


def flatten_shapes(shapes, tolerance):
    """Polylines of `svg_shapes`' segments: one stroke per subpath (each Move starts one).

    Args:
        shapes: what `svg_shapes` returns.
        tolerance: largest distance between a curve and its polyline (> 0; inf keeps only
            the ends of Bezier curves and four points a full turn of arcs).

    Returns:
        list of (n, 2) float64 arrays.
    """
    import svgelements as se

    strokes = []
    for segments in shapes:
        stroke = []
        for segment in segments:
            if isinstance(segment, se.Move):
                if stroke:
                    strokes.append(np.concatenate(stroke))
                stroke = [np.array([[segment.end.x, segment.end.y]], dtype=np.float64)]
                continue
            if segment.start is None or segment.end is None:
                continue
            if not stroke:
                stroke = [np.array([[segment.start.x, segment.start.y]], dtype=np.float64)]
            stroke.append(_flatten_segment(segment, tolerance))
        if stroke:
            strokes.append(np.concatenate(stroke))
    return [stroke for stroke in strokes if np.all(np.isfinite(stroke))]


def read_svg(path, tolerance=0.5, size=255.0, on_bytes=None):
    """Yields the one drawing of an SVG file (see `svg_shapes` and `flatten_shapes`).

    Args:
        tolerance: largest distance between a curve and its polyline, in units of the
            output: of the ``size`` grid when the drawing will be scaled to ``size`` (> 0),
            of the SVG's pixels otherwise.
    """
    path = Path(path)
    if on_bytes:
        on_bytes(os.path.getsize(path))
    shapes = svg_shapes(path)
    if size > 0:
        # The extent of a rough flattening (curves' ends only) is at most the drawing's, so
        # the tolerance in SVG pixels is at most the one asked for.
        rough = flatten_shapes(shapes, math.inf)
        if rough:
            points = np.concatenate(rough)
            extent = float((points.max(axis=0) - points.min(axis=0)).max())
            if extent > 0:
                tolerance = tolerance * extent / size
    strokes = flatten_shapes(shapes, tolerance)
    yield Drawing(label=path.resolve().parent.name or path.stem, where=path.name, strokes=strokes)


def _sketch_list(array, what):
    """The sketches of a .npy/.npz array: one (N, 3) sketch or a 1-D object array of them."""
    if array.dtype == object:
        if array.ndim != 1:
            raise ValueError(f"{what} is an object array of shape {array.shape}, expected "
                             "a 1-D array of sketches")
        return list(array)
    if array.ndim == 2 and array.shape[1] == 3 and array.dtype.kind in "biuf":
        return [array]
    raise ValueError(f"{what} has shape {array.shape} and dtype {array.dtype}, expected one "
                     "(N, 3) stroke-3 sketch or an object array of them")


def _stroke3_drawings(sketches, labels, where):
    for index, (sketch, label) in enumerate(zip(sketches, labels)):
        sketch = np.asarray(sketch)
        place = f"{where} sketch {index}"
        if sketch.ndim != 2 or sketch.shape[1:] != (3,) or sketch.dtype.kind not in "biuf":
            yield Malformed(place, f"shape {sketch.shape} of {sketch.dtype}, expected (N, 3) "
                                   "numbers")
        elif not np.all(np.isfinite(sketch)):
            yield Malformed(place, "holds NaN or infinite values")
        elif np.any((sketch[:, 2] != 0) & (sketch[:, 2] != 1)):
            yield Malformed(place, "has a pen value other than 0 and 1")
        else:
            yield Drawing(label=label, where=place, stroke3=sketch, simplified=True)


def read_npy(path, on_bytes=None):
    """Yields the sketches of a stroke-3 .npy file."""
    path = Path(path)
    if on_bytes:
        on_bytes(os.path.getsize(path))
    try:
        array = load_npy(path)
        sketches = _sketch_list(array, str(path))
    except ValueError as err:
        raise BadFile(_first_line(err)) from None
    yield from _stroke3_drawings(sketches, [path.stem] * len(sketches), path.name)


def read_npz(path, on_bytes=None):
    """Yields the train, valid and test sketches of a Sketch-RNN .npz file."""
    path = Path(path)
    if on_bytes:
        on_bytes(os.path.getsize(path))
    try:
        arrays = load_npz(path)
    except ValueError as err:
        raise BadFile(_first_line(err)) from None
    if not any(split in arrays for split in SPLITS):
        raise BadFile(f"{path} has none of the keys train, valid, test (found "
                      f"{', '.join(sorted(arrays))}): not a Sketch-RNN data set")
    classes = arrays.get("classes")
    for split in SPLITS:
        if split not in arrays:
            continue
        try:
            sketches = _sketch_list(arrays[split], f"{path} key '{split}'")
        except ValueError as err:
            raise BadFile(_first_line(err)) from None
        labels = [path.stem] * len(sketches)
        ids = arrays.get(f"{split}_labels")
        if (classes is not None and ids is not None and classes.dtype.kind == "U"
                and classes.ndim == 1 and ids.shape == (len(sketches),)
                and ids.dtype.kind in "iu" and len(ids) and 0 <= ids.min()
                and ids.max() < len(classes)):
            labels = [str(classes[i]) for i in ids]
        yield from _stroke3_drawings(sketches, labels, f"{path.name} {split}")


def read_drawings(path, json_layout="auto", svg_tolerance=0.5, size=255.0, on_bytes=None):
    """Yields the Drawing and Malformed items of one file, by its extension.

    Args:
        path: the file.
        json_layout: for .json strokes: "auto", "points" or "axes".
        svg_tolerance, size: see `read_svg`.
        on_bytes: called with the number of bytes read, as reading goes.

    Raises:
        BadFile: if the file cannot be read as its extension says.
    """
    path = Path(path)
    try:
        check_regular_file(path)
    except (OSError, ValueError) as err:
        raise BadFile(str(err)) from None
    extension = path.suffix.lower()
    try:
        if extension == ".ndjson":
            yield from read_ndjson(path, on_bytes)
        elif extension == ".json":
            yield from read_json(path, json_layout, on_bytes)
        elif extension == ".svg":
            yield from read_svg(path, svg_tolerance, size, on_bytes)
        elif extension == ".npy":
            yield from read_npy(path, on_bytes)
        elif extension == ".npz":
            yield from read_npz(path, on_bytes)
        else:
            raise BadFile(f"{path}: unknown extension {extension!r}, expected one of "
                          f"{', '.join(EXTENSIONS)}")
    except OSError as err:
        raise BadFile(f"{path}: cannot be read ({err.strerror or _first_line(err)})") from None
    except MemoryError:
        raise BadFile(f"{path}: not enough memory to read it") from None


def find_inputs(inputs, exclude=()):
    """The files to read: each file given, and the known files under each folder given.

    Folders are walked recursively in sorted order; names starting with '.' are skipped,
    as are the files in ``exclude`` (the output file).

    Raises:
        FileNotFoundError: for an input that does not exist.
        ValueError: for a file of unknown extension, or inputs that hold no known file.
    """
    excluded = {Path(p).resolve() for p in exclude}
    files = []
    for given in inputs:
        given = Path(given)
        if given.is_dir():
            found = []
            for folder, dirs, names in os.walk(given):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                found += [Path(folder) / n for n in sorted(names)
                          if not n.startswith(".") and Path(n).suffix.lower() in EXTENSIONS]
            if not found:
                raise ValueError(f"{given}: a folder with no drawings (no file ending in "
                                 f"{', '.join(EXTENSIONS)})")
            files += found
        elif given.exists() or given.is_symlink():
            if given.suffix.lower() not in EXTENSIONS:
                raise ValueError(f"{given}: unknown extension {given.suffix!r}, expected one of "
                                 f"{', '.join(EXTENSIONS)}")
            files.append(given)
        else:
            raise FileNotFoundError(f"{given}: no such file or folder")
    unique, seen = [], set()
    for path in files:
        key = path.resolve()
        if key not in seen and key not in excluded:
            seen.add(key)
            unique.append(path)
    return unique
