"""Label-free estimates of a model's accuracy on an unlabelled target (numpy/scipy only).

Inputs are per-example class probabilities: an **in-domain held-out** split with labels
(:class:`HeldOut`) and the **target** split without them (:class:`Target`). Nothing here ever
reads a target label. The estimators:

``avg_conf``  mean max-probability on the target after temperature scaling (Guo et al. 2017)
``doc``       difference of confidences (Guillory et al. 2021): held-out accuracy minus the drop
              in mean max-probability from held-out to target (temperature-scaled)
``atc_mc``    average thresholded confidence (Garg et al. 2022): the score threshold at which the
``atc_ne``    held-out fraction above it equals held-out accuracy, applied to the target; scores
              are the max-probability (MC) or the negative entropy (NE), temperature-scaled
``bbse``      black-box shift estimation (Lipton et al. 2018): target label priors from the
              held-out confusion matrix and the target's predicted-label distribution, and the
              accuracy (and macro-F1) those priors imply if p(x | y) did not change
``aline_s``   agreement-on-the-line (Baek et al. 2022), across >= 3 models scored on the same
              examples: the line probit(target agreement) = a * probit(held-out agreement) + b
              fitted over model pairs, applied to each model's held-out accuracy
``aline_d``   its refinement (ALine-D): with the slope a, the bias cancels between the accuracy
              and agreement lines, leaving one linear equation per model pair in the models'
              target accuracy probits, solved by least squares

Temperature scaling is fitted on the held-out split (NLL, one scalar T) before every
confidence-based estimate; stored probabilities are turned back into logits by ``log`` (a
per-row constant does not change a softmax). Intervals are percentile bootstraps that resample
target examples and, where the estimator uses them, held-out examples (temperature, threshold
and confusion matrix are refitted in every replicate).

Which held-out split: runs since results schema 3 store the selected model's source-validation
predictions (split ``source_validation``) and use them; the committed runs stored only
``id_test`` and ``ood_test``, so for them the source **test** split is the labelled held-out
stand-in (source data only: no target label enters an estimate).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

from shiftbench.core.errors import ShiftbenchError

N_BOOT = 200  # bootstrap replicates: percentile ends of a 95 % interval are stable to ~0.005 at this size
ALPHA = 0.05
_PROBIT_EPS = 1e-4  # agreement/accuracy are clipped to [eps, 1 - eps] before the probit (probit(1) = inf)
PER_RUN_METHODS = ("avg_conf", "doc", "atc_mc", "atc_ne", "bbse")
GROUP_METHODS = ("aline_s", "aline_d")
METHODS = PER_RUN_METHODS + GROUP_METHODS


@dataclass(frozen=True)
class HeldOut:
    """In-domain labelled predictions: ``labels`` (n,) class ids, ``probs`` (n, k)."""

    labels: np.ndarray
    probs: np.ndarray

    def __post_init__(self) -> None:
        _check_probs(self.probs, "held-out probs")
        if self.labels.shape != (self.probs.shape[0],):
            raise ShiftbenchError(f"held-out labels: shape {self.labels.shape}, expected ({self.probs.shape[0]},)")
        if self.labels.size and (self.labels.min() < 0 or self.labels.max() >= self.probs.shape[1]):
            raise ShiftbenchError(
                f"held-out labels: class ids must lie in [0, {self.probs.shape[1]}), got {self.labels.min()}..{self.labels.max()}"
            )

    @property
    def preds(self) -> np.ndarray:
        return self.probs.argmax(axis=1)

    @property
    def accuracy(self) -> float:
        return float((self.preds == self.labels).mean())


@dataclass(frozen=True)
class Target:
    """Unlabelled target predictions: ``probs`` (m, k)."""

    probs: np.ndarray

    def __post_init__(self) -> None:
        _check_probs(self.probs, "target probs")

    @property
    def preds(self) -> np.ndarray:
        return self.probs.argmax(axis=1)


@dataclass(frozen=True)
class Estimate:
    """One label-free estimate of ``metric`` on the target, with a percentile-bootstrap interval."""

    method: str
    metric: str
    value: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.value:.4f} [{self.low:.4f}, {self.high:.4f}]"


@dataclass(frozen=True)
class RunEstimates:
    """Every per-run estimate of one model on one target, and what the verdict reads."""

    estimates: tuple[Estimate, ...]
    temperature: float  # fitted on the held-out split
    held_out_accuracy: float
    source_priors: tuple[float, ...]  # held-out label distribution
    target_priors: tuple[float, ...]  # BBSE estimate of the target's label distribution
    source_pred_dist: tuple[float, ...]  # held-out predicted-label distribution
    target_pred_dist: tuple[float, ...]  # target predicted-label distribution

    def get(self, method: str, metric: str = "accuracy") -> Estimate | None:
        return next((e for e in self.estimates if e.method == method and e.metric == metric), None)


def _check_probs(probs: np.ndarray, what: str) -> None:
    if probs.ndim != 2 or probs.shape[0] == 0 or probs.shape[1] < 2:
        raise ShiftbenchError(f"{what}: expected an (examples, classes >= 2) array, got shape {probs.shape}")
    if not np.isfinite(probs).all() or (probs < 0).any():
        raise ShiftbenchError(f"{what}: probabilities must be finite and non-negative")


# --------------------------------------------------------------------------- building blocks


def logits_of(probs: np.ndarray) -> np.ndarray:
    """Logits up to a per-row constant (stored probabilities are rounded to 1e-6; 0 -> log 1e-12)."""
    return np.log(np.clip(probs, 1e-12, None))


def _logsumexp(z: np.ndarray) -> np.ndarray:
    """Row-wise log-sum-exp (plain numpy: scipy's generic version is most of a bootstrap's time)."""
    m = z.max(axis=1)
    return m + np.log(np.exp(z - m[:, None]).sum(axis=1))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T > 0 minimising the held-out NLL of softmax(logits / T), searched over log T in [-4, 4]
    (to 1e-3 in log T: a 0.1 % change of T moves no estimate by more than ~1e-4)."""
    # The NLL of a row-shifted logit matrix is the same; shifting by the row max keeps exp finite.
    z0 = logits - logits.max(axis=1, keepdims=True)
    picked = z0[np.arange(len(labels)), labels]

    def nll(log_t: float) -> float:
        t = np.exp(log_t)
        return float((_logsumexp(z0 / t) - picked / t).mean())

    res = optimize.minimize_scalar(nll, bounds=(-4.0, 4.0), method="bounded", options={"xatol": 1e-3})
    return float(np.exp(res.x))


