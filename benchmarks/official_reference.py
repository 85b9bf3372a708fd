"""Times the official Sketch-RNN code (Magenta's TensorFlow 1 graph) on this machine.

The speed-ups in the README are ratios against this number, taken on the same machine as
`train_speed.py`'s (save this script's `--json` output and pass the file there as `--official
FILE`, one per cell type, or the number as `--reference official=S_PER_STEP`). The official code
is not part of this project: this script reads it from Magenta's published wheel, unchanged,
and runs the body of its training loop (`sketch_rnn_train.train`: learning-rate and KL-weight
schedules, `DataLoader.random_batch`, one `sess.run` of the train op) with its default
hparams (batch 100, enc 256, dec 512, z 128, M 20, recurrent dropout 0.9) on aaron_sheep,
every batch padded to max_seq_len (250). Summaries, evaluation and checkpoints are left out.
`--hparams "enc_model=layer_norm,dec_model=layer_norm"` overrides the official
`get_default_hparams()` as the official `--hparams` flag does; the cells are picked by
enc_model / dec_model (lstm, layer_norm or hyper), so each cell type is timed with its own run.

It needs its own environment, since the official cells are Keras 2 (tf_keras) classes:

    python3 -m venv /tmp/official && /tmp/official/bin/pip install tensorflow==2.21.0 tf-keras==2.21.0 six
    /tmp/official/bin/pip download magenta==2.1.4 --no-deps -d /tmp/official/wheel
    /tmp/official/bin/python benchmarks/official_reference.py \\
        --wheel /tmp/official/wheel/magenta-2.1.4-py3-none-any.whl [--steps 10] [--json] \\
        [--hparams "enc_model=hyper,dec_model=hyper"]

From the wheel it takes models/sketch_rnn/*.py and contrib/training.py (the HParams class
they use) as they are; magenta/__init__.py is replaced by an empty file, because the real one
imports all of Magenta (music pipelines and their dependencies), which Sketch-RNN does not use.
A benchmark, not a test: run it on an otherwise idle machine.
"""

import argparse
import json
import os
import sys
import tempfile
import time
import types
import zipfile

CELLS = ("lstm", "layer_norm", "hyper")  # the official model.py's enc_model / dec_model choices
TAKEN = ("magenta/models/__init__.py", "magenta/contrib/__init__.py", "magenta/contrib/training.py")


def unpack(wheel, folder):
    """The official Sketch-RNN package from Magenta's wheel, into `folder` (on sys.path)."""
    with zipfile.ZipFile(wheel) as archive:
        names = [name for name in archive.namelist()
                 if name in TAKEN or (name.startswith("magenta/models/sketch_rnn/") and name.endswith(".py"))]
        if not any(name.endswith("sketch_rnn/model.py") for name in names):
            raise SystemExit(f"error: --wheel {wheel}: no magenta/models/sketch_rnn/model.py in it")
        archive.extractall(folder, members=names)
    with open(os.path.join(folder, "magenta", "__init__.py"), "w"):
        pass


def import_official(wheel, folder=None):
    """Imports the official Sketch-RNN code from Magenta's wheel, as TensorFlow 1 graphs.

    Sets the environment its cells need, unpacks the package into `folder` (a new temporary
    folder when None), puts that first on sys.path, imports the package and disables
    TensorFlow 2 behaviour, as `sketch_rnn_train.console_entry_point` does.

    Returns:
        a namespace: `tf` (tensorflow.compat.v1), the official modules `model`,
        `sketch_rnn_train` and `utils`, and `folder`.
    """
    # The official cells subclass tf.compat.v1's RNNCell, which TF >= 2.16 has only with tf_keras.
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if folder is None:
        folder = tempfile.mkdtemp(prefix="sketch-rnn-official-")
    unpack(wheel, folder)
    sys.path.insert(0, folder)
    import tensorflow.compat.v1 as tf
    from magenta.models.sketch_rnn import model, sketch_rnn_train, utils

    tf.disable_v2_behavior()
    return types.SimpleNamespace(tf=tf, model=model, sketch_rnn_train=sketch_rnn_train,
                                 utils=utils, folder=folder)


