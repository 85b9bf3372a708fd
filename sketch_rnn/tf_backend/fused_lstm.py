"""The LSTM recurrence with each step's element-wise work fused into one C++ op (CPU, TensorFlow).

`tf_backend.lstm.lstm_recurrence` runs the LSTM as a TensorFlow while loop whose only matmul
per step is h @ U (d_gates @ U^T going back). Written in TensorFlow ops, the rest of a step (the
input projection's add, four activations, the cell update, recurrent dropout, the padding
mask, casts for bf16) is about 20 small ops forward and 30 back, and on a CPU those, not the
matmuls, take most of the time. `lstm_cell.cc` (beside this file) does that work in one pass per step
(`SketchLstmForwardStep`, `SketchLstmBackwardStep`); the matmuls stay TensorFlow's (oneDNN,
bf16 where the CPU has it).

The op library is compiled on first use with the C++ compiler (`$CXX`, else g++) and the
flags TensorFlow reports (`tf.sysconfig`), for the CPU it runs on, and cached in
`$SKETCH_RNN_KERNEL_DIR` (default `~/.cache/sketch-rnn-keras`) under a hash of the source,
the TensorFlow version, the compiler and the CPU. Where it cannot be built or loaded (no
compiler, another backend, a GPU, XLA), `load()` returns None with one warning, `reason()`
says why, and the engine dispatcher (`sketch_rnn.engines`) picks the TensorFlow-op recurrence,
which computes the same function.
"""

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lstm_cell.cc")

_loaded = {}  # "module" -> the op module or None once tried
_lock = threading.Lock()  # one build at a time; other callers wait for its result


def kernel_dir():
    """Where compiled kernels are cached."""
    if os.environ.get("SKETCH_RNN_KERNEL_DIR"):
        return os.environ["SKETCH_RNN_KERNEL_DIR"]
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "sketch-rnn-keras")


def load():
    """The compiled op module (built on first use), or None where it cannot be used."""
    with _lock:
        if "module" not in _loaded:
            try:
                _loaded["module"] = _load()
            except Exception as error:  # whatever goes wrong, the model runs on TF ops
                _loaded["module"] = None
                if not isinstance(error, _Unavailable):
                    error = f"{type(error).__name__}: {error}"
                _loaded["reason"] = str(error) or "not on this device or backend"
                if str(error):
                    warnings.warn(f"sketch-rnn: the fused LSTM kernel is off ({error}); using "
                                  "TensorFlow ops for the LSTM steps (same results, slower).",
                                  stacklevel=2)
        return _loaded["module"]


def reason():
    """Why `load()` returned None ('' before it was called or when it succeeded)."""
    return _loaded.get("reason", "")


class _Unavailable(Exception):
    """The fused kernel cannot be used here; the message says why ('' for silently)."""


def _load():
    import keras

    if keras.backend.backend() != "tensorflow":
        raise _Unavailable("")
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        raise _Unavailable("")  # a CPU kernel; on a GPU the model's tensors live there
    compiler = os.environ.get("CXX", "g++")
    if shutil.which(compiler) is None:
        raise _Unavailable(f"no C++ compiler: {compiler!r} is not on PATH; set CXX")
    tf_flags = tf.sysconfig.get_compile_flags() + tf.sysconfig.get_link_flags()
    with open(SOURCE, "rb") as source:
        code = source.read()
    key = hashlib.sha256(b"\0".join([
        code, tf.__version__.encode(), " ".join(tf_flags).encode(), compiler.encode(),
        _compiler_version(compiler), _cpu_fingerprint(), platform.machine().encode(),
    ])).hexdigest()[:16]
    path = os.path.join(kernel_dir(), f"lstm_cell-{key}.so")
    if not os.path.exists(path):
        _build(compiler, tf_flags, path)
    try:
        return tf.load_op_library(path)
    except Exception as error:  # a damaged cached file: build it again, once
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
    try:
        os.remove(path)
    except OSError:
        pass
    _build(compiler, tf_flags, path)
    try:
        return tf.load_op_library(path)
    except Exception as error:
        raise _Unavailable(f"could not load {path} ({first}), nor after rebuilding it: "
                           f"{str(error).splitlines()[0]}") from error


