"""The official Sketch-RNN training loop for a training-time budget, with its validation curve.

Run by `time_to_quality.py` in the official environment (see `official_reference.py`):

    /tmp/official/bin/python benchmarks/official_time_to_quality.py \\
        --wheel /tmp/official/wheel/magenta-2.1.4-py3-none-any.whl \\
        --data ../shared/datasets/aaron_sheep.npz [--minutes 20] [--eval_every_minutes 2] \\
        [--seed 0] [--hparams "k=v,..."] [--save_checkpoint DIR]

The official code runs unchanged from Magenta's wheel: `sketch_rnn_train.load_dataset` (its
max_seq_len, the data's longest sketch; its scale factor), `model.Model` and the body of
`sketch_rnn_train.train` (the learning-rate and KL-weight schedules, `random_batch`, the
`sess.run` of its fetches and train op). Its summaries, checkpoints and its own evaluation
are left out, because that evaluation runs a model built with is_training=1 (pen loss not
masked after a sketch's end). The validation split is evaluated instead with a model built as
the official `load_model` builds its evaluation model (is_training=0, no dropout, sharing
the weights with reuse=True), on every validation sketch: the full batches of the official
valid loader, then the remainder with a second evaluation model of that batch size. Its r_cost,
the masked loss averaged over batch_size * max_seq_len rows, becomes nats per point by
`time_to_quality.official_nats_per_point`. The z noise of the evaluation is fed from a NumPy
generator seeded the same at every evaluation, and NumPy's global state (the training's data
order and augmentation) is put back after it, so evaluating does not change the training.

The clock runs from building the training graph (session start-up and variable
initialisation included) and stops while evaluating (and while building the evaluation
models). Progress and the result go to stdout as lines starting with `@ttq ` and a JSON
object.
"""

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from benchmarks.official_reference import (  # noqa: E402
    apply_overrides,
    import_official,
    training_feed,
)
from benchmarks.time_to_quality import (  # noqa: E402
    RECORD,
    EvaluationMarks,
    TrainingClock,
    curve_point,
    official_nats_per_point,
)


def emit(event, **fields):
    print(RECORD + json.dumps({"event": event, **fields}), flush=True)