def softmax_t(logits: np.ndarray, temperature: float) -> np.ndarray:
    z = logits / temperature
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def max_confidence(probs: np.ndarray) -> np.ndarray:
    return probs.max(axis=1)


def negative_entropy(probs: np.ndarray) -> np.ndarray:
    return (probs * np.log(np.clip(probs, 1e-20, None))).sum(axis=1)


def atc_threshold(scores: np.ndarray, correct: np.ndarray) -> float:
    """The threshold t with #(held-out scores > t) = #correct (Garg et al.'s balance of
    incorrect-above and correct-below, in closed form): the (n_wrong)-th smallest score."""
    n_wrong = int(len(correct) - np.count_nonzero(correct))
    if n_wrong == 0:
        return -np.inf
    return float(np.partition(scores, n_wrong - 1)[n_wrong - 1])


def atc_estimate(held_scores: np.ndarray, correct: np.ndarray, target_scores: np.ndarray) -> float:
    return float((target_scores > atc_threshold(held_scores, correct)).mean())


def confusion_joint(labels: np.ndarray, preds: np.ndarray, k: int) -> np.ndarray:
    """C[i, j] = P(pred = i, y = j) on the held-out split."""
    return np.bincount(preds * k + labels, minlength=k * k).reshape(k, k) / len(labels)


