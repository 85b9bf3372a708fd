"""The recurrent cells (sketch_rnn/cells.py) against a NumPy re-implementation of the official ones.

The references below are Magenta's `sketch_rnn/rnn.py` formulas (LSTMCell, LayerNormLSTMCell,
HyperLSTMCell, layer_norm_all, layer_norm, hyper_norm) in float64 NumPy, reading the official
variables by their official names, gates i, j, f, o and the official state vectors. Our weights
reach them through the mapping the cells' docstrings document, so the tests check that mapping
too (the one an import of official checkpoints will use).
"""

import keras
import numpy as np
import pytest
from keras import ops

from sketch_rnn.cells import (
    CELLS,
    HyperLSTMCell,
    LayerNormLSTMCell,
    LSTMCell,
    LSTMOrthogonal,
    make_cell,
)

BATCH, UNITS, HYPER_UNITS, EMBEDDING = 3, 8, 6, 4
STROKE_DIM, Z_DIM = 5, 3  # the per-step input and the constant one: D = 8
STEPS = 4
HYPER = {"hyper_num_units": HYPER_UNITS, "hyper_embedding_size": EMBEDDING}
# (class, constructor kwargs) of every cell variant under test.
VARIANTS = {
    "lstm": (LSTMCell, {}),
    "layer_norm": (LayerNormLSTMCell, {}),
    "hyper": (HyperLSTMCell, HYPER),
    "hyper_without_layer_norm": (HyperLSTMCell, {**HYPER, "use_layer_norm": False}),
}


# ---- the official equations, float64 NumPy ----

def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def layer_norm_all(h, base, num_units, gamma, beta, epsilon=1e-3):
    h = h.reshape(-1, base, num_units)
    mean = h.mean(axis=2, keepdims=True)
    var = np.square(h - mean).mean(axis=2, keepdims=True)
    h = ((h - mean) / np.sqrt(var + epsilon)).reshape(-1, base * num_units)
    return gamma * h + beta


def layer_norm(x, gamma, beta, epsilon=1e-3):
    mean = x.mean(axis=1, keepdims=True)
    var = np.square(x - mean).mean(axis=1, keepdims=True)
    return gamma * (x - mean) / np.sqrt(var + epsilon) + beta


def candidate(j, keep_mask):
    """The official tf.nn.dropout(tanh(j), keep), with its (already scaled) mask given."""
    return np.tanh(j) if keep_mask is None else np.tanh(j) * keep_mask


def official_lstm(v, x, state, keep_mask=None, forget_bias=1.0):
    c, h = np.split(state, 2, axis=1)
    w_full = np.concatenate([v["W_xh"], v["W_hh"]], axis=0)
    hidden = np.concatenate([x, h], axis=1) @ w_full + v["bias"]
    i, j, f, o = np.split(hidden, 4, axis=1)
    new_c = c * sigmoid(f + forget_bias) + sigmoid(i) * candidate(j, keep_mask)
    new_h = np.tanh(new_c) * sigmoid(o)
    return new_h, np.concatenate([new_c, new_h], axis=1)


def official_layer_norm_lstm(v, x, state, keep_mask=None, forget_bias=1.0):
    h, c = np.split(state, 2, axis=1)
    num_units = h.shape[1]
    w_full = np.concatenate([v["W_xh"], v["W_hh"]], axis=0)
    concat = np.concatenate([x, h], axis=1) @ w_full
    concat = layer_norm_all(concat, 4, num_units, v["ln_all/ln_gamma"], v["ln_all/ln_beta"])
    i, j, f, o = np.split(concat, 4, axis=1)
    new_c = c * sigmoid(f + forget_bias) + sigmoid(i) * candidate(j, keep_mask)
    new_h = np.tanh(layer_norm(new_c, v["ln_c/ln_gamma"], v["ln_c/ln_beta"])) * sigmoid(o)
    return new_h, np.concatenate([new_h, new_c], axis=1)


