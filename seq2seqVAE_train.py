"""Train Sketch-RNN from the terminal.

Usage:
    python seq2seqVAE_train.py --data_dir=datasets --data_set=aaron_sheep \\
        --experiment_dir=experiments/sheep [--hparams="batch_size=100,epochs=50"]

    # resume: the same command plus a checkpoint and the number of epochs it had finished
    python seq2seqVAE_train.py ... --initial_epoch=3 \\
        --checkpoint=experiments/sheep/checkpoints/ckpt-epoch0003-step00000222.weights.h5
    # or let it pick the newest complete checkpoint of the run folder and its epoch
    python seq2seqVAE_train.py ... --checkpoint=experiments/sheep

    # a new run that trains on from a run's weights alone (a shared or imported model, whose
    # optimizer state is gone): the shipped sheep, or on your own drawings
    python seq2seqVAE_train.py --warm_start=examples/sheep --experiment_dir=experiments/sheep_more

    # several GPUs of one machine, or several machines (TF_CONFIG on each; see README)
    python seq2seqVAE_train.py ... --distribute=mirrored
    TF_CONFIG='{"cluster": {"worker": ["host1:2222", "host2:2222"]},
                "task": {"type": "worker", "index": 0}}' python seq2seqVAE_train.py ...

A missing data set that is a QuickDraw category (cat, guitar, ...) or aaron_sheep, kanji or
omniglot is downloaded into --data_dir first. The run folder gets model_config.json,
checkpoints/ (weights + optimizer state, written atomically), logs/training_log.csv,
logs/tensorboard/ (losses, and pictures of samples and reconstructions each epoch) and, at the
end, test_losses.json: the test split's losses with the best weights (by validation loss).
"""

import contextlib
import dataclasses
import importlib.util
import math
import os
import shlex
import shutil
import signal
import sys
import tempfile

from sketch_rnn.cli import ArgumentParser, quiet_tensorflow
from sketch_rnn.hparams import HParams

BASE_OVERRIDABLE_ON_RESUME = ("epochs", "steps_per_epoch", "save_every")
# A resume may also set a new learning-rate schedule; model_config.json records the change.
SCHEDULE_HPARAMS = ("learning_rate", "min_learning_rate", "decay_rate")
WARM_START_STEPS = 150  # --warm_start_steps' default: tried on the shipped sheep


def parse_args(argv=None):
    # Hyperparameters are not flags; someone typing --epochs=3 is told how to set it.
    hints = {f.name: f"{f.name} is a hyperparameter: --hparams={f.name}=..."
             for f in dataclasses.fields(HParams)}
    parser = ArgumentParser(
        description="Train Sketch-RNN (a seq2seq VAE for stroke sketches) on .npz stroke-3 data.",
        hints=hints)
    parser.add_argument("--data_dir", default="datasets",
                        help="folder of <name>.npz data sets (default: datasets); missing known sets are "
                             "downloaded here")
    parser.add_argument("--data_set", default=None,
                        help="data set name or comma list (cat,guitar), merged as in the official "
                             "code (default: aaron_sheep; when resuming, the run's own)")
    parser.add_argument("--experiment_dir", default=None,
                        help="run folder for config, checkpoints and logs "
                             "(default: experiments/<data_set>)")
    parser.add_argument("--hparams", default="",
                        help='comma-separated overrides, e.g. "batch_size=50,enc_rnn_size=128"')
    parser.add_argument("--checkpoint", default=None,
                        help="resume from this checkpoint file, or from the newest complete "
                             "one in this run folder")
    parser.add_argument("--initial_epoch", type=int, default=None,
                        help="number of epochs the checkpoint had finished "
                             "(read from its name if omitted)")
    parser.add_argument("--warm_start", default=None, metavar="RUN_DIR",
                        help="start a new run from the weights of this run folder (best, else "
                             "newest), without its optimizer state: a shared or imported model. "
                             "Its hparams, scale factor and data set are the new run's (--hparams "
                             "and --data_set may change them); training goes on from its epoch "
                             "and step, after Adam's moments are rebuilt at learning rate 0")
    parser.add_argument("--warm_start_steps", type=int, default=None, metavar="N",
                        help="--warm_start: steps that rebuild Adam's moments before training; "
                             f"the learning rate then ramps up over 2N steps (default: "
                             f"{WARM_START_STEPS})")
    parser.add_argument("--base_url", default=None,
                        help="download data sets from this base URL instead of the public ones")
    parser.add_argument("--verbose", type=int, default=None, choices=[0, 1, 2],
                        help="Keras verbosity: 1 progress bar, 2 one line per epoch "
                             "(default: a bar on a terminal, lines otherwise)")
    parser.add_argument("--no_tensorboard_images", dest="tensorboard_images", action="store_false",
                        help="do not draw samples and reconstructions into TensorBoard each epoch")
    parser.add_argument("--distribute", default="auto",
                        choices=["auto", "none", "mirrored", "multi_worker"],
                        help="data-parallel training with tf.distribute: mirrored (this "
                             "machine's GPUs), multi_worker (the cluster TF_CONFIG names); "
                             "auto: multi_worker with TF_CONFIG, mirrored with several GPUs, "
                             "else none. batch_size stays the global batch")
    parser.add_argument("--worker_scratch_dir", default=None,
                        help="multi-worker runs: where workers other than the chief write "
                             "their checkpoints (default: a temporary folder, removed at the end)")
    args = parser.parse_args(argv)
    args.command_line = sys.argv[1:] if argv is None else list(argv)  # for the resume hint
    return args