@dataclass(frozen=True)
class LabelShift:
    """BBSE's answer: target label priors and the accuracy / macro-F1 they imply."""

    priors: np.ndarray  # (k,) estimated target label distribution
    accuracy: float
    macro_f1: float


def bbse(labels: np.ndarray, preds: np.ndarray, target_preds: np.ndarray, k: int) -> LabelShift:
    """Black-box shift estimation. Solve C w = mu_t (C: held-out joint confusion, mu_t: target
    predicted-label distribution) for the weights w = q(y) / p(y) by least squares, clip them to
    >= 0 and renormalise q. Under label shift the target confusion is P(pred | y) q(y), which
    gives the accuracy and macro-F1 (F1 over classes with positive estimated mass)."""
    joint = confusion_joint(labels, preds, k)
    p_y = joint.sum(axis=0)
    mu_t = np.bincount(target_preds, minlength=k) / len(target_preds)
    w = np.clip(np.linalg.lstsq(joint, mu_t, rcond=None)[0], 0.0, None)
    q = w * p_y
    q = q / q.sum() if q.sum() > 0 else p_y
    with np.errstate(invalid="ignore", divide="ignore"):
        cond = np.where(p_y > 0, joint / p_y, 0.0)  # P(pred = i | y = j)
    m = cond * q  # estimated target joint, M[i, j] = P_t(pred = i, y = j)
    tp = np.diag(m)
    denom = 2 * tp + (m.sum(axis=1) - tp) + (m.sum(axis=0) - tp)
    present = denom > 0
    f1 = float(np.mean(2 * tp[present] / denom[present])) if present.any() else 0.0
    return LabelShift(q, float(tp.sum()), f1)


def total_variation(p: Sequence[float], q: Sequence[float]) -> float:
    """Total-variation distance between two distributions on the same classes, in [0, 1]."""
    return float(0.5 * np.abs(np.asarray(p, dtype=float) - np.asarray(q, dtype=float)).sum())


def _percentile(values: np.ndarray, alpha: float = ALPHA) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if not values.size:
        return float("nan"), float("nan")
    lo, hi = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


# --------------------------------------------------------------------------- per-run estimators


def _point(held: HeldOut, logits_h: np.ndarray, logits_t: np.ndarray, target_preds: np.ndarray, k: int) -> dict:
    """Every per-run estimate on one (possibly resampled) held-out and target split."""
    t = fit_temperature(logits_h, held.labels)
    ph, pt = softmax_t(logits_h, t), softmax_t(logits_t, t)
    preds_h = held.preds  # temperature never changes an argmax
    correct = preds_h == held.labels
    acc = float(correct.mean())
    conf_h, conf_t = max_confidence(ph), max_confidence(pt)
    shift = bbse(held.labels, preds_h, target_preds, k)
    return {
        ("avg_conf", "accuracy"): float(conf_t.mean()),
        ("doc", "accuracy"): acc - (float(conf_h.mean()) - float(conf_t.mean())),
        ("atc_mc", "accuracy"): atc_estimate(conf_h, correct, conf_t),
        ("atc_ne", "accuracy"): atc_estimate(negative_entropy(ph), correct, negative_entropy(pt)),
        ("bbse", "accuracy"): shift.accuracy,
        ("bbse", "macro_f1"): shift.macro_f1,
        "_temperature": t,
        "_accuracy": acc,
        "_priors": shift.priors,
    }


