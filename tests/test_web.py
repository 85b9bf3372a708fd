"""examples/web/ in a real browser: headless Chromium draws on the page, the model finishes it.

Needs Node.js (for playwright-core, which drives the browser; `npm ci` in examples/web installs
it with @magenta/sketch) and Chromium (/usr/bin/chromium, or $CHROMIUM); skipped without them.
No browser is downloaded. The page is served as the README says, by Python's http.server from
examples/web, here on a free port of localhost. The screenshot's path is printed (pytest -s).
"""

import functools
import http.server
import json
import os
import shutil
import struct
import subprocess
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WEB_DIR = ROOT / "examples" / "web"
DRIVER = ROOT / "tests" / "js" / "web_page.js"
SEED = 7  # the page's ?seed: the model's draws are the same on every run


@pytest.fixture()
def chromium():
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not os.path.isfile(path):
        pytest.skip("Chromium is not installed (apt-get install chromium, or set $CHROMIUM)")
    return path


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


@pytest.fixture()
def served_page():
    """http://127.0.0.1:<free port>/ serving examples/web, as `python -m http.server` does."""
    handler = functools.partial(QuietHandler, directory=str(WEB_DIR))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def png_size(path):
    header = Path(path).read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", header[16:24])


def test_the_page_finishes_a_drawing_in_headless_chromium(chromium, node_modules, served_page, tmp_path):
    folder = Path(os.environ.get("SKETCH_RNN_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    screenshot = folder / "web_page.png"
    result = subprocess.run(
        ["node", str(DRIVER), f"{served_page}?seed={SEED}", str(screenshot), chromium,
         str(tmp_path / "chromium-profile")],
        env={**os.environ, "NODE_PATH": str(node_modules)}, capture_output=True, text=True,
        timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    print(f"screenshots: {', '.join(report['screenshots'])}")
    completed, sampled = report["completed"], report["sampled"]
    assert completed["ready"] and completed["error"] is None and report["errors"] == []
    # The two dragged strokes arrived as pointer events, and the model drew on from them.
    assert completed["userStrokes"] == 2
    assert completed["modelPoints"] >= 1 and completed["modelStrokes"] >= 1, completed
    # "New sample" clears the drawing and draws a whole sketch.
    assert sampled["userStrokes"] == 0 and sampled["modelStrokes"] >= 1, sampled
    assert report["statusText"].startswith("A new sample:")
    for path in report["screenshots"]:
        assert png_size(path) == (800, 720)