def official_hyper_lstm(v, x, state, num_units, use_layer_norm, keep_mask=None, forget_bias=1.0):
    total_h, total_c = np.split(state, 2, axis=1)
    h, c = total_h[:, :num_units], total_c[:, :num_units]
    hyper_state = np.concatenate([total_h[:, num_units:], total_c[:, num_units:]], axis=1)
    hyper_input = np.concatenate([x, h], axis=1)
    if use_layer_norm:
        hyper_output, hyper_new_state = official_layer_norm_lstm(
            scope(v, "LayerNormLSTMCell/"), hyper_input, hyper_state)
    else:
        hyper_output, hyper_new_state = official_lstm(scope(v, "LSTMCell/"), hyper_input, hyper_state)

    def hyper_norm(layer, name, use_bias):
        zw = hyper_output @ v[f"{name}/zw/super_linear_w"] + v[f"{name}/zw/super_linear_b"]
        result = (zw @ v[f"{name}/alpha/super_linear_w"]) * layer
        if use_bias:
            zb = hyper_output @ v[f"{name}/zb/super_linear_w"]
            result += zb @ v[f"{name}/beta/super_linear_w"]
        return result

    xh, hh = x @ v["W_xh"], h @ v["W_hh"]
    parts = []
    for k, (gate_x, gate_h, gate_b) in enumerate(zip(np.split(xh, 4, axis=1), np.split(hh, 4, axis=1),
                                                     np.split(v["bias"], 4))):
        name = "ijfo"[k]
        parts.append(hyper_norm(gate_x, f"hyper_{name}x", use_bias=False)
                     + hyper_norm(gate_h, f"hyper_{name}h", use_bias=True) + gate_b)
    concat = np.concatenate(parts, axis=1)
    if use_layer_norm:
        concat = layer_norm_all(concat, 4, num_units, v["ln_all/ln_gamma"], v["ln_all/ln_beta"])
    i, j, f, o = np.split(concat, 4, axis=1)
    new_c = c * sigmoid(f + forget_bias) + sigmoid(i) * candidate(j, keep_mask)
    new_h = np.tanh(layer_norm(new_c, v["ln_c/ln_gamma"], v["ln_c/ln_beta"])) * sigmoid(o)
    hyper_h, hyper_c = np.split(hyper_new_state, 2, axis=1)
    return new_h, np.concatenate([new_h, hyper_h, new_c, hyper_c], axis=1)


def scope(variables, prefix):
    return {name[len(prefix):]: value for name, value in variables.items() if name.startswith(prefix)}


# ---- our weights and states in the official layout (the documented mapping) ----

def value(variable):
    return ops.convert_to_numpy(variable).astype(np.float64)


def swap_gates(array):
    """Our i, f, g, o <-> the official i, j, f, o on the last axis: swap the middle blocks."""
    i, f, g, o = np.split(array, 4, axis=-1)
    return np.concatenate([i, g, f, o], axis=-1)


def official_lstm_variables(cell):
    bias = swap_gates(value(cell.bias))
    bias[2 * cell.units:3 * cell.units] -= 1.0  # our bias holds the official forget_bias
    return {"W_xh": swap_gates(value(cell.kernel)), "W_hh": swap_gates(value(cell.recurrent_kernel)),
            "bias": bias}


def official_layer_norm_variables(cell):
    return {
        "W_xh": swap_gates(value(cell.kernel)),
        "W_hh": swap_gates(value(cell.recurrent_kernel)),
        "ln_all/ln_gamma": swap_gates(value(cell.ln_gamma)),
        "ln_all/ln_beta": swap_gates(value(cell.ln_beta)),
        "ln_c/ln_gamma": value(cell.ln_c_gamma),
        "ln_c/ln_beta": value(cell.ln_c_beta),
    }