def main(argv=None):
    args = parse_args(argv)
    # TensorFlow's C++ start-up lines (oneDNN, no CUDA driver) would hide the progress bar;
    # TF_CPP_MIN_LOG_LEVEL=0 shows them.
    quiet_tensorflow()
    try:
        strategy = make_strategy(args.distribute)  # before TensorFlow runs anything
        run = prepare(args, strategy)
    except (ValueError, OSError, RuntimeError) as err:
        # Everything here is about the user's files, flags and hparams: one line, no traceback.
        print(f"error: {err}", file=sys.stderr)
        return 2
    except MemoryError:
        print("error: out of memory while loading the data; use smaller data sets or hparams",
              file=sys.stderr)
        return 2
    import utils

    try:
        return train(args, strategy, **run)
    except utils.UnsafePathError as err:  # a link made in the run folder while it trained
        print(f"error: {err}", file=sys.stderr)
        return 2
    except MemoryError:
        print("error: out of memory while training; try a smaller batch_size, max_seq_len or "
              "model (--hparams)", file=sys.stderr)
        return 2


def make_strategy(mode):
    """The tf.distribute strategy of --distribute (None: train as usual)."""
    import keras

    if keras.backend.backend() != "tensorflow":
        if mode in ("mirrored", "multi_worker"):
            raise ValueError(f"--distribute={mode} needs the TensorFlow backend "
                             f"(KERAS_BACKEND=tensorflow), not {keras.backend.backend()}")
        return None
    from sketch_rnn.tf_backend import distribute

    strategy = distribute.make_strategy(mode)
    if strategy is not None:
        print(distribute.describe(strategy))
    return strategy


def is_chief(strategy):
    """True on the process that writes the run folder: the chief of a multi-worker run."""
    if strategy is None:
        return True
    from sketch_rnn.tf_backend import distribute

    return distribute.is_chief(strategy)


