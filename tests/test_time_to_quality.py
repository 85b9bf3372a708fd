"""The arithmetic of benchmarks/time_to_quality.py: curves, speed-up, the official figures'
conversion to nats per point and the evaluation schedule. Nothing here is timed."""

import math

import numpy as np
import pytest

from benchmarks.machine import describe_cpu
from benchmarks.time_to_quality import (
    EvaluationMarks,
    compare_curves,
    official_nats_per_point,
    parse_args,
    split_hparams,
    stalls,
    time_to_reach,
    value_at,
)

OURS = [(0.0, 3.0), (1.0, 2.0), (2.0, 1.5), (3.0, 1.2)]
OFFICIAL = [(0.0, 3.0), (1.5, 2.5), (3.0, 1.8)]


def test_time_to_reach_interpolates_between_the_evaluations_around_the_first_crossing():
    # 1.8 lies between 2.0 (at 1 min) and 1.5 (at 2 min): 1 + (2.0 - 1.8) / (2.0 - 1.5) = 1.4.
    assert time_to_reach(OURS, 1.8) == pytest.approx(1.4)
    assert time_to_reach(OURS, 2.0) == pytest.approx(1.0)  # reached exactly at an evaluation
    assert time_to_reach(OURS, 3.5) == pytest.approx(0.0)  # already there at the start
    assert time_to_reach(OURS, 1.0) is None  # never
    # Not monotone: the first crossing counts, 1.3 / (3.0 - 1.7) of the first minute.
    noisy = [(0.0, 3.0), (1.0, 1.7), (2.0, 1.9), (3.0, 1.6)]
    assert time_to_reach(noisy, 1.8) == pytest.approx(12 / 13)


def test_value_at_is_linear_between_evaluations_and_none_outside():
    assert value_at(OFFICIAL, 0.75) == pytest.approx(2.75)  # half way from 3.0 to 2.5
    assert value_at(OFFICIAL, 2.0) == pytest.approx(2.5 - 0.7 / 3)
    assert value_at(OFFICIAL, 3.0) == pytest.approx(1.8)
    assert value_at(OFFICIAL, 3.1) is None
    assert value_at([{"minutes": 0.5, "nats_per_point": 2.0}], 0.5) == 2.0  # records work too


def test_speedup_is_the_official_time_over_ours_to_its_final_value():
    result = compare_curves(OURS, OFFICIAL)
    assert result["official_nats_per_point"] == 1.8
    assert result["official_minutes"] == 3.0
    assert result["ours_minutes_to_official_final"] == pytest.approx(1.4)
    assert result["speedup"] == pytest.approx(3.0 / 1.4)
    # Both end at 3 min: official 1.8, ours 1.2.
    assert result["equal_time_minutes"] == 3.0
    assert result["difference_at_equal_time"] == pytest.approx(0.6)


def test_difference_at_equal_time_is_taken_at_the_end_of_the_shorter_curve():
    # Ours stops at 2.5 min (1.35, half way from 1.5 to 1.2): the official is 2.5 - 0.7 * 2/3 there.
    result = compare_curves(OURS[:3] + [(2.5, 1.2)], OFFICIAL)
    assert result["equal_time_minutes"] == 2.5
    assert result["difference_at_equal_time"] == pytest.approx((2.5 - 0.7 * 2 / 3) - 1.2)
    worse = compare_curves([(0.0, 3.0), (3.0, 2.0)], OFFICIAL)
    assert worse["speedup"] is None and worse["ours_minutes_to_official_final"] is None
    assert worse["difference_at_equal_time"] == pytest.approx(-0.2)


def test_no_speedup_when_the_official_run_ends_no_better_than_our_initial_weights():
    # A budget too short: the official final 3.1 is above our first evaluation, 3.0 at 0.01 min.
    result = compare_curves([(0.01, 3.0), (1.0, 2.5)], [(0.4, 3.0), (1.1, 3.1)])
    assert result["ours_minutes_to_official_final"] == pytest.approx(0.01)
    assert result["speedup"] is None


