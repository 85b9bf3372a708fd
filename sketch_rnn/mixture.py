"""The mixture-density output and the losses (paper eq. 3-11), as pure functions.

The decoder's head emits, per step, 3 pen logits and M each of mixture logits, means,
log standard deviations and correlations of bivariate normals over the pen offset.
`reconstruction_loss` is L_R = L_s + L_p and `kl_divergence` the KL term, normalised as the
official code does; `sample_stroke` draws the next point with a temperature.
"""

import math

from keras import ops


def kl_divergence(z_mean, z_log_var):
    """KL(N(mu, sigma) || N(0, I)) as the official code: mean over batch and z dims (eq. 10)."""
    return -0.5 * ops.mean(1 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var))


def kl_divergence_sum(z_mean, z_log_var):
    """The same KL summed over batch and z dims: what replicas add up (0 for no rows)."""
    return -0.5 * ops.sum(1 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var))


def get_mixture_coef(params, num_mixture):
    """Splits the decoder head's output (eq. 3-4).

    Args:
        params: (..., 6M + 3): 3 pen logits, then M each of pi logits, mu_x, mu_y,
            log sigma_x, log sigma_y and the pre-tanh correlation.

    Returns:
        dict of (..., M) tensors `pi_logits`, `mu_x`, `mu_y`, `log_sigma_x`, `log_sigma_y`,
        `rho` (tanh applied), and `pen_logits` (..., 3).
    """
    m = num_mixture
    # One split, not seven slices: its gradient is one concatenation, where each slice's
    # gradient would be a params-sized tensor of zeros.
    parts = ops.split(params, [3 + i * m for i in range(6)], axis=-1)
    names = ("pen_logits", "pi_logits", "mu_x", "mu_y", "log_sigma_x", "log_sigma_y", "rho")
    coef = dict(zip(names, parts))
    coef["rho"] = ops.tanh(coef["rho"])
    return coef


def bivariate_normal_log_pdf(x, y, mu_x, mu_y, log_sigma_x, log_sigma_y, rho):
    """log N(x, y | mu, sigma, rho) of a bivariate normal (eq. 24-25 of Graves 2013)."""
    norm_x = (x - mu_x) * ops.exp(-log_sigma_x)
    norm_y = (y - mu_y) * ops.exp(-log_sigma_y)
    one_minus_rho2 = 1 - ops.square(rho)
    z = ops.square(norm_x) + ops.square(norm_y) - 2 * rho * norm_x * norm_y
    return (-z / (2 * one_minus_rho2) - math.log(2 * math.pi) - log_sigma_x - log_sigma_y
            - 0.5 * ops.log(one_minus_rho2))


def reconstruction_loss(targets, params, num_mixture, max_seq_len, mask_pen=False):
    """L_R = L_s + L_p (eq. 9), normalised as the official code: sum / (B * max_seq_len).

    L_s is -log(sum_j pi_j N(dx, dy | j) + 1e-6), the official epsilon, computed in log
    space; it is zero after the sketch's last point. L_p is the pen-state cross-entropy over
    every step (the model learns where to stop); `mask_pen` zeroes it after the last point
    too, as the official code does when evaluating.

    Args:
        targets: stroke-5 targets (B, T, 5), T <= max_seq_len (shorter batches are trimmed
            end-padding and are normalised by max_seq_len all the same).
        params: the decoder head's output (B, T, 6M + 3).

    Returns:
        a scalar; 0 for a batch of no sketches (a replica's share of a small last batch).
    """
    targets = ops.cast(targets, "float32")
    params = ops.cast(params, "float32")
    coef = get_mixture_coef(params, num_mixture)
    dx, dy = targets[..., 0:1], targets[..., 1:2]
    pen = targets[..., 2:5]
    log_pi = ops.log_softmax(coef["pi_logits"], axis=-1)
    log_density = log_pi + bivariate_normal_log_pdf(
        dx, dy, coef["mu_x"], coef["mu_y"], coef["log_sigma_x"], coef["log_sigma_y"], coef["rho"])
    log_mixture = ops.logsumexp(log_density, axis=-1)  # (B, T)
    offset_loss = -ops.logaddexp(log_mixture, math.log(1e-6))
    inside = 1.0 - pen[..., 2]  # 1 up to the last point, 0 after the sketch's end
    pen_loss = -ops.sum(pen * ops.log_softmax(coef["pen_logits"], axis=-1), axis=-1)
    if mask_pen:
        pen_loss = pen_loss * inside
    total = ops.sum(offset_loss * inside + pen_loss)
    rows = ops.maximum(ops.shape(targets)[0], 1)
    return total / ops.cast(rows * max_seq_len, "float32")


