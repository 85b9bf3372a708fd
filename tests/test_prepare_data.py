"""prepare_data.py: every input format, the QuickDraw pipeline against Google's own output,
bad inputs, the streaming memory bound, and convert -> train -> draw end to end."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import prepare_data
import utils
from sketch_rnn import prepare, readers
from sketch_rnn.simplify import rdp_line, rdp_segment, resample, simplify_drawing

REPO = Path(__file__).resolve().parents[1]
OFF = ["--no_align", "--longest_side=0", "--resample_spacing=0", "--rdp_epsilon=0", "--no_round"]


def run(capsys, *args):
    """Runs the command in this process; returns (exit code, stdout, stderr)."""
    code = prepare_data.main([str(a) for a in args] + ["--no_progress"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def official_load(path):
    """The official code's loader."""
    with np.load(path, allow_pickle=True, encoding="latin1") as data:
        return {key: data[key] for key in data.files}


def points_of(stroke3):
    """Absolute points (first point at the origin) and stroke ends of a sketch, by cumsum."""
    points = np.cumsum(np.asarray(stroke3, dtype=np.float64)[:, :2], axis=0)
    return points, np.flatnonzero(stroke3[:, 2] == 1)


def lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def all_sketches(data):
    return [s for split in utils.SPLITS for s in data[split]]


def key(sketch):
    return np.asarray(sketch, dtype=np.float64).tobytes()


# ---- the QuickDraw pipeline ----


def test_raw_quickdraw_drawings_match_googles_simplified_version(shared_datasets):
    """Google published 74 of the raw drawings in ../shared also simplified (same key_id):
    our pipeline on the raw one must give Google's points."""
    folder = shared_datasets / "quickdraw_ndjson"
    by_key = {}
    for path in sorted((folder / "simplified").glob("*.ndjson")):
        for line in lines(path):
            by_key[line["key_id"]] = line["drawing"]
    exact = total = ours_points = theirs_points = 0
    distances = []
    matched = 0
    for path in sorted((folder / "raw").glob("*.ndjson")):
        raw_lines = lines(path)
        drawings = [d for d in readers.read_ndjson(path)]
        assert len(drawings) == len(raw_lines)
        for line, drawing in zip(raw_lines, drawings):
            assert not drawing.simplified  # 3 lists per stroke: raw
            if line["key_id"] not in by_key:
                continue
            matched += 1
            ours = simplify_drawing(drawing.strokes)
            theirs = [np.array(stroke, dtype=np.float64).T for stroke in by_key[line["key_id"]]]
            assert len(ours) == len(theirs)
            for a, b in zip(ours, theirs):
                total += 1
                ours_points += len(a)
                theirs_points += len(b)
                exact += a.shape == b.shape and np.array_equal(a, b)
                # each of our points' distance to the nearest of Google's
                distance = np.hypot(*(a[:, None] - b[None]).transpose(2, 0, 1)).min(axis=1)
                distances.append(distance)
    distances = np.concatenate(distances)
    assert matched == 74 and total == 555
    print(f"raw -> simplified: {exact}/{total} strokes identical, points {ours_points} vs "
          f"{theirs_points}, distance to Google's nearest point: mean {distances.mean():.4f} px, "
          f"largest {distances.max():.2f} px, {np.count_nonzero(distances)} points not on one")
    assert exact >= 550  # of 555
    assert abs(ours_points / theirs_points - 1) < 0.005
    assert distances.mean() < 0.01


def test_segment_distance_keeps_the_tip_of_a_stroke_that_doubles_back():
    # out along y = 0 to x = 10 and back to x = 5: the tip lies on the line through the
    # ends (distance 0) but 5 away from the segment between them
    stroke = np.array([[0.0, 0.0], [10.0, 0.0], [5.0, 0.0]])
    assert rdp_line(stroke, 2.0).tolist() == [[0, 0], [5, 0]]
    assert rdp_segment(stroke, 2.0).tolist() == [[0, 0], [10, 0], [5, 0]]
    # a spike of height 3 survives epsilon 2 and a bump of height 1 does not, in both: the
    # spike's far foot (4, 0) is 48 / |(18, -3)| = 2.63 from the line (2, 3)-(20, 0)
    bump = np.array([[0, 0], [2, 3], [4, 0], [12, 1], [20, 0]], dtype=float)
    assert rdp_line(bump, 2.0).tolist() == [[0, 0], [2, 3], [4, 0], [20, 0]]
    assert rdp_segment(bump, 2.0).tolist() == [[0, 0], [2, 3], [4, 0], [20, 0]]


def test_resample_spaces_points_one_pixel_apart_and_keeps_the_end():
    out = resample(np.array([[0.0, 0.0], [3.0, 4.0], [3.0, 6.5]]), 1.0)
    steps = np.hypot(*np.diff(out, axis=0).T)
    # 7.5 long: points at 0, 1, ..., 7 along the polyline, then the end
    assert len(out) == 9 and np.allclose(steps[:-1], 1.0) and np.isclose(steps[-1], 0.5)
    assert np.allclose(out[3], [1.8, 2.4]) and np.allclose(out[6], [3.0, 4.0 + 1.0])
    assert resample(np.array([[2.0, 3.0]]), 1.0).tolist() == [[2, 3], [2, 3]]  # a dot


