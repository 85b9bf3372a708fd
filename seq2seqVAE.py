"""Sketch-RNN as a Keras 3 functional model (Ha & Eck, arXiv 1704.03477).

The model is split as the paper is: a bidirectional LSTM encoder (sec. 3.1), the latent
sample with its KL term (eq. 10-11), the decoder's initial state from z, the decoder LSTM,
and the mixture-density head (eq. 3-9). Only the whole VAE is a `keras.Model`; the
encoder/decoder sub-models used for drawing reuse its layers.

Shapes: B batch, T time steps, M mixtures, H units. A batch `x` is stroke-5 with the start
token S0 at step 0, shape (B, T + 1, 5); the targets are `x[:, 1:]`, shape (B, T, 5).
"""

import dataclasses
import difflib
import json
import math
import os

import keras
import numpy as np
from keras import ops

# ---------------------------------------------------------------------------------------
# Hyperparameters
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class HParams:
    """Every setting of a model and its training run, with the official defaults.

    Names and defaults follow Magenta's `sketch_rnn_train.get_default_hparams`.
    Override with `HParams.parse("k=v,k2=v2")` (the training CLI's `--hparams`).
    """

    # Data.
    max_seq_len: int = 250  # Sketches longer than this are dropped; batches are padded to it.
    # Model.
    enc_rnn_size: int = 256  # Size of the encoder's LSTM (each direction).
    dec_rnn_size: int = 512  # Size of the decoder's LSTM.
    z_size: int = 128  # Size of the latent vector z. Recommend 32, 64 or 128.
    num_mixture: int = 20  # Number of bivariate Gaussians in the mixture-density output.
    conditional: bool = True  # When False, train the decoder alone (no encoder, no KL).
    use_recurrent_dropout: bool = True  # Dropout with memory loss on the LSTM candidate.
    recurrent_dropout_prob: float = 0.90  # Keep probability of the recurrent dropout.
    accelerate_LSTM: bool = False  # cuDNN LSTM on a GPU (has no recurrent dropout).
    # Loss.
    kl_weight: float = 0.5  # KL weight of the loss function (w_KL).
    kl_weight_start: float = 0.01  # KL weight at the start of training (eta_min).
    kl_tolerance: float = 0.2  # Level of KL loss below which the KL term is not optimised.
    kl_decay_rate: float = 0.99995  # KL annealing decay rate per minibatch (R).
    # Optimiser.
    learning_rate: float = 0.001  # Learning rate.
    decay_rate: float = 0.9999  # Learning rate decay per minibatch.
    min_learning_rate: float = 0.00001  # Minimum learning rate.
    grad_clip: float = 1.0  # Gradient clipping (by value). Recommend leaving at 1.0.
    # Data augmentation (training batches only).
    random_scale_factor: float = 0.15  # Random scaling data augmentation proportion.
    augment_stroke_prob: float = 0.10  # Point dropping augmentation proportion.
    # Training loop.
    batch_size: int = 100  # Minibatch size. Recommend leaving at 100.
    epochs: int = 50  # Number of passes over the training set.
    steps_per_epoch: int = 0  # Minibatches per epoch; 0 means the whole training set.
    save_every: int = 0  # Checkpoint every this many minibatches; 0 means once per epoch.
    seed: int = 0  # Seed for shuffling, augmentation, dropout and z sampling.

    @classmethod
    def from_dict(cls, values, source="hparams"):
        """Builds HParams from a dict, rejecting unknown keys and values of the wrong type."""
        hps = cls()
        for key, value in values.items():
            _check_key(key, source)
            expected = type(getattr(hps, key))
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
                raise ValueError(
                    f"{source}: hparam '{key}' must be {expected.__name__}, got {value!r}"
                )
            setattr(hps, key, value)
        hps.validate(source)
        return hps

    @classmethod
    def parse(cls, overrides="", base=None):
        """Returns `base` (or the defaults) with `"k=v,k2=v2"` overrides applied.

        Raises:
            ValueError: naming the key for an unknown key, a malformed item or a bad value.
        """
        hps = dataclasses.replace(base) if base is not None else cls()
        for item in filter(None, (s.strip() for s in (overrides or "").split(","))):
            if "=" not in item:
                raise ValueError(f"--hparams: expected key=value, got '{item}'")
            key, text = (s.strip() for s in item.split("=", 1))
            _check_key(key, "--hparams")
            setattr(hps, key, _parse_value(key, text, type(getattr(hps, key))))
        hps.validate("--hparams")
        return hps

    def validate(self, source="hparams"):
        """Raises ValueError for values no run can use."""
        positive = ["max_seq_len", "enc_rnn_size", "dec_rnn_size", "z_size", "num_mixture",
                    "batch_size", "epochs", "learning_rate"]
        for key in positive:
            if getattr(self, key) <= 0:
                raise ValueError(f"{source}: hparam '{key}' must be > 0, got {getattr(self, key)}")
        for key in ["steps_per_epoch", "save_every", "seed", "min_learning_rate",
                    "kl_tolerance", "kl_weight", "kl_weight_start", "grad_clip",
                    "random_scale_factor"]:
            if getattr(self, key) < 0:
                raise ValueError(f"{source}: hparam '{key}' must be >= 0, got {getattr(self, key)}")
        for key in ["recurrent_dropout_prob", "kl_decay_rate", "decay_rate"]:
            if not 0 < getattr(self, key) <= 1:
                raise ValueError(f"{source}: hparam '{key}' must be in (0, 1], got {getattr(self, key)}")
        if not 0 <= self.augment_stroke_prob < 1:
            raise ValueError(f"{source}: hparam 'augment_stroke_prob' must be in [0, 1), "
                             f"got {self.augment_stroke_prob}")

    def to_dict(self):
        return dataclasses.asdict(self)


