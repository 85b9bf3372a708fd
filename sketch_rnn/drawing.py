"""Drawing with a trained model: sub-models, interpolation and `SketchRNNDrawer`.

What a trained model needs to draw: encoder and decoder sub-models that share its layers
(the decoder step calls the decoder cell's own `step`), latent interpolation, and
`SketchRNNDrawer`, which loads a run folder, samples whole batches of sketches in one
compiled loop and completes partial sketches. Stroke formats and pictures (SVG, PNG, GIF) live in
`sketch_rnn.strokes` and `sketch_rnn.pictures` (imported as utils.X).
"""

import os
import warnings

import keras
import numpy as np
from keras import ops

from sketch_rnn import backend, legacy, raster
from sketch_rnn.data_loader import DataLoader
from sketch_rnn.datasets import SPLITS, check_data_set_names, load_strokes
from sketch_rnn.files import check_regular_file, check_scale_factor, first_line
from sketch_rnn.hparams import load_config
from sketch_rnn.mixture import sample_stroke
from sketch_rnn.model import build_model
from sketch_rnn.strokes import START_TOKEN, to_stroke3, to_stroke5


@keras.saving.register_keras_serializable(package="sketch_rnn")
class CellStep(keras.layers.Layer):
    """One step of a (shared) cell, without dropout: the decoder step of `decoder_step_model`.

    Call args: point (B, 1, D1), state (a list of (B, n) tensors), constant (B, D2) or None.
    Returns: (output (B, 1, H), *new_state).
    """

    def __init__(self, cell, **kwargs):
        super().__init__(**kwargs)
        self.cell = cell

    def call(self, point, state, constant=None):
        projected = self.cell.input_projection(point[:, 0]) + self.cell.constant_projection(constant)
        output, new_state = self.cell.step(projected, tuple(state))
        return (ops.expand_dims(output, 1), *new_state)

    def compute_output_spec(self, point, state, constant=None):
        batch = point.shape[0]
        return (keras.KerasTensor((batch, 1, self.cell.units), dtype=point.dtype),
                *(keras.KerasTensor((batch, n), dtype=point.dtype) for n in self.cell.state_sizes))


def lerp(z0, z1, t):
    """Linear interpolation (1 - t) z0 + t z1; t a scalar or (S,) -> (Nz,) or (S, Nz)."""
    z0, z1 = np.asarray(z0, np.float64), np.asarray(z1, np.float64)
    t = np.asarray(t, np.float64)[..., None]
    return ((1 - t) * z0 + t * z1).astype(np.float32)


def slerp(z0, z1, t):
    """Spherical interpolation (Shoemake 1985), as Magenta's sketch-rnn notebook uses.

    Moves along the great circle between the directions of z0 and z1 while the norm goes
    linearly between theirs, so intermediate points keep the norm typical of N(0, I)
    samples instead of passing near the origin as `lerp` does. Falls back to `lerp` when
    z0 and z1 point the same way.

    Args:
        z0, z1: (Nz,) latent vectors.
        t: a scalar or (S,) positions in [0, 1].

    Returns:
        (Nz,) or (S, Nz) float32.
    """
    z0, z1 = np.asarray(z0, np.float64), np.asarray(z1, np.float64)
    t = np.asarray(t, np.float64)[..., None]
    cosine = np.dot(z0, z1) / (np.linalg.norm(z0) * np.linalg.norm(z1))
    omega = np.arccos(np.clip(cosine, -1.0, 1.0))
    if np.sin(omega) < 1e-6:
        return lerp(z0, z1, t[..., 0])
    return ((np.sin((1 - t) * omega) * z0 + np.sin(t * omega) * z1) / np.sin(omega)).astype(np.float32)


def interpolate(z0, z1, steps, method="slerp"):
    """`steps` latent vectors from z0 to z1 inclusive, (steps, Nz), by "slerp" or "lerp"."""
    functions = {"slerp": slerp, "lerp": lerp}
    if method not in functions:
        raise ValueError(f"interpolation method must be 'slerp' or 'lerp', got {method!r}")
    if steps < 2:
        raise ValueError(f"an interpolation needs at least 2 steps, got {steps}")
    return functions[method](z0, z1, np.linspace(0.0, 1.0, steps))


