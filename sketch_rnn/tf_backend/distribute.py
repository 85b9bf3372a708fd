"""Data-parallel training with tf.distribute: the strategy, the input, and Keras 3.15's gaps.

`seq2seqVAE_train.py --distribute=...` makes one strategy here (`make_strategy`); the model
is built and compiled inside its scope and trained by Keras's own `model.fit`, which runs
each step with `strategy.run` and all-reduces the gradients. What this module adds:

- `replica_context` / `cross_replica_sum`: what the model needs to compute the global
  batch's loss and z noise on each replica (`sketch_rnn.backend` is the neutral facade);
- `AdamClippingSummedGradients`: Keras 3 clips each replica's share of the gradient before
  the all-reduce; `grad_clip` is meant for the whole batch's gradient;
- `distributed_batches`: each replica gets its own rows of every global batch, made by the
  worker it runs on (`SketchBatches.piece`), so no worker builds another's sketches;
- `patch_keras`: two fixes without which Keras 3.15's `fit` fails on these inputs and
  under `MultiWorkerMirroredStrategy` (keras-team/keras#20585).
"""

import json
import os
import socket

import keras
import tensorflow as tf

MODES = ("auto", "none", "mirrored", "multi_worker")


# ---------------------------------------------------------------------------------------
# The strategy
# ---------------------------------------------------------------------------------------


def cluster_from_tf_config():
    """The `cluster` of the TF_CONFIG environment variable ({} when it names none).

    Raises:
        ValueError: naming TF_CONFIG, when it is not a JSON object with a cluster and a task.
    """
    text = os.environ.get("TF_CONFIG", "").strip()
    if not text:
        return {}
    try:
        config = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"TF_CONFIG is not JSON ({err.msg} at character {err.pos})") from None
    if not isinstance(config, dict):
        raise ValueError("TF_CONFIG must be a JSON object with 'cluster' and 'task'")
    cluster = config.get("cluster") or {}
    if not isinstance(cluster, dict) or not all(
            isinstance(tasks, list) and tasks for tasks in cluster.values()):
        raise ValueError('TF_CONFIG: "cluster" must map job names to lists of "host:port"')
    if cluster:
        task = config.get("task")
        if (not isinstance(task, dict) or task.get("type") not in cluster
                or not isinstance(task.get("index"), int)
                or not 0 <= task["index"] < len(cluster[task["type"]])):
            raise ValueError('TF_CONFIG: "task" must name this process\'s job and index in '
                             f'"cluster", e.g. {{"type": "worker", "index": 0}}; got '
                             f"{config.get('task')!r}")
    return cluster


def local_cluster(workers):
    """A TF_CONFIG cluster of `workers` processes on this machine, on ports free right now:
    {"worker": ["127.0.0.1:port", ...]} (tests and benchmarks start such runs)."""
    sockets = [socket.socket() for _ in range(workers)]
    try:
        for s in sockets:  # all bound at once: no port is handed out twice
            s.bind(("127.0.0.1", 0))
        return {"worker": [f"127.0.0.1:{s.getsockname()[1]}" for s in sockets]}
    finally:
        for s in sockets:
            s.close()


def make_strategy(mode):
    """The tf.distribute strategy of `--distribute=mode`, or None to train as usual.

    auto: MultiWorkerMirroredStrategy when TF_CONFIG names a cluster, MirroredStrategy when
    more than one GPU is visible, none otherwise. Call it before TensorFlow runs any op: a
    multi-worker strategy configures the collective ops at start-up, and waits here until
    every worker of the cluster has started.

    Raises:
        ValueError: naming --distribute or TF_CONFIG, for a mode this machine cannot run.
    """
    if mode not in MODES:
        raise ValueError(f"--distribute must be one of {', '.join(MODES)}, got {mode!r}")
    cluster = cluster_from_tf_config()
    if mode == "auto":
        if cluster:
            mode = "multi_worker"
        elif len(tf.config.list_physical_devices("GPU")) > 1:
            mode = "mirrored"
        else:
            return None
    if mode == "none":
        return None
    if mode == "mirrored":
        if cluster:
            raise ValueError("--distribute=mirrored trains on this machine's devices, but "
                             "TF_CONFIG names a cluster: use --distribute=multi_worker (or "
                             "unset TF_CONFIG)")
        return tf.distribute.MirroredStrategy()
    if not cluster:
        raise ValueError('--distribute=multi_worker: TF_CONFIG names no cluster; set it to '
                         '{"cluster": {"worker": ["host1:port", "host2:port"]}, '
                         '"task": {"type": "worker", "index": 0}} on each worker')
    return tf.distribute.MultiWorkerMirroredStrategy()