def _check_key(key, source):
    names = [f.name for f in dataclasses.fields(HParams)]
    if key not in names:
        close = difflib.get_close_matches(key, names, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ValueError(f"{source}: unknown hparam '{key}'{hint}; known: {', '.join(names)}")


def _parse_value(key, text, expected):
    try:
        if expected is bool:
            lowered = text.lower()
            if lowered not in ("true", "false", "1", "0"):
                raise ValueError
            return lowered in ("true", "1")
        return expected(text)
    except ValueError:
        raise ValueError(
            f"--hparams: '{key}' expects {expected.__name__}, got '{text}'"
        ) from None


def load_config(run_dir):
    """Reads `<run_dir>/model_config.json`: returns (HParams, the whole config dict).

    Raises:
        FileNotFoundError / ValueError: naming the file, for a missing or malformed config.
    """
    path = os.path.join(run_dir, "model_config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no model_config.json in this run folder")
    try:
        with open(path) as f:
            config = json.load(f)
        hps = HParams.from_dict(config["hparams"], source=path)
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a model_config.json written by this project ({err})") from None
    return hps, config


# ---------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------


class _SavesSeedState:
    """Saves the layer's SeedGenerator state with its weights, so a resumed run draws the
    same dropout masks and z noise as one that never stopped."""

    def save_own_variables(self, store):
        super().save_own_variables(store)
        store["seed_state"] = ops.convert_to_numpy(self.seed_generator.state)

    def load_own_variables(self, store):
        own = self._trainable_variables + self._non_trainable_variables
        expected = [str(i) for i in range(len(own))]
        found = sorted(k for k in store.keys() if k != "seed_state")
        if sorted(expected) != found:
            raise ValueError(f"layer '{self.name}' expects {len(own)} variables, "
                             f"the file has {len(found)}")
        for i, variable in enumerate(own):
            variable.assign(store[str(i)])
        if "seed_state" in store.keys():
            self.seed_generator.state.assign(store["seed_state"])


@keras.saving.register_keras_serializable(package="sketch_rnn")
class SketchLSTM(_SavesSeedState, keras.layers.Layer):
    """LSTM with the official Sketch-RNN recurrent dropout and Keras-LSTM-compatible weights.

    The weights are exactly those of `keras.layers.LSTM` (kernel (D, 4H), recurrent_kernel
    (H, 4H), bias (4H), gates in the order i, f, c, o), so the same weights run on either path:

    - the default path, a loop over time in `keras.ops` whose input projection is done for
      all steps at once outside the loop; with `recurrent_dropout_keep < 1` it applies
      "recurrent dropout without memory loss" (Semeniuta et al. 2016) to the cell candidate,
      a fresh mask each step, as the official `LSTMCell` does;
    - `accelerate=True`: the backend's fused LSTM (cuDNN on a GPU). cuDNN has no recurrent
      dropout, so this path never drops; without a GPU it falls back to the default loop,
      also without dropout, so both devices compute the same function.

    Args:
        units: H, the size of the state.
        recurrent_dropout_keep: keep probability on the cell candidate while training.
        accelerate: use the fused (cuDNN) kernel where the backend has one.
        go_backwards: process the sequence from its last valid step to the first.
        return_sequences: also return every step's h, shape (B, T, H).
        seed: seed of the dropout masks.

    Call args:
        inputs: (B, T, D1). `constant`: optional (B, D2) appended to every step's input
        (the decoder's z); its projection is computed once per sequence.
        initial_state: optional [h, c], each (B, H). `step_mask`: optional (B, T) bool;
        masked steps carry the state through unchanged (right padding).

    Returns:
        (outputs (B, T, H), h, c) with return_sequences, else (h, c).
    """

    def __init__(self, units, recurrent_dropout_keep=1.0, accelerate=False,
                 go_backwards=False, return_sequences=False, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.recurrent_dropout_keep = recurrent_dropout_keep
        self.accelerate = accelerate
        self.go_backwards = go_backwards
        self.return_sequences = return_sequences
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, inputs_shape, constant_shape=None, **unused_shapes):
        input_dim = inputs_shape[-1] + (constant_shape[-1] if constant_shape else 0)
        self.kernel = self.add_weight(
            shape=(input_dim, 4 * self.units), initializer="glorot_uniform", name="kernel")
        self.recurrent_kernel = self.add_weight(
            shape=(self.units, 4 * self.units), initializer="orthogonal", name="recurrent_kernel")
        self.bias = self.add_weight(
            shape=(4 * self.units,), initializer=_unit_forget_bias(self.units), name="bias")

    def call(self, inputs, constant=None, initial_state=None, step_mask=None, training=False):
        batch = ops.shape(inputs)[0]
        if initial_state is None:
            zeros = ops.zeros((batch, self.units), dtype=inputs.dtype)
            initial_state = [zeros, zeros]
        if self.accelerate:
            result = self._fused(inputs, constant, initial_state, step_mask)
        if not self.accelerate or result is None:
            keep = self.recurrent_dropout_keep
            use_dropout = bool(training) and keep < 1.0 and not self.accelerate
            result = self._loop(inputs, constant, initial_state, step_mask, use_dropout)
        outputs, h, c = result
        return (outputs, h, c) if self.return_sequences else (h, c)

    def _loop(self, inputs, constant, initial_state, mask, use_dropout):
        input_dim = inputs.shape[-1]
        # The input projection of every step in one matmul: (B, T, 4H).
        projected = ops.matmul(inputs, self.kernel[:input_dim]) + self.bias
        if constant is not None:
            projected = projected + ops.expand_dims(ops.matmul(constant, self.kernel[input_dim:]), 1)
        steps = [ops.transpose(projected, (1, 0, 2))]  # (T, B, 4H)
        if mask is not None:
            steps.append(ops.expand_dims(ops.transpose(ops.cast(mask, inputs.dtype)), -1))
        if use_dropout:
            shape = (ops.shape(inputs)[1], ops.shape(inputs)[0], self.units)
            keep = self.recurrent_dropout_keep
            draw = keras.random.uniform(shape, seed=self.seed_generator, dtype=inputs.dtype)
            steps.append(ops.cast(draw < keep, inputs.dtype) / keep)
        recurrent_kernel = ops.convert_to_tensor(self.recurrent_kernel)

        def step(state, xs):
            h, c = state
            gates = xs[0] + ops.matmul(h, recurrent_kernel)
            i, f, g, o = ops.split(gates, 4, axis=-1)
            g = ops.tanh(g)
            if use_dropout:
                g = g * xs[-1]
            new_c = ops.sigmoid(f) * c + ops.sigmoid(i) * g
            new_h = ops.sigmoid(o) * ops.tanh(new_c)
            if mask is not None:
                keep_step = xs[1]  # (B, 1): 1 inside the sketch, 0 in its padding.
                new_h = keep_step * new_h + (1 - keep_step) * h
                new_c = keep_step * new_c + (1 - keep_step) * c
            return (new_h, new_c), (new_h, new_c)

        (h, c), (hs, _) = ops.scan(step, tuple(initial_state), tuple(steps),
                                    reverse=self.go_backwards)
        outputs = ops.transpose(hs, (1, 0, 2)) if self.return_sequences else None
        return outputs, h, c

    def _fused(self, inputs, constant, initial_state, mask):
        """The backend's fused LSTM (cuDNN), or None where it has none (CPU, other backends)."""
        # Keras has no public API for the fused kernel; this is the one its own LSTM layer uses
        # and it raises NotImplementedError where the backend or device has none.
        from keras.src import backend as keras_backend

        if constant is not None:
            steps = ops.shape(inputs)[1]
            repeated = ops.repeat(ops.expand_dims(constant, 1), steps, axis=1)
            inputs = ops.concatenate([inputs, repeated], axis=-1)
        try:
            last, outputs, (h, c) = keras_backend.lstm(
                inputs, initial_state[0], initial_state[1], mask,
                kernel=self.kernel, recurrent_kernel=self.recurrent_kernel, bias=self.bias,
                activation=keras.activations.tanh, recurrent_activation=keras.activations.sigmoid,
                return_sequences=self.return_sequences, go_backwards=self.go_backwards)
        except NotImplementedError:
            return None
        return (outputs if self.return_sequences else None), h, c

    def compute_output_spec(self, inputs, constant=None, initial_state=None, step_mask=None,
                            training=False):
        batch, steps = inputs.shape[0], inputs.shape[1]
        state = keras.KerasTensor((batch, self.units), dtype=inputs.dtype)
        if not self.return_sequences:
            return state, state
        return keras.KerasTensor((batch, steps, self.units), dtype=inputs.dtype), state, state

    def get_config(self):
        config = super().get_config()
        config.update({
            "units": self.units, "recurrent_dropout_keep": self.recurrent_dropout_keep,
            "accelerate": self.accelerate, "go_backwards": self.go_backwards,
            "return_sequences": self.return_sequences, "seed": self.seed,
        })
        return config


def _unit_forget_bias(units):
    """Bias initialiser: 1 on the forget gate, as the official cell's forget_bias=1.0."""

    def init(shape, dtype=None):
        return ops.concatenate([ops.zeros((units,)), ops.ones((units,)),
                                ops.zeros((2 * units,))])

    return init


@keras.saving.register_keras_serializable(package="sketch_rnn")
class LatentSample(_SavesSeedState, keras.layers.Layer):
    """z = mu + sigma * N(0, I) with sigma = exp(presig / 2) (eq. 2); adds the KL loss.

    The KL term (eq. 10) is averaged over the batch and the z dimensions, as the official
    code does, floored at `kl_tolerance` (eq. 11), and added with `add_loss` weighted by the
    non-trainable variable `kl_weight`, which `callbacks.KLWeightAnnealing` sets each step.
    The unfloored KL is tracked as the metric `kl_loss`.

    Call args: [z_mean (B, Nz), z_log_var (B, Nz)] (the paper's mu and sigma-hat).
    Returns: z, (B, Nz).
    """

    def __init__(self, kl_tolerance=0.2, kl_weight=0.5, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.kl_tolerance = kl_tolerance
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.kl_weight = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(kl_weight), trainable=False,
            name="kl_weight")
        self.kl_tracker = keras.metrics.Mean(name="kl_loss")

    def call(self, inputs):
        z_mean, z_log_var = inputs
        kl = kl_divergence(z_mean, z_log_var)
        self.add_loss(self.kl_weight * ops.maximum(kl, self.kl_tolerance))
        self.kl_tracker.update_state(kl)
        epsilon = keras.random.normal(ops.shape(z_mean), seed=self.seed_generator)
        return z_mean + ops.exp(z_log_var / 2) * epsilon

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        config = super().get_config()
        config.update({"kl_tolerance": self.kl_tolerance,
                       "kl_weight": float(ops.convert_to_numpy(self.kl_weight)),
                       "seed": self.seed})
        return config


# ---------------------------------------------------------------------------------------
# Mixture-density math
# ---------------------------------------------------------------------------------------


def kl_divergence(z_mean, z_log_var):
    """KL(N(mu, sigma) || N(0, I)) as the official code: mean over batch and z dims (eq. 10)."""
    return -0.5 * ops.mean(1 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var))


