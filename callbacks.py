"""Training callbacks: KL annealing, learning-rate decay, atomic checkpoints, evaluation,
pictures in TensorBoard.

Both schedules are functions of the global step (the optimizer's `iterations`, which every
checkpoint stores), so a resumed run continues them exactly with no counter to restore.
"""

import glob
import json
import math
import os
import re

import keras
import numpy as np

import utils
from batch_generator import evaluation_batches
from sketch_rnn.warm_start import ramp_factor

# Seeds the z noise of every evaluation: validation, the final test and evaluate.py.
EVALUATION_SEED = 0


def learning_rate_at(step, hps):
    """lr = (lr - min_lr) * decay_rate**step + min_lr, the official per-minibatch decay."""
    return (hps.learning_rate - hps.min_learning_rate) * hps.decay_rate**step + hps.min_learning_rate


def kl_weight_at(step, hps):
    """w_KL = kl_weight - (kl_weight - kl_weight_start) * kl_decay_rate**step (eq. 12 annealing)."""
    return hps.kl_weight - (hps.kl_weight - hps.kl_weight_start) * hps.kl_decay_rate**step


def global_step(model):
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


class LearningRateDecay(keras.callbacks.Callback):
    """Sets the optimizer's learning rate before each minibatch from the global step; logs `lr`.
    A warm-started run's (`warm_start`, as its model_config.json records it) ramps up first."""

    def __init__(self, hps, warm_start=None):
        super().__init__()
        self.hps = hps
        self.warm_start = warm_start

    def on_train_batch_begin(self, batch, logs=None):
        step = global_step(self.model)
        self.model.optimizer.learning_rate.assign(
            learning_rate_at(step, self.hps) * ramp_factor(step, self.warm_start))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["lr"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


class KLWeightAnnealing(keras.callbacks.Callback):
    """Sets the `latent` layer's KL weight before each minibatch from the global step; logs
    `kl_weight`. Does nothing for a model without a KL term (decoder-only, or kl_weight=0)."""

    def __init__(self, hps):
        super().__init__()
        self.hps = hps

    def _variable(self):
        return self.model.get_layer("latent").kl_weight

    def on_train_batch_begin(self, batch, logs=None):
        if self.hps.has_kl_term:
            self._variable().assign(kl_weight_at(global_step(self.model), self.hps))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self.hps.has_kl_term:
            logs["kl_weight"] = float(keras.ops.convert_to_numpy(self._variable()))


class BatchEpoch(keras.callbacks.Callback):
    """Tells a `batch_generator.SketchBatches` which epoch is starting (Keras's index, which
    counts from --initial_epoch), so its shuffle and augmentation follow the epoch."""

    def __init__(self, batches):
        super().__init__()
        self.batches = batches

    def on_epoch_begin(self, epoch, logs=None):
        self.batches.epoch = epoch


class TrainingStopped(Exception):
    """Raised by `StopAfterBatch` to leave `fit` between two batches."""


class StopAfterBatch(keras.callbacks.Callback):
    """Ends `fit` after the batch during which `request()` was called (from a signal handler).

    Setting `model.stop_training` instead would let Keras end the epoch first: validate, and
    hand the partial epoch to every epoch-end callback, which writes a log row for it that a
    resumed run, redoing that epoch, writes again. This leaves `fit` by raising
    `TrainingStopped` from the batch's end, so an interrupted epoch leaves no trace; the
    caller then ends the callbacks (`end_callbacks`) so their files are closed. A request
    made after an epoch's last batch lets that epoch end whole, checkpoint included.
    """

    def __init__(self):
        super().__init__()
        self.requested = False

    def request(self):
        self.requested = True

    def on_train_batch_end(self, batch, logs=None):
        if self.requested:
            raise TrainingStopped


def end_callbacks(callbacks):
    """Runs `on_train_end` of each callback, as `fit` would have (closing logs and writers)."""
    for callback in callbacks:
        callback.on_train_end()


# ---------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------


class FixedEvaluationNoise(keras.callbacks.Callback):
    """Draws the z noise of every evaluation from one seed and leaves training's noise alone.

    The official evaluation samples z = mu + sigma * eps as training does (its eval model
    differs from the training one only in having no dropout). So that the same weights give
    the same figures every time, during validation, the final test and evaluate.py, each
    evaluation starts the `latent` layer's noise generator at `seed`, and puts the training's
    generator state back afterwards: training draws the same noise as it would without
    validation, and checkpoints store the training's state.
    """

    def __init__(self, seed=EVALUATION_SEED):
        super().__init__()
        self.start = keras.ops.convert_to_numpy(keras.random.SeedGenerator(seed).state)
        self.saved = None

    def _generator(self):
        return self.model.get_layer("latent").seed_generator if self.model.hps.conditional else None

    def on_test_begin(self, logs=None):
        generator = self._generator()
        if generator is not None:
            self.saved = keras.ops.convert_to_numpy(generator.state)
            generator.state.assign(self.start)

    def on_test_end(self, logs=None):
        if self.saved is not None:
            self._generator().state.assign(self.saved)
            self.saved = None


def evaluate(model, loader, kl_weight=None, seed=EVALUATION_SEED, classes=None,
             distribute=None):
    """The losses of one split's sketches, computed as training's validation computes them.

    The official evaluation (Magenta's `evaluate_model` with its eval model): no dropout,
    z sampled from the posterior (seeded, `FixedEvaluationNoise`), and the reconstruction
    loss masked after each sketch's last point, pen term included (`reconstruction_loss`
    with mask_pen), summed and divided by batch_size * max_seq_len. A cnn model reads the
    pictures of the sketches, rendered as in training (without augmentation).

    When the loader holds labels (`utils.DataLoader(labels=...)`) of more than one class, the
    figures of each class are computed too, on the split's sketches of that class alone (in
    their order in the split, the z noise starting from `seed` again): the figures a run
    evaluated on a file holding that class alone would get.

    Args:
        model: a compiled SketchRNN.
        loader: `utils.DataLoader` of the split, normalised with the run's scale factor.
        kl_weight: the KL weight of `loss`; None keeps the model's (the annealed value a
            checkpoint stores), a number is set for this evaluation only. A model without a
            KL term (decoder-only, kl_weight=0) ignores it.
        seed: seed of the z noise.
        classes: the class names, indexed by the loader's labels (default "class <k>").
        distribute: under tf.distribute, the function that turns `SketchBatches` into the
            model's input (`tf_backend.distribute.distributed_batches` for the strategy).

    Returns:
        dict: `loss` (L_R + kl_weight * max(L_KL, kl_tolerance); L_R without a KL term),
        `reconstruction_loss`, `kl_loss` (not floored; models with a KL term only),
        `nats_per_point` (the masked reconstruction loss summed over every real point of
        every sketch, divided by the number of those points), `kl_weight` (0 without a KL
        term), `sketches`, `points`; with labels of several classes, `classes`: {class name:
        the same figures for its sketches}, in the order of the class indices.
    """
    logs = _evaluate(model, loader, kl_weight, seed, distribute)
    labels = loader.labels
    if labels is not None and len(np.unique(labels)) > 1:
        logs["classes"] = {}
        for label in np.unique(labels):
            name = classes[label] if classes is not None else f"class {label}"
            part = loader.subset(np.flatnonzero(labels == label), name=f"{loader.name} ({name})")
            logs["classes"][name] = _evaluate(model, part, kl_weight, seed, distribute)
    return logs


def one_device_pipeline(batches, first_epoch, end_epoch):
    """With TensorFlow, epochs `first_epoch` .. `end_epoch - 1` of `batches` (a `SketchBatches`
    or evaluation batches) as one tf.data pipeline that leaves the batch length open
    (`one_device_batches`): given a PyDataset, Keras takes the shapes of its first two batches
    (two of the same length, then another, and the step fails) and wraps it anew each epoch.
    None with other backends, which take the batches themselves."""
    if keras.backend.backend() != "tensorflow":
        return None
    from sketch_rnn.tf_backend.distribute import one_device_batches

    return one_device_batches(batches, first_epoch, end_epoch)


def evaluation_data(batches):
    """`batch_generator.evaluation_batches` as `evaluate` (or `fit`'s validation) takes them on
    one device: one pass of `one_device_pipeline`, or the batches themselves."""
    pipeline = one_device_pipeline(batches, batches.epoch, batches.epoch + 1)
    return batches if pipeline is None else pipeline


def _evaluate(model, loader, kl_weight, seed, distribute):
    """`evaluate` of all the loader's sketches together."""
    from sketch_rnn.raster import batch_renderer

    hps = model.hps
    latent = model.get_layer("latent") if hps.has_kl_term else None
    previous = None
    if latent is not None:
        previous = float(keras.ops.convert_to_numpy(latent.kl_weight))
        if kl_weight is not None:
            latent.kl_weight.assign(kl_weight)
    batches = evaluation_batches(loader, hps.batch_size, batch_renderer(hps))
    data = (dict(x=evaluation_data(batches)) if distribute is None
            else dict(x=distribute(batches), steps=len(batches)))
    try:
        logs = model.evaluate(**data, callbacks=[FixedEvaluationNoise(seed)], return_dict=True,
                              verbose=0)
    finally:
        if latent is not None:
            latent.kl_weight.assign(previous)
    points = int(loader.lengths.sum())
    # The figure is sum / (sketches * max_seq_len) (each batch's sum / (B * max_seq_len),
    # averaged with weights B), so the sum over the split's points is figure * sketches * T.
    logs["nats_per_point"] = logs["reconstruction_loss"] * len(loader) * hps.max_seq_len / points
    if latent is None:
        logs.pop("kl_loss", None)  # no KL term: decoder-only, or kl_weight=0
        used = 0.0
    else:
        used = previous if kl_weight is None else float(kl_weight)
    logs.update(kl_weight=used, sketches=len(loader), points=points)
    return logs


# ---------------------------------------------------------------------------------------
# Pictures in TensorBoard
# ---------------------------------------------------------------------------------------


class TensorBoardDrawings(keras.callbacks.Callback):
    """After every epoch, writes what the model draws to TensorBoard, as two images.

    `samples`: `count` sketches from z ~ N(0, I) (or from no z, decoder-only) at
    `temperature`, drawn with the same seed every epoch, so that one watches the same draws
    improve. `reconstructions` (conditional models): the given sketches, a fixed few of the
    validation split, above the sketches decoded from their z (the posterior mean), seeded
    too. Each sketch is scaled to fit a `cell_size` square. On a 2-core CPU the first
    epoch's pictures take about 5 s (tracing the sampling loop), later ones under 1 s with
    the default model.

    Args:
        log_dir: folder of the event files (TensorBoard shows it as a run of that name).
        sketches: stroke-3 sketches in model units to reconstruct.
        count: samples to draw.
        temperature: the sampling temperature tau.
        seed: seed of the samples' z and of all the sampling noise.
        cell_size: pixels per sketch.
    """

    def __init__(self, log_dir, sketches=(), count=6, temperature=0.5, seed=0, cell_size=96):
        super().__init__()
        self.log_dir = log_dir
        self.sketches = list(sketches)
        self.count = count
        self.temperature = temperature
        self.seed = seed
        self.cell_size = cell_size
        self.writer = None
        self.drawer = None

    def on_train_begin(self, logs=None):
        import tensorflow as tf  # TensorBoard's event files are TensorFlow's

        utils.refuse_link(self.log_dir)
        self.writer = tf.summary.create_file_writer(self.log_dir)

    def on_epoch_end(self, epoch, logs=None):
        import tensorflow as tf

        if not weights_are_finite(self.model):
            return  # training stops (Checkpoint); nothing worth drawing
        for name, image in self.images().items():
            with self.writer.as_default():
                tf.summary.image(name, np.asarray(image)[None], step=epoch)
        self.writer.flush()

    def on_train_end(self, logs=None):
        if self.writer is not None:
            self.writer.close()

    def images(self):
        """{name: Pillow image} of the model as it is now."""
        from sketch_rnn.drawing import SketchRNNDrawer

        # TensorFlow's sampling loop, traced once without XLA (compiling costs more than it
        # saves on a dozen sketches), reads the weights when it runs. JAX's loop runs only
        # under jax.jit, which keeps the weights it compiled with: a new drawer each epoch.
        on_tensorflow = keras.backend.backend() == "tensorflow"
        if self.drawer is None or not on_tensorflow:
            self.drawer = SketchRNNDrawer(self.model, jit_compile=not on_tensorflow)
        grid = dict(columns=self.count, cell_size=self.cell_size)
        images = {"samples": utils.sketches_to_image(
            self.drawer.sample(self.count, self.temperature, seed=self.seed), **grid)}
        if self.sketches and self.model.hps.conditional:
            decoded = self.drawer.reconstruct(self.sketches, self.temperature, seed=self.seed)
            images["reconstructions"] = utils.sketches_to_image(
                self.sketches + decoded, columns=len(self.sketches), cell_size=self.cell_size)
        return images


# ---------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------

CHECKPOINT_PATTERN = re.compile(r"ckpt-epoch(\d+)-step(\d+)\.weights\.h5$")


def checkpoint_name(epochs_done, step):
    """File name of the checkpoint taken at global `step` after `epochs_done` whole epochs."""
    return f"ckpt-epoch{epochs_done:04d}-step{step:08d}.weights.h5"


def save_atomically(model, path):
    """Writes the model's weights and optimizer state to `path` via a temporary file and rename.

    A crash or Ctrl-C during the write leaves the old file (or none) in place, never half
    a file: the rename is the only step that makes the new checkpoint visible. A symbolic
    link at `path` is refused (utils.UnsafePathError), and one at the temporary name removed
    first, so that the write never goes through a link.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    utils.refuse_link(path)
    temporary = os.path.join(directory, f".tmp-{os.getpid()}-{os.path.basename(path)}")
    if os.path.lexists(temporary):  # Keras opens the name for writing, following links
        os.remove(temporary)
    try:
        model.save_weights(temporary)
        with open(temporary, "rb") as f:
            os.fsync(f.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def write_json_atomically(data, path):
    """Writes `data` as JSON to `path` via a new temporary file and rename, never through a link."""
    utils.write_atomically(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


# Temporary names of save_atomically and utils.write_atomically (".tmp-<pid>-...") and of
# older versions of write_json_atomically ("<name>.tmp-<pid>"); group 1 or 2 is the pid of
# the process that wrote them.
TEMPORARY_PATTERN = re.compile(r"^\.tmp-(\d+)-|\.tmp-(\d+)$")


def remove_stale_temporaries(directory):
    """Deletes the temporary files that atomic writes of killed runs left in `directory`.

    Nothing reads them (no checkpoint has such a name); the files of processes that may still
    be running are kept. Returns the paths removed.
    """
    removed = []
    for name in sorted(os.listdir(directory)) if os.path.isdir(directory) else []:
        match = TEMPORARY_PATTERN.search(name)
        if match and not _may_be_running(int(match.group(1) or match.group(2))):
            os.remove(os.path.join(directory, name))
            removed.append(os.path.join(directory, name))
    return removed


def _may_be_running(pid):
    """False only if no process `pid` exists."""
    if os.name != "posix" or pid == os.getpid():
        return True  # Windows has no harmless probe: os.kill would end the process
    try:
        os.kill(pid, 0)  # signal 0 only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, as another user's
    return True


def list_checkpoints(directory):
    """The run's step checkpoints as (step, epoch, path), oldest first.

    Only regular files (or links to them) count: reading a FIFO named like a checkpoint
    would wait forever.
    """
    found = []
    for path in glob.glob(os.path.join(directory, "ckpt-*.weights.h5")):
        match = CHECKPOINT_PATTERN.search(os.path.basename(path))
        if match and os.path.isfile(path):
            found.append((int(match.group(2)), int(match.group(1)), path))
    return sorted(found)


def check_run_folder(run_dir):
    """One-line errors (utils.UnsafePathError) for links where a training run would write.

    Training writes model_config.json, test_losses.json, logs/training_log.csv (appended),
    logs/tensorboard/ (train/, validation/, drawings/) and everything in checkpoints/. A
    symbolic link at any of these, or at any name inside checkpoints/, would make it write
    to a file outside the run folder; a training log or best.json that is not a regular
    file would hang it. The run folder itself may be a link (to another disk, say).
    """
    logs = os.path.join(run_dir, "logs")
    tensorboard = os.path.join(logs, "tensorboard")
    checkpoints = os.path.join(run_dir, "checkpoints")
    for path in [os.path.join(run_dir, "model_config.json"),
                 os.path.join(run_dir, "test_losses.json"), logs,
                 os.path.join(logs, "training_log.csv"), tensorboard,
                 os.path.join(tensorboard, "train"), os.path.join(tensorboard, "validation"),
                 os.path.join(tensorboard, "drawings"), checkpoints]:
        utils.refuse_link(path)
    for path in sorted(glob.glob(os.path.join(glob.escape(checkpoints), "*"))
                       + glob.glob(os.path.join(glob.escape(checkpoints), ".*"))):
        utils.refuse_link(path)
    log = os.path.join(logs, "training_log.csv")
    if os.path.lexists(log):
        utils.check_regular_file(log)
    read_best(checkpoints)  # a damaged best.json is an error now, not at the first epoch's end


def read_best(checkpoint_dir):
    """What `checkpoints/best.json` says of `best.weights.h5`: {monitor: loss, "step", "epoch"}.

    Args:
        checkpoint_dir: a run's checkpoints/ folder.

    Returns:
        the dict, or {} if there is no best.json.

    Raises:
        ValueError, utils.UnsafePathError: naming the file, if it is not a regular file, not a
            JSON object, or holds a loss that is not a number or an epoch or step that is not
            a whole number.
    """
    path = os.path.join(checkpoint_dir, "best.json")
    if not os.path.lexists(path):
        return {}
    best = utils.read_json_config(path)
    for key, value in best.items():
        whole = key in ("step", "epoch")
        if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)):
            expected = "a whole number" if whole else "a number"
            raise ValueError(f"{path}: {key} is {value!r}, expected {expected}; remove the file "
                             f"to have the next epoch's weights taken as the best")
    return best


def weights_are_finite(model):
    return all(np.all(np.isfinite(keras.ops.convert_to_numpy(v))) for v in model.weights)


class Checkpoint(keras.callbacks.Callback):
    """Saves weights + optimizer state atomically every `save_every` minibatches and each epoch.

    Files are `checkpoints/ckpt-epochEEEE-stepSSSSSSSS.weights.h5` (the number of epochs
    finished when it was saved, which is the `--initial_epoch` to resume at, and the global
    step); the newest `keep` are kept. `best.weights.h5` holds the
    model with the lowest validation loss so far, and `best.json` its loss and step, so a
    resumed run keeps comparing against it. A checkpoint whose weights are not finite is
    never written: training stops instead, naming the last good checkpoint; a
    non-finite loss or weights found after a batch stop it there by raising
    `TrainingStopped`, as `StopAfterBatch` does, so the broken epoch is neither validated nor
    logged (`stopped_on_nan` tells the caller why it stopped). Temporary files
    left by a killed run's writes are deleted when the next run starts.

    Args:
        directory: the run's checkpoints folder.
        save_every: minibatches between checkpoints; 0 saves only at the end of each epoch.
        keep: how many step checkpoints to keep.
        monitor: the validation metric that decides the best model.
    """

    def __init__(self, directory, save_every=0, keep=3, monitor="val_loss"):
        super().__init__()
        self.directory = directory
        self.save_every = save_every
        self.keep = keep
        self.monitor = monitor
        self.epoch = 0
        self.last_saved = None
        self.stopped_on_nan = False
        removed = remove_stale_temporaries(directory)
        if removed:
            print(f"Removed {len(removed)} temporary file(s) that an interrupted run left in {directory}")
        existing = list_checkpoints(directory)
        if existing:
            self.last_saved = existing[-1][2]

    def on_train_begin(self, logs=None):
        # A run resumed from an older checkpoint abandons the ones after it: move them aside
        # (nothing is deleted), so that pruning keeps the new ones and a later resume from
        # the run folder continues this run, not the abandoned one.
        step = global_step(self.model)
        later = [path for saved, _, path in list_checkpoints(self.directory) if saved > step]
        if later:
            aside = os.path.join(self.directory, f"abandoned-at-step{step:08d}")
            os.makedirs(aside, exist_ok=True)
            for path in later:
                os.replace(path, os.path.join(aside, os.path.basename(path)))
            print(f"Moved {len(later)} checkpoint(s) later than step {step} to {aside}")
        existing = list_checkpoints(self.directory)
        self.last_saved = existing[-1][2] if existing else None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch  # epochs finished so far

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self._stop_on_nan(f"the training loss became {loss}")
        elif self.save_every:
            step = global_step(self.model)
            if step % self.save_every == 0:
                self._save_step(step)
        if self.stopped_on_nan:
            # Leave fit between two batches, as StopAfterBatch does: the broken epoch gets
            # no validation, no log row and no epoch-end checkpoint.
            raise TrainingStopped

    def on_epoch_end(self, epoch, logs=None):
        if self.model.stop_training:
            return  # another callback ended the epoch early: it was not finished
        step = global_step(self.model)
        self.epoch = epoch + 1
        self._save_step(step)
        if self.stopped_on_nan:
            self.model.stop_training = True  # the epoch is over: fit ends after it
            return  # the weights are not finite: not a best model either
        value = (logs or {}).get(self.monitor)
        if value is None or not math.isfinite(float(value)):
            return
        best_path = os.path.join(self.directory, "best.json")
        best = read_best(self.directory).get(self.monitor)
        if best is None or float(value) < best:
            save_atomically(self.model, os.path.join(self.directory, "best.weights.h5"))
            write_json_atomically({self.monitor: float(value), "step": step, "epoch": epoch + 1},
                                  best_path)

    def _save_step(self, step):
        if not weights_are_finite(self.model):
            self._stop_on_nan("the weights are no longer finite")
            return
        path = os.path.join(self.directory, checkpoint_name(self.epoch, step))
        save_atomically(self.model, path)
        self.last_saved = path
        for _, _, old in list_checkpoints(self.directory)[:-self.keep]:
            os.remove(old)

    def _stop_on_nan(self, reason):
        self.stopped_on_nan = True
        last = self.last_saved or "none was written yet"
        print(f"\nStopping: {reason} at step {global_step(self.model)}; nothing was saved "
              f"after it. Last good checkpoint: {last}")
