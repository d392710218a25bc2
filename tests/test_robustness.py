"""Effective robustness on synthetic run files whose (ID, OOD) points are constructed exactly."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pytest

from shiftbench.analysis.robustness import (
    COLUMNS,
    RobustnessFit,
    effective_robustness,
    fit_lines,
    logit,
    protocol_family,
    sigmoid,
)
from shiftbench.core.errors import ShiftbenchError
from shiftbench.registry.protocol import protocol_root
from tests.test_compare import write_fake_run

N = 2000
SLOPE, INTERCEPT = 0.8, -0.5
ON_LINE = {"m1": 0.60, "m2": 0.70, "m3": 0.90}  # ID accuracy of models exactly on the trend
OUTLIER_ID, OUTLIER_LIFT = 0.75, 0.08  # "robust": OOD 8 points above the trend


def _line(id_acc: float) -> float:
    return float(sigmoid(SLOPE * logit(id_acc) + INTERCEPT))


def _preds(labels: np.ndarray, acc: float, rng: np.random.Generator) -> np.ndarray:
    preds = (labels + 1) % 3
    right = rng.permutation(len(labels))[: round(acc * len(labels))]
    preds[right] = labels[right]
    return preds


def _write(results_dir, rng, model, id_acc, ood_acc, seed=0, target="tweets", **kw):
    y_id = np.random.default_rng(100).integers(0, 3, N)  # same examples for every run
    y_ood = np.random.default_rng(200 + len(target)).integers(0, 3, N)
    kw.setdefault("protocol", "standard")  # these boards are of the standard family unless a test says otherwise
    write_fake_run(
        results_dir,
        model=model,
        seed=seed,
        target=target,
        id_labels=y_id,
        id_preds=_preds(y_id, id_acc, rng),
        ood_labels=y_ood,
        ood_preds=_preds(y_ood, ood_acc, rng),
        target_fp=f"fp-{target}",
        **kw,
    )


@pytest.fixture()
def results(tmp_path):
    rng = np.random.default_rng(0)
    for model, id_acc in ON_LINE.items():
        _write(tmp_path, rng, model, id_acc, _line(id_acc))
        _write(tmp_path, rng, model, id_acc, _line(id_acc), target="forum")  # trend only, no outlier
    _write(tmp_path, rng, "m1", ON_LINE["m1"], _line(ON_LINE["m1"]), seed=1)  # a second seed, same scores
    _write(
        tmp_path,
        rng,
        "robust",
        OUTLIER_ID,
        _line(OUTLIER_ID) + OUTLIER_LIFT,
        protocol="lora",
        protocol_hash="lora-hash",
    )
    for model in ("m1", "m2"):  # two models only: left out
        _write(tmp_path, rng, model, 0.7, 0.6, target="reviews")
    return tmp_path


def test_points_on_the_line_have_zero_effective_robustness(results):
    fits, df = effective_robustness(results, metric="accuracy", n_boot=200)
    forum = next(f for f in fits if f.target == "forum")
    assert forum.slope == pytest.approx(SLOPE, abs=1e-3) and forum.intercept == pytest.approx(INTERCEPT, abs=1e-3)
    assert forum.n_models == 3 and forum.metric == "accuracy" and forum.protocol_hash_set == ("proto-hash",)
    rows = df[df["target"] == "forum"]
    assert np.abs(rows["effective_robustness"]).max() < 1e-3  # only rounding to 1/N off the line
    assert (rows["er_ci_low"] <= rows["effective_robustness"]).all() and (
        rows["effective_robustness"] <= rows["er_ci_high"]
    ).all()


def test_the_model_above_the_line_is_more_robust(results):
    fits, df = effective_robustness(results, metric="accuracy", n_boot=300)
    assert list(df.columns) == COLUMNS
    assert {(f.pair, f.target) for f in fits} == {
        ("news_to_tweets", "forum"),
        ("news_to_tweets", "tweets"),
    }  # reviews: 2 < 3
    tweets = next(f for f in fits if f.target == "tweets")
    # The line is that of the standard fine-tunes (m1, m2, m3, exactly on the trend); the lora
    # remedy is scored against it and does not pull it towards itself.
    assert isinstance(tweets, RobustnessFit) and tweets.n_models == 3
    assert tweets.protocol_hash_set == ("proto-hash",) and tweets.fitted_on == ("standard",)
    assert tweets.slope == pytest.approx(SLOPE, abs=1e-3) and tweets.intercept == pytest.approx(INTERCEPT, abs=1e-3)
    rows = df[df["target"] == "tweets"].set_index("model")
    robust = rows.loc["robust"]
    assert robust["protocol"] == "lora" and robust["n_seeds"] == 1 and not robust["in_fit"]
    assert robust["effective_robustness"] == pytest.approx(OUTLIER_LIFT, abs=1e-3)  # all of its lift
    assert robust["er_ci_low"] > 0  # significant: the CI excludes 0
    others = rows.drop(index="robust")
    assert others["in_fit"].all() and np.abs(others["effective_robustness"]).max() < 1e-3
    logit_residuals = (
        logit(others["ood_mean"].to_numpy()) - tweets.slope * logit(others["id_mean"].to_numpy()) - tweets.intercept
    )
    assert logit_residuals.sum() == pytest.approx(
        0, abs=1e-9
    )  # least squares with an intercept, over the fitted points
    assert rows.loc["m1", "n_seeds"] == 2
    assert rows.loc["m1", "id_mean"] == pytest.approx(0.6) and rows.loc["m1", "ood_mean"] == pytest.approx(
        _line(0.6), abs=1e-3
    )
    # predicted_ood + ER = OOD, and the residuals agree with the returned line
    assert (rows["predicted_ood"] + rows["effective_robustness"]).to_numpy() == pytest.approx(
        rows["ood_mean"].to_numpy()
    )
    expected = sigmoid(tweets.slope * logit(rows["id_mean"].to_numpy()) + tweets.intercept)
    assert rows["predicted_ood"].to_numpy() == pytest.approx(expected)
    # deterministic for a given seed
    assert df.equals(effective_robustness(results, metric="accuracy", n_boot=300)[1])


def test_fitting_through_every_protocol_is_a_choice(results):
    """baseline_protocols=None: the remedy is one of the fitted points and absorbs part of its lift."""
    fits, df = effective_robustness(results, metric="accuracy", n_boot=100, baseline_protocols=None)
    tweets = next(f for f in fits if f.target == "tweets")
    assert tweets.n_models == 4 and tweets.protocol_hash_set == ("lora-hash", "proto-hash")
    assert tweets.fitted_on == ("lora", "standard")
    rows = df[df["target"] == "tweets"].set_index("model")
    assert rows["in_fit"].all()
    assert 0.6 * OUTLIER_LIFT < rows.loc["robust", "effective_robustness"] < 0.9 * OUTLIER_LIFT
    others = rows.drop(index="robust")["effective_robustness"]
    assert ((others < 0) & (others > -0.4 * OUTLIER_LIFT)).all()
    # fewer baseline points than min_models (one lora point): the line of every point again
    fallback, df2 = effective_robustness(results, metric="accuracy", n_boot=100, baseline_protocols=("lora",))
    assert [(f.slope, f.intercept, f.fitted_on) for f in fallback] == [
        (f.slope, f.intercept, f.fitted_on) for f in fits
    ]
    assert df2.equals(df)


def test_min_models_macro_f1_and_errors(results):
    fits, df = effective_robustness(results, metric="accuracy", n_boot=50, min_models=5)
    assert fits == [] and df.empty and list(df.columns) == COLUMNS
    fits, df = effective_robustness(results, metric="macro_f1", n_boot=50)
    assert len(fits) == 2 and (df["metric"] == "macro_f1").all()
    fits, df = effective_robustness(results, n_boot=50)  # default: the task's headline metric
    assert {f.metric for f in fits} == {"macro_f1"}
    with pytest.raises(ShiftbenchError, match=r"metric 'f1_PER' is not defined for text-classification"):
        effective_robustness(results, metric="f1_PER")
    with pytest.raises(ShiftbenchError, match="min_models"):
        effective_robustness(results, min_models=1)


def test_superseded_versions_are_not_pooled(tmp_path):
    rng = np.random.default_rng(1)
    for model, id_acc in ON_LINE.items():
        _write(tmp_path, rng, model, id_acc, _line(id_acc))
    # an older protocol version of m2 with a very different score is ignored
    _write(
        tmp_path,
        rng,
        "m2",
        0.3,
        0.1,
        seed=1,
        protocol_hash="old-hash",
        created_at=datetime(2023, 1, 1, tzinfo=timezone.utc),
    )
    fits, df = effective_robustness(tmp_path, metric="accuracy", n_boot=50)
    assert fits[0].protocol_hash_set == ("proto-hash",)
    m2 = df.set_index("model").loc["m2"]
    assert m2["n_seeds"] == 1 and m2["id_mean"] == pytest.approx(0.7)


def test_delta_er_is_paired_against_the_models_own_standard_runs(tmp_path):
    """A remedy of m2 that lifts OOD by 0.05 on both seeds: delta ER ~ +0.05 against m2's standard
    runs, however far m2 itself sits from the line; a point left of the fitted ID range is an
    extrapolation."""
    rng = np.random.default_rng(3)
    for model, id_acc in ON_LINE.items():
        for seed in (0, 1):
            lift = 0.04 if model == "m2" else 0.0  # m2 already sits above the line under standard
            _write(tmp_path, rng, model, id_acc, _line(id_acc) + lift + 0.01 * seed, seed=seed)
            if model == "m2":
                _write(
                    tmp_path,
                    rng,
                    model,
                    id_acc,
                    _line(id_acc) + lift + 0.05 + 0.01 * seed,
                    seed=seed,
                    protocol="augment",
                    protocol_hash="aug-hash",
                )
    _write(tmp_path, rng, "weak", 0.4, _line(0.4), protocol="icl", protocol_hash="icl-hash")
    fits, df = effective_robustness(tmp_path, metric="accuracy", n_boot=300)
    rows = df.set_index(["model", "protocol"])
    aug = rows.loc[("m2", "augment")]
    assert aug["base"] == "m2@standard" and aug["delta_er_seeds"] == 2
    assert aug["delta_er"] == pytest.approx(0.05, abs=2e-3)
    assert 0 < aug["delta_er_ci_low"] < 0.05 < aug["delta_er_ci_high"] < 0.1
    assert aug["effective_robustness"] > aug["delta_er"] + 0.015  # ER against the line also counts m2's head start
    assert not aug["extrapolated"] and rows.loc[("weak", "icl"), "extrapolated"]
    assert np.isnan(rows.loc[("weak", "icl"), "delta_er"])  # no standard runs of "weak"
    assert fits[0].id_range == pytest.approx((0.6, 0.9), abs=1e-3)


# A second protocol generation on its own trend: standard-v2 fine-tunes train better (higher ID)
# and keep a different share of it out of domain.
V2_SLOPE, V2_INTERCEPT = 1.2, 0.4
V2_ID = {"m1": 0.70, "m2": 0.80, "m3": 0.92}


def _line_v2(id_acc: float) -> float:
    return float(sigmoid(V2_SLOPE * logit(id_acc) + V2_INTERCEPT))


def _write_v1_family(results_dir, rng):
    """standard fine-tunes of m1-m3 on the v1 trend (m2 0.04 above it) and lora of m2, 0.05 above
    m2@standard, over seeds 0 and 1."""
    for model, id_acc in ON_LINE.items():
        lift = 0.04 if model == "m2" else 0.0
        for seed in (0, 1):
            _write(results_dir, rng, model, id_acc, _line(id_acc) + lift + 0.01 * seed, seed=seed)
    for seed in (0, 1):
        ood = _line(ON_LINE["m2"]) + 0.04 + 0.05 + 0.01 * seed
        _write(results_dir, rng, "m2", ON_LINE["m2"], ood, seed=seed, protocol="lora", protocol_hash="lora-hash")


def _write_v2_family(results_dir, rng):
    """standard-v2 fine-tunes of m1-m3 on the v2 trend and lora-v2 of m2, 0.02 *below*
    m2@standard-v2 (but far above m2@standard and the v1 line), over seeds 0 and 1."""
    for model, id_acc in V2_ID.items():
        for seed in (0, 1):
            _write(
                results_dir,
                rng,
                model,
                id_acc,
                _line_v2(id_acc) + 0.01 * seed,
                seed=seed,
                protocol="standard-v2",
                protocol_hash="v2-hash",
            )
    for seed in (0, 1):
        ood = _line_v2(V2_ID["m2"]) - 0.02 + 0.01 * seed
        _write(results_dir, rng, "m2", V2_ID["m2"], ood, seed=seed, protocol="lora-v2", protocol_hash="lora-v2-hash")


def test_protocol_families_follow_the_base_chain():
    assert [protocol_family(p) for p in ("standard", "lora", "icl-calibrated", "decoder-quick")] == ["standard"] * 4
    assert [protocol_family(p) for p in ("standard-v2", "lora-v2", "distill-v2")] == ["standard-v2"] * 3
    # not a built-in protocol (a user file recorded under its own name): the standard family
    assert protocol_family("my-recipe") == protocol_family("x.yaml") == "standard"
    assert protocol_root("my-recipe") is None and protocol_root("icl-calibrated") == "standard"


def test_each_family_has_its_own_line_and_delta_er_base(tmp_path):
    rng = np.random.default_rng(5)
    _write_v1_family(tmp_path, rng)
    v1_fits, v1 = effective_robustness(tmp_path, metric="accuracy", n_boot=200)
    _write_v2_family(tmp_path, rng)
    fits, df = effective_robustness(tmp_path, metric="accuracy", n_boot=200)

    # (a) two lines per (pair, target), each through its own family's baseline points
    assert [(f.target, f.family, f.fitted_on, f.n_models) for f in fits] == [
        ("tweets", "standard", ("standard",), 3),
        ("tweets", "standard-v2", ("standard-v2",), 3),
    ]
    assert fits[1].protocol_hash_set == ("v2-hash",) and fits[1].id_range == pytest.approx((0.7, 0.92), abs=1e-3)
    rows = df.set_index(["model", "protocol"])
    for fit in fits:  # the least-squares line through that family's baseline points, and only those
        own = rows.xs(fit.family, level="protocol")
        slope, intercept = fit_lines(own["id_mean"].to_numpy(), own["ood_mean"].to_numpy())
        assert (fit.slope, fit.intercept) == pytest.approx((float(slope), float(intercept)), abs=1e-9)
    assert fits[1].slope == pytest.approx(V2_SLOPE, abs=0.15) and fits[0].slope == pytest.approx(SLOPE, abs=0.15)
    assert (rows["family"] == [protocol_family(p) for _, p in rows.index]).all()
    assert rows.loc[[(m, "standard-v2") for m in V2_ID], "in_fit"].all()
    assert rows.loc[(slice(None), "standard"), "in_fit"].all() and not rows["in_fit"][rows["delta_er_seeds"] > 0].any()

    # (b) a v2 remedy is paired with the model's standard-v2 runs, a v1 remedy with its standard runs
    lora_v2, lora = rows.loc[("m2", "lora-v2")], rows.loc[("m2", "lora")]
    assert lora_v2["base"] == "m2@standard-v2" and lora_v2["delta_er_seeds"] == 2
    assert lora_v2["delta_er"] == pytest.approx(-0.02, abs=3e-3)  # against v1 it would look like a large gain
    assert lora["base"] == "m2@standard" and lora["delta_er"] == pytest.approx(0.05, abs=3e-3)

    # (c) the v2 points change no number of the v1 family
    before = v1.set_index(["model", "protocol"])
    assert (before["family"] == "standard").all()
    assert rows.loc[before.index, before.columns].equals(before)
    assert [f for f in fits if f.family == "standard"] == v1_fits

    # (d) a protocol name that is no built-in protocol (a user protocol file) is judged against the
    # standard line and paired with the model's standard runs
    _write(tmp_path, rng, "m3", 0.85, _line(0.85) + 0.03, protocol="my-recipe", protocol_hash="user-hash")
    fits, df = effective_robustness(tmp_path, metric="accuracy", n_boot=50)
    assert [f.family for f in fits] == ["standard", "standard-v2"] and fits[0].fitted_on == ("standard",)
    mine = df.set_index(["model", "protocol"]).loc[("m3", "my-recipe")]
    assert mine["family"] == "standard" and not mine["in_fit"]
    assert mine["predicted_ood"] == pytest.approx(float(sigmoid(fits[0].slope * logit(0.85) + fits[0].intercept)))
    assert mine["base"] == "m3@standard" and mine["delta_er_seeds"] == 1 and mine["delta_er"] > 0


def test_an_explicit_baseline_is_one_family_as_before_families(tmp_path):
    """baseline_protocols other than the default: every point in one line, the standard family."""
    rng = np.random.default_rng(6)
    _write_v1_family(tmp_path, rng)
    _write_v2_family(tmp_path, rng)
    fits, df = effective_robustness(tmp_path, metric="accuracy", n_boot=50, baseline_protocols=("standard",))
    assert [(f.family, f.fitted_on) for f in fits] == [("standard", ("standard",))]
    assert (df["family"] == "standard").all() and len(df) == 8
    assert df.set_index(["model", "protocol"]).loc[("m2", "lora-v2"), "base"] == "m2@standard"


def test_a_family_with_too_few_points_is_left_out(results):
    """The fixture's v1 points plus two standard-v2 points: no v2 line, the v1 numbers unchanged."""
    fits, df = effective_robustness(results, metric="accuracy", n_boot=50)
    rng = np.random.default_rng(7)
    for model in ("m1", "m2"):
        _write(results, rng, model, V2_ID[model], _line_v2(V2_ID[model]), protocol="standard-v2", protocol_hash="v2")
    fits2, df2 = effective_robustness(results, metric="accuracy", n_boot=50)
    assert fits2 == fits and df2.equals(df) and {f.family for f in fits} == {"standard"}