def describe(strategy):
    """One line: how many workers and replicas, and this process's place among them."""
    replicas = strategy.num_replicas_in_sync
    if is_multi_worker(strategy):
        resolver = strategy.cluster_resolver
        workers = sum(len(tasks) for tasks in resolver.cluster_spec().as_dict().values())
        return (f"MultiWorkerMirroredStrategy: {workers} workers, {replicas} replicas; this is "
                f"{resolver.task_type} {resolver.task_id}"
                + (" (the chief)" if is_chief(strategy) else ""))
    devices = strategy.extended.worker_devices
    return f"MirroredStrategy: {replicas} replicas on {', '.join(devices)}"


def is_multi_worker(strategy):
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def is_chief(strategy):
    """True on the process that writes the run folder (the only one without multi-worker)."""
    return strategy is None or bool(strategy.extended.should_checkpoint)


def lost_peer(error):
    """A one-line reason if `error` is how a multi-worker step fails when a worker is gone.

    A worker that dies makes the collectives of the others fail: at once with
    UnavailableError when its connections close (the process was killed), or when the
    strategy's health check, every 30 s, cannot reach it (its machine is gone).
    """
    lost = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
            tf.errors.CancelledError, tf.errors.AbortedError)
    message = " ".join(str(getattr(error, "message", error)).split())
    aborted = isinstance(error, tf.errors.InternalError) and "ollective" in message
    if not (isinstance(error, lost) or aborted):
        return None
    return f"{type(error).__name__}: {message[:300]}"


# ---------------------------------------------------------------------------------------
# Inside a step: the replica, and sums over replicas
# ---------------------------------------------------------------------------------------


def replica_context():
    """(replica index, replicas in sync) of the step being run; (0, 1) outside one.

    The index is a tensor inside `strategy.run` (the global index across workers), a
    Python 0 elsewhere; the count is a Python int.
    """
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return 0, 1  # cross-replica code (building the model) or no strategy
    return context.replica_id_in_sync_group, context.num_replicas_in_sync