def official_hyper_variables(cell):
    e = cell.hyper_embedding_size
    variables = {
        "W_xh": swap_gates(value(cell.kernel)),
        "W_hh": swap_gates(value(cell.recurrent_kernel)),
        "bias": swap_gates(value(cell.bias)),
        "ln_c/ln_gamma": value(cell.ln_c_gamma),
        "ln_c/ln_beta": value(cell.ln_c_beta),
    }
    if cell.use_layer_norm:
        variables["ln_all/ln_gamma"] = swap_gates(value(cell.ln_gamma))
        variables["ln_all/ln_beta"] = swap_gates(value(cell.ln_beta))
    zw, zw_bias, alpha = value(cell.zw_kernel), value(cell.zw_bias), value(cell.alpha)
    zb, beta = value(cell.zb_kernel), value(cell.beta)
    for n, name in enumerate(["ix", "fx", "jx", "ox", "ih", "fh", "jh", "oh"]):
        variables[f"hyper_{name}/zw/super_linear_w"] = zw[:, n * e:(n + 1) * e]
        variables[f"hyper_{name}/zw/super_linear_b"] = zw_bias[n * e:(n + 1) * e]
        variables[f"hyper_{name}/alpha/super_linear_w"] = alpha[n]
        if n >= 4:
            variables[f"hyper_{name}/zb/super_linear_w"] = zb[:, (n - 4) * e:(n - 3) * e]
            variables[f"hyper_{name}/beta/super_linear_w"] = beta[n - 4]
    if cell.use_layer_norm:
        inner, prefix = official_layer_norm_variables(cell.hyper_cell), "LayerNormLSTMCell/"
    else:
        inner, prefix = official_lstm_variables(cell.hyper_cell), "LSTMCell/"
    variables.update({prefix + name: array for name, array in inner.items()})
    return variables


def official_variables(cell):
    variables = {LSTMCell: official_lstm_variables, LayerNormLSTMCell: official_layer_norm_variables,
                 HyperLSTMCell: official_hyper_variables}[type(cell)](cell)
    # The mapping accounts for every number of every weight, once.
    assert sum(a.size for a in variables.values()) == sum(int(np.prod(w.shape)) for w in cell.weights)
    return variables


def official_state(cell, state):
    """Our state tuple -> the official state vector."""
    state = [value(s) for s in state]
    if isinstance(cell, LSTMCell):
        h, c = state
        return np.concatenate([c, h], axis=1)
    if isinstance(cell, LayerNormLSTMCell):
        return np.concatenate(state, axis=1)
    h, c, hyper_h, hyper_c = state
    if not cell.use_layer_norm:  # the official inner LSTMCell's state is [c, h]
        hyper_h, hyper_c = hyper_c, hyper_h
    return np.concatenate([h, hyper_h, c, hyper_c], axis=1)


def official_step(cell, variables, x, state, keep_mask):
    if isinstance(cell, LSTMCell):
        return official_lstm(variables, x, state, keep_mask)
    if isinstance(cell, LayerNormLSTMCell):
        return official_layer_norm_lstm(variables, x, state, keep_mask, cell.forget_bias)
    return official_hyper_lstm(variables, x, state, cell.units, cell.use_layer_norm, keep_mask,
                               cell.forget_bias)


# ---- helpers ----

def built_cell(variant, rng=None, **kwargs):
    """A cell built for D = STROKE_DIM + Z_DIM, every weight random (scale 0.5) if rng is given."""
    cls, variant_kwargs = VARIANTS[variant]
    cell = cls(UNITS, **variant_kwargs, **kwargs)
    cell.build(STROKE_DIM + Z_DIM)
    if rng is not None:
        for weight in cell.weights:
            weight.assign(rng.normal(scale=0.5, size=weight.shape).astype("float32"))
    return cell


def random_state(cell, rng):
    return tuple(ops.convert_to_tensor(rng.normal(size=(BATCH, n)).astype("float32"))
                 for n in cell.state_sizes)


def random_inputs(rng):
    strokes = rng.normal(size=(STEPS, BATCH, STROKE_DIM)).astype("float32")  # (T, B, D1)
    z = rng.normal(size=(BATCH, Z_DIM)).astype("float32")  # (B, D2)
    return ops.convert_to_tensor(strokes), ops.convert_to_tensor(z)