def official_style_batch(sketches, max_len):
    """Stroke-5 batch as Magenta's pad_batch builds it: the start token, then the points, then p3."""
    x = np.zeros((len(sketches), max_len + 1, 5))
    x[:, 0, 2] = 1
    for i, sketch in enumerate(sketches):
        n = len(sketch)
        x[i, 1:n + 1, 0:2] = sketch[:, 0:2]
        x[i, 1:n + 1, 3] = sketch[:, 2]
        x[i, 1:n + 1, 2] = 1 - sketch[:, 2]
        x[i, n + 1:, 4] = 1
    return x


def point_loss(target, pi, mu1, mu2, s1, s2, rho, pen_logits):
    """-log sum_j pi_j N(dx, dy | j) - log p(pen) of each row (Sketch-RNN eq. 9, official epsilon)."""
    dx, dy = target[..., 0:1], target[..., 1:2]
    z1, z2 = (dx - mu1) / s1, (dy - mu2) / s2
    z = z1**2 + z2**2 - 2 * rho * z1 * z2
    density = np.exp(-z / (2 * (1 - rho**2))) / (2 * np.pi * s1 * s2 * np.sqrt(1 - rho**2))
    offsets = -np.log(np.sum(pi * density, axis=-1) + 1e-6)
    log_pen = pen_logits - np.log(np.sum(np.exp(pen_logits), axis=-1, keepdims=True))
    return offsets, -np.sum(target[..., 2:5] * log_pen, axis=-1)


def test_official_r_cost_converts_to_the_mean_loss_per_real_point():
    rng = np.random.default_rng(7)
    max_len, mixtures = 5, 2
    batches = [[3 * rng.normal(size=(n, 2)) for n in lengths] for lengths in ((2, 5, 4), (3, 1))]
    r_costs, sizes, points, per_point = [], [], [], []
    for offsets in batches:
        sketches = [np.column_stack([o, rng.integers(0, 2, len(o))]) for o in offsets]
        target = official_style_batch(sketches, max_len)[:, 1:]  # (B, T, 5)
        shape = target.shape[:2] + (mixtures,)
        logits = rng.normal(size=shape)
        params = dict(pi=np.exp(logits) / np.exp(logits).sum(-1, keepdims=True),
                      mu1=rng.normal(size=shape), mu2=rng.normal(size=shape),
                      s1=np.exp(rng.normal(size=shape)), s2=np.exp(rng.normal(size=shape)),
                      rho=np.tanh(rng.normal(size=shape)),
                      pen_logits=rng.normal(size=target.shape[:2] + (3,)))
        offset_loss, pen_loss = point_loss(target, **params)
        # The official evaluation model: both terms times fs = 1 - p3, averaged over B * T rows.
        fs = 1 - target[..., 4]
        r_costs.append(np.mean(offset_loss * fs + pen_loss * fs))
        sizes.append(len(sketches))
        points.append(sum(len(s) for s in sketches))  # the sequence_lengths fed to the model
        # The reference: each sketch's first len(sketch) rows, the real points, one by one.
        for i, sketch in enumerate(sketches):
            per_point += [offset_loss[i, j] + pen_loss[i, j] for j in range(len(sketch))]
    assert len(per_point) == 15
    expected = np.mean(per_point)
    assert official_nats_per_point(r_costs, sizes, max_len, points) == pytest.approx(expected, rel=1e-12)
    # The plain mean of the batches' r_cost is another figure (padding and batch sizes in it).
    assert not math.isclose(np.mean(r_costs), expected, rel_tol=1e-3)