def get_mixture_coef(params, num_mixture):
    """Splits the decoder head's output (eq. 3-4).

    Args:
        params: (..., 6M + 3): 3 pen logits, then M each of pi logits, mu_x, mu_y,
            log sigma_x, log sigma_y and the pre-tanh correlation.

    Returns:
        dict of (..., M) tensors `pi_logits`, `mu_x`, `mu_y`, `log_sigma_x`, `log_sigma_y`,
        `rho` (tanh applied), and `pen_logits` (..., 3).
    """
    m = num_mixture
    return {
        "pen_logits": params[..., :3],
        "pi_logits": params[..., 3:3 + m],
        "mu_x": params[..., 3 + m:3 + 2 * m],
        "mu_y": params[..., 3 + 2 * m:3 + 3 * m],
        "log_sigma_x": params[..., 3 + 3 * m:3 + 4 * m],
        "log_sigma_y": params[..., 3 + 4 * m:3 + 5 * m],
        "rho": ops.tanh(params[..., 3 + 5 * m:3 + 6 * m]),
    }


def bivariate_normal_log_pdf(x, y, mu_x, mu_y, log_sigma_x, log_sigma_y, rho):
    """log N(x, y | mu, sigma, rho) of a bivariate normal (eq. 24-25 of Graves 2013)."""
    norm_x = (x - mu_x) * ops.exp(-log_sigma_x)
    norm_y = (y - mu_y) * ops.exp(-log_sigma_y)
    one_minus_rho2 = 1 - ops.square(rho)
    z = ops.square(norm_x) + ops.square(norm_y) - 2 * rho * norm_x * norm_y
    return (-z / (2 * one_minus_rho2) - math.log(2 * math.pi) - log_sigma_x - log_sigma_y
            - 0.5 * ops.log(one_minus_rho2))


