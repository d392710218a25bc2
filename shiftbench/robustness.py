"""Effective robustness (Taori et al., 2020): OOD score beyond what the ID score predicts.

Across many models, OOD scores usually track ID scores along a line once both are put on a
logit scale. A model that gains OOD only because it is better ID is not *more robust*; one
that sits above the line is. For every (pair, target) -- and only among runs scored on the
same source and target data (equal fingerprints) -- this module:

1. takes one point per (model, protocol): the mean over seeds of its ID and OOD score;
2. fits ``logit(OOD) = a * logit(ID) + b`` by least squares through the *baseline* points,
   those of the ``standard`` protocol (plain fine-tunes; scores clipped to [1e-4, 1 - 1e-4]
   first, so a perfect or zero score stays finite). As in Taori et al., the trend is that of
   standard training: a remedy (``augment``, ``lora``, ...) is judged against it and does
   not pull the line towards itself. With fewer than ``min_models`` baseline points (a board
   of other protocols) the line goes through every point instead; ``RobustnessFit.fitted_on``
   names the protocols it was fitted on;
3. reports every point's effective robustness ``ER = OOD - sigmoid(a * logit(ID) + b)``, in
   score units (e.g. accuracy points), remedies included (``in_fit`` says which points made
   the line).

How to read it: ER > 0 means the model is more robust than the trend of the models around it
predicts at the same ID score (it keeps more of its ID score out of domain); ER < 0 means
less robust; ER near 0 means its OOD score is what its ID score alone predicts. The fit goes
through every point, the one being judged included, so with few models an outlier also
pulls the line towards itself: read ER relative to the other models of the same fit.

The CI of ER comes from a bootstrap over test examples: each replicate resamples the ID and
OOD test examples (independently of each other, but the same resample for every model and
seed), recomputes every point's scores from the stored predictions, refits the line and
recomputes every residual; the interval is the 95 % percentile one. It therefore covers test-set
noise and the uncertainty of the fitted line, not the choice of models.

``baseline_protocols=None`` fits through every point instead (all protocols alike).

If a (model, protocol) has runs from several model weights or protocol versions on the same
data, only its most recently created version is used (older versions are superseded, never
pooled). A (pair, target) with fewer than ``min_models`` points is left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from shiftbench.compare import check_metric, load_predictions, load_run_frame
from shiftbench.errors import ShiftbenchError
from shiftbench.results import LoadedRuns
from shiftbench.stats import COUNT_METRICS, confusion_codes, full_counts, resampled_counts

CLIP = 1e-4
COLUMNS = ["model", "protocol", "pair", "target", "metric", "n_seeds", "id_mean", "ood_mean",
           "predicted_ood", "effective_robustness", "er_ci_low", "er_ci_high", "in_fit"]  # fmt: skip
BASELINE_PROTOCOLS = ("standard",)
_GROUP = ["pair", "target", "source_fingerprint", "target_fingerprint"]


@dataclass(frozen=True)
class RobustnessFit:
    """The logit-linear ID -> OOD trend of one (pair, target) over ``n_models`` points."""

    pair: str
    target: str
    metric: str
    protocol_hash_set: tuple[str, ...]  # protocol versions of the fitted points
    slope: float
    intercept: float
    n_models: int  # points the line was fitted through
    fitted_on: tuple[str, ...] = ()  # protocol names of those points


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
        keep.append(rows[(rows["model_sha256"] == newest["model_sha256"]) & (rows["protocol_hash"] == newest["protocol_hash"])])
    return pd.concat(keep).drop_duplicates(["model", "protocol", "seed"], keep="last")


def _split_codes(results_dir: Path, runs: pd.DataFrame, where: str) -> tuple[dict[str, np.ndarray], int]:
    """Confusion codes (n, n_runs) of the ID and OOD test splits, and the number of labels K;
    all runs must share their test examples."""
    preds = [load_predictions(results_dir, rid) for rid in runs["run_id"]]
    ids = [int(a.max()) for p in preds for a in (p.id_labels, p.id_preds, p.ood_labels, p.ood_preds)]
    k = max(max(len(ls) for ls in runs["label_space"]), 1 + max(ids))
    out = {}
    for split in ("id", "ood"):
        labels = [getattr(p, f"{split}_labels") for p in preds]
        for p, y in zip(preds, labels):
            if not np.array_equal(y, labels[0]):
                raise ShiftbenchError(
                    f"{where}: run {p.run_id} has different {split.upper()} test labels than run {preds[0].run_id} "
                    "despite equal data fingerprints"
                )
        out[split] = np.stack([confusion_codes(y, getattr(p, f"{split}_preds"), k) for p, y in zip(preds, labels)], axis=1)
    return out, k


def effective_robustness(
    results_dir: Path, metric: str = "accuracy", n_boot: int = 1000, seed: int = 0, min_models: int = 3,
    loaded: LoadedRuns | None = None, baseline_protocols: tuple[str, ...] | None = BASELINE_PROTOCOLS,
) -> tuple[list[RobustnessFit], pd.DataFrame]:
    """Fit the ID -> OOD trend per (pair, target) and score each (model, protocol) against it.

    Returns one :class:`RobustnessFit` per fitted (pair, target, data fingerprints) and a
    DataFrame with one row per point and columns :data:`COLUMNS`. ``metric``: "accuracy" or
    "macro_f1" (recomputed from the stored predictions so it can be bootstrapped). ``loaded``:
    the run files already read (all columns), to read them once. ``baseline_protocols``: the
    protocols whose points make the line (None: every point).
    """
    check_metric(metric)
    if n_boot < 1:
        raise ShiftbenchError(f"n_boot must be >= 1, got {n_boot}")
    if min_models < 2:
        raise ShiftbenchError(f"min_models must be >= 2 (a line needs two points), got {min_models}")
    results_dir = Path(results_dir)
    fn = COUNT_METRICS[metric]
    frame, _ = load_run_frame(results_dir, metric, loaded)
    fits: list[RobustnessFit] = []
    rows: list[dict] = []
    for (pair, target, _, _), group in frame.groupby(_GROUP, sort=True):
        runs = _latest_versions(group).sort_values(["model", "protocol", "seed"]).reset_index(drop=True)
        points = list(dict.fromkeys(zip(runs["model"], runs["protocol"])))
        if len(points) < min_models:
            continue
        in_fit = np.array([baseline_protocols is None or protocol in baseline_protocols for _, protocol in points])
        if in_fit.sum() < min_models:  # not enough baseline points: the trend of every point
            in_fit[:] = True
        codes, k = _split_codes(results_dir, runs, f"{pair}/{target}")
        # averaging matrix: run j contributes 1/n_seeds to its point's mean
        member = np.array([points.index(key) for key in zip(runs["model"], runs["protocol"])])
        n_seeds = np.bincount(member, minlength=len(points))
        avg = np.zeros((len(runs), len(points)))
        avg[np.arange(len(runs)), member] = 1.0 / n_seeds[member]
        ss_id, ss_ood = np.random.SeedSequence(seed).spawn(2)  # independent ID and OOD resamples
        scores, boot = {}, {}
        for split, ss in (("id", ss_id), ("ood", ss_ood)):
            full = full_counts(codes[split], k * k).reshape(len(runs), k, k)
            scores[split] = fn(full) @ avg  # (P,)
            resampled = resampled_counts(codes[split], k * k, n_boot, np.random.default_rng(ss))
            boot[split] = fn(resampled.reshape(n_boot, len(runs), k, k)) @ avg  # (R, P)
        slope, intercept, predicted, er = residuals(scores["id"], scores["ood"], in_fit)
        er_boot = residuals(boot["id"], boot["ood"], in_fit)[3]
        low, high = np.quantile(er_boot, [0.025, 0.975], axis=0)
        fitted_hashes = runs.loc[in_fit[member], "protocol_hash"]
        fits.append(RobustnessFit(pair, target, metric, tuple(sorted(set(fitted_hashes))),
                                  float(slope), float(intercept), int(in_fit.sum()),
                                  tuple(sorted({protocol for (_, protocol), f in zip(points, in_fit) if f}))))  # fmt: skip
        for i, (model, protocol) in enumerate(points):
            rows.append({
                "model": model, "protocol": protocol, "pair": pair, "target": target, "metric": metric,
                "n_seeds": int(n_seeds[i]), "id_mean": float(scores["id"][i]), "ood_mean": float(scores["ood"][i]),
                "predicted_ood": float(predicted[i]), "effective_robustness": float(er[i]),
                "er_ci_low": float(low[i]), "er_ci_high": float(high[i]), "in_fit": bool(in_fit[i]),
            })  # fmt: skip
    return fits, pd.DataFrame(rows, columns=COLUMNS)


__all__ = ["BASELINE_PROTOCOLS", "COLUMNS", "RobustnessFit", "effective_robustness", "fit_lines", "logit", "residuals", "sigmoid"]
