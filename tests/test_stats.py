"""Known-answer tests for shiftbench.analysis.stats and the task layer's resampling (no training; tiny
synthetic predictions)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from shiftbench.analysis.stats import (
    Interval,
    holm,
    mcnemar,
    percentile_interval,
    resampled_sums,
    seed_aware_interval,
    seeds_needed,
    t_interval,
)
from shiftbench.analysis.taskstats import replicate_scores, task_kind
from shiftbench.core.errors import ShiftbenchError
from shiftbench.tasks.metrics import classification_metrics, expected_calibration_error

TEXT = task_kind("text-classification")


def _stats(y, p, k, probs=None):
    probs = np.eye(k)[p] if probs is None else probs
    return TEXT.unit_stats(y, p, probs, None, tuple(f"l{i}" for i in range(k)))


def _diff(metric, y, preds_a, preds_b, n_boot, seed=0, k=3):
    """(mean per-seed B - A, replicate differences (R, S)) through the task layer."""
    blocks = [_stats(y, p, k) for pair in zip(preds_a, preds_b) for p in pair]
    pts, reps = replicate_scores(
        blocks, "text-classification", metric, tuple(f"l{i}" for i in range(k)), n_boot, np.random.default_rng(seed)
    )
    return (pts[1::2] - pts[0::2]).mean(), reps[:, 1::2] - reps[:, 0::2]


def _discordant(b: int, c: int, both: int = 0, neither: int = 0) -> tuple[np.ndarray, np.ndarray]:
    a = [1] * b + [0] * c + [1] * both + [0] * neither
    bb = [0] * b + [1] * c + [1] * both + [0] * neither
    return np.array(a, bool), np.array(bb, bool)


def test_mcnemar_exact_known_answer():
    r = mcnemar(*_discordant(10, 2, both=50, neither=7))
    assert (r.b, r.c, r.method) == (10, 2, "exact")
    assert r.p_value == pytest.approx(2 * (1 + 12 + 66) / 4096)  # 2 P(X <= 2 | n=12, 1/2)
    assert round(r.p_value, 4) == 0.0386
    assert r.statistic == 2


def test_mcnemar_chi2_with_continuity_correction():
    r = mcnemar(*_discordant(40, 20, both=100))
    assert r.method == "chi2-cc"
    assert r.statistic == pytest.approx((abs(40 - 20) - 1) ** 2 / 60)
    assert r.p_value == pytest.approx(sps.chi2.sf(361 / 60, df=1))
    assert r.p_value == pytest.approx(0.014171, abs=1e-5)


def test_mcnemar_switches_at_25_discordant_pairs_and_handles_edges():
    assert mcnemar(*_discordant(16, 8)).method == "exact"  # 24
    assert mcnemar(*_discordant(17, 8)).method == "chi2-cc"  # 25
    assert mcnemar(*_discordant(5, 5)).p_value == 1.0
    none = mcnemar(*_discordant(0, 0, both=3, neither=2))
    assert (none.b, none.c, none.p_value) == (0, 0, 1.0)
    with pytest.raises(ValueError):
        mcnemar([True, False], [True])


def test_task_metrics_match_classification_metrics_and_ece():
    rng = np.random.default_rng(3)
    for k, n in ((2, 7), (3, 50), (5, 40)):
        y = rng.integers(0, k, n)
        p = rng.integers(0, k - 1, n)  # the last class is never predicted; some may be absent
        probs = rng.dirichlet(np.ones(k), n)
        probs[np.arange(n), p] += 1.0  # the prediction is the argmax
        probs /= probs.sum(axis=1, keepdims=True)
        sums = _stats(y, p, k, probs).sum(axis=0)
        ref = {**classification_metrics(y, p), "ece": expected_calibration_error(y, probs)}
        for metric, value in ref.items():
            assert TEXT.metric_fn(metric, tuple(range(k)))(sums) == pytest.approx(value, abs=1e-12), metric
        onehot = np.eye(k)[y]
        assert TEXT.metric_fn("brier", tuple(range(k)))(sums) == pytest.approx(
            ((probs - onehot) ** 2).sum(axis=1).mean()
        )
    # a class absent from both labels and predictions is not averaged over
    cm = np.zeros(9 + 46)
    cm[:9] = [2, 0, 0, 0, 0, 0, 1, 0, 1]
    assert TEXT.metric_fn("macro_f1", ("a", "b", "c"))(cm) == pytest.approx((0.8 + 2 / 3) / 2)
    with pytest.raises(ShiftbenchError, match="metric 'f1_PER' is not defined for text-classification"):
        TEXT.metric_fn("f1_PER", ("a", "b"))


def test_debiased_ece_removes_the_small_sample_bias():
    """Perfectly calibrated predictions: the plug-in ECE shrinks like 1/sqrt(n), the debiased
    L2 estimate stays near 0 at every n."""
    rng = np.random.default_rng(0)
    for n, max_plugin in ((100, 0.2), (5000, 0.05)):
        conf = rng.uniform(0.5, 1.0, n)
        correct = rng.random(n) < conf
        y = np.where(correct, 0, 1)
        probs = np.stack([conf, 1 - conf], axis=1)
        sums = _stats(y, np.zeros(n, dtype=int), 2, probs).sum(axis=0)
        plug = TEXT.metric_fn("ece", ("a", "b"))(sums)
        debiased = TEXT.metric_fn("ece_debiased", ("a", "b"))(sums)
        assert 0 < plug < max_plugin and debiased < 0.5 * plug


def test_resampled_sums_are_resamples():
    values = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    sums = resampled_sums(values, 50, np.random.default_rng(0))
    assert sums.shape == (50, 2) and np.all(sums == sums.round())
    weights_of_row = resampled_sums(np.eye(4), 50, np.random.default_rng(0))  # the same draws: multiplicities
    assert np.all(weights_of_row.sum(axis=1) == 4)
    assert np.array_equal(sums[:, 0], weights_of_row[:, 0] + weights_of_row[:, 2])


def test_paired_bootstrap_constructed_case():
    n = 200
    labels = np.zeros(n, dtype=np.int64)
    preds_a = np.ones(n, dtype=np.int64)
    preds_a[:100] = 0  # A right on 100
    preds_b = preds_a.copy()
    preds_b[100:130] = 0  # B right on the same 100 and 30 more
    est, reps = _diff("accuracy", labels, [preds_a], [preds_b], 4000, seed=1, k=2)
    assert est == pytest.approx(0.15, abs=1e-12)
    iv = percentile_interval(est, reps[:, 0])
    assert 0 < iv.low < 0.15 < iv.high and iv.excludes_zero
    # the bootstrap SD of a paired accuracy difference matches its analytic standard error
    se = np.sqrt((30 / n - 0.15**2) / n)
    assert reps.std() == pytest.approx(se, rel=0.1)


def test_identical_predictions_give_exactly_zero():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, 300)
    p = rng.integers(0, 3, 300)
    for metric in ("accuracy", "macro_f1"):
        est, reps = _diff(metric, y, [p, p], [p.copy(), p.copy()], 500)
        assert est == 0.0 and np.all(reps == 0.0)
        ci = seed_aware_interval(np.zeros(2), reps)
        assert (ci.low, ci.high, ci.se) == (0.0, 0.0, 0.0)


def test_several_seeds_share_one_resample():
    rng = np.random.default_rng(7)
    y = rng.integers(0, 3, 400)
    a = [np.where(rng.random(400) < 0.6, y, rng.integers(0, 3, 400)) for _ in range(3)]
    b = [np.where(rng.random(400) < 0.7, y, rng.integers(0, 3, 400)) for _ in range(3)]
    est, _ = _diff("macro_f1", y, a, b, 300)
    per_seed = [
        classification_metrics(y, b[s])["macro_f1"] - classification_metrics(y, a[s])["macro_f1"] for s in range(3)
    ]
    assert est == pytest.approx(np.mean(per_seed), abs=1e-12)
    # repeating one seed three times: every replicate is the same for all three (the resample is shared)
    _, same = _diff("macro_f1", y, [a[0]] * 3, [b[0]] * 3, 300)
    assert np.all(same == same[:, :1])
    # and then all the variance is shared test-set variance: no seed variance
    ci = seed_aware_interval(same[0] * 0 + (b[0] != y).mean() - (a[0] != y).mean(), same)
    assert ci.v_seed == 0.0 and ci.v_example == pytest.approx(same[:, 0].var(ddof=1))


def test_seed_aware_interval_known_answers():
    # no example noise at all: the interval is the t-interval over seeds (S - 1 = 2 df)
    points = np.array([0.01, 0.03, 0.08])
    ci = seed_aware_interval(points, np.tile(points, (100, 1)))
    t = t_interval(points)
    assert ci.v_example == 0.0 and ci.estimate == pytest.approx(t.estimate)
    assert ci.half_width == pytest.approx(t.high - t.estimate, rel=0.03)  # simulated pivot vs exact t quantile
    # one seed: the normal interval of the bootstrap, conditional on that fine-tune
    reps = np.random.default_rng(0).normal(0.1, 0.02, size=(20000, 1))
    one = seed_aware_interval([0.1], reps)
    assert one.v_seed == 0.0 and one.half_width == pytest.approx(1.96 * 0.02, rel=0.03)
    assert holm([0.01, 0.04, 0.03]).tolist() == pytest.approx([0.03, 0.06, 0.06])
    assert seeds_needed(0.05, 1e-4, 4e-4) == 4 and seeds_needed(0.01, 1e-4, 4e-4) is None


def test_t_interval_and_percentile_interval():
    iv = t_interval([1.0, 2.0, 3.0])
    assert iv.estimate == 2.0
    assert iv.high - 2.0 == pytest.approx(4.302653 / np.sqrt(3), abs=1e-6)
    one = t_interval([0.5])
    assert one.estimate == 0.5 and np.isnan(one.low) and np.isnan(one.high)
    assert percentile_interval(1.0, np.arange(101) / 100, alpha=0.1) == Interval(1.0, 0.05, 0.95)
    assert str(Interval(0.01, -0.02, 0.04)) == "+0.0100 [-0.0200, +0.0400]"
