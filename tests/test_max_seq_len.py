"""Issue 12: max_seq_len found in the data (capped), and .npz files with extra keys (labels)."""

import json

import numpy as np
import pytest

import seq2seqVAE_train
import utils

TINY = "enc_rnn_size=8,dec_rnn_size=16,z_size=4,num_mixture=3,batch_size=10,steps_per_epoch=2"


def sketches_of_lengths(lengths, seed=0):
    """A 1-D object array of stroke-3 sketches with the given numbers of points."""
    rng = np.random.default_rng(seed)
    packed = np.empty(len(lengths), dtype=object)
    for i, n in enumerate(lengths):
        sketch = np.zeros((n, 3), dtype=np.int16)
        sketch[:, :2] = rng.integers(-30, 30, size=(n, 2))
        sketch[:, 2] = rng.random(n) < 0.2
        sketch[-1, 2] = 1
        packed[i] = sketch
    return packed


def write_lengths(folder, train, valid, test, name="sketches", **extra):
    """Writes <folder>/<name>.npz whose splits hold sketches of the given lengths."""
    folder.mkdir(parents=True, exist_ok=True)
    splits = {key: sketches_of_lengths(lengths, seed) for seed, (key, lengths)
              in enumerate((("train", train), ("valid", valid), ("test", test)))}
    np.savez(folder / f"{name}.npz", **splits, **extra)
    return folder


def prepare(*argv):
    return seq2seqVAE_train.prepare(seq2seqVAE_train.parse_args(list(argv)))


def main(capsys, *argv):
    code = seq2seqVAE_train.main([*argv, "--verbose=0"])
    out, err = capsys.readouterr()
    return code, out, err


# ---- max_seq_len from the data ----


@pytest.mark.parametrize("name, longest", [("short_kanji", 88), ("omniglot", 157)])
def test_max_seq_len_is_the_longest_sketch_of_the_three_splits(name, longest, shared_datasets,
                                                               tmp_path):
    run = prepare(f"--data_dir={shared_datasets}", f"--data_set={name}",
                  f"--experiment_dir={tmp_path / 'run'}")
    # The official code's rule, computed here from the file as the official code reads it.
    with np.load(shared_datasets / f"{name}.npz", allow_pickle=True, encoding="latin1") as data:
        expected = max(len(s) for split in ("train", "valid", "test") for s in data[split])
    assert expected == longest  # as ../shared/datasets/README.md says
    assert run["hps"].max_seq_len == expected and run["max_seq_len_cap"] == 250
    for loader in run["loaders"].values():
        assert loader.max_seq_len == expected and loader.num_dropped == 0
    _, x, _ = run["loaders"]["train"].get_batch(range(4))  # padded to the data's longest
    assert x.shape == (4, expected + 1, 5)


def test_sketches_over_the_cap_are_dropped_and_counted(tmp_path, capsys):
    train, valid, test = [5, 40, 12, 31, 30, 7] * 5, [29, 50, 3], [30, 31, 8]
    data_dir = write_lengths(tmp_path / "data", train, valid, test)
    run = prepare(f"--data_dir={data_dir}", "--data_set=sketches",
                  f"--experiment_dir={tmp_path / 'run'}", f"--hparams={TINY},max_seq_len=30")
    out = capsys.readouterr().out
    assert run["hps"].max_seq_len == 30 and run["max_seq_len_cap"] == 30
    for split, lengths in (("train", train), ("valid", valid), ("test", test)):
        dropped = int(np.sum(np.array(lengths) > 30))
        assert run["loaders"][split].num_dropped == dropped
        assert f"{split}: dropped {dropped} of {len(lengths)} sketches" in out
        assert sorted(run["loaders"][split].lengths) == sorted(n for n in lengths if n <= 30)


