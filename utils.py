"""Stroke formats, safe .npz loading and the data sets of Sketch-RNN (Ha & Eck 2017).

A sketch in *stroke-3* format is an (N, 3) array of rows (dx, dy, pen_lifted): the pen
moves by (dx, dy) from the previous point and ``pen_lifted`` is 1 after the last point
of a stroke. The model reads and writes *stroke-5* rows (dx, dy, p1, p2, p3), where
p1 = pen down, p2 = pen lifted after this point, p3 = the sketch has ended (section 3.1
of the paper). The conversions and the DataLoader follow the official Magenta
``sketch_rnn/utils.py`` so that numbers match the paper's code.

The data sets are ``.npz`` files whose ``train``/``valid``/``test`` keys are object
arrays, which ``np.load`` can only read by unpickling, i.e. by letting the file run
code. ``load_npz`` reads them with an unpickler that can only rebuild numpy arrays.
"""

import contextlib
import copy
import http.client
import io
import json
import math
import os
import pickle
import pickletools
import re
import reprlib
import secrets
import stat
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np

# ---- stroke formats ----

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
    [dx, dy, pen_lifted] rows, or a .json list of strokes, each a list of absolute [x, y]
    points (converted by `strokes_to_stroke3`). Nothing in the file can run code (numpy
    object arrays are refused).

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
            with open(path, encoding="utf-8") as f:
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
        elif all(isinstance(stroke, list) and stroke and all(is_row(p, 2) for p in stroke)
                 for stroke in data):
            sketch = strokes_to_stroke3(data)
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


# ---- safe loading ----
#
# A pickle is a program: each opcode pushes an object or calls a function that the file
# names. The loader below runs such programs with three guards. Before anything is
# built, every opcode is checked (pickletools reads them without building anything) and
# their cost in memory is added up. Only the functions numpy's own pickles call are
# reachable, each replaced by a wrapper that checks its arguments. And no state from the
# file ever reaches numpy: a dtype is made fresh from its type string and the state the
# file sets on it must equal the state numpy writes for that dtype; an array is built
# with np.frombuffer from bytes whose length must match its shape. (Letting numpy's own
# dtype.__setstate__ run would let a file clear an object dtype's flags and make numpy
# read pointers from the file's bytes.)


class UnsafeFileError(ValueError):
    """A .npz file asks to build something other than numpy arrays when unpickled."""


class UnsafePathError(ValueError):
    """A path we would write through is a symbolic link, or one we would read is not a file."""


MAX_ARRAY_BYTES_VARIABLE = "SKETCH_RNN_MAX_ARRAY_BYTES"
# The memory a file may take by default: its size times this, plus a floor for small files.
BYTES_PER_FILE_BYTE = 64
MIN_ARRAY_BYTES = 64 << 20
# What one pickle opcode may cost beyond its argument: the object it makes (a tuple, a
# list, an int, a str header...), its slot in a container and the unpickler's memo.
_OPCODE_BYTES = 128
_ELEMENT_BYTES = 128  # an ndarray object without its data

# The opcodes numpy's pickles use (protocols 0 to 5), and dicts so that a dict is refused
# by name below. Everything else (persistent ids, extension codes, INST/OBJ/NEWOBJ class
# calls, out-of-band buffers, sets) is refused before anything is built.
_PICKLE_OPCODES = frozenset("""
    PROTO FRAME STOP MARK
    GLOBAL STACK_GLOBAL REDUCE BUILD
    NONE NEWTRUE NEWFALSE INT BININT BININT1 BININT2 LONG LONG1 LONG4
    STRING BINSTRING SHORT_BINSTRING BINBYTES SHORT_BINBYTES BINBYTES8 BYTEARRAY8
    UNICODE BINUNICODE SHORT_BINUNICODE BINUNICODE8
    EMPTY_TUPLE TUPLE TUPLE1 TUPLE2 TUPLE3 EMPTY_LIST LIST APPEND APPENDS
    EMPTY_DICT DICT SETITEM SETITEMS
    PUT BINPUT LONG_BINPUT MEMOIZE GET BINGET LONG_BINGET
""".split())
_TEXT_OPCODES = frozenset(["UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8"])
_MEMO_OPCODES = frozenset(["PUT", "BINPUT", "LONG_BINPUT", "GET", "BINGET", "LONG_BINGET"])
# Element types an array may have: numbers, text and objects, of a fixed size (no
# structured, void or datetime dtypes).
_PLAIN_TYPESTR = re.compile(r"(b1|[iu][1248]|f[248]|c(8|16)|[US][0-9]{1,6}|O8)")
# numpy 2 pickles name numpy._core, numpy 1 and Python 2 files numpy.core: each name maps
# to the checking wrapper (a method of the unpickler) that stands in for the function.
_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): "_reconstruct",
    ("numpy._core.multiarray", "_reconstruct"): "_reconstruct",
    ("numpy.core.multiarray", "scalar"): "_scalar",
    ("numpy._core.multiarray", "scalar"): "_scalar",
    ("numpy.core.numeric", "_frombuffer"): "_frombuffer",
    ("numpy._core.numeric", "_frombuffer"): "_frombuffer",
    ("numpy", "ndarray"): "_ndarray",
    ("numpy", "dtype"): "_dtype",
    ("_codecs", "encode"): "_encode",  # protocols 0-2 store bytes as latin1 text
    ("__builtin__", "bytes"): "_bytes",  # ... and empty bytes as bytes()
    ("builtins", "bytes"): "_bytes",
}


def array_bytes_limit(path, max_bytes=None):
    """The memory ``load_npz`` may use for ``path``, in bytes.

    ``max_bytes`` when given, else the environment variable SKETCH_RNN_MAX_ARRAY_BYTES,
    else 64 MiB plus 64 times the file's size (real data sets take about 10 times).
    """
    if max_bytes is None:
        text = os.environ.get(MAX_ARRAY_BYTES_VARIABLE)
        if text:
            try:
                max_bytes = int(text)
            except ValueError:
                raise ValueError(f"{MAX_ARRAY_BYTES_VARIABLE} must be a number of bytes, "
                                 f"got {text!r}") from None
    if max_bytes is None:
        return MIN_ARRAY_BYTES + BYTES_PER_FILE_BYTE * os.stat(path).st_size
    if max_bytes <= 0:
        raise ValueError(f"the memory limit of array loading must be positive, got {max_bytes}")
    return max_bytes


class _Budget:
    """The bytes a load may still allocate; refuses, naming the file, beyond its limit."""

    def __init__(self, source, limit):
        self.source, self.limit, self.used = source, limit, 0

    def spend(self, nbytes, what):
        self.used += nbytes
        if self.used > self.limit:
            raise ValueError(
                f"{self.source}: refusing to load: {what} would take more than the "
                f"{self.limit} bytes allowed for this file (set {MAX_ARRAY_BYTES_VARIABLE} "
                "to a larger number of bytes to allow more)"
            )


def _is_index(value):
    return type(value) is int and value >= 0  # not bool, not a builder


class _DtypeSpec:
    """A dtype named by its type string; the file may set only the state numpy writes."""

    __slots__ = ("typestr", "dtype", "built", "unpickler")

    def __init__(self, unpickler, typestr):
        self.unpickler, self.typestr, self.built = unpickler, typestr, False
        self.dtype = np.dtype(typestr)

    def __setstate__(self, state):
        refuse = self.unpickler.refuse
        if self.built:
            raise refuse(f"sets the state of dtype {self.typestr} twice")
        self.built = True
        if not (isinstance(state, tuple) and len(state) == 8 and state[1] in ("<", ">", "|")):
            raise refuse(f"sets an unknown state on dtype {self.typestr}")
        fresh = np.dtype(state[1] + self.typestr)
        expected = fresh.__reduce__()
        if (expected[1][0] != self.typestr or state != expected[2]
                or any(type(a) is not type(b) for a, b in zip(state, expected[2]))):
            raise refuse(f"sets the state {state!r:.80} on dtype {self.typestr}, which is "
                         f"not the state numpy writes ({expected[2]!r})")
        self.dtype = fresh


class _ArrayBuilder:
    """What numpy's _reconstruct returns; its state (shape, dtype, data) makes the array."""

    __slots__ = ("array", "unpickler")

    def __init__(self, unpickler, array=None):
        self.unpickler, self.array = unpickler, array

    def __setstate__(self, state):
        unpickler = self.unpickler
        if self.array is not None:
            raise unpickler.refuse("sets the state of an array twice")
        if isinstance(state, tuple) and len(state) == 5 and state[0] == 1:
            state = state[1:]
        if not (isinstance(state, tuple) and len(state) == 4):
            raise unpickler.corrupt("an array's state is not (shape, dtype, fortran_order, data)")
        shape, dtype, fortran, data = state
        if type(fortran) not in (bool, int):
            raise unpickler.corrupt("an array's fortran_order is not a flag")
        self.array = unpickler.make_array(shape, dtype, bool(fortran), data)


