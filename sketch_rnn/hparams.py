"""Hyperparameters: one `HParams` dataclass with the official names and defaults.

Names, defaults and comments follow Magenta's `sketch_rnn/model.py:get_default_hparams`. Every
run folder stores them in `model_config.json`; `load_config` rebuilds them from there.
"""

import dataclasses
import difflib
import math
import os
import reprlib

from sketch_rnn.files import read_json_config

CELL_NAMES = ("lstm", "layer_norm", "hyper")  # the official cells (sketch_rnn.cells)
ENCODER_NAMES = ("rnn", "cnn")  # sketch-rnn's bidirectional RNN, sketch-pix2seq's CNN

# Bounds of the hparams where a larger value would exhaust memory or overflow.
HPARAM_LIMITS = {
    "max_seq_len": 10_000,  # QuickDraw's longest sketches have under 2000 points
    "enc_rnn_size": 8192,
    "dec_rnn_size": 8192,
    "z_size": 8192,
    "num_mixture": 1000,
    "img_size": 1024,  # the CNN encoder's picture: 1024 x 1024 floats per sketch
    "batch_size": 10_000,
    "epochs": 10**9,
    "steps_per_epoch": 10**9,
    "save_every": 10**9,
    "bucket_batches": 10**6,
    "seed": 2**32 - 1,  # numpy's and TensorFlow's seeds are 32-bit
}


def check_hparam_limits(values, source="hparams"):
    """One line naming the key if an hparam in ``values`` (a dict) exceeds HPARAM_LIMITS."""
    for key, limit in HPARAM_LIMITS.items():
        value = values.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > limit:
            raise ValueError(f"{source}: hparam '{key}' must be at most {limit}, got "
                             f"{reprlib.repr(value)}")