def test_evaluations_fall_at_the_start_each_mark_and_the_end_of_the_budget():
    marks = EvaluationMarks(budget_minutes=5.0, every_minutes=2.0)
    evaluated = []
    for minutes in [0.01, 0.5, 1.9, 2.3, 3.0, 4.0, 4.4, 4.9, 5.2]:  # ends of training steps
        if marks.due(minutes):
            evaluated.append(minutes)
            marks.evaluated(minutes)
        if marks.finished(minutes):
            break
    assert evaluated == [0.01, 2.3, 4.0, 5.2]
    late = EvaluationMarks(budget_minutes=10.0, every_minutes=2.0)
    late.evaluated(4.5)  # a long step passed the mark at 4: the next one is 6, not 4 again
    assert not late.due(5.9) and late.due(6.0)


def test_only_hparams_the_official_code_shares_are_given_to_it():
    overrides = "z_size=64, bucket_batches=10,dec_model=layer_norm,max_seq_len=200,seed=3,batch_size=50"
    assert split_hparams(overrides) == "z_size=64,dec_model=layer_norm,batch_size=50"
    assert split_hparams("") == ""


def test_official_hparams_name_only_what_the_official_code_has(tmp_path, capsys):
    data = tmp_path / "d.npz"
    data.write_bytes(b"")
    base = ["--data", str(data), "--skip_official"]
    assert parse_args(base).official_hparams is None  # the shared part of --hparams, later
    assert parse_args(base + ["--official_hparams", ""]).official_hparams == ""
    assert parse_args(base + ["--official_hparams", "learning_rate=0.002"]).official_hparams
    for wrong in ["bucket_batches=10", "learning_rate", "lerning_rate=0.1"]:
        with pytest.raises(SystemExit):
            parse_args(base + ["--official_hparams", wrong])
        assert f"--official_hparams '{wrong}'" in capsys.readouterr().err


def test_stalls_are_the_steps_over_three_times_the_median_after_the_first():
    seconds = [9.0, 1.0, 1.1, 0.9, 3.5, 1.0, 2.9, 1.0]  # median of steps 2..8: 1.0
    assert stalls(seconds, steps_per_epoch=4) == [{"step": 5, "seconds": 3.5, "epoch_step": 1}]
    assert stalls([5.0, 1.0], steps_per_epoch=4) == []


# Abridged /proc/cpuinfo blocks modelled on the three kinds of CPU this project was measured on
# (a Zen 3, a Zen 4 and a Xeon with AMX; the Zen 4 and Xeon model numbers are illustrative).
ZEN3 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx fma avx2 bmi2 sha_ni
"""
ZEN4 = ZEN3.replace("model\t\t: 1", "model\t\t: 17").replace(
    "avx2 bmi2", "avx2 bmi2 avx512f avx512bw avx512_bf16 avx512_vnni")
XEON = """processor\t: 0
cpu family\t: 6
model\t\t: 143
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8
"""


def test_the_cpu_is_named_with_its_family_model_and_matmul_instruction_sets():
    # All three report a bare brand or a generic name; what tells them apart is written out.
    assert describe_cpu(ZEN3) == "AMD EPYC (family 25, model 1; AVX2)"
    assert describe_cpu(ZEN4) == "AMD EPYC (family 25, model 17; AVX2, AVX-512, AVX512-BF16)"
    assert describe_cpu(XEON) == ("Intel(R) Xeon(R) Processor (family 6, model 143; "
                                  "AVX2, AVX-512, AVX512-BF16, AMX-BF16)")
    # Only the first processor's block is read; a CPU without AVX2 says so.
    second = ZEN4.replace("processor\t: 0", "processor\t: 1")
    assert describe_cpu(ZEN3 + "\n" + second) == describe_cpu(ZEN3)
    assert describe_cpu(ZEN3.replace("avx fma avx2", "sse4_2")).endswith("; no AVX2)")
    # ARM's cpuinfo names no model: the caller falls back to lscpu.
    assert describe_cpu("processor\t: 0\nFeatures\t: fp asimd\nCPU part\t: 0xd0c\n") is None