def cross_replica_sum(value):
    """`value` summed over every replica of the step, differentiable (the gradient of an
    all-reduce sum is the all-reduce sum of the gradients); `value` outside a step."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value
    return context.all_reduce(tf.distribute.ReduceOp.SUM, value)


# ---------------------------------------------------------------------------------------
# Gradient clipping of the summed gradient
# ---------------------------------------------------------------------------------------


class AdamClippingSummedGradients(keras.optimizers.Adam):
    """Adam that clips the gradient after the all-reduce, as one device would clip it.

    Keras 3.15's optimizer clips (`clipvalue`) each replica's gradient, then the
    TensorFlow backend sums them across replicas (`_all_reduce_sum_gradients`). The
    official model clips the batch's gradient to +-grad_clip; clipping N shares separately
    lets the sum reach N * grad_clip. Here the first clipping is skipped and the summed
    gradient is clipped.
    """

    def _clip_gradients(self, grads):
        return grads  # clipped in _all_reduce_sum_gradients, once summed

    def _all_reduce_sum_gradients(self, grads_and_vars):
        summed = list(super()._all_reduce_sum_gradients(grads_and_vars))
        clipped = super()._clip_gradients([grad for grad, _ in summed])
        return [(grad, variable) for grad, (_, variable) in zip(clipped, summed)]


def adam(**kwargs):
    """Adam for the current scope: clipping the summed gradient when it has several replicas."""
    if tf.distribute.has_strategy() and tf.distribute.get_strategy().num_replicas_in_sync > 1:
        return AdamClippingSummedGradients(**kwargs)
    return keras.optimizers.Adam(**kwargs)


# ---------------------------------------------------------------------------------------
# Input
# ---------------------------------------------------------------------------------------


def distributed_batches(strategy, batches, initial_epoch=0, epochs=None):
    """The batches of a `batch_generator.SketchBatches` as a distributed dataset for `fit`.

    Every step, replica r of R gets rows `SketchBatches.piece(epoch, step, r, R)` of the
    global batch: the same sketches one device would train on, split in replica order.
    Each worker builds only its own replicas' rows (in a tf.data pipeline running the
    NumPy code beside training), so no two workers read the same sketches in an epoch, and
    its replicas take its pipeline's elements in turn.

    Args:
        strategy: the tf.distribute strategy.
        batches: a `SketchBatches` of global batches (batch_size is the global batch).
        initial_epoch, epochs: training: the epochs to serve, one after the other, as one
            dataset (pass `steps_per_epoch=len(batches)` to fit). None: evaluation, the
            batches of `batches.epoch` over and over (pass `validation_steps` or `steps`
            = len(batches): Keras takes the pipelines' length for the number of steps,
            which it is not with several replicas on a worker).

    Returns:
        a `tf.distribute.DistributedDataset` of (x, y); x is the dict {"strokes", "image"}
        when `batches` renders pictures (encoder=cnn).
    """
    patch_keras()
    epoch_list = [batches.epoch] if epochs is None else list(range(initial_epoch, epochs))

    def dataset_fn(context):
        local = context.num_replicas_in_sync // context.num_input_pipelines
        first = context.input_pipeline_id * local  # this worker's first global replica
        dataset = _pieces(batches, epoch_list, first, local, context.num_replicas_in_sync,
                          repeat=epochs is None)
        options = tf.data.Options()
        # Each pipeline already holds only its replicas' rows.
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        return dataset.with_options(options).prefetch(2)

    return strategy.distribute_datasets_from_function(dataset_fn)


def one_device_batches(batches, initial_epoch, epochs):
    """The batches of `batches` for epochs initial_epoch .. epochs - 1, as one tf.data pipeline
    for `fit` or `evaluate` on one device (training: pass `steps_per_epoch=len(batches)`).

    Given the `SketchBatches` itself, Keras makes a new generator pipeline for every epoch;
    in the time-to-quality benchmark, which calls `model.evaluate` between steps, an epoch's
    first step then waited now and then for about 30 seconds on aaron_sheep, 1 to 4 on
    cat_2k, at the pipeline's change. Over all the epochs, the pipeline is made once.
    Keras also takes a `SketchBatches`' shapes from its first two batches: length-trimmed
    batches (bucketed training, evaluation) of which the first two have the same length
    then fail at the first other length. Here the length is left open. The batches are
    `batches.piece(epoch, i)`, in order, as without this.
    """
    epoch_list = list(range(initial_epoch, epochs))
    return _pieces(batches, epoch_list, 0, 1, 1, repeat=False).prefetch(2)


def _pieces(batches, epoch_list, first, local, replicas, repeat):
    """The dataset of one input pipeline: for each epoch of `epoch_list` and each step, the
    rows `batches.piece(epoch, step, r, replicas)` of its `local` replicas r = first, ...,
    first + local - 1, in turn; over and over if `repeat`."""
    steps = len(batches)
    pictures = batches.render is not None

    def make(element):
        element = int(element)
        epoch = epoch_list[element // (steps * local)]
        step, local_replica = divmod(element % (steps * local), local)
        x, y = batches.piece(epoch, step, first + local_replica, replicas)
        if pictures:  # a cnn model's input: {"strokes": ..., "image": ...}
            return x["strokes"], x["image"], y
        return x, y

    def to_tensors(element):
        arrays = tf.numpy_function(make, [element], [tf.float32] * (3 if pictures else 2),
                                   stateful=False)
        x, y = tf.ensure_shape(arrays[0], (None, None, 5)), tf.ensure_shape(arrays[-1], (None, None, 5))
        if pictures:
            return {"strokes": x, "image": tf.ensure_shape(arrays[1], (None, None, None, 1))}, y
        return x, y

    dataset = tf.data.Dataset.range(len(epoch_list) * steps * local)
    if repeat:
        dataset = dataset.repeat()
    return dataset.map(to_tensors)


# ---------------------------------------------------------------------------------------
# Keras 3.15's fit on per-replica input (keras-team/keras#20585)
# ---------------------------------------------------------------------------------------

_patched = []


def patch_keras():
    """Lets `model.fit` and `model.evaluate` run on `distributed_batches`.

    Keras 3.15's TensorFlow trainer fails there twice:
    - before training or evaluating it averages a first batch over the replicas with
      `strategy.reduce("MEAN", ...)`, only to find the shapes of a model that is already
      built: that fails when the replicas' shares have different lengths (trimmed
      evaluation batches), and under MultiWorkerMirroredStrategy always
      (keras-team/keras#20585). It now takes the first local replica's share;
    - under MultiWorkerMirroredStrategy, each step averages the metrics over the workers
      with `strategy.reduce("MEAN", value, axis=0)`, which fails on scalars. Scalars are
      now reduced with axis=None, the mean it meant.
    tests/test_distribute.py runs fit through both, on two devices and on two workers.
    """
    if _patched:
        return
    from keras.src.backend.tensorflow import trainer

    original_reduce = trainer.reduce_per_replica
    original_build = trainer.TensorFlowTrainer._maybe_symbolic_build

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and is_multi_worker(strategy):
            def mean(value):
                scalar = all(v.shape.rank == 0 for v in strategy.experimental_local_results(value))
                return strategy.reduce("MEAN", value, axis=None if scalar else 0)

            return keras.tree.map_structure(mean, values)
        return original_reduce(values, strategy, reduction)

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = self._distribute_strategy
        if iterator is not None and data_batch is None and strategy is not None:
            for _, _, batches in iterator:
                data_batch = keras.tree.map_structure(
                    lambda v: strategy.experimental_local_results(v)[0], next(batches))
                break
            iterator = None
        return original_build(self, iterator=iterator, data_batch=data_batch)

    trainer.reduce_per_replica = reduce_per_replica
    trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build
    _patched.append(True)
