"""Effective robustness (Taori et al., 2020): OOD score beyond what the ID score predicts.

Across many models, OOD scores usually track ID scores along a line once both are put on a
logit scale. A model that gains OOD only because it is better ID is not *more robust*; one
that sits above the line is. For every (pair, target) -- and only among runs scored on the
same source and target data (equal fingerprints) -- and every protocol *family* (below), this
module:

1. takes one point per (model, protocol): the mean over seeds of its ID and OOD score;
2. fits ``logit(OOD) = a * logit(ID) + b`` by least squares through the *baseline* points,
   those of the family's root protocol (plain fine-tunes: ``standard`` or ``standard-v2``;
   scores clipped to [1e-4, 1 - 1e-4] first, so a perfect or zero score stays finite). As in
   Taori et al., the trend is that of standard training: a remedy (``augment``, ``lora``, ...)
   is judged against it and does not pull the line towards itself. With fewer than
   ``min_models`` baseline points (a board of other protocols) the line goes through every point
   of the family instead; ``RobustnessFit.fitted_on`` names the protocols it was fitted on;
3. reports every point's effective robustness ``ER = OOD - sigmoid(a * logit(ID) + b)``, in
   score units (e.g. accuracy points), remedies included (``in_fit`` says which points made
   the line).

How to read it: ER > 0 means the model is more robust than the trend of the models around it
predicts at the same ID score (it keeps more of its ID score out of domain); ER < 0 means
less robust; ER near 0 means its OOD score is what its ID score alone predicts. The fit goes
through every point, the one being judged included, so with few models an outlier also
pulls the line towards itself: read ER relative to the other models of the same fit.

Scores come from :mod:`shiftbench.analysis.taskstats` (the task's own metric definitions: for NER
``macro_f1`` is the mean entity F1 the runner records, ``entity_micro_f1`` the headline); the
default metric is each task's headline metric.

The CI of ER is a two-level bootstrap: each of ``n_boot`` replicates resamples every point's
seeds (with replacement, among its own runs) *and* the ID and OOD test units (independently of
each other, but the same resample for every run), recomputes every point's mean scores, refits
the line and recomputes every residual; the interval is the 95 % percentile one. It covers seed
noise, test-set noise and the uncertainty of the fitted line, not the choice of models. With 3
seeds a plain bootstrap of seeds is too narrow (it divides by S, not S - 1); read ER intervals
as approximate and use the paired ``delta_er`` below for decisions.

A point whose ID score lies outside the range of the fitted points' ID scores is marked
``extrapolated``: the line is then read where no fitted model was.

**Protocol families.** There are two generations of plain fine-tuning recipe, ``standard`` and
``standard-v2`` (:data:`BASELINE_PROTOCOLS`), and each remedy builds on one of them (its
protocol file's ``base:`` chain: ``lora`` -> ``standard``, ``lora-v2`` -> ``standard-v2``,
``icl-calibrated`` -> ``icl`` -> ``standard``). A point's family is the root of that chain
(:func:`protocol_family`); a protocol name that is not a built-in (a user protocol file, stored
under its own name) or whose chain ends elsewhere is in the ``standard`` family, where every
point was before there were families. Each family gets its own line, fitted and bootstrapped on
its runs alone, and its points are judged against it only: the recipes differ in how well they
train, so a v2 remedy measured against the v1 trend (or its delta against the v1 fine-tune of
its model) would credit the remedy with what the new recipe does. It also keeps published
numbers still: adding a family's runs to a results dir changes no number of another family.
A family with fewer than ``min_models`` points is left out. Passing any ``baseline_protocols``
other than the default puts every point in the ``standard`` family (one line, as before).

**Delta ER** (``delta_er``): for a point that is not a baseline (a remedy, e.g. ``lora``) and
whose model also has runs under its family's root (``standard`` for ``lora``, ``standard-v2``
for ``lora-v2``), ER(remedy) - ER(same model under that root), per
shared seed (run-level residuals against the fitted line), with the seed- and example-aware
interval of :func:`shiftbench.analysis.stats.seed_aware_interval` (one seed shared: conditional on those
fine-tunes). A remedy's user asks "does it make *my* model more robust?", and a model's base
recipe may already sit above the line (minilm-l6 does on fpb -> tfns).

If a (model, protocol) has runs from several model weights or protocol versions on the same
data, only its most recently created version is used (older versions are superseded, never
pooled).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shiftbench.analysis.compare import load_run_frame
from shiftbench.analysis.stats import seed_aware_interval
from shiftbench.analysis.taskstats import check_metric, headline_metric, load_run_stats, replicate_scores
from shiftbench.core.errors import ShiftbenchError
from shiftbench.registry.protocol import protocol_root
from shiftbench.results.store import LoadedRuns

CLIP = 1e-4
COLUMNS = [
    "model",
    "protocol",
    "pair",
    "target",
    "metric",
    "family",
    "n_seeds",
    "id_mean",
    "ood_mean",
    "predicted_ood",
    "effective_robustness",
    "er_ci_low",
    "er_ci_high",
    "in_fit",
    "extrapolated",
    "base",
    "delta_er",
    "delta_er_ci_low",
    "delta_er_ci_high",
    "delta_er_seeds",
]
# The roots of the protocol families: one line each (a family root's own points are its line's points).
BASELINE_PROTOCOLS = ("standard", "standard-v2")
_GROUP = ["pair", "target", "source_fingerprint", "target_fingerprint"]


@dataclass(frozen=True)
class RobustnessFit:
    """The logit-linear ID -> OOD trend of one (pair, target, protocol family) over ``n_models`` points."""

    pair: str
    target: str
    metric: str
    protocol_hash_set: tuple[str, ...]  # protocol versions of the fitted points
    slope: float
    intercept: float
    n_models: int  # points the line was fitted through
    fitted_on: tuple[str, ...] = ()  # protocol names of those points
    id_range: tuple[float, float] = (float("nan"), float("nan"))  # ID scores the fitted points span
    family: str = BASELINE_PROTOCOLS[0]  # the protocol family whose points it was fitted through


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), CLIP, 1 - CLIP)
    return np.log(p) - np.log1p(-p)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def fit_lines(id_scores: np.ndarray, ood_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares (slope, intercept) of logit(OOD) on logit(ID), row-wise over (..., P)
    points; all ID scores equal gives slope 0 (the line is the mean)."""
    x, y = logit(id_scores), logit(ood_scores)
    xc = x - x.mean(axis=-1, keepdims=True)
    sxx = (xc * xc).sum(axis=-1)
    slope = np.divide((xc * y).sum(axis=-1), sxx, out=np.zeros_like(sxx), where=sxx > 1e-12)
    return slope, y.mean(axis=-1) - slope * x.mean(axis=-1)