class _NdarrayName:
    """Stands for numpy.ndarray, which pickles name only as _reconstruct's first argument."""

    def __init__(self, unpickler):
        self.unpickler = unpickler

    def __call__(self, *args):
        raise self.unpickler.refuse("calls numpy.ndarray directly")


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals numpy needs, each to a checking wrapper.

    Build it on a payload that ``_scan_pickle`` accepted: the scan is what bounds the
    unpickler's own allocations. ``load()`` returns an ``_ArrayBuilder`` (or whatever
    else the payload built, for the caller to refuse).
    """

    def __init__(self, file, source, encoding, member="the pickle", budget=None):
        super().__init__(file, encoding=encoding)
        self.source, self.member = source, member
        self.budget = budget or _Budget(source, float("inf"))

    def refuse(self, what):
        return UnsafeFileError(
            f"{self.source}: refusing to load: the file holds objects that are not numpy "
            f"arrays ({self.member} {what})"
        )

    def corrupt(self, what):
        return ValueError(f"{self.source}: {self.member} is corrupt: {what}")

    def find_class(self, module, name):
        try:
            method = _NUMPY_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafeFileError(
                f"{self.source}: refusing to load: the file holds objects that are "
                f"not numpy arrays (it asks for {module}.{name})"
            ) from None
        return _NdarrayName(self) if method == "_ndarray" else getattr(self, method)

    def persistent_load(self, pid):
        raise self.refuse("refers to an object outside the file (a pickle persistent id)")

    # -- the wrappers --

    def _reconstruct(self, subtype, shape, typecode):
        if not isinstance(subtype, _NdarrayName) or shape != (0,) or typecode not in (b"b", "b"):
            raise self.refuse("calls numpy's _reconstruct with arguments numpy never writes")
        return _ArrayBuilder(self)

    def _dtype(self, typestr, align=False, copy=True):
        if not (isinstance(typestr, str) and _PLAIN_TYPESTR.fullmatch(typestr)):
            raise self.refuse(f"asks for the dtype {typestr!r:.40}, expected a plain number, "
                              "text or object type")
        if type(align) not in (bool, int) or align or type(copy) not in (bool, int) or not copy:
            raise self.refuse("asks for a dtype with options numpy never writes")
        return _DtypeSpec(self, typestr)

    def _encode(self, text, encoding):
        if not isinstance(text, str) or encoding != "latin1":
            raise self.refuse("calls _codecs.encode with arguments numpy never writes")
        try:
            return text.encode("latin1")
        except UnicodeEncodeError:
            raise self.corrupt("its latin1 text holds characters beyond latin1") from None

    def _bytes(self, *args):
        if args:
            raise self.refuse("calls bytes() with arguments")
        return b""

    def _frombuffer(self, buffer, dtype, shape, order):
        if order not in ("C", "F"):
            raise self.corrupt(f"an array has order {order!r:.20}, expected 'C' or 'F'")
        if isinstance(dtype, _DtypeSpec) and dtype.dtype.hasobject:
            raise self.refuse("asks for an object array from raw bytes")
        return _ArrayBuilder(self, self.make_array(shape, dtype, order == "F", buffer))

    def _scalar(self, dtype, data):
        if not isinstance(dtype, _DtypeSpec) or dtype.dtype.hasobject:
            raise self.refuse("asks for a numpy scalar that is not a number")
        return self.make_array((), dtype, False, data)[()]

    def make_array(self, shape, dtype, fortran, data):
        """An array of ``shape`` and ``dtype`` from the file's ``data``, checked first."""
        if not isinstance(dtype, _DtypeSpec):
            raise self.refuse(f"gives an array the dtype {type(dtype).__name__}")
        dtype = dtype.dtype
        if not (isinstance(shape, tuple) and len(shape) <= 32 and all(map(_is_index, shape))):
            raise self.corrupt(f"an array has shape {shape!r:.60}")
        count = math.prod(shape)
        order = "F" if fortran else "C"
        if not dtype.hasobject:
            if isinstance(data, str):  # protocol 0-2 bytes read by a latin1 unpickler
                data = self._encode(data, "latin1")
            if not isinstance(data, (bytes, bytearray)):
                raise self.corrupt(f"an array's data is a {type(data).__name__}, expected bytes")
            nbytes = count * dtype.itemsize
            if len(data) != nbytes:
                raise self.corrupt(f"an array of shape {shape} and dtype {dtype} needs "
                                   f"{nbytes} bytes, its data has {len(data)}")
            self.budget.spend(nbytes, f"{self.member}: an array of shape {shape}")
            return np.frombuffer(data, dtype=dtype, count=count).reshape(shape, order=order).copy(
                order="K")
        if not (isinstance(data, list) and len(data) == count):
            raise self.corrupt(f"an object array of shape {shape} does not hold {count} elements")
        elements = []
        for index, element in enumerate(data):
            if not isinstance(element, _ArrayBuilder):
                raise self.refuse(f"element {index} is a {type(element).__name__}")
            if element.array is None:
                raise self.refuse(f"element {index} is used before it is built")
            if element.array.dtype.kind not in "iuf":
                raise self.refuse(f"element {index} has dtype {element.array.dtype}, "
                                  "expected a numeric array")
            # Counted per slot: one element repeated through the pickle's memo is one
            # object here but a copy in every sketch list made from the array.
            self.budget.spend(_ELEMENT_BYTES + element.array.nbytes,
                              f"{self.member}: {count} elements")
            elements.append(element.array)
        array = np.empty(count, dtype=object)
        array[:] = elements if count else array
        return array.reshape(shape, order=order)


def _scan_pickle(payload, unpickler):
    """Checks every opcode of ``payload`` before it runs; returns the bytes it may take.

    Unpickling allocates what the file claims (a bytes opcode's length, a memo index) before
    reading it; pickletools only reads, so after this scan every such claim has been checked
    against the bytes that are really there.
    """
    cost = 0
    try:
        for count, (opcode, arg, _) in enumerate(pickletools.genops(payload), start=1):
            name = opcode.name
            if name in ("PERSID", "BINPERSID"):
                raise unpickler.refuse("refers to an object outside the file (a pickle "
                                       "persistent id)")
            if name not in _PICKLE_OPCODES:
                raise unpickler.refuse(f"uses the pickle opcode {name}, which numpy never writes")
            if name in _MEMO_OPCODES and not (_is_index(arg) and arg < count):
                raise unpickler.corrupt(f"its pickle uses memo slot {arg!r:.20} out of order")
            if isinstance(arg, (str, bytes, bytearray)):
                cost += len(arg) * (4 if name in _TEXT_OPCODES else 1)
            elif isinstance(arg, int):
                cost += arg.bit_length() // 8
            cost += _OPCODE_BYTES
    except ValueError as err:  # genops: truncated argument, unknown opcode, no STOP
        if isinstance(err, UnsafeFileError) or str(err).startswith(str(unpickler.source)):
            raise
        raise unpickler.corrupt(f"its pickled data could not be read ({first_line(err)})") from None
    return cost


def _unpickle_array(payload, source, member, shape, budget):
    """Unpickles one object array with _NumpyOnlyUnpickler and checks what came out."""
    scanner = _NumpyOnlyUnpickler(io.BytesIO(payload), source, "ASCII", member, budget)
    budget.spend(_scan_pickle(payload, scanner), f"{member}: its pickle")
    used = budget.used
    try:
        try:
            built = _NumpyOnlyUnpickler(io.BytesIO(payload), source, "ASCII", member, budget).load()
        except UnicodeDecodeError:
            # Python 2 pickles store array bytes as str; numpy's own advice is latin1.
            budget.used = used
            built = _NumpyOnlyUnpickler(io.BytesIO(payload), source, "latin1", member,
                                        budget).load()
    except (UnsafeFileError, MemoryError):
        raise
    except ValueError as err:
        if str(err).startswith(str(source)):  # ours: already one line naming the file
            raise
        raise scanner.corrupt(f"its pickled data could not be read ({first_line(err)})") from None
    except Exception as err:  # a broken pickle fails in many ways; all mean "corrupt"
        raise scanner.corrupt(f"its pickled data could not be read ({first_line(err)})") from None

    if not isinstance(built, _ArrayBuilder):
        raise scanner.refuse(f"is a {type(built).__name__}")
    if built.array is None:
        raise scanner.corrupt("its array is never given its data")
    array = built.array
    if array.shape != tuple(shape):
        raise ValueError(
            f"{source}: {member} is corrupt: its header says shape {tuple(shape)} "
            f"but its data has shape {array.shape}"
        )
    if array.dtype != object:
        raise scanner.refuse(f"has dtype {array.dtype}, expected an object array of arrays")
    return array


def _read_npy_header(fh, source, member):
    """Reads the magic string and header of one .npy member; returns (shape, fortran, dtype)."""
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except ValueError as err:
        raise ValueError(
            f"{source}: {member} is not a valid .npy array ({first_line(err)})"
        ) from None
    if dtype.fields is not None or dtype.subdtype is not None or dtype.kind not in "biufcUSO":
        raise UnsafeFileError(f"{source}: refusing to load: {member} has dtype {dtype}, "
                              "expected numbers, text or objects")
    return shape, fortran, dtype


