"""Sketch-RNN (Ha & Eck, arXiv 1704.03477): the model's public names, in one import.

The code lives in the `sketch_rnn` package, one concept per module:

| module | what it holds |
|---|---|
| `sketch_rnn.hparams` | `HParams` (official names and defaults), `load_config` |
| `sketch_rnn.cells` | the cells `lstm`, `layer_norm`, `hyper`: one `step` each |
| `sketch_rnn.unroll` | the generic unroll of any cell (`keras.ops` scan), the reference |
| `sketch_rnn.engines` | faster ways to run a cell (fused C++, cuDNN) and the one place that chooses |
| `sketch_rnn.recurrent` | `Recurrent`, the layer running a cell over sequences, with the official dropouts |
| `sketch_rnn.mixture` | the mixture density, the losses and `sample_stroke` (eq. 3-11) |
| `sketch_rnn.model` | `build_model`, `compile_model`, `SketchRNN`, `LatentSample` |
| `sketch_rnn.drawing` | sub-models, interpolation, `SketchRNNDrawer`, `load_run` |
| `sketch_rnn.backend` | what differs between Keras backends; `sketch_rnn.tf_backend` holds all TF code |
"""

from sketch_rnn.cells import HyperLSTMCell, LayerNormLSTMCell, LSTMCell, RecurrentCell, make_cell
from sketch_rnn.drawing import (
    SketchRNNDrawer,
    decoder_model,
    decoder_step_model,
    encoder_model,
    initial_state_model,
    interpolate,
    lerp,
    load_run,
    slerp,
)
from sketch_rnn.engines import describe as describe_engines
from sketch_rnn.hparams import HParams, load_config
from sketch_rnn.mixture import (
    bivariate_normal_log_pdf,
    get_mixture_coef,
    kl_divergence,
    reconstruction_loss,
    sample_stroke,
)
from sketch_rnn.model import (
    LatentSample,
    SketchRNN,
    build_model,
    compile_model,
    decoder_initial_state,
    resolved_matmul_dtype,
)
from sketch_rnn.recurrent import Recurrent

__all__ = [
    "HParams", "load_config", "RecurrentCell", "LSTMCell", "LayerNormLSTMCell", "HyperLSTMCell",
    "make_cell", "Recurrent", "describe_engines", "LatentSample", "SketchRNN", "build_model",
    "compile_model", "decoder_initial_state", "resolved_matmul_dtype", "kl_divergence",
    "get_mixture_coef", "bivariate_normal_log_pdf", "reconstruction_loss", "sample_stroke",
    "SketchRNNDrawer", "load_run", "encoder_model", "initial_state_model", "decoder_model",
    "decoder_step_model", "interpolate", "lerp", "slerp",
]
