"""The LSTM engines of the TensorFlow backend (`sketch_rnn.engines` picks one per layer).

All three run `cells.LSTMCell`'s equations on its weights (kernel, recurrent_kernel, bias;
gates i, f, g, o) and return what the generic unroll (`sketch_rnn.recurrent.unroll`) returns,
which the tests compare them with:

- `lstm_recurrence`: a TensorFlow while loop with a hand-written backward pass;
- the same with `fused=True`: each step's element-wise work is one C++ op (`fused_lstm`);
- `cudnn_lstm`: cuDNN on a GPU (no recurrent dropout).

Arguments shared by the recurrences: `projected` (T, B, 4H) time-major x_t W + b of every
step; `recurrent_kernel` U (H, 4H); h0, c0 (B, H); `step_mask` optional (T, B, 1) bool, False
on padding, where the state passes through unchanged; `dropout` optional (T, B, H) mask,
already divided by the keep probability, on the cell candidate; `reverse` runs from the last
step to the first; `matmul_dtype` None or "bfloat16" for the recurrent matmuls. They return
(hs (T, B, H) in input order, h_T, c_T).
"""

import functools

import tensorflow as tf

from sketch_rnn.tf_backend import fused_lstm


def lstm_recurrence(projected, recurrent_kernel, h0, c0, step_mask=None, dropout=None,
                    reverse=False, matmul_dtype=None, fused=False):
    """The LSTM recurrence with a hand-written backward pass.

    With `fused`, each step's element-wise work (forward and backward) is one compiled op
    (`fused_lstm`, where `fused_lstm.load()` builds); the loops and matmuls are the same. Its
    recurrent matmuls cover only the rows up to the last one still inside a sequence: run it
    on batches sorted by `longest_first`.

    The forward loop stores h, c and the gates' sigmoids; the backward loop's only matmul is
    dh_{t-1} = dgates_t U^T, and dU = sum_t h_{t-1}^T dgates_t is one large matmul after it,
    as cuDNN does, instead of a small matmul per step plus the bookkeeping of a
    differentiated loop. Both loops read their step of each input by index rather than
    unstacking whole sequences, and tanh(g) is taken as 2 sigmoid(2g) - 1 so that one
    sigmoid covers all four gates.
    """
    key = (step_mask is not None, dropout is not None, reverse, matmul_dtype)
    module = tf.autograph.experimental.do_not_convert(fused_lstm.load)() if fused else None
    variant = (module is not None, *key)
    if variant not in _RECURRENCES:  # one function per variant, built once
        make = functools.partial(fused_lstm.make_recurrence, module) if module else _make_tf_recurrence
        _RECURRENCES[variant] = make(*key)
    function = _RECURRENCES[variant]
    # A tensor, not the variable: tf.custom_gradient would otherwise want variable gradients.
    kernel = tf.identity(tf.convert_to_tensor(recurrent_kernel))
    tensors = [projected, kernel, h0, c0]
    return function(*tensors, *(t for t in (step_mask, dropout) if t is not None))


_RECURRENCES = {}


def longest_first(run, inputs, constant, state, step_mask, dropout):
    """`run(inputs, constant, state, step_mask, dropout) -> (hs, state)` on the batch's rows
    sorted by length, longest first, with its results returned in the input's order.

    Then the rows still inside a sequence at any step come first, and the fused ops multiply
    only those (padding is half the steps of a typical batch). Time-major: rows are axis 1 of
    `inputs`, `step_mask` and `dropout`, axis 0 of `constant` and the state's tensors.
    """
    lengths = tf.reduce_sum(tf.cast(step_mask[..., 0], tf.int32), axis=0)  # (B,)
    order = tf.argsort(-lengths, stable=True)
    over_time = functools.partial(tf.gather, indices=order, axis=1)
    rows = functools.partial(tf.gather, indices=order, axis=0)
    hs, state = run(over_time(inputs), None if constant is None else rows(constant),
                    tuple(rows(s) for s in state), over_time(step_mask),
                    None if dropout is None else over_time(dropout))
    restore = tf.argsort(order)
    return tf.gather(hs, restore, axis=1), tuple(tf.gather(s, restore) for s in state)


def _recurrent_matmul(h, kernel, matmul_dtype):
    """h @ U; with `matmul_dtype` h is rounded to it, and U must already be in it."""
    if matmul_dtype is None:
        return tf.matmul(h, kernel)
    return tf.cast(tf.matmul(tf.cast(h, matmul_dtype), kernel), h.dtype)


def _matmul_operand(kernel, matmul_dtype):
    return kernel if matmul_dtype is None else tf.cast(kernel, matmul_dtype)


def _make_tf_recurrence(has_mask, has_dropout, reverse, matmul_dtype):
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
            # Dense: a gather of the rows (the fused engine's sort, longest_first) sends back IndexedSlices.
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


def cudnn_lstm(inputs, kernel, recurrent_kernel, bias, state, step_mask=None, reverse=False):
    """cuDNN's LSTM (GPU only; no recurrent dropout) on `cells.LSTMCell`'s weights.

    Args:
        inputs: time-major (T, B, D), the constant input already appended to every step.
        kernel, recurrent_kernel, bias: the cell's, gates i, f, g, o (cuDNN's order too).
        state: (h0, c0), each (B, H).
        step_mask: optional (T, B, 1) bool; padding must come after each sequence's steps.
        reverse: run each sequence from its last step to its first.

    Returns:
        (hs (T, B, H) in input order, zero on padding; (h, c) after each sequence's last step).
    """
    steps, batch = tf.shape(inputs)[0], tf.shape(inputs)[1]
    if step_mask is None:
        lengths = tf.fill([batch], steps)
    else:
        lengths = tf.reduce_sum(tf.cast(step_mask[..., 0], tf.int32), axis=0)
    weights = tf.split(kernel, 4, axis=1) + tf.split(recurrent_kernel, 4, axis=1)
    # cuDNN adds an input bias and a recurrent bias; the first is zero, the second the cell's.
    biases = tf.split(tf.concat([tf.zeros_like(bias), bias], 0), 8)
    params = tf.concat([tf.reshape(tf.transpose(w), [-1]) for w in weights] + biases, 0)
    if reverse:  # reverse each sequence's own steps, leaving its padding at the end
        inputs = tf.reverse_sequence(inputs, lengths, seq_axis=0, batch_axis=1)
    hs, h, c, _, _ = tf.raw_ops.CudnnRNNV3(
        input=inputs, input_h=state[0][None], input_c=state[1][None], params=params,
        is_training=True, rnn_mode="lstm", sequence_lengths=lengths, time_major=True)
    if reverse:
        hs = tf.reverse_sequence(hs, lengths, seq_axis=0, batch_axis=1)
    return hs, (h[0], c[0])