_ZIP_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate",
                zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "lzma"}


def _read_member(archive, info, source, budget):
    """One .npy member of an .npz as an array, every size checked before it is allocated."""
    member = info.filename
    if info.flag_bits & 0x1:
        raise ValueError(f"{source}: {member} is encrypted; a Sketch-RNN .npz is not")
    if info.compress_type not in _ZIP_METHODS:
        raise ValueError(f"{source}: {member} uses zip compression method {info.compress_type}, "
                         f"expected one of {', '.join(_ZIP_METHODS.values())}")
    with archive.open(info) as fh:
        return _read_array(fh, source, member, budget)


def _read_array(fh, source, member, budget):
    """The .npy array that ``fh`` (a file or zip member) holds, sizes checked first."""
    shape, fortran, dtype = _read_npy_header(fh, source, member)
    count = math.prod(shape)
    if dtype.hasobject:
        budget.spend(count * _ELEMENT_BYTES, f"{member}: its header's shape {shape}")
        remaining = budget.limit - budget.used
        payload = fh.read(remaining + 1)
        budget.spend(len(payload), f"{member}: its pickle")
        return _unpickle_array(payload, source, member, shape, budget)
    nbytes = count * dtype.itemsize
    budget.spend(nbytes, f"{member}: its header's shape {shape} of {dtype}")
    data = fh.read(nbytes)
    if len(data) != nbytes:
        raise ValueError(f"{source}: {member} is corrupt: its header says shape {shape} of "
                         f"{dtype} ({nbytes} bytes) but it holds {len(data)} bytes")
    return np.frombuffer(data, dtype=dtype, count=count).reshape(
        shape, order="F" if fortran else "C").copy(order="K")


def load_npz(path, max_bytes=None):
    """Loads a Sketch-RNN .npz without letting the file run code or take unbounded memory.

    ``np.load(allow_pickle=True)`` would run whatever the pickles inside ask for. Here
    plain arrays are read with pickling disabled, and object arrays (the sketches) are
    unpickled by an unpickler that can only build numpy arrays of plain dtypes, from
    dtypes and data it checks itself; every element must then be a numeric array. Sizes
    are checked before anything is allocated (see ``array_bytes_limit``).

    Args:
        path: path of the .npz file.
        max_bytes: memory the arrays and the unpickling may take; by default
            ``array_bytes_limit(path)``.

    Returns:
        dict from key (member name without ``.npy``) to array.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        UnsafeFileError: if a pickle asks for anything but numpy arrays, or an object
            array holds anything but numeric arrays.
        ValueError: if the file is not a zip of .npy arrays, is corrupt or too large.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise ValueError(f"{path} is a directory, expected a .npz file")
    check_regular_file(path)
    budget = _Budget(path, array_bytes_limit(path, max_bytes))
    arrays = {}
    member = None
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                member = info.filename
                if not member.endswith(".npy"):
                    continue  # np.savez writes nothing else; anything else is not ours
                arrays[member[: -len(".npy")]] = _read_member(archive, info, path, budget)
    except zipfile.BadZipFile as err:
        raise ValueError(
            f"{path} is not a valid .npz file (a zip of .npy arrays): {first_line(err)}"
        ) from None
    except (zlib.error, EOFError, NotImplementedError, RuntimeError) as err:
        # zipfile: a damaged stream, an unsupported feature, a password asked for
        raise ValueError(f"{path}: {member} cannot be read ({first_line(err)})") from None
    except MemoryError:
        raise ValueError(f"{path}: not enough memory to load {member}") from None
    if not arrays:
        raise ValueError(f"{path} holds no .npy arrays, expected a Sketch-RNN .npz")
    return arrays


def load_npy(path, max_bytes=None):
    """Loads one .npy array (a stroke-3 sketch or an object array of them) as ``load_npz``.

    Plain arrays are read without pickle; an object array is rebuilt by the unpickler of
    ``load_npz``, which builds numpy arrays of numbers only, within the same memory limit.

    Raises:
        FileNotFoundError, UnsafePathError: if it is missing or not a regular file.
        UnsafeFileError: if its pickle asks for anything but numpy arrays.
        ValueError: if it is not a valid .npy file, is corrupt or too large.
    """
    path = Path(path)
    check_regular_file(path)
    budget = _Budget(path, array_bytes_limit(path, max_bytes))
    try:
        with open(path, "rb") as fh:
            return _read_array(fh, path, "the array", budget)
    except MemoryError:
        raise ValueError(f"{path}: not enough memory to load it") from None


# ---- files we read and write ----


def first_line(error, limit=300):
    """The reason an exception gives, in one line.

    Keras and urllib put an introduction, the reason and then lists of objects on separate
    lines: a first line that ends with ':' is joined to the next non-empty one and the rest
    is dropped. Long reasons are cut at ``limit`` characters.
    """
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    text = lines[0]
    if text.endswith(":") and len(lines) > 1:
        text = f"{text} {lines[1]}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_regular_file(path, what=None):
    """Raises one line unless ``path`` is a regular file (or a link to one).

    Reading a FIFO waits forever and a device never ends: check before opening.

    Args:
        path: the file.
        what: the flag or file it came from, to start the message (e.g. "--checkpoint").

    Raises:
        FileNotFoundError: if nothing is there; UnsafePathError: if it is not a regular file.
    """
    lead = f"{what}: " if what else ""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"{lead}{path} does not exist") from None
    except OSError as err:
        raise UnsafePathError(f"{lead}cannot read {path} ({err.strerror})") from None
    if stat.S_ISDIR(mode):
        raise UnsafePathError(f"{lead}{path} is a folder, expected a file")
    if not stat.S_ISREG(mode):
        raise UnsafePathError(f"{lead}{path} is not a regular file (a FIFO, socket or device); "
                              "refusing to read it")


def missing_folders(path):
    """The folders of `path`, it and its parents, that do not exist yet: deepest first."""
    missing, folder = [], os.path.abspath(path)
    while not os.path.lexists(folder):
        missing.append(folder)
        folder = os.path.dirname(folder)
    return missing


def remove_empty_folders(folders):
    """Removes each of `folders`, in their order (deepest first), that is empty; the others,
    and those another process has put files in, stay."""
    for folder in folders:
        with contextlib.suppress(OSError):
            os.rmdir(folder)


def refuse_link(path, what=None):
    """Raises one line if ``path`` is a symbolic link: we never write through one."""
    if os.path.islink(path):
        lead = f"{what}: " if what else ""
        raise UnsafePathError(f"{lead}{path} is a symbolic link; refusing to write through it "
                              "(remove the link)")


def write_atomically(path, data, what=None):
    """Writes ``data`` to ``path`` via a new temporary file and a rename.

    ``data`` is bytes, a str (written as UTF-8), or a function that writes to the binary file
    it is given (to stream what would not fit in memory as one bytes object). ``what`` names
    the path in the error for a link (a flag, say).

    A link at ``path`` is refused, and the temporary file is created, never opened, so no
    link can redirect the write; a crash leaves the old file or none, never half a file.
    The temporary name, ``.tmp-<pid>-<random>-<name>``, is one that
    ``callbacks.remove_stale_temporaries`` recognises.
    """
    path = os.fspath(path)
    refuse_link(path, what)
    if isinstance(data, str):
        data = data.encode("utf-8")
    write = data if callable(data) else (lambda f: f.write(data))
    directory, name = os.path.split(os.path.abspath(path))
    temporary = os.path.join(directory, f".tmp-{os.getpid()}-{secrets.token_hex(4)}-{name}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(temporary, flags, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.lexists(temporary):
            os.remove(temporary)
        raise


MAX_CONFIG_BYTES = 1 << 20
MAX_CONFIG_DEPTH = 16


def read_json_config(path):
    """Reads a run's JSON file (model_config.json) as a dict, with one-line errors.

    Args:
        path: the file.

    Returns:
        the dict it holds.

    Raises:
        FileNotFoundError, UnsafePathError: if it is missing or not a regular file.
        ValueError: naming the file, if it is larger than 1 MiB, not UTF-8, not JSON,
            nested deeper than 16 levels or not a JSON object.
    """
    config = read_json_file(path, "written by this project")
    if not isinstance(config, dict):
        raise ValueError(f"{path}: not a {os.path.basename(path)} written by this project "
                         f"(a JSON {type(config).__name__}, expected an object {{...}})")
    return config


def read_json_file(path, description=None):
    """Reads a small JSON file (a config) with one-line errors; any JSON value.

    Args:
        path: the file.
        description: how the messages describe the file ("not a model_config.json <it>").

    Raises:
        FileNotFoundError, UnsafePathError: if it is missing or not a regular file.
        ValueError: naming the file, if it is larger than 1 MiB, not UTF-8, not JSON or
            nested deeper than 16 levels.
    """
    check_regular_file(path)

    def wrong(reason):
        what = f"a {os.path.basename(path)} {description}" if description else "a JSON file"
        return ValueError(f"{path}: not {what} ({reason})")

    with open(path, "rb") as f:
        raw = f.read(MAX_CONFIG_BYTES + 1)
    if len(raw) > MAX_CONFIG_BYTES:
        raise wrong(f"larger than {MAX_CONFIG_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise wrong(f"not UTF-8 text: byte {err.start} is {raw[err.start]:#04x}") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise wrong(f"not valid JSON: {first_line(err)}") from None
    except RecursionError:
        raise wrong(f"nested deeper than {MAX_CONFIG_DEPTH} levels") from None
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if depth > MAX_CONFIG_DEPTH:
            raise wrong(f"nested deeper than {MAX_CONFIG_DEPTH} levels")
        children = item.values() if isinstance(item, dict) else item if isinstance(
            item, list) else ()
        pending.extend((child, depth + 1) for child in children)
    return value


def check_scale_factor(value, source):
    """Returns ``value`` as a float if it is a finite positive number; else one line naming ``source``."""
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not (math.isfinite(value) and value > 0)):
        raise ValueError(f"{source}: 'scale_factor' must be a positive number, "
                         f"got {reprlib.repr(value)}")
    return float(value)


def check_data_set_name(name, source):
    """One line naming ``source`` unless ``name`` is a bare data set name (no path)."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{source}: a data set name must be a non-empty string, "
                         f"got {reprlib.repr(name)}")
    if ("/" in name or "\\" in name or ".." in name or name.strip() != name
            or any(not character.isprintable() for character in name)):
        raise ValueError(f"{source}: {name!r} is not a data set name (names hold no path "
                         "separators or '..'; put the folder in --data_dir)")


