"""Writing a whole run folder at once: an imported model, or a trained run made ready to share.

`load_run` (sketch_rnn.drawing), the sampling command and the notebook open it as they open a
training run's folder: `model_config.json` as the training command writes it (with `source`
saying where the weights came from) and `checkpoints/best.weights.h5`.
"""

import os
import secrets
import shutil

from sketch_rnn.datasets import check_data_set_names
from sketch_rnn.files import check_scale_factor, is_within, read_json_config, refuse_link


def write_run_folder(run_dir, model, scale_factor, data_sets, source, force=False, config=None,
                     float16=False, files=(), flag="--to", reads=()):
    """Writes `run_dir`: model_config.json and checkpoints/best.weights.h5, all or nothing.

    The folder is written beside `run_dir` under a temporary name and renamed into place,
    so `run_dir` never holds half a run. An existing `run_dir` must be an empty folder,
    unless `force`, which replaces a run folder (`is_run_folder`; the old folder is renamed
    away, then deleted). A `run_dir` that is, or holds, a file or folder
    the conversion reads is refused, with or without `force`.

    Args:
        run_dir: the folder to write.
        model: a SketchRNN (`build_model`) holding the weights; its `hps` are stored.
        scale_factor: the data's normalising scale factor.
        data_sets: names of the data sets the model was trained on.
        source: JSON-able note of where the weights came from (the `source` entry).
        force: replace a run_dir that is not empty.
        config: entries of model_config.json to keep (a trained run's config); the
            hparams, scale factor, data sets, versions and source above replace theirs.
        float16: store the weights as float16 (half the size; see `to_float16`).
        files: (source path, path inside run_dir) pairs of files to copy in as well.
        flag: the command's flag for run_dir, which the errors name.
        reads: paths of the files and folders the conversion reads (its input).

    Returns:
        the largest absolute change of a weight from float16 rounding (0.0 without float16).

    Raises:
        ValueError / UnsafePathError: naming run_dir, for a link, a file, or a folder that is
            not empty without force.
    """
    import keras

    run_dir = os.path.abspath(run_dir)
    refuse_link(run_dir, flag)
    check_output_folder(run_dir, reads, flag)
    if os.path.exists(run_dir):
        if not os.path.isdir(run_dir):
            raise ValueError(f"{flag}: {run_dir} exists and is not a folder")
        if os.listdir(run_dir) and not force:
            raise ValueError(f"{flag}: {run_dir} is not empty; choose a new folder or replace it "
                             "with --force")
        if os.listdir(run_dir) and not is_run_folder(run_dir):
            raise ValueError(f"{flag}: {run_dir} is not a run folder (model_config.json and "
                             "checkpoints/); --force replaces only a run folder: choose a new folder")
    scale_factor = check_scale_factor(scale_factor, "scale factor")
    data_sets = check_data_set_names(list(data_sets), None, "data sets")
    parent, name = os.path.split(run_dir)
    os.makedirs(parent, exist_ok=True)
    staging = os.path.join(parent, f".tmp-{os.getpid()}-{secrets.token_hex(4)}-{name}")
    os.mkdir(staging)
    try:
        os.mkdir(os.path.join(staging, "checkpoints"))
        weights = os.path.join(staging, "checkpoints", "best.weights.h5")
        model.save_weights(weights)
        max_change = 0.0
        if float16:
            full = weights + ".float32"
            os.rename(weights, full)
            max_change = to_float16(full, weights)
            os.remove(full)
        config = {**(config or {}), "hparams": model.hps.to_dict(), "scale_factor": scale_factor,
                  "max_seq_len": model.hps.max_seq_len, "data_set": data_sets,
                  "keras_version": keras.__version__, "backend": keras.backend.backend(),
                  "source": source}
        from callbacks import write_json_atomically

        write_json_atomically(config, os.path.join(staging, "model_config.json"))
        for source_path, inside in files:
            target = os.path.join(staging, inside)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copyfile(source_path, target)
        with open(weights, "rb") as f:
            os.fsync(f.fileno())
        _replace_folder(staging, run_dir)
    finally:
        if os.path.lexists(staging):
            shutil.rmtree(staging)
    return max_change


def is_run_folder(path):
    """True for a folder as training, an import or a share writes it: model_config.json and
    checkpoints/ (an official Magenta folder has a model_config.json but no checkpoints/)."""
    return (os.path.isfile(os.path.join(path, "model_config.json"))
            and os.path.isdir(os.path.join(path, "checkpoints")))


def check_output_folder(out_dir, reads, flag):
    """One line naming `flag` if the folder `out_dir` is, or holds, one of the paths `reads`
    (replacing it would delete the conversion's own input)."""
    for path in reads:
        if is_within(path, out_dir):
            what = "is" if os.path.samefile(path, out_dir) else "holds"
            raise ValueError(f"{flag}: {out_dir} {what} the input {path}; choose a folder "
                             "outside it")


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


