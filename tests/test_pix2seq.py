"""Sketch-pix2seq: the rasteriser, the CNN encoder, the KL-free loss, per-class evaluation and
redrawing a picture.

References: renderings worked out by hand (a line, a square, a dot), a NumPy 3x3 convolution,
pictures drawn by another renderer (matplotlib, `utils.sketches_to_png`), the stroke-5 batch
converted back to strokes, and the mixture loss written in NumPy.
"""

import csv
import json

import keras
import numpy as np
import pytest

import prepare_data
import seq2seqVAE_sample
import seq2seqVAE_train
import utils
from batch_generator import SketchBatches
from callbacks import KLWeightAnnealing, evaluate
from seq2seqVAE import HParams, build_model, compile_model, encoder_model, load_run
from sketch_rnn.raster import picture_to_input, render_sketches

TINY_CNN = ("encoder=cnn,kl_weight=0,dec_rnn_size=16,z_size=8,num_mixture=3,batch_size=12,"
            "lstm_matmul_dtype=float32")
CAP = 1.25 - np.sqrt(0.5)  # ink of a pixel whose centre is (0.5, 0.5) from a line's end


def stroke3(points, lifts):
    """A stroke-3 sketch from absolute points and the indices of the points the pen lifts after."""
    points = np.asarray(points, np.float32)
    rows = np.zeros((len(points), 3), np.float32)
    rows[:, :2] = np.diff(points, axis=0, prepend=np.zeros((1, 2)))
    rows[lifts, 2] = 1
    return rows


# ---- the rasteriser ----


def test_a_line_is_rendered_as_computed_by_hand():
    # A horizontal line fitted into 48 pixels with a 3-pixel margin runs from x=3 to x=45 at
    # y=24, the border between rows 23 and 24: pixel centres 0.5 away get 1.25 - 0.5 = 0.75
    # (width 1.5), the two columns beyond each end (centres at (0.5, 0.5)) 1.25 - 0.707.
    line = stroke3([[0, 0], [10, 0]], [1])
    expected = np.zeros((48, 48))
    expected[23:25, 3:45] = 0.75
    expected[23:25, [2, 45]] = CAP
    image = render_sketches([line])[0]
    np.testing.assert_allclose(image, expected, atol=1e-6)
    assert image.sum() == pytest.approx(42 * 1.5 + 4 * CAP, rel=1e-6)
    # Any length is fitted alike; a vertical line gives the transpose (rows are y).
    np.testing.assert_allclose(render_sketches([line * [7, 7, 1]])[0], expected, atol=1e-6)
    np.testing.assert_allclose(render_sketches([line[:, [1, 0, 2]]])[0], expected.T, atol=1e-6)


def test_a_square_and_a_dot_are_rendered_as_computed_by_hand():
    square = stroke3([[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]], [4])
    expected = np.zeros((48, 48))
    expected[[2, 3, 44, 45], 3:45] = 0.75  # the sides y = 3 and y = 45
    expected[3:45, [2, 3, 44, 45]] = 0.75  # the sides x = 3 and x = 45
    expected[[2, 2, 45, 45], [2, 45, 2, 45]] = CAP  # outside the corners, round joints
    # A dot alone is drawn at the centre: the four pixels around (24, 24).
    dot = stroke3([[5, 5]], [0])
    expected_dot = np.zeros((48, 48))
    expected_dot[23:25, 23:25] = CAP
    images = render_sketches([square, dot, np.zeros((0, 3), np.float32)], size=48,
                             line_width=1.5, margin=3)
    np.testing.assert_allclose(images[0], expected, atol=1e-6)
    np.testing.assert_allclose(images[1], expected_dot, atol=1e-6)
    assert not images[2].any()  # an empty sketch: a blank picture
    # A pen lift between two strokes draws no line between them: two separate dashes.
    dashes = render_sketches([stroke3([[0, 0], [4, 0], [6, 0], [10, 0]], [1, 3])])[0]
    assert dashes[23, 22:26].max() == 0 and dashes[23, 5:15].min() == 0.75