def check_data_set_names(names, data_dir=None, source="data_set"):
    """Checks a stored list of data set names; returns it as a list of str.

    Every name must be a bare name (``check_data_set_name``) and, when ``data_dir`` is
    given, a known data set or a file ``<data_dir>/<name>.npz``.

    Raises:
        ValueError: naming ``source`` and the name.
    """
    if not (isinstance(names, list) and names):
        raise ValueError(f"{source}: 'data_set' must be a list of data set names (at least "
                         f"one), got {reprlib.repr(names)}")
    for name in names:
        check_data_set_name(name, source)
        if data_dir is not None:
            stem = name.removesuffix(".npz")
            known = stem in SKETCH_RNN_DATASETS or stem in quickdraw_categories()
            if not known and not (Path(data_dir) / f"{stem}.npz").is_file():
                raise ValueError(f"{source}: {_unknown_data_set(name, data_dir)}")
    return list(names)


# ---- datasets ----

SPLITS = ("train", "valid", "test")

QUICKDRAW_URL = "https://storage.googleapis.com/quickdraw_dataset/sketchrnn"
SKETCH_RNN_DATASETS_URL = "https://github.com/hardmaru/sketch-rnn-datasets/raw/master"

# Path of each file under SKETCH_RNN_DATASETS_URL.
SKETCH_RNN_DATASETS = {
    "aaron_sheep": "aaron_sheep/aaron_sheep.npz",
    "kanji": "kanji/short_kanji.npz",
    "short_kanji": "kanji/short_kanji.npz",
    "omniglot": "omniglot/omniglot.npz",
}

QUICKDRAW_CATEGORIES_FILE = (
    Path(__file__).resolve().parent / "datasets" / "quickdraw_categories.txt"
)


class DownloadError(RuntimeError):
    """A data set could not be downloaded."""


@lru_cache(maxsize=1)
def quickdraw_categories():
    """Returns the QuickDraw category names in datasets/quickdraw_categories.txt."""
    lines = QUICKDRAW_CATEGORIES_FILE.read_text(encoding="utf-8").splitlines()
    return frozenset(line.strip() for line in lines if line.strip())


def _unknown_data_set(name, data_dir=None):
    """Builds the ValueError for a name that is neither a file nor a known data set."""
    where = f"not a file in {data_dir} and " if data_dir is not None else ""
    return ValueError(
        f"unknown data set {name!r}: {where}not a QuickDraw category or one of "
        "aaron_sheep, kanji, omniglot"
    )


def _url_or_raise(name, base_url, data_dir):
    """Returns the download URL of ``name``; the error names data_dir when given."""
    if base_url is None:
        base_url = os.environ.get("SKETCH_RNN_BASE_URL") or None
    if name in SKETCH_RNN_DATASETS:
        base = SKETCH_RNN_DATASETS_URL if base_url is None else base_url.rstrip("/")
        return f"{base}/{SKETCH_RNN_DATASETS[name]}"
    if name in quickdraw_categories():
        base = QUICKDRAW_URL if base_url is None else base_url.rstrip("/")
        return f"{base}/{urllib.parse.quote(name)}.npz"
    raise _unknown_data_set(name, data_dir)


def dataset_url(name, base_url=None):
    """Returns the URL from which the data set ``name`` is downloaded.

    Args:
        name: a QuickDraw category ("cat", "aircraft carrier") or one of "aaron_sheep",
            "kanji" (= "short_kanji"), "omniglot".
        base_url: replaces the host part of both sources (e.g. a local mirror
            "http://127.0.0.1:8000" serves /cat.npz and /aaron_sheep/aaron_sheep.npz).
            Defaults to the environment variable SKETCH_RNN_BASE_URL when it is set.

    Returns:
        the URL as a string.

    Raises:
        ValueError: if ``name`` is not a known data set.
    """
    return _url_or_raise(name, base_url, None)


def _show_progress(label, done, total):
    """Redraws the one-line download progress bar on stderr."""
    mb = 1024 * 1024
    if total:
        width = 30
        filled = int(width * done / total)
        bar = "#" * filled + "-" * (width - filled)
        text = f"\r{label} [{bar}] {done / mb:.1f}/{total / mb:.1f} MB"
    else:
        text = f"\r{label} {done / mb:.1f} MB"
    sys.stderr.write(text)
    sys.stderr.flush()


DOWNLOAD_DEADLINE_VARIABLE = "SKETCH_RNN_DOWNLOAD_DEADLINE"
MAX_DOWNLOAD_BYTES_VARIABLE = "SKETCH_RNN_MAX_DOWNLOAD_BYTES"
DOWNLOAD_DEADLINE = 600.0  # seconds for a whole download
MAX_DOWNLOAD_BYTES = 2 << 30  # the largest QuickDraw category is about 200 MB
READ_TIMEOUT = 60.0  # seconds a single read may wait


def _setting(value, variable, default, kind):
    """``value`` if given, else the environment ``variable``, else ``default``; positive."""
    if value is None:
        text = os.environ.get(variable)
        try:
            value = kind(text) if text else default
        except ValueError:
            raise ValueError(f"{variable} must be a positive number, got {text!r}") from None
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{variable} must be a positive number, got {value!r}")
    return value