def run_steps(cell, strokes, z, state, masks):
    """The cell's outputs and states over the steps, projections hoisted as the unroll does."""
    projected = cell.input_projection(strokes) + cell.constant_projection(z)  # (T, B, P)
    weights = cell.step_weights()
    outputs, states = [], []
    for t in range(strokes.shape[0]):
        output, state = cell.step(projected[t], state, masks[t], weights)
        outputs.append(ops.convert_to_numpy(output))
        states.append(state)
    return outputs, states


def dropout_masks(rng, use_dropout, keep=0.8):
    if not use_dropout:
        return [None] * STEPS
    return [ops.convert_to_tensor(((rng.random((BATCH, UNITS)) < keep) / keep).astype("float32"))
            for _ in range(STEPS)]


# ---- tests ----

@pytest.mark.parametrize("use_dropout", [False, True])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_step_equals_the_official_equations(variant, use_dropout):
    rng = np.random.default_rng(7)
    cell = built_cell(variant, rng)
    strokes, z = random_inputs(rng)
    state = random_state(cell, rng)
    masks = dropout_masks(rng, use_dropout)
    outputs, states = run_steps(cell, strokes, z, state, masks)

    variables = official_variables(cell)
    expected_state = official_state(cell, state)
    for t in range(STEPS):
        x = np.concatenate([value(strokes[t]), value(z)], axis=1)  # the official decoder input
        mask = None if masks[t] is None else value(masks[t])
        expected_h, expected_state = official_step(cell, variables, x, expected_state, mask)
        np.testing.assert_allclose(outputs[t], expected_h, atol=1e-5, err_msg=f"h, step {t}")
        np.testing.assert_allclose(official_state(cell, states[t]), expected_state, atol=1e-5,
                                   err_msg=f"state, step {t}")


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_dropout_mask_changes_the_step(variant):
    rng = np.random.default_rng(8)
    cell = built_cell(variant, rng)
    strokes, z = random_inputs(rng)
    state = random_state(cell, rng)
    plain, _ = run_steps(cell, strokes, z, state, dropout_masks(rng, False))
    dropped, _ = run_steps(cell, strokes, z, state, dropout_masks(rng, True))
    assert np.abs(plain[0] - dropped[0]).max() > 1e-3


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_hoisted_projections_equal_the_per_step_concatenated_input(variant):
    rng = np.random.default_rng(9)
    cell = built_cell(variant, rng)
    strokes, z = random_inputs(rng)
    hoisted = ops.convert_to_numpy(cell.input_projection(strokes) + cell.constant_projection(z))
    assert hoisted.shape == (STEPS, BATCH, cell.projection_size)
    for t in range(STEPS):
        x = ops.concatenate([strokes[t], z], axis=-1)  # (B, D)
        per_step = cell.input_projection(x) + cell.constant_projection()
        np.testing.assert_allclose(hoisted[t], ops.convert_to_numpy(per_step), atol=1e-5)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_state_from_vector_splits_in_state_order(variant):
    cell = built_cell(variant)
    total = sum(cell.state_sizes)
    vector = np.tile(np.arange(total, dtype="float32"), (BATCH, 1))
    state = cell.state_from_vector(ops.convert_to_tensor(vector))
    assert len(state) == len(cell.state_sizes)
    start = 0
    for part, size in zip(state, cell.state_sizes):
        np.testing.assert_array_equal(ops.convert_to_numpy(part), vector[:, start:start + size])
        start += size
    assert [tuple(s.shape) for s in cell.initial_state(BATCH)] == [(BATCH, n) for n in cell.state_sizes]


def test_state_sizes_and_projection_sizes():
    assert built_cell("layer_norm").state_sizes == (UNITS, UNITS)
    assert built_cell("layer_norm").projection_size == 4 * UNITS
    hyper = built_cell("hyper")
    assert hyper.state_sizes == (UNITS, UNITS, HYPER_UNITS, HYPER_UNITS)
    assert hyper.projection_size == 4 * UNITS + 4 * HYPER_UNITS


