"""Issue 11, trust round two: hostile files, links, resources and one-line errors.

Each class of the issue is tried with inputs built here: crafted pickles (opcodes by hand
where pickle.dumps cannot make them), zip members patched byte by byte, symbolic links and
FIFOs in run folders, and local HTTP servers on 127.0.0.1. Loads that could crash the
interpreter or take much memory run in a subprocess, which reports its peak memory.
"""

import http.server
import io
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

import callbacks
import seq2seqVAE_sample
import seq2seqVAE_train
import utils
from sketch_rnn import datasets, safe_loading

REPO = Path(__file__).resolve().parents[1]
TINY = ("enc_rnn_size=16,dec_rnn_size=32,z_size=8,num_mixture=4,batch_size=20,"
        "steps_per_epoch=2,max_seq_len=60")


# ---- helpers ----


def npy_header(shape, descr="|O", fortran=False):
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": descr, "fortran_order": fortran, "shape": shape})
    return buffer.getvalue()


def write_npz(path, members, compression=zipfile.ZIP_STORED):
    """An .npz whose members are {name: bytes}."""
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def object_npz(path, pickle_bytes, shape=(1,)):
    return write_npz(path, {"train.npy": npy_header(shape) + pickle_bytes})


def object_array(*elements):
    packed = np.empty(len(elements), dtype=object)
    for i, element in enumerate(elements):
        packed[i] = element
    return packed


def one_line(error):
    message = str(error.value if hasattr(error, "value") else error)
    assert "\n" not in message, message
    return message


LOAD_IN_SUBPROCESS = textwrap.dedent("""
    import json, resource, sys
    sys.path.insert(0, {repo!r})
    import utils
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        arrays = utils.load_npz(sys.argv[1])
        outcome = "loaded " + ",".join(sorted(arrays))
        if "train" in arrays:
            list(arrays["train"].flat)  # touch every element
    except Exception as err:
        outcome = type(err).__name__ + ": " + str(err)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({{"outcome": outcome, "peak_mb": (after - before) / 1024}}))
""")


def load_in_subprocess(path, env=None):
    """load_npz(path) in a fresh interpreter: (returncode, outcome, peak memory growth in MB)."""
    script = LOAD_IN_SUBPROCESS.format(repo=str(REPO))
    done = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})})
    if done.returncode != 0:
        return done.returncode, done.stderr[-500:], None
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return 0, result["outcome"], result["peak_mb"]


# ---- critical 1: dtype state from the file never reaches numpy ----

# _reconstruct(ndarray, (0,), b'b') and BUILD, as numpy writes them (protocol 2)...
RECONSTRUCT = (b"\x80\x02cnumpy.core.multiarray\n_reconstruct\nq\x01cnumpy\nndarray\nq\x02"
               b"K\x00\x85U\x01b\x87Rq\x03")


def dtype_opcodes(typestr, endian, flags, elsize=-1, alignment=-1):
    """dtype(typestr, False, True) and BUILD of the state (3, endian, ..., flags)."""
    def binint(value):
        return b"J" + value.to_bytes(4, "little", signed=True)
    return (b"cnumpy\ndtype\nU" + bytes([len(typestr)]) + typestr.encode() + b"K\x00K\x01\x87R"
            b"(K\x03U\x01" + endian.encode() + b"NNN" + binint(elsize) + binint(alignment)
            + binint(flags) + b"tb")


def crafted_array(dtype_part, data, count=1):
    """A pickle of a 1-D array of ``count`` elements with the given dtype opcodes and data."""
    return (RECONSTRUCT + b"(K\x01K" + bytes([count]) + b"\x85" + dtype_part + b"\x89"
            + b"T" + len(data).to_bytes(4, "little") + data + b"tb.")


POINTER = (0x4141414141414141).to_bytes(8, "little")
CRAFTED_DTYPES = {
    # an object dtype whose flags are cleared: numpy reads the data's bytes as pointers
    "object dtype, flags cleared": crafted_array(dtype_opcodes("O8", "|", 0), POINTER),
    # a number dtype marked as holding objects
    "int64 dtype, object flags set": crafted_array(dtype_opcodes("i8", "<", 63), POINTER),
    "wrong item size": crafted_array(dtype_opcodes("U1", "<", 8, elsize=64, alignment=4),
                                     POINTER),
    "byte order numpy never writes for int16": crafted_array(dtype_opcodes("i2", "|", 0),
                                                             b"\x01\x00"),
}


@pytest.mark.parametrize("case", sorted(CRAFTED_DTYPES))
def test_a_dtype_state_numpy_never_writes_is_refused_without_crashing(tmp_path, case):
    path = object_npz(tmp_path / "crafted.npz", CRAFTED_DTYPES[case])
    code, outcome, _ = load_in_subprocess(path)
    assert code == 0, f"the loader crashed (exit {code}): {outcome}"
    assert outcome.startswith("UnsafeFileError: ") and str(path) in outcome
    assert "not the state numpy writes" in outcome and "\n" not in outcome