class _HttpRedirects(urllib.request.HTTPRedirectHandler):
    """Follows at most 5 redirects, and only to http(s) URLs."""

    max_redirections = 5

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        scheme = urllib.parse.urlsplit(newurl).scheme
        if scheme not in ("http", "https"):
            raise urllib.error.HTTPError(newurl, code, f"redirect to a {scheme}: URL refused",
                                         headers, fp)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def download_dataset(name, data_dir, base_url=None, deadline=None, max_bytes=None):
    """Downloads the data set ``name`` to ``<data_dir>/<name>.npz``.

    The file is written to a temporary file in ``data_dir``, checked with ``load_npz``
    and only then moved into place, so an interrupted or bad download never leaves a
    file that looks complete; the temporary file is removed on every failure.

    Args:
        name: a QuickDraw category or one of "aaron_sheep", "kanji", "short_kanji",
            "omniglot".
        data_dir: folder to save the file in (created if missing).
        base_url: see ``dataset_url``.
        deadline: seconds the whole download may take (default: the environment variable
            SKETCH_RNN_DOWNLOAD_DEADLINE, else 600). It is checked after every read, and
            a read waits at most 60 s (or the deadline, if shorter).
        max_bytes: largest file accepted (default: SKETCH_RNN_MAX_DOWNLOAD_BYTES, else
            2 GiB).

    Returns:
        Path of the saved file.

    Raises:
        ValueError: if ``name`` is not a known data set.
        DownloadError: if the download fails, is too slow or too large, or does not give a
            Sketch-RNN .npz.
    """
    data_dir = Path(data_dir)
    url = _url_or_raise(name, base_url, None)
    target = data_dir / f"{name}.npz"
    deadline = _setting(deadline, DOWNLOAD_DEADLINE_VARIABLE, DOWNLOAD_DEADLINE, float)
    max_bytes = _setting(max_bytes, MAX_DOWNLOAD_BYTES_VARIABLE, MAX_DOWNLOAD_BYTES, int)

    def failed(reason):
        return DownloadError(
            f"could not download {url} ({first_line(reason)}); fetch it by hand and save it "
            f"as {target}"
        )

    made = missing_folders(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=data_dir, prefix=f".{name}.", suffix=".tmp")
    tmp_path = Path(tmp_name)
    started = time.monotonic()
    opener = urllib.request.build_opener(_HttpRedirects)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with opener.open(url, timeout=min(READ_TIMEOUT, deadline)) as response:
                    total = int(response.headers.get("Content-Length") or 0)
                    if total > max_bytes:
                        raise failed(f"the server announces {total} bytes, more than the "
                                     f"{max_bytes} allowed by {MAX_DOWNLOAD_BYTES_VARIABLE}")
                    done = 0
                    try:
                        # read1: at most one read from the socket, so that a server sending
                        # a byte at a time cannot hold us past the deadline
                        while chunk := response.read1(1 << 16):
                            out.write(chunk)
                            done += len(chunk)
                            if done > max_bytes:
                                raise failed(f"more than the {max_bytes} bytes allowed by "
                                             f"{MAX_DOWNLOAD_BYTES_VARIABLE}")
                            if time.monotonic() - started > deadline:
                                raise failed(f"not finished after {deadline:g} s, the limit set "
                                             f"by {DOWNLOAD_DEADLINE_VARIABLE}")
                            _show_progress(f"downloading {name}.npz", done, total)
                    finally:
                        if done:  # end the progress line, also when the transfer broke
                            sys.stderr.write("\n")
            except DownloadError:
                raise
            except urllib.error.HTTPError as err:  # also a redirect loop, in several lines
                err.close()
                raise failed(f"HTTP {err.code} {first_line(err.reason)}") from None
            except urllib.error.URLError as err:
                raise failed(err.reason) from None
            except (OSError, http.client.HTTPException, ValueError) as err:
                # timeouts, cut bodies, malformed responses
                raise failed(str(err) or type(err).__name__) from None
        if total and done != total:
            raise failed(f"got {done} of {total} bytes")
        try:
            load_npz(tmp_path)
        except ValueError as err:
            # the temporary name means nothing to the user and is about to vanish
            raise failed(
                str(err).replace(str(tmp_path), "the downloaded file")
            ) from None
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)  # already gone after a successful os.replace
        if not target.exists():  # a failed download leaves no folder it made either
            remove_empty_folders(made)
    return target


def validate_sketches(sketches, source):
    """Checks that a split is a non-empty sequence of valid stroke-3 sketches.

    Args:
        sketches: sequence (list or 1-D object array) of arrays.
        source: where the split comes from, used to start every error message
            (e.g. "datasets/cat.npz key 'train'").

    Raises:
        ValueError: for an empty split, a sketch that is not an (N, 3) array of numbers,
            NaN or infinite values, or pen values other than 0 and 1.
    """
    if isinstance(sketches, np.ndarray) and sketches.ndim == 0:
        raise ValueError(f"{source} is a single value, expected a list of sketches")
    if len(sketches) == 0:
        raise ValueError(f"{source} is empty, expected at least one sketch")
    for index, sketch in enumerate(sketches):
        sketch = np.asarray(sketch)
        if sketch.ndim != 2 or sketch.shape[1] != 3:
            raise ValueError(
                f"{source}: sketch {index} has shape {sketch.shape}, expected (N, 3) "
                "rows of (dx, dy, pen_lifted)"
            )
        if sketch.dtype.kind not in "biuf":
            raise ValueError(
                f"{source}: sketch {index} has dtype {sketch.dtype}, expected numbers"
            )
        if not np.all(np.isfinite(sketch)):
            raise ValueError(f"{source}: sketch {index} holds NaN or infinite values")
        bad_pen = sketch[(sketch[:, 2] != 0) & (sketch[:, 2] != 1), 2]
        if len(bad_pen):
            raise ValueError(
                f"{source}: sketch {index} has pen value {bad_pen[0]} in column 3, "
                "expected 0 or 1"
            )


def _find_data_file(name, data_dir, base_url, download):
    """Returns the .npz path for one data set name, downloading it if allowed."""
    check_data_set_name(name, "--data_set")
    stem = name.removesuffix(".npz")
    if Path(data_dir).exists() and not Path(data_dir).is_dir():
        raise ValueError(f"--data_dir: {data_dir} is a file, expected the folder holding "
                         f"<data_set>.npz files (for this file: --data_dir="
                         f"{Path(data_dir).parent} --data_set={Path(data_dir).stem})")
    path = Path(data_dir) / f"{stem}.npz"
    if path.is_file():
        return path
    # A set of sketch-rnn-datasets may be saved under its other name: kanji is short_kanji.npz.
    upstream = SKETCH_RNN_DATASETS.get(stem)
    for other in [other for other, file in SKETCH_RNN_DATASETS.items() if file == upstream]:
        if (Path(data_dir) / f"{other}.npz").is_file():
            return Path(data_dir) / f"{other}.npz"
    if not download:
        raise FileNotFoundError(f"{path}: no such file (and downloading is turned off)")
    _url_or_raise(stem, base_url, data_dir)  # so that an unknown name names data_dir
    return download_dataset(stem, data_dir, base_url)


def _load_data_sets(data_dir, data_set, base_url, download):
    """Yields (name, path, arrays) for each name of ``data_set``, its three splits checked."""
    names = [name.strip() for name in str(data_set).split(",")]
    if not all(names):
        raise ValueError(f"data set list {data_set!r} holds an empty name")
    for name in names:
        path = _find_data_file(name, data_dir, base_url, download)
        arrays = load_npz(path)
        for split in SPLITS:
            if split not in arrays:
                raise ValueError(
                    f"{path} has no key '{split}': a Sketch-RNN .npz holds 'train', "
                    f"'valid' and 'test' (found {', '.join(sorted(arrays))})"
                )
            validate_sketches(arrays[split], f"{path} key '{split}'")
        counts = "/".join(str(len(arrays[split])) for split in SPLITS)
        print(f"loaded {counts} train/valid/test sketches from {path}")
        yield name.removesuffix(".npz"), path, arrays


def load_strokes(data_dir, data_set, base_url=None, download=True):
    """Loads one or more data sets and merges their splits as the official code does.

    Keys other than the three splits (``train_labels``, ``classes``...) are not read: see
    ``load_labelled_strokes`` for the labels.

    Args:
        data_dir: folder holding ``<name>.npz`` files (downloads are saved here too).
        data_set: a name or a comma-separated list of names ("cat,guitar"). A name means
            ``<data_dir>/<name>.npz`` (a name ending in .npz too); a name holding a
            path separator or '..' is refused: the folder goes in ``data_dir``.
        base_url: see ``dataset_url``.
        download: fetch missing files (only known data sets can be fetched).

    Returns:
        (train, valid, test): three lists of float32 arrays of shape (N, 3) whose pen
        column is exactly 0 or 1.

    Raises:
        FileNotFoundError: if a file is missing and download is False.
        ValueError: for an unknown name, a missing key or invalid sketches.
        DownloadError: if a download fails.
    """
    merged = {split: [] for split in SPLITS}
    for _, _, arrays in _load_data_sets(data_dir, data_set, base_url, download):
        for split in SPLITS:
            merged[split].extend(np.asarray(s, dtype=np.float32) for s in arrays[split])
    return merged["train"], merged["valid"], merged["test"]


def load_labelled_strokes(data_dir, data_set, base_url=None, download=True):
    """``load_strokes`` with a class label for every sketch.

    A file's labels are its ``train_labels``, ``valid_labels`` and ``test_labels`` keys
    (integer arrays, one label per sketch of the split) naming entries of its ``classes``
    key (a string array; without it class k is named ``<data set>:<k>``). A file without
    label keys is one class: the single name of its ``classes`` if it holds one, else the
    data set's name, so that merging ``cat,guitar`` labels cats 0 and guitars 1. Classes of
    several files are merged by name, in the order they first appear.

    Args: as ``load_strokes``.

    Returns:
        (strokes, labels, classes): ``strokes[split]`` is the list ``load_strokes`` gives
        for that split, ``labels[split]`` an int64 array of the same length, indices into
        ``classes``, the list of class names.

    Raises:
        ValueError: as ``load_strokes``, and for label keys that do not fit their split
            or their ``classes``, naming the file and key.
    """
    strokes = {split: [] for split in SPLITS}
    labels = {split: [] for split in SPLITS}
    classes = []
    for name, path, arrays in _load_data_sets(data_dir, data_set, base_url, download):
        names, file_labels = _file_labels(name, path, arrays)
        for class_name in names:
            if class_name not in classes:
                classes.append(class_name)
        merged_index = np.array([classes.index(class_name) for class_name in names], np.int64)
        for split in SPLITS:
            strokes[split].extend(np.asarray(s, dtype=np.float32) for s in arrays[split])
            labels[split].append(merged_index[file_labels[split]])
    return strokes, {split: np.concatenate(labels[split]) for split in SPLITS}, classes


