"""Recurrent cells: one step of an RNN, each written once.

Every cell follows one contract (`RecurrentCell`), so one unroll (`unroll.unroll`) runs
any of them, masked or not, forward or reversed, on any Keras backend, and the sampler steps
the same cell object the training graph unrolls. Faster engines for a cell (a hand-written
backward pass, a fused C++ op, cuDNN) live in `engines` and are tested against that unroll.

The cells are the official Sketch-RNN's (Magenta `sketch_rnn/rnn.py`): `lstm`, `layer_norm`
and `hyper`, all with "recurrent dropout without memory loss" (Semeniuta et al. 2016) on the
cell candidate. Conventions shared by all of them:

- gates are laid out i, f, g, o (input, forget, candidate, output) in every (.., 4H) weight,
  the order of `keras.layers.LSTM` and cuDNN (the official code uses i, j, f, o);
- the state is a tuple whose first two entries are (h, c) and whose first entry, h, is the
  step's output; `state_from_vector` splits a flat (B, sum(state_sizes)) vector (the
  decoder's initial state, tanh(W z + b)) in the same order;
- the part of a step that depends on the input alone is hoisted out of the loop:
  `input_projection(x)` for every step at once and `constant_projection(constant)` for an
  input that is the same at every step (the decoder's z), added together by the unroll.
"""

import keras
from keras import ops


