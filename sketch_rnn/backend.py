"""The few things that differ between Keras backends, behind one small interface.

On TensorFlow they come from `sketch_rnn.tf_backend` (the only package that imports
TensorFlow); on JAX and PyTorch from `keras.ops`, or from JAX itself for compiling.
"""

import keras
from keras import ops


def name():
    """The Keras backend: "tensorflow", "jax", "torch" or "numpy"."""
    return keras.backend.backend()


def is_tensorflow():
    return name() == "tensorflow"


def tensorflow():
    """The TensorFlow backend module (import it only on TensorFlow)."""
    from sketch_rnn import tf_backend

    return tf_backend


def scan(step, init, xs, reverse=False):
    """`keras.ops.scan`: `step(carry, x_t) -> (carry, y_t)` over axis 0 of the tuple `xs`."""
    if is_tensorflow():
        return tensorflow().scan(step, init, xs, reverse)
    return ops.scan(step, init, tuple(xs), reverse=reverse)


def add_over_time(sequence, addend):
    """sequence (T, B, D) + addend, (D) or (B, D), the same at every step."""
    if is_tensorflow():
        return tensorflow().add_over_time(sequence, addend)
    return sequence + addend


def gpu_available():
    if is_tensorflow():
        return tensorflow().gpu_available()
    return False  # only the TensorFlow backend has a GPU engine (cuDNN)


def compile_function(function, input_signature, jit_compile=True):
    """`function` compiled for inputs of `input_signature`, a list of (shape, dtype).

    TensorFlow: one `tf.function` trace (XLA if `jit_compile`); JAX: `jax.jit` if
    `jit_compile` (it compiles once per input shape); else, and on PyTorch, the function as
    it is (eager).
    """
    if is_tensorflow():
        return tensorflow().compile_function(function, input_signature, jit_compile)
    if name() == "jax" and jit_compile:
        import jax

        return jax.jit(function)
    return function


def replica_context():
    """(replica index, number of replicas) of the data-parallel step being run.

    Under tf.distribute, inside `strategy.run` (which `model.fit` uses), the index is a
    tensor (the replica's place across every worker) and the count a Python int; anywhere
    else, and on the other backends, (0, 1).
    """
    if is_tensorflow():
        return tensorflow().distribute.replica_context()
    return 0, 1


def cross_replica_sum(value):
    """`value` summed over the replicas of the step (differentiable); `value` itself
    outside a data-parallel step."""
    if is_tensorflow():
        return tensorflow().distribute.cross_replica_sum(value)
    return value


def adam(**kwargs):
    """`keras.optimizers.Adam(**kwargs)`; under a tf.distribute scope of several replicas,
    one whose clipping applies to the gradient summed over them (`tf_backend.distribute`)."""
    if is_tensorflow():
        return tensorflow().distribute.adam(**kwargs)
    return keras.optimizers.Adam(**kwargs)
