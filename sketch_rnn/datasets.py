"""The data sets: names, where to download them, and their splits read safely.

A data set is ``<data_dir>/<name>.npz`` with ``train``/``valid``/``test`` arrays of
stroke-3 sketches (the sketch-rnn-datasets and QuickDraw ``sketchrnn`` files). A known
name that is missing is downloaded, with a deadline, a size limit and a progress line;
every file is read with ``safe_loading.load_npz`` and its sketches checked.
"""

import http.client
import math
import os
import reprlib
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from functools import lru_cache
from pathlib import Path

import numpy as np

from sketch_rnn.files import first_line, missing_folders, remove_empty_folders
from sketch_rnn.safe_loading import load_npz

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
    Path(__file__).resolve().parent.parent / "datasets" / "quickdraw_categories.txt"
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
    hint = (f" (give the folder holding {name.removesuffix('.npz')}.npz as data_dir, --data_dir)"
            if data_dir is not None else "")
    return ValueError(
        f"unknown data set {name!r}: {where}not a QuickDraw category or one of "
        f"aaron_sheep, kanji, omniglot{hint}"
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
