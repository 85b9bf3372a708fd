"""Official Sketch-RNN run folders (Magenta's TensorFlow 1 checkpoints) as our run folders.

An official run folder, as Magenta's `sketch_rnn_train` writes it and its pretrained models
come, holds `model_config.json` (the official hparams as a JSON object) and a TF1 checkpoint
(`checkpoint`, `vector-N.index`, `vector-N.data-*`; the `.meta` graph is not needed). The
checkpoint is read with TensorFlow's checkpoint reader (`tf_backend.checkpoint_reader`),
without building any TF1 graph; the model's variables are mapped onto ours by
`official_weights`, and the training state the trainer saves beside them is left out: Adam's
slots (`<variable>/Adam`, `/Adam_1`), `beta1_power`, `beta2_power`, `global_step` and the
learning-rate and KL-weight variables (`Variable`, `Variable_1`), also those of the evaluation
copy of the graph (`vector_rnn_1/`). Anything else is refused, naming it.

The official hparams map onto ours by name (ours follow them); `num_steps`, `save_every` (the
trainer's loop) and `is_training` (a graph-building mode) are training-loop settings with no
counterpart here and are left out, and `data_set` ("aaron_sheep.npz" or a list) becomes the
run's data set names. Missing hparams take the official defaults, as Magenta's `load_model`
does. Official checkpoints do not store the data's scale factor: the official code computes
it when it loads the data, as the standard deviation of the training set's dx and dy; give it,
or let `data_scale_factor` compute it the same way from the data set files.
"""

import dataclasses
import os
import re

from sketch_rnn.data_loader import DataLoader
from sketch_rnn.datasets import check_data_set_names, load_strokes
from sketch_rnn.files import check_regular_file, check_scale_factor, read_json_file
from sketch_rnn.hparams import HParams
from sketch_rnn.official_weights import OfficialVariables, assign_official_weights
from sketch_rnn.run_folder import is_run_folder

SCOPE = "vector_rnn/"
TRAINING_LOOP_HPARAMS = ("num_steps", "save_every", "is_training")
# The official get_default_hparams() names that HParams has with the same meaning (all the
# others but data_set and the training loop's).
TAKEN_HPARAMS = (
    "max_seq_len", "dec_rnn_size", "dec_model", "enc_rnn_size", "enc_model", "z_size",
    "kl_weight", "kl_weight_start", "kl_tolerance", "batch_size", "grad_clip", "num_mixture",
    "learning_rate", "decay_rate", "kl_decay_rate", "min_learning_rate", "use_recurrent_dropout",
    "recurrent_dropout_prob", "use_input_dropout", "input_dropout_prob", "use_output_dropout",
    "output_dropout_prob", "random_scale_factor", "augment_stroke_prob", "conditional")
# The schedules' and optimizer's scalars, in the training graph (vector_rnn/) and in the
# evaluation graph the trainer builds beside it (vector_rnn_1/).
TRAINING_SCALARS = re.compile(r"^vector_rnn(_\d+)?/(global_step|Variable(_\d+)?|beta[12]_power)$")
ADAM_SLOT = re.compile(r"^(?P<variable>.+)/Adam(_\d+)?$")


def official_hparams(config, source):
    """Our HParams and the data set entries (without .npz) of an official model_config.json's
    dict; the entries are checked by `check_official_data_sets` unless --data_set replaces them.

    Raises:
        ValueError: naming `source` and the key, for an hparam we do not know or a value our
            HParams refuses.
    """
    if isinstance(config, list):
        raise ValueError(f"{source}: holds a list of hparam names, not their values (Magenta "
                         "2.x's trainer writes list(hparams.values())); write the run's hparams "
                         "there as a JSON object, as Magenta's pretrained models have them")
    if not isinstance(config, dict):
        raise ValueError(f"{source}: expected a JSON object of the official hparams, got a "
                         f"JSON {type(config).__name__}")
    types = {f.name: f.type for f in dataclasses.fields(HParams)}
    values = {}
    for key, value in config.items():
        if key in TRAINING_LOOP_HPARAMS or key == "data_set":
            continue
        if key not in TAKEN_HPARAMS:
            raise ValueError(f"{source}: unknown official hparam '{key}'")
        if types[key] is bool and type(value) is int and value in (0, 1):
            value = bool(value)  # the official code sets some flags to 0 or 1
        values[key] = value
    hps = HParams.from_dict(values, source=source)
    names = config.get("data_set", ["aaron_sheep.npz"])  # the official default
    names = [names] if isinstance(names, str) else names
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{source}: 'data_set' must be a file name or a list of them, got "
                         f"{str(names)[:80]}")
    return hps, [name.removesuffix(".npz") for name in names]


