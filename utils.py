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

import http.client
import io
import os
import pickle
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np

try:  # numpy >= 2 keeps its internals in numpy._core
    from numpy._core.multiarray import _reconstruct, scalar
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct, scalar


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


class UnsafeFileError(ValueError):
    """A .npz file asks to build something other than numpy arrays when unpickled."""


# Every global a pickled numpy array may name. Python 2 and numpy 1.x files say
# numpy.core, numpy 2 says numpy._core; both map to the functions imported above, so
# the unpickler never imports a module named by the file.
_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.multiarray", "scalar"): scalar,
    ("numpy._core.multiarray", "scalar"): scalar,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals numpy needs to rebuild arrays."""

    def __init__(self, file, source, encoding):
        super().__init__(file, encoding=encoding)
        self.source = source

    def find_class(self, module, name):
        try:
            return _NUMPY_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafeFileError(
                f"{self.source}: refusing to load: the file holds objects that are "
                f"not numpy arrays (it asks for {module}.{name})"
            ) from None


def _read_npy_header(fh, source, member):
    """Reads the magic string and header of one .npy member; returns (shape, dtype)."""
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except ValueError as err:
        raise ValueError(
            f"{source}: {member} is not a valid .npy array ({err})"
        ) from err
    return shape, dtype


def _unpickle_array(payload, source, member, shape):
    """Unpickles one object array with _NumpyOnlyUnpickler and checks what came out."""
    try:
        try:
            array = _NumpyOnlyUnpickler(io.BytesIO(payload), source, "ASCII").load()
        except UnicodeDecodeError:
            # Python 2 pickles store array bytes as str; numpy's own advice is latin1.
            array = _NumpyOnlyUnpickler(io.BytesIO(payload), source, "latin1").load()
    except UnsafeFileError:
        raise
    except Exception as err:  # a broken pickle fails in many ways; all mean "corrupt"
        raise ValueError(
            f"{source}: {member} is corrupt: its pickled data could not be read ({err})"
        ) from err

    def refuse(what):
        return UnsafeFileError(
            f"{source}: refusing to load: the file holds objects that are not numpy "
            f"arrays ({member} {what})"
        )

    if not isinstance(array, np.ndarray):
        raise refuse(f"is a {type(array).__name__}")
    if array.shape != tuple(shape):
        raise ValueError(
            f"{source}: {member} is corrupt: its header says shape {tuple(shape)} "
            f"but its data has shape {array.shape}"
        )
    if array.dtype != object:
        raise refuse(f"has dtype {array.dtype}, expected an object array of arrays")
    for index, element in enumerate(array.flat):
        if not isinstance(element, np.ndarray):
            raise refuse(f"element {index} is a {type(element).__name__}")
        if element.dtype.kind not in "iuf":
            raise refuse(
                f"element {index} has dtype {element.dtype}, expected a numeric array"
            )
    return array


def load_npz(path):
    """Loads a Sketch-RNN .npz without letting the file run code.

    ``np.load(allow_pickle=True)`` would run whatever the pickles inside ask for. Here
    plain arrays are read with pickling disabled, and object arrays (the sketches) are
    unpickled by an unpickler that can only build numpy arrays and dtypes; every element
    must then be a numeric array.

    Args:
        path: path of the .npz file.

    Returns:
        dict from key (member name without ``.npy``) to array.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        UnsafeFileError: if a pickle asks for anything but numpy arrays, or an object
            array holds anything but numeric arrays.
        ValueError: if the file is not a zip of .npy arrays or is corrupt.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise ValueError(f"{path} is a directory, expected a .npz file")
    arrays = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                if not member.endswith(".npy"):
                    continue  # np.savez writes nothing else; anything else is not ours
                with archive.open(member) as fh:
                    shape, dtype = _read_npy_header(fh, path, member)
                    if dtype.hasobject:
                        payload = fh.read()
                if dtype.hasobject:
                    array = _unpickle_array(payload, path, member, shape)
                else:
                    with archive.open(member) as fh:
                        try:
                            array = np.lib.format.read_array(fh, allow_pickle=False)
                        except ValueError as err:
                            raise ValueError(
                                f"{path}: {member} is corrupt ({err})"
                            ) from err
                arrays[member[: -len(".npy")]] = array
    except zipfile.BadZipFile as err:
        raise ValueError(
            f"{path} is not a valid .npz file (a zip of .npy arrays): {err}"
        ) from err
    except (zlib.error, EOFError) as err:
        raise ValueError(f"{path} is corrupt: {err}") from err
    if not arrays:
        raise ValueError(f"{path} holds no .npy arrays, expected a Sketch-RNN .npz")
    return arrays


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