def test_canvas_json_through_the_whole_pipeline_by_hand(tmp_path, capsys):
    # two straight strokes: aligned (already), scaled by 255/12, resampled then RDP leave
    # the ends, rounded half to even: (0,0) (63.75,85) | (212.5,212.5) (212.5,255)
    folder = tmp_path / "drawings"
    folder.mkdir()
    for name in ("one", "two", "three"):
        (folder / f"{name}.json").write_text(json.dumps([[[0, 0], [0.75, 1], [1.5, 2], [3, 4]],
                                                         [[10, 10], [10, 12]]]))
    code, out, err = run(capsys, folder, "--out", tmp_path / "d.npz")
    assert code == 0, err
    sketches = all_sketches(official_load(tmp_path / "d.npz"))
    assert "read 3 drawings from 3 files" in out
    expected = [[0, 0, 0], [64, 85, 1], [212 - 64, 212 - 85, 0], [0, 255 - 212, 1]]
    assert [s.tolist() for s in sketches] == [expected] * 3
    assert all(s.dtype == np.int16 for s in sketches)


# ---- input formats ----


def test_simplified_ndjson_is_only_converted_and_keeps_googles_points(shared_datasets, tmp_path,
                                                                      capsys):
    path = shared_datasets / "quickdraw_ndjson" / "simplified" / "eye.ndjson"
    code, out, err = run(capsys, path, "--out", tmp_path / "eye.npz", "--max_seq_len=0")
    assert code == 0, err
    data = official_load(tmp_path / "eye.npz")
    assert "classes" not in data and "train_labels" not in data  # one class
    expected = []
    for line in lines(path):  # stroke-3 by hand: offsets from the first point, pen at ends
        points = np.concatenate([np.array(s, dtype=np.float64).T for s in line["drawing"]])
        ends = np.cumsum([len(s[0]) for s in line["drawing"]]) - 1
        rows = np.zeros((len(points), 3))
        rows[1:, :2] = np.diff(points, axis=0)
        rows[ends, 2] = 1
        expected.append(key(rows))
    got = [key(s) for s in all_sketches(data)]
    assert sorted(got) == sorted(expected)
    n = len(expected)
    assert [len(data[s]) for s in utils.SPLITS] == [n - 2 * round(n * 0.05)] + [round(n * 0.05)] * 2
    assert f"read {n} drawings" in out


def test_ndjson_filters_and_reservoir_counts(shared_datasets, tmp_path, capsys):
    path = shared_datasets / "quickdraw_ndjson" / "simplified" / "cat_2k.ndjson"
    records = lines(path)
    recognized = [r for r in records if r["recognized"]]
    countries = {"US", "GB"}
    both = [r for r in recognized if r["countrycode"] in countries]
    code, out, err = run(capsys, path, "--out", tmp_path / "c.npz", "--recognized_only",
                         "--countrycode=US,GB", "--max_seq_len=0")
    assert code == 0, err
    assert f"read {len(records)} drawings" in out
    assert f"{len(records) - len(recognized)} unrecognized" in out
    assert f"{len(recognized) - len(both)} from other countries" in out
    assert sum(len(official_load(tmp_path / "c.npz")[s]) for s in utils.SPLITS) == len(both)

    code, out, err = run(capsys, path, "--out", tmp_path / "s.npz", "--max_per_class=100",
                         "--max_seq_len=0")
    data = official_load(tmp_path / "s.npz")
    assert sum(len(data[s]) for s in utils.SPLITS) == 100
    assert f"{len(records) - 100} over --max_per_class" in out
    # the sample is spread over the file, not its first 100 lines
    firsts = {key(s) for s in all_sketches(data)}
    code, out, err = run(capsys, path, "--out", tmp_path / "all.npz", "--max_seq_len=0")
    everything = official_load(tmp_path / "all.npz")
    assert firsts <= {key(s) for s in all_sketches(everything)}


def test_reservoir_keeps_every_sketch_with_the_same_probability():
    rng = np.random.default_rng(0)
    counts = np.zeros(20)
    trials = 2000
    for _ in range(trials):
        reservoir = prepare.Reservoir(5, rng)
        for index in range(20):
            reservoir.offer(index)
        counts[reservoir.sketches] += 1
    # each of the 20 is kept with probability 5/20; 4 standard deviations of a binomial
    assert np.all(np.abs(counts / trials - 0.25) < 4 * np.sqrt(0.25 * 0.75 / trials))