def _file_labels(name, path, arrays):
    """One file's class names and its label array per split, checked against each other."""
    names = None
    if "classes" in arrays:
        found = arrays["classes"]
        if found.ndim != 1 or found.dtype.kind not in "US" or len(found) == 0:
            raise ValueError(f"{path} key 'classes' must be a 1-D array of class names "
                             f"(strings), got {found.dtype} of shape {found.shape}")
        names = [str(c) if found.dtype.kind == "U" else c.decode("utf-8", "replace") for c in found]
        repeated = sorted({c for c in names if names.count(c) > 1})
        if repeated:
            raise ValueError(f"{path} key 'classes' names {repeated[0]!r} more than once")
    keys = [f"{split}_labels" for split in SPLITS]
    if not any(key in arrays for key in keys):
        names = names if names is not None and len(names) == 1 else [name]
        return names, {split: np.zeros(len(arrays[split]), np.int64) for split in SPLITS}
    file_labels = {}
    for split, key in zip(SPLITS, keys):
        if key not in arrays:
            raise ValueError(f"{path} has no key '{key}': a file with labels has "
                             f"{', '.join(keys)}")
        found = arrays[key]
        if found.ndim != 1 or found.dtype.kind not in "iu" or len(found) != len(arrays[split]):
            raise ValueError(f"{path} key '{key}' must be a 1-D integer array of "
                             f"{len(arrays[split])} labels, one per sketch of '{split}', "
                             f"got {found.dtype} of shape {found.shape}")
        if found.min() < 0:
            raise ValueError(f"{path} key '{key}' holds the label {found.min()}, expected >= 0")
        file_labels[split] = found.astype(np.int64)
    top = max(int(labels.max()) for labels in file_labels.values())
    if names is None:
        names = [f"{name}:{k}" for k in range(top + 1)]
    elif top >= len(names):
        key = next(k for k, s in zip(keys, SPLITS) if file_labels[s].max() == top)
        raise ValueError(f"{path} key '{key}' holds the label {top}, but 'classes' names "
                         f"only {len(names)} classes")
    return names, file_labels


def longest_sketch(splits, cap):
    """The number of points of the longest sketch of at most ``cap`` points in ``splits``.

    The official code pads every batch to the longest sketch of train, valid and test
    together; the training command does the same over the sketches it keeps (``DataLoader``
    drops those longer than ``cap``, the max_seq_len hparam).

    Args:
        splits: sequences of stroke-3 sketches.
        cap: the most points a sketch may have.

    Returns:
        int, 0 if no sketch has at most ``cap`` points.
    """
    return max((len(s) for split in splits for s in split if len(s) <= cap), default=0)


STROKE_LIMIT = 1000  # offsets are clamped to +-this before scaling, as the official loader does


def clamp_and_scale(sketch, scale_factor, limit=STROKE_LIMIT):
    """A stroke-3 sketch in model units, as the data loader gives it to the model: a float32
    copy with dx, dy clamped to [-limit, limit] and divided by the data's scale factor."""
    sketch = np.clip(sketch, -limit, limit).astype(np.float32)
    sketch[:, 0:2] /= scale_factor
    return sketch


class DataLoader:
    """Holds the sketches of one split and builds stroke-5 batches (official DataLoader).

    Sketches longer than ``max_seq_len`` are dropped, values are clamped to
    [-limit, limit] and dx, dy are divided by ``scale_factor``. Unlike the official code
    the sketches keep their order (no sort by length).

    Args:
        strokes: sequence of (N, 3) stroke-3 arrays.
        batch_size: sketches per batch (used for ``num_batches``).
        max_seq_len: longest sketch kept; batches have max_seq_len + 1 steps.
        scale_factor: dx and dy are divided by it on loading.
        random_scale_factor: augmentation stretch, see ``random_scale``.
        augment_stroke_prob: augmentation drop probability, see ``augment_strokes``.
        limit: absolute values above it are clamped, as in the official code.
        name: split name used in messages.
        labels: optional, one label per sketch of ``strokes`` (as ``load_labelled_strokes``
            gives); ``self.labels`` keeps those of the sketches kept, in their order.
    """

    def __init__(
        self,
        strokes,
        batch_size=100,
        max_seq_len=250,
        scale_factor=1.0,
        random_scale_factor=0.0,
        augment_stroke_prob=0.0,
        limit=STROKE_LIMIT,
        name="train",
        labels=None,
    ):
        if batch_size < 1:
            raise ValueError(f"{name}: batch_size must be at least 1, got {batch_size}")
        if not scale_factor > 0:
            raise ValueError(
                f"{name}: scale_factor must be positive, got {scale_factor}"
            )
        self.batch_size = batch_size
        self.max_seq_len = max_seq_len
        self.scale_factor = scale_factor
        self.random_scale_factor = random_scale_factor
        self.augment_stroke_prob = augment_stroke_prob
        self.limit = limit
        self.name = name
        self.preprocess(strokes, labels)

    def preprocess(self, strokes, labels=None):
        """Keeps sketches of at most max_seq_len points (and their labels), clamps and scales them."""
        if labels is not None and len(labels) != len(strokes):
            raise ValueError(f"{self.name}: got {len(labels)} labels for {len(strokes)} sketches")
        self.strokes = []
        kept = []
        for index, sketch in enumerate(strokes):
            if len(sketch) > self.max_seq_len:
                continue
            self.strokes.append(clamp_and_scale(sketch, self.scale_factor, self.limit))
            kept.append(index)
        self.labels = None if labels is None else np.asarray(labels)[np.array(kept, np.int64)]
        self.num_dropped = len(strokes) - len(self.strokes)
        self.lengths = np.array([len(s) for s in self.strokes], dtype=np.int64)
        print(
            f"{self.name}: dropped {self.num_dropped} of {len(strokes)} sketches "
            f"longer than max_seq_len={self.max_seq_len}"
        )

    def __len__(self):
        return len(self.strokes)

    def subset(self, indices, name=None):
        """A loader of the sketches at ``indices`` (and their labels), in that order, with
        this one's settings; nothing is preprocessed again (the sketch arrays are shared)."""
        indices = np.asarray(indices, np.int64)
        part = copy.copy(self)
        part.strokes = [self.strokes[i] for i in indices]
        part.lengths = self.lengths[indices]
        part.labels = None if self.labels is None else self.labels[indices]
        part.num_dropped = 0
        part.name = self.name if name is None else name
        return part

    @property
    def num_batches(self):
        """Number of full batches of batch_size sketches."""
        return len(self) // self.batch_size

    def calculate_normalizing_scale_factor(self):
        """Returns the standard deviation of all dx and dy values taken together."""
        if not self.strokes:
            raise ValueError(f"{self.name}: no sketches to compute a scale factor from")
        offsets = np.concatenate([sketch[:, 0:2].ravel() for sketch in self.strokes])
        return float(np.std(offsets, dtype=np.float64))

    def normalize(self, scale_factor=None):
        """Divides dx and dy of every sketch by scale_factor (by default its own std).

        The validation and test loaders must be given the training set's factor. Calling
        this twice divides twice, as in the official code.

        Args:
            scale_factor: the divisor; computed with
                ``calculate_normalizing_scale_factor`` when None.
        """
        if scale_factor is None:
            scale_factor = self.calculate_normalizing_scale_factor()
        if not (np.isfinite(scale_factor) and scale_factor > 0):
            raise ValueError(
                f"{self.name}: the normalizing scale factor must be a positive number, "
                f"got {scale_factor}"
            )
        self.scale_factor = float(scale_factor)
        for sketch in self.strokes:
            sketch[:, 0:2] /= self.scale_factor

    def get_batch(self, indices, rng=None, augment=False, max_len=None):
        """Builds the batch of the sketches at ``indices``.

        Args:
            indices: sequence of B sketch indices.
            rng: ``np.random.Generator`` for augmentation (a fresh unseeded one when
                None).
            augment: apply ``random_scale`` (random_scale_factor) and then
                ``augment_strokes`` (augment_stroke_prob), as official
                _get_batch_from_indices.
            max_len: time steps after the start token; defaults to max_seq_len and may
                be smaller as long as every sketch of the batch fits.

        Returns:
            (stroke3_list, stroke5, seq_len): the B (augmented) stroke-3 arrays, the
            float32 stroke-5 batch of shape (B, max_len + 1, 5) and the int64 array of
            the B sketch lengths.
        """
        if max_len is None:
            max_len = self.max_seq_len
        if augment and rng is None:
            rng = np.random.default_rng()
        batch = []
        for index in indices:
            sketch = self.strokes[index]
            if augment:
                if self.random_scale_factor > 0:
                    sketch = random_scale(sketch, self.random_scale_factor, rng)
                if self.augment_stroke_prob > 0:
                    sketch = augment_strokes(sketch, self.augment_stroke_prob, rng)
            batch.append(sketch.copy())  # so callers cannot edit the loader's sketches
        seq_len = np.array([len(sketch) for sketch in batch], dtype=np.int64)
        return batch, to_stroke5(batch, max_len), seq_len