def to_float16(source, target):
    """Copies the Keras weights file `source` to `target` with its float32 arrays as float16.

    Keras loads such a file into the model's float32 variables as it is (each value is
    widened back exactly), so the model computes in float32 with weights rounded to 11
    significant bits (relative change at most 2**-11).

    Returns:
        the largest absolute change of a value from the rounding.

    Raises:
        ValueError: naming the array, for a value beyond float16's range (65504).
    """
    import h5py
    import numpy as np

    max_change = 0.0
    with h5py.File(source, "r") as old, h5py.File(target, "w") as new:
        for key, value in old.attrs.items():
            new.attrs[key] = value

        def copy(name, item):
            nonlocal max_change
            if isinstance(item, h5py.Group):
                group = new.require_group(name)
                for key, value in item.attrs.items():
                    group.attrs[key] = value
                return
            data = item[()]
            if getattr(data, "dtype", None) == np.float32:  # arrays and scalars
                data = np.asarray(data)
                if np.abs(data).max(initial=0) > np.finfo(np.float16).max:
                    raise ValueError(f"{source}: {name} holds values beyond float16's range "
                                     "(65504); share it without --float16")
                rounded = data.astype(np.float16)
                max_change = max(max_change, float(np.abs(data - rounded).max(initial=0)))
                data = rounded
            new.create_dataset(name, data=data)
            for key, value in item.attrs.items():
                new[name].attrs[key] = value

        old.visititems(copy)
    return max_change


def share_run_folder(run_dir, out_dir, checkpoint=None, float16=False, force=False):
    """Writes `out_dir`, a copy of the trained run `run_dir` made to share (or ship).

    The weights (by default the run's best) without the optimizer state, as float16 with
    `float16`; model_config.json with a `source` entry naming the run, the weights and
    their epoch and step (and, as `origin`, the run's own `source` if it was imported or
    shared); the training log and the test losses, if the run has them.

    Returns:
        dict: `checkpoint` (the weights file read), `bytes` (the new weights file's size),
        `max_change` (largest absolute change of a weight; 0 without float16), `files` (the
        log and losses files copied, as paths inside the run folder).
    """
    from sketch_rnn.drawing import default_checkpoint, load_run
    from sketch_rnn.hparams import load_config

    # write_run_folder checks this again; checked here too so that a wrong --share fails
    # before the model is loaded.
    check_output_folder(out_dir, [run_dir] + ([checkpoint] if checkpoint else []), "--share")
    _, config = load_config(run_dir)
    checkpoint = checkpoint or default_checkpoint(run_dir)
    drawer = load_run(run_dir, checkpoint)
    # The run's folder name, not its path: a shared model should not carry the sharer's paths.
    source = {"shared_from": os.path.basename(os.path.abspath(run_dir)),
              "weights": os.path.basename(checkpoint),
              "float16": bool(float16)}
    source.update(checkpoint_position(run_dir, checkpoint))
    if "source" in config:  # the run was imported or shared itself: say where it came from
        source["origin"] = config["source"]
    files = [(os.path.join(run_dir, inside), inside)
             for inside in (os.path.join("logs", "training_log.csv"), "test_losses.json")
             if os.path.isfile(os.path.join(run_dir, inside))]
    kept = {k: v for k, v in config.items() if k != "source"}
    max_change = write_run_folder(out_dir, drawer.model, drawer.scale_factor, drawer.data_sets,
                                  source, force=force, config=kept, float16=float16, files=files,
                                  flag="--share", reads=[run_dir, checkpoint])
    weights = os.path.join(out_dir, "checkpoints", "best.weights.h5")
    return {"checkpoint": checkpoint, "bytes": os.path.getsize(weights), "max_change": max_change,
            "files": [inside for _, inside in files]}


def checkpoint_position(run_dir, checkpoint):
    """{"epoch": E, "step": S} of a run's weights file, where known.

    From the file's name (ckpt-epochEEEE-stepSSSSSSSS.weights.h5); for a best.weights.h5,
    from the best.json beside it, or, in a shared run (which has no best.json), from the
    `source` its model_config.json records. Otherwise {}.
    """
    from callbacks import CHECKPOINT_PATTERN, read_best

    match = CHECKPOINT_PATTERN.search(os.path.basename(checkpoint))
    if match:
        return {"epoch": int(match.group(1)), "step": int(match.group(2))}
    if os.path.basename(checkpoint) != "best.weights.h5":
        return {}
    position = read_best(os.path.dirname(checkpoint))
    shipped = os.path.join(run_dir, "checkpoints", "best.weights.h5")
    if not position and os.path.realpath(checkpoint) == os.path.realpath(shipped):
        source = read_json_config(os.path.join(run_dir, "model_config.json")).get("source")
        position = source if isinstance(source, dict) else {}
    return {key: position[key] for key in ("epoch", "step")
            if isinstance(position.get(key), int) and not isinstance(position[key], bool)}