def reconstruction_loss(targets, params, num_mixture, max_seq_len, mask_pen=False):
    """L_R = L_s + L_p (eq. 9), normalised as the official code: sum / (B * max_seq_len).

    L_s is -log(sum_j pi_j N(dx, dy | j) + 1e-6), the official epsilon, computed in log
    space; it is zero after the sketch's last point. L_p is the pen-state cross-entropy over
    every step (the model learns where to stop); `mask_pen` zeroes it after the last point
    too, as the official code does when evaluating.

    Args:
        targets: stroke-5 targets (B, T, 5), T <= max_seq_len (shorter batches are trimmed
            end-padding and are normalised by max_seq_len all the same).
        params: the decoder head's output (B, T, 6M + 3).

    Returns:
        a scalar.
    """
    targets = ops.cast(targets, "float32")
    params = ops.cast(params, "float32")
    coef = get_mixture_coef(params, num_mixture)
    dx, dy = targets[..., 0:1], targets[..., 1:2]
    pen = targets[..., 2:5]
    log_pi = ops.log_softmax(coef["pi_logits"], axis=-1)
    log_density = log_pi + bivariate_normal_log_pdf(
        dx, dy, coef["mu_x"], coef["mu_y"], coef["log_sigma_x"], coef["log_sigma_y"], coef["rho"])
    log_mixture = ops.logsumexp(log_density, axis=-1)  # (B, T)
    offset_loss = -ops.logaddexp(log_mixture, math.log(1e-6))
    inside = 1.0 - pen[..., 2]  # 1 up to the last point, 0 after the sketch's end
    pen_loss = -ops.sum(pen * ops.log_softmax(coef["pen_logits"], axis=-1), axis=-1)
    if mask_pen:
        pen_loss = pen_loss * inside
    total = ops.sum(offset_loss * inside + pen_loss)
    return total / ops.cast(ops.shape(targets)[0] * max_seq_len, "float32")