class RecurrentCell(keras.layers.Layer):
    """The contract of a cell. Subclasses create their weights in `build(input_dim)`.

    Attributes:
        units: H, the size of the output h.
        state_sizes: the sizes of the state's tensors, (H, H, ...) for (h, c, ...).
        projection_size: P, the width of `input_projection`'s result per step.
        matmul_dtype: None, or "bfloat16" for the recurrent matmuls (inputs rounded to it).
    """

    units = None
    state_sizes = ()
    projection_size = None

    def __init__(self, units, matmul_dtype=None, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.matmul_dtype = matmul_dtype

    def input_projection(self, inputs):
        """(..., D1) -> (..., P): the per-step input's share of each step, no bias.

        D1 may be less than the `input_dim` the cell was built for: the remaining input
        rows belong to `constant_projection`.
        """
        raise NotImplementedError

    def constant_projection(self, constant=None):
        """(B, D2) or None -> (B, P) or (P,): the constant input's share plus the biases
        that are added before the recurrence; added to every step's input projection."""
        raise NotImplementedError

    def step_weights(self):
        """Weights prepared once per sequence for `step` (e.g. cast to `matmul_dtype`)."""
        return {}

    def step(self, projected_t, state, dropout_t=None, weights=None):
        """One step.

        Args:
            projected_t: (B, P), this step's input projection plus the constant projection.
            state: tuple of (B, n) tensors, sizes `state_sizes`.
            dropout_t: optional (B, H) recurrent dropout mask, already divided by the keep
                probability, multiplied into the cell candidate.
            weights: `step_weights()`, computed once per sequence by the caller; None
                computes them here.

        Returns:
            (output (B, H), new_state).
        """
        raise NotImplementedError

    def initial_state(self, batch_size, dtype="float32"):
        """The zero state, a tuple of (B, n) tensors."""
        return tuple(ops.zeros((batch_size, n), dtype) for n in self.state_sizes)

    def state_from_vector(self, vector):
        """Splits a (B, sum(state_sizes)) vector into the state tuple, in its order."""
        sizes = list(self.state_sizes)
        points = [sum(sizes[:i + 1]) for i in range(len(sizes) - 1)]
        return tuple(ops.split(vector, points, axis=-1))

    def recurrent_matmul(self, h, kernel):
        """h @ kernel, the kernel from `step_weights` (already in `matmul_dtype`)."""
        if self.matmul_dtype is None:
            return ops.matmul(h, kernel)
        return ops.cast(ops.matmul(ops.cast(h, self.matmul_dtype), kernel), h.dtype)

    def matmul_operand(self, kernel):
        """A recurrent kernel in `matmul_dtype`, for `step_weights`."""
        kernel = ops.convert_to_tensor(kernel)
        return kernel if self.matmul_dtype is None else ops.cast(kernel, self.matmul_dtype)

    def get_config(self):
        config = super().get_config()
        config.update({"units": self.units, "matmul_dtype": self.matmul_dtype})
        return config


def unit_forget_bias(units, gates=4, forget=1.0):
    """Initialiser of a (gates * H) bias: `forget` on the forget gate (i, f, g, o), 0 elsewhere."""

    def init(shape, dtype=None):
        dtype = dtype or "float32"
        parts = [ops.zeros((units,), dtype), ops.full((units,), forget, dtype)]
        return ops.concatenate(parts + [ops.zeros(((gates - 2) * units,), dtype)])

    return init


@keras.saving.register_keras_serializable(package="sketch_rnn")
class LSTMOrthogonal(keras.initializers.Orthogonal):
    """The official `lstm_ortho_initializer`: a (rows, 4H) kernel whose four (rows, H) gate
    blocks are each orthogonal on their own (orthonormal columns, or rows if rows < H).

    Keras's "orthogonal" makes the whole (rows, 4H) matrix orthogonal instead, which leaves
    each gate's block with singular values near 1/2 rather than 1.

    Args:
        gain: a factor on every block (official `scale`, 1.0).
        seed: None, or an int for the same values on every call.
    """

    def __call__(self, shape, dtype=None):
        rows, columns = shape
        units = columns // 4
        # One QR per gate, batched: (4, max, min) with orthonormal columns.
        normal = keras.random.normal((4, max(rows, units), min(rows, units)), seed=self.seed,
                                     dtype=dtype)
        q, r = ops.qr(normal)
        q = q * ops.expand_dims(ops.sign(ops.diagonal(r, axis1=-2, axis2=-1)), 1)
        if rows < units:
            q = ops.transpose(q, (0, 2, 1))
        # (4, rows, H) -> (rows, 4H), gate blocks side by side.
        return self.gain * ops.reshape(ops.transpose(q, (1, 0, 2)), (rows, columns))


@keras.saving.register_keras_serializable(package="sketch_rnn")
class LSTMCell(RecurrentCell):
    """The LSTM (official `rnn.LSTMCell`), with the weights of `keras.layers.LSTM`.

    kernel (D, 4H), recurrent_kernel (H, 4H), bias (4H), gates i, f, g, o: the same weights
    run on every engine, cuDNN included. The official forget_bias=1.0 is the bias's initial
    value on the forget gate (a constant shift of it, the same function). The state is
    (h, c); the official cell's state vector is [c, h].

        gates = x W + h U + b;  c' = sigmoid(f) c + sigmoid(i) (tanh(g) * dropout)
        h' = sigmoid(o) tanh(c')

    Weights, with the official variable each one is (scope `LSTMCell/`). Our gates are
    i, f, g, o, the official i, j, f, o (j is our g): a (.., 4H) official array is ours with
    its two middle H-blocks swapped (`official_weights.swap_middle_gates`).

        kernel (D, 4H)             W_xh
        recurrent_kernel (H, 4H)   W_hh
        bias (4H)                  bias, plus forget_bias (1.0) on the forget gate's block
    """

    name_in_hparams = "lstm"

    def __init__(self, units, matmul_dtype=None, **kwargs):
        super().__init__(units, matmul_dtype, **kwargs)
        self.state_sizes = (units, units)
        self.projection_size = 4 * units

    def build(self, input_dim):
        h = self.units
        self.kernel = self.add_weight(shape=(input_dim, 4 * h), initializer="glorot_uniform",
                                      name="kernel")
        self.recurrent_kernel = self.add_weight(shape=(h, 4 * h), initializer="orthogonal",
                                                name="recurrent_kernel")
        self.bias = self.add_weight(shape=(4 * h,), initializer=unit_forget_bias(h), name="bias")

    def input_projection(self, inputs):
        return ops.matmul(inputs, self.kernel[:inputs.shape[-1]])

    def constant_projection(self, constant=None):
        if constant is None:
            return ops.convert_to_tensor(self.bias)
        return ops.matmul(constant, self.kernel[-constant.shape[-1]:]) + self.bias

    def step_weights(self):
        return {"recurrent_kernel": self.matmul_operand(self.recurrent_kernel)}

    def step(self, projected_t, state, dropout_t=None, weights=None):
        weights = weights or self.step_weights()
        h, c = state
        gates = projected_t + self.recurrent_matmul(h, weights["recurrent_kernel"])
        i, f, g, o = ops.split(gates, 4, axis=-1)
        candidate = ops.tanh(g) if dropout_t is None else ops.tanh(g) * dropout_t
        new_c = ops.sigmoid(f) * c + ops.sigmoid(i) * candidate
        new_h = ops.sigmoid(o) * ops.tanh(new_c)
        return new_h, (new_h, new_c)


def _normalize(x, epsilon):
    """(x - mean) / sqrt(var + epsilon) over the last axis, as the official `layer_norm`."""
    mean = ops.mean(x, axis=-1, keepdims=True)
    centered = x - mean
    variance = ops.mean(ops.square(centered), axis=-1, keepdims=True)
    return centered * ops.rsqrt(variance + epsilon)


def _layer_norm_gates(gates, gamma, beta, epsilon):
    """LN_all (official `layer_norm_all`): each gate's H units of (B, 4H) normalised apart."""
    units = gates.shape[-1] // 4
    normalized = _normalize(ops.reshape(gates, (-1, 4, units)), epsilon)  # (B, 4, H)
    return gamma * ops.reshape(normalized, (-1, 4 * units)) + beta


def _layer_norm_lstm_update(gates, c, dropout_t, forget_bias, ln_c_gamma, ln_c_beta, epsilon):
    """The end of a layer-norm or hyper LSTM step: (gates (B, 4H), c) -> (h', c')."""
    i, f, g, o = ops.split(gates, 4, axis=-1)
    candidate = ops.tanh(g) if dropout_t is None else ops.tanh(g) * dropout_t
    new_c = c * ops.sigmoid(f + forget_bias) + ops.sigmoid(i) * candidate
    new_h = ops.tanh(ln_c_gamma * _normalize(new_c, epsilon) + ln_c_beta) * ops.sigmoid(o)
    return new_h, new_c


@keras.saving.register_keras_serializable(package="sketch_rnn")
class LayerNormLSTMCell(RecurrentCell):
    """The layer-normalised LSTM (official `rnn.LayerNormLSTMCell`; Ba et al. 2016).

    No bias: each gate's pre-activation is normalised over its own H units, then scaled and
    shifted (LN_all), and the new cell state is normalised again before its tanh (LN_c):

        gates = LN_all(x W + h U)                                   # (B, 4H), i, f, g, o
        c' = c sigmoid(f + forget_bias) + sigmoid(i) (tanh(g) * dropout)
        h' = tanh(LN_c(c')) sigmoid(o)
        LN(a) = gamma (a - mean(a)) / sqrt(var(a) + epsilon) + beta

    forget_bias is a constant of the step, as in the official code.

    Weights, with the official variable each one is (scope `LayerNormLSTMCell/`) and its
    initial value. Our gates are i, f, g, o, the official i, j, f, o (j, the candidate, is our
    g): a (.., 4H) official array is ours with its two middle H-blocks swapped (and back).

        kernel (D, 4H)             W_xh            glorot uniform (TF1's default "uniform")
        recurrent_kernel (H, 4H)   W_hh            `LSTMOrthogonal` (lstm_ortho_initializer)
        ln_gamma, ln_beta (4H)     ln_all/ln_gamma, ln_all/ln_beta      1, 0
        ln_c_gamma, ln_c_beta (H)  ln_c/ln_gamma, ln_c/ln_beta          1, 0

    The state is (h, c), the official state vector's order [h, c] too.

    Args:
        units: H.
        forget_bias: added to the forget gate's pre-activation every step (official 1.0).
        epsilon: added to the variance inside the square root (official 1e-3).
        matmul_dtype: None, or "bfloat16" for the recurrent matmul.
    """

    name_in_hparams = "layer_norm"

    def __init__(self, units, forget_bias=1.0, epsilon=1e-3, matmul_dtype=None, **kwargs):
        super().__init__(units, matmul_dtype, **kwargs)
        self.forget_bias = forget_bias
        self.epsilon = epsilon
        self.state_sizes = (units, units)
        self.projection_size = 4 * units

    def build(self, input_dim):
        h = self.units
        self.kernel = self.add_weight(shape=(input_dim, 4 * h), initializer="glorot_uniform",
                                      name="kernel")
        self.recurrent_kernel = self.add_weight(shape=(h, 4 * h), initializer=LSTMOrthogonal(),
                                                name="recurrent_kernel")
        self.ln_gamma = self.add_weight(shape=(4 * h,), initializer="ones", name="ln_gamma")
        self.ln_beta = self.add_weight(shape=(4 * h,), initializer="zeros", name="ln_beta")
        self.ln_c_gamma = self.add_weight(shape=(h,), initializer="ones", name="ln_c_gamma")
        self.ln_c_beta = self.add_weight(shape=(h,), initializer="zeros", name="ln_c_beta")

    def input_projection(self, inputs):
        return ops.matmul(inputs, self.kernel[:inputs.shape[-1]])

    def constant_projection(self, constant=None):
        if constant is None:
            return ops.zeros((4 * self.units,), self.kernel.dtype)  # no bias before LN_all
        return ops.matmul(constant, self.kernel[-constant.shape[-1]:])

    def step_weights(self):
        return {"recurrent_kernel": self.matmul_operand(self.recurrent_kernel)}

    def step(self, projected_t, state, dropout_t=None, weights=None):
        weights = weights or self.step_weights()
        h, c = state
        gates = projected_t + self.recurrent_matmul(h, weights["recurrent_kernel"])  # (B, 4H)
        gates = _layer_norm_gates(gates, self.ln_gamma, self.ln_beta, self.epsilon)
        new_h, new_c = _layer_norm_lstm_update(gates, c, dropout_t, self.forget_bias,
                                               self.ln_c_gamma, self.ln_c_beta, self.epsilon)
        return new_h, (new_h, new_c)

    def get_config(self):
        config = super().get_config()
        config.update({"forget_bias": self.forget_bias, "epsilon": self.epsilon})
        return config


@keras.saving.register_keras_serializable(package="sketch_rnn")
class HyperLSTMCell(RecurrentCell):
    """The HyperLSTM (official `rnn.HyperLSTMCell`; Ha, Dai & Le 2016): a small LSTM, the
    hyper cell, reads [x, h] every step and rescales the main LSTM's weights with its output.

    The hyper cell (a `LayerNormLSTMCell` of Hh = hyper_num_units units, or an `LSTMCell`
    without layer norm) steps first; its new output y (B, Hh) makes, through embeddings of
    size E, a scale for each gate's share of x W and of h U and a shift for h U's (the
    official `hyper_norm`, n over the blocks ix fx gx ox ih fh gh oh, m over ih fh gh oh):

        y, hyper_state' = hyper_cell([x, h], hyper_state)
        alpha_n = (y Zw_n + bw_n) A_n        beta_m = (y Zb_m) B_m         # (B, H) each
        gates_k = alpha_kx (x W)_k + alpha_kh (h U)_k + beta_kh + b_k       # k in i, f, g, o
        gates = LN_all(gates), only if use_layer_norm
        c' = c sigmoid(f + forget_bias) + sigmoid(i) (tanh(g) * dropout)
        h' = tanh(LN_c(c')) sigmoid(o)                # LN_c even without use_layer_norm

    Weights, with the official variables (scope `HyperLSTMCell/`) and initial values. Our
    gates are i, f, g, o, the official i, j, f, o (j is our g): a (.., 4H) official array is
    ours with its two middle H-blocks swapped. The eight hyper_norm blocks are stacked in
    our order, official scope names hyper_ix, hyper_fx, hyper_jx, hyper_ox, hyper_ih,
    hyper_fh, hyper_jh, hyper_oh (n = 0..7; the four with a shift, m = 0..3, are the last
    four), so that a step does one matmul and one einsum for all of them:

        kernel (D, 4H)             W_xh                                    glorot uniform
        recurrent_kernel (H, 4H)   W_hh                                    `LSTMOrthogonal`
        bias (4H)                  bias (added after the scaling)          0
        zw_kernel (Hh, 8E)         [:, nE:(n+1)E] = hyper_<n>/zw/super_linear_w     0
        zw_bias (8E)               [nE:(n+1)E] = hyper_<n>/zw/super_linear_b        1
        alpha (8, E, H)            [n] = hyper_<n>/alpha/super_linear_w             0.1 / E
        zb_kernel (Hh, 4E)         [:, mE:(m+1)E] = hyper_<4+m>/zb/super_linear_w   N(0, 0.01)
        beta (4, E, H)             [m] = hyper_<4+m>/beta/super_linear_w            0
        ln_gamma, ln_beta (4H)     ln_all/ln_gamma, ln_all/ln_beta (if use_layer_norm) 1, 0
        ln_c_gamma, ln_c_beta (H)  ln_c/ln_gamma, ln_c/ln_beta                      1, 0
        hyper_cell                 LayerNormLSTMCell/... (or LSTMCell/...), see those classes;
                                   its kernel (D + H, 4Hh) is W_xh over the rows [x, h]

    Without layer norm the hyper cell is our `LSTMCell`, whose bias holds the official
    forget_bias (1.0): its bias is the official LSTMCell/bias plus 1 on the forget gate.

    The state is (h, c, hyper_h, hyper_c). The official state vector is
    [h, hyper_h, c, hyper_c]; without layer norm its hyper_h slot holds the hyper cell's c
    and its hyper_c slot the hyper cell's h (the official LSTMCell's state is [c, h]).

    The step's input projection, P = 4H + 4Hh wide, is [x W, x's rows of the hyper cell's
    kernel (+ its bias without layer norm)]: the main bias comes after the hyper scaling of
    x W, so it stays in the step.

    Args:
        units: H.
        forget_bias: the main cell's forget-gate constant (official 1.0); the hyper cell's
            is 1.0, as in the official code.
        use_layer_norm: LN_all in the main cell and a layer-norm hyper cell (official True).
        hyper_num_units: Hh (official 256).
        hyper_embedding_size: E (official 32).
        hyper_use_recurrent_dropout: recurrent dropout in the hyper cell too; only False (the
            official default) is implemented.
        epsilon: of every layer norm (official 1e-3).
        matmul_dtype: None, or "bfloat16" for the recurrent matmuls, the hyper cell's included.
    """

    name_in_hparams = "hyper"

    def __init__(self, units, forget_bias=1.0, use_layer_norm=True, hyper_num_units=256,
                 hyper_embedding_size=32, hyper_use_recurrent_dropout=False, epsilon=1e-3,
                 matmul_dtype=None, **kwargs):
        super().__init__(units, matmul_dtype, **kwargs)
        if hyper_use_recurrent_dropout:
            raise NotImplementedError(
                "HyperLSTMCell(hyper_use_recurrent_dropout=True) is not implemented: a step gets "
                "one (B, units) dropout mask, for the main cell, and the hyper cell would need "
                "its own (B, hyper_num_units) one; use False, the official default.")
        self.forget_bias = forget_bias
        self.use_layer_norm = use_layer_norm
        self.hyper_num_units = hyper_num_units
        self.hyper_embedding_size = hyper_embedding_size
        self.hyper_use_recurrent_dropout = hyper_use_recurrent_dropout
        self.epsilon = epsilon
        self.state_sizes = (units, units, hyper_num_units, hyper_num_units)
        self.projection_size = 4 * units + 4 * hyper_num_units
        if use_layer_norm:
            self.hyper_cell = LayerNormLSTMCell(hyper_num_units, epsilon=epsilon,
                                                matmul_dtype=matmul_dtype, name="hyper_cell",
                                                dtype=self.dtype_policy)
        else:
            self.hyper_cell = LSTMCell(hyper_num_units, matmul_dtype=matmul_dtype,
                                       name="hyper_cell", dtype=self.dtype_policy)

    def build(self, input_dim):
        h, e = self.units, self.hyper_embedding_size
        self.input_dim = input_dim  # D: the hyper cell's kernel rows past it are h's
        self.hyper_cell.build(input_dim + h)
        hh = self.hyper_num_units
        self.kernel = self.add_weight(shape=(input_dim, 4 * h), initializer="glorot_uniform",
                                      name="kernel")
        self.recurrent_kernel = self.add_weight(shape=(h, 4 * h), initializer=LSTMOrthogonal(),
                                                name="recurrent_kernel")
        self.bias = self.add_weight(shape=(4 * h,), initializer="zeros", name="bias")
        self.zw_kernel = self.add_weight(shape=(hh, 8 * e), initializer="zeros", name="zw_kernel")
        self.zw_bias = self.add_weight(shape=(8 * e,), initializer="ones", name="zw_bias")
        # Cooijmans et al.'s recurrent batch norm: the scales start at 0.1.
        self.alpha = self.add_weight(shape=(8, e, h),
                                     initializer=keras.initializers.Constant(0.1 / e), name="alpha")
        self.zb_kernel = self.add_weight(shape=(hh, 4 * e),
                                         initializer=keras.initializers.RandomNormal(stddev=0.01),
                                         name="zb_kernel")
        self.beta = self.add_weight(shape=(4, e, h), initializer="zeros", name="beta")
        if self.use_layer_norm:
            self.ln_gamma = self.add_weight(shape=(4 * h,), initializer="ones", name="ln_gamma")
            self.ln_beta = self.add_weight(shape=(4 * h,), initializer="zeros", name="ln_beta")
        self.ln_c_gamma = self.add_weight(shape=(h,), initializer="ones", name="ln_c_gamma")
        self.ln_c_beta = self.add_weight(shape=(h,), initializer="zeros", name="ln_c_beta")

    def input_projection(self, inputs):
        rows = inputs.shape[-1]
        kernel = ops.concatenate([self.kernel[:rows], self.hyper_cell.kernel[:rows]], axis=1)
        return ops.matmul(inputs, kernel)  # (..., 4H + 4Hh)

    def constant_projection(self, constant=None):
        hyper_bias = self.hyper_cell.constant_projection()  # (4Hh,): LSTMCell's bias, or zeros
        bias = ops.concatenate([ops.zeros((4 * self.units,), hyper_bias.dtype), hyper_bias])
        if constant is None:
            return bias
        rows = constant.shape[-1]
        hyper_rows = self.hyper_cell.kernel[self.input_dim - rows:self.input_dim]
        kernel = ops.concatenate([self.kernel[-rows:], hyper_rows], axis=1)  # (D2, 4H + 4Hh)
        return ops.matmul(constant, kernel) + bias

    def step_weights(self):
        e = self.hyper_embedding_size
        # h feeds both W_hh and the hyper cell's input rows: one (H, 4H + 4Hh) matmul.
        h_kernel = ops.concatenate(
            [self.recurrent_kernel, self.hyper_cell.kernel[self.input_dim:]], axis=1)
        return {
            "h_kernel": self.matmul_operand(h_kernel),
            "hyper_cell": self.hyper_cell.step_weights(),
            "embedding_kernel": self.matmul_operand(  # (Hh, 12E): zw then zb
                ops.concatenate([self.zw_kernel, self.zb_kernel], axis=1)),
            "embedding_bias": ops.concatenate(  # (12E,)
                [self.zw_bias, ops.zeros((4 * e,), self.zw_bias.dtype)]),
            "modulation_kernel": self.matmul_operand(  # (12, E, H): alpha then beta
                ops.concatenate([self.alpha, self.beta], axis=0)),
        }

    def step(self, projected_t, state, dropout_t=None, weights=None):
        weights = weights or self.step_weights()
        h, c, hyper_h, hyper_c = state
        four_h = 4 * self.units
        x_part, hyper_x_part = ops.split(projected_t, [four_h], axis=-1)  # (B, 4H), (B, 4Hh)
        h_part, hyper_h_part = ops.split(self.recurrent_matmul(h, weights["h_kernel"]), [four_h],
                                         axis=-1)
        hyper_output, hyper_state = self.hyper_cell.step(
            hyper_x_part + hyper_h_part, (hyper_h, hyper_c), weights=weights["hyper_cell"])
        embeddings = (self.recurrent_matmul(hyper_output, weights["embedding_kernel"])
                      + weights["embedding_bias"])  # (B, 12E): zw_0..7, zb_0..3
        modulation = self._modulation(embeddings, weights["modulation_kernel"])  # (B, 12H)
        x_scale, h_scale, h_shift = ops.split(modulation, 3, axis=-1)  # (B, 4H) each, i f g o
        gates = x_part * x_scale + h_part * h_scale + h_shift + self.bias
        if self.use_layer_norm:
            gates = _layer_norm_gates(gates, self.ln_gamma, self.ln_beta, self.epsilon)
        new_h, new_c = _layer_norm_lstm_update(gates, c, dropout_t, self.forget_bias,
                                               self.ln_c_gamma, self.ln_c_beta, self.epsilon)
        return new_h, (new_h, new_c, *hyper_state)

    def _modulation(self, embeddings, kernel):
        """(B, 12E) embeddings, each block times its (E, H) matrix -> (B, 12H)."""
        e = self.hyper_embedding_size
        blocks = ops.reshape(embeddings, (-1, 12, e))
        if self.matmul_dtype is not None:
            blocks = ops.cast(blocks, self.matmul_dtype)
        modulation = ops.einsum("bne,neh->bnh", blocks, kernel)
        return ops.reshape(ops.cast(modulation, embeddings.dtype), (-1, 12 * self.units))

    def get_config(self):
        config = super().get_config()
        config.update({
            "forget_bias": self.forget_bias,
            "use_layer_norm": self.use_layer_norm,
            "hyper_num_units": self.hyper_num_units,
            "hyper_embedding_size": self.hyper_embedding_size,
            "hyper_use_recurrent_dropout": self.hyper_use_recurrent_dropout,
            "epsilon": self.epsilon,
        })
        return config


def make_cell(kind, units, **kwargs):
    """The cell named as in the hparams enc_model / dec_model: lstm, layer_norm or hyper."""
    cells = {cls.name_in_hparams: cls for cls in CELLS}
    if kind not in cells:
        raise ValueError(f"unknown cell '{kind}': expected one of {', '.join(cells)}")
    return cells[kind](units, **kwargs)


CELLS = (LSTMCell, LayerNormLSTMCell, HyperLSTMCell)