class SketchRNNDrawer:
    """A trained Sketch-RNN ready to draw: encode, decode, sample, interpolate and complete sketches.

    Sketches go in and come out as lists of stroke-3 arrays in the model's units (dx and dy
    divided by `scale_factor`, as the DataLoader and `load_sketches` give them); the drawing
    functions of `utils` (`sketch_rnn.pictures`) take `scale_factor` to draw them at the data's size.

    Sampling runs one compiled loop per call over the whole batch (`sample_stroke5`): the
    decoder cell's own `step` (the z part of its input projection computed once), the
    mixture head and `sample_stroke`, until every sketch has drawn its end
    token or max_seq_len points. It starts from a decoder state and a first input point: the
    initial state and the start token, or (`complete`) the state after a prefix read
    teacher-forced and the prefix's last point. Its random draws are made up front with
    NumPy, one stream per sketch from `seed`, so a seeded call is reproducible and sketch i
    gets the same random draws however many others are drawn with it (its points can still
    differ in the last bits, as the matmuls round differently for another batch size, and
    a different bit can lead the rest of a sketch elsewhere; interpolations share one stream
    instead, so that their frames differ only by z). The loop is traced once; XLA compiles it once per
    batch size (about 0.4 s for 1 sketch, 1.4 s for 100 at default size here), so the first
    call with a new number of sketches is that much slower. The recurrent matmuls are in the
    cell's dtype (`lstm_matmul_dtype`). On JAX the loop is `jax.jit`-compiled.

    A cnn model (encoder=cnn, sketch-pix2seq) encodes pictures: `encode` renders the sketches
    as training did, and `encode_image` takes picture files or arrays.

    Build it with `load_run(run_dir)`, or from a model in memory.

    Args:
        model: a SketchRNN from `build_model` holding trained weights.
        scale_factor: the run's normalising scale factor (model_config.json).
        data_sets: names of the run's data sets, for `load_sketches`.
        jit_compile: compile the sampling loop with XLA (faster on this CPU; see
            benchmarks/sampling_speed.py).

    Attributes:
        hps, scale_factor, data_sets, model; the sub-models `encoder` and `initial_state`
        (None for an unconditional model), `decoder` and `decoder_step`.
    """

    def __init__(self, model, scale_factor=1.0, data_sets=(), jit_compile=True):
        self.model = model
        self.hps = model.hps
        self.scale_factor = scale_factor
        self.data_sets = list(data_sets)
        self.jit_compile = jit_compile
        self.encoder = encoder_model(model) if self.hps.conditional else None
        self.initial_state = initial_state_model(model) if self.hps.conditional else None
        self.decoder = decoder_model(model)
        self.decoder_step = decoder_step_model(model)
        self._sampling_loop = None  # compiled on first use, then reused by every call

    # -- latent vectors --

    def encode(self, sketches, sample=False, seed=None):
        """Encodes stroke-3 sketches (model units) to latent vectors.

        A cnn model (encoder=cnn) encodes their pictures, rendered as in training
        (`render`).

        Args:
            sketches: a list of B stroke-3 sketches, each an (N_b, 3) array (or nested
                list), N_b <= max_seq_len; one sketch is `[sketch]`.
            sample: False returns the posterior mean z_mean; True draws
                z = z_mean + exp(z_log_var / 2) * N(0, I), as training does.
            seed: seeds the draw when sample is True.

        Returns:
            (B, Nz) float32 ((0, Nz) for no sketches).
        """
        if self.encoder is None:
            _require_conditional(self.model, "has no encoder")
        sketches = _as_sketches(sketches)
        if not sketches:
            return np.zeros((0, self.hps.z_size), np.float32)
        if self.hps.encoder == "cnn":  # rendering fits each sketch to the picture: any units
            return self._encode(self.render(sketches)[..., None], sample, seed)
        self._check_units(sketches)
        return self._encode(to_stroke5(sketches, self.hps.max_seq_len), sample, seed)

    def encode_image(self, images, sample=False, seed=None):
        """Encodes pictures of sketches (a cnn model's): files, Pillow images or arrays.

        Each picture is converted to what training renders (`picture`): grey, inverted if
        its strokes are darker than its background, cropped to the strokes, fitted and
        centred in the img_size square with img_margin, lines made img_line_width wide.

        Args:
            images: one picture or a list of them: a path to a PNG, JPEG (or other file
                Pillow reads), a Pillow image, or an (H, W), (H, W, 3) or (H, W, 4) array
                (integers 0-255, floats 0-1).
            sample, seed: as `encode`.

        Returns:
            (B, Nz) float32, one row per picture.

        Raises:
            ValueError: for a model that reads strokes (encoder=rnn), or naming a picture
                that cannot be read or shows no strokes.
        """
        if self.encoder is None:
            _require_conditional(self.model, "has no encoder")
        if self.hps.encoder != "cnn":
            raise ValueError("this model's encoder reads strokes (encoder=rnn), not pictures: "
                             "encode_image needs a model trained with encoder=cnn")
        return self._encode(self.picture(images)[..., None], sample, seed)

    def render(self, sketches):
        """The pictures a cnn model reads for stroke-3 sketches: (B, S, S) float32 in [0, 1],
        strokes bright (`sketch_rnn.raster.render_sketches` with the run's img_* hparams)."""
        hps = self.hps
        return raster.render_sketches(sketches, hps.img_size, hps.img_line_width, hps.img_margin)

    def picture(self, images):
        """Pictures converted as `encode_image` converts them: (B, S, S) float32 in [0, 1]."""
        from PIL import Image

        hps = self.hps
        one = isinstance(images, (str, os.PathLike, Image.Image)) or (
            isinstance(images, np.ndarray) and images.dtype != object and images.ndim in (2, 3)
            and (images.ndim == 2 or images.shape[-1] in (1, 3, 4)))
        images = [images] if one else list(images)
        if not images:
            raise ValueError("no pictures to encode")
        return np.stack([raster.picture_to_input(image, hps.img_size, hps.img_line_width,
                                                 hps.img_margin) for image in images])

    def _encode(self, batch, sample, seed):
        z_mean, z_log_var = self.encoder.predict(batch, batch_size=self.hps.batch_size, verbose=0)
        if not sample:
            return z_mean
        epsilon = np.random.default_rng(seed).standard_normal(z_mean.shape).astype(np.float32)
        return z_mean + np.exp(z_log_var / 2) * epsilon

    # -- drawing sketches --

    def decode(self, z, temperature=1.0, greedy=False, seed=None, max_steps=None,
               shared_noise=False, pen_temperature=None):
        """Draws one sketch per latent vector.

        Args:
            z: (B, Nz) latent vectors, or one (Nz,) vector for one sketch.
            temperature: tau > 0, one for all or (B,) one per sketch (see `sample_stroke`).
            greedy: take the most likely choices and the means (deterministic; the
                temperature is then not used).
            seed: seeds the draws; None draws fresh ones.
            max_steps: the most points a sketch may have; max_seq_len by default.
            shared_noise: every sketch uses the same random draws (those sketch 0 would
                use), so sketches differ only by their z and temperature; by default each
                has its own.
            pen_temperature: tau for the pen states alone, > 0, one for all or (B,); None
                (the default, the paper's rule) uses `temperature`. At tau 0.3, 1 ends the
                sketches where the model would and avoids most loops (see `sample_stroke`).

        Returns:
            list of B stroke-3 arrays (model units), each cut at its end token.
        """
        if not self.hps.conditional:
            _require_conditional(self.model, "draws from no z: use sample(n)")
        z = np.asarray(z, np.float32)
        if z.ndim == 1:
            z = z[None]
        if z.ndim != 2 or z.shape[1] != self.hps.z_size:
            raise ValueError(f"z must have shape (B, {self.hps.z_size}) or ({self.hps.z_size},), "
                             f"got {z.shape}")
        if not len(z):
            return []
        _, noise = self._random_draws(len(z), seed, max_steps, with_z=False,
                                      shared_noise=shared_noise)
        stroke5 = self.sample_stroke5(z, noise, temperature, greedy, pen_temperature=pen_temperature)
        return [to_stroke3(s) for s in stroke5]

    def sample(self, n, temperature=1.0, greedy=False, seed=None, max_steps=None,
               pen_temperature=None):
        """Draws n sketches unconditionally: from z ~ N(0, I), or from no z for a decoder-only model.

        Args and Returns: as `decode`, for n sketches.
        """
        if n < 1:
            raise ValueError(f"the number of sketches must be at least 1, got {n}")
        z, noise = self._random_draws(n, seed, max_steps, with_z=self.hps.conditional)
        stroke5 = self.sample_stroke5(z, noise, temperature, greedy, pen_temperature=pen_temperature)
        return [to_stroke3(s) for s in stroke5]

    def reconstruct(self, sketches, temperature=1.0, greedy=False, seed=None, max_steps=None,
                    shared_noise=False, pen_temperature=None):
        """Encodes sketches (to z_mean) and decodes them: `decode(encode(sketches), ...)`,
        with `decode`'s options."""
        return self.decode(self.encode(sketches), temperature, greedy, seed, max_steps,
                           shared_noise, pen_temperature)

    def interpolate(self, sketch_a, sketch_b, steps=10, method="slerp", temperature=1.0,
                    greedy=False, seed=None, shared_noise=True, pen_temperature=None):
        """Decodes `steps` points between the latent vectors of two sketches.

        Args:
            sketch_a, sketch_b: stroke-3 arrays (model units).
            steps: sketches to draw, the two ends included.
            method: "slerp" or "lerp" (see `interpolate`).
            temperature, greedy, seed, pen_temperature: as `decode`.
            shared_noise: True (the default) draws every frame with the same random draws,
                so neighbouring frames differ only by z; False gives each its own, as
                `decode` does by default.

        Returns:
            list of `steps` stroke-3 arrays, from sketch_a's end to sketch_b's.
        """
        z0, z1 = self.encode([sketch_a, sketch_b])
        return self.decode(interpolate(z0, z1, steps, method), temperature, greedy, seed,
                           shared_noise=shared_noise, pen_temperature=pen_temperature)

    # -- completing a sketch --

    def complete(self, prefix, n=1, temperature=1.0, z="encode", greedy=False, seed=None,
                 max_steps=None, pen_temperature=None):
        """Draws n continuations of a partial sketch.

        The decoder reads the start token and the prefix's points teacher-forced, as in
        training (`prefix_state`), and then draws on from there: the n continuations are
        drawn in one call of the compiled sampling loop, which starts from that state with
        the prefix's last point as its first input. Each continuation has its own random
        draws from `seed`.

        Args:
            prefix: (K, 3) stroke-3 array in model units (divided by `scale_factor`, as
                `load_sketches` gives them; divide a drawing in the data's units by it).
                K may be 0 when z is given or the model is decoder-only.
            n: continuations to draw.
            temperature, greedy, seed, pen_temperature: as `decode`.
            z: "encode" (the default): a conditional model draws from the prefix's own
                latent vector (the posterior mean, `encode([prefix])`) and a decoder-only
                model from no z; or a latent vector, (Nz,) for all or (n, Nz) one per
                continuation.
            max_steps: the most points a continuation may have; by default what is left of
                max_seq_len after the prefix (at least 1).

        Returns:
            list of n stroke-3 arrays (model units), each the prefix's K rows followed by
            its continuation, cut at its end token: `sketch[len(prefix):]` is the
            continuation alone, whose first point is drawn from the decoder's state after
            the prefix's last one.
        """
        if n < 1:
            raise ValueError(f"the number of continuations must be at least 1, got {n}")
        prefix = self._check_prefix(prefix)
        z = self._completion_z(prefix, z, n)
        if max_steps is None:
            max_steps = max(1, self.hps.max_seq_len - len(prefix))
        _, noise = self._random_draws(n, seed, max_steps, with_z=False)
        if len(prefix):
            # Teacher-forced up to the last point, which the loop reads first.
            state = self._read(prefix[:-1], z, n)
            point = to_stroke5([prefix[-1:]], 1)[:, 1]  # (1, 5), the last point
        else:
            state, point = self._read(prefix, z, n), START_TOKEN[None]
        stroke5 = self.sample_stroke5(z, noise, temperature, greedy, state=state,
                                      point=np.repeat(point, n, axis=0),
                                      pen_temperature=pen_temperature)
        return [np.concatenate([prefix, to_stroke3(s)]) for s in stroke5]

    def prefix_state(self, prefix, z="encode"):
        """The decoder's state after reading the start token and a prefix, teacher-forced.

        Args:
            prefix: (K, 3) stroke-3 array in model units.
            z: as `complete`: "encode", or (Nz,) / (B, Nz) latent vectors.

        Returns:
            list of (B, n) float32 arrays in the decoder cell's state order (h, c for the
            LSTM), B = 1 or the number of latent vectors given. The mixture head applied to
            its first entry, h, gives the distribution of the point after the prefix.
        """
        prefix = self._check_prefix(prefix)
        z = self._completion_z(prefix, z, None)
        batch = 1 if z is None else len(z)
        cell = self.model.get_layer("decoder_lstm").cell
        vector = self._read(prefix, z, batch)
        return [ops.convert_to_numpy(s) for s in cell.state_from_vector(ops.convert_to_tensor(vector))]

    def _check_prefix(self, prefix):
        """The prefix as a (K, 3) float32 array, checked: finite, pen 0 or 1, K <= max_seq_len."""
        prefix = np.asarray(prefix, np.float32)
        if prefix.ndim != 2 or prefix.shape[1] != 3:
            raise ValueError(f"prefix must be an (N, 3) stroke-3 array, got shape {prefix.shape}")
        if not np.all(np.isfinite(prefix)):
            raise ValueError("prefix holds NaN or infinite values")
        if not np.all(np.isin(prefix[:, 2], (0.0, 1.0))):
            raise ValueError("prefix: the pen column (the third) must be 0 or 1")
        if len(prefix) > self.hps.max_seq_len:
            raise ValueError(f"prefix has {len(prefix)} points, more than the model's "
                             f"max_seq_len={self.hps.max_seq_len}")
        self._check_units([prefix])
        return prefix

    def _check_units(self, sketches):
        """Warns if the sketches look like they are in the data's units, not the model's.

        In model units the offsets' spread is about 1 (the scale factor is the training
        offsets' standard deviation; one sketch's is at most 5 in aaron_sheep, short_kanji
        and omniglot); in the data's units about the scale factor. A sketch read from a
        file or a data set's .npz and passed as it is would be drawn as a huge one.
        """
        spreads = [np.std(sketch[:, :2]) for sketch in sketches if len(sketch) > 1]
        if not spreads:
            return
        spread = float(np.median(spreads))
        if spread > max(8.0, self.scale_factor / 2):
            warnings.warn(f"the sketches' offsets spread {spread:.3g} (standard deviation), as "
                          f"in the data's units (this run's scale factor is "
                          f"{self.scale_factor:.4g}); the model takes model units: divide dx "
                          "and dy by drawer.scale_factor (load_sketches does)", stacklevel=3)

    def _completion_z(self, prefix, z, n):
        """z for `complete`: None (decoder-only), or (n, Nz) (n=None: as many as given, or 1)."""
        encode = isinstance(z, str)
        if encode and z != "encode":
            raise ValueError(f"z must be 'encode' or latent vectors, got {z!r}")
        if not self.hps.conditional:
            if not encode and z is not None:
                _require_conditional(self.model, "draws from no z: leave z out")
            return None
        if z is None:
            raise ValueError("this model is conditional: z is 'encode' (the prefix's own) or "
                             f"latent vectors, ({self.hps.z_size},) or (n, {self.hps.z_size})")
        if encode:
            if not len(prefix):
                raise ValueError("an empty prefix has nothing to encode: give z")
            z = self.encode([prefix])
        z = np.asarray(z, np.float32)
        if z.ndim == 1:
            z = z[None]
        rows = (1, n) if n is not None else (len(z),)
        if z.ndim != 2 or z.shape[1] != self.hps.z_size or len(z) not in rows:
            raise ValueError(f"z must have shape ({self.hps.z_size},) or "
                             f"({n or 'B'}, {self.hps.z_size}), got {z.shape}")
        return z if n is None else np.broadcast_to(z, (n, self.hps.z_size)).copy()

    def _start_state(self, z, batch):
        """The decoder's initial state as one (B, sum(state_sizes)) vector (eq. 4; zeros
        for a decoder-only model), the cell's states side by side."""
        if self.hps.conditional:
            return ops.convert_to_numpy(self.model.get_layer("decoder_init")(z))
        cell = self.model.get_layer("decoder_lstm").cell
        return np.zeros((batch, sum(cell.state_sizes)), np.float32)

    def _read(self, prefix, z, batch):
        """The decoder's state, as one (B, sum(state_sizes)) vector, after reading the start
        token and `prefix` teacher-forced (the decoder layer itself, as training runs it)."""
        state = self._start_state(z, batch)
        if not len(prefix):
            return state
        decoder = self.model.get_layer("decoder_lstm")
        inputs = np.repeat(to_stroke5([prefix], len(prefix)), batch, axis=0)  # S0 .. S_K
        cell = decoder.cell
        _, *final = decoder(ops.convert_to_tensor(inputs), constant=z,
                            initial_state=cell.state_from_vector(ops.convert_to_tensor(state)),
                            training=False)
        return np.concatenate([ops.convert_to_numpy(s) for s in final], axis=-1)

    def _random_draws(self, batch, seed, max_steps, with_z, shared_noise=False):
        """Per sketch, its own stream from `seed`: z (if asked) and the sampling noise.

        With `shared_noise`, every sketch gets the noise of sketch 0's stream (its z stays
        its own).
        """
        steps = self.hps.max_seq_len if max_steps is None else int(max_steps)
        if steps < 1:
            raise ValueError(f"max_steps must be at least 1, got {max_steps}")
        z = np.zeros((batch, self.hps.z_size if with_z else 0), np.float32)
        noise = np.empty((steps, batch, 4), np.float32)
        for b, stream in enumerate(np.random.SeedSequence(seed).spawn(batch)):
            rng = np.random.default_rng(stream)
            if with_z:
                z[b] = rng.standard_normal(self.hps.z_size)
            if shared_noise and b > 0:
                noise[:, b] = noise[:, 0]
                continue
            noise[:, b, :2] = rng.random((steps, 2))
            noise[:, b, 2:] = rng.standard_normal((steps, 2))
        return (z if with_z else None), noise

    def sample_stroke5(self, z, noise, temperature=1.0, greedy=False, state=None, point=None,
                       pen_temperature=None):
        """The compiled sampling loop itself, with the random draws given.

        Args:
            z: (B, Nz) latent vectors, or None for an unconditional model.
            noise: (T, B, 4) float32: for each step and sketch, the draws `sample_stroke`
                takes; T is the most points a sketch may have.
            temperature: tau > 0, scalar or (B,).
            greedy: see `sample_stroke`.
            state: the decoder's state to start from, (B, sum(state_sizes)), the cell's
                states side by side; by default its initial state (eq. 4).
            point: (B, 5) stroke-5, the first point the decoder reads; by default the start
                token S0. `complete` gives the state after a prefix and its last point.
            pen_temperature: tau > 0 for the pen states, scalar or (B,); None: `temperature`.

        Returns:
            (B, S, 5) float32 stroke-5 points drawn after `point`, S <= T the number of
            steps run: the loop stops once every sketch has drawn its end token (p3). Each
            sketch ends at its first p3 row; the rows after it are to be ignored.
        """
        noise = np.asarray(noise, np.float32)
        if noise.ndim != 3 or noise.shape[2] != 4:
            raise ValueError(f"noise must have shape (steps, batch, 4), got {noise.shape}")
        batch = noise.shape[1]
        if self.hps.conditional:
            if z is None:
                raise ValueError("this model is conditional: give z, shape (B, z_size)")
            z = np.asarray(z, np.float32)
            if z.shape != (batch, self.hps.z_size):
                raise ValueError(f"z must have shape ({batch}, {self.hps.z_size}), got {z.shape}")
        else:
            z = np.zeros((batch, 0), np.float32)  # the decoder's kernel has no z rows either
        temperature = np.broadcast_to(np.asarray(temperature, np.float32), (batch,))
        pen_temperature = (temperature if pen_temperature is None else
                           np.broadcast_to(np.asarray(pen_temperature, np.float32), (batch,)))
        if greedy:  # the most likely choices: no temperature (0, the limit, is fine too)
            temperature = pen_temperature = np.ones((batch,), np.float32)
        for name, tau in (("temperature", temperature), ("pen_temperature", pen_temperature)):
            if not np.all(tau > 0):
                raise ValueError(f"{name} must be > 0 (greedy=True is the limit tau -> 0), "
                                 f"got {tau.min()}")
        cell = self.model.get_layer("decoder_lstm").cell
        state = self._start_state(z, batch) if state is None else np.asarray(state, np.float32)
        if state.shape != (batch, sum(cell.state_sizes)):
            raise ValueError(f"state must have shape ({batch}, {sum(cell.state_sizes)}), "
                             f"got {state.shape}")
        point = (np.tile(START_TOKEN, (batch, 1)) if point is None
                 else np.asarray(point, np.float32))
        if point.shape != (batch, 5):
            raise ValueError(f"point must have shape ({batch}, 5), got {point.shape}")
        if self._sampling_loop is None:
            self._sampling_loop = self._compile_sampling_loop()
        strokes, steps_run = self._sampling_loop(z, state, point, noise, temperature,
                                                 pen_temperature, np.bool_(greedy))
        strokes = ops.convert_to_numpy(strokes)[:int(steps_run)]  # (S, B, 5)
        return np.transpose(strokes, (1, 0, 2))

    def _compile_sampling_loop(self):
        """Compiles the whole sampling loop (`backend.compile_function`; XLA if jit_compile)."""
        hps = self.hps
        cell = self.model.get_layer("decoder_lstm").cell
        head = self.model.get_layer("mixture_head")

        def loop(z, state, point, noise, temperature, pen_temperature, greedy):
            # Uncompiled (jit_compile=False), the inputs may be NumPy arrays: a NumPy array
            # indexed by the while loop's traced step fails on JAX.
            noise = ops.convert_to_tensor(noise)
            steps, batch = ops.shape(noise)[0], ops.shape(noise)[1]
            weights = cell.step_weights()  # e.g. bf16 kernels, cast once
            # z's share of the input projection, and the biases, are the same every step.
            constant = cell.constant_projection(z if hps.conditional else None)
            state = cell.state_from_vector(state)

            def unfinished(t, point, state, strokes, done):
                return ops.logical_and(t < steps, ops.logical_not(ops.all(done)))

            def step(t, point, state, strokes, done):
                # The decoder's own cell step, without dropout or padding mask.
                h, state = cell.step(cell.input_projection(point) + constant, state, None, weights)
                point = sample_stroke(head(h), hps.num_mixture, noise[t], temperature, greedy,
                                      pen_temperature)
                strokes = ops.slice_update(strokes, [t, 0, 0], ops.expand_dims(point, 0))
                return t + 1, point, tuple(state), strokes, ops.logical_or(done, point[:, 4] > 0.5)

            start = (ops.convert_to_tensor(0, "int32"), point, tuple(state),
                     ops.zeros((steps, batch, 5)), ops.zeros((batch,), "bool"))
            t, _, _, strokes, _ = ops.while_loop(unfinished, step, start)
            return strokes, t

        z_size = hps.z_size if hps.conditional else 0
        signature = [((None, z_size), "float32"), ((None, sum(cell.state_sizes)), "float32"),
                     ((None, 5), "float32"), ((None, None, 4), "float32"),
                     ((None,), "float32"), ((None,), "float32"), ((), "bool")]
        return backend.compile_function(loop, signature, self.jit_compile)

    # -- data --

    def load_sketches(self, data_dir, split="test", data_set=None):
        """The run's sketches of one split, in model units (scaled by the stored scale factor).

        Args:
            data_dir: folder of the .npz data sets (missing known sets are downloaded).
            split: "train", "valid" or "test".
            data_set: one name, a comma list or a list of names; by default the run's own
                data sets.

        Returns:
            list of (N, 3) float32 stroke-3 arrays, those longer than max_seq_len dropped,
            clamped and scaled as in training.
        """
        return load_split(data_dir, split, data_set or self.data_sets, self.hps.max_seq_len,
                          self.scale_factor)