# ---------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="sketch_rnn")
class SketchRNN(keras.Model):
    """The Sketch-RNN VAE: a functional model whose loss is L_R + w_KL * max(L_KL, tol) (eq. 11).

    Build it with `build_model(hps)`. Inputs: stroke-5 batches with the start token,
    (B, T + 1, 5); output: the mixture parameters (B, T, 6M + 3). The reconstruction loss is
    computed in `compute_loss` from the targets y = x[:, 1:]; the KL term comes from the
    `LatentSample` layer's `add_loss`.
    """

    def __init__(self, inputs, outputs, hps, **kwargs):
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.hps = hps
        self.reconstruction_tracker = keras.metrics.Mean(name="reconstruction_loss")

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        recon = reconstruction_loss(y, y_pred, self.hps.num_mixture, self.hps.max_seq_len,
                                    mask_pen=not training)
        self.reconstruction_tracker.update_state(recon)
        return recon + ops.sum(self.losses) if self.losses else recon

    def get_config(self):
        return {"hps": self.hps.to_dict(), "name": self.name}

    @classmethod
    def from_config(cls, config):
        return build_model(HParams.from_dict(config["hps"]))


def build_model(hps):
    """Builds the (uncompiled) Sketch-RNN model for `hps`.

    Args:
        hps: HParams.

    Returns:
        a `SketchRNN` with named layers: encoder_fw, encoder_bw, z_mean, z_log_var, latent,
        decoder_init (conditional only), decoder_lstm, mixture_head.
    """
    keep = hps.recurrent_dropout_prob if hps.use_recurrent_dropout else 1.0
    seeds = np.random.SeedSequence(hps.seed).generate_state(4)
    strokes = keras.Input(shape=(None, 5), name="strokes")  # (B, T + 1, 5)
    decoder_input = strokes[:, :-1, :]  # S0, S1, ..., S_{T-1}
    if hps.conditional:
        target = strokes[:, 1:, :]  # the sketch itself, (B, T, 5)
        inside = ops.equal(target[..., 4], 0.0)  # (B, T) bool, True on the sketch's points
        z_mean, z_log_var = _encoder(hps, keep, seeds)(target, inside)
        z = LatentSample(hps.kl_tolerance, hps.kl_weight, seed=int(seeds[0]), name="latent")(
            [z_mean, z_log_var])
        h0, c0 = decoder_initial_state(hps)(z)
        outputs, _, _ = _decoder_lstm(hps, keep, seeds)(
            decoder_input, constant=z, initial_state=[h0, c0])
    else:
        outputs, _, _ = _decoder_lstm(hps, keep, seeds)(decoder_input)
    params = keras.layers.Dense(6 * hps.num_mixture + 3, name="mixture_head")(outputs)
    return SketchRNN(strokes, params, hps, name="sketch_rnn")


