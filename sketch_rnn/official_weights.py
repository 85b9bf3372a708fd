"""The official Sketch-RNN's variables as this model's weights.

Magenta's TensorFlow 1 model (`magenta/models/sketch_rnn/model.py`, `rnn.py`) names its
variables under the scope `vector_rnn/`; this module maps each one, by name and shape, onto a
weight of the model `build_model(hps)` makes, whatever the file format they came in (a TF1
checkpoint: `magenta_checkpoint`). Names here are relative to `vector_rnn/`:

    ENC_RNN/fw/<cell>/..., ENC_RNN/bw/<cell>/...   encoder_fw, encoder_bw (conditional only)
    ENC_RNN_mu/super_linear_{w,b}                  z_mean kernel, bias
    ENC_RNN_sigma/super_linear_{w,b}               z_log_var kernel, bias
    linear/super_linear_{w,b}                      decoder_init kernel, bias (conditional only)
    RNN/<cell>/...                                 decoder_lstm
    RNN/output_w, RNN/output_b                     mixture_head kernel, bias

where <cell> is `LSTMCell`, `LayerNormLSTMCell` or `HyperLSTMCell` (see the cells' docstrings
in `cells.py` for each weight). What differs between the two layouts:

- gate order: the official (.., 4H) arrays are i, j, f, o, ours i, f, g, o (j is g): the two
  middle H-blocks are swapped (`swap_middle_gates`, its own inverse);
- forget bias: the official LSTMCell adds forget_bias = 1.0 to the forget gate at every step;
  our `LSTMCell` (whose weights cuDNN runs too) has it in its bias, so 1.0 is added to the
  imported bias's forget block. The layer-norm and hyper cells add it at run time in both;
- the decoder's initial state: tanh(z W + b) is split in each cell's state order, [c, h] for
  the official LSTMCell, [h, c] for LayerNormLSTMCell, [h, hyper_h, c, hyper_c] for
  HyperLSTMCell; ours is (h, c, ...) (`state_from_vector`), so W's and b's columns are
  permuted;
- the hyper cell's eight `hyper_norm` blocks (hyper_ix ... hyper_oh, each a few (Hh, E) and
  (E, H) arrays) are stacked in our weights `zw_kernel`, `alpha`, ... in our gate order.

The mixture head's columns are in the same order in both (3 pen logits, then M each of pi,
mu_x, mu_y, log sigma_x, log sigma_y, pre-tanh rho), so they are copied as they are.
"""

import numpy as np

FORGET_BIAS = 1.0  # the official cells' forget_bias (model.py never changes it)
HYPER_X_BLOCKS = ("ix", "fx", "jx", "ox")  # hyper_norm scopes, in our gate order (j is g)
HYPER_H_BLOCKS = ("ih", "fh", "jh", "oh")
OFFICIAL_CELL_SCOPES = {"lstm": "LSTMCell", "layer_norm": "LayerNormLSTMCell",
                        "hyper": "HyperLSTMCell"}


def swap_middle_gates(array, axis=-1):
    """Official gate blocks i, j, f, o <-> ours i, f, g, o along `axis` (its own inverse)."""
    i, j, f, o = np.split(np.asarray(array), 4, axis=axis)
    return np.concatenate([i, f, j, o], axis=axis)


class OfficialVariables:
    """The official variables one model needs, read on demand and each checked once.

    Args:
        shapes: {name relative to `vector_rnn/`: shape} of every model variable offered.
        read: name -> np.ndarray, called only for names whose shape matched.
        source: what the names came from, to start messages (a checkpoint's path).
    """

    def __init__(self, shapes, read, source):
        self.shapes = {name: tuple(int(n) for n in shape) for name, shape in shapes.items()}
        self.read = read
        self.source = source
        self.used = set()

    def take(self, name, shape, why):
        """The array `name`, which must exist with `shape`; `why` says what needs it."""
        if name not in self.shapes:
            raise ValueError(f"{self.source}: missing variable 'vector_rnn/{name}' "
                             f"(expected for {why})")
        if self.shapes[name] != tuple(shape):
            raise ValueError(f"{self.source}: variable 'vector_rnn/{name}' has shape "
                             f"{list(self.shapes[name])}, expected {list(shape)} for {why}")
        value = np.asarray(self.read(name))
        if value.dtype != np.float32:
            raise ValueError(f"{self.source}: variable 'vector_rnn/{name}' is {value.dtype}, "
                             "expected float32")
        if not np.all(np.isfinite(value)):
            raise ValueError(f"{self.source}: variable 'vector_rnn/{name}' holds NaN or inf")
        self.used.add(name)
        return value

    def check_all_used(self):
        """One line naming the first variable no weight took."""
        unused = sorted(set(self.shapes) - self.used)
        if unused:
            more = f" (and {len(unused) - 1} more)" if len(unused) > 1 else ""
            raise ValueError(f"{self.source}: unexpected variable 'vector_rnn/{unused[0]}'{more}: "
                             "the model these hparams describe has no such weight")