def load_split(data_dir, split, data_sets, max_seq_len, scale_factor):
    """One split of data sets as a run's model reads it (`SketchRNNDrawer.load_sketches`).

    Args:
        data_dir: folder of the .npz data sets (missing known sets are downloaded).
        split: "train", "valid" or "test".
        data_sets: one name, a comma list or a list of names.
        max_seq_len, scale_factor: the run's (`read_run_config`).

    Returns:
        list of (N, 3) float32 stroke-3 arrays in model units.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    names = ",".join(data_sets) if isinstance(data_sets, (list, tuple)) else data_sets
    if not names:
        raise ValueError("this run names no data set: pass data_set")
    strokes = load_strokes(data_dir, names)[SPLITS.index(split)]
    loader = DataLoader(strokes, max_seq_len=max_seq_len, scale_factor=scale_factor,
                        name=split)
    return loader.strokes


def read_run_config(run_dir):
    """(hps, scale_factor, data_sets) of a run folder, checked, without building its model.

    Raises:
        FileNotFoundError, ValueError: naming model_config.json and what is wrong in it.
    """
    hps, config = load_config(run_dir)
    config_path = os.path.join(run_dir, "model_config.json")
    scale_factor = check_scale_factor(config.get("scale_factor"), config_path)
    data_sets = check_data_set_names(config.get("data_set"), None, config_path)
    return hps, float(scale_factor), data_sets


def load_run(run_dir, checkpoint=None, jit_compile=True):
    """Loads a run folder into a `SketchRNNDrawer`, rebuilding the model from its config alone.

    Args:
        run_dir: a folder holding model_config.json and checkpoints/, as written by
            seq2seqVAE_train.py (or the model shipped in examples/).
        checkpoint: the weights file to load; by default checkpoints/best.weights.h5, else
            the newest checkpoints/ckpt-*.weights.h5. Optimizer state in it is not read.
        jit_compile: compile the sampling loop with XLA (see `SketchRNNDrawer`).

    Returns:
        a SketchRNNDrawer holding the run's hparams, scale factor and data set names.

    Raises:
        FileNotFoundError: naming what is missing (config, checkpoint).
        ValueError: naming the file, for a config or checkpoint that does not fit.
    """
    hps, scale_factor, data_sets = read_run_config(run_dir)
    config_path = os.path.join(run_dir, "model_config.json")
    if checkpoint is None:
        checkpoint = default_checkpoint(run_dir)
    else:
        check_regular_file(checkpoint, "checkpoint")  # a FIFO would hang the load
    # An uncompiled model has no optimizer, so Keras loads the layers' weights and leaves
    # the optimizer state of a training checkpoint unread.
    model = build_model(hps)
    try:
        legacy.load_weights(model, checkpoint)
    except (ValueError, OSError) as err:
        reason = first_line(err)  # Keras's reason, without the lines after it
        raise ValueError(f"cannot load {checkpoint} into the model of {config_path} ({reason})") from None
    return SketchRNNDrawer(model, scale_factor=scale_factor, data_sets=data_sets,
                           jit_compile=jit_compile)


def default_checkpoint(run_dir):
    """checkpoints/best.weights.h5 if there is one, else the newest step checkpoint."""
    from callbacks import list_checkpoints  # checkpoint names live beside the code writing them

    folder = os.path.join(run_dir, "checkpoints")
    best = os.path.join(folder, "best.weights.h5")
    if os.path.isfile(best):
        return best
    found = list_checkpoints(folder)
    if not found:
        official = os.path.isdir(run_dir) and any(name.endswith(".index") for name in os.listdir(run_dir))
        hint = ("; an official Magenta run folder? import it with convert_model.py --from_magenta "
                f"{run_dir} --to RUN_DIR" if official else "")
        raise FileNotFoundError(f"{run_dir}: no checkpoint (expected checkpoints/best.weights.h5 "
                                f"or checkpoints/ckpt-*.weights.h5){hint}")
    return found[-1][2]


def encoder_model(model):
    """The encoder of a conditional SketchRNN as a model of its own, sharing its weights.

    Args:
        model: a SketchRNN from `build_model` with conditional=True.

    Returns:
        a keras.Model: stroke-5 sketches with the start token (B, T + 1, 5), or for a cnn
        model their pictures (B, S, S, 1), -> [z_mean, z_log_var], each (B, Nz) (the paper's
        mu and sigma-hat, eq. 2).
    """
    _require_conditional(model, "has no encoder")
    inputs = model.input["image"] if model.hps.encoder == "cnn" else model.input
    return keras.Model(inputs, [model.get_layer("z_mean").output,
                                model.get_layer("z_log_var").output], name="encoder")


def initial_state_model(model):
    """z (B, Nz) -> the decoder's initial state (eq. 4), a list in its cell's state order
    ([h0, c0] for the LSTM), sharing the model's weights."""
    _require_conditional(model, "starts its decoder from zeros")
    z = keras.Input((model.hps.z_size,), name="z")
    return keras.Model(z, list(_initial_state(model, z)), name="initial_state")