def check_official_data_sets(data_sets, source):
    """`data_sets` of an official config, checked as names; one line naming `source` if not.

    Magenta joins its data_dir with each entry, so an official config may name a file in a
    sub-folder ('quickdraw/cat.npz'); here a data set is a bare name in --data_dir.
    """
    for name in data_sets:
        if "/" in name or "\\" in name:
            raise ValueError(f"{source}: data_set '{name}' names a file in a folder; give the "
                             "data set's name with --data_set (and its folder with --data_dir)")
    return check_data_set_names(data_sets, None, source)


def find_checkpoint(path):
    """The checkpoint prefix (`.../vector-N`) of an official run folder, or of a prefix.

    The folder's `checkpoint` file names it (an absolute path from another machine is looked
    for in the folder); without that file, the folder's one `*.index` file.

    Raises:
        FileNotFoundError / ValueError: one line naming what is missing or ambiguous.
    """
    if os.path.isfile(path + ".index"):
        return path
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: neither an official run folder nor a checkpoint prefix "
                                "(PREFIX.index)")
    state = os.path.join(path, "checkpoint")
    if os.path.isfile(state):
        check_regular_file(state)
        with open(state, encoding="utf-8", errors="replace") as f:
            match = re.search(r'^model_checkpoint_path:\s*"(.*)"\s*$', f.read(1 << 16), re.M)
        if not match:
            raise ValueError(f"{state}: names no model_checkpoint_path")
        named = match.group(1)
        # The file's own name: the path may be another machine's, Windows' included (its
        # separators doubled by the text format's escaping).
        base = re.split(r"[\\/]", named)[-1]
        for prefix in (os.path.join(path, named), os.path.join(path, base)):
            if os.path.isfile(prefix + ".index"):
                return prefix
        raise FileNotFoundError(f"{state}: names {named}, but there is no {base}.index in {path}")
    indexes = sorted(name for name in os.listdir(path) if name.endswith(".index"))
    if not indexes and is_run_folder(path):
        raise ValueError(f"{path}: a run folder of this project, not an official one; the "
                         "commands and load_run open it as it is")
    if len(indexes) != 1:
        found = f"{len(indexes)} .index files" if indexes else "no .index file"
        raise FileNotFoundError(f"{path}: no 'checkpoint' file and {found}; give the checkpoint's "
                                "prefix (DIR/vector-N) instead")
    return os.path.join(path, indexes[0][:-len(".index")])


def read_checkpoint_variables(prefix):
    """The model's variables of an official checkpoint, and its global step.

    Returns:
        (OfficialVariables, global_step or None). Training state (see the module docstring)
        is checked by name and left unread.

    Raises:
        ValueError: one line naming an unreadable checkpoint or a variable outside the model
            and its training state.
    """
    from sketch_rnn.tf_backend.checkpoint_reader import open_checkpoint

    shapes, read = open_checkpoint(prefix)
    model = {name[len(SCOPE):]: shape for name, shape in shapes.items()
             if name.startswith(SCOPE) and not _is_training_state(name, shapes)}
    for name in shapes:
        if not name.startswith(SCOPE) and not _is_training_state(name, shapes):
            raise ValueError(f"{prefix}: unexpected variable '{name}' (an official model's "
                             f"variables are under '{SCOPE}')")
    step = None
    if shapes.get("vector_rnn/global_step") == []:
        step = int(read("vector_rnn/global_step"))
    return OfficialVariables(model, lambda name: read(SCOPE + name), prefix), step