def download_dataset(name, data_dir, base_url=None):
    """Downloads the data set ``name`` to ``<data_dir>/<name>.npz``.

    The file is written to a temporary file in ``data_dir``, checked with ``load_npz``
    and only then moved into place, so an interrupted or bad download never leaves a
    file that looks complete.

    Args:
        name: a QuickDraw category or one of "aaron_sheep", "kanji", "short_kanji",
            "omniglot".
        data_dir: folder to save the file in (created if missing).
        base_url: see ``dataset_url``.

    Returns:
        Path of the saved file.

    Raises:
        ValueError: if ``name`` is not a known data set.
        DownloadError: if the download fails or does not give a Sketch-RNN .npz.
    """
    data_dir = Path(data_dir)
    url = _url_or_raise(name, base_url, None)
    target = data_dir / f"{name}.npz"

    def failed(reason):
        return DownloadError(
            f"could not download {url} ({reason}); fetch it by hand and save it as "
            f"{target}"
        )

    data_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=data_dir, prefix=f".{name}.", suffix=".tmp")
    tmp_path = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=60) as response:
                    total = int(response.headers.get("Content-Length") or 0)
                    done = 0
                    try:
                        while chunk := response.read(1 << 16):
                            out.write(chunk)
                            done += len(chunk)
                            _show_progress(f"downloading {name}.npz", done, total)
                    finally:
                        if done:  # end the progress line, also when the transfer broke
                            sys.stderr.write("\n")
            except urllib.error.HTTPError as err:
                raise failed(f"HTTP {err.code} {err.reason}") from err
            except urllib.error.URLError as err:
                raise failed(err.reason) from err
            except (OSError, http.client.HTTPException) as err:  # timeouts, cut bodies
                raise failed(str(err) or type(err).__name__) from err
        if total and done != total:
            raise failed(f"got {done} of {total} bytes")
        try:
            load_npz(tmp_path)
        except ValueError as err:
            # the temporary name means nothing to the user and is about to vanish
            raise failed(
                str(err).replace(str(tmp_path), "the downloaded file")
            ) from err
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)  # already gone after a successful os.replace
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
    stem = name.removesuffix(".npz")
    path = Path(data_dir) / f"{stem}.npz"
    if path.is_file():
        return path
    if Path(name).is_file():
        return Path(name)
    if not download:
        raise FileNotFoundError(f"{path}: no such file (and downloading is turned off)")
    _url_or_raise(stem, base_url, data_dir)  # so that an unknown name names data_dir
    return download_dataset(stem, data_dir, base_url)