def estimate_run(held: HeldOut, target: Target, n_boot: int = N_BOOT, seed: int = 0) -> RunEstimates:
    """Every per-run estimator on one model's held-out and target predictions; intervals from
    ``n_boot`` replicates resampling held-out and target examples independently."""
    k = held.probs.shape[1]
    if target.probs.shape[1] != k:
        raise ShiftbenchError(f"target probs: {target.probs.shape[1]} classes, held-out probs have {k}")
    if n_boot < 0:
        raise ShiftbenchError(f"n_boot must be >= 0, got {n_boot}")
    logits_h, logits_t = logits_of(held.probs), logits_of(target.probs)
    target_preds = target.preds
    point = _point(held, logits_h, logits_t, target_preds, k)
    keys = [key for key in point if isinstance(key, tuple)]
    reps = np.full((n_boot, len(keys)), np.nan)
    rng = np.random.default_rng(seed)
    n, m = len(held.labels), len(target_preds)
    for b in range(n_boot):
        ih, it = rng.integers(0, n, n), rng.integers(0, m, m)
        sub = _point(HeldOut(held.labels[ih], held.probs[ih]), logits_h[ih], logits_t[it], target_preds[it], k)
        reps[b] = [sub[key] for key in keys]
    estimates = []
    for j, (method, metric) in enumerate(keys):
        lo, hi = _percentile(reps[:, j]) if n_boot else (float("nan"), float("nan"))
        estimates.append(Estimate(method, metric, point[(method, metric)], lo, hi))
    src_priors = np.bincount(held.labels, minlength=k) / n
    return RunEstimates(
        estimates=tuple(estimates),
        temperature=point["_temperature"],
        held_out_accuracy=point["_accuracy"],
        source_priors=tuple(src_priors.tolist()),
        target_priors=tuple(point["_priors"].tolist()),
        source_pred_dist=tuple((np.bincount(held.preds, minlength=k) / n).tolist()),
        target_pred_dist=tuple((np.bincount(target_preds, minlength=k) / m).tolist()),
    )


# --------------------------------------------------------------------------- agreement on the line


def probit(x: np.ndarray, n: int | None = None) -> np.ndarray:
    """Phi^-1 of a rate, clipped away from 0 and 1 (to half an example when ``n`` is given)."""
    eps = max(_PROBIT_EPS, 0.5 / n) if n else _PROBIT_EPS
    return stats.norm.ppf(np.clip(np.asarray(x, dtype=float), eps, 1 - eps))


@dataclass(frozen=True)
class AgreementLine:
    """probit(target agreement) = slope * probit(held-out agreement) + bias over model pairs."""

    slope: float
    bias: float
    r2: float  # of the fit in probit space (Baek et al.: the estimate is only meaningful when high)
    n_models: int
    n_pairs: int


@dataclass(frozen=True)
class AlineResult:
    line: AgreementLine
    aline_s: tuple[Estimate, ...]  # one per model, in input order
    aline_d: tuple[Estimate, ...]


def _pairwise_agreement(preds: np.ndarray) -> np.ndarray:
    """(n_pairs, n_examples) bool: do models i < j predict the same class on each example."""
    i, j = np.triu_indices(preds.shape[0], k=1)
    return preds[i] == preds[j]


def fit_agreement_line(
    held_agreement: np.ndarray, target_agreement: np.ndarray, n_held: int | None = None, n_target: int | None = None
) -> tuple[float, float, float]:
    """(slope, bias, R^2) of the least-squares line probit(target) = slope * probit(held) over
    model pairs' agreement rates (rates clipped to half an example of 0 and 1)."""
    x, y = probit(held_agreement, n_held), probit(target_agreement, n_target)
    if np.ptp(x) == 0:  # every pair agrees equally in domain: no line; slope 1 through the mean shift
        return 1.0, float(np.mean(y - x)), 0.0
    slope, bias = np.polyfit(x, y, 1)
    resid = y - (slope * x + bias)
    ss = float(((y - y.mean()) ** 2).sum())
    return float(slope), float(bias), float(1 - (resid**2).sum() / ss) if ss > 0 else 0.0


def apply_line(slope: float, bias: float, held_accuracy: np.ndarray, n_held: int | None = None) -> np.ndarray:
    """ALine-S: the agreement line applied to held-out accuracies, Phi(slope * probit(acc) + bias)."""
    return stats.norm.cdf(slope * probit(held_accuracy, n_held) + bias)


