"""Engines: the ways a cell can be run over a sequence, and the one place that chooses.

Every engine takes the same arguments and returns what the generic unroll returns:
`run(cell, inputs (T, B, D1), constant (B, D2) or None, state, step_mask (T, B, 1) or None,
dropout (T, B, H) or None, reverse) -> (outputs (T, B, H), final state)`, time-major.

| engine | cells | where | what runs |
|---|---|---|---|
| generic | all | every backend | `unroll.unroll`: `keras.ops` scan, differentiated by the backend |
| tf_lstm | lstm | TensorFlow | a while loop with a hand-written backward pass (`tf_backend.lstm`) |
| fused_lstm | lstm | TensorFlow, CPU | the same with each step's element-wise work in one C++ op |
| cudnn | lstm | TensorFlow, GPU | cuDNN (`accelerate_LSTM`; no recurrent dropout) |

`choose` picks one per layer and says why; the training command prints `describe(model)`.
"""

import dataclasses
from collections.abc import Callable

from keras import ops

from sketch_rnn import backend, unroll
from sketch_rnn.cells import LSTMCell


@dataclasses.dataclass(frozen=True)
class Engine:
    name: str  # generic, tf_lstm, fused_lstm or cudnn
    description: str  # what runs, for people
    reason: str  # why this engine, for people
    run: Callable
    supports_jit: bool = True  # False where XLA cannot compile it (a custom op)


def run_generic(cell, inputs, constant, state, step_mask, dropout, reverse):
    projected = unroll.project(cell, inputs, constant)
    return unroll.unroll(cell, projected, state, step_mask, dropout, reverse)


def _run_tf_lstm(cell, inputs, constant, state, step_mask, dropout, reverse, fused=False):
    lstm = backend.tensorflow().lstm

    def run(inputs, constant, state, step_mask, dropout):
        hs, h, c = lstm.lstm_recurrence(unroll.project(cell, inputs, constant),
                                        cell.recurrent_kernel, *state, step_mask, dropout,
                                        reverse=reverse, matmul_dtype=cell.matmul_dtype,
                                        fused=fused)
        return hs, (h, c)

    if fused and step_mask is not None:  # the fused ops skip the rows past every sequence's end
        return lstm.longest_first(run, inputs, constant, state, step_mask, dropout)
    return run(inputs, constant, state, step_mask, dropout)


def _run_fused_lstm(cell, inputs, constant, state, step_mask, dropout, reverse):
    return _run_tf_lstm(cell, inputs, constant, state, step_mask, dropout, reverse, fused=True)


def _run_cudnn(cell, inputs, constant, state, step_mask, dropout, reverse):
    if constant is not None:  # cuDNN projects each step's whole input itself
        steps = ops.shape(inputs)[0]
        inputs = ops.concatenate([inputs, ops.repeat(constant[None], steps, axis=0)], axis=-1)
    return backend.tensorflow().lstm.cudnn_lstm(inputs, cell.kernel, cell.recurrent_kernel,
                                                cell.bias, state, step_mask, reverse)


def _generic(reason):
    return Engine("generic", "generic unroll (keras.ops scan)", reason, run_generic)


def choose(cell, accelerate=False, custom_gradient=True, fused=True):
    """The engine for `cell` on this backend and device.

    Args:
        cell: a `cells.RecurrentCell`.
        accelerate: prefer cuDNN (hparam accelerate_LSTM).
        custom_gradient: allow the hand-written backward pass (custom_lstm_gradient).
        fused: allow the fused C++ op (fused_lstm_cell, and not jit_compile).

    Returns:
        an `Engine`.
    """
    is_lstm = isinstance(cell, LSTMCell)
    kind = getattr(cell, "name_in_hparams", type(cell).__name__)
    note = ""
    if accelerate:
        if is_lstm and backend.gpu_available():
            return Engine("cudnn", "cuDNN", "accelerate_LSTM on a GPU", _run_cudnn,
                          supports_jit=False)
        note = ("accelerate_LSTM: no GPU; " if is_lstm
                else f"accelerate_LSTM: cuDNN has no {kind} cell; ")
    if not backend.is_tensorflow():
        return _generic(f"{note}the {backend.name()} backend has no faster engine")
    if not is_lstm:
        return _generic(f"{note}no faster engine for the {kind} cell")
    if not custom_gradient:
        return _generic(f"{note}custom_lstm_gradient=False")
    if fused:
        fused_lstm = backend.tensorflow().fused_lstm
        if fused_lstm.load() is not None:
            return Engine("fused_lstm", "fused C++ kernel", f"{note}fused_lstm_cell=True",
                          _run_fused_lstm, supports_jit=False)
        why = fused_lstm.reason()
    else:
        why = "fused_lstm_cell=False or jit_compile=True"
    return Engine("tf_lstm", "TensorFlow ops with a hand-written backward pass", f"{note}{why}",
                  _run_tf_lstm)


def describe(model):
    """One line per recurrent layer of `model`: its cell and the engine that runs it."""
    from sketch_rnn.recurrent import Recurrent

    lines = []
    for layer in model.layers:
        if isinstance(layer, Recurrent) and layer.engine is not None:
            cell, engine = layer.cell, layer.engine
            kind = getattr(cell, "name_in_hparams", type(cell).__name__)
            lines.append(f"{layer.name} ({kind}, {cell.units} units): {engine.description} "
                         f"({engine.reason})")
    return lines
