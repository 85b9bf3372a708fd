"""Writing a whole run folder at once, for a model that was not trained here (an import).

`load_run` (sketch_rnn.drawing), the sampling command and the notebook open it as they open a
training run's folder: `model_config.json` as the training command writes it (with `source`
saying where the weights came from) and `checkpoints/best.weights.h5`.
"""

import os
import secrets
import shutil

import utils


def write_run_folder(run_dir, model, scale_factor, data_sets, source, force=False):
    """Writes `run_dir`: model_config.json and checkpoints/best.weights.h5, all or nothing.

    The folder is written beside `run_dir` under a temporary name and renamed into place,
    so `run_dir` never holds half a run. An existing `run_dir` must be an empty folder,
    unless `force`, which replaces it (the old folder is renamed away, then deleted).

    Args:
        run_dir: the folder to write.
        model: a SketchRNN (`build_model`) holding the weights; its `hps` are stored.
        scale_factor: the data's normalising scale factor.
        data_sets: names of the data sets the model was trained on.
        source: JSON-able note of where the weights came from (the `source` entry).
        force: replace a run_dir that is not empty.

    Raises:
        ValueError / UnsafePathError: naming run_dir, for a link, a file, or a folder that is
            not empty without force.
    """
    import keras

    run_dir = os.path.abspath(run_dir)
    utils.refuse_link(run_dir, "--to")
    if os.path.exists(run_dir):
        if not os.path.isdir(run_dir):
            raise ValueError(f"--to: {run_dir} exists and is not a folder")
        if os.listdir(run_dir) and not force:
            raise ValueError(f"--to: {run_dir} is not empty; choose a new folder or replace it "
                             "with --force")
    scale_factor = utils.check_scale_factor(scale_factor, "scale factor")
    data_sets = utils.check_data_set_names(list(data_sets), None, "data sets")
    parent, name = os.path.split(run_dir)
    os.makedirs(parent, exist_ok=True)
    staging = os.path.join(parent, f".tmp-{os.getpid()}-{secrets.token_hex(4)}-{name}")
    os.mkdir(staging)
    try:
        os.mkdir(os.path.join(staging, "checkpoints"))
        weights = os.path.join(staging, "checkpoints", "best.weights.h5")
        model.save_weights(weights)
        config = {"hparams": model.hps.to_dict(), "scale_factor": scale_factor,
                  "max_seq_len": model.hps.max_seq_len, "data_set": data_sets,
                  "keras_version": keras.__version__, "backend": keras.backend.backend(),
                  "source": source}
        from callbacks import write_json_atomically

        write_json_atomically(config, os.path.join(staging, "model_config.json"))
        with open(weights, "rb") as f:
            os.fsync(f.fileno())
        _replace_folder(staging, run_dir)
    finally:
        if os.path.lexists(staging):
            shutil.rmtree(staging)


def _replace_folder(new, target):
    """Renames folder `new` to `target`, moving an existing `target` away first."""
    if os.path.isdir(target) and os.listdir(target):
        parent, name = os.path.split(target)
        old = os.path.join(parent, f".tmp-{os.getpid()}-{secrets.token_hex(4)}-old-{name}")
        os.rename(target, old)
        os.rename(new, target)
        shutil.rmtree(old)
    else:
        os.replace(new, target)  # an empty folder is replaced by the rename itself