def _aline_d_design(n_models: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pair indices (i < j) and the (pairs, models) matrix averaging the two models of a pair."""
    i, j = np.triu_indices(n_models, k=1)
    design = np.zeros((len(i), n_models))
    design[np.arange(len(i)), i] = design[np.arange(len(i)), j] = 0.5
    return i, j, design


def _aline_point(held_agree: np.ndarray, target_agree: np.ndarray, held_correct: np.ndarray, n_h: int, n_t: int):
    """(slope, bias, R^2, ALine-S estimates, ALine-D estimates) on one (resampled) set of examples.

    ALine-D: subtracting the agreement line from the accuracy line for models i and j,
    (x_i + x_j) / 2 = probit(target agr_ij) + slope * ((p_i + p_j) / 2 - probit(held agr_ij)),
    with x the target accuracy probits and p the held-out ones; least squares over the pairs
    (>= 3 models give at least as many equations as unknowns, full rank)."""
    held_rate, target_rate = held_agree.mean(axis=1), target_agree.mean(axis=1)
    slope, bias, r2 = fit_agreement_line(held_rate, target_rate, n_h, n_t)
    acc = held_correct.mean(axis=1)
    p = probit(acc, n_h)
    i, j, design = _aline_d_design(len(acc))
    rhs = probit(target_rate, n_t) + slope * (0.5 * (p[i] + p[j]) - probit(held_rate, n_h))
    x = np.linalg.lstsq(design, rhs, rcond=None)[0]
    return slope, bias, r2, apply_line(slope, bias, acc, n_h), stats.norm.cdf(x)


def aline(
    held_labels: np.ndarray, held_preds: np.ndarray, target_preds: np.ndarray, n_boot: int = N_BOOT, seed: int = 0
) -> AlineResult:
    """ALine-S and ALine-D over ``held_preds`` (models, n) and ``target_preds`` (models, m), the
    same examples for every model. Held-out and target examples are resampled (jointly across
    models, which keeps the agreements paired) for the intervals."""
    held_preds, target_preds = np.asarray(held_preds), np.asarray(target_preds)
    n_models = held_preds.shape[0]
    if n_models < 3:
        raise ShiftbenchError(
            f"agreement-on-the-line needs at least 3 models scored on the same examples, got {n_models}"
        )
    if target_preds.shape[0] != n_models or held_preds.shape[1] != len(held_labels):
        raise ShiftbenchError(
            f"aline: held-out preds {held_preds.shape}, target preds {target_preds.shape}, labels {len(held_labels)}"
        )
    ha, ta = _pairwise_agreement(held_preds), _pairwise_agreement(target_preds)
    hc = held_preds == held_labels[None, :]
    n, m = held_preds.shape[1], target_preds.shape[1]
    slope, bias, r2, point_s, point_d = _aline_point(ha, ta, hc, n, m)
    rng = np.random.default_rng(seed)
    reps = np.empty((2, n_boot, n_models))
    for b in range(n_boot):
        ih, it = rng.integers(0, n, n), rng.integers(0, m, m)
        reps[:, b] = _aline_point(ha[:, ih], ta[:, it], hc[:, ih], n, m)[3:]
    out = []
    for method, point, rep in (("aline_s", point_s, reps[0]), ("aline_d", point_d, reps[1])):
        ends = [_percentile(rep[:, i]) if n_boot else (float("nan"), float("nan")) for i in range(n_models)]
        out.append(tuple(Estimate(method, "accuracy", float(point[i]), *ends[i]) for i in range(n_models)))
    return AlineResult(AgreementLine(slope, bias, r2, n_models, len(ha)), *out)


__all__ = [
    "AgreementLine",
    "AlineResult",
    "Estimate",
    "HeldOut",
    "LabelShift",
    "METHODS",
    "RunEstimates",
    "Target",
    "aline",
    "apply_line",
    "atc_threshold",
    "bbse",
    "estimate_run",
    "fit_agreement_line",
    "fit_temperature",
    "total_variation",
]