def test_several_classes_get_labels_and_class_names(shared_datasets, tmp_path, capsys):
    folder = shared_datasets / "quickdraw_ndjson" / "raw"
    code, out, err = run(capsys, folder, "--out", tmp_path / "raw.npz", "--seed=3")
    assert code == 0, err
    data = official_load(tmp_path / "raw.npz")
    names = sorted({line["word"] for path in folder.glob("*.ndjson") for line in lines(path)})
    assert data["classes"].tolist() == names
    for split in utils.SPLITS:
        assert data[f"{split}_labels"].shape == (len(data[split]),)
        assert data[f"{split}_labels"].dtype.kind == "i"
    per_class = np.bincount(np.concatenate([data[f"{s}_labels"] for s in utils.SPLITS]))
    expected = [sum(len(lines(p)) for p in folder.glob("*.ndjson")
                    if lines(p)[0]["word"] == name) for name in names]
    assert per_class.tolist() == expected
    # our own safe loader and the training command's loader read it too
    assert set(utils.load_npz(tmp_path / "raw.npz")) >= {"train", "classes", "test_labels"}
    train, valid, test = utils.load_strokes(tmp_path, "raw", download=False)
    assert len(train) + len(valid) + len(test) == sum(expected)
    # a stroke-3 file this command wrote keeps its classes when read again
    code, out, err = run(capsys, tmp_path / "raw.npz", "--out", tmp_path / "again.npz")
    again = official_load(tmp_path / "again.npz")
    assert again["classes"].tolist() == names
    relabelled = sorted((str(again["classes"][label]), key(sketch)) for split in utils.SPLITS
                        for sketch, label in zip(again[split], again[f"{split}_labels"]))
    original = sorted((str(data["classes"][label]), key(sketch)) for split in utils.SPLITS
                      for sketch, label in zip(data[split], data[f"{split}_labels"]))
    assert relabelled == original


def test_same_seed_same_file_other_seed_other_split(shared_datasets, tmp_path, capsys):
    path = shared_datasets / "quickdraw_ndjson" / "simplified" / "map.ndjson"
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        run(capsys, path, "--out", tmp_path / f"{name}.npz", f"--seed={seed}")
    a, b, c = (official_load(tmp_path / f"{n}.npz") for n in "abc")
    assert [key(s) for s in a["valid"]] == [key(s) for s in b["valid"]]
    assert [key(s) for s in a["valid"]] != [key(s) for s in c["valid"]]


SVG = """<svg xmlns="http://www.w3.org/2000/svg" width="200" height="100" viewBox="0 0 100 50">
 <g transform="translate(10,5)">
  <rect x="1" y="2" width="10" height="5"/>
  <circle cx="30" cy="20" r="5" transform="scale(2)"/>
  <ellipse cx="50" cy="20" rx="6" ry="3"/>
  <line x1="0" y1="0" x2="4" y2="3"/>
  <polyline points="0,0 1,1 2,0"/>
  <polygon points="0,0 1,1 2,0"/>
  <path d="M0,0 L5,5 Q10,0 15,5 C20,0 25,10 30,5 A5,5 0 0 1 40,5 Z M50,50 h3"/>
  <text x="1" y="1">not a stroke</text>
 </g>
</svg>"""


def outside(points, curve):
    """Largest distance from a densely sampled ``curve`` to the polyline ``points``."""
    a, b = points[:-1], points[1:]
    d = b - a
    t = np.clip(((curve[:, None] - a) * d).sum(-1) / np.maximum((d * d).sum(-1), 1e-300), 0, 1)
    nearest = a + t[..., None] * d
    return np.hypot(*(curve[:, None] - nearest).transpose(2, 0, 1)).min(axis=1).max()


