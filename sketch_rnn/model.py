"""Sketch-RNN as a Keras 3 functional model (Ha & Eck, arXiv 1704.03477).

The model is split as the paper is: a bidirectional RNN encoder (sec. 3.1), the latent
sample with its KL term (eq. 10-11), the decoder's initial state from z (eq. 4), the decoder
RNN, and the mixture-density head (eq. 3-9, `mixture`). Only the whole VAE is a
`keras.Model`; the encoder/decoder sub-models used for drawing reuse its layers.

With `encoder=cnn` the encoder is sketch-pix2seq's (Chen et al. 2017, arXiv 1709.04121): a
small CNN over a picture of the sketch (`sketch_rnn.raster`), the rest unchanged. With
`kl_weight=0` the loss is the reconstruction term alone, as sketch-pix2seq trains.

Shapes: B batch, T time steps, M mixtures, H units, S picture side. A batch `x` is stroke-5
with the start token S0 at step 0, shape (B, T + 1, 5); the targets are `x[:, 1:]`, shape
(B, T, 5). A cnn model's batch is the dict {"strokes": x, "image": (B, S, S, 1)}.
"""

import threading

import keras
import numpy as np
from keras import ops

from sketch_rnn import backend
from sketch_rnn.cells import make_cell
from sketch_rnn.hparams import HParams
from sketch_rnn.mixture import kl_divergence, kl_divergence_sum, reconstruction_loss
from sketch_rnn.recurrent import Recurrent, SavesSeedState