def assign_official_weights(model, variables):
    """Sets every weight of `model` from the official variables, checking names and shapes.

    Args:
        model: a SketchRNN from `build_model(hps)`, hps matching the official model's.
        variables: an `OfficialVariables`; every one of its variables must be used.

    Raises:
        ValueError: one line naming a missing variable, one of the wrong shape, dtype or
            with non-finite values, or one the model has no weight for.
    """
    hps = model.hps
    assigned = []

    def put(weight, value):
        weight.assign(value)
        assigned.append(weight)

    pairs = []
    if hps.conditional:
        for direction in ("fw", "bw"):
            cell = model.get_layer(f"encoder_{direction}").cell
            pairs += cell_weights(cell, hps.enc_model, f"ENC_RNN/{direction}", variables,
                                  f"enc_model={hps.enc_model}, enc_rnn_size={hps.enc_rnn_size}")
        for layer, scope in (("z_mean", "ENC_RNN_mu"), ("z_log_var", "ENC_RNN_sigma")):
            pairs += dense_weights(model.get_layer(layer), scope + "/super_linear_w",
                                   scope + "/super_linear_b", variables,
                                   f"enc_rnn_size={hps.enc_rnn_size}, z_size={hps.z_size}")
    cell = model.get_layer("decoder_lstm").cell
    why = f"dec_model={hps.dec_model}, dec_rnn_size={hps.dec_rnn_size}"
    pairs += cell_weights(cell, hps.dec_model, "RNN", variables,
                          why + (f", z_size={hps.z_size}" if hps.conditional else ""))
    if hps.conditional:
        layer = model.get_layer("decoder_init")
        order = state_columns(cell, hps.dec_model)
        kernel = variables.take("linear/super_linear_w", layer.kernel.shape, why)
        bias = variables.take("linear/super_linear_b", layer.bias.shape, why)
        pairs += [(layer.kernel, kernel[:, order]), (layer.bias, bias[order])]
    pairs += dense_weights(model.get_layer("mixture_head"), "RNN/output_w", "RNN/output_b",
                           variables, f"dec_rnn_size={hps.dec_rnn_size}, "
                           f"num_mixture={hps.num_mixture}")
    variables.check_all_used()
    for weight, value in pairs:
        put(weight, value)
    missed = [w.path for w in model.trainable_weights if not any(w is a for a in assigned)]
    if missed:  # a weight this module does not know: a bug here, not in the file
        raise AssertionError(f"no official variable maps to {', '.join(missed)}")


def dense_weights(layer, kernel_name, bias_name, variables, why):
    """[(kernel, value), (bias, value)] of a Dense layer from two official variables."""
    return [(layer.kernel, variables.take(kernel_name, layer.kernel.shape, why)),
            (layer.bias, variables.take(bias_name, layer.bias.shape, why))]


def cell_weights(cell, kind, scope, variables, why):
    """[(weight, value)] of one of our cells from the official cell under `scope`."""
    base = f"{scope}/{OFFICIAL_CELL_SCOPES[kind]}"
    if kind == "lstm":
        return _lstm_weights(cell, base, variables, why)
    if kind == "layer_norm":
        return _layer_norm_weights(cell, base, variables, why)
    return _hyper_weights(cell, base, variables, why)


def _gates(variables, name, weight, why):
    """An official (.., 4H) array for `weight`, its gate blocks put in our order."""
    return swap_middle_gates(variables.take(name, weight.shape, why))


def _lstm_weights(cell, base, variables, why):
    bias = _gates(variables, f"{base}/bias", cell.bias, why)
    bias[cell.units:2 * cell.units] += FORGET_BIAS  # ours i, f, g, o: f is the second block
    return [(cell.kernel, _gates(variables, f"{base}/W_xh", cell.kernel, why)),
            (cell.recurrent_kernel, _gates(variables, f"{base}/W_hh", cell.recurrent_kernel, why)),
            (cell.bias, bias)]


