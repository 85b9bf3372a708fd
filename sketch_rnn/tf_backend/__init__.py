"""Everything that imports TensorFlow, behind the small interface `sketch_rnn.backend` uses.

- `scan`: a `tf.while_loop` over TensorArrays with `keras.ops.scan`'s semantics;
- `add_over_time`: a sequence plus a per-sequence addend, with a matmul gradient;
- `compile_function`: `tf.function`, optionally with XLA, for the sampling loop;
- `lstm`: the LSTM engines (hand-written backward pass on TF ops, the fused C++ op of
  `fused_lstm`, cuDNN on a GPU), which `sketch_rnn.engines` chooses between;
- `distribute`: data-parallel training with tf.distribute (strategies, per-replica input,
  the replica's place in a step).
"""

import tensorflow as tf


def scan(step, init, xs, reverse=False):
    """`keras.ops.scan` semantics: `step(carry, x_t) -> (carry, y_t)` over axis 0 of `xs`.

    A plain `tf.while_loop` over TensorArrays: Keras's TF scan needs y_t shaped like the carry
    and fails when the number of steps is unknown at trace time, which it is for
    length-bucketed batches.
    """
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


def add_over_time(sequence, addend):
    """sequence (T, B, D) + addend, (D) or (B, D), the same at every step.

    The gradient of `addend` (a sum over T, or T and B) is a matmul with a row of ones:
    several times faster on a CPU than the reduction autodiff uses.
    """

    @tf.custom_gradient
    def add(sequence, addend):
        def grad(d_sum):
            flat = tf.reshape(d_sum, (-1, tf.size(addend)))  # (T, B * D) or (T * B, D)
            ones = tf.ones((1, tf.shape(flat)[0]), d_sum.dtype)
            return d_sum, tf.reshape(tf.matmul(ones, flat), tf.shape(addend))

        return sequence + addend, grad

    # A tensor, not the variable: tf.custom_gradient would otherwise want variable gradients.
    return add(sequence, tf.identity(tf.convert_to_tensor(addend, sequence.dtype)))


def compile_function(function, input_signature, jit_compile):
    """`function` traced once for `input_signature` ((shape, dtype) pairs), XLA if asked."""
    signature = [tf.TensorSpec(shape, dtype) for shape, dtype in input_signature]
    return tf.function(function, input_signature=signature, jit_compile=jit_compile)


def gpu_available():
    return bool(tf.config.list_physical_devices("GPU"))


from sketch_rnn.tf_backend import distribute, fused_lstm, lstm  # noqa: E402  (they use the helpers above)

__all__ = ["scan", "add_over_time", "compile_function", "gpu_available", "distribute", "fused_lstm",
           "lstm"]
