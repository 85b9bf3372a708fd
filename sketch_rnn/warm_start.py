"""Training on from a run's weights alone: a shared run (`convert_model.py --share`, as
`examples/sheep`), an imported official model, or any run whose optimizer state is gone.

Resuming needs the optimizer state: Adam divides each step by the root of its running mean of
squared gradients, and a sharp model (the shipped sheep's mixture is narrow) is thrown far off
by the steps of fresh moments. (Measured: from the sheep's epoch-155 weights, one step at the
scheduled learning rate with moments gathered without bias correction sent the validation
reconstruction loss from 0.008 to 0.49.) A warm start therefore

1. runs `steps` training steps at learning rate 0, which leave the weights as they are while
   Adam's moments gather the gradients, then divides the moments by Adam's bias corrections
   (1 - beta**steps): they are the running means a long run would hold;
2. sets the global step to the one the weights were trained to, so the learning-rate and KL
   schedules go on where they were;
3. ramps the learning rate from 0 to the scheduled one over the next `2 * steps` steps
   (`ramp_factor`).

Adam's own bias correction then divides by 1 - beta**(step + 1) again: nothing at the sheep's
step 11470, but for weights of a few hundred steps the first steps are smaller than scheduled
(to about 0.3 of it up to a few hundred steps), and the ramp makes them smaller still.
"""

import os

import keras
import numpy as np

from sketch_rnn.hparams import load_config
from sketch_rnn.run_folder import checkpoint_position, is_run_folder


def warm_start_source(run_dir):
    """The weights a warm start from `run_dir` loads and where they were in training.

    Returns:
        dict: `run_dir`, `weights` (best.weights.h5, else the newest checkpoint), `epoch` (0
        where unknown) and `step` (None where unknown): from the weights' name, best.json or
        the `source` of a shared run; an imported official checkpoint knows its global step
        (also when shared: its `source.origin`); `hparams` and `config`: the run's
        model_config.json (`load_config`).

    Raises:
        ValueError: one line, if run_dir is not a run folder or holds no weights.
    """
    from sketch_rnn.drawing import default_checkpoint

    if not os.path.isdir(run_dir) or not is_run_folder(run_dir):
        raise ValueError(f"--warm_start: {run_dir} is not a run folder (model_config.json and "
                         "checkpoints/); give a training run, a shared run (convert_model.py "
                         "--share) or an imported one (--from_magenta)")
    try:
        weights = default_checkpoint(run_dir)
    except FileNotFoundError as err:
        raise ValueError(f"--warm_start: {err}") from None
    position = checkpoint_position(run_dir, weights)
    step = position.get("step")
    hps, config = load_config(run_dir)
    source = config.get("source")
    while step is None and isinstance(source, dict):
        if isinstance(source.get("global_step"), int) and not isinstance(source["global_step"], bool):
            step = source["global_step"]
        source = source.get("origin")
    return {"run_dir": run_dir, "weights": weights, "epoch": position.get("epoch", 0), "step": step,
            "hparams": hps, "config": config}


def ramp_factor(step, warm_start):
    """The learning rate's factor at global `step` of a run warm-started as `warm_start`
    describes ({"step": S, "ramp_steps": R}, or None): rises from 0 at S to 1 at S + R."""
    if not warm_start or warm_start.get("ramp_steps", 0) <= 0:
        return 1.0
    return float(np.clip((step - warm_start["step"]) / warm_start["ramp_steps"], 0.0, 1.0))


def rebuild_adam_moments(model, batches, steps, global_step, kl_weight=None, verbose=True):
    """Gathers Adam's moments over `steps` training steps at learning rate 0, bias-corrects
    them, and sets the optimizer's step counter to `global_step`.

    Args:
        model: a compiled SketchRNN (`compile_model`) holding the weights to train on from.
        batches: indexable (x, y) training batches (`SketchBatches`); used in turn.
        steps: how many steps to gather over (> 0).
        global_step: the step the weights were trained to (the schedules' position).
        kl_weight: the KL weight to train with meanwhile (the schedule's at global_step).
        verbose: show a progress bar.

    Returns:
        the mean training loss over the steps (of the weights as they are).
    """
    optimizer = model.optimizer
    optimizer.build(model.trainable_variables)
    if kl_weight is not None:
        model.get_layer("latent").kl_weight.assign(kl_weight)
    optimizer.learning_rate.assign(0.0)
    optimizer.iterations.assign(0)
    bar = keras.utils.Progbar(steps, unit_name="step") if verbose else None
    losses = []
    for i in range(steps):
        x, y = batches[i % len(batches)]
        losses.append(float(model.train_on_batch(x, y, return_dict=True)["loss"]))
        if bar is not None:
            bar.update(i + 1, [("loss", losses[-1])])
    beta_1, beta_2 = float(optimizer.beta_1), float(optimizer.beta_2)
    for moment in optimizer._momentums:
        moment.assign(moment / (1.0 - beta_1**steps))
    for velocity in optimizer._velocities:
        velocity.assign(velocity / (1.0 - beta_2**steps))
    optimizer.iterations.assign(global_step)
    return float(np.mean(losses))