def test_the_flag_clearing_file_does_crash_np_load(tmp_path):
    # The control: numpy itself dereferences the file's bytes (SIGSEGV), so the test above
    # passes because load_npz refuses the file, not because it is harmless.
    path = object_npz(tmp_path / "crafted.npz", CRAFTED_DTYPES["object dtype, flags cleared"])
    script = (f"import numpy as np; a = np.load({str(path)!r}, allow_pickle=True)['train']; "
              "print(list(a.flat))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert done.returncode == -signal.SIGSEGV


@pytest.mark.parametrize("payload, fragment", [
    (RECONSTRUCT + b"(K\x01K\x01\x85" + dtype_opcodes("O8", "|", 63) + b"(K\x03U\x01|NNN"
     b"J\xff\xff\xff\xffJ\xff\xff\xff\xffK\x3ftb\x89]tb.", "state of dtype O8 twice"),
    (b"\x80\x02cnumpy\ndtype\nU\x02V8K\x00K\x01\x87R.", "dtype 'V8'"),
    (b"\x80\x02cnumpy\ndtype\nU\x02O8K\x01K\x01\x87R.", "options numpy never writes"),
    (b"\x80\x02cnumpy\nndarray\n(J\x00\x00\x00\x40\x85tR.", "calls numpy.ndarray directly"),
    (b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nJ\x00\x00\x00\x40\x85"
     b"U\x01b\x87R.", "arguments numpy never writes"),
    (b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x04\x00\x00\x00utf7\x86R.",
     "_codecs.encode with arguments"),
])
def test_calls_numpy_never_makes_are_refused(tmp_path, payload, fragment):
    path = object_npz(tmp_path / "odd.npz", payload)
    with pytest.raises(utils.UnsafeFileError, match=fragment) as error:
        utils.load_npz(path)
    assert str(path) in one_line(error)


def test_every_loaded_dtype_is_a_fresh_plain_dtype(shared_datasets):
    arrays = utils.load_npz(shared_datasets / "aaron_sheep.npz")
    for array in arrays.values():
        assert array.dtype == np.dtype("O") and array.dtype.flags == np.dtype("O").flags
        for element in array:
            fresh = np.dtype(element.dtype.str)
            assert element.dtype == fresh and element.dtype.flags == fresh.flags
            assert element.dtype.itemsize == fresh.itemsize and not element.dtype.hasobject
            assert element.flags.owndata and element.flags.writeable


# ---- legitimate files refused before: protocols 0 to 5 ----


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_object_arrays_pickled_with_any_protocol_load(tmp_path, protocol):
    sketches = object_array(np.arange(12, dtype=np.int16).reshape(4, 3),
                            np.asfortranarray(np.linspace(0, 1, 6).reshape(2, 3)),
                            np.arange(9, dtype=">i4").reshape(3, 3),
                            np.zeros((0, 3), np.float32))
    path = object_npz(tmp_path / f"p{protocol}.npz", pickle.dumps(sketches, protocol=protocol),
                      shape=(4,))
    payload = path.read_bytes()
    if protocol <= 2:
        assert b"_codecs" in payload  # bytes as latin1 text, as numpy up to 1.15 wrote
    if protocol == 5:
        assert b"_frombuffer" in payload
    loaded = utils.load_npz(path)["train"]
    for got, want in zip(loaded, sketches):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)


# ---- zip members and pickles that are not ours: one line ----


def patch_zip_member(path, flag_bits=None, compress_type=None):
    """Rewrites the flag bits or compression method of the first member, in both headers."""
    data = bytearray(path.read_bytes())
    for signature, flags_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = data.index(signature)
        if flag_bits is not None:
            data[at + flags_at:at + flags_at + 2] = flag_bits.to_bytes(2, "little")
        if compress_type is not None:
            data[at + flags_at + 2:at + flags_at + 4] = compress_type.to_bytes(2, "little")
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("patch, fragment", [
    (dict(flag_bits=1), "train.npy is encrypted"),
    (dict(compress_type=99), "train.npy uses zip compression method 99"),
])
def test_encrypted_or_unknown_compression_members_are_one_line(tmp_path, patch, fragment):
    path = write_npz(tmp_path / "odd.npz", {"train.npy": npy_header((0,), "<f8")})
    patch_zip_member(path, **patch)
    with pytest.raises(ValueError, match=fragment) as error:
        utils.load_npz(path)
    assert str(path) in one_line(error)


@pytest.mark.parametrize("payload", [b"(Pid0\ntR.", b"\x80\x02K\x01Q."],
                         ids=["PERSID", "BINPERSID"])