def test_batches_picture_the_augmented_strokes_they_hold():
    rng = np.random.default_rng(0)
    sketches = [np.concatenate([rng.normal(size=(n, 2)) * 20, np.zeros((n, 1))], axis=1)
                for n in (12, 30, 7, 21)]
    for sketch in sketches:
        sketch[-1, 2] = 1
    loader = utils.DataLoader(sketches, batch_size=4, max_seq_len=40, random_scale_factor=0.3,
                              augment_stroke_prob=0.3)
    render = lambda batch: render_sketches(batch)[..., None]  # noqa: E731
    batches = SketchBatches(loader, 4, augment=True, seed=3, render=render)
    x, y = batches[0]
    assert set(x) == {"strokes", "image"} and x["image"].shape == (4, 48, 48, 1)
    # The strokes the decoder is taught, turned back into stroke-3, give the same pictures.
    strokes = [utils.to_stroke3(row) for row in x["strokes"][:, 1:]]
    np.testing.assert_allclose(x["image"][..., 0], render_sketches(strokes), atol=1e-5)
    assert sum(len(s) for s in strokes) < sum(len(s) for s in loader.strokes)  # points dropped


@pytest.mark.parametrize("variant", ["png", "inverted array", "transparent"])
def test_a_picture_is_converted_to_the_training_rendering(tmp_path, variant):
    sketch = stroke3([[0, 0], [30, 5], [60, 40], [20, 50], [0, 0], [10, 10], [40, 20]], [4, 6])
    path = tmp_path / "sketch.png"
    utils.sketches_to_png([sketch], path, cell_size=300, stroke_width=5, margin=40)
    picture = str(path)
    if variant != "png":
        grey = np.asarray(__import__("PIL.Image").Image.open(path).convert("L"))
        picture = (255 - grey if variant == "inverted array"
                   else np.dstack([np.zeros_like(grey)] * 3 + [255 - grey]))
    converted = picture_to_input(picture)
    rendered = render_sketches([sketch])[0]
    assert converted.shape == (48, 48) and 0 <= converted.min() and converted.max() <= 1
    assert np.corrcoef(converted.ravel(), rendered.ravel())[0, 1] > 0.9
    assert converted.sum() == pytest.approx(rendered.sum(), rel=0.25)


def test_pictures_without_strokes_are_refused(tmp_path):
    with pytest.raises(ValueError, match="blank: no strokes found"):
        picture_to_input(np.full((40, 40), 255, np.uint8), name="blank")
    (tmp_path / "notes.png").write_text("not a picture")
    with pytest.raises(ValueError, match="notes.png: not an image"):
        picture_to_input(tmp_path / "notes.png")


# ---- the CNN encoder and the KL-free loss ----


def highpass_numpy(image):
    """The fixed 3x3 high-pass filter, as a zero-padded correlation written out."""
    kernel = -np.ones((3, 3))
    kernel[1, 1] = 8
    padded = np.pad(image, 1)
    return sum(kernel[i, j] * padded[i:i + image.shape[0], j:j + image.shape[1]]
               for i in range(3) for j in range(3))


def cnn_batch(rng, batch=3, steps=10, size=48):
    strokes = np.zeros((batch, steps + 1, 5), np.float32)
    strokes[:, 0, 2] = 1
    strokes[:, 1:, :2] = rng.normal(size=(batch, steps, 2))
    strokes[:, 1:, 2] = 1
    images = rng.random((batch, size, size, 1)).astype(np.float32)
    return {"strokes": strokes, "image": images}, strokes[:, 1:].copy()


def test_cnn_encoder_shapes_and_a_fixed_high_pass_filter():
    hps = HParams.parse(TINY_CNN + ",max_seq_len=10,batch_size=3,learning_rate=0.01")
    model = compile_model(build_model(hps), hps)
    x, y = cnn_batch(np.random.default_rng(0))
    sizes = {}
    for number in range(1, 7):
        sizes[number] = tuple(model.get_layer(f"encoder_conv{number}").output.shape[1:])
    assert sizes == {1: (24, 24, 4), 2: (24, 24, 4), 3: (12, 12, 8), 4: (12, 12, 8),
                     5: (6, 6, 8), 6: (6, 6, 8)}
    assert tuple(model.get_layer("encoder_flatten").output.shape[1:]) == (288,)
    z_mean, z_log_var = encoder_model(model).predict(x["image"], verbose=0)
    assert z_mean.shape == z_log_var.shape == (3, 8)
    assert all(not model.get_layer(f"encoder_conv{n}").use_bias for n in range(1, 7))

    highpass = model.get_layer("encoder_highpass")
    assert highpass.weights == []  # a constant, not a variable: nothing to train or save
    before = keras.ops.convert_to_numpy(highpass(x["image"]))
    np.testing.assert_allclose(before[..., 0], np.stack([highpass_numpy(i[..., 0]) for i in x["image"]]),
                               atol=1e-5)
    kernel = keras.ops.convert_to_numpy(model.get_layer("encoder_conv1").kernel).copy()
    model.train_on_batch(x, y)
    assert not np.allclose(keras.ops.convert_to_numpy(model.get_layer("encoder_conv1").kernel), kernel)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(highpass(x["image"])), before)