# ---- drawing ----
#
# Pictures of stroke-3 sketches: SVG with svgwrite, PNG and animated GIF rendered by
# matplotlib (Agg) and written by Pillow. Every function takes ``scale_factor``, which
# multiplies dx and dy: pass a run's stored scale factor to draw sketches in model units
# (as SketchRNNDrawer returns them) at the size the data had, in pixels. y grows downwards,
# as in the data sets. svgwrite and matplotlib are imported when first used, so that
# training never loads them. Files are written with ``write_atomically``: never through a
# symbolic link, never half-written.


def stroke_lines(stroke3, scale_factor=1.0):
    """Splits a stroke-3 sketch into its strokes, as absolute positions.

    The pen starts at (0, 0), lifted; each row moves it by (dx, dy), and pen_lifted = 1
    ends the stroke after that point.

    Args:
        stroke3: array of shape (N, 3).
        scale_factor: multiplies dx and dy.

    Returns:
        list of float64 arrays of shape (n_i, 2), one per stroke, the points' (x, y). A
        sketch whose last row has pen_lifted = 0 (cut before its end) still closes its
        last stroke there.

    Raises:
        ValueError: a pen position is NaN or infinite.
    """
    stroke3 = _as_stroke3(stroke3)
    points = np.cumsum(stroke3[:, 0:2].astype(np.float64), axis=0) * scale_factor
    if not np.isfinite(points).all():  # else a grid's size becomes NaN far from here
        row = int(np.flatnonzero(~np.isfinite(points).all(axis=1))[0])
        raise ValueError(f"a sketch's pen position is not finite from row {row} on (NaN or inf "
                         f"offsets, or scale_factor={scale_factor}): nothing to draw")
    ends = np.flatnonzero(stroke3[:, 2] == 1) + 1
    return [line for line in np.split(points, ends) if len(line)]


def _stroke_pieces(stroke3, scale_factor=1.0, prefix_length=0):
    """`stroke_lines`, each stroke cut where the sketch's first `prefix_length` points end.

    Returns:
        list of (points (n, 2), index of its first point in the sketch, in_prefix). A stroke
        that the prefix begins and the rest continues is two pieces; the second starts at
        the prefix's last point, so the segment joining them is drawn with the rest.
    """
    pieces, start = [], 0
    for line in stroke_lines(stroke3, scale_factor):
        cut = min(max(prefix_length - start, 0), len(line))  # its points inside the prefix
        if cut > 0:
            pieces.append((line[:cut], start, True))
        if cut < len(line):
            joined = 1 if cut > 0 else 0
            pieces.append((line[cut - joined:], start + cut - joined, False))
        start += len(line)
    return pieces


def _as_stroke3(stroke3):
    stroke3 = np.asarray(stroke3)
    if stroke3.ndim != 2 or stroke3.shape[1] != 3:
        raise ValueError(f"a sketch must be an (N, 3) stroke-3 array, got shape {stroke3.shape}")
    return stroke3


PNG_DPI = 100  # the Agg figure's dots per inch: its font sizes are in points, 72 an inch


def _label_width(text, font_size):
    """The width in pixels of `text` in matplotlib's sans-serif font (DejaVu Sans, what PNG
    labels are drawn in; the sans-serif fonts of SVG viewers are about as wide or narrower):
    the larger of the glyphs' outline and what Agg draws, whose hinting rounds each glyph's
    advance to whole pixels (at 8 to 12 pixels, up to 5% wider than the outline)."""
    from matplotlib.backends.backend_agg import RendererAgg
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextPath

    if not text.strip():  # TextPath fails on a path with no glyph
        return 0.0
    # A list: a lone string would be read as a fontconfig pattern, in which "-" means a size.
    font = FontProperties(family=["sans-serif"])
    outline = TextPath((0, 0), text, size=font_size, prop=font).get_extents().width
    font.set_size(font_size * 72 / PNG_DPI)
    drawn, _, _ = RendererAgg(1, 1, PNG_DPI).get_text_width_height_descent(text, font, ismath=False)
    return max(outline, drawn)


def _labels_width(labels, font_size):
    """The width a cell needs for the widest label: half a font size free on either side."""
    return max(_label_width(_label_text(label), font_size) for label in labels) + font_size


def _label_text(label):
    """A label as drawn: None is no label (as "" is), anything else its str()."""
    return "" if label is None else str(label)