def test_persistent_id_pickles_are_one_line(tmp_path, payload):
    path = object_npz(tmp_path / "persistent.npz", payload)
    with pytest.raises(utils.UnsafeFileError, match="persistent id") as error:
        utils.load_npz(path)
    assert str(path) in one_line(error)


def test_a_fifo_is_not_read_as_a_data_set(tmp_path):
    fifo = tmp_path / "cat.npz"
    os.mkfifo(fifo)
    with pytest.raises(utils.UnsafePathError, match="not a regular file") as error:
        utils.load_npz(fifo)
    assert str(fifo) in one_line(error)


# ---- resources: sizes checked before anything is allocated ----


def memo_reuse_pickle(slots):
    """One 1 MB sketch in ``slots`` slots: the pickle stores it once, then memo references."""
    sketch = np.zeros((43_690, 3))
    packed = np.empty(slots, dtype=object)
    packed[:] = [sketch] * slots
    return pickle.dumps(packed, protocol=2)


def deflate_bomb(path, megabytes):
    """A small .npz whose pickle unpacks to ``megabytes`` MB."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("train.npy", "w", force_zip64=True) as member:
            member.write(npy_header((1,)) + b"\x80\x02")
            block = b"N" * (1 << 20)
            for _ in range(megabytes):
                member.write(block)
    return path


RESOURCE_CASES = {
    # (file builder, claimed size in GB, fragment of the refusal)
    "npy header claims 80 GB": (
        lambda p: write_npz(p, {"train.npy": npy_header((100_000, 100_000), "<f8")}),
        80, "header's shape (100000, 100000)"),
    "object header claims 10**10 slots": (
        lambda p: object_npz(p, pickle.dumps(object_array(np.zeros((2, 3)))), (10**10,)),
        80, "header's shape (10000000000,)"),
    "one sketch in 30000 slots through the memo": (
        lambda p: object_npz(p, memo_reuse_pickle(30_000), (30_000,)), 30, "30000 elements"),
    "a pickle claiming 1 TB of bytes": (
        lambda p: object_npz(p, b"\x80\x04\x8e" + (1 << 40).to_bytes(8, "little") + b"."),
        1000, "could not be read"),
    "a memo slot at 2**31": (
        lambda p: object_npz(p, b"\x80\x02Nr\x00\x00\x00\x80."), 16, "memo slot"),
    "two million empty lists": (
        lambda p: write_npz(p, {"train.npy": npy_header((1,)) + b"\x80\x02(" + b"]" * 2_000_000
                                + b"l."}, zipfile.ZIP_DEFLATED), 0.1, "its pickle"),
    "a deflate bomb of 400 MB": (lambda p: deflate_bomb(p, 400), 0.4, "its pickle"),
}


@pytest.mark.parametrize("case", list(RESOURCE_CASES))
def test_tiny_files_cannot_allocate_much_memory(tmp_path, case):
    build, claimed_gb, fragment = RESOURCE_CASES[case]
    path = build(tmp_path / "big.npz")
    assert path.stat().st_size < 3 << 20
    code, outcome, peak_mb = load_in_subprocess(path)
    assert code == 0, outcome
    assert str(path) in outcome and fragment in outcome and "\n" not in outcome, outcome
    # 64 MiB + 64x the file's size is allowed; the rest is the interpreter's own noise
    allowed_mb = 64 + 64 * path.stat().st_size / 2**20
    assert peak_mb < allowed_mb + 60, f"{peak_mb:.0f} MB for a file claiming {claimed_gb} GB"


def test_the_memory_limit_can_be_lifted_and_lowered(tmp_path, shared_datasets, monkeypatch):
    path = object_npz(tmp_path / "reused.npz", memo_reuse_pickle(200), (200,))
    with pytest.raises(ValueError, match="SKETCH_RNN_MAX_ARRAY_BYTES"):
        utils.load_npz(path)
    monkeypatch.setenv("SKETCH_RNN_MAX_ARRAY_BYTES", str(1 << 30))
    assert utils.load_npz(path)["train"].shape == (200,)
    assert utils.load_npz(path, max_bytes=1 << 30)["train"].shape == (200,)
    monkeypatch.delenv("SKETCH_RNN_MAX_ARRAY_BYTES")
    with pytest.raises(ValueError, match="more than the 1000000 bytes") as error:
        utils.load_npz(shared_datasets / "aaron_sheep.npz", max_bytes=10**6)
    one_line(error)


def test_real_files_load_with_memory_close_to_their_size(shared_datasets):
    path = shared_datasets / "omniglot.npz"
    code, outcome, peak_mb = load_in_subprocess(path)
    assert code == 0 and outcome == "loaded test,train,valid", outcome
    assert peak_mb < 64 + 64 * path.stat().st_size / 2**20


def test_memory_error_while_loading_is_one_line(tmp_path, monkeypatch, shared_datasets):
    def exhausted(*args):
        raise MemoryError
    monkeypatch.setattr(safe_loading, "_read_member", exhausted)
    with pytest.raises(ValueError, match="not enough memory to load") as error:
        utils.load_npz(shared_datasets / "aaron_sheep.npz")
    one_line(error)


# ---- writes never go through links ----


def test_write_atomically_refuses_a_link_and_leaves_its_target(tmp_path):
    target = tmp_path / "elsewhere.txt"
    target.write_text("precious")
    link = tmp_path / "run" / "sample.svg"
    link.parent.mkdir()
    link.symlink_to(target)
    with pytest.raises(utils.UnsafePathError, match="symbolic link") as error:
        utils.write_atomically(link, "<svg/>")
    assert str(link) in one_line(error)
    assert target.read_text() == "precious"
    assert sorted(p.name for p in link.parent.iterdir()) == ["sample.svg"]  # no temporary


def test_write_atomically_replaces_a_file_whole(tmp_path):
    path = tmp_path / "a.json"
    path.write_text("old")
    utils.write_atomically(path, b"new")
    assert path.read_bytes() == b"new" and [p.name for p in tmp_path.iterdir()] == ["a.json"]


@pytest.mark.parametrize("draw", [
    lambda path: utils.sketches_to_svg([np.array([[1.0, 2.0, 1.0]])], path),
    lambda path: utils.sketches_to_png([np.array([[1.0, 2.0, 1.0]])], path),
    lambda path: utils.sketch_to_gif(np.array([[1.0, 2.0, 1.0]]), path),
], ids=["svg", "png", "gif"])
def test_drawings_are_never_written_through_a_link(tmp_path, draw):
    target = tmp_path / "elsewhere"
    target.write_text("precious")
    link = tmp_path / "drawing"
    link.symlink_to(target)
    with pytest.raises(utils.UnsafePathError, match="symbolic link"):
        draw(link)
    assert target.read_text() == "precious"


RUN_LINKS = ["model_config.json", "logs", "logs/training_log.csv", "logs/tensorboard",
             "logs/tensorboard/train", "logs/tensorboard/drawings", "checkpoints", "checkpoints/best.json",
             "checkpoints/best.weights.h5", "checkpoints/ckpt-epoch0001-step00000002.weights.h5",
             "test_losses.json"]


@pytest.mark.parametrize("where", RUN_LINKS)
def test_check_run_folder_refuses_every_link_we_would_write_through(tmp_path, where):
    run = tmp_path / "run"
    (run / "logs" / "tensorboard").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    link = run / where
    if link.is_dir():
        shutil.rmtree(link)
    link.symlink_to(outside)
    with pytest.raises(utils.UnsafePathError, match="symbolic link") as error:
        callbacks.check_run_folder(str(run))
    assert str(link) in one_line(error)


def test_save_atomically_refuses_a_link_at_the_checkpoint_name(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    target = tmp_path / "elsewhere.h5"
    target.write_bytes(b"precious")
    link = tmp_path / "checkpoints" / "ckpt-epoch0001-step00000002.weights.h5"
    link.parent.mkdir()
    link.symlink_to(target)
    planted = link.parent / f".tmp-{os.getpid()}-best.weights.h5"
    planted.symlink_to(target)  # a link at the temporary name is removed, not written through
    with pytest.raises(utils.UnsafePathError, match="symbolic link"):
        callbacks.save_atomically(model, str(link))
    callbacks.save_atomically(model, str(link.parent / "best.weights.h5"))
    assert target.read_bytes() == b"precious"
    assert (link.parent / "best.weights.h5").is_file() and not planted.exists()


def test_list_checkpoints_skips_fifos(tmp_path):
    os.mkfifo(tmp_path / "ckpt-epoch0002-step00000004.weights.h5")
    (tmp_path / "ckpt-epoch0001-step00000002.weights.h5").write_bytes(b"x")
    assert [step for step, _, _ in callbacks.list_checkpoints(str(tmp_path))] == [2]


# ---- the training command ----


def random_sketches(rng, count):
    sketches = np.empty(count, dtype=object)
    for i in range(count):
        n = int(rng.integers(5, 40))
        sketch = np.zeros((n, 3), np.int16)
        sketch[:, :2] = rng.integers(-20, 20, size=(n, 2))
        sketch[-1, 2] = 1
        sketches[i] = sketch
    return sketches


def write_data(folder, name="sketches"):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / f"{name}.npz", train=random_sketches(rng, 60),
             valid=random_sketches(rng, 20), test=random_sketches(rng, 20))
    return folder


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A run folder of one tiny epoch (2 steps) on data set 'sketches', and its data folder."""
    root = tmp_path_factory.mktemp("tiny")
    data_dir = write_data(root / "data")
    run_dir = root / "run"
    code = seq2seqVAE_train.main([f"--data_dir={data_dir}", "--data_set=sketches",
                                  f"--experiment_dir={run_dir}", "--verbose=0",
                                  f"--hparams={TINY},epochs=1"])
    assert code == 0
    return data_dir, run_dir