def test_svg_shapes_transforms_and_viewbox_by_hand(tmp_path):
    path = tmp_path / "pictures" / "all.svg"
    path.parent.mkdir()
    path.write_text(SVG)
    tolerance = 0.05
    (drawing,) = readers.read_svg(path, tolerance=tolerance, size=0)
    assert drawing.label == "pictures"
    # every point p of the group maps to ((p + (10, 5)) * 2): viewBox 100x50 shown at 200x100
    def user(*xy):
        return (np.array(xy, dtype=float).reshape(-1, 2) + [10, 5]) * 2

    rect, circle, ellipse, line, polyline, polygon, path1, path2 = drawing.strokes
    assert np.allclose(rect, user(1, 2, 11, 2, 11, 7, 1, 7, 1, 2))
    assert np.allclose(line, user(0, 0, 4, 3))
    assert np.allclose(polyline, user(0, 0, 1, 1, 2, 0))
    assert np.allclose(polygon, user(0, 0, 1, 1, 2, 0, 0, 0))
    assert np.allclose(path2, user(50, 50, 53, 50))
    angles = np.linspace(0, 2 * np.pi, 20001)
    # circle: centre (30, 20) and radius 5, scaled by 2 inside the group: (140, 90), r = 20
    assert np.allclose(np.hypot(*(circle - [140, 90]).T), 20)
    true_circle = np.stack([140 + 20 * np.cos(angles), 90 + 20 * np.sin(angles)], 1)
    assert outside(circle, true_circle) <= tolerance + 1e-6
    assert np.allclose(circle[0], circle[-1])  # closed
    # ellipse: (120, 50), radii 12 and 6
    assert np.allclose(((ellipse[:, 0] - 120) / 12) ** 2 + ((ellipse[:, 1] - 50) / 6) ** 2, 1)
    true_ellipse = np.stack([120 + 12 * np.cos(angles), 50 + 6 * np.sin(angles)], 1)
    assert outside(ellipse, true_ellipse) <= tolerance + 1e-6
    # path: line, quadratic, cubic, arc, close; each curve checked against its formula
    t = np.linspace(0, 1, 20001)[:, None]
    p = user(5, 5, 10, 0, 15, 5)
    quadratic = (1 - t) ** 2 * p[0] + 2 * (1 - t) * t * p[1] + t ** 2 * p[2]
    c = user(15, 5, 20, 0, 25, 10, 30, 5)
    cubic = ((1 - t) ** 3 * c[0] + 3 * (1 - t) ** 2 * t * c[1] + 3 * (1 - t) * t ** 2 * c[2]
             + t ** 3 * c[3])
    # A5,5 0 0 1 40,5 from (30, 5): the half circle through (35, 0), centre (35, 5)
    half = np.linspace(np.pi, 2 * np.pi, 20001)
    arc = np.stack([90 + 10 * np.cos(half), 20 + 10 * np.sin(half)], 1)
    assert np.allclose(path1[0], user(0, 0)) and np.allclose(path1[1], user(5, 5))
    assert np.allclose(path1[-1], user(0, 0))  # Z closes it
    for curve in (quadratic, cubic, arc):
        inside = [i for i, q in enumerate(path1)
                  if np.hypot(*(curve - q).T).min() < 1e-6]  # the points on this curve
        assert len(inside) >= 3
        assert outside(path1[min(inside):max(inside) + 1], curve) <= tolerance + 1e-6
    assert outside(path1, arc[[10000]]) <= tolerance  # through the top, (35, 0) in the file


def test_hidden_svg_shapes_are_not_strokes(tmp_path):
    # Hidden as SVG says: display:none (no child can show it) and visibility hidden or
    # collapse, inherited unless a child sets visibility back to visible.
    path = tmp_path / "hidden.svg"
    path.write_text("""<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 100 100">
 <g style="visibility:hidden"><line x1="0" y1="0" x2="1" y2="1"/>
  <line visibility="visible" x1="0" y1="0" x2="2" y2="2"/></g>
 <g style="display:none"><line x1="0" y1="0" x2="3" y2="3"/>
  <line style="display:inline" x1="0" y1="0" x2="4" y2="4"/></g>
 <line visibility="collapse" x1="0" y1="0" x2="5" y2="5"/>
 <line x1="0" y1="0" x2="6" y2="6"/>
</svg>""")
    (drawing,) = readers.read_svg(path, tolerance=0.05, size=0)
    assert [stroke[-1].tolist() for stroke in drawing.strokes] == [[2, 2], [6, 6]]


def test_svg_tolerance_is_in_output_units_and_the_file_converts(tmp_path, capsys):
    path = tmp_path / "circles" / "c.svg"
    path.parent.mkdir()
    path.write_text('<svg xmlns="http://www.w3.org/2000/svg"><circle cx="50" cy="50" r="20"/>'
                    "</svg>")
    (drawing,) = readers.read_svg(path, tolerance=0.5, size=255)
    scaled = (drawing.strokes[0] - [30, 30]) * (255 / 40)  # as the pipeline will scale it
    angles = np.linspace(0, 2 * np.pi, 20001)
    true = np.stack([127.5 + 127.5 * np.cos(angles), 127.5 + 127.5 * np.sin(angles)], 1)
    assert outside(scaled, true) <= 0.5 + 1e-6
    for name in ("d", "e"):
        (path.parent / f"{name}.svg").write_text(path.read_text())
    code, out, err = run(capsys, path.parent, "--out", tmp_path / "c.npz")
    assert code == 0, err
    for sketch in all_sketches(official_load(tmp_path / "c.npz")):
        points, ends = points_of(sketch)
        assert ends.tolist() == [len(sketch) - 1]  # one stroke
        extent = points.max(axis=0) - points.min(axis=0)
        assert extent.tolist() == [255, 255]
        centre = (points.max(axis=0) + points.min(axis=0)) / 2
        assert np.all(np.abs(np.hypot(*(points - centre).T) - 127.5) <= 1.5)  # rounding + RDP