def prepare(args, strategy=None):
    """Checks flags, hparams, run folder and data; returns what `train` needs.

    In a multi-worker run only the chief checks and writes the run folder; the other
    workers read it (the config and checkpoint of a resumed run) and load the same data.
    """
    import utils  # imported here so that --help is instant
    from callbacks import check_run_folder

    chief = is_chief(strategy)

    requested = None
    if args.data_set is not None:
        requested = [name.strip() for name in args.data_set.split(",")]
        for name in requested:
            utils.check_data_set_name(name, "--data_set")
    check_warm_start_flags(args, strategy)
    default_name = "_".join(requested or ["aaron_sheep"])
    experiment_dir = args.experiment_dir or os.path.join("experiments", default_name)
    if chief:
        check_experiment_dir(experiment_dir)
        check_run_folder(experiment_dir)
    config_path = os.path.join(experiment_dir, "model_config.json")

    from seq2seqVAE import HParams, load_config

    checkpoint, initial_epoch, warm_start, schedule_change = None, 0, None, None
    if args.checkpoint:
        if not os.path.lexists(config_path):
            raise ValueError(f"--checkpoint: {config_path} is missing, so there is no run to resume "
                             "in --experiment_dir")
        stored_hps, stored = load_config(experiment_dir)
        hps = HParams.parse(args.hparams, base=stored_hps)
        if hps.max_seq_len != stored_hps.max_seq_len and hps.max_seq_len == stored_cap(stored):
            # The command that started the run named its cap; the run keeps the length it found.
            hps = dataclasses.replace(hps, max_seq_len=stored_hps.max_seq_len)
        check_same_model(stored_hps, hps, config_path)
        checkpoint, initial_epoch = find_checkpoint(args.checkpoint, args.initial_epoch)
        schedule_change = changed_schedule(stored_hps, hps, initial_epoch)
        scale_factor, data_sets = stored_data_settings(stored, config_path)
        warm_start = stored.get("warm_start")  # a warm-started run's learning-rate ramp
        if requested is not None and sorted(requested) != sorted(data_sets):
            raise ValueError(f"--data_set: the run in {experiment_dir} was trained on "
                             f"{','.join(data_sets)}, not {args.data_set}")
    else:
        if chief and os.path.lexists(config_path):
            if has_checkpoints(experiment_dir):
                raise ValueError(f"--experiment_dir: {experiment_dir} already holds a run; resume it "
                                 f"with --checkpoint={experiment_dir} or choose a new folder")
            # A run that stopped before its first checkpoint left only its config and logs:
            # there is nothing to resume, so the same command starts it again.
            print(f"{experiment_dir} holds a run that stopped before its first checkpoint; "
                  "starting it over", file=sys.stderr)
        if args.warm_start is not None:
            warm_start, hps, scale_factor, stored_sets = warm_start_settings(args)
            data_sets = requested or stored_sets
            initial_epoch = warm_start["epoch"]
        else:
            hps = HParams.parse(args.hparams)
            scale_factor = None
            data_sets = requested or ["aaron_sheep"]

    # Each sketch keeps its class (a file's labels, else its data set), for the per-class test.
    strokes, labels, classes = utils.load_labelled_strokes(
        args.data_dir, ",".join(data_sets), base_url=args.base_url)
    train_strokes, valid_strokes, test_strokes = (strokes[split] for split in utils.SPLITS)
    cap = hps.max_seq_len
    if checkpoint is None:
        # Pad to the longest sketch kept, as the official code pads to the data's longest
        # (stored in model_config.json; a resumed run keeps its stored length).
        hps = dataclasses.replace(hps, max_seq_len=utils.longest_sketch(
            (train_strokes, valid_strokes, test_strokes), cap) or cap)
    loaders = {}
    for name, strokes in (("train", train_strokes), ("valid", valid_strokes), ("test", test_strokes)):
        loaders[name] = utils.DataLoader(
            strokes, batch_size=hps.batch_size, max_seq_len=hps.max_seq_len,
            random_scale_factor=hps.random_scale_factor if name == "train" else 0.0,
            augment_stroke_prob=hps.augment_stroke_prob if name == "train" else 0.0, name=name,
            labels=labels[name])
        if len(loaders[name]) == 0:
            limit = (f"max_seq_len={cap}; raise it with --hparams=max_seq_len=N" if checkpoint is None
                     else f"max_seq_len={hps.max_seq_len}, the length of the run in {config_path}")
            raise ValueError(f"--data_set: every {name} sketch of {','.join(data_sets)} is longer "
                             f"than {limit}")
    if checkpoint is None:
        print(f"max_seq_len={hps.max_seq_len}: the longest sketch of {','.join(data_sets)} "
              f"(train, valid and test) of at most {cap} points; batches are padded to it")
    else:
        print(f"max_seq_len={hps.max_seq_len}: the run's, from {config_path}")
    if scale_factor is None:
        scale_factor = float(loaders["train"].calculate_normalizing_scale_factor())
    for loader in loaders.values():
        loader.normalize(scale_factor)
    if len(loaders["train"]) < hps.batch_size:
        raise ValueError(f"--hparams: batch_size={hps.batch_size} is larger than the "
                         f"{len(loaders['train'])} training sketches")
    replicas = 1 if strategy is None else strategy.num_replicas_in_sync
    if hps.batch_size % replicas:
        raise ValueError(f"--hparams: batch_size={hps.batch_size} is the global batch and must "
                         f"split evenly over the {replicas} replicas of --distribute; use a "
                         f"multiple of {replicas}")
    return dict(hps=hps, loaders=loaders, scale_factor=scale_factor, data_sets=data_sets,
                experiment_dir=experiment_dir, checkpoint=checkpoint, initial_epoch=initial_epoch,
                max_seq_len_cap=cap, classes=classes, warm_start=warm_start,
                schedule_change=schedule_change)


def check_warm_start_flags(args, strategy):
    """One-line errors for --warm_start and --warm_start_steps given with flags they exclude
    or without what they need; sets the default --warm_start_steps."""
    if args.warm_start is None:
        if args.warm_start_steps is not None:
            raise ValueError("--warm_start_steps is a flag of --warm_start")
        return
    if args.checkpoint or args.initial_epoch is not None:
        raise ValueError("--warm_start starts a new run and --checkpoint/--initial_epoch resume "
                         "one: give one")
    if args.experiment_dir is None:
        raise ValueError("--warm_start: give the new run's folder with --experiment_dir")
    if strategy is not None:
        raise ValueError("--warm_start trains on one device; use --distribute=none")
    if args.warm_start_steps is None:
        args.warm_start_steps = WARM_START_STEPS
    if args.warm_start_steps <= 0:
        raise ValueError(f"--warm_start_steps must be > 0, got {args.warm_start_steps}")


