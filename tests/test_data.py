"""Stroke formats, DataLoader, augmentation, SketchBatches and data validation."""

import numpy as np
import pytest

import utils
from batch_generator import SketchBatches


def object_array(sketches):
    """Packs sketches into a 1-D object array (np.array would stack equal shapes)."""
    packed = np.empty(len(sketches), dtype=object)
    for i, sketch in enumerate(sketches):
        packed[i] = sketch
    return packed


@pytest.fixture(scope="module")
def sheep(shared_datasets):
    """The first 300 training sketches of aaron_sheep, as stored (int16)."""
    train = utils.load_npz(shared_datasets / "aaron_sheep.npz")["train"]
    return list(train[:300])


def numbered_sketches(count, seed=0):
    """Sketches whose first dx is their index, so a batch shows which ones it holds."""
    rng = np.random.default_rng(seed)
    sketches = []
    for k in range(count):
        n = int(rng.integers(3, 20))
        sketch = np.zeros((n, 3), dtype=np.int16)
        sketch[:, 0:2] = rng.integers(-20, 20, size=(n, 2))
        sketch[0, 0] = k
        sketch[n // 2 :: 4, 2] = 1
        sketch[-1, 2] = 1
        sketches.append(sketch)
    return sketches


# ---- stroke formats ----


def test_to_stroke5_hand_written_case():
    sketch = np.array([[1, 2, 0], [3, -4, 1], [-5, 6, 0], [7, 8, 1]])
    expected = np.array(
        [
            [0, 0, 1, 0, 0],  # S0
            [1, 2, 1, 0, 0],
            [3, -4, 0, 1, 0],
            [-5, 6, 1, 0, 0],
            [7, 8, 0, 1, 0],
            [0, 0, 0, 0, 1],  # end of sketch, repeated to max_len
            [0, 0, 0, 0, 1],
        ],
        dtype=np.float32,
    )
    stroke5 = utils.to_stroke5([sketch], max_len=6)
    assert stroke5.dtype == np.float32
    assert stroke5.shape == (1, 7, 5)
    np.testing.assert_array_equal(stroke5[0], expected)
    np.testing.assert_array_equal(utils.to_stroke3(stroke5[0, 1:]), sketch)


def test_stroke5_round_trip_on_real_sheep(sheep):
    stroke5 = utils.to_stroke5(sheep, max_len=250)
    assert stroke5.shape == (len(sheep), 251, 5)
    for b, sketch in enumerate(sheep):
        n = len(sketch)
        np.testing.assert_array_equal(stroke5[b, 0], [0, 0, 1, 0, 0])
        np.testing.assert_array_equal(stroke5[b, 1 : n + 1, 4], 0)
        np.testing.assert_array_equal(
            stroke5[b, n + 1 :], np.tile([0, 0, 0, 0, 1], (250 - n, 1))
        )
        np.testing.assert_array_equal(utils.to_stroke3(stroke5[b, 1:]), sketch)
    # exactly one of the three pen states holds at every step
    np.testing.assert_array_equal(stroke5[:, :, 2:].sum(axis=-1), 1)


def test_to_stroke5_rejects_a_sketch_longer_than_max_len():
    with pytest.raises(ValueError, match="sketch 1 .* 4 points, more than max_len=3"):
        utils.to_stroke5([np.zeros((2, 3)), np.zeros((4, 3))], max_len=3)


def test_to_stroke3_without_end_row_keeps_every_row():
    stroke5 = np.array([[1, 2, 1, 0, 0], [3, 4, 0, 1, 0]], dtype=np.float32)
    np.testing.assert_array_equal(utils.to_stroke3(stroke5), [[1, 2, 0], [3, 4, 1]])
    assert utils.to_stroke3(np.array([[0, 0, 0, 0, 1]] * 3)).shape == (0, 3)


# ---- DataLoader ----


def test_normalizing_scale_factor_is_std_of_all_offsets(sheep):
    loader = utils.DataLoader(sheep, max_seq_len=250)
    offsets = np.concatenate(
        [np.asarray(s[:, 0], np.float64) for s in sheep]
        + [np.asarray(s[:, 1], np.float64) for s in sheep]
    )
    expected = np.std(offsets)
    assert loader.calculate_normalizing_scale_factor() == pytest.approx(expected, 1e-6)

    loader.normalize()
    assert loader.scale_factor == pytest.approx(expected, 1e-6)
    for stored, raw in zip(loader.strokes, sheep):
        assert stored.dtype == np.float32
        np.testing.assert_allclose(stored[:, 0:2], raw[:, 0:2] / expected, rtol=1e-5)
        np.testing.assert_array_equal(stored[:, 2], raw[:, 2])

    valid = utils.DataLoader(sheep[:10], max_seq_len=250, name="valid")
    valid.normalize(expected)  # the validation set takes the training set's factor
    np.testing.assert_allclose(valid.strokes[3][:, 0:2], sheep[3][:, 0:2] / expected)


def test_loader_clamps_to_limit_then_divides_by_scale_factor():
    sketch = np.array([[5000, -3000, 0], [10, -20, 1]])
    loader = utils.DataLoader([sketch], limit=1000, scale_factor=2.0)
    np.testing.assert_array_equal(loader.strokes[0], [[500, -500, 0], [5, -10, 1]])


def test_loader_drops_long_sketches_and_says_so(capsys):
    sketches = [np.zeros((n, 3)) for n in (3, 5, 7, 10)]
    loader = utils.DataLoader(sketches, batch_size=1, max_seq_len=5, name="valid")
    assert capsys.readouterr().out.strip() == (
        "valid: dropped 2 of 4 sketches longer than max_seq_len=5"
    )
    assert loader.num_dropped == 2
    assert len(loader) == 2
    np.testing.assert_array_equal(loader.lengths, [3, 5])
    assert loader.num_batches == 2


def test_loader_drops_the_same_sketches_as_a_length_count(sheep):
    loader = utils.DataLoader(sheep, batch_size=7, max_seq_len=100)
    expected = sum(len(s) > 100 for s in sheep)
    assert 0 < expected < len(sheep)
    assert loader.num_dropped == expected
    assert len(loader) == len(sheep) - expected
    assert loader.num_batches == (len(sheep) - expected) // 7


def test_get_batch_without_augmentation_matches_the_stored_sketches(sheep):
    loader = utils.DataLoader(sheep, max_seq_len=250)
    indices = [4, 0, 17]
    stroke3, stroke5, seq_len = loader.get_batch(indices)
    assert stroke5.shape == (3, 251, 5) and stroke5.dtype == np.float32
    np.testing.assert_array_equal(seq_len, [len(sheep[i]) for i in indices])
    for b, i in enumerate(indices):
        np.testing.assert_array_equal(stroke3[b], sheep[i])
        np.testing.assert_array_equal(utils.to_stroke3(stroke5[b, 1:]), sheep[i])
    stroke3[0][:] = 99  # the batch is a copy
    assert not np.any(loader.strokes[4] == 99)

    longest = max(seq_len)
    _, trimmed, _ = loader.get_batch(indices, max_len=longest)
    np.testing.assert_array_equal(trimmed, stroke5[:, : longest + 1])
    with pytest.raises(ValueError, match="more than max_len"):
        loader.get_batch(indices, max_len=longest - 1)


# ---- augmentation ----


def official_augment_strokes(strokes, prob, rng):
    """The official augment_strokes, transcribed with its list aliasing, rng for np.random."""
    result = []
    prev_stroke = [0, 0, 1]
    count = 0
    stroke = [0, 0, 1]
    for i in range(len(strokes)):
        candidate = [strokes[i][0], strokes[i][1], strokes[i][2]]
        if candidate[2] == 1 or prev_stroke[2] == 1:
            count = 0
        else:
            count += 1
        urnd = rng.random()
        if candidate[2] == 0 and prev_stroke[2] == 0 and count > 2 and urnd < prob:
            stroke[0] += candidate[0]
            stroke[1] += candidate[1]
        else:
            stroke = candidate
            prev_stroke = stroke
            result.append(stroke)
    return np.array(result)


def test_augment_strokes_matches_the_official_code(sheep):
    for k, sketch in enumerate(sheep[:50]):
        ours = utils.augment_strokes(sketch, 0.3, np.random.default_rng(k))
        official = official_augment_strokes(sketch, 0.3, np.random.default_rng(k))
        np.testing.assert_array_equal(ours, official)


def test_augment_strokes_keeps_displacement_and_pen_lifts(sheep):
    rng = np.random.default_rng(0)
    dropped = 0
    for sketch in sheep:
        augmented = utils.augment_strokes(sketch, 0.5, rng)
        assert augmented.ndim == 2 and augmented.shape[1] == 3
        assert len(augmented) <= len(sketch)
        dropped += len(sketch) - len(augmented)
        np.testing.assert_array_equal(augmented[:, 0:2].sum(0), sketch[:, 0:2].sum(0))
        assert augmented[:, 2].sum() == sketch[:, 2].sum()
        assert set(np.unique(augmented[:, 2])) <= {0, 1}
        np.testing.assert_array_equal(augmented[-1], sketch[-1])
    assert dropped > 0.1 * sum(len(s) for s in sheep)  # it really drops points


def test_zero_probability_and_zero_factor_are_identity(sheep):
    rng = np.random.default_rng(0)
    for sketch in sheep[:20]:
        np.testing.assert_array_equal(utils.augment_strokes(sketch, 0.0, rng), sketch)
        np.testing.assert_array_equal(utils.random_scale(sketch, 0.0, rng), sketch)


def test_random_scale_stretches_x_and_y_independently(sheep):
    sketch = sheep[0]
    scaled = utils.random_scale(sketch, 0.15, np.random.default_rng(3))
    x_ratio = scaled[sketch[:, 0] != 0, 0] / sketch[sketch[:, 0] != 0, 0]
    y_ratio = scaled[sketch[:, 1] != 0, 1] / sketch[sketch[:, 1] != 0, 1]
    np.testing.assert_allclose(x_ratio, x_ratio[0], rtol=1e-6)
    np.testing.assert_allclose(y_ratio, y_ratio[0], rtol=1e-6)
    assert 0.85 <= x_ratio[0] <= 1.15 and 0.85 <= y_ratio[0] <= 1.15
    assert x_ratio[0] != y_ratio[0]
    np.testing.assert_array_equal(scaled[:, 2], sketch[:, 2])


def test_augmented_batch_keeps_shapes_and_end_tokens(sheep):
    loader = utils.DataLoader(
        sheep, max_seq_len=250, random_scale_factor=0.15, augment_stroke_prob=0.2
    )
    indices = np.arange(20)
    stroke3, stroke5, seq_len = loader.get_batch(
        indices, rng=np.random.default_rng(0), augment=True
    )
    assert stroke5.shape == (20, 251, 5)
    assert np.all(seq_len <= loader.lengths[indices])
    assert np.any(seq_len < loader.lengths[indices])
    for b, n in enumerate(seq_len):
        assert len(stroke3[b]) == n
        np.testing.assert_array_equal(stroke5[b, 0], [0, 0, 1, 0, 0])
        np.testing.assert_array_equal(stroke5[b, n + 1 :, 4], 1)
        np.testing.assert_array_equal(stroke5[b, 1 : n + 1, 4], 0)
        np.testing.assert_array_equal(
            stroke5[b, 1 : n + 1, 3].sum(), loader.strokes[b][:, 2].sum()
        )
    again = loader.get_batch(indices, rng=np.random.default_rng(0), augment=True)
    np.testing.assert_array_equal(again[1], stroke5)


# ---- SketchBatches ----


def make_batches(count=120, batch_size=20, **kwargs):
    loader = utils.DataLoader(numbered_sketches(count), max_seq_len=30)
    return SketchBatches(loader, batch_size, **kwargs)


def ids_of(x):
    """Which numbered sketches a batch holds (their first dx, after S0)."""
    return x[:, 1, 0].astype(int)


def test_batches_have_the_model_shapes_and_shifted_targets():
    batches = make_batches()
    assert len(batches) == 6
    x, y = batches[0]
    assert x.shape == (20, 31, 5) and x.dtype == np.float32
    assert y.shape == (20, 30, 5)
    np.testing.assert_array_equal(y, x[:, 1:, :])
    np.testing.assert_array_equal(x[:, 0], np.tile([0, 0, 1, 0, 0], (20, 1)))


def test_every_sketch_appears_once_per_epoch_and_epochs_reshuffle():
    batches = make_batches()
    epoch0 = np.concatenate([ids_of(batches[i][0]) for i in range(len(batches))])
    np.testing.assert_array_equal(np.sort(epoch0), np.arange(120))
    batches.epoch += 1
    epoch1 = np.concatenate([ids_of(batches[i][0]) for i in range(len(batches))])
    np.testing.assert_array_equal(np.sort(epoch1), np.arange(120))
    assert not np.array_equal(epoch0, epoch1)


def test_same_seed_same_batches_in_any_call_order():
    first = make_batches(augment=True, seed=5)
    second = make_batches(augment=True, seed=5)
    forward = [first[i] for i in range(len(first))]
    backward = [second[i] for i in reversed(range(len(second)))][::-1]
    for (x1, y1), (x2, y2) in zip(forward, backward):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    other_seed = make_batches(augment=True, seed=6)
    assert not np.array_equal(other_seed[0][0], forward[0][0])


def test_a_resumed_run_sees_the_batches_of_the_uninterrupted_one():
    run = make_batches(augment=True)
    for _ in range(3):
        run.epoch += 1
    resumed = make_batches(augment=True)
    resumed.epoch = 3  # what the training script does with initial_epoch
    np.testing.assert_array_equal(run[2][0], resumed[2][0])


def test_augmented_batches_change_with_the_epoch():
    batches = make_batches(count=20, batch_size=20, augment=True, shuffle=False)
    batches.loader.random_scale_factor = 0.2
    x0, _ = batches[0]
    batches.epoch += 1
    x1, _ = batches[0]
    assert not np.array_equal(x0[:, :, 0:2], x1[:, :, 0:2])
    # same sketches with the same pens, only stretched differently
    np.testing.assert_array_equal(x0[:, :, 2:], x1[:, :, 2:])


def test_validation_batches_keep_the_remainder_in_order():
    batches = make_batches(count=50, batch_size=20, shuffle=False, drop_remainder=False)
    assert len(batches) == 3
    ids = np.concatenate([ids_of(batches[i][0]) for i in range(3)])
    np.testing.assert_array_equal(ids, np.arange(50))
    assert batches[2][0].shape == (10, 31, 5)
    with pytest.raises(IndexError):
        batches[3]
    assert len(make_batches(count=50, batch_size=20)) == 2


def test_steps_per_epoch_caps_the_length():
    assert len(make_batches(steps_per_epoch=4)) == 4
    assert len(make_batches(steps_per_epoch=100)) == 6


def test_too_few_sketches_for_one_batch_is_an_error():
    with pytest.raises(ValueError, match="train: 5 sketches make no batch"):
        make_batches(count=5, batch_size=20)


# ---- validation and loading ----


def write_set(path, train, valid=None, test=None):
    """Writes a Sketch-RNN style .npz whose valid and test default to the train sketches."""
    splits = {"train": train, "valid": valid or train, "test": test or train}
    np.savez(path, **{key: object_array(value) for key, value in splits.items()})
    return path


GOOD = [np.array([[1, 2, 0], [3, 4, 1]]), np.array([[5, 6, 1]])]


@pytest.mark.parametrize(
    "bad_train, message",
    [
        ([], "key 'train' is empty"),
        ([GOOD[0], np.zeros((4, 2))], r"key 'train': sketch 1 has shape \(4, 2\)"),
        ([np.array([[1.0, np.nan, 0.0]])], "key 'train': sketch 0 holds NaN"),
        ([np.array([[1.0, np.inf, 0.0]])], "key 'train': sketch 0 holds NaN or infin"),
        ([GOOD[1], np.array([[1, 2, 0], [3, 4, 2]])], "sketch 1 has pen value 2"),
    ],
)
def test_invalid_sketches_are_reported_with_file_and_key(tmp_path, bad_train, message):
    path = tmp_path / "bad.npz"
    np.savez(
        path,
        train=object_array(bad_train),
        valid=object_array(GOOD),
        test=object_array(GOOD),
    )
    with pytest.raises(ValueError, match=message) as error:
        utils.load_strokes(tmp_path, "bad", download=False)
    assert str(path) in str(error.value)
    assert "\n" not in str(error.value)


def test_missing_key_is_reported_with_file_and_key(tmp_path):
    path = tmp_path / "nokey.npz"
    np.savez(path, train=object_array(GOOD), valid=object_array(GOOD))
    with pytest.raises(ValueError, match="has no key 'test'") as error:
        utils.load_strokes(tmp_path, "nokey.npz", download=False)
    assert str(path) in str(error.value)


def test_missing_file_without_download_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.npz"):
        utils.load_strokes(tmp_path, "absent", download=False)


def test_float64_sketches_load_as_float32(tmp_path):
    # like the RDP-simplified kanji files, whose offsets are not integers
    rng = np.random.default_rng(0)
    sketches = []
    for n in (4, 9, 2):
        sketch = np.zeros((n, 3))
        sketch[:, 0:2] = rng.normal(scale=30.0, size=(n, 2))
        sketch[-1, 2] = 1.0
        sketches.append(sketch)
    write_set(tmp_path / "floats.npz", sketches)
    train, valid, test = utils.load_strokes(tmp_path, "floats", download=False)
    assert len(train) == len(valid) == len(test) == 3
    for loaded, original in zip(train, sketches):
        assert loaded.dtype == np.float32
        np.testing.assert_allclose(loaded, original, rtol=1e-6)
        assert set(np.unique(loaded[:, 2])) <= {0.0, 1.0}


def test_several_sets_are_merged_in_order(tmp_path):
    first = [np.array([[1, 1, 1]])] * 2
    second = [np.array([[2, 2, 1]])] * 3
    write_set(tmp_path / "a.npz", first, valid=first[:1])
    write_set(tmp_path / "b.npz", second)
    train, valid, test = utils.load_strokes(tmp_path, "a, b", download=False)
    assert [s[0, 0] for s in train] == [1, 1, 2, 2, 2]
    assert [s[0, 0] for s in valid] == [1, 2, 2, 2]
    assert len(test) == 5


def test_real_sheep_loads_from_the_shared_folder(shared_datasets):
    train, valid, test = utils.load_strokes(
        shared_datasets, "aaron_sheep", download=False
    )
    assert (len(train), len(valid), len(test)) == (7400, 300, 300)
    assert all(s.dtype == np.float32 and s.shape[1] == 3 for s in train)
    assert set(np.unique(np.concatenate(train)[:, 2])) == {0.0, 1.0}


def test_bucketed_batches_hold_similar_lengths_and_every_sketch_once():
    plain = make_batches(count=200)
    bucketed = make_batches(count=200, bucket_batches=5)
    lengths = plain.loader.lengths

    def spreads(batches):
        ids = [ids_of(batches[i][0]) for i in range(len(batches))]
        return ids, [np.ptp(lengths[i]) for i in ids]

    ids, bucketed_spread = spreads(bucketed)
    np.testing.assert_array_equal(np.sort(np.concatenate(ids)), np.arange(200))
    _, plain_spread = spreads(plain)
    assert np.mean(bucketed_spread) < 0.5 * np.mean(plain_spread)
    # Pools of 5 batches are sorted, yet the batches come in a shuffled order.
    longest = [lengths[i].max() for i in ids]
    assert longest != sorted(longest)
    bucketed.epoch += 1
    assert not np.array_equal(np.concatenate(spreads(bucketed)[0]), np.concatenate(ids))


def test_trimmed_batches_are_the_padded_ones_cut_after_the_longest_sketch():
    padded = make_batches(bucket_batches=3, augment=True)
    trimmed = make_batches(bucket_batches=3, augment=True, trim=True)
    for i in range(len(padded)):
        (x_pad, _), (x_trim, y_trim) = padded[i], trimmed[i]
        steps = x_trim.shape[1]
        assert steps == 1 + int(np.sum(x_pad[:, 1:, 4] == 0, axis=1).max())
        np.testing.assert_array_equal(x_trim, x_pad[:, :steps])
        np.testing.assert_array_equal(x_pad[:, steps:, 4], 1)  # only end tokens were cut
        np.testing.assert_array_equal(y_trim, x_trim[:, 1:])