def _layer_norm_weights(cell, base, variables, why):
    return [
        (cell.kernel, _gates(variables, f"{base}/W_xh", cell.kernel, why)),
        (cell.recurrent_kernel, _gates(variables, f"{base}/W_hh", cell.recurrent_kernel, why)),
        (cell.ln_gamma, _gates(variables, f"{base}/ln_all/ln_gamma", cell.ln_gamma, why)),
        (cell.ln_beta, _gates(variables, f"{base}/ln_all/ln_beta", cell.ln_beta, why)),
        (cell.ln_c_gamma, variables.take(f"{base}/ln_c/ln_gamma", cell.ln_c_gamma.shape, why)),
        (cell.ln_c_beta, variables.take(f"{base}/ln_c/ln_beta", cell.ln_c_beta.shape, why)),
    ]


def _hyper_weights(cell, base, variables, why):
    hh, e, h = cell.hyper_num_units, cell.hyper_embedding_size, cell.units
    if cell.forget_bias != FORGET_BIAS:
        raise ValueError(f"the official hyper cell's forget bias is {FORGET_BIAS}, this cell's "
                         f"{cell.forget_bias}")

    def block(n, path, shape):  # one hyper_norm block's array
        return variables.take(f"{base}/hyper_{n}/{path}", shape, why)

    blocks = HYPER_X_BLOCKS + HYPER_H_BLOCKS
    pairs = [
        (cell.kernel, _gates(variables, f"{base}/W_xh", cell.kernel, why)),
        (cell.recurrent_kernel, _gates(variables, f"{base}/W_hh", cell.recurrent_kernel, why)),
        (cell.bias, _gates(variables, f"{base}/bias", cell.bias, why)),
        (cell.zw_kernel, np.concatenate([block(n, "zw/super_linear_w", (hh, e)) for n in blocks],
                                        axis=1)),
        (cell.zw_bias, np.concatenate([block(n, "zw/super_linear_b", (e,)) for n in blocks])),
        (cell.alpha, np.stack([block(n, "alpha/super_linear_w", (e, h)) for n in blocks])),
        (cell.zb_kernel, np.concatenate([block(n, "zb/super_linear_w", (hh, e))
                                         for n in HYPER_H_BLOCKS], axis=1)),
        (cell.beta, np.stack([block(n, "beta/super_linear_w", (e, h)) for n in HYPER_H_BLOCKS])),
        (cell.ln_c_gamma, variables.take(f"{base}/ln_c/ln_gamma", cell.ln_c_gamma.shape, why)),
        (cell.ln_c_beta, variables.take(f"{base}/ln_c/ln_beta", cell.ln_c_beta.shape, why)),
    ]
    if cell.use_layer_norm:
        pairs += [(cell.ln_gamma, _gates(variables, f"{base}/ln_all/ln_gamma", cell.ln_gamma, why)),
                  (cell.ln_beta, _gates(variables, f"{base}/ln_all/ln_beta", cell.ln_beta, why)),
                  *_layer_norm_weights(cell.hyper_cell, f"{base}/LayerNormLSTMCell", variables,
                                       why + " (its hyper cell)")]
    else:
        pairs += _lstm_weights(cell.hyper_cell, f"{base}/LSTMCell", variables,
                               why + " (its hyper cell)")
    return pairs


def state_columns(cell, kind):
    """Indices into the official state vector, in our state order (`cell.state_sizes`).

    The official vector holds our state tensors in another order: `official_state_order`.
    """
    official = official_state_order(cell, kind)  # our state indices, in the official order
    sizes = cell.state_sizes
    starts, offset = {}, 0
    for index in official:
        starts[index] = offset
        offset += sizes[index]
    return np.concatenate([np.arange(starts[i], starts[i] + sizes[i]) for i in range(len(sizes))])


def official_state_order(cell, kind):
    """Our state indices (h, c, hyper_h, hyper_c = 0, 1, 2, 3) in the official vector's order."""
    if kind == "lstm":
        return [1, 0]  # [c, h]
    if kind == "layer_norm":
        return [0, 1]  # [h, c]
    # [h, hyper_h slot, c, hyper_c slot]; the slots hold the hyper cell's own state vector,
    # [h, c] for a layer-norm hyper cell, [c, h] for an LSTMCell.
    return [0, 2, 1, 3] if cell.use_layer_norm else [0, 3, 1, 2]