def sample_stroke(params, num_mixture, noise, temperature, greedy, pen_temperature=None):
    """Draws the next stroke-5 point of each sketch from the decoder head's output.

    Temperature tau as the paper defines it: the logits of the mixture weights and of the
    pen states are divided by tau, and each Gaussian's variances sigma_x^2, sigma_y^2 are
    multiplied by tau (so sigma by sqrt(tau)); rho is kept. magenta.js's `getPDF` scales sigma
    so too, but divides both kinds of logits by 0.5 + tau / 2 unless given its own
    `softmaxTemperature` (at tau 0.3: 0.65). The official Python `sample()` passes sqrt(tau)
    to `sample_gaussian_2d`, which multiplies sigma by the square of its argument: sigma *
    tau, variances * tau^2. We follow the paper:
    it is the published definition, and it makes tau = 1 the model's own distribution with
    the offsets' and the choices' spread shrinking at the same rate. Below 1 the official
    rule shrinks the offsets faster (at tau = 0.1, sigma * 0.1 against ours * 0.32).

    Categories are drawn by inverse CDF, as the official `get_pi_idx`: the first index whose
    cumulative probability reaches the uniform draw.

    `pen_temperature`, when given, divides the pen logits instead of tau (not in the paper):
    at a low tau the paper's rule also sharpens the pen states toward the likeliest one, pen
    down, so the rarer lifts and end token come late or never and the pen goes round in
    loops; with the pen at 1, the offsets are tidy and the pen lifts and stops as the model
    expects.

    Args:
        params: (B, 6M + 3), the mixture head's output for one step.
        num_mixture: M.
        noise: (B, 4): two U(0, 1) draws (mixture component, pen state) and two N(0, 1)
            draws (the offset).
        temperature: scalar or (B,), > 0.
        greedy: bool; True takes the most likely component and pen state and the chosen
            Gaussian's mean, ignoring noise and temperature.
        pen_temperature: scalar or (B,), > 0, for the pen states; None: `temperature`.

    Returns:
        (B, 5) stroke-5 points (dx, dy, p1, p2, p3), the pen state one-hot.
    """
    coef = get_mixture_coef(params, num_mixture)
    tau = ops.reshape(ops.cast(temperature, params.dtype), (-1, 1))  # (B, 1) or (1, 1)
    component = _draw_one_hot(coef["pi_logits"], tau, noise[:, 0], greedy)  # (B, M)
    pen_tau = tau if pen_temperature is None else ops.reshape(
        ops.cast(pen_temperature, params.dtype), (-1, 1))
    pen = _draw_one_hot(coef["pen_logits"], pen_tau, noise[:, 1], greedy)  # (B, 3)

    def chosen(name):
        return ops.sum(coef[name] * component, axis=-1)  # (B,)

    rho = chosen("rho")
    spread = ops.sqrt(tau[:, 0]) * (1.0 - ops.cast(greedy, params.dtype))
    sigma_x = ops.exp(chosen("log_sigma_x")) * spread
    sigma_y = ops.exp(chosen("log_sigma_y")) * spread
    # Correlated normals: cov(dx, dy) = rho * sigma_x * sigma_y.
    dx = chosen("mu_x") + sigma_x * noise[:, 2]
    dy = chosen("mu_y") + sigma_y * (rho * noise[:, 2] + ops.sqrt(1.0 - ops.square(rho)) * noise[:, 3])
    return ops.concatenate([ops.stack([dx, dy], axis=-1), pen], axis=-1)


def _draw_one_hot(logits, tau, uniform, greedy):
    """One-hot (B, K) of a draw from softmax(logits / tau) by inverse CDF, or of the argmax."""
    size = logits.shape[-1]
    cdf = ops.cumsum(ops.softmax(logits / tau, axis=-1), axis=-1)
    drawn = ops.sum(ops.cast(cdf < ops.expand_dims(uniform, -1), "int32"), axis=-1)
    drawn = ops.minimum(drawn, size - 1)  # the last cumulative sum may round to just below 1
    index = ops.where(greedy, ops.cast(ops.argmax(logits, axis=-1), "int32"), drawn)
    return ops.one_hot(index, size, dtype=logits.dtype)