@dataclasses.dataclass
class HParams:
    """Every setting of a model and its training run, with the official defaults.

    Names and defaults follow Magenta's `sketch_rnn/model.py:get_default_hparams`.
    Override with `HParams.parse("k=v,k2=v2")` (the training CLI's `--hparams`).
    """

    # Data.
    max_seq_len: int = 250  # Sketches longer than this are dropped. A new training run then
    # sets it to the longest sketch kept (train, valid and test together), pads batches to
    # that and stores it in model_config.json, which resuming and drawing reuse. The official
    # code pads to the longest sketch of the data with no cap; here 250, or the value given,
    # is the cap, so a default and an explicit max_seq_len mean the same thing.
    # Model.
    encoder: str = "rnn"  # Encoder: rnn (the bidirectional RNN of sketch-rnn, reading the
    # strokes) or cnn (sketch-pix2seq's CNN, reading a picture of the sketch rendered as below).
    enc_rnn_size: int = 256  # Size of the encoder's LSTM (each direction).
    dec_rnn_size: int = 512  # Size of the decoder's LSTM.
    enc_model: str = "lstm"  # Encoder cell: lstm, layer_norm or hyper.
    dec_model: str = "lstm"  # Decoder cell: lstm, layer_norm or hyper.
    z_size: int = 128  # Size of the latent vector z. Recommend 32, 64 or 128.
    num_mixture: int = 20  # Number of bivariate Gaussians in the mixture-density output.
    conditional: bool = True  # When False, train the decoder alone (no encoder, no KL).
    use_recurrent_dropout: bool = True  # Dropout with memory loss on the LSTM candidate.
    recurrent_dropout_prob: float = 0.90  # Keep probability of the recurrent dropout.
    use_input_dropout: bool = False  # Input dropout on the decoder. Recommend leaving False.
    input_dropout_prob: float = 0.90  # Keep probability of the input dropout.
    use_output_dropout: bool = False  # Output dropout on the decoder. Recommend leaving False.
    output_dropout_prob: float = 0.90  # Keep probability of the output dropout.
    accelerate_LSTM: bool = False  # cuDNN LSTM on a GPU (has no recurrent dropout).
    # The CNN encoder's picture (encoder=cnn; sketch-pix2seq's img_H = img_W = 48).
    img_size: int = 48  # Pixels of the square picture each sketch is rendered into.
    img_line_width: float = 1.5  # Width of the rendered lines, in pixels.
    img_margin: float = 3.0  # Pixels left free on both sides of the sketch's longer dimension.
    # Loss.
    kl_weight: float = 0.5  # KL weight of the loss function (w_KL). 0 drops the KL term:
    # reconstruction loss only, as sketch-pix2seq trains (no KL computed, logged or annealed).
    kl_weight_start: float = 0.01  # KL weight at the start of training (eta_min).
    kl_tolerance: float = 0.2  # Level of KL loss below which the KL term is not optimised.
    kl_decay_rate: float = 0.99995  # KL annealing decay rate per minibatch (R).
    # Optimiser.
    learning_rate: float = 0.001  # Learning rate.
    decay_rate: float = 0.9999  # Learning rate decay per minibatch.
    min_learning_rate: float = 0.00001  # Minimum learning rate.
    grad_clip: float = 1.0  # Gradient clipping (by value). Recommend leaving at 1.0.
    # Data augmentation (training batches only).
    random_scale_factor: float = 0.15  # Random scaling data augmentation proportion.
    augment_stroke_prob: float = 0.10  # Point dropping augmentation proportion.
    # Training loop.
    batch_size: int = 100  # Minibatch size. Recommend leaving at 100.
    epochs: int = 50  # Number of passes over the training set.
    steps_per_epoch: int = 0  # Minibatches per epoch; 0 means the whole training set.
    save_every: int = 0  # Checkpoint every this many minibatches; 0 means once per epoch.
    seed: int = 0  # Seed for shuffling, augmentation, dropout and z sampling.
    # Speed (not in the official code).
    bucket_batches: int = 0  # Batch sketches of similar length from pools of this many
    # batches and cut each batch after its longest sketch (about 1.7x faster, but it drops the
    # pen loss after each batch's longest sketch: not the official objective; see README).
    # 0 pads every batch to max_seq_len as the official code.
    bucket_tail: int = 0  # With bucket_batches: cut each batch this many steps after its
    # longest sketch (at most max_seq_len), so that every sketch trains its end-of-sketch pen
    # state on at least that many steps. 0 cuts right after the longest sketch.
    custom_lstm_gradient: bool = True  # The LSTM's hand-written backward pass (else autodiff).
    fused_lstm_cell: bool = True  # With custom_lstm_gradient: each LSTM step's element-wise
    # work in one compiled C++ op (tf_backend/fused_lstm.py; built on first use, else TF ops).
    lstm_matmul_dtype: str = "auto"  # Every cell's recurrent matmuls: float32, bfloat16, or auto
    # (bfloat16 where the CPU computes it natively: AVX512-BF16 or AMX; else float32).
    jit_compile: bool = False  # Compile the train step with XLA.

    @classmethod
    def from_dict(cls, values, source="hparams"):
        """Builds HParams from a dict, rejecting unknown keys and values of the wrong type."""
        hps = cls()
        for key, value in values.items():
            _check_key(key, source)
            expected = type(getattr(hps, key))
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
                raise ValueError(
                    f"{source}: hparam '{key}' must be {expected.__name__}, got {value!r}"
                )
            setattr(hps, key, value)
        hps.validate(source)
        return hps

    @classmethod
    def parse(cls, overrides="", base=None):
        """Returns `base` (or the defaults) with `"k=v,k2=v2"` overrides applied.

        Raises:
            ValueError: naming the key for an unknown key, a malformed item or a bad value.
        """
        hps = dataclasses.replace(base) if base is not None else cls()
        for item in filter(None, (s.strip() for s in (overrides or "").split(","))):
            if "=" not in item:
                raise ValueError(f"--hparams: expected key=value, got '{item}'")
            key, text = (s.strip() for s in item.split("=", 1))
            _check_key(key, "--hparams")
            setattr(hps, key, _parse_value(key, text, type(getattr(hps, key))))
        hps.validate("--hparams")
        return hps

    def validate(self, source="hparams"):
        """Raises ValueError for values no run can use."""
        for key, value in self.to_dict().items():
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{source}: hparam '{key}' must be a finite number, got {value}")
        positive = ["max_seq_len", "enc_rnn_size", "dec_rnn_size", "z_size", "num_mixture",
                    "batch_size", "epochs", "learning_rate", "img_size", "img_line_width"]
        for key in positive:
            if getattr(self, key) <= 0:
                raise ValueError(f"{source}: hparam '{key}' must be > 0, got {getattr(self, key)}")
        for key in ["steps_per_epoch", "save_every", "seed", "bucket_batches", "bucket_tail",
                    "min_learning_rate", "kl_tolerance", "kl_weight", "kl_weight_start",
                    "grad_clip", "random_scale_factor"]:
            if getattr(self, key) < 0:
                raise ValueError(f"{source}: hparam '{key}' must be >= 0, got {getattr(self, key)}")
        for key in ["enc_model", "dec_model"]:
            if getattr(self, key) not in CELL_NAMES:
                raise ValueError(f"{source}: hparam '{key}' must be one of "
                                 f"{', '.join(CELL_NAMES)}, got {getattr(self, key)!r}")
        if self.encoder not in ENCODER_NAMES:
            raise ValueError(f"{source}: hparam 'encoder' must be one of "
                             f"{', '.join(ENCODER_NAMES)}, got {self.encoder!r}")
        if not 0 <= self.img_margin < self.img_size / 2:
            raise ValueError(f"{source}: hparam 'img_margin' must be in [0, img_size / 2 = "
                             f"{self.img_size / 2:g}), got {self.img_margin}")
        for key in ["recurrent_dropout_prob", "input_dropout_prob", "output_dropout_prob",
                    "kl_decay_rate", "decay_rate"]:
            if not 0 < getattr(self, key) <= 1:
                raise ValueError(f"{source}: hparam '{key}' must be in (0, 1], got {getattr(self, key)}")
        check_hparam_limits(self.to_dict(), source)  # sizes that would exhaust memory
        if self.bucket_tail > 0 and self.bucket_batches == 0:
            raise ValueError(f"{source}: hparam 'bucket_tail' applies to trimmed batches only "
                             f"(bucket_batches > 0), got bucket_tail={self.bucket_tail} with "
                             f"bucket_batches=0")
        if self.lstm_matmul_dtype not in ("auto", "float32", "bfloat16"):
            raise ValueError(f"{source}: hparam 'lstm_matmul_dtype' must be auto, float32 or "
                             f"bfloat16, got {self.lstm_matmul_dtype!r}")
        if not 0 <= self.augment_stroke_prob < 1:
            raise ValueError(f"{source}: hparam 'augment_stroke_prob' must be in [0, 1), "
                             f"got {self.augment_stroke_prob}")

    def to_dict(self):
        return dataclasses.asdict(self)

    @property
    def has_kl_term(self):
        """True when the loss has a KL term: a conditional model with kl_weight > 0."""
        return self.conditional and self.kl_weight > 0