def train_main(capsys, *argv):
    code = seq2seqVAE_train.main([*argv, "--verbose=0"])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *fragments):
    lines = [line for line in err.strip().splitlines() if line]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("where", ["logs/training_log.csv", "logs/tensorboard", "checkpoints",
                                   "checkpoints/ckpt-epoch0009-step00000018.weights.h5"])
def test_resuming_a_run_folder_holding_a_link_writes_nothing_outside(tiny_run, tmp_path, where,
                                                                      capsys):
    data_dir, run_dir = tiny_run
    copy = Path(shutil.copytree(run_dir, tmp_path / "run"))
    outside = tmp_path / "outside.csv"
    outside.write_text("precious")
    link = copy / where
    if link.is_dir():
        shutil.rmtree(link)
    elif link.exists():
        link.unlink()
    link.symlink_to(outside)
    code, _, err = train_main(capsys, f"--data_dir={data_dir}", f"--experiment_dir={copy}",
                              f"--checkpoint={copy}", "--hparams=epochs=2")
    assert_one_line_error(code, err, str(link), "symbolic link")
    assert outside.read_text() == "precious"


def test_a_fifo_named_as_the_checkpoint_is_one_line_not_a_hang(tiny_run, tmp_path, capsys):
    data_dir, run_dir = tiny_run
    copy = Path(shutil.copytree(run_dir, tmp_path / "run"))
    fifo = copy / "checkpoints" / "ckpt-epoch0005-step00000010.weights.h5"
    os.mkfifo(fifo)
    signal.alarm(60)  # a hang fails the test instead of stopping the suite
    try:
        code, _, err = train_main(capsys, f"--data_dir={data_dir}", f"--experiment_dir={copy}",
                                  f"--checkpoint={fifo}")
        assert_one_line_error(code, err, str(fifo), "not a regular file")
        # From the run folder the FIFO is not a checkpoint: the real one is resumed.
        found, epoch = seq2seqVAE_train.find_checkpoint(str(copy), None)
        assert found != str(fifo) and epoch == 1
    finally:
        signal.alarm(0)


