"""`Recurrent`: the layer that runs a cell over sequences, with the official dropouts."""

import keras
from keras import ops

from sketch_rnn import backend, engines


class ReplicaSeedGenerator(keras.random.SeedGenerator):
    """A SeedGenerator whose draws differ between the replicas of a data-parallel step.

    Under tf.distribute every replica holds the same generator state (a mirrored
    variable), so every replica would draw the same dropout masks for its share of the
    batch: sketch i of each share would get the same masks. Here each seed drawn in a step
    is offset by the replica's index. Replica 0, and every draw outside such a step, gets
    the seed a plain SeedGenerator gives, so one device draws what it always drew. (The
    masks of N replicas are not the rows of the masks one device would draw for the whole
    batch, which would cost N times the random numbers; the z noise is: `LatentSample`.)
    """

    REPLICA_STRIDE = 0x9E3779B9  # odd, so the replicas' first seed words all differ

    def next(self, ordered=True):
        seed = super().next(ordered)
        replica, replicas = backend.replica_context()
        if replicas == 1:
            return seed
        offset = ops.cast(replica, seed.dtype) * ops.cast(self.REPLICA_STRIDE, seed.dtype)
        return seed + ops.stack([offset, ops.zeros((), seed.dtype)])


class SavesSeedState:
    """Saves the layer's SeedGenerator state with its weights, so a resumed run draws the
    same dropout masks and z noise as one that never stopped."""

    def save_own_variables(self, store):
        super().save_own_variables(store)
        store["seed_state"] = ops.convert_to_numpy(self.seed_generator.state)

    def load_own_variables(self, store):
        super().load_own_variables({k: store[k] for k in store.keys() if k != "seed_state"})
        if "seed_state" in store.keys():
            self.seed_generator.state.assign(store["seed_state"])


@keras.saving.register_keras_serializable(package="sketch_rnn")
class Recurrent(SavesSeedState, keras.layers.Layer):
    """Runs a cell (`sketch_rnn.cells`) over sequences, on the engine `engines.choose` picks.

    Dropout as the official code: recurrent dropout without memory loss on the cell
    candidate (a fresh (B, H) mask each step), and, as its `DropoutWrapper`, optional
    dropout on each step's input (the constant included) and on each step's output. All
    three only while training; all masks come from the layer's seeded generator, which
    gives each replica of a data-parallel step its own masks (`ReplicaSeedGenerator`).

    Args:
        cell: a `cells.RecurrentCell`; built here with the input's width (plus the constant's).
        recurrent_dropout_keep, input_dropout_keep, output_dropout_keep: keep probabilities.
        go_backwards: run each sequence from its last valid step to its first.
        return_sequences: also return every step's output, (B, T, H).
        seed: seed of the dropout masks.
        accelerate, custom_gradient, fused: the engine preferences of `engines.choose`.
            `accelerate` (cuDNN) never applies recurrent dropout, on either device, so that
            both compute the same function.

    Call args:
        inputs: (B, T, D1). `constant`: optional (B, D2) appended to every step's input
        (the decoder's z); its projection is computed once per sequence.
        initial_state: optional tuple of (B, n) tensors (`cell.state_sizes`); zeros by default.
        step_mask: optional (B, T) bool; masked steps carry the state through unchanged
        (right padding).

    Returns:
        (outputs (B, T, H), *state) with return_sequences, else the state tuple; state[0] is h.
    """

    def __init__(self, cell, recurrent_dropout_keep=1.0, input_dropout_keep=1.0,
                 output_dropout_keep=1.0, go_backwards=False, return_sequences=False, seed=None,
                 accelerate=False, custom_gradient=True, fused=True, **kwargs):
        super().__init__(**kwargs)
        if isinstance(cell, dict):
            cell = keras.saving.deserialize_keras_object(cell)
        self.cell = cell
        self.recurrent_dropout_keep = recurrent_dropout_keep
        self.input_dropout_keep = input_dropout_keep
        self.output_dropout_keep = output_dropout_keep
        self.go_backwards = go_backwards
        self.return_sequences = return_sequences
        self.seed = seed
        self.seed_generator = ReplicaSeedGenerator(seed)
        self.accelerate = accelerate
        self.custom_gradient = custom_gradient
        self.fused = fused
        self.engine = None  # chosen in build

    def build(self, inputs_shape, constant_shape=None, **unused_shapes):
        self.cell.build(inputs_shape[-1] + (constant_shape[-1] if constant_shape else 0))
        self.engine = engines.choose(self.cell, self.accelerate, self.custom_gradient, self.fused)
        if not self.engine.supports_jit:
            self.supports_jit = False  # Keras must not pick XLA for a model holding this layer

    def call(self, inputs, constant=None, initial_state=None, step_mask=None, training=False):
        batch, steps = ops.shape(inputs)[0], ops.shape(inputs)[1]
        state = (self.cell.initial_state(batch, inputs.dtype) if initial_state is None
                 else tuple(initial_state))
        if training and self.input_dropout_keep < 1.0:
            if constant is not None:  # dropped afresh at every step, as the rest of the input
                repeated = ops.repeat(ops.expand_dims(constant, 1), steps, axis=1)
                inputs, constant = ops.concatenate([inputs, repeated], axis=-1), None
            inputs = keras.random.dropout(inputs, 1.0 - self.input_dropout_keep,
                                          seed=self.seed_generator)
        dropout = None
        if training and self.recurrent_dropout_keep < 1.0 and not self.accelerate:
            keep = self.recurrent_dropout_keep
            draw = keras.random.uniform((steps, batch, self.cell.units), seed=self.seed_generator,
                                        dtype=inputs.dtype)
            dropout = ops.cast(draw < keep, inputs.dtype) / keep  # (T, B, H)
        step_mask = (None if step_mask is None
                     else ops.expand_dims(ops.transpose(ops.cast(step_mask, "bool")), -1))
        # Time-major: the inputs are transposed, not their projection, which is P / D larger.
        outputs, state = self.engine.run(self.cell, ops.transpose(inputs, (1, 0, 2)), constant,
                                         state, step_mask, dropout, self.go_backwards)
        if not self.return_sequences:
            return tuple(state)
        outputs = ops.transpose(outputs, (1, 0, 2))  # (B, T, H)
        if training and self.output_dropout_keep < 1.0:
            outputs = keras.random.dropout(outputs, 1.0 - self.output_dropout_keep,
                                           seed=self.seed_generator)
        return (outputs, *state)

    def compute_output_spec(self, inputs, constant=None, initial_state=None, step_mask=None,
                            training=False):
        batch, steps = inputs.shape[0], inputs.shape[1]
        # Distinct tensors: a functional model maps each output by its tensor.
        state = tuple(keras.KerasTensor((batch, n), dtype=inputs.dtype)
                      for n in self.cell.state_sizes)
        if not self.return_sequences:
            return state
        return (keras.KerasTensor((batch, steps, self.cell.units), dtype=inputs.dtype), *state)

    def get_config(self):
        config = super().get_config()
        config.update({
            "cell": keras.saving.serialize_keras_object(self.cell),
            "recurrent_dropout_keep": self.recurrent_dropout_keep,
            "input_dropout_keep": self.input_dropout_keep,
            "output_dropout_keep": self.output_dropout_keep,
            "go_backwards": self.go_backwards, "return_sequences": self.return_sequences,
            "seed": self.seed, "accelerate": self.accelerate,
            "custom_gradient": self.custom_gradient, "fused": self.fused,
        })
        return config
