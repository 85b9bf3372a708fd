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
import functools
import json
import math
import os

import keras
import numpy as np
from keras import ops

import fused_lstm
import utils

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
    # Speed (not in the official code).
    bucket_batches: int = 0  # Batch sketches of similar length from pools of this many
    # batches and cut each batch after its longest sketch (about 1.7x faster, but it drops the
    # pen loss after each batch's longest sketch: not the official objective; see README).
    # 0 pads every batch to max_seq_len as the official code.
    custom_lstm_gradient: bool = True  # The LSTM's hand-written backward pass (else autodiff).
    fused_lstm_cell: bool = True  # With custom_lstm_gradient: each LSTM step's element-wise
    # work in one compiled C++ op (fused_lstm.py; built on first use, TensorFlow ops if it can't be).
    lstm_matmul_dtype: str = "auto"  # The LSTM's recurrent matmuls: float32, bfloat16, or auto
    # (bfloat16 where the CPU computes it natively: AVX512-BF16 or AMX; else float32).
    jit_compile: bool = False  # Compile the train step with XLA.

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
        for key, value in self.to_dict().items():
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{source}: hparam '{key}' must be a finite number, got {value}")
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
        if self.lstm_matmul_dtype not in ("auto", "float32", "bfloat16"):
            raise ValueError(f"{source}: hparam 'lstm_matmul_dtype' must be auto, float32 or "
                             f"bfloat16, got {self.lstm_matmul_dtype!r}")
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
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
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

    - the default path, a loop over time whose input projection is done for all steps at
      once outside the loop (`lstm_recurrence`: on TensorFlow with a hand-written backward
      pass, else `lstm_recurrence_autodiff`); with `recurrent_dropout_keep < 1` it applies
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
        custom_gradient: use `lstm_recurrence` (hand-written backward) rather than autodiff.
        matmul_dtype: None, or "bfloat16" for the recurrent matmuls.
        fused_cell: with custom_gradient, run each step's element-wise work as one compiled
            op (`fused_lstm`) where it builds; such a layer cannot be compiled with XLA.

    Call args:
        inputs: (B, T, D1). `constant`: optional (B, D2) appended to every step's input
        (the decoder's z); its projection is computed once per sequence.
        initial_state: optional [h, c], each (B, H). `step_mask`: optional (B, T) bool;
        masked steps carry the state through unchanged (right padding). A masked batch is
        run longest sequence first, so that the fused cell multiplies only the rows still
        inside a sequence, and its results are returned in the input's order.

    Returns:
        (outputs (B, T, H), h, c) with return_sequences, else (h, c).
    """

    def __init__(self, units, recurrent_dropout_keep=1.0, accelerate=False,
                 go_backwards=False, return_sequences=False, seed=None, custom_gradient=True,
                 matmul_dtype=None, fused_cell=False, **kwargs):
        super().__init__(**kwargs)
        self.custom_gradient = custom_gradient
        self.fused_cell = fused_cell
        if fused_cell and custom_gradient:
            self.supports_jit = False  # a custom op: Keras must not pick XLA for this model
        self.matmul_dtype = matmul_dtype
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
            result = self._backend_kernel(inputs, constant, initial_state, step_mask)
        if not self.accelerate or result is None:
            keep = self.recurrent_dropout_keep
            use_dropout = bool(training) and keep < 1.0 and not self.accelerate
            result = self._loop(inputs, constant, initial_state, step_mask, use_dropout)
        outputs, h, c = result
        return (outputs, h, c) if self.return_sequences else (h, c)

    def _loop(self, inputs, constant, initial_state, mask, use_dropout):
        if mask is None:
            return self._run_loop(inputs, constant, initial_state, mask, use_dropout)
        # Longest sequences first: then the rows still inside a sequence at any step come
        # first, and the fused recurrence multiplies only those (padding is half the steps of
        # a typical batch). The result is the same in any order; the dropout masks are drawn
        # for the sorted rows.
        mask = ops.cast(mask, "bool")
        order = ops.argsort(-ops.sum(ops.cast(mask, "int32"), axis=1))
        rows = functools.partial(ops.take, indices=order, axis=0)
        outputs, h, c = self._run_loop(
            rows(inputs), None if constant is None else rows(constant),
            [rows(state) for state in initial_state], rows(mask), use_dropout)
        restore = functools.partial(ops.take, indices=ops.argsort(order), axis=0)
        return None if outputs is None else restore(outputs), restore(h), restore(c)

    def _run_loop(self, inputs, constant, initial_state, mask, use_dropout):
        input_dim = inputs.shape[-1]
        # The input projection of every step in one matmul, time-major: (T, B, 4H). The
        # inputs are transposed, not the projection, which is 4H / D times larger.
        projected = ops.matmul(ops.transpose(inputs, (1, 0, 2)), self.kernel[:input_dim])
        addend = self.bias  # the same every step: the bias, plus z's projection in the decoder
        if constant is not None:
            addend = ops.matmul(constant, self.kernel[input_dim:]) + self.bias
        projected = add_over_time(projected, addend)
        step_mask = None if mask is None else ops.expand_dims(ops.transpose(ops.cast(mask, "bool")), -1)
        dropout = None
        if use_dropout:
            shape = (ops.shape(inputs)[1], ops.shape(inputs)[0], self.units)
            keep = self.recurrent_dropout_keep
            draw = keras.random.uniform(shape, seed=self.seed_generator, dtype=inputs.dtype)
            dropout = ops.cast(draw < keep, inputs.dtype) / keep
        if self.custom_gradient:
            recurrence = functools.partial(lstm_recurrence, fused=self.fused_cell)
        else:
            recurrence = lstm_recurrence_autodiff
        hs, h, c = recurrence(projected, self.recurrent_kernel, initial_state[0], initial_state[1],
                              step_mask, dropout, reverse=self.go_backwards,
                              matmul_dtype=self.matmul_dtype)
        outputs = ops.transpose(hs, (1, 0, 2)) if self.return_sequences else None
        return outputs, h, c

    def _backend_kernel(self, inputs, constant, initial_state, mask):
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
        # Two distinct tensors: a functional model maps each output by its tensor, so one
        # tensor returned twice would make h read as c.
        h, c = (keras.KerasTensor((batch, self.units), dtype=inputs.dtype) for _ in range(2))
        if not self.return_sequences:
            return h, c
        return keras.KerasTensor((batch, steps, self.units), dtype=inputs.dtype), h, c

    def get_config(self):
        config = super().get_config()
        config.update({
            "units": self.units, "recurrent_dropout_keep": self.recurrent_dropout_keep,
            "accelerate": self.accelerate, "go_backwards": self.go_backwards,
            "return_sequences": self.return_sequences, "seed": self.seed,
            "custom_gradient": self.custom_gradient, "matmul_dtype": self.matmul_dtype,
            "fused_cell": self.fused_cell,
        })
        return config


def add_over_time(sequence, addend):
    """sequence (T, B, D) + addend, (D) or (B, D), the same at every step.

    On TensorFlow the gradient of `addend` (a sum over T, or T and B) is a matmul with a row
    of ones: several times faster on a CPU than the reduction autodiff uses.
    """
    if keras.backend.backend() != "tensorflow":
        return sequence + addend
    import tensorflow as tf

    @tf.custom_gradient
    def add(sequence, addend):
        def grad(d_sum):
            flat = tf.reshape(d_sum, (-1, tf.size(addend)))  # (T, B * D) or (T * B, D)
            ones = tf.ones((1, tf.shape(flat)[0]), d_sum.dtype)
            return d_sum, tf.reshape(tf.matmul(ones, flat), tf.shape(addend))

        return sequence + addend, grad

    # A tensor, not the variable: tf.custom_gradient would otherwise want variable gradients.
    return add(sequence, tf.identity(ops.convert_to_tensor(addend, sequence.dtype)))


def _scan(step, init, xs, reverse=False):
    """`keras.ops.scan` semantics: `step(carry, x_t) -> (carry, y_t)` over axis 0 of `xs`.

    On TensorFlow this is a plain `tf.while_loop` over TensorArrays: Keras's TF scan
    needs y_t shaped like the carry and fails when the number of steps is unknown at trace
    time, which it is for length-bucketed batches.
    """
    if keras.backend.backend() != "tensorflow":
        return ops.scan(step, init, xs, reverse=reverse)
    import tensorflow as tf

    xs = tuple(xs)
    steps = tf.shape(xs[0])[0]
    inputs = [tf.TensorArray(x.dtype, size=steps).unstack(x) for x in xs]
    _, first_ys = step(init, tuple(x[0] for x in xs))  # traced once for the output structure
    outputs = [tf.TensorArray(y.dtype, size=steps, element_shape=y.shape) for y in first_ys]

    def body(t, carry, outputs):
        index = steps - 1 - t if reverse else t
        carry, ys = step(carry, tuple(x.read(index) for x in inputs))
        return t + 1, carry, [out.write(index, y) for out, y in zip(outputs, ys)]

    _, carry, outputs = tf.while_loop(lambda t, *_: t < steps, body, (0, init, outputs),
                                      maximum_iterations=steps)  # which XLA needs
    return carry, tuple(out.stack() for out in outputs)


def _lstm_step(projected_t, h, c, recurrent_kernel, inside_t, dropout_t, matmul_dtype):
    """One LSTM step (autodiff path and sampling loop); `inside_t` (B, 1) bool is False on padding, where
    the state passes through unchanged."""
    gates = projected_t + _recurrent_matmul(h, recurrent_kernel, matmul_dtype)
    i, f, g, o = ops.split(gates, 4, axis=-1)
    candidate = ops.tanh(g) if dropout_t is None else ops.tanh(g) * dropout_t
    new_c = ops.sigmoid(f) * c + ops.sigmoid(i) * candidate
    new_h = ops.sigmoid(o) * ops.tanh(new_c)
    if inside_t is not None:
        new_h, new_c = ops.where(inside_t, new_h, h), ops.where(inside_t, new_c, c)
    return new_h, new_c


def _recurrent_matmul(h, recurrent_kernel, matmul_dtype):
    """h @ U; with `matmul_dtype` (bfloat16 on AVX512-BF16 or AMX) h is rounded to it, and U must already
    be in it (cast once per sequence, not once per step)."""
    if matmul_dtype is None:
        return ops.matmul(h, recurrent_kernel)
    return ops.cast(ops.matmul(ops.cast(h, matmul_dtype), recurrent_kernel), h.dtype)


def _matmul_operand(kernel, matmul_dtype):
    return kernel if matmul_dtype is None else ops.cast(kernel, matmul_dtype)


def lstm_recurrence_autodiff(projected, recurrent_kernel, h0, c0, step_mask=None, dropout=None,
                             reverse=False, matmul_dtype=None):
    """The LSTM recurrence as a `keras.ops.scan`, differentiated by the backend.

    Args:
        projected: x_t W + b for every step, time-major (T, B, 4H).
        recurrent_kernel: U, (H, 4H). h0, c0: (B, H).
        step_mask: optional (T, B, 1) bool, True inside the sequence and False on padding
            (the state passes through padding unchanged).
        dropout: optional (T, B, H) mask, already divided by the keep probability,
            multiplied into the cell candidate (recurrent dropout without memory loss).
        reverse: run from the last step to the first.
        matmul_dtype: optional dtype (e.g. "bfloat16") for the recurrent matmul.

    Returns:
        (hs (T, B, H) in input order, h_T, c_T).
    """
    recurrent_kernel = _matmul_operand(ops.convert_to_tensor(recurrent_kernel), matmul_dtype)
    xs = (projected,) + tuple(t for t in (step_mask, dropout) if t is not None)

    def step(state, inputs):
        inside_t = inputs[1] if step_mask is not None else None
        dropout_t = inputs[-1] if dropout is not None else None
        h, c = _lstm_step(inputs[0], *state, recurrent_kernel, inside_t, dropout_t, matmul_dtype)
        return (h, c), (h,)

    (h, c), (hs,) = _scan(step, (h0, c0), xs, reverse=reverse)
    return hs, h, c


def lstm_recurrence(projected, recurrent_kernel, h0, c0, step_mask=None, dropout=None,
                    reverse=False, matmul_dtype=None, fused=False):
    """The LSTM recurrence with a hand-written backward pass (same arguments and results as
    `lstm_recurrence_autodiff`, which the tests compare it with; other backends use that).

    With `fused`, each step's element-wise work (forward and backward) is one compiled op
    (`fused_lstm`, where it builds: TensorFlow on a CPU); the loops and matmuls are the same.

    The forward loop stores h, c and the gates' sigmoids; the backward loop's only matmul is
    dh_{t-1} = dgates_t U^T, and dU = sum_t h_{t-1}^T dgates_t is one large matmul after it,
    as cuDNN does, instead of a small matmul per step plus the bookkeeping of a
    differentiated loop. Both loops read their step of each input by index rather than
    unstacking whole sequences, and tanh(g) is taken as 2 sigmoid(2g) - 1 so that one
    sigmoid covers all four gates.
    """
    if keras.backend.backend() != "tensorflow":
        return lstm_recurrence_autodiff(projected, recurrent_kernel, h0, c0, step_mask, dropout,
                                        reverse, matmul_dtype)
    import tensorflow as tf

    key = (step_mask is not None, dropout is not None, reverse, matmul_dtype)
    # Not converted by AutoGraph when called inside a tf.function: it may run the compiler.
    module = tf.autograph.experimental.do_not_convert(fused_lstm.load)() if fused else None
    variant = (module is not None, *key)
    if variant not in _RECURRENCES:  # one function per variant, built once
        make = functools.partial(fused_lstm.make_recurrence, module) if module else _make_tf_recurrence
        _RECURRENCES[variant] = make(*key)
    function = _RECURRENCES[variant]

    # A tensor, not the variable: tf.custom_gradient would otherwise want variable gradients.
    kernel = tf.identity(ops.convert_to_tensor(recurrent_kernel))
    tensors = [projected, kernel, h0, c0]
    return function(*tensors, *(t for t in (step_mask, dropout) if t is not None))


_RECURRENCES = {}


def _make_tf_recurrence(has_mask, has_dropout, reverse, matmul_dtype):
    import tensorflow as tf

    @tf.custom_gradient
    def recurrence(projected, recurrent_kernel, h0, c0, *extra):
        steps = tf.shape(projected)[0]
        units = tf.shape(h0)[-1]
        inside = extra[0] if has_mask else None  # (T, B, 1) bool
        dropout = extra[-1] if has_dropout else None  # (T, B, H)
        kernel = _matmul_operand(recurrent_kernel, matmul_dtype)
        # sigmoid(2x) on the candidate's columns, for tanh(x) = 2 sigmoid(2x) - 1.
        gate_scale = tf.repeat(tf.constant([1.0, 1.0, 2.0, 1.0], projected.dtype), units)

        def body(t, h, c, hs, cs, sigmoids):
            k = steps - 1 - t if reverse else t
            sigmoid = tf.sigmoid((projected[k] + _recurrent_matmul(h, kernel, matmul_dtype)) * gate_scale)
            i, f, g2, o = tf.split(sigmoid, 4, axis=-1)
            candidate = 2 * g2 - 1
            if has_dropout:
                candidate = candidate * dropout[k]
            new_c = f * c + i * candidate
            new_h = o * tf.tanh(new_c)
            if has_mask:
                new_h, new_c = tf.where(inside[k], new_h, h), tf.where(inside[k], new_c, c)
            return t + 1, new_h, new_c, hs.write(k, new_h), cs.write(k, new_c), sigmoids.write(k, sigmoid)

        arrays = [tf.TensorArray(projected.dtype, size=steps) for _ in range(3)]
        _, h, c, hs, cs, sigmoids = tf.while_loop(
            lambda t, *_: t < steps, body, (0, h0, c0, *arrays), maximum_iterations=steps)
        hs, cs, sigmoids = hs.stack(), cs.stack(), sigmoids.stack()

        def grad(d_hs, d_h, d_c):
            # Dense: a gather of the rows (SketchLSTM's sort) sends back IndexedSlices.
            d_h = tf.zeros_like(h0) if d_h is None else tf.convert_to_tensor(d_h)
            d_c = tf.zeros_like(c0) if d_c is None else tf.convert_to_tensor(d_c)
            d_hs = None if d_hs is None else tf.convert_to_tensor(d_hs)
            # The state each step started from: the previous step's output, or h0 / c0.
            if reverse:
                h_prev, c_prev = tf.concat([hs[1:], h0[None]], 0), tf.concat([cs[1:], c0[None]], 0)
            else:
                h_prev, c_prev = tf.concat([h0[None], hs[:-1]], 0), tf.concat([c0[None], cs[:-1]], 0)
            kernel_t = _matmul_operand(tf.transpose(recurrent_kernel), matmul_dtype)

            def back(t, dh, dc, d_gates):
                k = t if reverse else steps - 1 - t  # the forward loop's steps, backwards
                i, f, g2, o = tf.split(sigmoids[k], 4, axis=-1)
                g = 2 * g2 - 1
                tanh_c = tf.tanh(cs[k])
                if d_hs is not None:
                    dh = dh + d_hs[k]
                if has_mask:  # on padding, dh and dc pass through to the step before
                    dh_skip, dc_skip = dh, dc
                    dh = tf.where(inside[k], dh, 0.0)
                    dc = tf.where(inside[k], dc, 0.0)
                dc = dc + dh * o * (1 - tf.square(tanh_c))
                d_candidate = dc * i
                if has_dropout:
                    d_candidate = d_candidate * dropout[k]
                    g_dropped = g * dropout[k]
                else:
                    g_dropped = g
                d_gates_k = tf.concat([dc * g_dropped * i * (1 - i), dc * c_prev[k] * f * (1 - f),
                                       d_candidate * (1 - tf.square(g)), dh * tanh_c * o * (1 - o)], -1)
                dh_prev, dc_prev = _recurrent_matmul(d_gates_k, kernel_t, matmul_dtype), dc * f
                if has_mask:
                    dh_prev = tf.where(inside[k], dh_prev, dh_skip)
                    dc_prev = tf.where(inside[k], dc_prev, dc_skip)
                return t + 1, dh_prev, dc_prev, d_gates.write(k, d_gates_k)

            d_gates = tf.TensorArray(projected.dtype, size=steps)
            _, dh0, dc0, d_gates = tf.while_loop(
                lambda t, *_: t < steps, back, (0, d_h, d_c, d_gates), maximum_iterations=steps)
            d_gates = d_gates.stack()
            h_flat, d_gates_flat = tf.reshape(h_prev, (-1, units)), tf.reshape(d_gates, (-1, 4 * units))
            if matmul_dtype is not None:
                h_flat, d_gates_flat = tf.cast(h_flat, matmul_dtype), tf.cast(d_gates_flat, matmul_dtype)
            d_kernel = tf.cast(tf.matmul(h_flat, d_gates_flat, transpose_a=True), projected.dtype)
            return (d_gates, d_kernel, dh0, dc0) + (None,) * len(extra)

        return (hs, h, c), grad

    return recurrence


def _unit_forget_bias(units):
    """Bias initialiser: 1 on the forget gate, as the official cell's forget_bias=1.0."""

    def init(shape, dtype=None):
        dtype = dtype or "float32"
        return ops.concatenate([ops.zeros((units,), dtype), ops.ones((units,), dtype),
                                ops.zeros((2 * units,), dtype)])

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
        self.kl_tracker.update_state(kl, sample_weight=ops.shape(z_mean)[0])
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
    # One split, not seven slices: its gradient is one concatenation, where each slice's
    # gradient would be a params-sized tensor of zeros.
    parts = ops.split(params, [3 + i * m for i in range(6)], axis=-1)
    names = ("pen_logits", "pi_logits", "mu_x", "mu_y", "log_sigma_x", "log_sigma_y", "rho")
    coef = dict(zip(names, parts))
    coef["rho"] = ops.tanh(coef["rho"])
    return coef


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
        # Weighted by batch size, as Keras weights `loss`, so a smaller last batch counts less.
        self.reconstruction_tracker.update_state(recon, sample_weight=ops.shape(y)[0])
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


def resolved_matmul_dtype(hps):
    """hps.lstm_matmul_dtype with "auto" resolved for this machine."""
    if hps.lstm_matmul_dtype != "auto":
        return hps.lstm_matmul_dtype
    return "bfloat16" if _cpu_has_native_bfloat16() else "float32"


def _cpu_has_native_bfloat16():
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:  # not Linux: do not guess
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def _lstm_options(hps):
    matmul_dtype = resolved_matmul_dtype(hps)
    matmul_dtype = None if matmul_dtype == "float32" else matmul_dtype
    # XLA cannot compile the fused cell's custom op.
    return {"accelerate": hps.accelerate_LSTM, "custom_gradient": hps.custom_lstm_gradient,
            "matmul_dtype": matmul_dtype,
            "fused_cell": hps.fused_lstm_cell and not hps.jit_compile}


def _encoder(hps, keep, seeds):
    forward = SketchLSTM(hps.enc_rnn_size, keep, seed=int(seeds[1]), name="encoder_fw",
                         **_lstm_options(hps))
    backward = SketchLSTM(hps.enc_rnn_size, keep, go_backwards=True, seed=int(seeds[2]),
                          name="encoder_bw", **_lstm_options(hps))
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
    return SketchLSTM(hps.dec_rnn_size, keep, return_sequences=True, seed=int(seeds[3]),
                      name="decoder_lstm", **_lstm_options(hps))


def compile_model(model, hps):
    """Compiles with Adam and per-value gradient clipping at grad_clip, as the official code.

    The learning rate starts at hps.learning_rate; `callbacks.LearningRateDecay` sets it each
    step. epsilon=1e-8 is TF1's Adam default, which the official code used.
    """
    optimizer = keras.optimizers.Adam(learning_rate=hps.learning_rate, epsilon=1e-8,
                                      clipvalue=hps.grad_clip if hps.grad_clip > 0 else None)
    model.compile(optimizer=optimizer, jit_compile=hps.jit_compile)
    return model


# ---- Drawing: sub-models and sampling ----
#
# What a trained model needs to draw: encoder and decoder sub-models that share its layers,
# one sampling step of the mixture density with temperature, and `SketchRNNDrawer`, which
# loads a run folder and samples whole batches of sketches in one compiled loop. Stroke
# formats and pictures (SVG, PNG, GIF) live in utils.py.



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
    hps, config = load_config(run_dir)
    config_path = os.path.join(run_dir, "model_config.json")
    scale_factor = config.get("scale_factor")
    if not isinstance(scale_factor, (int, float)) or not scale_factor > 0:
        raise ValueError(f"{config_path}: expected a positive 'scale_factor', got {scale_factor!r}")
    if checkpoint is None:
        checkpoint = _default_checkpoint(run_dir)
    elif not os.path.isfile(checkpoint):
        raise FileNotFoundError(f"{checkpoint}: no such checkpoint file")
    # An uncompiled model has no optimizer, so Keras loads the layers' weights and leaves
    # the optimizer state of a training checkpoint unread.
    model = build_model(hps)
    try:
        model.load_weights(checkpoint)
    except (ValueError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"cannot load {checkpoint} into the model of {config_path} ({first})") from None
    return SketchRNNDrawer(model, scale_factor=float(scale_factor),
                           data_sets=config.get("data_set", []), jit_compile=jit_compile)


def _default_checkpoint(run_dir):
    """checkpoints/best.weights.h5 if there is one, else the newest step checkpoint."""
    from callbacks import list_checkpoints  # checkpoint names live beside the code writing them

    folder = os.path.join(run_dir, "checkpoints")
    best = os.path.join(folder, "best.weights.h5")
    if os.path.isfile(best):
        return best
    found = list_checkpoints(folder)
    if not found:
        raise FileNotFoundError(f"{run_dir}: no checkpoint to draw with (expected "
                                "checkpoints/best.weights.h5 or checkpoints/ckpt-*.weights.h5)")
    return found[-1][2]


def encoder_model(model):
    """The encoder of a conditional SketchRNN as a model of its own, sharing its weights.

    Args:
        model: a SketchRNN from `build_model` with conditional=True.

    Returns:
        a keras.Model: stroke-5 sketches with the start token (B, T + 1, 5) ->
        [z_mean, z_log_var], each (B, Nz) (the paper's mu and sigma-hat, eq. 2).
    """
    _require_conditional(model, "has no encoder")
    return keras.Model(model.input, [model.get_layer("z_mean").output,
                                     model.get_layer("z_log_var").output], name="encoder")


def initial_state_model(model):
    """z (B, Nz) -> [h0, c0], each (B, H): the decoder's initial state (eq. 4), shared weights."""
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
    lstm, head = model.get_layer("decoder_lstm"), model.get_layer("mixture_head")
    inputs = keras.Input((None, 5), name="decoder_inputs")
    if not hps.conditional:
        outputs, _, _ = lstm(inputs)
        return keras.Model(inputs, head(outputs), name="decoder")
    z = keras.Input((hps.z_size,), name="z")
    outputs, _, _ = lstm(inputs, constant=z, initial_state=list(_initial_state(model, z)))
    return keras.Model([inputs, z], head(outputs), name="decoder")


def decoder_step_model(model):
    """One decoder step with its state as inputs and outputs, sharing the model's weights.

    Args:
        model: a SketchRNN from `build_model`.

    Returns:
        a keras.Model [point (B, 1, 5), z (B, Nz), h (B, H), c (B, H)] ->
        [params (B, 1, 6M + 3), h, c]; unconditional models have no z input. Start from the
        start token with `initial_state_model`'s state (zeros when unconditional).
    """
    hps = model.hps
    lstm, head = model.get_layer("decoder_lstm"), model.get_layer("mixture_head")
    point = keras.Input((1, 5), name="point")
    h = keras.Input((hps.dec_rnn_size,), name="h")
    c = keras.Input((hps.dec_rnn_size,), name="c")
    if hps.conditional:
        z = keras.Input((hps.z_size,), name="z")
        outputs, _, new_c = lstm(point, constant=z, initial_state=[h, c])
        inputs = [point, z, h, c]
    else:
        outputs, _, new_c = lstm(point, initial_state=[h, c])
        inputs = [point, h, c]
    new_h = outputs[:, 0]  # the one step's output is the new h
    return keras.Model(inputs, [head(outputs), new_h, new_c], name="decoder_step")


def _initial_state(model, z):
    # As `decoder_initial_state`: h0 is the first half of tanh(W_z z + b_z), c0 the second.
    state = model.get_layer("decoder_init")(z)
    size = model.hps.dec_rnn_size
    return state[:, :size], state[:, size:]


def _require_conditional(model, what):
    if not model.hps.conditional:
        raise ValueError(f"this model was trained with conditional=False: it {what}")


def sample_stroke(params, num_mixture, noise, temperature, greedy):
    """Draws the next stroke-5 point of each sketch from the decoder head's output.

    Temperature tau as the paper defines it: the logits of the mixture weights and of the
    pen states are divided by tau, and each Gaussian's variances sigma_x^2, sigma_y^2 are
    multiplied by tau (so sigma by sqrt(tau)); rho is kept. magenta.js does the same. The
    official Python `sample()` passes sqrt(tau) to `sample_gaussian_2d`, which multiplies
    sigma by the square of its argument: sigma * tau, variances * tau^2. We follow the paper:
    it is the published definition, and it makes tau = 1 the model's own distribution with
    the offsets' and the choices' spread shrinking at the same rate. Below 1 the official
    rule shrinks the offsets faster (at tau = 0.1, sigma * 0.1 against ours * 0.32).

    Categories are drawn by inverse CDF, as the official `get_pi_idx`: the first index whose
    cumulative probability reaches the uniform draw.

    Args:
        params: (B, 6M + 3), the mixture head's output for one step.
        num_mixture: M.
        noise: (B, 4): two U(0, 1) draws (mixture component, pen state) and two N(0, 1)
            draws (the offset).
        temperature: scalar or (B,), > 0.
        greedy: bool; True takes the most likely component and pen state and the chosen
            Gaussian's mean, ignoring noise and temperature.

    Returns:
        (B, 5) stroke-5 points (dx, dy, p1, p2, p3), the pen state one-hot.
    """
    coef = get_mixture_coef(params, num_mixture)
    tau = ops.reshape(ops.cast(temperature, params.dtype), (-1, 1))  # (B, 1) or (1, 1)
    component = _draw_one_hot(coef["pi_logits"], tau, noise[:, 0], greedy)  # (B, M)
    pen = _draw_one_hot(coef["pen_logits"], tau, noise[:, 1], greedy)  # (B, 3)

    def chosen(name):
        return ops.sum(coef[name] * component, axis=-1)  # (B,)

    rho = chosen("rho")
    spread = ops.sqrt(tau[:, 0]) * (1.0 - ops.cast(greedy, params.dtype))
    sigma_x = ops.exp(chosen("log_sigma_x")) * spread
    sigma_y = ops.exp(chosen("log_sigma_y")) * spread
    # Correlated normals: cov(dx, dy) = rho * sigma_x * sigma_y.
    dx = chosen("mu_x") + sigma_x * noise[:, 2]
    dy = chosen("mu_y") + sigma_y * (rho * noise[:, 2] + ops.sqrt(1.0 - ops.square(rho)) * noise[:, 3])
    return ops.concatenate([ops.stack([dx, dy], axis=-1), pen], axis=-1)


def _draw_one_hot(logits, tau, uniform, greedy):
    """One-hot (B, K) of a draw from softmax(logits / tau) by inverse CDF, or of the argmax."""
    size = logits.shape[-1]
    cdf = ops.cumsum(ops.softmax(logits / tau, axis=-1), axis=-1)
    drawn = ops.sum(ops.cast(cdf < ops.expand_dims(uniform, -1), "int32"), axis=-1)
    drawn = ops.minimum(drawn, size - 1)  # the last cumulative sum may round to just below 1
    index = ops.where(greedy, ops.cast(ops.argmax(logits, axis=-1), "int32"), drawn)
    return ops.one_hot(index, size, dtype=logits.dtype)


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
    """A trained Sketch-RNN ready to draw: encode, decode, sample and interpolate sketches.

    Sketches go in and come out as lists of stroke-3 arrays in the model's units (dx and dy
    divided by `scale_factor`, as the DataLoader and `load_sketches` give them); the drawing
    functions of utils.py take `scale_factor` to draw them at the data's size.

    Sampling runs one compiled loop per call over the whole batch (`sample_stroke5`): the
    decoder LSTM step on the decoder layer's own weights (the z part of its input projection
    computed once), the mixture head and `sample_stroke`, until every sketch has drawn its end
    token or max_seq_len points. Its random draws are made up front with NumPy, one stream
    per sketch from `seed`, so a seeded call is reproducible and sketch i does not depend on
    how many others are drawn with it. The loop is traced once; XLA compiles it once per
    batch size (about 0.4 s for 1 sketch, 1.4 s for 100 at default size here), so the first
    call with a new number of sketches is that much slower. The LSTM step is the layer's own
    (`_lstm_step`), with its recurrent matmul in the layer's dtype (`lstm_matmul_dtype`).

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

        Args:
            sketches: sequence of B (N_b, 3) arrays, N_b <= max_seq_len.
            sample: False returns the posterior mean z_mean; True draws
                z = z_mean + exp(z_log_var / 2) * N(0, I), as training does.
            seed: seeds the draw when sample is True.

        Returns:
            (B, Nz) float32.
        """
        if self.encoder is None:
            _require_conditional(self.model, "has no encoder")
        batch = utils.to_stroke5(sketches, self.hps.max_seq_len)
        z_mean, z_log_var = self.encoder.predict(batch, batch_size=self.hps.batch_size, verbose=0)
        if not sample:
            return z_mean
        epsilon = np.random.default_rng(seed).standard_normal(z_mean.shape).astype(np.float32)
        return z_mean + np.exp(z_log_var / 2) * epsilon

    # -- drawing sketches --

    def decode(self, z, temperature=1.0, greedy=False, seed=None, max_steps=None):
        """Draws one sketch per latent vector.

        Args:
            z: (B, Nz) latent vectors.
            temperature: tau > 0, one for all or (B,) one per sketch (see `sample_stroke`).
            greedy: take the most likely choices and the means (deterministic).
            seed: seeds the draws; None draws fresh ones.
            max_steps: the most points a sketch may have; max_seq_len by default.

        Returns:
            list of B stroke-3 arrays (model units), each cut at its end token.
        """
        if not self.hps.conditional:
            _require_conditional(self.model, "draws from no z: use sample(n)")
        z = np.asarray(z, np.float32)
        if z.ndim != 2 or z.shape[1] != self.hps.z_size:
            raise ValueError(f"z must have shape (B, {self.hps.z_size}), got {z.shape}")
        _, noise = self._random_draws(len(z), seed, max_steps, with_z=False)
        stroke5 = self.sample_stroke5(z, noise, temperature, greedy)
        return [utils.to_stroke3(s) for s in stroke5]

    def sample(self, n, temperature=1.0, greedy=False, seed=None, max_steps=None):
        """Draws n sketches unconditionally: from z ~ N(0, I), or from no z for a decoder-only model.

        Args and Returns: as `decode`, for n sketches.
        """
        if n < 1:
            raise ValueError(f"the number of sketches must be at least 1, got {n}")
        z, noise = self._random_draws(n, seed, max_steps, with_z=self.hps.conditional)
        stroke5 = self.sample_stroke5(z, noise, temperature, greedy)
        return [utils.to_stroke3(s) for s in stroke5]

    def reconstruct(self, sketches, temperature=1.0, greedy=False, seed=None):
        """Encodes sketches (to z_mean) and decodes them: `decode(encode(sketches), ...)`."""
        return self.decode(self.encode(sketches), temperature, greedy, seed)

    def interpolate(self, sketch_a, sketch_b, steps=10, method="slerp", temperature=1.0,
                    greedy=False, seed=None):
        """Decodes `steps` points between the latent vectors of two sketches.

        Args:
            sketch_a, sketch_b: stroke-3 arrays (model units).
            steps: sketches to draw, the two ends included.
            method: "slerp" or "lerp" (see `interpolate`).
            temperature, greedy, seed: as `decode`.

        Returns:
            list of `steps` stroke-3 arrays, from sketch_a's end to sketch_b's.
        """
        z0, z1 = self.encode([sketch_a, sketch_b])
        return self.decode(interpolate(z0, z1, steps, method), temperature, greedy, seed)

    def _random_draws(self, batch, seed, max_steps, with_z):
        """Per sketch, its own stream from `seed`: z (if asked) and the sampling noise."""
        steps = self.hps.max_seq_len if max_steps is None else int(max_steps)
        if steps < 1:
            raise ValueError(f"max_steps must be at least 1, got {max_steps}")
        z = np.zeros((batch, self.hps.z_size if with_z else 0), np.float32)
        noise = np.empty((steps, batch, 4), np.float32)
        for b, stream in enumerate(np.random.SeedSequence(seed).spawn(batch)):
            rng = np.random.default_rng(stream)
            if with_z:
                z[b] = rng.standard_normal(self.hps.z_size)
            noise[:, b, :2] = rng.random((steps, 2))
            noise[:, b, 2:] = rng.standard_normal((steps, 2))
        return (z if with_z else None), noise

    def sample_stroke5(self, z, noise, temperature=1.0, greedy=False):
        """The compiled sampling loop itself, with the random draws given.

        Args:
            z: (B, Nz) latent vectors, or None for an unconditional model.
            noise: (T, B, 4) float32: for each step and sketch, the draws `sample_stroke`
                takes; T is the most points a sketch may have.
            temperature: tau > 0, scalar or (B,).
            greedy: see `sample_stroke`.

        Returns:
            (B, S, 5) float32 stroke-5 points without the start token, S <= T the number of
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
        if not np.all(temperature > 0):
            raise ValueError(f"temperature must be > 0 (greedy=True is the limit tau -> 0), "
                             f"got {temperature.min()}")
        if self._sampling_loop is None:
            self._sampling_loop = self._compile_sampling_loop()
        strokes, steps_run = self._sampling_loop(z, noise, temperature, np.bool_(greedy))
        strokes = ops.convert_to_numpy(strokes)[:int(steps_run)]  # (S, B, 5)
        return np.transpose(strokes, (1, 0, 2))

    def _compile_sampling_loop(self):
        """Builds the tf.function (XLA if jit_compile) of the whole sampling loop."""
        import tensorflow as tf  # the one backend-specific part: compiling the loop

        hps = self.hps
        lstm = self.model.get_layer("decoder_lstm")
        head = self.model.get_layer("mixture_head")
        init = self.model.get_layer("decoder_init") if hps.conditional else None

        def loop(z, noise, temperature, greedy):
            steps, batch = ops.shape(noise)[0], ops.shape(noise)[1]
            kernel = ops.convert_to_tensor(lstm.kernel)  # rows: 5 for the point, then z's
            point_kernel = kernel[:5]
            # In the layer's matmul dtype (bfloat16 where lstm_matmul_dtype says so), cast once.
            recurrent_kernel = _matmul_operand(ops.convert_to_tensor(lstm.recurrent_kernel),
                                               lstm.matmul_dtype)
            # The z part of the input projection, and the bias, are the same every step.
            constant = ops.matmul(z, kernel[5:]) + lstm.bias  # (B, 4H)
            if init is not None:
                h, c = _initial_state(self.model, z)
            else:
                h = c = ops.zeros((batch, hps.dec_rnn_size))
            point = ops.broadcast_to(ops.convert_to_tensor(utils.START_TOKEN), (batch, 5))

            def unfinished(t, point, h, c, strokes, done):
                return ops.logical_and(t < steps, ops.logical_not(ops.all(done)))

            def step(t, point, h, c, strokes, done):
                # The decoder layer's own cell step, without dropout or padding mask.
                projected = ops.matmul(point, point_kernel) + constant
                h, c = _lstm_step(projected, h, c, recurrent_kernel, None, None, lstm.matmul_dtype)
                point = sample_stroke(head(h), hps.num_mixture, noise[t], temperature, greedy)
                strokes = ops.slice_update(strokes, [t, 0, 0], ops.expand_dims(point, 0))
                return t + 1, point, h, c, strokes, ops.logical_or(done, point[:, 4] > 0.5)

            start = (ops.convert_to_tensor(0, "int32"), point, h, c,
                     ops.zeros((steps, batch, 5)), ops.zeros((batch,), "bool"))
            t, _, _, _, strokes, _ = ops.while_loop(unfinished, step, start)
            return strokes, t

        z_size = hps.z_size if hps.conditional else 0
        signature = [tf.TensorSpec((None, z_size), tf.float32),
                     tf.TensorSpec((None, None, 4), tf.float32),
                     tf.TensorSpec((None,), tf.float32),
                     tf.TensorSpec((), tf.bool)]
        return tf.function(loop, input_signature=signature, jit_compile=self.jit_compile)

    # -- data --

    def load_sketches(self, data_dir, split="test", data_set=None):
        """The run's sketches of one split, in model units (scaled by the stored scale factor).

        Args:
            data_dir: folder of the .npz data sets (missing known sets are downloaded).
            split: "train", "valid" or "test".
            data_set: one name or comma list; by default the run's own data sets.

        Returns:
            list of (N, 3) float32 stroke-3 arrays, those longer than max_seq_len dropped,
            clamped and scaled as in training.
        """
        if split not in utils.SPLITS:
            raise ValueError(f"split must be one of {', '.join(utils.SPLITS)}, got {split!r}")
        names = data_set or ",".join(self.data_sets)
        if not names:
            raise ValueError("this run names no data set: pass data_set")
        strokes = utils.load_strokes(data_dir, names)[utils.SPLITS.index(split)]
        loader = utils.DataLoader(strokes, max_seq_len=self.hps.max_seq_len,
                                  scale_factor=self.scale_factor, name=split)
        return loader.strokes