def warm_start_settings(args):
    """--warm_start: the new run's `warm_start` record (what it starts from and its ramp),
    hparams (the run's, with --hparams applied), scale factor and data set names."""
    from sketch_rnn.warm_start import warm_start_source

    source = warm_start_source(args.warm_start)
    stored_hps, stored = source["hparams"], source["config"]
    hps = HParams.parse(args.hparams, base=stored_hps)
    if hps.max_seq_len == stored_hps.max_seq_len and stored_cap(stored) is not None:
        # The run's cap, not the length its data had: other data may hold longer sketches.
        hps = dataclasses.replace(hps, max_seq_len=stored_cap(stored))
    if source["epoch"] >= hps.epochs:
        raise ValueError(f"--warm_start: {args.warm_start} is at epoch {source['epoch']} of "
                         f"epochs={hps.epochs}; train on with --hparams=epochs=N, N > "
                         f"{source['epoch']}")
    if source["step"] is None:
        print(f"{source['weights']}: its global step is unknown; the learning-rate and KL "
              "schedules start from step 0", file=sys.stderr)
        source["step"] = 0
    scale_factor, data_sets = stored_data_settings(
        stored, os.path.join(args.warm_start, "model_config.json"))
    record = {"from": os.path.basename(os.path.normpath(args.warm_start)),
              "weights": os.path.basename(source["weights"]),
              "epoch": source["epoch"], "step": source["step"],
              "moment_steps": args.warm_start_steps, "ramp_steps": 2 * args.warm_start_steps,
              "path": source["weights"]}
    if stored.get("warm_start"):  # the source's own start, and so on back: the weights' path
        record["previous"] = stored["warm_start"]
    return record, hps, scale_factor, data_sets


def train(args, strategy, hps, loaders, scale_factor, data_sets, experiment_dir, checkpoint,
          initial_epoch, max_seq_len_cap, classes, warm_start, schedule_change=None):
    """Builds the model, trains with checkpoints, then evaluates on the test split.

    With a strategy, the model is built in its scope and every worker runs this; the chief
    writes the run folder, the other workers their checkpoints to a scratch folder (they
    take the same steps, so that the collective operations of saving and evaluating, if
    any, match), and nothing else.
    """
    chief = is_chief(strategy)
    if chief:
        return _train(args, strategy, hps, loaders, scale_factor, data_sets, experiment_dir,
                      experiment_dir, checkpoint, initial_epoch, max_seq_len_cap, classes,
                      warm_start, schedule_change, chief=True)
    scratch = args.worker_scratch_dir or tempfile.mkdtemp(prefix="sketch-rnn-worker-")
    print(f"Not the chief: checkpoints go to {scratch}; the chief writes {experiment_dir}")
    try:
        os.makedirs(os.path.join(scratch, "checkpoints"), exist_ok=True)
        # The chief's best model so far (a resumed run), so that this worker picks the
        # same best weights as the chief and evaluates them at the end.
        for name in ("best.json", "best.weights.h5"):
            source = os.path.join(experiment_dir, "checkpoints", name)
            if os.path.isfile(source):
                shutil.copyfile(source, os.path.join(scratch, "checkpoints", name))
        return _train(args, strategy, hps, loaders, scale_factor, data_sets, experiment_dir,
                      scratch, checkpoint, initial_epoch, max_seq_len_cap, classes,
                      warm_start, None, chief=False)
    finally:
        if args.worker_scratch_dir is None:
            shutil.rmtree(scratch, ignore_errors=True)