def z_noise(model):
    """The eps tensor of the official `batch_z = mean + sigma * eps`, to feed seeded noise."""
    add = model.batch_z.op
    products = [t for t in add.inputs if t.op.type == "Mul"]
    if len(products) != 1 or "random_normal" not in products[0].op.inputs[1].name:
        raise SystemExit("error: the official model's batch_z is not mean + sigma * random_normal; "
                         "cannot seed its evaluation noise")
    return products[0].op.inputs[1]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", required=True, help="magenta-2.1.4-py3-none-any.whl")
    parser.add_argument("--data", required=True, help="the data set, a Sketch-RNN .npz file")
    parser.add_argument("--minutes", type=float, default=20.0, help="training-time budget")
    parser.add_argument("--eval_every_minutes", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0, help="NumPy and graph seed")
    parser.add_argument("--hparams", default="", help="overrides of the official defaults")
    parser.add_argument("--save_checkpoint", metavar="DIR",
                        help="at the end, save the weights as the official code does (a TF1 "
                             "checkpoint and model_config.json), e.g. to check the figures with "
                             "convert_model.py --from_magenta and evaluate.py")
    args = parser.parse_args(argv)
    for flag, path in (("--wheel", args.wheel), ("--data", args.data)):
        if not os.path.isfile(path):
            parser.error(f"{flag} {path}: no such file")

    official = import_official(args.wheel)
    import numpy as np

    tf, official_model, official_utils = official.tf, official.model, official.utils
    sketch_rnn_train = official.sketch_rnn_train
    load_average = os.getloadavg()
    np.random.seed(args.seed)
    hps = official_model.get_default_hparams()
    apply_overrides(hps, args.hparams)
    hps.data_set = [os.path.basename(args.data)]
    began = time.perf_counter()
    train_set, valid_set, _, hps, _, _ = sketch_rnn_train.load_dataset(
        os.path.dirname(os.path.abspath(args.data)), hps)
    load_seconds = time.perf_counter() - began
    # The evaluation model as the official load_model builds it, at the training batch size.
    eval_hps = official_model.copy_hparams(hps)
    eval_hps.use_input_dropout = 0
    eval_hps.use_recurrent_dropout = 0
    eval_hps.use_output_dropout = 0
    eval_hps.is_training = 0
    full = valid_set.num_batches * valid_set.batch_size
    remainder = valid_set.strokes[full:]  # already normalised; the official loader drops them
    remainder_set = None
    if remainder:
        remainder_set = official_utils.DataLoader(remainder, len(remainder),
                                                  max_seq_length=hps.max_seq_len)  # scale 1.0
    valid_points = int(sum(len(s) for s in valid_set.strokes))

    sketch_rnn_train.reset_graph()
    tf.set_random_seed(args.seed)
    clock = TrainingClock()
    marks = EvaluationMarks(args.minutes, args.eval_every_minutes)
    clock.start()
    model = official_model.Model(hps)
    with clock.paused():
        evaluators = []  # (model, loader, eps tensor or None)
        for loader in filter(None, (valid_set if valid_set.num_batches else None, remainder_set)):
            loader_hps = official_model.copy_hparams(eval_hps)
            loader_hps.batch_size = loader.batch_size
            evaluator = official_model.Model(loader_hps, reuse=True)
            evaluators.append((evaluator, loader, z_noise(evaluator) if hps.conditional else None))
    session = tf.Session()
    session.run(tf.global_variables_initializer())
    curve = []

    def evaluate():
        now = clock.minutes()
        with clock.paused():
            began = time.perf_counter()
            saved = np.random.get_state()  # get_batch's random_scale draws from it
            noise = np.random.default_rng(args.seed)
            r_costs, sizes, points = [], [], []
            for evaluator, loader, eps in evaluators:
                for index in range(loader.num_batches):
                    _, x, lengths = loader.get_batch(index)
                    feed = {evaluator.input_data: x, evaluator.sequence_lengths: lengths}
                    if eps is not None:
                        feed[eps] = noise.standard_normal((loader.batch_size, hps.z_size)).astype(np.float32)
                    r_costs.append(float(session.run(evaluator.r_cost, feed)))
                    sizes.append(loader.batch_size)
                    points.append(int(np.sum(lengths)))
            np.random.set_state(saved)
            point = curve_point(
                now, official_nats_per_point(r_costs, sizes, hps.max_seq_len, points),
                int(session.run(model.global_step)), time.perf_counter() - began,
                reconstruction_loss=float(np.dot(r_costs, sizes) / np.sum(sizes)))
        curve.append(point)
        marks.evaluated(now)
        emit("point", point=point)
        return point

    evaluate()  # the initial weights
    stopped = "budget"
    while True:  # the body of sketch_rnn_train.train, without summaries, evaluation, saving
        feed = training_feed(hps, model, train_set, session.run(model.global_step))
        cost, *_ = session.run([model.cost, model.r_cost, model.kl_cost, model.final_state,
                                model.global_step, model.train_op], feed)
        if not np.isfinite(cost):
            stopped = "not finite"
        now = clock.minutes()
        if stopped != "budget" or marks.due(now):
            evaluate()
        if stopped != "budget" or marks.finished(now):
            break

    if args.save_checkpoint:
        os.makedirs(args.save_checkpoint, exist_ok=True)
        with open(os.path.join(args.save_checkpoint, "model_config.json"), "w") as f:
            f.write(hps.to_json())
        sketch_rnn_train.save_model(session, args.save_checkpoint, curve[-1]["step"])
    steps = curve[-1]["step"]
    emit("result", result={
        "curve": curve,
        "max_seq_len": int(hps.max_seq_len),
        "scale_factor": float(train_set.scale_factor),
        "valid_sketches": len(valid_set.strokes),
        "valid_points": valid_points,
        "steps": steps,
        "train_minutes": curve[-1]["minutes"],
        "s_per_step": curve[-1]["minutes"] * 60 / steps if steps else None,
        "eval_seconds": sum(p["eval_seconds"] for p in curve),
        "load_seconds": load_seconds,
        "load_average_start": list(load_average),
        "hparams": args.hparams,
        "tensorflow": tf.__version__,
        "stopped": stopped,
    })


if __name__ == "__main__":
    main()