def test_resuming_without_data_set_takes_the_runs_own(tiny_run, tmp_path, capsys):
    data_dir, run_dir = tiny_run
    copy = Path(shutil.copytree(run_dir, tmp_path / "run"))
    args = seq2seqVAE_train.parse_args([f"--data_dir={data_dir}", f"--experiment_dir={copy}",
                                        f"--checkpoint={copy}"])
    run = seq2seqVAE_train.prepare(args)
    assert run["data_sets"] == ["sketches"] and run["initial_epoch"] == 1


@pytest.mark.parametrize("name", ["../sketches", "data/sketches", "..", "a\\b"])
def test_data_set_names_with_paths_are_refused(tmp_path, capsys, name):
    data_dir = write_data(tmp_path / "data")
    code, _, err = train_main(capsys, f"--data_dir={data_dir}", f"--data_set={name}",
                              f"--experiment_dir={tmp_path / 'run'}", f"--hparams={TINY}")
    assert_one_line_error(code, err, "--data_set", repr(name))
    with pytest.raises(ValueError, match="not a data set name"):
        utils.load_strokes(data_dir, name, download=False)


@pytest.mark.parametrize("hparams, fragment", [
    ("enc_rnn_size=1000000000", "'enc_rnn_size' must be at most"),
    ("dec_rnn_size=100000", "'dec_rnn_size' must be at most"),
    ("max_seq_len=1000000000000", "'max_seq_len' must be at most"),
    ("batch_size=1000000000", "'batch_size' must be at most"),
    ("seed=4294967296", "'seed' must be at most 4294967295"),
])
def test_absurd_hparams_are_one_line_before_anything_is_built(tmp_path, capsys, hparams,
                                                              fragment):
    data_dir = write_data(tmp_path / "data")
    code, _, err = train_main(capsys, f"--data_dir={data_dir}", "--data_set=sketches",
                              f"--experiment_dir={tmp_path / 'run'}", f"--hparams={hparams}")
    assert_one_line_error(code, err, "--hparams", fragment)
    assert not (tmp_path / "run" / "model_config.json").exists()


def test_absurd_stored_hparams_are_one_line_on_resume(tiny_run, tmp_path, capsys):
    data_dir, run_dir = tiny_run
    copy = Path(shutil.copytree(run_dir, tmp_path / "run"))
    config = json.loads((copy / "model_config.json").read_text())
    config["hparams"]["dec_rnn_size"] = 10**9
    (copy / "model_config.json").write_text(json.dumps(config))
    code, _, err = train_main(capsys, f"--data_dir={data_dir}", f"--experiment_dir={copy}",
                              f"--checkpoint={copy}")
    assert_one_line_error(code, err, str(copy / "model_config.json"), "'dec_rnn_size'")