def test_json_layouts_and_records(tmp_path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    points = [[[0, 0], [3, 4]], [[10, 10], [10, 12], [11, 12]]]
    axes = [[[0, 3], [0, 4]], [[10, 10, 11], [10, 12, 12]]]
    (folder / "points.json").write_text(json.dumps(points))
    (folder / "axes.json").write_text(json.dumps(axes))
    (folder / "many.json").write_text(json.dumps([points, points]))
    (folder / "record.json").write_text(json.dumps({"word": "thing", "drawing": axes}))
    code, out, err = run(capsys, folder, "--out", tmp_path / "j.npz", *OFF)
    assert code == 0, err
    data = official_load(tmp_path / "j.npz")
    expected = [[0, 0, 0], [3, 4, 1], [7, 6, 0], [0, 2, 0], [1, 0, 1]]
    assert [s.tolist() for s in all_sketches(data)] == [expected] * 5
    labels = np.concatenate([data[f"{s}_labels"] for s in utils.SPLITS])
    assert sorted(data["classes"][labels].tolist()) == ["many"] * 2 + ["mine"] * 2 + ["thing"]
    assert all(s.dtype == np.int16 for s in all_sketches(data))  # integer values
    # Classes this small get no sketch in valid or test, each of them said by name.
    absent = {name: [split for split in ("valid", "test") if not np.any(
        data["classes"][data[f"{split}_labels"]] == name)] for name in ("many", "mine", "thing")}
    assert absent["thing"] == ["valid", "test"]
    warning = [line for line in out.splitlines() if line.startswith("warning:")]
    assert warning and warning[0].startswith(
        f"warning: {sum(bool(a) for a in absent.values())} classes too small to be evaluated: ")
    for name, splits in absent.items():
        count = int(np.sum(data["classes"][labels] == name))
        assert (f"{name} ({count}: none in {' or '.join(splits)})" in warning[0]) == bool(splits)

    # floats stay floats
    (folder / "float.json").write_text(json.dumps([[[0.5, 0], [3, 4.25], [4, 4], [5, 1]]]))
    code, out, err = run(capsys, folder, "--out", tmp_path / "f.npz", *OFF)
    assert all(s.dtype == np.float32 for s in all_sketches(official_load(tmp_path / "f.npz")))

    # 2 points of 2 numbers reads both ways: refused unless --json_layout says which
    ambiguous = tmp_path / "ambiguous.json"
    ambiguous.write_text(json.dumps([[[0, 5], [1, 7]]]))
    with pytest.raises(readers.BadFile, match="--json_layout"):
        list(readers.read_json(ambiguous))
    (read,) = readers.read_json(ambiguous, layout="points")
    assert read.strokes[0].tolist() == [[0, 5], [1, 7]]
    (read,) = readers.read_json(ambiguous, layout="axes")
    assert read.strokes[0].tolist() == [[0, 1], [5, 7]]
    # 3 points of 2 numbers would be x, y and time lists, but time never goes back: points
    three = tmp_path / "three.json"
    three.write_text(json.dumps([[[10, 10], [50, 60], [90, 20]], [[20, 80], [80, 80], [85, 85]]]))
    (read,) = readers.read_json(three)
    assert [s.tolist() for s in read.strokes] == [[[10, 10], [50, 60], [90, 20]],
                                                  [[20, 80], [80, 80], [85, 85]]]
    three.write_text(json.dumps([[[10, 10], [50, 60], [90, 95]]]))  # times 90, 95: both fit
    with pytest.raises(readers.BadFile, match="--json_layout"):
        list(readers.read_json(three))


def test_stroke3_npy_and_npz_pass_through(tmp_path, capsys):
    rng = np.random.default_rng(0)

    def sketch(n):
        s = rng.integers(-20, 20, size=(n, 3)).astype(np.int16)
        s[:, 2] = rng.random(n) < 0.2
        s[-1, 2] = 1
        return s

    folder = tmp_path / "in"
    folder.mkdir()
    single = sketch(7)
    np.save(folder / "one.npy", single)
    several = np.empty(3, dtype=object)
    several[:] = [sketch(5), sketch(9), sketch(4)]
    np.save(folder / "some.npy", several, allow_pickle=True)
    splits = {}
    for split, n in zip(utils.SPLITS, (6, 2, 2)):
        splits[split] = np.empty(n, dtype=object)
        splits[split][:] = [sketch(int(rng.integers(3, 12))) for _ in range(n)]
    np.savez(folder / "set.npz", **splits)
    code, out, err = run(capsys, folder, "--out", tmp_path / "s.npz")
    assert code == 0, err
    data = official_load(tmp_path / "s.npz")
    expected = [single, *several, *[s for split in utils.SPLITS for s in splits[split]]]
    assert sorted(key(s) for s in all_sketches(data)) == sorted(key(s) for s in expected)
    labels = np.concatenate([data[f"{s}_labels"] for s in utils.SPLITS])
    assert sorted(data["classes"][labels].tolist()) == ["one"] + ["set"] * 10 + ["some"] * 3


# ---- bad input ----


# 10 GB of text made of entities of entities, and 10^9 shapes made of nested <use>
BILLION_LAUGHS = ('<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY a0 "xxxxxxxxxx">'
                  + "".join(f'<!ENTITY a{i} "{f"&a{i - 1};" * 10}">' for i in range(1, 10))
                  + ']><svg xmlns="http://www.w3.org/2000/svg"><text>&a9;</text></svg>')
USE_BOMB = ('<svg xmlns="http://www.w3.org/2000/svg"><defs><path id="u0" d="M0,0 L1,1"/>'
            + "".join(f'<g id="u{i}">' + f'<use href="#u{i - 1}"/>' * 10 + "</g>"
                      for i in range(1, 10))
            + '</defs><use href="#u9"/></svg>')


def test_each_bad_file_is_one_line_naming_it_and_the_rest_converts(shared_datasets, tmp_path,
                                                                   capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = shared_datasets / "quickdraw_ndjson" / "raw" / "owl.ndjson"
    (folder / "owl.ndjson").write_bytes(good.read_bytes())
    bad = {
        "text.svg": b"this is not XML",
        "page.svg": b"<html><body>not svg</body></html>",
        "notzip.npz": b"plain text, not a zip",
        "binary.ndjson": bytes(range(256)) * 40,
        "array.ndjson": b'[1, 2, 3]\n{"drawing": []}\n',
        "notjson.json": b"{drawing: oops",
        "deep.json": b"[[[[[1]]]]]",
        "notnpy.npy": b"\x93NUMPY garbage",
        "wrong.npz": None,  # a real .npz, but not of sketches
        "entities.svg": BILLION_LAUGHS.encode(),
        "uses.svg": USE_BOMB.encode(),
        "loop.svg": b'<svg xmlns="http://www.w3.org/2000/svg"><g id="a"><use href="#a"/></g></svg>',
    }
    for name, content in bad.items():
        if content is not None:
            (folder / name).write_bytes(content)
    np.savez(folder / "wrong.npz", something=np.arange(3))
    code, out, err = run(capsys, folder, "--out", tmp_path / "m.npz")
    assert code == 0, err
    skipped = [line for line in err.splitlines() if line.startswith("skipped ")]
    assert len(skipped) == len(bad)
    for name in bad:
        (line,) = [line for line in skipped if f"{name}:" in line or f"{name} " in line]
        assert len(line) < 400
    assert "binary.ndjson: not an ndjson file: it holds binary data" in err
    assert "text.svg: not an SVG file: XML error" in err
    assert "entities.svg: not an SVG file: XML error (limit on input amplification" in err
    assert "uses.svg: not a usable SVG file: its <use> references expand it to more than" in err
    assert "loop.svg: not a usable SVG file: a <use> refers to itself" in err
    assert "page.svg: not an SVG file: its root element is not <svg>" in err
    assert "notzip.npz is not a valid .npz file" in err
    assert f"skipped {len(bad)} files that could not be read" in out
    assert len(official_load(tmp_path / "m.npz")["train"]) > 0  # the owls


def test_malformed_lines_are_counted_and_named_and_the_rest_kept(tmp_path, capsys):
    good = {"word": "w", "drawing": [[[0, 10, 20], [0, 5, 0]]]}
    rows = [good, "{not json", {"drawing": "strokes"}, {"word": "w"},
            {"drawing": [[[0, 1], [0]]]}, {"drawing": [[[0, 1], [0, 1]], [[0], [0], [0]]]},
            {"drawing": [[["a", 1], [0, 1]]]}, good, good, {"drawing": []}]
    path = tmp_path / "w.ndjson"
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    code, out, err = run(capsys, path, "--out", tmp_path / "w.npz")
    assert code == 0, err
    assert "read 10 drawings" in out and "kept 3" in out
    assert "dropped 7: 6 malformed, 1 empty" in out
    for number in (2, 3, 4, 5, 6, 7):
        assert f"malformed: w.ndjson line {number}: " in out
    assert "line 5: stroke 0 has 2 x but 1 y values" in out
    assert "line 6: 'drawing' mixes strokes of 2 lists" in out


def test_random_json_in_drawings_is_malformed_never_a_crash(tmp_path, capsys):
    rng = np.random.default_rng(0)
    leaves = [0, 1.5, -3, 1e308, -1e308, "7", "", None, True, [], {}, [[]], [1, 2], [[1], [2]]]

    def junk(depth):
        if depth == 0 or rng.random() < 0.3:
            return leaves[rng.integers(len(leaves))]
        return [junk(depth - 1) for _ in range(rng.integers(0, 4))]

    good = {"word": "w", "drawing": [[[0, 10, 20], [0, 5, 0]]]}
    huge = {"word": "w", "drawing": [[[1e308, -1e308, 5], [0, 0, 0]]]}  # offsets overflow
    rows = [good, huge] + [{"word": "w", "drawing": junk(4)} for _ in range(400)] + [good, good]
    path = tmp_path / "junk.ndjson"
    path.write_text("\n".join(json.dumps(row) for row in rows))
    code, out, err = run(capsys, path, "--out", tmp_path / "j.npz")
    assert code == 0, err
    assert "read 404 drawings" in out and "skipped" not in err
    assert "line 2: its coordinates are too large" in out
    train, valid, test = utils.load_strokes(tmp_path, "j", download=False)  # validates them
    assert len(train) + len(valid) + len(test) >= 3
    for name in ("junk.json", "junk.svg"):  # the same junk as whole files
        (tmp_path / name).write_text(json.dumps(junk(5)))
        code, out, err = run(capsys, tmp_path / name, path, "--out", tmp_path / f"{name}.npz")
        assert code == 0 and "Traceback" not in err


def test_usage_errors_are_one_line_and_write_nothing(tmp_path, capsys):
    svg = tmp_path / "a.svg"
    svg.write_text(SVG)
    cases = [
        ([tmp_path / "missing.ndjson"], "no such file or folder"),
        ([tmp_path / "a.txt"], "unknown extension"),
        ([svg, "--split=0.5,0.5,0.5"], "add up to 1"),
        ([svg], "1 sketches kept"),  # one drawing cannot fill three splits
    ]
    (tmp_path / "a.txt").write_text("x")
    for args, message in cases:
        code, out, err = run(capsys, *args, "--out", tmp_path / "x.npz")
        assert code == 2 and message in err, (args, err)
        assert not (tmp_path / "x.npz").exists()
    code, out, err = run(capsys, svg, "--out", tmp_path / "x.data")
    assert code == 2 and err.count("\n") == 1 and "--out must name a .npz" in err
    for flag, message in [("--max_per_class=1.5", "expected a whole number, got '1.5'"),
                          ("--split=0.9,0.1", "expected three fractions")]:
        with pytest.raises(SystemExit):
            run(capsys, svg, "--out", tmp_path / "x.npz", flag)
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
        assert "x.npz" not in os.listdir(tmp_path)
    assert not list(tmp_path.glob(".tmp-*"))


def test_an_existing_out_is_replaced_only_with_force(shared_datasets, tmp_path, capsys):
    source = shared_datasets / "quickdraw_ndjson" / "simplified" / "cat_2k.ndjson"
    out = tmp_path / "cat.npz"
    out.write_bytes(b"a data set downloaded earlier")
    code, _, err = run(capsys, source, "--out", out, "--max_per_class=20")
    assert code == 2 and err == f"error: --out: {out} exists; pass --force to replace it\n"
    assert out.read_bytes() == b"a data set downloaded earlier"
    code, _, err = run(capsys, source, "--out", out, "--max_per_class=20", "--force")
    assert code == 0, err
    assert sum(len(s) for s in utils.load_strokes(tmp_path, "cat", download=False)) == 20


def test_help_shows_the_defaults_worth_showing(capsys):
    with pytest.raises(SystemExit):
        prepare_data.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: 0.9,0.05,0.05)" in text and "(default: 255.0)" in text
    assert "(default: None)" not in text and "(default: )" not in text
    assert prepare_data.parse_args(["x", "--out=y.npz"]).split == (0.9, 0.05, 0.05)


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    out = tmp_path / "d.npz"
    out.write_bytes(b"old")

    def interrupted(f, **arrays):
        f.write(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez_compressed", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare.write_npz(out, {"train": np.zeros(1)})
    assert out.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["d.npz"]


# ---- large input ----


def make_big_ndjson(shared_datasets, path, megabytes):
    """Real simplified cats repeated with fresh key_ids until the file has ``megabytes``."""
    source = shared_datasets / "quickdraw_ndjson" / "simplified" / "cat_2k.ndjson"
    records = lines(source)
    written = 0
    number = 0
    with open(path, "w") as f:
        while written < megabytes << 20:
            for record in records:
                record["key_id"] = str(number)
                number += 1
                text = json.dumps(record) + "\n"
                f.write(text)
                written += len(text)
    return number


# The peak resident memory of the process since exec: VmHWM (ru_maxrss would include the
# pytest process it was forked from).
MEASURE = """
import sys
sys.argv = ["prepare_data.py", *sys.argv[1:]]
import prepare_data
code = prepare_data.main()
with open("/proc/self/status") as f:
    print("maxrss_kb", [l.split()[1] for l in f if l.startswith("VmHWM:")][0])
sys.exit(code)
"""


def peak_rss(path, out, *flags):
    result = subprocess.run([sys.executable, "-c", MEASURE, str(path), "--out", str(out),
                             "--no_progress", *flags],
                            capture_output=True, text=True, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr
    return int(result.stdout.split("maxrss_kb")[1]) / 1024, result.stdout


@pytest.fixture(scope="module")
def big_ndjson(shared_datasets, tmp_path_factory):
    path = tmp_path_factory.mktemp("big") / "cat.ndjson"
    count = make_big_ndjson(shared_datasets, path, 50)
    return path, count


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc")
def test_a_large_ndjson_streams_in_bounded_memory(big_ndjson, tmp_path, shared_datasets):
    path, count = big_ndjson
    size_mb = path.stat().st_size / 2**20
    small = tmp_path / "small.ndjson"
    make_big_ndjson(shared_datasets, small, 1)
    small_rss, _ = peak_rss(small, tmp_path / "small.npz", "--max_per_class=1000")
    start = time.monotonic()
    big_rss, out = peak_rss(path, tmp_path / "big.npz", "--max_per_class=1000")
    took = time.monotonic() - start
    print(f"{size_mb:.0f} MB ndjson, {count} drawings: peak RSS {big_rss:.1f} MB "
          f"(1 MB file: {small_rss:.1f} MB), {took:.1f} s")
    assert f"read {count} drawings" in out and "kept 1000" in out
    assert big_rss - small_rss < 16, (big_rss, small_rss)  # the file is 50 MB


def test_ctrl_c_leaves_no_file(big_ndjson, tmp_path):
    path, _ = big_ndjson
    out = tmp_path / "x.npz"
    process = subprocess.Popen([sys.executable, str(REPO / "prepare_data.py"), str(path),
                                "--out", str(out)], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    seen = []
    for line in process.stderr:  # the progress lines: wait for reading to start
        seen.append(line)
        if "reading" in line:
            break
    assert process.poll() is None, f"the run ended before it was interrupted: {seen}"
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130 and "interrupted: nothing written" in err, (seen, out, err)
    assert os.listdir(tmp_path) == []


# ---- end to end ----


@pytest.mark.slow
def test_convert_train_and_draw(shared_datasets, tmp_path):
    folder = shared_datasets / "quickdraw_ndjson"
    data_dir = tmp_path / "datasets"
    convert = subprocess.run(
        [sys.executable, "prepare_data.py", str(folder / "simplified" / "eye.ndjson"),
         str(folder / "raw" / "cat.ndjson"), "--out", str(data_dir / "mine.npz"),
         "--max_per_class=60", "--no_progress"],
        capture_output=True, text=True, cwd=REPO, timeout=300)
    assert convert.returncode == 0, convert.stderr
    assert "--data_dir=" in convert.stdout and "--data_set=mine" in convert.stdout
    run_dir = tmp_path / "run"
    train = subprocess.run(
        [sys.executable, "seq2seqVAE_train.py", f"--data_dir={data_dir}", "--data_set=mine",
         f"--experiment_dir={run_dir}", "--verbose=2",
         "--hparams=enc_rnn_size=16,dec_rnn_size=32,z_size=8,num_mixture=4,batch_size=10,"
         "epochs=1,steps_per_epoch=3,lstm_matmul_dtype=float32"],
        capture_output=True, text=True, cwd=REPO, timeout=600)
    assert train.returncode == 0, train.stderr[-3000:]
    data = official_load(data_dir / "mine.npz")
    counts = "/".join(str(len(data[split])) for split in utils.SPLITS)
    assert f"loaded {counts} train/valid/test sketches" in train.stdout
    assert data["classes"].tolist() == ["cat", "eye"]
    draw = subprocess.run(
        [sys.executable, "seq2seqVAE_sample.py", f"--run_dir={run_dir}", "--count=2",
         "--seed=0"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert draw.returncode == 0, draw.stderr[-3000:]
    svg = run_dir / "drawings" / "sample-t0.50-s0.svg"  # the sampler names mode, temperature, seed
    assert svg.read_text().lstrip().startswith(("<?xml", "<svg"))


def test_the_progress_lines_end_at_100_percent_with_every_drawing_counted(shared_datasets,
                                                                          tmp_path, capsys):
    # Off a terminal a line every 10% of the bytes; the last drawing's bytes are read before
    # it is counted, so the 100% line waits for the end (it said 19 of 20 drawings).
    source = shared_datasets / "quickdraw_ndjson" / "raw" / "owl.ndjson"
    drawings = sum(1 for line in source.read_text().splitlines() if line.strip())
    assert prepare_data.main([str(source), "--out", str(tmp_path / "owl.npz")]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("reading: ")]
    percents = [int(line.split()[1].rstrip("%")) for line in lines]
    assert percents == sorted(set(percents)) and percents[-1] == 100
    assert f"{drawings} drawings read, {drawings} kept" in lines[-1]


def test_the_printed_training_command_reads_the_file_from_a_folder_with_spaces(tmp_path, capsys):
    import shlex

    import seq2seqVAE_train

    folder = tmp_path / "my drawings"
    folder.mkdir()
    for name in ("a", "b", "c"):
        (folder / f"{name}.json").write_text(json.dumps([[[0, 0], [3, 4], [5, 9]], [[1, 1], [2, 7]]]))
    out_file = tmp_path / "data sets" / "my owl.npz"
    out_file.parent.mkdir()
    code, out, err = run(capsys, folder, "--out", out_file)
    assert code == 0, err
    line = next(line for line in out.splitlines() if line.startswith("train with: "))
    argv = shlex.split(line.removeprefix("train with: "))
    assert argv[:2] == ["python", "seq2seqVAE_train.py"]
    args = seq2seqVAE_train.parse_args(argv[2:])
    assert Path(args.data_dir) / f"{args.data_set}.npz" == out_file

