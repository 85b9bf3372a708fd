"""The generic unroll: any cell over a sequence with `keras.ops`, on any Keras backend.

It is the reference every faster engine (`sketch_rnn.engines`) is tested against, and the
engine of every cell that has no faster one.
"""

from keras import ops

from sketch_rnn import backend


def project(cell, inputs, constant=None):
    """The input's share of every step at once: (T, B, D1) [+ (B, D2) constant] -> (T, B, P)."""
    return backend.add_over_time(cell.input_projection(inputs), cell.constant_projection(constant))


def unroll(cell, projected, state, step_mask=None, dropout=None, reverse=False, weights=None):
    """Runs `cell.step` over time-major projected inputs.

    Args:
        cell: a `cells.RecurrentCell`.
        projected: (T, B, P), `project(cell, inputs, constant)`.
        state: the initial state, a tuple of (B, n) tensors.
        step_mask: optional (T, B, 1) bool, False on padding: there the state passes
            through unchanged and the output repeats the previous h.
        dropout: optional (T, B, H) recurrent dropout masks, divided by the keep probability.
        reverse: run from the last step to the first (outputs stay in input order).
        weights: `cell.step_weights()` to use (by default the cell's own).

    Returns:
        (outputs (T, B, H), the final state).
    """
    if weights is None:  # e.g. kernels cast to bf16: once per sequence, not once per step
        weights = cell.step_weights()
    xs = (projected,) + tuple(t for t in (step_mask, dropout) if t is not None)

    def step(state, inputs):
        dropout_t = inputs[-1] if dropout is not None else None
        output, new_state = cell.step(inputs[0], state, dropout_t, weights)
        if step_mask is not None:
            inside_t = inputs[1]
            new_state = tuple(ops.where(inside_t, new, old) for new, old in zip(new_state, state))
            output = ops.where(inside_t, output, state[0])
        return tuple(new_state), (output,)

    state, (outputs,) = backend.scan(step, tuple(state), xs, reverse=reverse)
    return outputs, state
