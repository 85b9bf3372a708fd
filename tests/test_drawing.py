"""Pictures of stroke-3 sketches: strokes, SVG (one and a grid), PNG, animated GIF."""

import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

import utils

SVG = "{http://www.w3.org/2000/svg}"

# Two strokes: a right angle of 3 points, then (after a pen-up move) a single dot; the
# last row has pen_lifted = 0, as in a sketch cut before its end.
SKETCH = np.array([[5, 5, 0], [10, 0, 0], [0, 10, 1], [-20, 0, 0]], np.float32)


def path_points(path):
    """The absolute points of an SVG path written as 'Mx,y Lx,y x,y ...'."""
    return np.array([[float(v) for v in pair.split(",")]
                     for pair in path.get("d").replace("M", "").replace("L", "").split()])


def test_stroke_lines_splits_at_pen_lifts():
    lines = utils.stroke_lines(SKETCH, scale_factor=2.0)
    assert len(lines) == 2
    np.testing.assert_allclose(lines[0], [[10, 10], [30, 10], [30, 30]])
    np.testing.assert_allclose(lines[1], [[-10, 30]])
    assert utils.stroke_lines(np.zeros((0, 3))) == []


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_sketch_with_non_finite_offsets_is_refused_in_one_line(bad, tmp_path):
    sketch = SKETCH.copy()
    sketch[2, 1] = bad  # the pen is lost from row 2 on
    for draw in (lambda: utils.sketches_to_svg([SKETCH, sketch]),
                 lambda: utils.sketches_to_png([sketch], tmp_path / "x.png"),
                 lambda: utils.sketch_to_gif(sketch, tmp_path / "x.gif")):
        with pytest.raises(ValueError, match="not finite from row 2 on"):
            draw()
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_a_png_too_large_to_draw_says_to_give_a_cell_size(tmp_path):
    stray = np.array([[0, 0, 0], [1e6, 0, 0], [0, 10, 1]], np.float32)  # a 1e6-pixel line
    # Two cells of 1e6 + 2 * 10 margin pixels side by side, or one.
    for draw, width in ((lambda: utils.sketches_to_png([SKETCH, stray], tmp_path / "x.png"), 2000040),
                        (lambda: utils.sketch_to_gif(stray, tmp_path / "x.gif"), 1000020)):
        with pytest.raises(ValueError, match=f"be {width} x 30 pixels, more than the 65535 a side "
                                             "can have: give a cell size"):
            draw()
    assert not list(tmp_path.iterdir())
    # Fitted to cells, the same sketches draw.
    assert utils.sketches_to_png([SKETCH, stray], tmp_path / "x.png", cell_size=100) == (200, 100)
    assert utils.sketch_to_gif(stray, tmp_path / "x.gif", size=100) is not None


def test_svg_is_well_formed_with_one_path_per_stroke():
    svg = utils.sketch_to_svg(SKETCH, scale_factor=2.0, margin=10)
    root = ET.fromstring(svg)
    paths = root.findall(f".//{SVG}path")
    assert len(paths) == 2
    first = path_points(paths[0])
    np.testing.assert_allclose(np.diff(first, axis=0), [[20, 0], [0, 20]])  # dx, dy * 2
    assert len(path_points(paths[1])) == 2  # a dot: a zero-length segment
    np.testing.assert_allclose(path_points(paths[1])[0] - first[0], [-20, 20])
    # The sketch spans 40 x 20 units after scaling, plus the margin on each side.
    assert (float(root.get("width")), float(root.get("height"))) == (60, 40)


def test_svg_grid_with_labels(tmp_path):
    rng = np.random.default_rng(0)
    sketches = []
    for length in (3, 7, 12, 5, 9):
        sketch = np.zeros((length, 3), np.float32)
        sketch[:, :2] = rng.normal(scale=10, size=(length, 2))
        sketch[rng.random(length) < 0.3, 2] = 1
        sketch[-1, 2] = 1
        sketches.append(sketch)
    labels = [f"tau {t}" for t in (0.1, 0.3, 0.5, 0.7, 0.9)]
    out = tmp_path / "grid.svg"
    svg = utils.sketches_to_svg(sketches, out, columns=3, labels=labels)
    assert out.read_text(encoding="utf-8") == svg
    root = ET.parse(out).getroot()
    expected_strokes = sum(int(s[:, 2].sum()) for s in sketches)
    assert len(root.findall(f".//{SVG}path")) == expected_strokes
    assert [t.text for t in root.findall(f".//{SVG}text")] == labels
    with pytest.raises(ValueError, match="2 labels for 5 sketches"):
        utils.sketches_to_svg(sketches, labels=labels[:2])


def test_cell_size_fits_every_sketch_to_its_cell():
    small = SKETCH  # 20 x 10 units
    huge = np.array([[0, 0, 0], [1000, 0, 0], [0, 10, 1]], np.float32)  # a stray long line
    root = ET.fromstring(utils.sketches_to_svg([small, huge], cell_size=100, margin=10))
    assert (float(root.get("width")), float(root.get("height"))) == (200, 100)
    first, dot, line = (path_points(p) for p in root.findall(f".//{SVG}path"))
    small_points = np.concatenate([first, dot])
    # Each sketch's longer side fills the cell inside its margins, centred, aspect kept.
    np.testing.assert_allclose(np.ptp(small_points, axis=0), [80, 40])
    np.testing.assert_allclose(small_points.min(axis=0), [10, 30])
    np.testing.assert_allclose(np.ptp(line, axis=0), [80, 0.8])
    assert line[:, 0].min() == pytest.approx(110)
    with pytest.raises(ValueError, match="cell_size must be larger than twice the margin"):
        utils.sketches_to_svg([small], cell_size=20, margin=10)