def _is_training_state(name, shapes):
    """True for the optimizer's and schedules' variables the official trainer saves."""
    if TRAINING_SCALARS.match(name):
        return True
    slot = ADAM_SLOT.match(name)
    if not slot:
        return False
    # The slot of a model variable: named after it, the scope once more in front in TF1.
    variable = slot.group("variable")
    return variable in shapes or variable.removeprefix(SCOPE) in shapes


def data_scale_factor(data_dir, data_sets, max_seq_len, base_url=None):
    """The official normalising scale factor: the standard deviation of the training
    sketches' dx and dy (those of at most max_seq_len points, clamped to +-1000)."""
    train, _, _ = load_strokes(data_dir, ",".join(data_sets), base_url=base_url)
    loader = DataLoader(train, max_seq_len=max_seq_len, name="train")
    return loader.calculate_normalizing_scale_factor()


def import_magenta_checkpoint(path, run_dir, scale_factor=None, data_dir="datasets",
                              data_sets=None, overrides="", force=False):
    """Converts an official run folder into one of ours.

    Args:
        path: the official run folder (model_config.json and a checkpoint), or a checkpoint
            prefix whose folder holds model_config.json.
        run_dir: the run folder to write (atomically; see `run_folder.write_run_folder`).
        scale_factor: the data's scale factor; None computes it from `data_dir`.
        data_dir: folder of the run's data sets (known ones are downloaded if missing).
        data_sets: names to record (and to compute the scale factor from) instead of the
            official config's `data_set`.
        overrides: "k=v,..." of our hparams that the official model does not have (e.g.
            "lstm_matmul_dtype=float32"); the official ones come from its config.
        force: replace a `run_dir` that is not empty.

    Returns:
        dict: hps, data_sets, scale_factor, checkpoint (the prefix read), global_step.
    """
    from sketch_rnn.model import build_model
    from sketch_rnn.run_folder import write_run_folder

    prefix = find_checkpoint(path)
    config_path = os.path.join(path if os.path.isdir(path) else os.path.dirname(prefix),
                               "model_config.json")
    config = read_json_file(config_path)
    hps, official_data_sets = official_hparams(config, config_path)
    hps = _apply_overrides(hps, overrides)
    if data_sets:  # given instead of the official config's, which need not be names here
        data_sets = check_data_set_names(list(data_sets), None, "--data_set")
    else:
        data_sets = check_official_data_sets(official_data_sets, config_path)
    variables, step = read_checkpoint_variables(prefix)
    if scale_factor is None:
        scale_factor = data_scale_factor(data_dir, data_sets, hps.max_seq_len)
    scale_factor = check_scale_factor(scale_factor, "--scale_factor")
    model = build_model(hps)
    assign_official_weights(model, variables)
    source = {"format": "magenta checkpoint", "checkpoint": os.path.abspath(prefix),
              "global_step": step, "official_hparams": config}
    write_run_folder(run_dir, model, scale_factor, data_sets, source, force=force,
                     reads=[prefix + ".index", config_path])
    return {"hps": hps, "data_sets": data_sets, "scale_factor": scale_factor,
            "checkpoint": prefix, "global_step": step}


def _apply_overrides(hps, overrides):
    """`overrides` applied to hps; the official model's own hparams may not be changed."""
    for item in filter(None, (s.strip() for s in (overrides or "").split(","))):
        key = item.split("=", 1)[0].strip()
        if key in TAKEN_HPARAMS:
            raise ValueError(f"--hparams: '{key}' comes from the official model_config.json; "
                             "only settings the official model does not have can be given")
    hps = HParams.parse(overrides, base=hps)
    if hps.encoder != "rnn":
        raise ValueError(f"--hparams: encoder={hps.encoder}: an official checkpoint holds "
                         "Sketch-RNN's bidirectional RNN encoder (encoder=rnn)")
    return hps