def _build(compiler, tf_flags, path):
    folder = os.path.dirname(path)
    try:
        os.makedirs(folder, exist_ok=True)
        scratch = tempfile.TemporaryDirectory(dir=folder)
    except OSError as error:
        raise _Unavailable(f"cannot write the kernel to {folder} ({error.strerror}); "
                           "set SKETCH_RNN_KERNEL_DIR to a writable folder") from error
    print("sketch-rnn: compiling the fused LSTM kernel (once per machine, about 15 s)...",
          file=sys.stderr, flush=True)
    # -march=native: the cache key includes the CPU. Eigen's AVX512-FP16 code does not build
    # with every compiler, and the kernel has no use for it; plain flags are the last resort.
    attempts = [["-march=native", "-mno-avx512fp16"], ["-march=native"], []]
    error = "(no output)"
    with scratch:
        target = os.path.join(scratch.name, os.path.basename(path))
        for arch in attempts:
            command = [compiler, "-std=c++17", "-O3", *arch, "-shared", "-fPIC",
                       "-Wno-deprecated-declarations", SOURCE, "-o", target, *tf_flags]
            try:
                result = subprocess.run(command, capture_output=True, text=True, timeout=600)
            except (OSError, subprocess.TimeoutExpired) as failure:
                raise _Unavailable(f"{compiler} failed to run: {failure}") from failure
            if result.returncode == 0:
                os.replace(target, path)  # atomic: another process may be building it too
                return
            error = (result.stderr.strip().splitlines() or [error])[-1]
    raise _Unavailable(f"{compiler} could not build {SOURCE}: {error}")