def _train(args, strategy, hps, loaders, scale_factor, data_sets, experiment_dir, write_dir,
           checkpoint, initial_epoch, max_seq_len_cap, classes, warm_start, schedule_change, chief):
    import keras

    from batch_generator import evaluation_batches
    from callbacks import (
        Checkpoint,
        FixedEvaluationNoise,
        KLWeightAnnealing,
        LearningRateDecay,
        StopAfterBatch,
        TensorBoardDrawings,
        TrainingStopped,
        end_callbacks,
        evaluation_data,
        write_json_atomically,
    )
    from seq2seqVAE import build_model, compile_model, describe_engines, resolved_matmul_dtype
    from sketch_rnn.raster import batch_renderer

    config_path = os.path.join(experiment_dir, "model_config.json")
    checkpoint_dir = os.path.join(write_dir, "checkpoints")
    os.makedirs(checkpoint_dir, exist_ok=True)
    if chief:
        os.makedirs(os.path.join(experiment_dir, "logs"), exist_ok=True)
    if chief and checkpoint is None:
        config = {
            "hparams": hps.to_dict(),
            "scale_factor": scale_factor,
            "max_seq_len": hps.max_seq_len,  # the length found in the data, as hparams holds it
            "max_seq_len_cap": max_seq_len_cap,  # the hparam as given: the most it could be
            "data_set": data_sets,
            "classes": classes,  # the sketches' classes: a file's labels, else its data set
            "num_sketches": {name: len(loader) for name, loader in loaders.items()},
            "keras_version": keras.__version__,
            "backend": keras.backend.backend(),
        }
        if warm_start is not None:  # where the weights came from, without this machine's path
            config["warm_start"] = {k: v for k, v in warm_start.items() if k != "path"}
        write_json_atomically(config, config_path)

    keras.utils.set_random_seed(hps.seed)
    model_hps = hps
    if strategy is not None and hps.jit_compile:
        # Keras compiles the whole distributed step, every replica's part of it, as one XLA
        # program, which cannot reach the variables of the other devices.
        print("jit_compile=True is ignored under --distribute (XLA cannot compile a step whose "
              "replicas hold variables on several devices); training without XLA")
        model_hps = dataclasses.replace(hps, jit_compile=False)
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        model = build_model(model_hps)
        try:  # a damaged or foreign file: one line, as in main()
            if checkpoint is None and warm_start is not None:
                # before compiling: the file has no optimizer state for Keras to look for
                load_warm_start_weights(model, warm_start["path"])
            model = compile_model(model, model_hps)
            if checkpoint is not None:
                load_checkpoint(model, checkpoint)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    if schedule_change is not None:  # only once the checkpoint has loaded
        record_schedule_change(config_path, schedule_change)

    train_batches = training_batches(hps, loaders["train"])
    if checkpoint is None and warm_start is not None:
        bar = args.verbose == 1 or (args.verbose is None and sys.stdout.isatty())
        try:
            rebuild_optimizer_state(model, hps, warm_start, train_batches, initial_epoch, bar)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    # A cnn model's batches carry pictures of their (augmented) sketches, rendered per batch.
    valid_batches = evaluation_batches(loaders["valid"], hps.batch_size, batch_renderer(hps))

    checkpointer = Checkpoint(checkpoint_dir, save_every=hps.save_every)
    callbacks = [
        LearningRateDecay(hps, warm_start),
        KLWeightAnnealing(hps),
        FixedEvaluationNoise(),  # validation's z noise, the same every epoch
        checkpointer,  # every worker: it also stops training on NaN
    ]
    if chief:
        # A new run (or one started over) begins a new log; a resumed run continues it.
        callbacks.append(keras.callbacks.CSVLogger(
            os.path.join(experiment_dir, "logs", "training_log.csv"), append=checkpoint is not None))
        # Keras writes TensorBoard events with TensorFlow, which a JAX user may not have.
        tensorboard_dir = os.path.join(experiment_dir, "logs", "tensorboard")
        if importlib.util.find_spec("tensorflow") is not None:
            callbacks.append(keras.callbacks.TensorBoard(tensorboard_dir))
            if args.tensorboard_images:
                callbacks.append(TensorBoardDrawings(os.path.join(tensorboard_dir, "drawings"),
                                                     sketches=loaders["valid"].strokes[:6]))
        else:
            print("TensorFlow is not installed: no TensorBoard log (logs/training_log.csv has "
                  "the losses)")
    if strategy is None:
        fit_data, feed_callbacks = one_device_input(train_batches, initial_epoch, hps.epochs)
        fit_data["validation_data"] = evaluation_data(valid_batches)
        callbacks[:0] = feed_callbacks
        replicas = ""
    else:
        from sketch_rnn.tf_backend.distribute import distributed_batches

        # Each step every replica gets its rows of the global batch; the epoch is part of
        # the data (each epoch's shuffle is drawn from (seed, epoch) as without a strategy).
        fit_data = dict(
            x=distributed_batches(strategy, train_batches, initial_epoch, hps.epochs),
            steps_per_epoch=len(train_batches),
            validation_data=distributed_batches(strategy, valid_batches),
            validation_steps=len(valid_batches))
        replicas = (f", {hps.batch_size // strategy.num_replicas_in_sync} sketches on each of "
                    f"{strategy.num_replicas_in_sync} replicas")
    print(f"Training on {len(loaders['train'])} sketches of {','.join(data_sets)} "
          f"({len(train_batches)} steps per epoch{replicas}, scale factor {scale_factor:.4f}, "
          f"recurrent matmuls in {resolved_matmul_dtype(hps)}); "
          f"run folder {experiment_dir}" + (f"; resuming from {checkpoint}" if checkpoint else ""))
    for line in describe_engines(model):  # which engine runs each RNN, and why
        print(f"  {line}")
    # Ctrl-C, or SIGTERM (what `kill` and job schedulers send to a background run), asks the
    # run to stop after the current batch (`StopAfterBatch`; the interrupted epoch is
    # neither validated nor logged, and the run resumes at its start): a KeyboardInterrupt
    # raised inside TensorFlow's C++ can surface as a SystemError instead (seen in CI). A
    # second signal stops at once; checkpoints are atomic either way. A worker of a
    # multi-worker run stops at once: stopping one worker after its batch would leave the
    # others waiting for it in the next one, and them it in the end of its epoch.
    interrupted = []
    stopper = StopAfterBatch()
    callbacks.append(stopper)

    def stop_after_this_batch(signum, frame):
        if interrupted:
            raise KeyboardInterrupt
        interrupted.append(signum)
        stopper.request()
        again = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
        print(f"\nStopping after this batch ({again} again to stop at once)...", file=sys.stderr)

    handler = signal.SIG_DFL if is_multi_worker(strategy) else stop_after_this_batch
    previous_handlers = {signum: signal.signal(signum, handler)
                         for signum in (signal.SIGINT, signal.SIGTERM)}
    verbose = "auto" if args.verbose is None else args.verbose
    if not chief and args.verbose is None:
        verbose = 0  # the chief shows the progress
    try:
        # shuffle=False: SketchBatches shuffles itself, from (seed, epoch), so that a resumed
        # run sees the same batches in the same order; Keras's own shuffle would not.
        model.fit(**fit_data, epochs=hps.epochs, initial_epoch=initial_epoch, callbacks=callbacks,
                  shuffle=False, verbose=verbose)
    except TrainingStopped:
        end_callbacks(callbacks)
    except KeyboardInterrupt:
        interrupted.append(signal.SIGINT)
    except Exception as err:
        return stop_for_lost_worker(strategy, err, experiment_dir, checkpointer.last_saved, chief)
    finally:
        for signum, previous in previous_handlers.items():
            signal.signal(signum, previous)
    if interrupted:
        print_resume_hint(args.command_line, experiment_dir, checkpointer.last_saved)
        return 128 + interrupted[0]  # 130 after Ctrl-C, 143 after SIGTERM
    if checkpointer.stopped_on_nan:
        return 1
    try:
        return evaluate_test_split(model, hps, loaders["test"], checkpoint_dir, write_dir,
                                   classes, strategy=strategy, write=chief)
    except Exception as err:
        return stop_for_lost_worker(strategy, err, experiment_dir, checkpointer.last_saved, chief)