@pytest.mark.parametrize("cell_size", [None, 60, 80, 100, 120])
@pytest.mark.parametrize("label", ["tau 0.4, seed 463004 #{i}", "tau 0.3, seed 10.{i}5"])
def test_long_labels_stay_inside_their_own_cells(cell_size, label):
    # Labels wider than the sketches (the sampler's "tau 0.4, seed 463004 #0" under 150-pixel
    # cells ran into each other; shrunk to fit 120-pixel cells, Agg's hinting drew them 1
    # pixel apart): read off the picture, the label row has ink under every cell and none
    # within 3 pixels of the borders between cells.
    labels = [label.format(i=i) for i in range(4)]
    image = np.asarray(utils.sketches_to_image([SKETCH] * 4, columns=4, labels=labels,
                                               cell_size=cell_size).convert("L"))
    label_row = image[-round(1.6 * 12):] < 200  # one row of cells; labels 1.6 font sizes high
    cell_w = image.shape[1] / 4
    if cell_size is not None:
        assert image.shape[1] == 4 * cell_size  # fixed cells keep their size
    for i in range(4):
        assert label_row[:, round(i * cell_w) + 3:round((i + 1) * cell_w) - 3].any()
    for border in (cell_w, 2 * cell_w, 3 * cell_w):
        assert not label_row[:, round(border) - 3:round(border) + 3].any(), border
    # Blank labels (and None) have no width and draw nothing.
    blank = utils.sketches_to_image([SKETCH] * 3, labels=["", " ", None], cell_size=cell_size)
    assert not (np.asarray(blank.convert("L"))[-round(1.6 * 12):] < 128).any()


def test_png_has_the_svg_layout_and_ink(tmp_path):
    out = tmp_path / "one.png"
    size = utils.sketches_to_png([SKETCH], out, scale_factor=2.0, margin=10)
    image = Image.open(out)
    assert image.format == "PNG" and image.size == size == (60, 40)
    pixels = np.asarray(image.convert("L"))
    assert pixels.min() < 100 and pixels[0, 0] == 255  # dark strokes on white


def test_gif_has_the_frames_asked_for(tmp_path):
    rng = np.random.default_rng(1)
    sketch = np.zeros((40, 3), np.float32)
    sketch[:, :2] = rng.normal(scale=5, size=(40, 2))
    sketch[[9, 24, 39], 2] = 1
    out = tmp_path / "pen.gif"
    assert utils.sketch_to_gif(sketch, out, frames=12, duration=30, hold=500) == 12
    image = Image.open(out)
    assert image.n_frames == 12
    ink = []
    for frame in range(image.n_frames):
        image.seek(frame)
        ink.append(int((np.asarray(image.convert("L")) < 128).sum()))
    assert ink[0] < ink[5] < ink[-1]  # the pen draws as the frames go
    image.seek(11)
    assert image.info["duration"] == 500
    assert utils.sketch_to_gif(sketch, out, frames=100) == 40  # a frame per point at most
    assert Image.open(out).n_frames == 40
    with pytest.raises(ValueError, match="frames must be at least 1"):
        utils.sketch_to_gif(sketch, out, frames=0)


def test_real_sketches_draw(shared_datasets, tmp_path):
    test = utils.load_npz(shared_datasets / "aaron_sheep.npz")["test"][:6]
    svg = utils.sketches_to_svg(test, tmp_path / "sheep.svg", columns=3)
    strokes = sum(len(utils.stroke_lines(s)) for s in test)
    assert len(ET.fromstring(svg).findall(f".//{SVG}path")) == strokes
    assert utils.sketch_to_gif(test[0], tmp_path / "sheep.gif", frames=10) == 10


def test_a_prefix_is_drawn_in_its_own_colour(tmp_path):
    # The prefix ends inside the first stroke: that stroke is cut there, and its rest, drawn
    # in the other colour, starts at the prefix's last point.
    root = ET.fromstring(utils.sketches_to_svg([SKETCH, SKETCH], prefix_lengths=[2, 3],
                                               color="black", prefix_color="blue"))
    paths = root.findall(f".//{SVG}path")
    assert [p.get("stroke") for p in paths] == ["blue", "black", "black", "blue", "black"]
    first, rest = path_points(paths[0]), path_points(paths[1])
    np.testing.assert_allclose(np.diff(first, axis=0), [[10, 0]])  # points 1 and 2
    np.testing.assert_allclose(rest[0], first[-1])
    np.testing.assert_allclose(np.diff(rest, axis=0), [[0, 10]])  # on to point 3
    np.testing.assert_allclose(np.diff(path_points(paths[3]), axis=0), [[10, 0], [0, 10]])
    with pytest.raises(ValueError, match="1 prefix lengths for 2 sketches"):
        utils.sketches_to_svg([SKETCH, SKETCH], prefix_lengths=[2])

    def colours(image):
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3).astype(int)
        blue = (pixels[:, 2] > 150) & (pixels[:, 0] < 100)
        black = pixels.sum(axis=1) < 150
        return int(blue.sum()), int(black.sum())

    utils.sketches_to_png([SKETCH], tmp_path / "two.png", scale_factor=3.0, prefix_lengths=[2],
                          prefix_color="blue")
    blue, black = colours(Image.open(tmp_path / "two.png"))
    assert blue > 20 and black > 20
    gif = tmp_path / "two.gif"
    assert utils.sketch_to_gif(SKETCH, gif, frames=4, size=90, prefix_length=2,
                               prefix_color="blue") == 4
    image = Image.open(gif)
    assert image.size == (90, 90)
    image.seek(1)  # two points: the prefix, in its colour only
    assert colours(image)[0] > 5 and colours(image)[1] == 0
    image.seek(3)
    assert colours(image)[1] > 5