@pytest.mark.parametrize("content, fragment", [
    (b'{"hparams": {}, "scale_factor": 1.0, "data_set": ["\xff"]}', "not UTF-8"),
    (b"[" * 100_000 + b"]" * 100_000, "nested deeper than"),
    (b'{"a": ' + b"[" * 40 + b"]" * 40 + b"}", "nested deeper than"),
    (b"[1, 2]", "a JSON list"),
])
def test_unreadable_model_configs_are_one_line_on_resume(tiny_run, tmp_path, capsys, content,
                                                         fragment):
    data_dir, run_dir = tiny_run
    copy = Path(shutil.copytree(run_dir, tmp_path / "run"))
    (copy / "model_config.json").write_bytes(content)
    code, _, err = train_main(capsys, f"--data_dir={data_dir}", f"--experiment_dir={copy}",
                              f"--checkpoint={copy}")
    assert_one_line_error(code, err, str(copy / "model_config.json"), fragment)


def test_a_run_that_failed_before_its_first_checkpoint_can_start_again(tmp_path, capsys,
                                                                       monkeypatch):
    import keras

    data_dir = write_data(tmp_path / "data")
    argv = [f"--data_dir={data_dir}", "--data_set=sketches", f"--experiment_dir={tmp_path / 'run'}",
            f"--hparams={TINY},epochs=1"]

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt
    with monkeypatch.context() as patch:
        patch.setattr(keras.Model, "fit", interrupted)
        code, _, err = train_main(capsys, *argv)
    assert code == 130 and "the same command starts the run over" in err
    assert (tmp_path / "run" / "model_config.json").exists()
    code, _, err = train_main(capsys, *argv)  # the same command again
    assert code == 0, err
    assert "stopped before its first checkpoint; starting it over" in err
    assert callbacks.list_checkpoints(str(tmp_path / "run" / "checkpoints"))
    log = (tmp_path / "run" / "logs" / "training_log.csv").read_text().splitlines()
    assert log[0].startswith("epoch") and len(log) == 2  # one header: a new log, not appended


def test_memory_error_in_training_is_one_line(tmp_path, capsys, monkeypatch):
    data_dir = write_data(tmp_path / "data")

    def exhausted(*args, **kwargs):
        raise MemoryError
    monkeypatch.setattr(datasets, "load_npz", exhausted)  # what every data set loader reads with
    code, _, err = train_main(capsys, f"--data_dir={data_dir}", "--data_set=sketches",
                              f"--experiment_dir={tmp_path / 'run'}", f"--hparams={TINY}")
    assert_one_line_error(code, err, "out of memory")


# ---- the sampling command ----


@pytest.fixture
def sheep_run(tmp_path):
    """A copy of the shipped examples/sheep run folder."""
    return Path(shutil.copytree(REPO / "examples" / "sheep", tmp_path / "sheep"))


def sample_main(capsys, *argv):
    code = seq2seqVAE_sample.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("flag, fragment", [
    ("--count=1000000000", "--count must be at most"),
    ("--temperature=inf", "--temperature must be a finite number > 0"),
    ("--temperature=nan", "--temperature must be a finite number > 0"),
    ("--pen_temperature=0", "--pen_temperature must be a finite number > 0"),
    ("--cell_size=1e12", "--cell_size must be"),
    ("--cell_size=nan", "--cell_size must be"),
    ("--seed=4294967296", "--seed must be from 0 to 2**32 - 1"),
    ("--seed=-1", "--seed must be"),
    ("--columns=1000000000", "--columns must be"),
])
def test_sampler_flags_are_bounded(sheep_run, capsys, flag, fragment):
    code, _, err = sample_main(capsys, f"--run_dir={sheep_run}", flag)
    assert_one_line_error(code, err, fragment)


@pytest.mark.parametrize("where", ["drawings", "drawings/sample-t0.50-s1.svg"])
def test_sampler_never_writes_through_a_link(sheep_run, tmp_path, capsys, where):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "sample.svg").write_text("precious")
    if where == "drawings":
        (sheep_run / "drawings").symlink_to(outside)
    else:
        (sheep_run / "drawings").mkdir()
        (sheep_run / where).symlink_to(outside / "sample.svg")  # the picture --seed=1 names
    code, _, err = sample_main(capsys, f"--run_dir={sheep_run}", "--count=1", "--seed=1")
    assert_one_line_error(code, err, str(sheep_run / where), "symbolic link")
    assert (outside / "sample.svg").read_text() == "precious"


