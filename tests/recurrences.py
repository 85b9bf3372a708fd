"""The LSTM recurrences the tests compare, with one signature:
(projected (T, B, 4H), recurrent_kernel (H, 4H), h0, c0, step_mask, dropout, reverse, matmul_dtype)
-> (hs (T, B, H), h_T, c_T)."""

from sketch_rnn.cells import LSTMCell
from sketch_rnn.recurrent import Recurrent
from sketch_rnn.unroll import unroll


def lstm_recurrence_autodiff(projected, recurrent_kernel, h0, c0, step_mask=None, dropout=None,
                             reverse=False, matmul_dtype=None):
    """The generic unroll of `LSTMCell.step` (the reference), differentiated by the backend."""
    cell = LSTMCell(recurrent_kernel.shape[0], matmul_dtype=matmul_dtype)
    weights = {"recurrent_kernel": cell.matmul_operand(recurrent_kernel)}
    hs, (h, c) = unroll(cell, projected, (h0, c0), step_mask, dropout, reverse, weights)
    return hs, h, c


def lstm_recurrence(*args, **kwargs):
    """The TensorFlow engines' recurrence (hand-written backward; fused=True for the C++ op)."""
    from sketch_rnn.tf_backend.lstm import lstm_recurrence

    return lstm_recurrence(*args, **kwargs)


def lstm_layer(units, matmul_dtype=None, fused_cell=False, **kwargs):
    """A `Recurrent` layer over an `LSTMCell` (the arguments of the former SketchLSTM)."""
    return Recurrent(LSTMCell(units, matmul_dtype=matmul_dtype), fused=fused_cell, **kwargs)