def load_warm_start_weights(model, path):
    """--warm_start: loads a weights file without optimizer state into a built model."""
    load_weights_file(model, path, "--warm_start",
                      "; --hparams may change training, not the model")


def rebuild_optimizer_state(model, hps, warm_start, train_batches, epoch, verbose):
    """--warm_start: rebuilds Adam's moments on the first batches of `epoch` and sets the
    global step to the weights' (`sketch_rnn.warm_start`)."""
    from callbacks import kl_weight_at
    from sketch_rnn.warm_start import rebuild_adam_moments

    steps = warm_start["moment_steps"]
    print(f"Warm start from {warm_start['path']} (epoch {warm_start['epoch']}, step "
          f"{warm_start['step']}): rebuilding Adam's moments over {steps} steps at learning rate "
          f"0; the learning rate then ramps up over {warm_start['ramp_steps']} steps")
    train_batches.epoch = epoch
    kl_weight = kl_weight_at(warm_start["step"], hps) if hps.has_kl_term else None
    loss = rebuild_adam_moments(model, train_batches, steps, warm_start["step"], kl_weight, verbose)
    if not math.isfinite(loss):
        raise ValueError(f"--warm_start: the training loss of {warm_start['path']} is {loss} on "
                         "this data; the weights cannot be trained on")
    print(f"Adam's moments rebuilt (training loss of the weights over those steps: {loss:.4f})")


def training_batches(hps, loader):
    """The training command's batches of `loader`: shuffled and augmented from hps.seed and the
    epoch, bucketed and trimmed (hps.bucket_tail steps after each batch's longest sketch) when
    hps.bucket_batches asks (benchmarks train on these too)."""
    from batch_generator import SketchBatches
    from sketch_rnn.raster import batch_renderer

    return SketchBatches(loader, hps.batch_size, augment=True, shuffle=True, seed=hps.seed,
                         steps_per_epoch=hps.steps_per_epoch or None,
                         bucket_batches=hps.bucket_batches, trim=hps.bucket_batches > 0,
                         tail=hps.bucket_tail, render=batch_renderer(hps))


def one_device_input(batches, initial_epoch, epochs):
    """Training's `SketchBatches` as `fit` takes them on one device: the keyword arguments
    of `fit` ({"x"} or {"x", "steps_per_epoch"}) and the callbacks they need.

    With TensorFlow, one tf.data pipeline over all the epochs (`one_device_pipeline`: made
    once, not once per epoch, and open to any batch length); with other backends, the
    `SketchBatches` itself, told each epoch's index by `BatchEpoch`. Either way epoch e's
    batches are `batches.piece(e, i)`.
    """
    from callbacks import BatchEpoch, one_device_pipeline

    pipeline = one_device_pipeline(batches, initial_epoch, epochs)
    if pipeline is None:
        return dict(x=batches), [BatchEpoch(batches)]
    return dict(x=pipeline, steps_per_epoch=len(batches)), []


def stop_for_lost_worker(strategy, error, experiment_dir, last_saved, chief):
    """Exit code 3 and a message if a worker of a multi-worker run is gone; else raises."""
    lost = lost_worker(strategy, error)
    if lost is None:
        raise error
    if not chief:
        last_saved = f"the chief's, in {os.path.join(experiment_dir, 'checkpoints')}"
    print(f"\nerror: the multi-worker run stopped: a worker is gone ({lost}).\n"
          f"The last checkpoint is intact: {last_saved or 'none was written yet'}\n"
          f"Restart every worker with --checkpoint={experiment_dir} to resume.", file=sys.stderr)
    return 3