# ---------------------------------------------------------------------------------------
# Layers and the model
# ---------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="sketch_rnn")
class LatentSample(SavesSeedState, keras.layers.Layer):
    """z = mu + sigma * N(0, I) with sigma = exp(presig / 2) (eq. 2); adds the KL loss.

    The KL term (eq. 10), averaged over the batch and the z dimensions as the official code
    does, is the layer's auxiliary loss (`add_loss`). `SketchRNN.compute_loss` floors it at
    `kl_tolerance` and weights it by the non-trainable variable `kl_weight` (`kl_term`, eq.
    11), which `callbacks.KLWeightAnnealing` sets each step; it tracks the unfloored KL as the
    metric `kl_loss` there, where every backend keeps metric updates. With `kl=False`
    (kl_weight=0) the KL is not computed at all: z is still sampled, as sketch-pix2seq does.

    In a data-parallel step (tf.distribute, `sketch_rnn.backend.replica_context`) each
    replica holds a share of the global batch, and the layer computes what one device would
    on the whole batch: the KL is averaged over the global batch (one all-reduce of the
    replicas' sums, so that the floor applies to the batch's KL, as on one device), and the
    replica's noise is its rows of the noise drawn for the global batch (every replica
    draws it from the same generator state, and takes rows in replica order).

    Call args: [z_mean (B, Nz), z_log_var (B, Nz)] (the paper's mu and sigma-hat).
    Returns: z, (B, Nz).
    """

    def __init__(self, kl_tolerance=0.2, kl_weight=0.5, seed=None, kl=True, **kwargs):
        super().__init__(**kwargs)
        self.kl_tolerance = kl_tolerance
        self.kl = kl
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.kl_weight = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(kl_weight), trainable=False,
            name="kl_weight")
        # MirroredStrategy runs each local replica's step in a thread of its own, and they
        # would share add_loss's list: in a data-parallel step each replica's KL is kept
        # for its thread instead (`replica_kl`).
        self._replica_kl = threading.local()

    def call(self, inputs):
        z_mean, z_log_var = inputs
        replica, replicas = backend.replica_context()
        if replicas == 1:
            if self.kl:
                self.add_loss(kl_divergence(z_mean, z_log_var))
            epsilon = keras.random.normal(ops.shape(z_mean), seed=self.seed_generator)
        else:
            kl, epsilon = self._global_batch_kl_and_noise(z_mean, z_log_var, replica, replicas)
            self._replica_kl.value = kl
        return z_mean + ops.exp(z_log_var / 2) * epsilon

    def replica_kl(self):
        """The KL of the data-parallel step this thread runs (after `call`)."""
        return self._replica_kl.value

    def _global_batch_kl_and_noise(self, z_mean, z_log_var, replica, replicas):
        """The global batch's KL (None with kl=False), and this replica's rows of the global
        batch's noise."""
        rows, size = ops.shape(z_mean)[0], ops.shape(z_mean)[1]
        if self.kl:
            kl_sum, total = ops.unstack(backend.cross_replica_sum(ops.stack([
                kl_divergence_sum(z_mean, z_log_var), ops.cast(rows, "float32")])))
            kl = kl_sum / (total * size)
        else:  # kl_weight=0: only the global batch's size, for the noise
            total, kl = backend.cross_replica_sum(ops.cast(rows, "float32")), None
        total = ops.cast(total, "int32")
        # Replica r holds rows [offset, offset + rows) of the global batch: the batch split
        # in replica order, the first (total % replicas) shares one row longer
        # (batch_generator.SketchBatches.piece).
        offset = replica * (total // replicas) + ops.minimum(replica, total % replicas)
        noise = keras.random.normal((total, size), seed=self.seed_generator)
        return kl, ops.slice(noise, (offset, 0), (rows, size))

    def kl_term(self, kl):
        """w_KL * max(L_KL, kl_tolerance), the KL part of eq. 11."""
        return self.kl_weight * ops.maximum(kl, self.kl_tolerance)

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        config = super().get_config()
        config.update({"kl_tolerance": self.kl_tolerance,
                       "kl_weight": float(ops.convert_to_numpy(self.kl_weight)),
                       "seed": self.seed, "kl": self.kl})
        return config


@keras.saving.register_keras_serializable(package="sketch_rnn")
class SketchRNN(keras.Model):
    """The Sketch-RNN VAE: a functional model whose loss is L_R + w_KL * max(L_KL, tol) (eq. 11).

    Build it with `build_model(hps)`. Inputs: stroke-5 batches with the start token,
    (B, T + 1, 5) (encoder=cnn: the dict {"strokes": ..., "image": (B, S, S, 1)}); output: the
    mixture parameters (B, T, 6M + 3). The reconstruction loss is computed in `compute_loss`
    from the targets y = x[:, 1:]; the KL term is the `LatentSample` layer's auxiliary loss,
    floored and weighted here. A model without a KL term (decoder-only, or kl_weight=0) has
    no `kl_loss` metric.
    """

    def __init__(self, inputs, outputs, hps, **kwargs):
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.hps = hps
        self.reconstruction_tracker = keras.metrics.Mean(name="reconstruction_loss")
        self.kl_tracker = keras.metrics.Mean(name="kl_loss") if hps.has_kl_term else None

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        recon = reconstruction_loss(y, y_pred, self.hps.num_mixture, self.hps.max_seq_len,
                                    mask_pen=not training)
        # Weighted by batch size, as Keras weights `loss`, so a smaller last batch counts less.
        batch = ops.shape(y)[0]
        self.reconstruction_tracker.update_state(recon, sample_weight=batch)
        if not self.hps.has_kl_term:
            return self._per_replica(recon)
        if backend.replica_context()[1] > 1:
            kl = self.get_layer("latent").replica_kl()
        else:
            (kl,) = self.losses  # LatentSample's, the model's one auxiliary loss
        self.kl_tracker.update_state(kl, sample_weight=batch)
        return self._per_replica(recon + self.get_layer("latent").kl_term(kl))

    @staticmethod
    def _per_replica(loss):
        """A replica's loss in a data-parallel step: its loss over the number of replicas.

        Keras sums the replicas' gradients and logs `loss` times the number of replicas,
        weighted by the replica's rows. Each replica's loss has its share's reconstruction
        and the global batch's KL term (`LatentSample`); with equal shares (training: the
        batch must split evenly) the summed gradient is the global batch's, and the logged
        figures are the global batch's for any split.
        """
        _, replicas = backend.replica_context()
        return loss if replicas == 1 else loss / replicas

    def get_config(self):
        return {"hps": self.hps.to_dict(), "name": self.name}

    @classmethod
    def from_config(cls, config):
        return build_model(HParams.from_dict(config["hps"]))


def build_model(hps):
    """Builds the (uncompiled) Sketch-RNN model for `hps`.

    Args:
        hps: HParams.

    Returns:
        a `SketchRNN` with named layers: the encoder's (encoder=rnn: encoder_fw, encoder_bw;
        encoder=cnn: encoder_highpass, encoder_conv1 .. encoder_conv6, encoder_flatten), then
        z_mean, z_log_var, latent, decoder_init (conditional only), decoder_lstm (the decoder,
        whatever its cell), mixture_head. Its inputs: the tensor `strokes`, or for a cnn
        model the dict {"strokes", "image"}.
    """
    seeds = np.random.SeedSequence(hps.seed).generate_state(4)
    strokes = keras.Input(shape=(None, 5), name="strokes")  # (B, T + 1, 5)
    inputs = strokes
    decoder_input = strokes[:, :-1, :]  # S0, S1, ..., S_{T-1}
    decoder = _decoder(hps, seeds)
    if hps.conditional:
        if hps.encoder == "cnn":
            image = keras.Input(shape=(hps.img_size, hps.img_size, 1), name="image")
            inputs = {"strokes": strokes, "image": image}
            z_mean, z_log_var = _cnn_encoder(hps)(image)
        else:
            target = strokes[:, 1:, :]  # the sketch itself, (B, T, 5)
            inside = ops.equal(target[..., 4], 0.0)  # (B, T) bool, True on the sketch's points
            z_mean, z_log_var = _encoder(hps, seeds)(target, inside)
        z = LatentSample(hps.kl_tolerance, hps.kl_weight, seed=int(seeds[0]),
                         kl=hps.has_kl_term, name="latent")([z_mean, z_log_var])
        initial_state = decoder_initial_state(hps, decoder.cell)(z)
        outputs, *_ = decoder(decoder_input, constant=z, initial_state=initial_state)
    else:
        outputs, *_ = decoder(decoder_input)
    params = keras.layers.Dense(6 * hps.num_mixture + 3, name="mixture_head")(outputs)
    return SketchRNN(inputs, params, hps, name="sketch_rnn")


def _cell(hps, kind, units):
    matmul_dtype = resolved_matmul_dtype(hps)
    return make_cell(kind, units, matmul_dtype=None if matmul_dtype == "float32" else matmul_dtype)


def _recurrent_options(hps):
    """What the recurrent layers share: recurrent dropout and the engine preferences."""
    return {"recurrent_dropout_keep": hps.recurrent_dropout_prob if hps.use_recurrent_dropout else 1.0,
            "accelerate": hps.accelerate_LSTM, "custom_gradient": hps.custom_lstm_gradient,
            "fused": hps.fused_lstm_cell and not hps.jit_compile}  # XLA cannot compile the op


def _encoder(hps, seeds):
    forward = Recurrent(_cell(hps, hps.enc_model, hps.enc_rnn_size), seed=int(seeds[1]),
                        name="encoder_fw", **_recurrent_options(hps))
    backward = Recurrent(_cell(hps, hps.enc_model, hps.enc_rnn_size), go_backwards=True,
                         seed=int(seeds[2]), name="encoder_bw", **_recurrent_options(hps))
    mean_head = keras.layers.Dense(hps.z_size, name="z_mean")
    # The official presig head starts near zero (gaussian init, stddev 0.001).
    log_var_head = keras.layers.Dense(
        hps.z_size, kernel_initializer=keras.initializers.RandomNormal(stddev=0.001),
        name="z_log_var")

    def encode(sketch, inside):
        h_fw = forward(sketch, step_mask=inside)[0]  # each direction's final h
        h_bw = backward(sketch, step_mask=inside)[0]
        h = ops.concatenate([h_fw, h_bw], axis=-1)  # (B, 2 * enc_rnn_size)
        return mean_head(h), log_var_head(h)

    return encode


@keras.saving.register_keras_serializable(package="sketch_rnn")
class HighPassFilter(keras.layers.Layer):
    """sketch-pix2seq's fixed 3x3 high-pass filter, the first step of its CNN encoder.

    The kernel [[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]] is a constant, not a weight: it is
    never trained and not in weight files. Zero padding ("same"), stride 1.

    Call args: images (B, S, S, 1). Returns: (B, S, S, 1).
    """

    KERNEL = np.array([[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]], np.float32)

    def call(self, images):
        kernel = ops.convert_to_tensor(self.KERNEL.reshape(3, 3, 1, 1), dtype=images.dtype)
        return _empty_batch_safe(lambda x: ops.conv(x, kernel, strides=1, padding="same"), images)

    def compute_output_shape(self, input_shape):
        return input_shape


class Conv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D` (same weights and names) that also takes an empty batch in a
    data-parallel step (see `_empty_batch_safe`)."""

    def call(self, inputs):
        return _empty_batch_safe(super().call, inputs)


def _empty_batch_safe(convolve, images):
    """`convolve(images)`, also when `images` holds no picture in a data-parallel step.

    TensorFlow's CPU convolution returns a wrongly shaped result for a batch of 0 pictures
    (the next convolution then fails: "input depth must be evenly divisible by filter
    depth"), and the last share of a distributed evaluation can be empty. There one blank
    picture is appended and its row dropped again; outside tf.distribute nothing changes.
    """
    if backend.replica_context()[1] == 1:
        return convolve(images)
    rows = ops.shape(images)[0]
    return convolve(ops.pad(images, [[0, 1], [0, 0], [0, 0], [0, 0]]))[:rows]


# sketch-pix2seq's six 2x2 convolutions: (filters, stride); ReLU after each, tanh after the last.
CNN_CONVOLUTIONS = ((4, 2), (4, 1), (8, 2), (8, 1), (8, 2), (8, 1))


def _cnn_encoder(hps):
    """sketch-pix2seq's encoder: high-pass filter, six convolutions, z_mean and z_log_var heads.

    As the reference code: 2x2 kernels without bias, "same" padding, weights drawn from
    N(0, 2 / (2 * 2 * filters)), the last layer tanh; a 48 x 48 picture ends as 6 x 6 x 8,
    flattened to 288 features for the two heads, which start near zero (gaussian init,
    stddev 0.001).
    """
    highpass = HighPassFilter(name="encoder_highpass")
    convolutions = [
        Conv2D(
            filters, 2, strides=strides, padding="same", use_bias=False,
            activation="tanh" if number == len(CNN_CONVOLUTIONS) else "relu",
            kernel_initializer=keras.initializers.VarianceScaling(
                2.0, mode="fan_out", distribution="untruncated_normal"),
            name=f"encoder_conv{number}")
        for number, (filters, strides) in enumerate(CNN_CONVOLUTIONS, start=1)]
    flatten = keras.layers.Flatten(name="encoder_flatten")
    mean_head, log_var_head = (
        keras.layers.Dense(hps.z_size, kernel_initializer=keras.initializers.RandomNormal(stddev=0.001),
                           name=name) for name in ("z_mean", "z_log_var"))

    def encode(image):
        x = highpass(image)  # (B, S, S, 1)
        for convolution in convolutions:
            x = convolution(x)  # 48: 24, 24, 12, 12, 6, 6 pixels a side
        h = flatten(x)  # (B, 6 * 6 * 8) for S = 48
        return mean_head(h), log_var_head(h)

    return encode


def decoder_initial_state(hps, cell):
    """The decoder's initial state, split(tanh(W_z z + b_z)) in the cell's state order (eq. 4);
    returns a function of z."""
    dense = keras.layers.Dense(
        sum(cell.state_sizes), activation="tanh",
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.001), name="decoder_init")
    return lambda z: cell.state_from_vector(dense(z))


def _decoder(hps, seeds):
    input_keep = hps.input_dropout_prob if hps.use_input_dropout else 1.0
    output_keep = hps.output_dropout_prob if hps.use_output_dropout else 1.0
    return Recurrent(_cell(hps, hps.dec_model, hps.dec_rnn_size), input_dropout_keep=input_keep,
                     output_dropout_keep=output_keep, return_sequences=True, seed=int(seeds[3]),
                     name="decoder_lstm", **_recurrent_options(hps))


def resolved_matmul_dtype(hps):
    """hps.lstm_matmul_dtype with "auto" resolved for this machine."""
    if hps.lstm_matmul_dtype != "auto":
        return hps.lstm_matmul_dtype
    return "bfloat16" if _cpu_has_native_bfloat16() else "float32"


def _cpu_has_native_bfloat16():
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:  # not Linux: do not guess
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def compile_model(model, hps):
    """Compiles with Adam and per-value gradient clipping at grad_clip, as the official code.

    The learning rate starts at hps.learning_rate; `callbacks.LearningRateDecay` sets it each
    step. epsilon=1e-8 is TF1's Adam default, which the official code used. Inside a
    tf.distribute scope of several replicas the clipping applies to the summed gradient.
    """
    optimizer = backend.adam(learning_rate=hps.learning_rate, epsilon=1e-8,
                             clipvalue=hps.grad_clip if hps.grad_clip > 0 else None)
    model.compile(optimizer=optimizer, jit_compile=hps.jit_compile)
    return model