@pytest.mark.parametrize("cls, kwargs", [
    (LSTMCell, {"matmul_dtype": "bfloat16"}),
    (LayerNormLSTMCell, {"forget_bias": 0.5, "epsilon": 1e-5, "matmul_dtype": "bfloat16"}),
    (HyperLSTMCell, {"forget_bias": 0.5, "use_layer_norm": False, "hyper_num_units": 7,
                     "hyper_embedding_size": 3, "epsilon": 1e-4}),
])
def test_config_round_trip(cls, kwargs):
    cell = cls(UNITS, name="decoder_cell", **kwargs)
    config = cell.get_config()
    for key, expected in {"units": UNITS, **kwargs}.items():
        assert config[key] == expected, key
    rebuilt = cls.from_config(config)
    assert type(rebuilt) is cls and rebuilt.get_config() == config
    # Registered: found again by name through Keras serialisation.
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(cell))
    assert type(restored) is cls and restored.get_config() == config

    rng = np.random.default_rng(10)
    for c in (cell, rebuilt):
        c.build(STROKE_DIM + Z_DIM)
    rebuilt.set_weights(cell.get_weights())
    state = random_state(cell, rng)
    projected = ops.convert_to_tensor(rng.normal(size=(BATCH, cell.projection_size)).astype("float32"))
    np.testing.assert_array_equal(ops.convert_to_numpy(cell.step(projected, state)[0]),
                                  ops.convert_to_numpy(rebuilt.step(projected, state)[0]))


def test_make_cell_knows_every_cell():
    assert {cls.name_in_hparams for cls in CELLS} == {"lstm", "layer_norm", "hyper"}
    for name, cls in [("lstm", LSTMCell), ("layer_norm", LayerNormLSTMCell), ("hyper", HyperLSTMCell)]:
        cell = make_cell(name, UNITS)
        assert type(cell) is cls and cell.units == UNITS
    assert make_cell("hyper", UNITS, hyper_num_units=HYPER_UNITS).hyper_num_units == HYPER_UNITS
    with pytest.raises(ValueError, match="unknown cell 'gru'"):
        make_cell("gru", UNITS)


def test_hyper_recurrent_dropout_is_refused_clearly():
    with pytest.raises(NotImplementedError, match="hyper_use_recurrent_dropout"):
        HyperLSTMCell(UNITS, hyper_use_recurrent_dropout=True)


def assert_gate_blocks_orthogonal(kernel, units):
    for block in np.split(kernel, 4, axis=1):
        rows = block.shape[0]
        gram = block.T @ block if rows >= units else block @ block.T
        np.testing.assert_allclose(gram, np.eye(min(rows, units)), atol=1e-5)


@pytest.mark.parametrize("rows", [UNITS, 3, 20])
def test_lstm_orthogonal_makes_each_gate_block_orthogonal(rows):
    kernel = ops.convert_to_numpy(LSTMOrthogonal()((rows, 4 * UNITS))).astype(np.float64)
    assert kernel.shape == (rows, 4 * UNITS)
    assert_gate_blocks_orthogonal(kernel, UNITS)
    blocks = np.split(kernel, 4, axis=1)
    assert not np.allclose(blocks[0], blocks[1])  # four draws, not one repeated
    # Keras's orthogonal, for contrast, is not orthogonal per block.
    whole = ops.convert_to_numpy(keras.initializers.Orthogonal()((UNITS, 4 * UNITS)))
    with pytest.raises(AssertionError):
        assert_gate_blocks_orthogonal(whole.astype(np.float64), UNITS)


def test_lstm_orthogonal_seed_and_config():
    first = ops.convert_to_numpy(LSTMOrthogonal(gain=2.0, seed=3)((UNITS, 4 * UNITS)))
    again = ops.convert_to_numpy(LSTMOrthogonal(gain=2.0, seed=3)((UNITS, 4 * UNITS)))
    np.testing.assert_array_equal(first, again)
    assert_gate_blocks_orthogonal(first.astype(np.float64) / 2.0, UNITS)
    restored = keras.initializers.deserialize(keras.initializers.serialize(LSTMOrthogonal(seed=3)))
    assert type(restored) is LSTMOrthogonal