def decoder_model(model):
    """The decoder over whole sequences (teacher forcing), sharing the model's weights.

    Args:
        model: a SketchRNN from `build_model`.

    Returns:
        a keras.Model [inputs (B, T, 5), z (B, Nz)] -> params (B, T, 6M + 3), where inputs
        are the points S_0 (the start token) .. S_{T-1}; it starts from `initial_state_model`'s
        state. An unconditional model's decoder takes the inputs alone and starts from zeros.
    """
    hps = model.hps
    decoder, head = model.get_layer("decoder_lstm"), model.get_layer("mixture_head")
    inputs = keras.Input((None, 5), name="decoder_inputs")
    if not hps.conditional:
        outputs, *_ = decoder(inputs)
        return keras.Model(inputs, head(outputs), name="decoder")
    z = keras.Input((hps.z_size,), name="z")
    outputs, *_ = decoder(inputs, constant=z, initial_state=_initial_state(model, z))
    return keras.Model([inputs, z], head(outputs), name="decoder")


def decoder_step_model(model):
    """One decoder step with its state as inputs and outputs: the decoder cell's `step`.

    Args:
        model: a SketchRNN from `build_model`.

    Returns:
        a keras.Model [point (B, 1, 5), z (B, Nz), *state] -> [params (B, 1, 6M + 3), *state],
        the state in the decoder cell's order (h, c for the LSTM; `cell.state_sizes`);
        unconditional models have no z input. Start from the start token with
        `initial_state_model`'s state (zeros when unconditional).
    """
    hps = model.hps
    cell, head = model.get_layer("decoder_lstm").cell, model.get_layer("mixture_head")
    point = keras.Input((1, 5), name="point")
    names = ["h", "c"] + [f"state{i}" for i in range(2, len(cell.state_sizes))]
    state = [keras.Input((n,), name=name) for n, name in zip(cell.state_sizes, names)]
    z = keras.Input((hps.z_size,), name="z") if hps.conditional else None
    output, *new_state = CellStep(cell, name="decoder_step_cell")(point, state, constant=z)
    inputs = [point] + ([z] if hps.conditional else []) + state
    return keras.Model(inputs, [head(output), *new_state], name="decoder_step")


