"""Shared pieces of the per-unit sufficient statistics every task kind builds on: the
calibration block and the helpers that turn summed statistics into scores.

Calibration block (per unit, summed over its words for a word-level kind): per confidence bin b
(the runner's binning, :func:`shiftbench.tasks.metrics.expected_calibration_error`: B = 15
equal-width bins ``(k/B, (k+1)/B]``, confidence 0 in the first) the count, the number correct
minus the sum of confidences (what ``ece`` reads, so it resamples 2B columns), and the sum of
confidences, then the Brier sum ``sum_c (p_c - 1[y = c])^2``. Confidence is the largest stored
probability, "correct" means the stored prediction equals the label.

``ece`` = sum_b |correct_b - confidence_sum_b| / N (top-label, L1, Guo et al. 2017).
``ece_debiased`` is the debiased top-label *L2* calibration error of Kumar, Liang and Ma (2019,
"Verified uncertainty calibration"), on the same 15 equal-width bins:
sqrt(max(0, sum_b (n_b / N) [(acc_b - conf_b)^2 - acc_b (1 - acc_b) / (n_b - 1)])), bins with
n_b < 2 contributing 0. ``brier`` is the multi-class Brier score (sum over classes, mean over units).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

N_BINS = 15  # the runner's ECE binning (metrics.expected_calibration_error's default)
CAL_WIDTH = 3 * N_BINS + 1  # (count, correct - confidence, confidence sum) per bin + Brier sum
LOWER_IS_BETTER = frozenset({"ece", "ece_debiased", "brier"})

SumMetric = Callable[[np.ndarray], np.ndarray]  # summed unit statistics (..., D) -> scores (...)


@dataclass(frozen=True)
class MetricDoc:
    """What a metric card (``data_cards/metrics/``, ``shiftbench card``) says of one metric of one
    task kind; each kind declares its own next to the code that computes them
    (:meth:`shiftbench.tasks.base.TaskKind.metric_docs`). ``name`` as recorded, or ``f1_<TYPE>``
    for the per-type family."""

    name: str
    definition: str  # what is computed from what, in one paragraph (Markdown)
    higher_is_better: bool = True
    value_range: str = "[0, 1]"
    reference: str = ""


@dataclass(frozen=True)
class MetricExample:
    """A tiny labelled test set a card's runnable example scores: the arguments of
    :meth:`shiftbench.tasks.base.TaskKind.unit_stats`, as plain lists (they are printed in the card)."""

    label_space: tuple[str, ...]
    labels: list[int]
    preds: list[int]
    probs: list[list[float]]
    lengths: list[int] | None
    note: str  # what the example is, in words

    def args(self) -> tuple[Any, ...]:
        return self.labels, self.preds, self.probs, self.lengths, self.label_space


def calibration_docs(ece_over: str, others_over: str) -> tuple[MetricDoc, MetricDoc, MetricDoc]:
    """The docs of ``ece`` (computed over ``ece_over``), ``ece_debiased`` and ``brier`` (over
    ``others_over``), e.g. "examples", or "every word" and "entity words" (see the module docstring)."""
    bins = f"{N_BINS} equal-width confidence bins ``(k/{N_BINS}, (k+1)/{N_BINS}]`` (confidence 0 in the first)"
    return (
        MetricDoc(
            "ece",
            f"Top-label expected calibration error over {ece_over}: each is put in one of {bins} by its "
            "confidence (its largest stored probability), and ECE = sum over bins of |correct - summed confidence| / N, "
            "where *correct* counts the predictions equal to the label. 0 means the confidence matches the accuracy "
            "in every bin. It is biased upwards on small test sets (see `ece_debiased`).",
            higher_is_better=False,
            reference="Guo, Pleiss, Sun and Weinberger (2017), On Calibration of Modern Neural Networks",
        ),
        MetricDoc(
            "ece_debiased",
            f"Debiased top-label *L2* calibration error over {others_over}, on the same {N_BINS} bins: "
            "sqrt(max(0, sum_b (n_b / N) [(acc_b - conf_b)^2 - acc_b (1 - acc_b) / (n_b - 1)])), bins with fewer "
            "than 2 members contributing 0. Subtracting each bin's binomial variance removes the bias that makes "
            "plain ECE grow as the test set shrinks, so values from test sets of different sizes compare.",
            higher_is_better=False,
            reference="Kumar, Liang and Ma (2019), Verified Uncertainty Calibration",
        ),
        MetricDoc(
            "brier",
            f"Multi-class Brier score over {others_over}: sum over classes of (p_c - 1[y = c])^2, averaged; "
            "0 for a confident correct prediction, 2 for a confident wrong one. Unlike ECE it also rewards "
            "sharpness (confident, correct predictions).",
            higher_is_better=False,
            value_range="[0, 2]",
            reference="Brier (1950), Verification of Forecasts Expressed in Terms of Probability",
        ),
    )


def cal_columns(metric: str, start: int) -> np.ndarray:
    """The columns of a calibration block starting at ``start`` that ``metric`` reads."""
    if metric == "ece":
        return np.arange(start, start + 2 * N_BINS)
    if metric == "brier":
        return np.r_[np.arange(start, start + N_BINS), start + 3 * N_BINS]
    return np.arange(start, start + CAL_WIDTH)


def _bins(confidence: np.ndarray) -> np.ndarray:
    """The runner's bin index of each confidence (see metrics.expected_calibration_error)."""
    edges = np.arange(N_BINS + 1) / N_BINS
    return np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, N_BINS - 1)