def test_sampler_refuses_a_fifo_checkpoint(sheep_run, capsys):
    fifo = sheep_run / "checkpoints" / "fifo.weights.h5"
    os.mkfifo(fifo)
    code, _, err = sample_main(capsys, f"--run_dir={sheep_run}", f"--checkpoint={fifo}")
    assert_one_line_error(code, err, "--checkpoint", str(fifo), "not a regular file")


@pytest.mark.parametrize("edit, fragment", [
    (lambda c: {**c, "scale_factor": float("inf")}, "'scale_factor' must be a positive number"),
    (lambda c: {**c, "scale_factor": True}, "'scale_factor' must be a positive number"),
    (lambda c: {**c, "data_set": ["../../etc/passwd"]}, "is not a data set name"),
    (lambda c: {**c, "data_set": "aaron_sheep"}, "'data_set' must be a list of data set names"),
    (lambda c: {**c, "hparams": {**c["hparams"], "z_size": 10**9}}, "'z_size' must be at most"),
])
def test_sampler_checks_the_run_config_before_loading(sheep_run, capsys, edit, fragment):
    path = sheep_run / "model_config.json"
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))
    code, _, err = sample_main(capsys, f"--run_dir={sheep_run}")
    assert_one_line_error(code, err, str(path), fragment)


def test_sampler_reads_no_non_utf8_config(sheep_run, capsys):
    path = sheep_run / "model_config.json"
    path.write_bytes(b"\xff\xfe" + path.read_bytes())
    code, _, err = sample_main(capsys, f"--run_dir={sheep_run}")
    assert_one_line_error(code, err, str(path), "not UTF-8")


# ---- downloads ----


class HostileHandler(http.server.BaseHTTPRequestHandler):
    """/slow trickles a byte every 0.2 s; /big sends 3 MB without a length; /loop redirects
    to itself; /file redirects to a file: URL; /huge announces 10 GB."""

    def do_GET(self):
        if self.path.startswith("/loop"):
            self.send_response(302)
            self.send_header("Location", "/loop/aaron_sheep/aaron_sheep.npz")
            self.end_headers()
        elif self.path.startswith("/file"):
            self.send_response(302)
            self.send_header("Location", "file:///etc/passwd")
            self.end_headers()
        elif self.path.startswith("/huge"):
            self.send_response(200)
            self.send_header("Content-Length", str(10 << 30))
            self.end_headers()
        elif self.path.startswith("/big"):
            self.send_response(200)
            self.end_headers()
            for _ in range(48):
                self.wfile.write(b"x" * (1 << 16))
        else:  # /slow
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            try:
                for _ in range(1000):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.2)
            except OSError:
                pass
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def hostile_server(monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.delenv("SKETCH_RNN_BASE_URL", raising=False)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), HostileHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.mark.parametrize("route, options, fragment", [
    ("/slow", dict(deadline=1.5), "not finished after 1.5 s"),
    ("/big", dict(max_bytes=1 << 20), "more than the 1048576 bytes"),
    ("/huge", {}, "announces 10737418240 bytes"),
    ("/loop", {}, "HTTP 302"),
    ("/file", {}, "not allowed"),
])
def test_hostile_downloads_fail_in_one_line_and_leave_nothing(tmp_path, hostile_server, route,
                                                              options, fragment):
    data_dir = tmp_path / "data"
    started = time.monotonic()
    with pytest.raises(utils.DownloadError, match=fragment) as error:
        utils.download_dataset("aaron_sheep", data_dir, base_url=hostile_server + route,
                               **options)
    assert time.monotonic() - started < 10
    assert "save it as" in one_line(error)
    assert not data_dir.exists()  # no temporary file, no target, not the folder it made


def test_download_limits_come_from_the_environment(tmp_path, hostile_server, monkeypatch):
    monkeypatch.setenv("SKETCH_RNN_DOWNLOAD_DEADLINE", "1")
    with pytest.raises(utils.DownloadError, match="not finished after 1 s"):
        utils.download_dataset("aaron_sheep", tmp_path, base_url=hostile_server + "/slow")
    monkeypatch.setenv("SKETCH_RNN_DOWNLOAD_DEADLINE", "soon")
    with pytest.raises(ValueError, match="SKETCH_RNN_DOWNLOAD_DEADLINE must be a positive"):
        utils.download_dataset("aaron_sheep", tmp_path, base_url=hostile_server + "/slow")


# ---- helpers the model module calls ----


def test_first_line_keeps_the_reason_of_a_keras_message():
    message = ("A total of 1 objects could not be loaded. Example error message for object "
               "<Dense name=dense>:\n\nLayer 'dense' expected 2 variables, but received 0 "
               "variables during loading. Expected: ['kernel', 'bias']\n\nList of objects that "
               "could not be loaded:\n[<Dense name=dense>, ...]")
    line = utils.first_line(ValueError(message))
    assert "\n" not in line and "expected 2 variables" in line and "List of objects" not in line
    assert utils.first_line(ValueError("")) == "ValueError"
    assert len(utils.first_line("x" * 1000)) == 300