@pytest.mark.parametrize("cap, expected", [(250, 24), (1000, 24), (23, 22), (None, 24)])
def test_an_explicit_max_seq_len_is_the_cap(cap, expected, tmp_path):
    # longest 24 (in test, not train): under the cap it sets the length, over it is dropped
    data_dir = write_lengths(tmp_path / "data", [5, 22, 12, 9] * 5, [3, 21, 6], [24, 4])
    hparams = TINY if cap is None else f"{TINY},max_seq_len={cap}"
    run = prepare(f"--data_dir={data_dir}", "--data_set=sketches",
                  f"--experiment_dir={tmp_path / 'run'}", f"--hparams={hparams}")
    assert run["hps"].max_seq_len == expected
    assert run["max_seq_len_cap"] == (cap or 250)
    assert run["loaders"]["test"].num_dropped == (1 if cap == 23 else 0)


def test_max_seq_len_is_stored_and_a_resumed_run_keeps_it(tmp_path, capsys):
    from seq2seqVAE import load_run

    data_dir = write_lengths(tmp_path / "data", [5, 20, 12, 9] * 5, [3, 17, 6], [18, 4])
    run_dir = tmp_path / "run"
    start = (f"--data_dir={data_dir}", "--data_set=sketches", f"--experiment_dir={run_dir}")
    code, out, err = main(capsys, *start, f"--hparams={TINY},epochs=1,max_seq_len=100")
    assert code == 0, err
    config = json.loads((run_dir / "model_config.json").read_text())
    assert config["hparams"]["max_seq_len"] == config["max_seq_len"] == 20
    assert config["max_seq_len_cap"] == 100
    assert load_run(run_dir, jit_compile=False).hps.max_seq_len == 20  # drawing rebuilds it

    # New sketches of 30 points, under the cap: a new run would pad to 30, the resumed
    # one keeps its 20 and drops them, counted.
    write_lengths(data_dir, [5, 20, 12, 9] * 5 + [30, 30, 30], [3, 17, 6], [18, 4])
    new_run = prepare(*start[:2], f"--experiment_dir={tmp_path / 'new'}", f"--hparams={TINY}")
    assert new_run["hps"].max_seq_len == 30
    # The command that started the run, with its explicit cap, resumes it.
    code, out, err = main(capsys, *start, f"--hparams={TINY},epochs=2,max_seq_len=100",
                          f"--checkpoint={run_dir}")
    assert code == 0, err
    assert "train: dropped 3 of 23 sketches longer than max_seq_len=20" in out
    assert f"max_seq_len=20: the run's, from {run_dir / 'model_config.json'}" in out
    assert json.loads((run_dir / "model_config.json").read_text()) == config
    # Another cap is another model.
    code, _, err = main(capsys, *start, "--hparams=max_seq_len=50", f"--checkpoint={run_dir}")
    assert code == 2 and "max_seq_len=50 does not match the run being resumed (max_seq_len=20" in err


# ---- extra keys and labels ----


def labelled_file(folder, name="labelled"):
    """A file as a multi-class preparation writes it: labels per split and class names."""
    labels = {"train_labels": np.array([0, 1, 1, 0, 1]), "valid_labels": np.array([1, 0]),
              "test_labels": np.array([0, 0, 1], dtype=np.int16)}
    write_lengths(folder, [4, 9, 30, 6, 12], [3, 40], [5, 6, 7], name=name,
                  classes=np.array(["cat", "pig"]), **labels)
    return labels


def test_extra_keys_are_loaded_safely_and_ignored_by_training(tmp_path):
    labels = labelled_file(tmp_path)
    arrays = utils.load_npz(tmp_path / "labelled.npz")  # the string array needs no pickle
    assert arrays["classes"].tolist() == ["cat", "pig"] and arrays["classes"].dtype.kind == "U"
    np.testing.assert_array_equal(arrays["test_labels"], labels["test_labels"])
    train, valid, test = utils.load_strokes(tmp_path, "labelled", download=False)
    assert [len(s) for s in train] == [4, 9, 30, 6, 12] and len(valid) == 2 and len(test) == 3
    run = prepare(f"--data_dir={tmp_path}", "--data_set=labelled",
                  f"--experiment_dir={tmp_path / 'run'}",
                  "--hparams=batch_size=2,max_seq_len=20")
    assert len(run["loaders"]["train"]) == 4 and run["hps"].max_seq_len == 12


