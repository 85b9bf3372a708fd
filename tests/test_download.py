"""Downloads against a local HTTP server: success, failures, and names."""

import functools
import http.server
import io
import shutil
import socket
import threading
import zipfile

import numpy as np
import pytest

import utils


class MirrorHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder; /cat.npz promises a megabyte and then hangs up after 10 bytes."""

    def do_GET(self):
        if self.path == "/cat.npz":
            self.send_response(200)
            self.send_header("Content-Length", str(1 << 20))
            self.end_headers()
            self.wfile.write(b"PK\x03\x04cut!")
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, *args):
        pass  # keep the test output clean


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    """Keeps local requests away from any proxy and from a mirror set by the user."""
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.delenv("SKETCH_RNN_BASE_URL", raising=False)


@pytest.fixture
def mirror(tmp_path, shared_datasets):
    """Base URL of a local server laid out like the sketch-rnn-datasets repository."""
    root = tmp_path / "mirror"
    (root / "aaron_sheep").mkdir(parents=True)
    shutil.copy(shared_datasets / "aaron_sheep.npz", root / "aaron_sheep")
    (root / "dog.npz").write_text("<html>this is not an npz</html>")
    handler = functools.partial(MirrorHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def assert_same_data(path_a, path_b):
    a, b = utils.load_npz(path_a), utils.load_npz(path_b)
    assert sorted(a) == sorted(b)
    for key in a:
        assert len(a[key]) == len(b[key])
        for x, y in zip(a[key], b[key]):
            np.testing.assert_array_equal(x, y)


def test_download_writes_the_file(tmp_path, mirror, shared_datasets, capsys):
    data_dir = tmp_path / "data"
    path = utils.download_dataset("aaron_sheep", data_dir, base_url=mirror)
    assert path == data_dir / "aaron_sheep.npz"
    assert sorted(p.name for p in data_dir.iterdir()) == ["aaron_sheep.npz"]
    assert path.read_bytes() == (shared_datasets / "aaron_sheep.npz").read_bytes()
    assert_same_data(path, shared_datasets / "aaron_sheep.npz")
    progress = capsys.readouterr().err
    assert "\r" in progress and "2.2/2.2 MB" in progress


def test_base_url_defaults_to_the_environment(tmp_path, mirror, monkeypatch):
    monkeypatch.setenv("SKETCH_RNN_BASE_URL", mirror + "/")
    assert utils.dataset_url("kanji") == mirror + "/kanji/short_kanji.npz"
    path = utils.download_dataset("aaron_sheep", tmp_path / "data")
    assert path.is_file()


def test_load_strokes_downloads_a_missing_set(tmp_path, mirror):
    data_dir = tmp_path / "data"
    train, valid, test = utils.load_strokes(data_dir, "aaron_sheep", base_url=mirror)
    assert (len(train), len(valid), len(test)) == (7400, 300, 300)
    assert (data_dir / "aaron_sheep.npz").is_file()


def test_a_failed_download_keeps_a_data_folder_that_was_there(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with pytest.raises(utils.DownloadError):
        utils.download_dataset("aaron_sheep", data_dir, base_url="http://127.0.0.1:1")
    assert data_dir.is_dir() and list(data_dir.iterdir()) == []


def assert_failed_cleanly(error, url, target):
    message = str(error.value)
    assert url in message
    assert f"save it as {target}" in message
    assert "\n" not in message
    assert not target.exists()
    assert not target.parent.exists()  # no temporary file, nor the folder the download made


def test_missing_file_on_the_server(tmp_path, mirror):
    data_dir = tmp_path / "data"
    with pytest.raises(utils.DownloadError, match="HTTP 404") as error:
        utils.download_dataset("omniglot", data_dir, base_url=mirror)
    url = f"{mirror}/omniglot/omniglot.npz"
    assert_failed_cleanly(error, url, data_dir / "omniglot.npz")


def test_closed_port(tmp_path):
    with socket.socket() as probe:  # a port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    data_dir = tmp_path / "data"
    with pytest.raises(utils.DownloadError, match="could not download") as error:
        utils.download_dataset("aaron_sheep", data_dir, base_url=base)
    assert_failed_cleanly(
        error, f"{base}/aaron_sheep/aaron_sheep.npz", data_dir / "aaron_sheep.npz"
    )


def test_connection_cut_mid_transfer(tmp_path, mirror):
    data_dir = tmp_path / "data"
    with pytest.raises(utils.DownloadError) as error:
        utils.download_dataset("cat", data_dir, base_url=mirror)
    assert_failed_cleanly(error, f"{mirror}/cat.npz", data_dir / "cat.npz")


def test_a_page_that_is_not_an_npz(tmp_path, mirror):
    data_dir = tmp_path / "data"
    with pytest.raises(
        utils.DownloadError, match="downloaded file is not a valid"
    ) as error:
        utils.download_dataset("dog", data_dir, base_url=mirror)
    assert_failed_cleanly(error, f"{mirror}/dog.npz", data_dir / "dog.npz")
    assert ".tmp" not in str(error.value)


def test_a_hostile_download_is_refused(tmp_path, mirror):
    marker = tmp_path / "marker"
    payload = b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "|O", "fortran_order": False, "shape": (1,)}
    )
    with zipfile.ZipFile(tmp_path / "mirror" / "horse.npz", "w") as archive:
        archive.writestr("train.npy", header.getvalue() + payload)
    data_dir = tmp_path / "data"
    with pytest.raises(utils.DownloadError, match="not numpy arrays") as error:
        utils.download_dataset("horse", data_dir, base_url=mirror)
    assert_failed_cleanly(error, f"{mirror}/horse.npz", data_dir / "horse.npz")
    assert not marker.exists()


def test_unknown_names(tmp_path):
    with pytest.raises(ValueError, match="unknown data set 'unicorns'"):
        utils.dataset_url("unicorns")
    with pytest.raises(ValueError, match="unknown data set 'unicorns'"):
        utils.download_dataset("unicorns", tmp_path)
    with pytest.raises(ValueError) as error:
        utils.load_strokes(tmp_path, "aaron_sheep_typo")
    assert str(error.value) == (
        f"unknown data set 'aaron_sheep_typo': not a file in {tmp_path} and not a "
        "QuickDraw category or one of aaron_sheep, kanji, omniglot (give the folder holding "
        "aaron_sheep_typo.npz as data_dir, --data_dir)"
    )
    assert list(tmp_path.iterdir()) == []


def test_official_urls():
    assert len(utils.quickdraw_categories()) == 345
    sheep = utils.SKETCH_RNN_DATASETS_URL + "/aaron_sheep/aaron_sheep.npz"
    assert utils.dataset_url("aaron_sheep") == sheep
    kanji = utils.SKETCH_RNN_DATASETS_URL + "/kanji/short_kanji.npz"
    assert utils.dataset_url("kanji") == utils.dataset_url("short_kanji") == kanji
    assert utils.dataset_url("omniglot").endswith("/omniglot/omniglot.npz")
    assert utils.dataset_url("cat") == utils.QUICKDRAW_URL + "/cat.npz"
    carrier = utils.QUICKDRAW_URL + "/aircraft%20carrier.npz"
    assert utils.dataset_url("aircraft carrier") == carrier
    local = "http://127.0.0.1:8000"
    assert utils.dataset_url("cat", local) == local + "/cat.npz"
    assert (
        utils.dataset_url("aaron_sheep", local)
        == local + "/aaron_sheep/aaron_sheep.npz"
    )
