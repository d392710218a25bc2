"""Should a label-free OOD estimate be trusted? A verdict from evidence that needs no target label.

Evidence (all computed from the held-out split's labels and predictions and the target's
predictions only):

``estimator_spread``  max - min of the per-run accuracy estimates (avg_conf, DoC, ATC-MC,
                      ATC-NE, BBSE): estimators built on different assumptions disagreeing
``prior_shift_tv``    total variation between BBSE's estimated target label priors and the
                      held-out label priors: a large label shift breaks the confidence-based
                      estimators, which assume p(y) did not move
``pred_shift_tv``     total variation between the target's and the held-out's predicted-label
                      distributions (a model calling most target texts one class)
``aline_r2``          R^2 of the agreement line in probit space (None with < 3 models)
``aline_gap``         |ALine-S - ALine-D| for this model: the two read the same line differently
                      for a model unlike the others (None with < 3 models)

The rule and how it was chosen are in :func:`judge` and README "Shift without labels".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from shiftbench.analysis.estimate import (
    GROUP_METHODS,
    N_BOOT,
    PER_RUN_METHODS,
    AgreementLine,
    Estimate,
    HeldOut,
    RunEstimates,
    Target,
    aline,
    estimate_run,
    total_variation,
)
from shiftbench.core.errors import ShiftbenchError


@dataclass(frozen=True)
class Evidence:
    estimator_spread: float
    prior_shift_tv: float
    pred_shift_tv: float
    aline_r2: float | None = None
    aline_gap: float | None = None

    @classmethod
    def of(
        cls,
        run: RunEstimates,
        line: AgreementLine | None = None,
        aline_s: Estimate | None = None,
        aline_d: Estimate | None = None,
    ) -> Evidence:
        values = [e.value for e in run.estimates if e.metric == "accuracy" and e.method in PER_RUN_METHODS]
        return cls(
            estimator_spread=float(max(values) - min(values)),
            prior_shift_tv=total_variation(run.target_priors, run.source_priors),
            pred_shift_tv=total_variation(run.target_pred_dist, run.source_pred_dist),
            aline_r2=line.r2 if line is not None else None,
            aline_gap=abs(aline_s.value - aline_d.value) if aline_s is not None and aline_d is not None else None,
        )

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Verdict:
    trusted: bool
    reasons: tuple[str, ...]  # why it was flagged (empty when trusted)


# Thresholds. R^2 is of the agreement line in probit space; spread and total variation are in
# probability units (accuracy and TV both lie in [0, 1]).
MIN_LINE_R2 = 0.8
MAX_SPREAD = 0.10
MAX_PRIOR_SHIFT = 0.20


def judge(e: Evidence, method: str) -> Verdict:
    """Trust ``method``'s estimate or flag it.

    Every estimator here assumes the shift is of a kind that keeps the held-out split
    informative. The agreement line tests that with the models themselves (Baek et al. 2022:
    where ID-vs-OOD agreement between models lies on a line, accuracy does too, with the same
    line), so whenever a line was fitted (>= 3 models on the pair) its fit decides first: an
    R^2 below ``MIN_LINE_R2`` flags every estimate on the pair. ALine-S and ALine-D are further
    flagged for a model where they disagree by more than ``MAX_SPREAD`` (a model unlike the
    others, off the family the line describes). A per-run estimate is further flagged when the
    per-run estimators disagree by more than ``MAX_SPREAD`` (then at least one of them is off by
    more than half of it) or when BBSE estimates a label-prior shift above ``MAX_PRIOR_SHIFT``
    (the confidence-based estimators assume p(y) did not move)."""
    reasons = []
    if e.aline_r2 is not None and e.aline_r2 < MIN_LINE_R2:
        reasons.append(f"agreement line fits poorly (R^2 {e.aline_r2:.2f} < {MIN_LINE_R2})")
    if method in GROUP_METHODS and e.aline_gap is not None and e.aline_gap > MAX_SPREAD:
        reasons.append(f"ALine-S and ALine-D disagree by {e.aline_gap:.3f} > {MAX_SPREAD} for this model")
    if method not in GROUP_METHODS:
        if e.estimator_spread > MAX_SPREAD:
            reasons.append(f"estimators disagree by {e.estimator_spread:.3f} > {MAX_SPREAD}")
        if e.prior_shift_tv > MAX_PRIOR_SHIFT:
            reasons.append(f"estimated label-prior shift {e.prior_shift_tv:.3f} > {MAX_PRIOR_SHIFT} (total variation)")
    return Verdict(not reasons, tuple(reasons))


DEFAULT_METHODS = ("aline_d", "doc")  # the first one available is a run's headline estimate


@dataclass(frozen=True)
class Assessment:
    """Every label-free accuracy estimate of one run, the evidence, and the verdict on each."""

    run: RunEstimates
    line: AgreementLine | None  # the pair's agreement line (None with < 3 models)
    estimates: tuple[Estimate, ...]  # accuracy estimates: per-run ones, then aline_s and aline_d when fitted
    evidence: Evidence
    verdicts: dict[str, Verdict]  # method -> verdict

    @property
    def default(self) -> Estimate:
        """ALine-D when the pair has an agreement line (Baek et al.'s more accurate variant, and
        the better one on the committed board), else DoC (lowest MAE of the per-run estimators
        on the committed board, within noise of ATC)."""
        by = {e.method: e for e in self.estimates}
        return next(by[m] for m in DEFAULT_METHODS if m in by)

    @property
    def verdict(self) -> Verdict:
        return self.verdicts[self.default.method]


def assess(
    held_outs: Sequence[HeldOut], targets: Sequence[Target], n_boot: int = N_BOOT, seed: int = 0
) -> tuple[Assessment, ...]:
    """Estimates, evidence and verdicts for models scored on the same held-out and target
    examples (one pair): per-run estimators always, ALine-S and ALine-D when there are >= 3 models."""
    if len(held_outs) != len(targets) or not held_outs:
        raise ShiftbenchError(
            f"assess: {len(held_outs)} held-out and {len(targets)} target prediction sets; need the same number, >= 1"
        )
    runs = [estimate_run(h, t, n_boot=n_boot, seed=seed) for h, t in zip(held_outs, targets)]
    labels = held_outs[0].labels
    paired = all(
        np.array_equal(h.labels, labels) and len(t.probs) == len(targets[0].probs) for h, t in zip(held_outs, targets)
    )
    line = None
    if len(runs) >= 3 and paired:
        line = aline(
            labels,
            np.stack([h.preds for h in held_outs]),
            np.stack([t.preds for t in targets]),
            n_boot=n_boot,
            seed=seed,
        )
    out = []
    for i, run in enumerate(runs):
        ests = tuple(e for e in run.estimates if e.metric == "accuracy") + (
            (line.aline_s[i], line.aline_d[i]) if line else ()
        )
        evidence = Evidence.of(run, line.line, line.aline_s[i], line.aline_d[i]) if line else Evidence.of(run)
        verdicts = {e.method: judge(evidence, e.method) for e in ests}
        out.append(Assessment(run, line.line if line else None, ests, evidence, verdicts))
    return tuple(out)


# --------------------------------------------------------------------------- at run time

# What a run records (RUN_SCHEMA's ood_estimate* columns). At run time one model is known, so only
# the per-run estimators exist (the agreement line needs >= 3 fine-tunes on the pair: that is the
# estimator board's, `leaderboard --estimators`). Per metric, the default: accuracy <- DoC (lowest
# mean absolute error of the per-run estimators on the committed board, README "Shift without
# labels"), macro_f1 <- BBSE (the one per-run method that gives a macro-F1). Other metrics: none.
RUN_METHODS = {"accuracy": "doc", "macro_f1": "bbse"}
# Bootstrap replicates at run time: fewer than the board's 200 keeps the added scoring time small;
# at 100 the percentile ends move by ~0.005 against 200 (the interval is about sampling noise only).
RUN_N_BOOT = 100


@dataclass(frozen=True)
class RowEstimate:
    """The label-free estimate of one metric of one run, with its interval and verdict."""

    metric: str
    method: str
    value: float
    low: float
    high: float
    trusted: bool
    reasons: tuple[str, ...]  # why it was flagged (empty when trusted)


@dataclass(frozen=True)
class RunEstimate:
    """What a run records about its target without reading a target label."""

    held_out_split: str  # the labelled in-domain split the estimators were fitted on
    n_boot: int
    rows: tuple[RowEstimate, ...]  # one per covered metric: the run-time default (RUN_METHODS)
    estimates: tuple[Estimate, ...]  # every per-run estimate
    evidence: Evidence
    temperature: float
    held_out_accuracy: float
    source_priors: tuple[float, ...]  # held-out label distribution
    target_priors: tuple[float, ...]  # BBSE's estimate of the target's label distribution
    source_pred_dist: tuple[float, ...]
    target_pred_dist: tuple[float, ...]
    seconds: float  # wall time of estimating (what the estimates add to a run's scoring time)

    def for_metric(self, metric: str) -> RowEstimate | None:
        return next((r for r in self.rows if r.metric == metric), None)

    def as_dict(self) -> dict:
        out = asdict(self)
        out["evidence"] = self.evidence.as_dict()
        return out

    @classmethod
    def from_dict(cls, d: dict) -> RunEstimate:
        return cls(
            held_out_split=d["held_out_split"],
            n_boot=int(d["n_boot"]),
            rows=tuple(RowEstimate(**{**r, "reasons": tuple(r["reasons"])}) for r in d["rows"]),
            estimates=tuple(Estimate(**e) for e in d["estimates"]),
            evidence=Evidence(**d["evidence"]),
            temperature=d["temperature"],
            held_out_accuracy=d["held_out_accuracy"],
            **{k: tuple(d[k]) for k in ("source_priors", "target_priors", "source_pred_dist", "target_pred_dist")},
            seconds=d["seconds"],
        )


def run_estimates(
    held: HeldOut, target: Target, held_out_split: str, n_boot: int = RUN_N_BOOT, seed: int = 0
) -> RunEstimate:
    """The per-run estimates of one model on one target, the per-run evidence and the verdict on
    each metric's default estimate (no agreement line: a run knows one model)."""
    import time

    start = time.perf_counter()
    run = estimate_run(held, target, n_boot=n_boot, seed=seed)
    evidence = Evidence.of(run)
    rows = []
    for metric, method in RUN_METHODS.items():
        e = run.get(method, metric)
        if e is None:
            continue
        v = judge(evidence, method)
        rows.append(RowEstimate(metric, method, e.value, e.low, e.high, v.trusted, v.reasons))
    return RunEstimate(
        held_out_split=held_out_split,
        n_boot=n_boot,
        rows=tuple(rows),
        estimates=run.estimates,
        evidence=evidence,
        temperature=run.temperature,
        held_out_accuracy=run.held_out_accuracy,
        source_priors=run.source_priors,
        target_priors=run.target_priors,
        source_pred_dist=run.source_pred_dist,
        target_pred_dist=run.target_pred_dist,
        seconds=time.perf_counter() - start,
    )