def load_strokes(data_dir, data_set, base_url=None, download=True):
    """Loads one or more data sets and merges their splits as the official code does.

    Args:
        data_dir: folder holding ``<name>.npz`` files (downloads are saved here too).
        data_set: a name or a comma-separated list of names ("cat,guitar"). A name means
            ``<data_dir>/<name>.npz``; a name ending in .npz or the path of an existing
            file is also accepted.
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
    names = [name.strip() for name in str(data_set).split(",")]
    if not all(names):
        raise ValueError(f"data set list {data_set!r} holds an empty name")
    merged = {split: [] for split in SPLITS}
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
            merged[split].extend(np.asarray(s, dtype=np.float32) for s in arrays[split])
        counts = "/".join(str(len(arrays[split])) for split in SPLITS)
        print(f"loaded {counts} train/valid/test sketches from {path}")
    return merged["train"], merged["valid"], merged["test"]


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
    """

    def __init__(
        self,
        strokes,
        batch_size=100,
        max_seq_len=250,
        scale_factor=1.0,
        random_scale_factor=0.0,
        augment_stroke_prob=0.0,
        limit=1000,
        name="train",
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
        self.preprocess(strokes)

    def preprocess(self, strokes):
        """Keeps sketches of at most max_seq_len points, clamps and scales them."""
        self.strokes = []
        for sketch in strokes:
            if len(sketch) > self.max_seq_len:
                continue
            sketch = np.clip(sketch, -self.limit, self.limit).astype(np.float32)
            sketch[:, 0:2] /= self.scale_factor
            self.strokes.append(sketch)
        self.num_dropped = len(strokes) - len(self.strokes)
        self.lengths = np.array([len(s) for s in self.strokes], dtype=np.int64)
        print(
            f"{self.name}: dropped {self.num_dropped} of {len(strokes)} sketches "
            f"longer than max_seq_len={self.max_seq_len}"
        )

    def __len__(self):
        return len(self.strokes)

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
# training never loads them.


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
    """
    stroke3 = _as_stroke3(stroke3)
    points = np.cumsum(stroke3[:, 0:2].astype(np.float64), axis=0) * scale_factor
    ends = np.flatnonzero(stroke3[:, 2] == 1) + 1
    return [line for line in np.split(points, ends) if len(line)]


def _as_stroke3(stroke3):
    stroke3 = np.asarray(stroke3)
    if stroke3.ndim != 2 or stroke3.shape[1] != 3:
        raise ValueError(f"a sketch must be an (N, 3) stroke-3 array, got shape {stroke3.shape}")
    return stroke3


class _Grid:
    """Sketches placed in equal cells, with a margin inside each cell.

    The cells are as large as the largest sketch, or ``cell_size`` pixels square with every
    sketch scaled to fit its cell. ``cells`` holds, per sketch, its strokes moved into place
    and its label's (text, x, y). Sizes are in pixels.
    """

    def __init__(self, sketches, columns, labels, scale_factor, margin, font_size, cell_size=None):
        if len(sketches) == 0:
            raise ValueError("nothing to draw: the list of sketches is empty")
        if labels is not None and len(labels) != len(sketches):
            raise ValueError(f"got {len(labels)} labels for {len(sketches)} sketches")
        if cell_size is not None and not cell_size > 2 * margin:
            raise ValueError(f"cell_size must be larger than twice the margin ({2 * margin}), "
                             f"got {cell_size}")
        self.columns = min(columns or 10, len(sketches))
        self.rows = -(-len(sketches) // self.columns)
        self.font_size = font_size
        all_lines = [stroke_lines(sketch, scale_factor) for sketch in sketches]
        extents = []
        for index, lines in enumerate(all_lines):
            points = np.concatenate(lines) if lines else np.zeros((1, 2))
            low, high = points.min(axis=0), points.max(axis=0)
            if cell_size is not None:
                zoom = (cell_size - 2 * margin) / np.max(high - low) if np.any(high > low) else 1.0
                all_lines[index] = [line * zoom for line in lines]
                low, high = low * zoom, high * zoom
            extents.append((low, high))
        if cell_size is None:
            cell_w = max(high[0] - low[0] for low, high in extents) + 2 * margin
            cell_h = max(high[1] - low[1] for low, high in extents) + 2 * margin
        else:
            cell_w = cell_h = float(cell_size)
        label_h = 1.6 * font_size if labels is not None else 0.0
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
                label = (str(labels[index]), left + cell_w / 2, top + cell_h + 1.1 * font_size)
            self.cells.append(([line + shift for line in lines], label))


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


def sketches_to_svg(sketches, path=None, columns=None, labels=None, scale_factor=1.0,
                    cell_size=None, stroke_width=2.0, margin=10.0, color="black", font_size=12.0):
    """Draws a grid of stroke-3 sketches as SVG, one <path> per stroke.

    Args:
        sketches: sequence of (N_i, 3) arrays.
        path: file to write, if given.
        columns: sketches per row (default: all, up to 10).
        labels: optional text under each sketch, one per sketch.
        scale_factor: multiplies dx and dy (see the section's note).
        cell_size: None: every cell has the size of the largest sketch, so sizes compare
            across the grid; a number: cells of that many pixels square, each sketch
            scaled to fit its own (one long stray line then cannot shrink the others).
        stroke_width, margin, font_size: in pixels.
        color: the strokes' SVG colour.

    Returns:
        the SVG document as a string.
    """
    import svgwrite

    grid = _Grid(sketches, columns, labels, scale_factor, margin, font_size, cell_size)
    drawing = svgwrite.Drawing(size=(f"{grid.width:.0f}", f"{grid.height:.0f}"))
    drawing.add(drawing.rect(insert=(0, 0), size=("100%", "100%"), fill="white"))
    for lines, label in grid.cells:
        for line in lines:
            if len(line) == 1:  # a single point: a zero-length segment shows as a dot
                line = np.concatenate([line, line])
            coords = [f"{x:.2f},{y:.2f}" for x, y in line]
            drawing.add(drawing.path(
                d=f"M{coords[0]} L{' '.join(coords[1:])}", fill="none", stroke=color,
                stroke_width=stroke_width, stroke_linecap="round", stroke_linejoin="round"))
        if label is not None:
            text, x, y = label
            drawing.add(drawing.text(text, insert=(f"{x:.2f}", f"{y:.2f}"), text_anchor="middle",
                                     font_size=f"{font_size:g}", font_family="sans-serif"))
    svg = drawing.tostring()
    if path is not None:
        Path(path).write_text(svg, encoding="utf-8")
    return svg


class _Canvas:
    """A matplotlib Agg figure of exactly the grid's size in pixels, y downwards."""

    def __init__(self, grid, stroke_width, color):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.dpi = 100
        width, height = max(1, round(grid.width)), max(1, round(grid.height))
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

    def line(self, points):
        """Adds a stroke (a single point shows as a dot); returns its Line2D."""
        (line,) = self.axes.plot(points[:, 0], points[:, 1], **self.style)
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


def sketches_to_png(sketches, path, columns=None, labels=None, scale_factor=1.0,
                    cell_size=None, stroke_width=2.0, margin=10.0, color="black", font_size=12.0):
    """Draws a grid of stroke-3 sketches (one sketch: a list of one) to a PNG file.

    The layout is that of ``sketches_to_svg`` with the same arguments.

    Returns:
        the image's (width, height) in pixels.
    """
    grid = _Grid(sketches, columns, labels, scale_factor, margin, font_size, cell_size)
    canvas = _Canvas(grid, stroke_width, color)
    for lines, label in grid.cells:
        for points in lines:
            canvas.line(points)
        if label is not None:
            canvas.text(*label)
    image = canvas.image()
    image.save(path, format="PNG")
    return image.size


def sketch_to_gif(stroke3, path, frames=None, scale_factor=1.0, duration=40, hold=1000,
                  stroke_width=2.0, margin=10.0, color="black", pen_color="red"):
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

    Returns:
        the number of frames written.
    """
    stroke3 = _as_stroke3(stroke3)
    total = len(stroke3)
    if frames is not None and frames < 1:
        raise ValueError(f"frames must be at least 1, got {frames}")
    # Pillow merges identical consecutive frames, so each frame must add a point.
    frames = min(100 if frames is None else frames, max(total, 1))
    grid = _Grid([stroke3], 1, None, scale_factor, margin, 0.0)
    canvas = _Canvas(grid, stroke_width, color)
    lines = grid.cells[0][0]
    # Index of the first point of each stroke, to show the first n points of the sketch.
    starts = np.cumsum([0] + [len(points) for points in lines])
    artists = [canvas.line(points[:0]) for points in lines]
    (pen,) = canvas.axes.plot([], [], "o", color=pen_color, markersize=2.5 * canvas.dot_size)
    images = []
    for k in range(1, frames + 1):
        shown = -(-k * total // frames)  # ceil(k N / F) points
        for artist, points, start in zip(artists, lines, starts):
            canvas.set_points(artist, points[:max(0, shown - start)])
        if shown:
            last = shown - 1  # the pen is at this point, of this stroke:
            stroke = np.searchsorted(starts, last, side="right") - 1
            pen.set_data(*lines[stroke][last - starts[stroke]].reshape(2, 1))
        images.append(canvas.image())
    durations = [duration] * (len(images) - 1) + [hold]
    images[0].save(path, format="GIF", save_all=True, append_images=images[1:],
                   duration=durations, loop=0)
    return len(images)