def is_multi_worker(strategy):
    if strategy is None:
        return False
    from sketch_rnn.tf_backend import distribute

    return distribute.is_multi_worker(strategy)


def lost_worker(strategy, error):
    """Why a multi-worker step failed, if it failed because a worker is gone; else None."""
    if not is_multi_worker(strategy):
        return None
    from sketch_rnn.tf_backend import distribute

    return distribute.lost_peer(error)


def evaluate_test_split(model, hps, loader, checkpoint_dir, experiment_dir, classes=None,
                        strategy=None, write=True):
    """Evaluates the best weights (by validation loss) on the test split; writes test_losses.json.

    The loss uses the final KL weight, hps.kl_weight, so that runs compare whatever step
    their best model came from. Without a best model (no finite validation loss), the last
    weights are evaluated, and the output says so. With a strategy every worker evaluates
    (on its replicas' rows), and only the one with `write` writes the file. With sketches of
    several classes, each class's figures too (`callbacks.evaluate`), one line each.
    """
    from callbacks import EVALUATION_SEED, evaluate, read_best, write_json_atomically

    best = os.path.join(checkpoint_dir, "best.weights.h5")
    which = {"weights": "last (no best.weights.h5)"}
    if os.path.isfile(best):
        load_checkpoint(model, best)
        which = {"weights": os.path.relpath(best, experiment_dir)}
        which.update({k: v for k, v in read_best(checkpoint_dir).items() if k in ("epoch", "step")})
    distribute = None
    if strategy is not None:
        from sketch_rnn.tf_backend.distribute import distributed_batches

        def distribute(batches):
            return distributed_batches(strategy, batches)

    losses = evaluate(model, loader, kl_weight=hps.kl_weight, classes=classes,
                      distribute=distribute)
    if write:
        write_json_atomically({**losses, **which, "z_seed": EVALUATION_SEED},
                              os.path.join(experiment_dir, "test_losses.json"))

    def figures(values):
        return ", ".join(f"{k} {values[k]:.4f}" for k in (
            "loss", "reconstruction_loss", "kl_loss", "nats_per_point") if k in values)

    where = "".join(f", {k} {which[k]}" for k in ("epoch", "step") if k in which)
    print(f"Test: {figures(losses)} (kl_weight {losses['kl_weight']:g}; "
          f"weights: {which['weights']}{where})")
    for name, values in losses.get("classes", {}).items():
        print(f"  {name} ({values['sketches']} sketches): {figures(values)}")
    return 0


def check_experiment_dir(path):
    """One-line errors for a run folder that is a file or cannot be written.

    Folders made to find out are removed again, so that a run stopped by a later error (a
    bad hparam, a missing data set) leaves no empty run folder behind; training makes them.
    """
    import utils

    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"--experiment_dir: {path} is a file, expected a folder")
    made = utils.missing_folders(path)
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".write-test-{os.getpid()}")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as err:
        raise ValueError(f"--experiment_dir: cannot write to {path} ({err.strerror})") from None
    finally:
        utils.remove_empty_folders(made)


def check_same_model(stored, requested, config_path):
    """Resuming may change only the run length, checkpoint interval and learning-rate
    schedule, not the model."""
    for key, value in requested.to_dict().items():
        if key not in BASE_OVERRIDABLE_ON_RESUME + SCHEDULE_HPARAMS and getattr(stored, key) != value:
            raise ValueError(f"--hparams: {key}={value} does not match the run being resumed "
                             f"({key}={getattr(stored, key)} in {config_path})")


def changed_schedule(stored, requested, initial_epoch):
    """The learning-rate hparams a resume changes, before and after, or None."""
    before = {key: getattr(stored, key) for key in SCHEDULE_HPARAMS
              if getattr(stored, key) != getattr(requested, key)}
    if not before:
        return None
    return {"after_epoch": initial_epoch, "before": before,
            "hparams": {key: getattr(requested, key) for key in before}}


def record_schedule_change(config_path, change):
    """Stores a resume's new learning-rate schedule in the run's config, so that the next
    resume goes on with it, and appends the change to the config's `schedule_changes`."""
    from callbacks import write_json_atomically
    from seq2seqVAE import load_config

    _, config = load_config(os.path.dirname(config_path))
    config["hparams"].update(change["hparams"])
    config.setdefault("schedule_changes", []).append(change)
    write_json_atomically(config, config_path)
    changes = ", ".join(f"{key}={value} (was {change['before'][key]})"
                        for key, value in change["hparams"].items())
    print(f"Learning-rate schedule from epoch {change['after_epoch'] + 1}: {changes}; "
          f"recorded in {config_path}")


def stored_data_settings(stored, config_path):
    """The scale factor and data set names of a stored config, checked before use."""
    import utils

    scale_factor = utils.check_scale_factor(stored.get("scale_factor"), config_path)
    return scale_factor, utils.check_data_set_names(stored.get("data_set"), None, config_path)


def stored_cap(stored):
    """The max_seq_len a stored run was started with (its cap), or None in older configs."""
    cap = stored.get("max_seq_len_cap")
    return cap if type(cap) is int else None