def test_labels_stay_aligned_with_the_sketches_kept(tmp_path):
    labels = labelled_file(tmp_path)
    strokes, loaded, classes = utils.load_labelled_strokes(tmp_path, "labelled", download=False)
    assert classes == ["cat", "pig"]
    for split in utils.SPLITS:
        np.testing.assert_array_equal(loaded[split], labels[f"{split}_labels"])
        assert loaded[split].dtype == np.int64 and len(loaded[split]) == len(strokes[split])
    loader = utils.DataLoader(strokes["train"], max_seq_len=10, labels=loaded["train"])
    # the 30- and 12-point sketches (labels 1 and 1) are dropped
    assert [len(s) for s in loader.strokes] == [4, 9, 6]
    np.testing.assert_array_equal(loader.labels, [0, 1, 0])
    assert utils.DataLoader(strokes["train"]).labels is None


def test_merged_files_get_one_list_of_classes(tmp_path):
    labelled_file(tmp_path)  # cat, pig
    np.savez(tmp_path / "more.npz", **{split: sketches_of_lengths([5, 6]) for split in utils.SPLITS},
             train_labels=np.array([1, 0]), valid_labels=np.array([0, 0]),
             test_labels=np.array([1, 1]), classes=np.array(["pig", "owl"]))
    write_lengths(tmp_path, [3, 3], [3], [3], name="plain")  # no labels: one class, its name
    write_lengths(tmp_path, [4], [4], [4], name="mycats", classes=np.array(["cat"]))  # named
    strokes, labels, classes = utils.load_labelled_strokes(tmp_path, "labelled,more,plain,mycats",
                                                           download=False)
    assert classes == ["cat", "pig", "owl", "plain"]
    np.testing.assert_array_equal(labels["train"], [0, 1, 1, 0, 1, 2, 1, 3, 3, 0])
    np.testing.assert_array_equal(labels["test"], [0, 0, 1, 2, 2, 3, 0])
    assert [len(labels[s]) for s in utils.SPLITS] == [len(strokes[s]) for s in utils.SPLITS]


@pytest.mark.parametrize("change, message", [
    ({"valid_labels": None}, "has no key 'valid_labels'"),
    ({"train_labels": np.array([0, 1])}, "'train_labels' must be a 1-D integer array of 5 labels"),
    ({"train_labels": np.array([0.0, 1, 1, 0, 1])}, "'train_labels' must be a 1-D integer array"),
    ({"test_labels": np.array([0, 2, 1])}, "'test_labels' holds the label 2, but 'classes' names only 2"),
    ({"valid_labels": np.array([-1, 0])}, "'valid_labels' holds the label -1"),
    ({"classes": np.array([1, 2])}, "'classes' must be a 1-D array of class names"),
    ({"classes": np.array(["cat", "cat"])}, "'classes' names 'cat' more than once"),
])
def test_bad_labels_are_one_line_naming_file_and_key(change, message, tmp_path):
    labels = labelled_file(tmp_path)
    arrays = utils.load_npz(tmp_path / "labelled.npz")
    arrays.update({**labels, **change})
    np.savez(tmp_path / "labelled.npz", **{k: v for k, v in arrays.items() if v is not None})
    with pytest.raises(ValueError, match=message) as error:
        utils.load_labelled_strokes(tmp_path, "labelled", download=False)
    assert str(tmp_path / "labelled.npz") in str(error.value) and "\n" not in str(error.value)
    utils.load_strokes(tmp_path, "labelled", download=False)  # training does not read them
