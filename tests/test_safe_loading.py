"""load_npz reads the real data sets and refuses files whose pickles would run code."""

import builtins
import io
import os
import pathlib
import pickle
import subprocess
import zipfile

import numpy as np
import pytest

import utils

REAL_FILES = ["aaron_sheep.npz", "short_kanji.npz", "omniglot.npz"]


@pytest.mark.parametrize("name", REAL_FILES)
def test_real_files_load_like_np_load(shared_datasets, name):
    ours = utils.load_npz(shared_datasets / name)
    reference = np.load(shared_datasets / name, allow_pickle=True, encoding="latin1")
    assert sorted(ours) == sorted(reference.files) == ["test", "train", "valid"]
    for key in reference.files:
        expected = reference[key]
        assert ours[key].dtype == object and ours[key].shape == expected.shape
        for got, want in zip(ours[key], expected):
            assert got.dtype == want.dtype
            np.testing.assert_array_equal(got, want)


def test_files_written_by_this_numpy_load(tmp_path):
    # np.savez pickles with numpy._core names (numpy 2), the shared files numpy.core
    sketches = np.empty(2, dtype=object)
    sketches[0] = np.arange(12, dtype=np.int16).reshape(4, 3)
    sketches[1] = np.ones((2, 3))
    np.savez(tmp_path / "new.npz", train=sketches, lengths=np.array([4, 2]))
    loaded = utils.load_npz(tmp_path / "new.npz")
    np.testing.assert_array_equal(loaded["lengths"], [4, 2])
    np.testing.assert_array_equal(loaded["train"][0], sketches[0])
    np.testing.assert_array_equal(loaded["train"][1], sketches[1])


# ---- hostile files ----


class Reduce:
    """Pickles as a call of ``function(*args)``, which unpickling runs."""

    def __init__(self, function, *args):
        self.function = function
        self.args = args

    def __reduce__(self):
        return self.function, self.args


def object_array(*elements):
    packed = np.empty(len(elements), dtype=object)
    for i, element in enumerate(elements):
        packed[i] = element
    return packed


def npy_bytes(pickle_bytes, shape=(1,)):
    """A .npy file declaring an object array, followed by the given pickle bytes."""
    buffer = io.BytesIO()
    header = {"descr": "|O", "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue() + pickle_bytes


def write_npz(path, pickle_bytes, shape=(1,)):
    """Writes an .npz whose train.npy holds the given pickle."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("train.npy", npy_bytes(pickle_bytes, shape))
    return path


def hostile_pickles(marker, tmp_path):
    """Pickles that each create ``marker`` when unpickled by pickle or np.load."""
    touch = f"open({str(marker)!r}, 'w').close()"
    inner = tmp_path / "inner.npy"  # loaded by the numpy.load case below
    inner.write_bytes(npy_bytes(pickle.dumps(Reduce(os.system, f"touch '{marker}'"))))
    return {
        "os.system": pickle.dumps(Reduce(os.system, f"touch '{marker}'"), protocol=2),
        "subprocess.call": pickle.dumps(
            Reduce(subprocess.call, ["touch", str(marker)]), protocol=4
        ),
        "builtins.eval": pickle.dumps(Reduce(builtins.eval, touch), protocol=4),
        "builtins.exec": pickle.dumps(Reduce(builtins.exec, touch), protocol=4),
        "pathlib.Path.touch": pickle.dumps(
            Reduce(pathlib.Path.touch, pathlib.Path(marker)), protocol=4
        ),
        # the outer array and its first element are genuine numpy arrays
        "nested object array": pickle.dumps(
            object_array(
                np.zeros((2, 3), np.int16),
                object_array(Reduce(os.system, f"touch '{marker}'")),
            ),
            protocol=4,
        ),
        # numpy itself is not trusted wholesale
        "numpy.load": pickle.dumps(Reduce(np.load, str(inner), None, True), protocol=4),
        # written by hand: protocol 0 GLOBAL opcode, no pickle.dumps involved
        "hand-written GLOBAL": (
            b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."
        ),
    }


CASES = [
    "os.system",
    "subprocess.call",
    "builtins.eval",
    "builtins.exec",
    "pathlib.Path.touch",
    "nested object array",
    "numpy.load",
    "hand-written GLOBAL",
]


@pytest.mark.parametrize("case", CASES)
def test_hostile_file_is_refused_without_running_it(tmp_path, case):
    marker = tmp_path / "marker"
    path = write_npz(tmp_path / "hostile.npz", hostile_pickles(marker, tmp_path)[case])
    with pytest.raises(utils.UnsafeFileError) as error:
        utils.load_npz(path)
    message = str(error.value)
    assert str(path) in message
    assert "not numpy arrays" in message
    assert "\n" not in message
    assert not marker.exists()


@pytest.mark.parametrize("case", CASES)
def test_hostile_payloads_do_run_under_np_load(tmp_path, case):
    # The control: the same files run their payload under np.load(allow_pickle=True),
    # so the test above passes because load_npz refuses them, not because they are inert.
    marker = tmp_path / "marker"
    path = write_npz(tmp_path / "hostile.npz", hostile_pickles(marker, tmp_path)[case])
    with np.load(path, allow_pickle=True) as archive:
        archive["train"]  # loading is what runs the payload
    assert marker.exists()


@pytest.mark.parametrize(
    "elements, what",
    [
        ((np.zeros((2, 3)), [1, 2, 3]), "element 1 is a list"),
        ((np.zeros((2, 3)), object_array(np.zeros((2, 3)))), "1 has dtype object"),
        ((np.array(["a", "b"]),), "element 0 has dtype <U1"),
    ],
)
def test_object_arrays_must_hold_numeric_arrays(tmp_path, elements, what):
    pickled = pickle.dumps(object_array(*elements))
    path = write_npz(tmp_path / "odd.npz", pickled, shape=(len(elements),))
    with pytest.raises(utils.UnsafeFileError, match=what) as error:
        utils.load_npz(path)
    assert str(path) in str(error.value) and "not numpy arrays" in str(error.value)


def test_a_pickle_that_is_not_an_array_is_refused(tmp_path):
    path = write_npz(tmp_path / "dict.npz", pickle.dumps({"train": [1, 2]}))
    with pytest.raises(utils.UnsafeFileError, match="train.npy is a dict"):
        utils.load_npz(path)


# ---- broken files ----


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.npz"):
        utils.load_npz(tmp_path / "nowhere.npz")


def test_not_a_zip_names_the_file(tmp_path):
    path = tmp_path / "page.npz"
    path.write_text("<html>404 Not Found</html>")
    with pytest.raises(ValueError, match="page.npz is not a valid .npz file"):
        utils.load_npz(path)


def test_truncated_file_names_the_file(tmp_path, shared_datasets):
    data = (shared_datasets / "aaron_sheep.npz").read_bytes()
    path = tmp_path / "cut.npz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.npz"):
        utils.load_npz(path)


def test_corrupt_pickle_names_the_file_and_member(tmp_path):
    path = write_npz(tmp_path / "junk.npz", b"\x80\x04not a pickle at all")
    with pytest.raises(ValueError, match="junk.npz: train.npy is corrupt") as error:
        utils.load_npz(path)
    assert not isinstance(error.value, utils.UnsafeFileError)