def has_checkpoints(experiment_dir):
    """True if the run folder holds a checkpoint to resume from or a best model."""
    from callbacks import list_checkpoints

    folder = os.path.join(experiment_dir, "checkpoints")
    return bool(list_checkpoints(folder)) or os.path.lexists(os.path.join(folder, "best.weights.h5"))


def find_checkpoint(path, initial_epoch):
    """Resolves --checkpoint to a loadable file and the epoch to resume at.

    A run folder (or its checkpoints/ folder) means its newest checkpoint that loads; a file
    must load. Without --initial_epoch the epoch is read from the file name, which counts the
    epochs finished when it was saved: a checkpoint taken mid-epoch resumes at the start of
    that epoch, with the global step (and so the schedules) where the checkpoint left them.
    """
    from callbacks import CHECKPOINT_PATTERN, list_checkpoints
    from utils import check_regular_file

    if os.path.isdir(path):
        folder = path if not os.path.isdir(os.path.join(path, "checkpoints")) else os.path.join(
            path, "checkpoints")
        candidates = [p for _, _, p in reversed(list_checkpoints(folder))]
        for candidate in candidates:
            if checkpoint_is_complete(candidate):
                path = candidate
                break
            print(f"warning: skipping incomplete checkpoint {candidate}", file=sys.stderr)
        else:
            raise ValueError(f"--checkpoint: no complete checkpoint in {folder}")
    elif not os.path.lexists(path):
        raise ValueError(f"--checkpoint: {path} does not exist")
    else:
        check_regular_file(path, "--checkpoint")  # a FIFO would hang h5py
        if not checkpoint_is_complete(path):
            raise ValueError(f"--checkpoint: {path} is truncated or not a checkpoint of this project")
    if initial_epoch is None:
        match = CHECKPOINT_PATTERN.search(os.path.basename(path))
        if not match:
            raise ValueError(f"--initial_epoch is needed: {path} has no epoch in its name")
        initial_epoch = int(match.group(1))
    if initial_epoch < 0:
        raise ValueError(f"--initial_epoch must be >= 0, got {initial_epoch}")
    return path, initial_epoch


def checkpoint_is_complete(path):
    """True if `path` is a readable HDF5 weights file with model and optimizer state."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return "layers" in f and "optimizer" in f
    except OSError:
        return False


def load_checkpoint(model, path):
    """Loads weights and optimizer state (including the global step) into a compiled model.

    Raises:
        ValueError: in one line, if the file does not fit the model or holds NaN or inf.
    """
    import keras
    import numpy as np

    model.optimizer.build(model.trainable_variables)
    load_weights_file(model, path, "--checkpoint")
    for variable in [*model.weights, *model.optimizer.variables]:
        if not np.all(np.isfinite(keras.ops.convert_to_numpy(variable))):
            raise ValueError(f"--checkpoint: {path} holds NaN or infinite values in "
                             f"{variable.path}; resume from an earlier checkpoint")


def load_weights_file(model, path, flag, advice=""):
    """Loads a weights file into the model (a file of the former layout is converted), or
    raises one line naming `flag`, the file and why it does not fit, then `advice`."""
    from sketch_rnn import legacy
    from utils import first_line

    try:
        legacy.load_weights(model, path)
    except (ValueError, TypeError, KeyError, OSError) as err:
        # Keras says "N objects could not be loaded. Example error message for <layer>:",
        # the reason on the next line, then the whole variable's values: cut it short.
        raise ValueError(f"{flag}: {path} does not fit this model ({first_line(err)}){advice}") from None


def print_resume_hint(command_line, experiment_dir, last_saved):
    if not last_saved:
        print("\nInterrupted before the first checkpoint; nothing to resume: the same command "
              "starts the run over.", file=sys.stderr)
        return
    print(f"\nInterrupted. The last checkpoint is intact: {last_saved}\n"
          f"Resume with: {resume_command(command_line, experiment_dir)}", file=sys.stderr)


def resume_command(command_line, experiment_dir):
    """The shell command that resumes a run started with `command_line` (the flags, as typed).

    It keeps every flag but --checkpoint, --initial_epoch and --warm_start* (with their values,
    written with "=" or as the next word; argparse's abbreviations such as --check too) and asks for the
    newest checkpoint of the run folder, whose name gives the epoch.
    """
    dropped = ("--checkpoint", "--initial_epoch", "--warm_start", "--warm_start_steps")
    kept, skip_value = [], False
    for word in command_line:
        if skip_value:
            skip_value = False
            continue
        name = word.split("=", 1)[0]
        if len(name) > 2 and any(flag.startswith(name) for flag in dropped):
            skip_value = "=" not in word
            continue
        kept.append(word)
    return shlex.join(["python", "seq2seqVAE_train.py", *kept, f"--checkpoint={experiment_dir}"])


if __name__ == "__main__":
    sys.exit(main())