def _encoder(hps, keep, seeds):
    forward = SketchLSTM(hps.enc_rnn_size, keep, hps.accelerate_LSTM, seed=int(seeds[1]),
                         name="encoder_fw")
    backward = SketchLSTM(hps.enc_rnn_size, keep, hps.accelerate_LSTM, go_backwards=True,
                          seed=int(seeds[2]), name="encoder_bw")
    mean_head = keras.layers.Dense(hps.z_size, name="z_mean")
    # The official presig head starts near zero (gaussian init, stddev 0.001).
    log_var_head = keras.layers.Dense(
        hps.z_size, kernel_initializer=keras.initializers.RandomNormal(stddev=0.001),
        name="z_log_var")

    def encode(sketch, inside):
        h_fw, _ = forward(sketch, step_mask=inside)
        h_bw, _ = backward(sketch, step_mask=inside)
        h = ops.concatenate([h_fw, h_bw], axis=-1)  # (B, 2 * enc_rnn_size)
        return mean_head(h), log_var_head(h)

    return encode


def decoder_initial_state(hps):
    """[h0, c0] = split(tanh(W_z z + b_z)) (eq. 4); returns a function of z."""
    dense = keras.layers.Dense(
        2 * hps.dec_rnn_size, activation="tanh",
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.001), name="decoder_init")

    def initial_state(z):
        state = dense(z)
        return state[:, :hps.dec_rnn_size], state[:, hps.dec_rnn_size:]

    return initial_state


def _decoder_lstm(hps, keep, seeds):
    return SketchLSTM(hps.dec_rnn_size, keep, hps.accelerate_LSTM, return_sequences=True,
                      seed=int(seeds[3]), name="decoder_lstm")


def compile_model(model, hps):
    """Compiles with Adam and per-value gradient clipping at grad_clip, as the official code.

    The learning rate starts at hps.learning_rate; `callbacks.LearningRateDecay` sets it each
    step. epsilon=1e-8 is TF1's Adam default, which the official code used.
    """
    optimizer = keras.optimizers.Adam(learning_rate=hps.learning_rate, epsilon=1e-8,
                                      clipvalue=hps.grad_clip if hps.grad_clip > 0 else None)
    model.compile(optimizer=optimizer)
    return model