def _initial_state(model, z):
    """The decoder's initial state from z (eq. 4), in its cell's state order."""
    cell = model.get_layer("decoder_lstm").cell
    return cell.state_from_vector(model.get_layer("decoder_init")(z))


def _as_sketches(sketches):
    """A list of B stroke-3 sketches as float32 (N_b, 3) arrays; a ValueError for one sketch
    given alone (its rows would be read as sketches) or a sketch of another shape."""
    if isinstance(sketches, np.ndarray) and sketches.dtype != object and sketches.ndim == 2:
        raise ValueError(f"sketches: expected a list of stroke-3 sketches, got one (N, 3) "
                         f"array of shape {sketches.shape}; for one sketch pass [sketch]")
    checked = []
    for index, sketch in enumerate(sketches):
        sketch = np.asarray(sketch, np.float32)
        if sketch.ndim == 1:
            raise ValueError("sketches: expected a list of stroke-3 sketches, got a list of "
                             "rows (one sketch); for one sketch pass [sketch]")
        if sketch.ndim != 2 or sketch.shape[1] != 3:
            raise ValueError(f"sketches: sketch {index} has shape {sketch.shape}, expected "
                             "(N, 3) stroke-3 rows (dx, dy, pen_lifted)")
        checked.append(sketch)
    return checked


def _require_conditional(model, what):
    if not model.hps.conditional:
        raise ValueError(f"this model was trained with conditional=False: it {what}")
