"""Trains the same tiny model on one device and under MirroredStrategy over two logical CPUs.

Run by tests/test_distribute.py in a subprocess (logical devices must be set before
TensorFlow starts): python tests/mirrored_vs_one_device.py DATA.npz OUT.json [HPARAMS].
Writes what both runs logged and computed, for the test to compare. HPARAMS are added to
the test's (other cells and engines: "enc_model=layer_norm,dec_model=hyper",
"fused_lstm_cell=False", "custom_lstm_gradient=False", "conditional=False", the CNN encoder
and no KL term "encoder=cnn,kl_weight=0").
"""

import json
import os
import sys
import tempfile

import tensorflow as tf

CPU = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(CPU, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402

import utils  # noqa: E402
from batch_generator import SketchBatches, evaluation_batches  # noqa: E402
from callbacks import FixedEvaluationNoise, KLWeightAnnealing, LearningRateDecay  # noqa: E402
from seq2seqVAE import HParams, build_model, compile_model, describe_engines  # noqa: E402
from sketch_rnn.raster import batch_renderer  # noqa: E402
from sketch_rnn.recurrent import ReplicaSeedGenerator  # noqa: E402
from sketch_rnn.tf_backend import distribute  # noqa: E402

STEPS = 2
# No recurrent dropout: each replica draws its own masks (by design, checked below). The
# z noise stays on. A tiny grad_clip clips most gradient values, so that clipping the sum
# of the replicas' gradients (not each share) is checked too; a KL tolerance of 0.01 keeps
# the KL term (and its all-reduce) in the gradient from the first step.
HPARAMS = ("enc_rnn_size=16,dec_rnn_size=24,z_size=8,num_mixture=3,batch_size=8,max_seq_len=100,"
           "use_recurrent_dropout=False,lstm_matmul_dtype=float32,grad_clip=0.002,"
           "kl_tolerance=0.01,random_scale_factor=0.1,augment_stroke_prob=0.1")


def loaders(path, hps):
    data = utils.load_npz(path)
    short = {name: [s for s in data[name] if len(s) <= hps.max_seq_len] for name in ("train", "valid")}
    made = {}
    # 17 validation sketches: the last batch of 1 sketch leaves replica 1 an empty share.
    for name, strokes in (("train", short["train"][:48]), ("valid", short["valid"][:17])):
        made[name] = utils.DataLoader(strokes, batch_size=hps.batch_size, max_seq_len=hps.max_seq_len,
                                      name=name)
    scale = made["train"].calculate_normalizing_scale_factor()
    for loader in made.values():
        loader.normalize(scale)
    return made


def weights(model):
    return [keras.ops.convert_to_numpy(v).tolist() for v in model.trainable_weights]


def run(model, hps, train, valid, strategy):
    callbacks = [LearningRateDecay(hps), KLWeightAnnealing(hps), FixedEvaluationNoise()]
    if strategy is None:
        history = model.fit(train, validation_data=valid, epochs=1, steps_per_epoch=STEPS,
                            callbacks=callbacks, shuffle=False, verbose=0)
    else:
        history = model.fit(distribute.distributed_batches(strategy, train, 0, 1),
                            validation_data=distribute.distributed_batches(strategy, valid),
                            validation_steps=len(valid), epochs=1, steps_per_epoch=STEPS,
                            callbacks=callbacks, shuffle=False, verbose=0)
    return {k: v[-1] for k, v in history.history.items()}


def replica_draws(strategy):
    """Dropout-style draws of one ReplicaSeedGenerator: outside a step, and per replica."""
    outside = keras.random.uniform((4,), seed=ReplicaSeedGenerator(7))
    with strategy.scope():
        generator = ReplicaSeedGenerator(7)

    @tf.function
    def draw():
        return keras.random.uniform((4,), seed=generator)

    per_replica = strategy.experimental_local_results(strategy.run(draw))
    return keras.ops.convert_to_numpy(outside).tolist(), [
        keras.ops.convert_to_numpy(v).tolist() for v in per_replica]


def main(data_path, out_path, extra=""):
    hps = HParams.parse(",".join(filter(None, [HPARAMS, extra])))
    made = loaders(data_path, hps)
    # steps_per_epoch=STEPS batches of 8 from the (seed, epoch) order, augmented.
    train = SketchBatches(made["train"], hps.batch_size, augment=True, shuffle=True, seed=0,
                          steps_per_epoch=STEPS, render=batch_renderer(hps))
    valid = evaluation_batches(made["valid"], hps.batch_size, batch_renderer(hps))

    keras.utils.set_random_seed(0)
    one = compile_model(build_model(hps), hps)
    start = os.path.join(tempfile.mkdtemp(), "start.weights.h5")
    one.save_weights(start)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        two = compile_model(build_model(hps), hps)
    two.load_weights(start)  # the same weights and noise generator states

    # Each replica's share is augmented from its own seed, so both runs train on
    # unaugmented batches (tests/test_distribute.py checks the shares on their own).
    train.augment = False
    result = {"replicas": strategy.num_replicas_in_sync, "engines": describe_engines(two),
              "optimizer": type(two.optimizer).__name__}
    result["one"] = run(one, hps, train, valid, None)
    result["two"] = run(two, hps, train, valid, strategy)
    result["weights_one"], result["weights_two"] = weights(one), weights(two)
    result["step_two"] = int(keras.ops.convert_to_numpy(two.optimizer.iterations))
    # The test split's figures as callbacks.evaluate computes them.
    result["evaluate_one"] = one.evaluate(valid, return_dict=True, verbose=0)
    result["evaluate_two"] = two.evaluate(distribute.distributed_batches(strategy, valid),
                                          steps=len(valid), return_dict=True, verbose=0)
    result["outside"], result["per_replica"] = replica_draws(strategy)
    with open(out_path, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