# The official code's hparams that are not hparams here, and what takes their place.
OFFICIAL_ONLY = {
    "num_steps": "the official training loop's length; here it is epochs (and steps_per_epoch)",
    "data_set": "a flag here: --data_set",
    "is_training": "not a setting here: training and drawing use the same model",
}


def _check_key(key, source):
    names = [f.name for f in dataclasses.fields(HParams)]
    if key in OFFICIAL_ONLY:
        raise ValueError(f"{source}: '{key}' is not an hparam here ({OFFICIAL_ONLY[key]})")
    if key not in names:
        close = difflib.get_close_matches(key, names, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ValueError(f"{source}: unknown hparam '{key}'{hint}; known: {', '.join(names)}")


def _parse_value(key, text, expected):
    try:
        if expected is bool:
            lowered = text.lower()
            if lowered not in ("true", "false", "1", "0"):
                raise ValueError
            return lowered in ("true", "1")
        return expected(text)
    except ValueError:
        raise ValueError(
            f"--hparams: '{key}' expects {expected.__name__}, got '{text}'"
        ) from None


def load_config(run_dir):
    """Reads `<run_dir>/model_config.json`: returns (HParams, the whole config dict).

    Raises:
        FileNotFoundError / ValueError: naming the file, for a missing or malformed config.
    """
    run_dir = os.fspath(run_dir)
    path = os.path.join(run_dir, "model_config.json")
    if os.path.isfile(run_dir):
        hint = (" (a magenta.js model? import it with convert_model.py --from_magenta_js "
                f"{run_dir} --to RUN_DIR)" if run_dir.lower().endswith(".json") else "")
        raise ValueError(f"{run_dir} is a file, not a run folder{hint}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no model_config.json in this run folder")
    config = read_json_config(path)  # one line for non-UTF-8, too deep, not an object
    if "hparams" not in config and "dec_rnn_size" in config:
        raise ValueError(f"{path}: the official Magenta code's hparams, not a run folder of this "
                         f"project; import it with convert_model.py --from_magenta {run_dir} "
                         "--to RUN_DIR")
    try:
        hps = HParams.from_dict(config["hparams"], source=path)
    except (KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"{path}: not a model_config.json written by this project ({err})") from None
    return hps, config