def _compiler_version(compiler):
    try:
        return subprocess.run([compiler, "--version"], capture_output=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return b""


def _cpu_fingerprint():
    """What -march=native depends on: the CPU's model and feature flags."""
    try:
        with open("/proc/cpuinfo", "rb") as cpuinfo:
            lines = [line for line in cpuinfo.read().splitlines()
                     if line.startswith((b"model name", b"flags", b"Features", b"CPU part"))]
        return b"\n".join(sorted(set(lines)))
    except OSError:
        return platform.processor().encode()


# ---------------------------------------------------------------------------------------
# The recurrence
# ---------------------------------------------------------------------------------------

def copies():
    """How many times the ops could not update a sequence buffer in place (and copied it)."""
    module = load()
    return 0 if module is None else int(module.sketch_lstm_copies())


def make_recurrence(module, has_mask, has_dropout, reverse, matmul_dtype):
    """The function (projected, recurrent_kernel, h0, c0, [step_mask], [dropout]) ->
    (hs, h_T, c_T) with the arguments and results of `lstm.lstm_recurrence`, on the
    ops of `module` (from `load()`)."""
    import tensorflow as tf

    mm_dtype = tf.as_dtype(matmul_dtype or "float32")
    bf16 = mm_dtype != tf.float32

    @tf.custom_gradient
    def recurrence(projected, recurrent_kernel, h0, c0, *extra):
        steps, batch = tf.shape(projected)[0], tf.shape(projected)[1]
        units = tf.shape(h0)[-1]
        # The ops take empty tensors for "no padding mask" and "no dropout".
        no_tensor = tf.zeros([0], projected.dtype)
        inside = extra[0] if has_mask else tf.zeros([0], tf.bool)  # (T, B, 1) bool
        dropout = extra[-1] if has_dropout else no_tensor  # (T, B, H)
        kernel = tf.cast(recurrent_kernel, mm_dtype)
        if has_mask:
            # Step k computes rows 0 .. active[k] - 1: up to the last row inside a sketch there
            # (with the longest sketches first, as longest_first sorts them, only those rows).
            inside_rows = tf.where(tf.reshape(inside, (steps, batch)), tf.range(1, batch + 1), 0)
            active = tf.reduce_max(tf.concat([inside_rows, tf.zeros((steps, 1), tf.int32)], 1), axis=1)
        else:
            active = tf.zeros([0], tf.int32)
        # With bf16 matmuls, dU's operands are buffers of their own: they keep only active rows.
        packed = has_mask and bf16

        def rows_at(k):  # the rows the matmul of step k needs
            return active[k] if has_mask else batch

        def empty(width, dtype=projected.dtype):  # a sequence buffer the loop fills, step by step
            return tf.raw_ops.Empty(shape=tf.stack([steps, batch, width]), dtype=dtype)

        # Each step writes its h, the c and h it started from (h in the matmul's dtype, for
        # dU) and its activated gates at its time step k; the backward pass reads them there.
        # The gates replace the input projection in its own buffer (it is not needed after
        # its step), and the backward pass replaces them by their gradient in turn: one
        # (T, B, 4H) buffer, updated in place, instead of three.
        def body(t, h, h_matmul, c, *buffers):
            k = steps - 1 - t if reverse else t
            h, h_matmul, c, *buffers = module.sketch_lstm_forward_step(
                k, tf.matmul(h_matmul, kernel), h, c, inside, dropout, active, *buffers,
                reverse=reverse, packed=packed)
            return (t + 1, h, h_matmul, c, *buffers)

        first = steps - 1 if reverse else 0
        start = (0, h0, tf.cast(h0, mm_dtype)[:rows_at(first)], c0, empty(units), empty(units),
                 projected, empty(units, mm_dtype))
        _, h, _, c, hs, c_prevs, gates, h_prevs = tf.while_loop(
            lambda t, *_: t < steps, body, start, maximum_iterations=steps,
            shape_invariants=_rows_vary(start, 2))  # h_matmul: the next step's active rows

        def grad(d_hs, d_h, d_c):
            # Dense: a gather of the rows (the fused engine's sort, longest_first) sends back IndexedSlices.
            dh_pass = tf.zeros_like(h0) if d_h is None else tf.convert_to_tensor(d_h)  # through padding rows
            d_c = tf.zeros_like(c0) if d_c is None else tf.convert_to_tensor(d_c)
            d_hs = None if d_hs is None else tf.convert_to_tensor(d_hs)
            kernel_t = tf.cast(tf.transpose(recurrent_kernel), mm_dtype)

            def back(i, dh_matmul, dh_pass, dc, d_projected, d_gates_matmul):
                k = i if reverse else steps - 1 - i  # the forward loop's steps, last first
                d_gates_k, dh_pass, dc, d_projected, d_gates_matmul = module.sketch_lstm_backward_step(
                    c_prevs, k, dh_matmul, dh_pass, no_tensor if d_hs is None else d_hs, dc,
                    inside, dropout, active, d_projected, d_gates_matmul, packed=packed)
                return i + 1, tf.matmul(d_gates_k, kernel_t), dh_pass, dc, d_projected, d_gates_matmul

            # No gradient through U into the last step: a matmul result of no rows. The
            # gates' buffer becomes d_projected, step by step.
            start = (0, tf.zeros((0, units), mm_dtype), dh_pass, d_c, gates,
                     empty(4 * units, mm_dtype) if bf16 else tf.zeros([0], mm_dtype))
            _, dh_matmul, dh_pass, dc0, d_projected, d_gates_matmul = tf.while_loop(
                lambda i, *_: i < steps, back, start, maximum_iterations=steps,
                shape_invariants=_rows_vary(start, 1))  # dh_matmul: as many rows as d_gates_k
            # The first step's active rows got a gradient through U; the others pass through.
            dh_matmul = tf.pad(dh_matmul, [[0, batch - tf.shape(dh_matmul)[0]], [0, 0]])
            dh0 = tf.cast(dh_matmul, h0.dtype) + dh_pass
            # dU = sum_k h_{k-1}^T d_gates_k, one matmul over all steps (their active rows).
            d_gates_flat = tf.reshape(d_gates_matmul if bf16 else d_projected, (-1, 4 * units))
            h_flat = tf.reshape(h_prevs, (-1, units))
            if packed:
                total = tf.reduce_sum(active)
                d_gates_flat, h_flat = d_gates_flat[:total], h_flat[:total]
            d_kernel = tf.cast(tf.matmul(h_flat, d_gates_flat, transpose_a=True), projected.dtype)
            return (d_projected, d_kernel, dh0, dc0) + (None,) * len(extra)

        return (hs, h, c), grad

    return recurrence


def _rows_vary(loop_vars, position):
    """Shape invariants of a while loop's variables: their shapes, except that the variable
    at `position` may change its number of rows from one step to the next."""
    import tensorflow as tf

    shapes = [tf.TensorShape(tf.convert_to_tensor(v).shape) for v in loop_vars]
    shapes[position] = tf.TensorShape([None]).concatenate(shapes[position][1:])
    return tuple(shapes)