def residuals(
    id_scores: np.ndarray, ood_scores: np.ndarray, fit: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(slope, intercept, predicted OOD, ER) for points (..., P); the line is fitted through the
    points ``fit`` selects (a boolean mask over P; None: all of them)."""
    id_scores, ood_scores = np.asarray(id_scores), np.asarray(ood_scores)
    chosen = slice(None) if fit is None else np.asarray(fit, dtype=bool)
    slope, intercept = fit_lines(id_scores[..., chosen], ood_scores[..., chosen])
    predicted = sigmoid(slope[..., None] * logit(id_scores) + intercept[..., None])
    return slope, intercept, predicted, ood_scores - predicted


def _latest_versions(group: pd.DataFrame) -> pd.DataFrame:
    """Per (model, protocol), the runs of its most recent (model weights, protocol) version."""
    keep = []
    for _, rows in group.groupby(["model", "protocol"], sort=True):
        newest = rows.loc[rows["created_at"].idxmax()]
        keep.append(
            rows[(rows["model_sha256"] == newest["model_sha256"]) & (rows["protocol_hash"] == newest["protocol_hash"])]
        )
    return pd.concat(keep).drop_duplicates(["model", "protocol", "seed"], keep="last")


def _seed_resample(member: np.ndarray, n_points: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, runs, points) averaging weights: per replicate, each point's mean over its seeds
    drawn with replacement from its own runs."""
    out = np.zeros((n_boot, len(member), n_points))
    for p in range(n_points):
        runs = np.flatnonzero(member == p)
        draws = rng.integers(0, len(runs), size=(n_boot, len(runs)))
        counts = (
            np.stack([np.bincount(row, minlength=len(runs)) for row in draws])
            if len(runs) > 1
            else np.ones((n_boot, 1))
        )
        out[:, runs, p] = counts / len(runs)
    return out


def protocol_family(protocol: str) -> str:
    """The baseline protocol whose line ``protocol``'s points are judged against: the root of its
    built-in ``base:`` chain when that root is one of :data:`BASELINE_PROTOCOLS` (``lora-v2`` ->
    ``standard-v2``, ``icl-calibrated`` -> ``standard``), else ``standard``. A name that is not a
    built-in protocol (a user protocol file is recorded under its own name) or whose chain ends
    elsewhere is judged against the ``standard`` line, as every point was before there were families."""
    root = protocol_root(protocol)
    return root if root in BASELINE_PROTOCOLS else BASELINE_PROTOCOLS[0]


def effective_robustness(
    results_dir: Path,
    metric: str | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    min_models: int = 3,
    loaded: LoadedRuns | None = None,
    baseline_protocols: tuple[str, ...] | None = BASELINE_PROTOCOLS,
    pairs: tuple[str, ...] | None = None,
) -> tuple[list[RobustnessFit], pd.DataFrame]:
    """Fit the ID -> OOD trend per (pair, target, family) and score each (model, protocol) against it.

    Returns one :class:`RobustnessFit` per fitted (pair, target, data fingerprints, family) and a
    DataFrame with one row per point and columns :data:`COLUMNS`. ``metric``: any metric of the
    task (recomputed from the stored predictions through :mod:`shiftbench.analysis.taskstats`); None: each
    task's headline metric. ``loaded``: the run files already read (all columns), to read them
    once. ``baseline_protocols``: the default (:data:`BASELINE_PROTOCOLS`) fits one line per
    protocol family through its root's points; anything else puts every point in one family,
    ``standard``, as before families, with the line through the points of these protocols (None:
    every point). ``pairs``: only these pairs (None: all).
    """
    if n_boot < 2:
        raise ShiftbenchError(f"n_boot must be >= 2, got {n_boot}")
    if min_models < 2:
        raise ShiftbenchError(f"min_models must be >= 2 (a line needs two points), got {min_models}")
    results_dir = Path(results_dir)
    frame, _ = load_run_frame(results_dir, loaded=loaded)
    frame = frame[frame["labelled"]]  # an unlabelled target has no OOD score to fit a line through
    if pairs is not None:
        frame = frame[frame["pair"].isin(list(pairs))]
    by_family = baseline_protocols == BASELINE_PROTOCOLS
    families = {p: protocol_family(p) if by_family else BASELINE_PROTOCOLS[0] for p in set(frame["protocol"])}
    fits: list[RobustnessFit] = []
    rows: list[dict] = []
    for (pair, target, _, _), group in frame.groupby(_GROUP, sort=True):
        latest = _latest_versions(group)
        task, tags = str(latest["task"].iloc[0]), tuple(latest["label_space"].iloc[0])
        name = metric or headline_metric(task)
        check_metric(name, task, tags, f"pair {pair}")
        family_of = latest["protocol"].map(families)
        for family in BASELINE_PROTOCOLS:
            # Each family on its own, exactly as a results dir with only its runs would be: adding
            # the runs of another family changes no number of this one (bootstrap draws included).
            runs = latest[family_of == family].sort_values(["model", "protocol", "seed"]).reset_index(drop=True)
            fitted = _fit_family(
                results_dir, runs, pair, target, family, task, tags, name, n_boot, seed, min_models, baseline_protocols
            )
            if fitted is not None:
                fits.append(fitted[0])
                rows += fitted[1]
    return fits, pd.DataFrame(rows, columns=COLUMNS)


def _fit_family(
    results_dir: Path,
    runs: pd.DataFrame,
    pair: str,
    target: str,
    family: str,
    task: str,
    tags: tuple[str, ...],
    name: str,
    n_boot: int,
    seed: int,
    min_models: int,
    baseline_protocols: tuple[str, ...] | None,
) -> tuple[RobustnessFit, list[dict]] | None:
    """The line of one family of one (pair, target, data fingerprints) and its points' rows; None
    when the family has fewer than ``min_models`` points."""
    points = list(dict.fromkeys(zip(runs["model"], runs["protocol"])))
    if len(points) < min_models:
        return None
    in_fit = np.array([baseline_protocols is None or protocol in baseline_protocols for _, protocol in points])
    if in_fit.sum() < min_models:  # not enough baseline points: the trend of every point of the family
        in_fit[:] = True
    stats = [load_run_stats(results_dir, rid, task, tags) for rid in runs["run_id"]]
    for r in stats[1:]:
        for split in ("id", "ood"):
            if not np.array_equal(r.labelled(split).labels, stats[0].labelled(split).labels):
                raise ShiftbenchError(
                    f"{pair}/{target}: run {r.run_id} has different {split.upper()} test labels than run "
                    f"{stats[0].run_id} despite equal data fingerprints"
                )
    member = np.array([points.index(key) for key in zip(runs["model"], runs["protocol"])])
    n_seeds = np.bincount(member, minlength=len(points))
    avg = np.zeros((len(runs), len(points)))  # run j contributes 1/n_seeds to its point's mean
    avg[np.arange(len(runs)), member] = 1.0 / n_seeds[member]
    ss_id, ss_ood, ss_seeds = np.random.SeedSequence(seed).spawn(3)  # independent ID and OOD resamples
    run_pts, run_reps = {}, {}
    for split, ss in (("id", ss_id), ("ood", ss_ood)):
        blocks = [r.labelled(split).values for r in stats]
        run_pts[split], run_reps[split] = replicate_scores(blocks, task, name, tags, n_boot, np.random.default_rng(ss))
    scores = {split: run_pts[split] @ avg for split in ("id", "ood")}
    seed_w = _seed_resample(member, len(points), n_boot, np.random.default_rng(ss_seeds))
    boot = {split: np.einsum("rj,rjp->rp", run_reps[split], seed_w) for split in ("id", "ood")}
    slope, intercept, predicted, er = residuals(scores["id"], scores["ood"], in_fit)
    er_boot = residuals(boot["id"], boot["ood"], in_fit)[3]
    low, high = np.quantile(er_boot, [0.025, 0.975], axis=0)
    id_lo, id_hi = float(scores["id"][in_fit].min()), float(scores["id"][in_fit].max())
    # run-level residuals (seeds fixed) for the paired delta ER of a remedy vs its model's runs under the family root
    er_run = run_pts["ood"] - sigmoid(slope * logit(run_pts["id"]) + intercept)
    fit_r = residuals(run_reps["id"] @ avg, run_reps["ood"] @ avg, in_fit)
    er_run_reps = run_reps["ood"] - sigmoid(fit_r[0][:, None] * logit(run_reps["id"]) + fit_r[1][:, None])
    fitted_hashes = runs.loc[in_fit[member], "protocol_hash"]
    fit = RobustnessFit(
        pair,
        target,
        name,
        tuple(sorted(set(fitted_hashes))),
        float(slope),
        float(intercept),
        int(in_fit.sum()),
        tuple(sorted({protocol for (_, protocol), f in zip(points, in_fit) if f})),
        (id_lo, id_hi),
        family,
    )
    rows = []
    for i, (model, protocol) in enumerate(points):
        delta: dict[str, Any] = {
            "base": None,
            "delta_er": np.nan,
            "delta_er_ci_low": np.nan,
            "delta_er_ci_high": np.nan,
            "delta_er_seeds": 0,
        }
        base = (model, family)
        if not in_fit[i] and base in points:
            mine = runs.index[member == i]
            theirs = runs.index[member == points.index(base)]
            seeds = sorted(set(runs.loc[mine, "seed"]) & set(runs.loc[theirs, "seed"]))
            if seeds:
                ja = [int(runs.index[(member == points.index(base)) & (runs["seed"] == s)][0]) for s in seeds]
                jb = [int(runs.index[(member == i) & (runs["seed"] == s)][0]) for s in seeds]
                ci = seed_aware_interval(er_run[jb] - er_run[ja], er_run_reps[:, jb] - er_run_reps[:, ja])
                delta = {
                    "base": f"{model}@{base[1]}",
                    "delta_er": ci.estimate,
                    "delta_er_ci_low": ci.low,
                    "delta_er_ci_high": ci.high,
                    "delta_er_seeds": len(seeds),
                }
        rows.append(
            {
                "model": model,
                "protocol": protocol,
                "pair": pair,
                "target": target,
                "metric": name,
                "family": family,
                "n_seeds": int(n_seeds[i]),
                "id_mean": float(scores["id"][i]),
                "ood_mean": float(scores["ood"][i]),
                "predicted_ood": float(predicted[i]),
                "effective_robustness": float(er[i]),
                "er_ci_low": float(low[i]),
                "er_ci_high": float(high[i]),
                "in_fit": bool(in_fit[i]),
                "extrapolated": bool(scores["id"][i] < id_lo or scores["id"][i] > id_hi),
                **delta,
            }
        )
    return fit, rows


__all__ = [
    "BASELINE_PROTOCOLS",
    "COLUMNS",
    "RobustnessFit",
    "effective_robustness",
    "fit_lines",
    "logit",
    "protocol_family",
    "residuals",
    "sigmoid",
]