@pytest.mark.tensorflow_only
def test_kl_weight_zero_skips_the_kl_term():
    import tensorflow as tf

    from sketch_rnn.mixture import reconstruction_loss

    def gradients(hps, x, y):
        """d loss / d encoder weights, and d L_R / d them, from the same z noise (no dropout,
        so that z's noise is the only random draw)."""
        keras.utils.set_random_seed(1)
        model = compile_model(build_model(hps), hps)
        encoder = [w for w in model.trainable_weights if w.path.startswith(("encoder", "z_"))]
        generator = model.get_layer("latent").seed_generator
        start = keras.ops.convert_to_numpy(generator.state)
        results = []
        for loss in ("model", "reconstruction"):
            generator.state.assign(start)
            with tf.GradientTape() as tape:
                params = model(x, training=False)
                value = (model.compute_loss(x, y, params) if loss == "model" else
                         reconstruction_loss(y, params, hps.num_mixture, hps.max_seq_len))
            results.append([g.numpy() for g in tape.gradient(value, encoder)])
        return model, results

    x, y = cnn_batch(np.random.default_rng(2))
    hps = HParams.parse(TINY_CNN + ",max_seq_len=10,batch_size=3")
    model, (total, recon) = gradients(hps, x, y)
    assert model.losses == [] and "kl_loss" not in [m.name for m in model.metrics]
    for got, expected in zip(total, recon):
        np.testing.assert_array_equal(got, expected)
    # With a KL weight (and no floor) the encoder's gradient has the KL term's share too.
    _, (total, recon) = gradients(HParams.parse(TINY_CNN.replace("kl_weight=0", "kl_weight=1")
                                                + ",kl_tolerance=0,max_seq_len=10,batch_size=3"), x, y)
    assert any(not np.allclose(a, b) for a, b in zip(total, recon))

    # Training logs neither a KL loss nor a KL weight.
    model = compile_model(build_model(hps), hps)
    history = model.fit(x, y, epochs=1, verbose=0, callbacks=[KLWeightAnnealing(hps)])
    assert set(history.history) == {"loss", "reconstruction_loss"}
    assert history.history["loss"] == history.history["reconstruction_loss"]


# ---- a tiny cnn model on two QuickDraw classes ----


@pytest.fixture(scope="module")
def two_class_run(shared_datasets, tmp_path_factory):
    folder = tmp_path_factory.mktemp("pix2seq")
    simplified = shared_datasets / "quickdraw_ndjson" / "simplified"
    code = prepare_data.main([str(simplified / "eye.ndjson"), str(simplified / "guitar.ndjson"),
                              "--out", str(folder / "eye_guitar.npz"), "--max_per_class=60",
                              "--split=0.6,0.2,0.2", "--no_progress"])
    assert code == 0
    run_dir = folder / "run"
    code = seq2seqVAE_train.main([
        f"--data_dir={folder}", "--data_set=eye_guitar", f"--experiment_dir={run_dir}",
        "--verbose=0", "--no_tensorboard_images",
        f"--hparams={TINY_CNN},epochs=4,learning_rate=0.01"])
    assert code == 0
    return folder, run_dir


