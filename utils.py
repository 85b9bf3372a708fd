"""Stroke formats, safe .npz loading, the data sets, the DataLoader and pictures (Ha & Eck 2017).

The names every command, test and notebook imports as ``utils.X``, in one import. The code
lives in the `sketch_rnn` package, one concept per module:

| module | what it holds |
|---|---|
| `sketch_rnn.strokes` | stroke-3 and stroke-5 (section 3.1), `read_sketch`, augmentation, `clamp_and_scale` |
| `sketch_rnn.safe_loading` | `load_npz` / `load_npy`: numpy arrays out of a file, never code |
| `sketch_rnn.files` | one-line reasons, checks before reading, atomic writes, JSON configs |
| `sketch_rnn.datasets` | data set names, downloads, `load_strokes` / `load_labelled_strokes` |
| `sketch_rnn.data_loader` | `DataLoader`: one split in stroke-5 batches (official DataLoader) |
| `sketch_rnn.pictures` | SVG, PNG and GIF of sketches |

A sketch in *stroke-3* format is an (N, 3) array of rows (dx, dy, pen_lifted); the model
reads and writes *stroke-5* rows (dx, dy, p1, p2, p3). The conversions and the DataLoader
follow the official Magenta ``sketch_rnn/utils.py`` so that numbers match the paper's code.
"""

from sketch_rnn.data_loader import (
    DataLoader,
)
from sketch_rnn.datasets import (
    DOWNLOAD_DEADLINE,
    DOWNLOAD_DEADLINE_VARIABLE,
    MAX_DOWNLOAD_BYTES,
    MAX_DOWNLOAD_BYTES_VARIABLE,
    QUICKDRAW_CATEGORIES_FILE,
    QUICKDRAW_URL,
    READ_TIMEOUT,
    SKETCH_RNN_DATASETS,
    SKETCH_RNN_DATASETS_URL,
    SPLITS,
    DownloadError,
    check_data_set_name,
    check_data_set_names,
    dataset_url,
    download_dataset,
    load_labelled_strokes,
    load_strokes,
    longest_sketch,
    quickdraw_categories,
    validate_sketches,
)
from sketch_rnn.files import (
    MAX_CONFIG_BYTES,
    MAX_CONFIG_DEPTH,
    UnsafePathError,
    check_regular_file,
    check_scale_factor,
    first_line,
    missing_folders,
    read_json_config,
    read_json_file,
    refuse_link,
    remove_empty_folders,
    write_atomically,
)
from sketch_rnn.pictures import (
    MAX_PICTURE_SIDE,
    PNG_DPI,
    PREFIX_COLOR,
    sketch_to_gif,
    sketch_to_svg,
    sketches_to_image,
    sketches_to_png,
    sketches_to_svg,
    stroke_lines,
)
from sketch_rnn.safe_loading import (
    BYTES_PER_FILE_BYTE,
    MAX_ARRAY_BYTES_VARIABLE,
    MIN_ARRAY_BYTES,
    UnsafeFileError,
    array_bytes_limit,
    load_npy,
    load_npz,
)
from sketch_rnn.strokes import (
    MAX_SKETCH_FILE_BYTES,
    START_TOKEN,
    STROKE_LIMIT,
    augment_strokes,
    clamp_and_scale,
    first_strokes,
    random_scale,
    read_sketch,
    strokes_to_stroke3,
    to_stroke3,
    to_stroke5,
)

__all__ = [
    "START_TOKEN", "to_stroke5", "to_stroke3", "first_strokes", "strokes_to_stroke3",
    "MAX_SKETCH_FILE_BYTES", "read_sketch", "augment_strokes", "random_scale", "STROKE_LIMIT",
    "clamp_and_scale", "UnsafeFileError", "MAX_ARRAY_BYTES_VARIABLE", "BYTES_PER_FILE_BYTE",
    "MIN_ARRAY_BYTES", "array_bytes_limit", "load_npz", "load_npy", "UnsafePathError", "first_line",
    "check_regular_file", "missing_folders", "remove_empty_folders", "refuse_link",
    "write_atomically", "MAX_CONFIG_BYTES", "MAX_CONFIG_DEPTH", "read_json_config",
    "read_json_file", "check_scale_factor", "SPLITS", "QUICKDRAW_URL", "SKETCH_RNN_DATASETS_URL",
    "SKETCH_RNN_DATASETS", "QUICKDRAW_CATEGORIES_FILE", "DownloadError", "quickdraw_categories",
    "dataset_url", "DOWNLOAD_DEADLINE_VARIABLE", "MAX_DOWNLOAD_BYTES_VARIABLE", "DOWNLOAD_DEADLINE",
    "MAX_DOWNLOAD_BYTES", "READ_TIMEOUT", "download_dataset", "validate_sketches", "load_strokes",
    "load_labelled_strokes", "longest_sketch", "check_data_set_name", "check_data_set_names",
    "DataLoader", "stroke_lines", "PNG_DPI", "sketch_to_svg", "PREFIX_COLOR", "sketches_to_svg",
    "MAX_PICTURE_SIDE", "sketches_to_image", "sketches_to_png", "sketch_to_gif",
]
