"""Label-free estimators and the reliability verdict on synthetic data with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special, stats

from shiftbench.analysis.estimate import (
    HeldOut,
    Target,
    aline,
    apply_line,
    atc_threshold,
    bbse,
    estimate_run,
    fit_agreement_line,
    fit_temperature,
    logits_of,
)
from shiftbench.analysis.verdict import MIN_LINE_R2, Evidence, assess, judge
from shiftbench.core.errors import ShiftbenchError


def calibrated(n: int, k: int, rng: np.random.Generator, priors=None, scale: float = 2.5):
    """Gaussian classes x | y ~ N(scale * e_y, I) with labels drawn from ``priors``; returns the
    labels and log p(x | y) up to a constant, so ``posterior`` with the true priors is a perfectly
    calibrated classifier. Under label shift only the priors move; p(x | y) stays."""
    priors = np.full(k, 1 / k) if priors is None else np.asarray(priors)
    labels = rng.choice(k, n, p=priors)
    mu = scale * np.eye(k)
    x = mu[labels] + rng.normal(size=(n, k))
    log_lik = -0.5 * ((x[:, None, :] - mu[None, :, :]) ** 2).sum(-1)
    return labels, x, log_lik


def posterior(log_lik: np.ndarray, priors) -> np.ndarray:
    return special.softmax(log_lik + np.log(np.asarray(priors))[None, :], axis=1)


K = 3
UNIFORM = np.full(K, 1 / K)


def test_no_shift_perfect_calibration_every_confidence_estimator_matches_the_truth():
    rng = np.random.default_rng(0)
    yh, _, llh = calibrated(4000, K, rng)
    yt, _, llt = calibrated(20000, K, rng)
    held, target = HeldOut(yh, posterior(llh, UNIFORM)), Target(posterior(llt, UNIFORM))
    truth = float((target.preds == yt).mean())
    run = estimate_run(held, target, n_boot=40)
    assert run.temperature == pytest.approx(1.0, abs=0.1)  # already calibrated
    for method in ("avg_conf", "doc", "atc_mc", "atc_ne", "bbse"):
        e = run.get(method)
        assert e.value == pytest.approx(truth, abs=0.02), method
        assert e.low <= e.value <= e.high and e.high - e.low < 0.06, method


def test_temperature_scaling_undoes_overconfidence_before_the_confidence_estimates():
    rng = np.random.default_rng(1)
    yh, _, llh = calibrated(4000, K, rng, scale=1.2)
    yt, _, llt = calibrated(8000, K, rng, scale=1.2)
    hot = lambda ll: special.softmax(3.0 * np.log(posterior(ll, UNIFORM)), axis=1)  # noqa: E731  logits x 3
    held, target = HeldOut(yh, hot(llh)), Target(hot(llt))
    assert fit_temperature(logits_of(held.probs), yh) == pytest.approx(3.0, rel=0.1)
    truth = float((target.preds == yt).mean())
    raw_conf = float(target.probs.max(1).mean())
    assert raw_conf - truth > 0.1  # the raw confidences would overestimate
    assert estimate_run(held, target, n_boot=0).get("avg_conf").value == pytest.approx(truth, abs=0.02)


def test_atc_threshold_puts_the_held_out_accuracy_above_it():
    rng = np.random.default_rng(2)
    scores = rng.random(1000)
    correct = rng.random(1000) < 0.7
    t = atc_threshold(scores, correct)
    assert (scores > t).mean() == pytest.approx(correct.mean(), abs=1e-9)
    assert atc_threshold(scores, np.ones(1000, bool)) == -np.inf


def test_bbse_recovers_planted_label_priors_and_the_accuracy_they_imply():
    rng = np.random.default_rng(3)
    yh, _, llh = calibrated(6000, K, rng)
    planted = np.array([0.6, 0.3, 0.1])
    yt, _, llt = calibrated(30000, K, rng, priors=planted)
    held = HeldOut(yh, posterior(llh, UNIFORM))
    target = Target(posterior(llt, UNIFORM))  # the model still assumes uniform priors
    shift = bbse(yh, held.preds, target.preds, K)
    assert np.abs(shift.priors - planted).max() < 0.03
    assert shift.accuracy == pytest.approx(float((target.preds == yt).mean()), abs=0.02)
    run = estimate_run(held, target, n_boot=0)
    assert run.target_priors == pytest.approx(tuple(shift.priors))
    assert run.get("bbse", "macro_f1") is not None


def test_agreement_line_fit_recovers_a_planted_probit_line_and_applies_it_to_accuracy():
    rng = np.random.default_rng(4)
    slope, bias = 0.8, -0.5
    held = rng.uniform(0.55, 0.95, 45)  # 45 model pairs' in-domain agreement rates
    target = stats.norm.cdf(slope * stats.norm.ppf(held) + bias + rng.normal(0, 0.01, held.size))
    a, b, r2 = fit_agreement_line(held, target)
    assert a == pytest.approx(slope, abs=0.02) and b == pytest.approx(bias, abs=0.02) and r2 > 0.99
    acc = np.array([0.6, 0.75, 0.9])
    assert apply_line(a, b, acc) == pytest.approx(stats.norm.cdf(slope * stats.norm.ppf(acc) + bias), abs=0.01)


def test_aline_d_solves_the_pair_equations_exactly_when_both_lines_hold():
    """Rates built so that accuracy and agreement both follow the planted line: ALine-D (which
    only uses the slope and the pairs' agreements) returns the planted target accuracies."""
    from shiftbench.analysis.estimate import _aline_point

    slope, bias = 0.9, -0.4
    acc_id = np.array([0.62, 0.7, 0.78, 0.85, 0.9])
    i, j = np.triu_indices(5, k=1)
    agree_id = 1 - 0.5 * (np.abs(acc_id[i] - acc_id[j]) + 0.3 * (1 - acc_id[i]) * (1 - acc_id[j]))
    line = lambda x: stats.norm.cdf(slope * stats.norm.ppf(x) + bias)  # noqa: E731
    # _aline_point takes per-example indicator matrices; rates are their row means, so one
    # "example" column per rate with value = the rate gives the same means.
    as_matrix = lambda rates: np.asarray(rates, dtype=float)[:, None]  # noqa: E731
    s, b, r2, est_s, est_d = _aline_point(as_matrix(agree_id), as_matrix(line(agree_id)), as_matrix(acc_id), None, None)
    assert s == pytest.approx(slope) and b == pytest.approx(bias) and r2 == pytest.approx(1.0)
    assert est_s == pytest.approx(line(acc_id)) and est_d == pytest.approx(line(acc_id), abs=1e-9)


def test_aline_without_shift_is_the_identity_line_and_returns_the_held_out_accuracy():
    """Target = a fresh sample from the held-out distribution: the agreement line is the
    identity and ALine-S returns each model's accuracy on the target up to sampling noise."""
    rng = np.random.default_rng(6)
    n = 20000

    def draw():  # noqa: E306  5 models of different skill on one 3-class task; errors partly shared
        y = rng.integers(0, K, n)
        hard = rng.random(n)
        preds = []
        for skill in (0.55, 0.65, 0.72, 0.8, 0.9):
            right = (hard < skill) ^ (rng.random(n) < 0.1)
            preds.append(np.where(right, y, (y + rng.integers(1, K, n)) % K))
        return y, np.stack(preds)

    (yh, ph), (yt, pt) = draw(), draw()
    res = aline(yh, ph, pt, n_boot=20)
    assert res.line.slope == pytest.approx(1.0, abs=0.1) and res.line.bias == pytest.approx(0.0, abs=0.05)
    assert res.line.r2 > 0.99
    truth = (pt == yt[None, :]).mean(1)
    for estimates in (res.aline_s, res.aline_d):
        assert np.abs(np.array([e.value for e in estimates]) - truth).max() < 0.015
        assert all(e.low <= e.value <= e.high for e in estimates)


def test_aline_needs_three_models():
    with pytest.raises(ShiftbenchError, match="at least 3 models"):
        aline(np.zeros(5, int), np.zeros((2, 5), int), np.zeros((2, 7), int))


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(ShiftbenchError, match="held-out labels"):
        HeldOut(np.array([0, 3]), np.full((2, 3), 1 / 3))
    with pytest.raises(ShiftbenchError, match="target probs"):
        Target(np.array([[np.nan, 1.0]]))
    with pytest.raises(ShiftbenchError, match="2 classes"):
        estimate_run(HeldOut(np.array([0, 1]), np.full((2, 3), 1 / 3)), Target(np.full((4, 2), 0.5)), n_boot=0)


def test_verdict_flags_a_poor_agreement_line_and_trusts_a_good_one():
    good = Evidence(estimator_spread=0.02, prior_shift_tv=0.05, pred_shift_tv=0.05, aline_r2=0.95)
    assert judge(good, "aline_s").trusted and judge(good, "doc").trusted
    poor_line = Evidence(0.02, 0.05, 0.05, aline_r2=MIN_LINE_R2 - 0.1)
    assert not any(judge(poor_line, m).trusted for m in ("aline_s", "aline_d", "doc"))
    assert "agreement line" in judge(poor_line, "aline_s").reasons[0]
    disagree = Evidence(0.3, 0.05, 0.05, aline_r2=None)
    assert not judge(disagree, "doc").trusted
    assert not judge(Evidence(0.02, 0.5, 0.3), "atc_mc").trusted  # a large estimated label shift


def test_assess_picks_aline_with_three_models_and_doc_with_one():
    rng = np.random.default_rng(5)
    yh, _, llh = calibrated(1500, K, rng)
    _, _, llt = calibrated(1500, K, rng)
    helds, targets = [], []
    for s in (1.0, 0.7, 0.4):  # three models: sharper or blurrier posteriors, same examples
        helds.append(HeldOut(yh, posterior(llh * s, UNIFORM)))
        targets.append(Target(posterior(llt * s, UNIFORM)))
    three = assess(helds, targets, n_boot=5)
    assert [a.default.method for a in three] == ["aline_d"] * 3 and three[0].line.n_models == 3
    assert {e.method for e in three[0].estimates} == {
        "avg_conf",
        "doc",
        "atc_mc",
        "atc_ne",
        "bbse",
        "aline_s",
        "aline_d",
    }
    one = assess(helds[:1], targets[:1], n_boot=5)
    assert one[0].default.method == "doc" and one[0].line is None and one[0].evidence.aline_r2 is None