def test_layer_norm_cell_initial_weights_are_the_official_ones():
    cell = built_cell("layer_norm")
    assert_gate_blocks_orthogonal(value(cell.recurrent_kernel), UNITS)
    limit = np.sqrt(6.0 / (STROKE_DIM + Z_DIM + 4 * UNITS))  # glorot uniform
    assert np.abs(value(cell.kernel)).max() <= limit
    for weight, expected in [(cell.ln_gamma, 1.0), (cell.ln_beta, 0.0), (cell.ln_c_gamma, 1.0),
                             (cell.ln_c_beta, 0.0)]:
        np.testing.assert_array_equal(value(weight), expected)
    np.testing.assert_array_equal(ops.convert_to_numpy(cell.constant_projection()), 0.0)


@pytest.mark.parametrize("use_layer_norm", [True, False])
def test_hyper_cell_initial_weights_are_the_official_ones(use_layer_norm):
    hyper_units, embedding = 64, 16  # enough zb samples (4096) to measure its spread
    cell = HyperLSTMCell(UNITS, use_layer_norm=use_layer_norm, hyper_num_units=hyper_units,
                         hyper_embedding_size=embedding)
    cell.build(STROKE_DIM + Z_DIM)
    assert_gate_blocks_orthogonal(value(cell.recurrent_kernel), UNITS)
    np.testing.assert_array_equal(value(cell.bias), 0.0)
    np.testing.assert_array_equal(value(cell.zw_kernel), 0.0)
    np.testing.assert_array_equal(value(cell.zw_bias), 1.0)
    np.testing.assert_allclose(value(cell.alpha), 0.1 / embedding, rtol=1e-6)
    assert abs(value(cell.zb_kernel).std() - 0.01) < 1e-3 and abs(value(cell.zb_kernel).mean()) < 1e-3
    np.testing.assert_array_equal(value(cell.beta), 0.0)
    np.testing.assert_array_equal(value(cell.ln_c_gamma), 1.0)
    np.testing.assert_array_equal(value(cell.ln_c_beta), 0.0)
    assert hasattr(cell, "ln_gamma") == use_layer_norm
    if use_layer_norm:
        assert type(cell.hyper_cell) is LayerNormLSTMCell
        assert_gate_blocks_orthogonal(value(cell.hyper_cell.recurrent_kernel), hyper_units)
    else:
        assert type(cell.hyper_cell) is LSTMCell
        # The official zero bias plus forget_bias 1.0, held in the bias.
        expected = np.zeros(4 * hyper_units)
        expected[hyper_units:2 * hyper_units] = 1.0
        np.testing.assert_array_equal(value(cell.hyper_cell.bias), expected)
    assert tuple(cell.hyper_cell.kernel.shape) == (STROKE_DIM + Z_DIM + UNITS, 4 * hyper_units)
    # No bias before the hyper scaling: the constant projection's main part is zero.
    np.testing.assert_array_equal(ops.convert_to_numpy(cell.constant_projection())[:4 * UNITS], 0.0)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_bfloat16_matmuls_run_and_stay_close(variant):
    rng = np.random.default_rng(11)
    cell = built_cell(variant, rng)
    low = built_cell(variant, matmul_dtype="bfloat16")
    low.set_weights(cell.get_weights())
    for kernel in (w for w in keras.tree.flatten(low.step_weights()) if len(w.shape) >= 2):
        assert keras.backend.standardize_dtype(kernel.dtype) == "bfloat16"
    strokes, z = random_inputs(rng)
    state = random_state(cell, rng)
    masks = dropout_masks(rng, True)
    expected, _ = run_steps(cell, strokes, z, state, masks)
    outputs, states = run_steps(low, strokes, z, state, masks)
    for t in range(STEPS):
        assert outputs[t].dtype == np.float32
        np.testing.assert_allclose(outputs[t], expected[t], atol=3e-2, err_msg=f"step {t}")
    assert all(keras.backend.standardize_dtype(s.dtype) == "float32" for s in states[-1])