def test_check_regular_file_names_what_it_refuses(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(utils.UnsafePathError, match="--checkpoint: .*fifo is not a regular"):
        utils.check_regular_file(tmp_path / "fifo", "--checkpoint")
    with pytest.raises(utils.UnsafePathError, match="is a folder"):
        utils.check_regular_file(tmp_path)
    with pytest.raises(FileNotFoundError, match="nothing does not exist"):
        utils.check_regular_file(tmp_path / "nothing")
    (tmp_path / "fifo-link").symlink_to(tmp_path / "fifo")
    with pytest.raises(utils.UnsafePathError, match="not a regular file"):
        utils.check_regular_file(tmp_path / "fifo-link")


def test_data_set_and_scale_factor_checks(tmp_path):
    assert utils.check_data_set_names(["cat", "aaron_sheep"], tmp_path, "cfg") == [
        "cat", "aaron_sheep"]
    (tmp_path / "mine.npz").write_bytes(b"")
    utils.check_data_set_names(["mine"], tmp_path, "cfg")
    for names, fragment in [([], "at least one"), (["unicorns"], "unknown data set"),
                            (["a/b"], "not a data set name"), ([3], "non-empty string")]:
        with pytest.raises(ValueError, match=fragment):
            utils.check_data_set_names(names, tmp_path, "cfg")
    assert utils.check_scale_factor(2, "cfg") == 2.0
    for value in [0, -1.0, float("nan"), float("inf"), True, "1", None]:
        with pytest.raises(ValueError, match="cfg: 'scale_factor'"):
            utils.check_scale_factor(value, "cfg")


# ---- run configs: hparams, config files, run folders ----


def write_config(run_dir, **changes):
    run_dir.mkdir(parents=True, exist_ok=True)
    config = json.loads((REPO / "examples" / "sheep" / "model_config.json").read_text())
    config.update(changes)
    (run_dir / "model_config.json").write_text(json.dumps(config))
    return run_dir


@pytest.mark.parametrize("values, key", [
    ({"enc_rnn_size": 10**9}, "enc_rnn_size"), ({"max_seq_len": 10**12}, "max_seq_len"),
    ({"batch_size": 10**9}, "batch_size"), ({"seed": 2**32}, "seed"),
])
def test_hparams_validate_bounds_sizes_and_seed(values, key):
    from seq2seqVAE import HParams

    with pytest.raises(ValueError, match=f"'{key}' must be at most") as error:
        HParams.from_dict(values, source="cfg")
    one_line(error)


@pytest.mark.parametrize("content, fragment", [
    (b'{"hparams": {"seed": 1}, "x": "\xff"}', "not UTF-8"),
    (b'{"hparams": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested deeper than"),
])
def test_load_config_gives_one_line_naming_the_file(tmp_path, content, fragment):
    from seq2seqVAE import load_config

    (tmp_path / "model_config.json").write_bytes(content)
    with pytest.raises(ValueError, match=fragment) as error:
        load_config(str(tmp_path))
    assert str(tmp_path / "model_config.json") in one_line(error)


@pytest.mark.parametrize("changes, fragment", [
    (dict(scale_factor=float("inf")), "'scale_factor' must be a positive number"),
    (dict(scale_factor=True), "'scale_factor' must be a positive number"),
    (dict(data_set=["../../somewhere"]), "is not a data set name"),
    (dict(data_set="aaron_sheep"), "'data_set' must be a list of data set names"),
])
def test_load_run_checks_scale_factor_and_data_set(tmp_path, changes, fragment):
    from seq2seqVAE import load_run

    run_dir = write_config(tmp_path / "run", **changes)  # no checkpoint: refused before that
    with pytest.raises(ValueError, match=fragment) as error:
        load_run(str(run_dir))
    one_line(error)


def test_load_run_says_a_fifo_checkpoint_is_not_a_regular_file(sheep_run):
    from seq2seqVAE import load_run

    fifo = sheep_run / "checkpoints" / "fifo.weights.h5"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="not a regular file") as error:
        load_run(str(sheep_run), str(fifo))
    one_line(error)


def test_load_run_keeps_the_reason_keras_gives(sheep_run):
    import h5py

    from seq2seqVAE import load_run

    damaged = sheep_run / "checkpoints" / "damaged.weights.h5"
    shutil.copy(sheep_run / "checkpoints" / "best.weights.h5", damaged)
    with h5py.File(damaged, "r+") as f:
        del f["layers/dense_3"]
    with pytest.raises(ValueError) as error:
        load_run(str(sheep_run), str(damaged), jit_compile=False)
    message = one_line(error)
    assert "expected" in message and "variables" in message, message