def test_a_tiny_cnn_model_learns_two_classes_and_redraws_a_picture(two_class_run, tmp_path):
    folder, run_dir = two_class_run
    with open(run_dir / "logs" / "training_log.csv") as f:
        log = list(csv.DictReader(f))
    assert "kl_loss" not in log[0] and "kl_weight" not in log[0]
    assert float(log[-1]["loss"]) < 0.8 * float(log[0]["loss"])
    assert float(log[-1]["val_loss"]) < float(log[0]["val_loss"])
    test = json.loads((run_dir / "test_losses.json").read_text())
    assert set(test["classes"]) == {"eye", "guitar"} and "kl_loss" not in test
    assert sum(c["sketches"] for c in test["classes"].values()) == test["sketches"] == 24

    # A PNG of a test guitar, as another program would draw it, redrawn as strokes.
    drawer = load_run(str(run_dir), jit_compile=False)
    sketch = drawer.load_sketches(str(folder), "test")[0]
    picture = tmp_path / "guitar.png"
    utils.sketches_to_png([sketch], picture, cell_size=200, stroke_width=3)
    z = drawer.encode_image(str(picture))
    assert z.shape == (1, 8) and np.all(np.isfinite(z))
    (redrawn,) = drawer.decode(z, temperature=0.5, seed=0)
    assert 1 <= len(redrawn) <= drawer.hps.max_seq_len
    assert np.all(np.isfinite(redrawn)) and set(np.unique(redrawn[:, 2])) <= {0.0, 1.0}
    code = seq2seqVAE_sample.main([f"--run_dir={run_dir}", "--mode=reconstruct",
                                   f"--image={picture}", "--count=3", "--seed=0",
                                   f"--output_dir={tmp_path}"])
    assert code == 0 and (tmp_path / "reconstruct-t0.50-s0.svg").is_file()
    # A model that reads strokes says so.
    with pytest.raises(ValueError, match="encoder=rnn"):
        load_run("examples/sheep", jit_compile=False).encode_image(str(picture))


def numpy_sketch_losses(targets, params, m):
    """Per sketch: the masked L_R summed over its points (the official evaluation), in NumPy."""
    pen_logits, pi, mu_x, mu_y, log_sx, log_sy, rho = (
        params[..., :3], *np.split(params[..., 3:], 6, axis=-1))
    pi = np.exp(pi - pi.max(-1, keepdims=True))
    pi /= pi.sum(-1, keepdims=True)
    sx, sy, rho = np.exp(log_sx), np.exp(log_sy), np.tanh(rho)
    nx, ny = (targets[..., 0:1] - mu_x) / sx, (targets[..., 1:2] - mu_y) / sy
    exponent = (nx**2 + ny**2 - 2 * rho * nx * ny) / (2 * (1 - rho**2))
    density = np.exp(-exponent) / (2 * np.pi * sx * sy * np.sqrt(1 - rho**2))
    offsets = -np.log((pi * density).sum(-1) + 1e-6)
    log_pen = pen_logits - np.log(np.exp(pen_logits).sum(-1, keepdims=True))
    pen = -(targets[..., 2:5] * log_pen).sum(-1)
    real = targets[..., 4] == 0
    return ((offsets + pen) * real).sum(-1), real.sum(-1)


def test_per_class_evaluation_against_numpy(two_class_run):
    folder, run_dir = two_class_run
    drawer = load_run(str(run_dir), jit_compile=False)
    hps, model = drawer.hps, compile_model(drawer.model, drawer.hps)
    # sigma = exp(-40): z is the posterior mean whatever the noise, so the figures are sums
    # of per-sketch losses.
    log_var = model.get_layer("z_log_var")
    log_var.kernel.assign(np.zeros(log_var.kernel.shape, np.float32))
    log_var.bias.assign(np.full(log_var.bias.shape, -80.0, np.float32))
    strokes, labels, classes = utils.load_labelled_strokes(str(folder), "eye_guitar")
    loader = utils.DataLoader(strokes["valid"], batch_size=hps.batch_size,
                              max_seq_len=hps.max_seq_len, labels=labels["valid"])
    loader.normalize(drawer.scale_factor)
    figures = evaluate(model, loader, classes=classes)

    _, stroke5, _ = loader.get_batch(range(len(loader)))
    x = {"strokes": stroke5, "image": render_sketches(loader.strokes)[..., None]}
    params = keras.ops.convert_to_numpy(model.predict(x, batch_size=len(loader), verbose=0))
    losses, points = numpy_sketch_losses(stroke5[:, 1:].astype(np.float64),
                                         params.astype(np.float64), hps.num_mixture)
    assert classes == ["eye", "guitar"] and set(figures["classes"]) == set(classes)
    for label, name in enumerate(classes):
        mine = loader.labels == label
        got = figures["classes"][name]
        assert got["sketches"] == mine.sum() == 12 and got["points"] == points[mine].sum()
        assert got["reconstruction_loss"] == pytest.approx(
            losses[mine].sum() / (mine.sum() * hps.max_seq_len), rel=1e-4)
        assert got["nats_per_point"] == pytest.approx(losses[mine].sum() / points[mine].sum(),
                                                      rel=1e-4)
        assert got["loss"] == got["reconstruction_loss"] and "kl_loss" not in got
    assert figures["reconstruction_loss"] == pytest.approx(
        losses.sum() / (len(loader) * hps.max_seq_len), rel=1e-4)
