"""Safe .npz and .npy loading: numpy arrays out, never code.

The data sets are ``.npz`` files whose ``train``/``valid``/``test`` keys are object arrays,
which ``np.load`` can only read by unpickling, i.e. by letting the file run code.
``load_npz`` reads them with an unpickler that can only rebuild numpy arrays, within a
memory budget set by the file's size (``array_bytes_limit``).

A pickle is a program: each opcode pushes an object or calls a function that the file
names. The loader below runs such programs with three guards. Before anything is
built, every opcode is checked (pickletools reads them without building anything) and
their cost in memory is added up. Only the functions numpy's own pickles call are
reachable, each replaced by a wrapper that checks its arguments. And no state from the
file ever reaches numpy: a dtype is made fresh from its type string and the state the
file sets on it must equal the state numpy writes for that dtype; an array is built
with np.frombuffer from bytes whose length must match its shape. (Letting numpy's own
dtype.__setstate__ run would let a file clear an object dtype's flags and make numpy
read pointers from the file's bytes.)
"""

import io
import math
import os
import pickle
import pickletools
import re
import zipfile
import zlib
from pathlib import Path

import numpy as np

from sketch_rnn.files import check_regular_file, first_line


class UnsafeFileError(ValueError):
    """A .npz file asks to build something other than numpy arrays when unpickled."""


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