class _Grid:
    """Sketches placed in equal cells, with a margin inside each cell.

    The cells are as large as the largest sketch, or ``cell_size`` pixels square with every
    sketch scaled to fit its cell. ``cells`` holds, per sketch, its strokes moved into place
    as ``_stroke_pieces`` (points, first index, in_prefix) and its label's (text, x, y).
    Sizes are in pixels.
    """

    def __init__(self, sketches, columns, labels, scale_factor, margin, font_size, cell_size=None,
                 prefix_lengths=None):
        if len(sketches) == 0:
            raise ValueError("nothing to draw: the list of sketches is empty")
        if labels is not None and len(labels) != len(sketches):
            raise ValueError(f"got {len(labels)} labels for {len(sketches)} sketches")
        if prefix_lengths is None:
            prefix_lengths = [0] * len(sketches)
        elif len(prefix_lengths) != len(sketches):
            raise ValueError(f"got {len(prefix_lengths)} prefix lengths for {len(sketches)} sketches")
        if cell_size is not None and not cell_size > 2 * margin:
            raise ValueError(f"cell_size must be larger than twice the margin ({2 * margin}), "
                             f"got {cell_size}")
        self.columns = min(columns or 10, len(sketches))
        self.rows = -(-len(sketches) // self.columns)
        self.font_size = font_size
        all_lines = [_stroke_pieces(sketch, scale_factor, int(prefix))
                     for sketch, prefix in zip(sketches, prefix_lengths)]
        extents = []
        for index, lines in enumerate(all_lines):
            points = np.concatenate([line for line, _, _ in lines]) if lines else np.zeros((1, 2))
            low, high = points.min(axis=0), points.max(axis=0)
            if cell_size is not None:
                zoom = (cell_size - 2 * margin) / np.max(high - low) if np.any(high > low) else 1.0
                all_lines[index] = [(line * zoom, first, part) for line, first, part in lines]
                low, high = low * zoom, high * zoom
            extents.append((low, high))
        if cell_size is None:
            cell_w = max(high[0] - low[0] for low, high in extents) + 2 * margin
            cell_h = max(high[1] - low[1] for low, high in extents) + 2 * margin
        else:
            cell_w = cell_h = float(cell_size)
        label_h = 1.6 * font_size if labels is not None else 0.0
        if labels is not None:
            # Each label keeps inside its own cell, with half a font size free on either side:
            # cells sized by their sketches widen to the widest label, and fixed cells
            # (cell_size) keep their size and draw the labels smaller.
            label_w = _labels_width(labels, font_size)
            if cell_size is None:
                cell_w = max(cell_w, label_w)
            else:  # hinting makes the width not quite proportional to the size: shrink until it fits
                for _ in range(20):
                    if label_w <= cell_w:
                        break
                    self.font_size *= min(0.97, cell_w / label_w)
                    label_w = _labels_width(labels, self.font_size)
        self.width = self.columns * cell_w
        self.height = self.rows * (cell_h + label_h)
        self.cells = []
        for index, (lines, (low, high)) in enumerate(zip(all_lines, extents)):
            left = (index % self.columns) * cell_w
            top = (index // self.columns) * (cell_h + label_h)
            # Centre the sketch's bounding box in the drawing part of its cell.
            shift = np.array([left + cell_w / 2, top + cell_h / 2]) - (low + high) / 2
            label = None
            if labels is not None:
                label = (_label_text(labels[index]), left + cell_w / 2,
                         top + cell_h + 1.1 * font_size)
            self.cells.append(([(line + shift, first, part) for line, first, part in lines], label))


def sketch_to_svg(stroke3, path=None, scale_factor=1.0, stroke_width=2.0, margin=10.0,
                  color="black"):
    """Draws one stroke-3 sketch as SVG, one <path> per stroke.

    Args:
        stroke3: array of shape (N, 3).
        path: file to write, if given.
        scale_factor: multiplies dx and dy (see the section's note).
        stroke_width, margin: in pixels.
        color: the strokes' SVG colour.

    Returns:
        the SVG document as a string.
    """
    return sketches_to_svg([stroke3], path, columns=1, scale_factor=scale_factor,
                           stroke_width=stroke_width, margin=margin, color=color)


PREFIX_COLOR = "#3b7dd8"  # the given part of a completed sketch


def sketches_to_svg(sketches, path=None, columns=None, labels=None, scale_factor=1.0,
                    cell_size=None, stroke_width=2.0, margin=10.0, color="black", font_size=12.0,
                    prefix_lengths=None, prefix_color=PREFIX_COLOR):
    """Draws a grid of stroke-3 sketches as SVG, one <path> per stroke.

    Args:
        sketches: sequence of (N_i, 3) arrays.
        path: file to write, if given.
        columns: sketches per row (default: all, up to 10).
        labels: optional text under each sketch, one per sketch (None or "" for none), kept
            inside its cell: cells widen to the widest label, or with ``cell_size`` the labels
            are drawn smaller.
        scale_factor: multiplies dx and dy (see the section's note).
        cell_size: None: every cell has the size of the largest sketch, so sizes compare
            across the grid; a number: cells of that many pixels square, each sketch
            scaled to fit its own (one long stray line then cannot shrink the others).
        stroke_width, margin, font_size: in pixels.
        color: the strokes' SVG colour.
        prefix_lengths: optional, one per sketch: its first that many points (a prefix it
            was completed from) are drawn in ``prefix_color``, the rest in ``color``.

    Returns:
        the SVG document as a string.
    """
    import svgwrite

    grid = _Grid(sketches, columns, labels, scale_factor, margin, font_size, cell_size,
                 prefix_lengths)
    drawing = svgwrite.Drawing(size=(f"{grid.width:.0f}", f"{grid.height:.0f}"))
    drawing.add(drawing.rect(insert=(0, 0), size=("100%", "100%"), fill="white"))
    for lines, label in grid.cells:
        for line, _, in_prefix in lines:
            if len(line) == 1:  # a single point: a zero-length segment shows as a dot
                line = np.concatenate([line, line])
            coords = [f"{x:.2f},{y:.2f}" for x, y in line]
            drawing.add(drawing.path(
                d=f"M{coords[0]} L{' '.join(coords[1:])}", fill="none",
                stroke=prefix_color if in_prefix else color,
                stroke_width=stroke_width, stroke_linecap="round", stroke_linejoin="round"))
        if label is not None:
            text, x, y = label
            drawing.add(drawing.text(text, insert=(f"{x:.2f}", f"{y:.2f}"), text_anchor="middle",
                                     font_size=f"{grid.font_size:g}", font_family="sans-serif"))
    svg = drawing.tostring()
    if path is not None:
        write_atomically(path, svg)
    return svg


MAX_PICTURE_SIDE = 65535  # pixels: matplotlib's Agg renderer draws no larger side


class _Canvas:
    """A matplotlib Agg figure of exactly the grid's size in pixels, y downwards."""

    def __init__(self, grid, stroke_width, color):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.dpi = PNG_DPI
        width, height = max(1, round(grid.width)), max(1, round(grid.height))
        if max(width, height) > MAX_PICTURE_SIDE:
            raise ValueError(f"the picture would be {width} x {height} pixels, more than the "
                             f"{MAX_PICTURE_SIDE} a side can have: give a cell size (cell_size=, "
                             "the sampler's --cell_size, a GIF's size) to scale each sketch to fit")
        self.figure = Figure(figsize=(width / self.dpi, height / self.dpi), dpi=self.dpi,
                             facecolor="white")
        self.canvas = FigureCanvasAgg(self.figure)
        self.axes = self.figure.add_axes((0, 0, 1, 1))
        self.axes.set_xlim(0, grid.width)
        self.axes.set_ylim(grid.height, 0)
        self.axes.axis("off")
        points_per_pixel = 72 / self.dpi
        self.style = dict(color=color, linewidth=stroke_width * points_per_pixel,
                          solid_capstyle="round", solid_joinstyle="round",
                          marker="o", markersize=0, markevery=[0])
        self.dot_size = stroke_width * points_per_pixel
        self.font_points = grid.font_size * points_per_pixel

    def line(self, points, color=None):
        """Adds a stroke (a single point shows as a dot), in `color` if given; returns its Line2D."""
        style = self.style if color is None else {**self.style, "color": color}
        (line,) = self.axes.plot(points[:, 0], points[:, 1], **style)
        self.set_points(line, points)
        return line

    def set_points(self, line, points):
        line.set_data(points[:, 0], points[:, 1])
        line.set_markersize(self.dot_size if len(points) == 1 else 0)

    def text(self, text, x, y):
        self.axes.text(x, y, text, ha="center", va="baseline", fontsize=self.font_points,
                       family="sans-serif")

    def image(self):
        """The figure as it stands, as an RGB Pillow image."""
        from PIL import Image

        self.canvas.draw()
        return Image.fromarray(np.asarray(self.canvas.buffer_rgba())).convert("RGB")


def sketches_to_image(sketches, columns=None, labels=None, scale_factor=1.0, cell_size=None,
                      stroke_width=2.0, margin=10.0, color="black", font_size=12.0,
                      prefix_lengths=None, prefix_color=PREFIX_COLOR):
    """Draws a grid of stroke-3 sketches as an RGB Pillow image (``sketches_to_png`` in memory).

    The layout and colours are those of ``sketches_to_svg`` with the same arguments: with ``cell_size``,
    ``columns * cell_size`` pixels wide and ``rows * cell_size`` high (plus 1.6 font sizes
    per row for labels).
    """
    grid = _Grid(sketches, columns, labels, scale_factor, margin, font_size, cell_size,
                 prefix_lengths)
    canvas = _Canvas(grid, stroke_width, color)
    for lines, label in grid.cells:
        for points, _, in_prefix in lines:
            canvas.line(points, prefix_color if in_prefix else None)
        if label is not None:
            canvas.text(*label)
    return canvas.image()


def sketches_to_png(sketches, path, columns=None, labels=None, scale_factor=1.0,
                    cell_size=None, stroke_width=2.0, margin=10.0, color="black", font_size=12.0,
                    prefix_lengths=None, prefix_color=PREFIX_COLOR):
    """Draws a grid of stroke-3 sketches (one sketch: a list of one) to a PNG file.

    The layout and colours are those of ``sketches_to_svg`` with the same arguments.

    Returns:
        the image's (width, height) in pixels.
    """
    image = sketches_to_image(sketches, columns, labels, scale_factor, cell_size, stroke_width,
                              margin, color, font_size, prefix_lengths, prefix_color)
    encoded = io.BytesIO()
    image.save(encoded, format="PNG")
    write_atomically(path, encoded.getvalue())
    return image.size


def sketch_to_gif(stroke3, path, frames=None, scale_factor=1.0, duration=40, hold=1000,
                  stroke_width=2.0, margin=10.0, color="black", pen_color="red", size=None,
                  prefix_length=0, prefix_color=PREFIX_COLOR):
    """Writes an animated GIF of the pen drawing a stroke-3 sketch.

    Frame k of F shows the first ceil(k N / F) of the N points, with a dot where the pen
    is; the last frame shows the whole sketch and stays for ``hold`` ms.

    Args:
        stroke3: array of shape (N, 3).
        path: the .gif file to write.
        frames: number of frames F (default 100). A frame adds at least one point, so a
            sketch of N < F points gets N frames; an empty sketch gets one blank frame.
        scale_factor: multiplies dx and dy (see the section's note).
        duration: ms per frame; hold: ms of the last frame.
        stroke_width, margin: in pixels.
        color, pen_color: matplotlib colours of the strokes and of the pen's dot.
        size: None draws the sketch at its size (times scale_factor); a number makes the
            GIF that many pixels square, the sketch scaled to fit.
        prefix_length, prefix_color: the first prefix_length points are drawn in
            prefix_color (see ``sketches_to_svg``).

    Returns:
        the number of frames drawn (Pillow stores two identical frames in a row, such as
        those of a zero-length move, as one frame shown for both durations).
    """
    stroke3 = _as_stroke3(stroke3)
    total = len(stroke3)
    if frames is not None and frames < 1:
        raise ValueError(f"frames must be at least 1, got {frames}")
    # Pillow merges identical consecutive frames, so each frame must add a point.
    frames = min(100 if frames is None else frames, max(total, 1))
    grid = _Grid([stroke3], 1, None, scale_factor, margin, 0.0, cell_size=size,
                 prefix_lengths=[prefix_length])
    canvas = _Canvas(grid, stroke_width, color)
    lines = grid.cells[0][0]  # (points, index of the first one in the sketch, in_prefix)
    artists = [canvas.line(points[:0], prefix_color if in_prefix else None)
               for points, _, in_prefix in lines]
    (pen,) = canvas.axes.plot([], [], "o", color=pen_color, markersize=2.5 * canvas.dot_size)
    images = []
    for k in range(1, frames + 1):
        shown = -(-k * total // frames)  # ceil(k N / F) points
        for artist, (points, first, _) in zip(artists, lines):
            canvas.set_points(artist, points[:max(0, shown - first)])
        if shown:
            last = shown - 1  # the pen is at this point, of the last piece holding it:
            points, first, _ = [piece for piece in lines if piece[1] <= last][-1]
            pen.set_data(*points[last - first].reshape(2, 1))
        images.append(canvas.image())
    durations = [duration] * (len(images) - 1) + [hold]
    encoded = io.BytesIO()
    images[0].save(encoded, format="GIF", save_all=True, append_images=images[1:],
                   duration=durations, loop=0)
    write_atomically(path, encoded.getvalue())
    return len(images)