def apply_overrides(hps, overrides):
    """Applies "k=v,k2=v2" to the official HParams, as its `--hparams` flag does.

    Returns:
        {name: parsed value} of the overridden hparams.
    Raises:
        SystemExit: one line naming the item, for a malformed item, an unknown name, a value
            of the wrong type or a cell the official code does not have.
    """
    items = [item.strip() for item in (overrides or "").split(",") if item.strip()]
    names = []
    for item in items:
        if "=" not in item:
            raise SystemExit(f"error: --hparams: expected key=value, got '{item}'")
        names.append(item.split("=", 1)[0].strip())
        if names[-1] not in hps.values():
            raise SystemExit(f"error: --hparams: unknown official hparam '{names[-1]}'; known: "
                             f"{', '.join(sorted(hps.values()))}")
    try:
        hps.parse(",".join(items))
    except ValueError as error:  # a value of the wrong type
        raise SystemExit(f"error: --hparams: {str(error).splitlines()[0]}") from None
    for key in ("enc_model", "dec_model"):
        if getattr(hps, key) not in CELLS:  # the official code only asserts
            raise SystemExit(f"error: --hparams: '{key}' must be one of {', '.join(CELLS)}, "
                             f"got '{getattr(hps, key)}'")
    return {name: getattr(hps, name) for name in names}


def training_feed(hps, model, train_set, step):
    """The feed of one official training step at global `step`, as sketch_rnn_train.train
    builds it: a random batch, the decayed learning rate and the annealed KL weight."""
    lr = (hps.learning_rate - hps.min_learning_rate) * hps.decay_rate ** step + hps.min_learning_rate
    kl_weight = hps.kl_weight - (hps.kl_weight - hps.kl_weight_start) * hps.kl_decay_rate ** step
    _, x, lengths = train_set.random_batch()
    return {model.input_data: x, model.sequence_lengths: lengths, model.lr: lr,
            model.kl_weight: kl_weight}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", required=True, help="magenta-2.1.4-py3-none-any.whl (pip download)")
    parser.add_argument("--data_dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                           "..", "..", "shared", "datasets"))
    parser.add_argument("--steps", type=int, default=10, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hparams", default="",
                        help='overrides of the official defaults, e.g. "enc_model=hyper,dec_model=hyper"')
    parser.add_argument("--json", action="store_true", help="print one JSON line at the end")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.wheel):
        parser.error(f"--wheel {args.wheel}: no such file")
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be >= 1 and --warmup >= 0")

    official = import_official(args.wheel)
    import numpy as np

    tf, official_model, sketch_rnn_train = official.tf, official.model, official.sketch_rnn_train
    np.random.seed(args.seed)
    hps = official_model.get_default_hparams()  # data_set=['aaron_sheep.npz']
    overrides = apply_overrides(hps, args.hparams)
    train_set, _, _, hps, eval_hps, _ = sketch_rnn_train.load_dataset(args.data_dir, hps)
    sketch_rnn_train.reset_graph()
    tf.set_random_seed(args.seed)
    model = official_model.Model(hps)
    official_model.Model(eval_hps, reuse=True)  # as sketch_rnn_train.trainer
    session = tf.Session()
    session.run(tf.global_variables_initializer())

    def train_step():  # the body of sketch_rnn_train.train
        feed = training_feed(hps, model, train_set, session.run(model.global_step))
        return session.run([model.r_cost, model.kl_cost, model.train_op], feed)[:2]

    for _ in range(args.warmup):
        train_step()
    losses = []
    start = time.perf_counter()
    for _ in range(args.steps):
        losses.append(train_step())
    seconds = (time.perf_counter() - start) / args.steps
    print(f"official (enc {hps.enc_model}, dec {hps.dec_model}): {seconds:.3f} s/step, "
          f"{hps.batch_size / seconds:.1f} sketches/s ({args.steps} steps after {args.warmup}, "
          f"batch {hps.batch_size}, max_seq_len {hps.max_seq_len}, TensorFlow {tf.__version__}); "
          f"reconstruction loss {losses[0][0]:.3f} -> {losses[-1][0]:.3f}; "
          f"hparams [{args.hparams or 'defaults'}]")
    if args.json:
        print(json.dumps({"official_s_per_step": seconds, "official_sketches_per_s": hps.batch_size / seconds,
                          "steps": args.steps, "warmup": args.warmup,
                          "max_seq_len": int(hps.max_seq_len), "batch_size": int(hps.batch_size),
                          "enc_model": hps.enc_model, "dec_model": hps.dec_model,
                          "hparams": overrides}))


if __name__ == "__main__":
    main()