def calibration_stats(
    probs: np.ndarray,
    labels: np.ndarray,
    preds: np.ndarray,
    group: np.ndarray,
    n_groups: int,
    keep: np.ndarray | None = None,
) -> np.ndarray:
    """(n_groups, 3B + 1) calibration sums of the rows of ``probs`` (N, C), summed per unit
    (``group``: unit index of each row); rows where ``keep`` is False contribute nothing."""
    probs = np.asarray(probs, dtype=np.float64)
    confidence = probs.max(axis=1) if probs.shape[1] else np.zeros(len(probs))
    correct = (preds == labels).astype(np.float64)
    onehot_err = probs.copy()
    onehot_err[np.arange(len(labels)), labels] -= 1.0
    brier = (onehot_err * onehot_err).sum(axis=1)
    w = np.ones(len(labels)) if keep is None else np.asarray(keep, dtype=np.float64)
    cell = group * N_BINS + _bins(confidence)
    size = n_groups * N_BINS
    out = np.zeros((n_groups, CAL_WIDTH))
    for j, values in enumerate((w, w * (correct - confidence), w * confidence)):
        out[:, j * N_BINS : (j + 1) * N_BINS] = np.bincount(cell, weights=values, minlength=size).reshape(
            n_groups, N_BINS
        )
    out[:, -1] = np.bincount(group, weights=w * brier, minlength=n_groups)
    return out


def calibration_metric(metric: str) -> SumMetric:
    """``ece``, ``ece_debiased`` or ``brier`` of summed calibration blocks (..., CAL_WIDTH)."""

    def fn(block: np.ndarray) -> np.ndarray:
        count = block[..., :N_BINS]
        diff = block[..., N_BINS : 2 * N_BINS]  # correct - confidence
        total = count.sum(axis=-1)
        safe_total = np.where(total > 0, total, 1.0)
        if metric == "ece":
            return np.abs(diff).sum(axis=-1) / safe_total
        if metric == "brier":
            return block[..., -1] / safe_total
        # debiased L2 (Kumar et al. 2019): per bin (acc - conf)^2 minus the binomial variance of acc
        conf = block[..., 2 * N_BINS : 3 * N_BINS]
        correct = diff + conf
        ok = count >= 2
        n = np.where(ok, count, 2.0)
        acc, mean_conf = correct / n, conf / n
        per_bin = np.where(ok, (acc - mean_conf) ** 2 - acc * (1.0 - acc) / (n - 1.0), 0.0)
        return np.sqrt(np.maximum((count / safe_total[..., None] * per_bin).sum(axis=-1), 0.0))

    return fn


def divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` with 0 where ``den`` is 0."""
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)
