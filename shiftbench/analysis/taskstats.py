"""The statistics layer: one definition per task kind of what a test *unit* contributes to a
score, and of every score as a function of summed unit statistics.

Why sums: every interval in shiftbench resamples test units (bootstrap) and recomputes scores.
If a score is a function of *sums* of per-unit statistics, a replicate is one multinomial weight
vector times an (n_units, D) matrix (:func:`shiftbench.analysis.stats.resampled_sums`) and every metric
of every run comes out of the same product. ``compare``, ``leaderboard``, ``robustness`` and
``report`` all go through this module, so a metric means the same thing everywhere.

Units and statistics (all float64, so sums of 0/1 counts stay exact far beyond 2^24):

* **text classification** -- unit = example; D = K*K + 3B + 1 for K labels and B = 15 bins:
  the one-hot confusion cell ``label * K + pred`` (row = true, column = predicted), then the
  top-label calibration block (below).
* **token classification** -- unit = sentence; D = 3T + 2 + 2 (3B + 1) for T entity types:
  ``(tp, fp, fn)`` per entity type (seqeval semantics, :func:`shiftbench.tasks.ner_metrics.sentence_stats`),
  correct and total words, the calibration block over *every* word (the recorded ``ece``), and
  the calibration block over *entity words* -- words whose gold or predicted tag is not ``O``.

Calibration block (per unit, summed over its words for NER): per confidence bin b (the runner's
binning, :func:`shiftbench.tasks.metrics.expected_calibration_error`: B = 15 equal-width bins
``(k/B, (k+1)/B]``, confidence 0 in the first) the count, the number correct minus the sum of
confidences (what ``ece`` reads, so it resamples 2B columns), and the sum of confidences, then
the Brier sum ``sum_c (p_c - 1[y = c])^2``. Confidence is the largest stored
probability, "correct" means the stored prediction equals the label.

Metrics (:meth:`TaskKind.metrics`; lower is better for the calibration ones):

* text: ``accuracy``, ``macro_f1``, ``macro_precision``, ``macro_recall`` (averaged over the
  labels present in the gold labels or predictions of the (re)sample, as the runner does),
  ``ece``, ``ece_debiased``, ``brier``;
* NER: ``entity_micro_f1`` (headline), ``entity_micro_precision``, ``entity_micro_recall``,
  ``macro_f1`` (mean *entity* F1 over the label space's types, as the runner records it -- not a
  per-word BIO-tag macro-F1), ``accuracy`` (per word), ``f1_<TYPE>``, ``ece`` (every word, as
  recorded; 86-95 % of the words are ``O``, so it mostly measures the ``O`` words),
  ``ece_debiased`` and ``brier`` (entity words only).

``ece`` = sum_b |correct_b - confidence_sum_b| / N (top-label, L1, Guo et al. 2017).
``ece_debiased`` is the debiased top-label *L2* calibration error of Kumar, Liang and Ma (2019,
"Verified uncertainty calibration"), on the same 15 equal-width bins:
sqrt(max(0, sum_b (n_b / N) [(acc_b - conf_b)^2 - acc_b (1 - acc_b) / (n_b - 1)])), bins with
n_b < 2 contributing 0. Subtracting the binomial variance of acc_b removes the upward bias of the
plug-in estimate, which grows as bins get fewer examples, so an ID/OOD difference is not an
artefact of 484 vs 2,388 examples. ``brier`` is the multi-class Brier score (sum over classes,
mean over units; NER: mean over entity words).

>>> kind = task_kind("text-classification")
>>> s = kind.unit_stats([0, 1, 1], [0, 1, 0], [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], None, ("neg", "pos"))
>>> s.shape
(3, 50)
>>> round(float(kind.metric_fn("accuracy", ("neg", "pos"))(s.sum(axis=0))), 4)
0.6667
>>> kind.metric_fn("entity_micro_f1", ("neg", "pos"))
Traceback (most recent call last):
...
shiftbench.core.errors.ShiftbenchError: metric 'entity_micro_f1' is not defined for text-classification (did you mean 'macro_f1'?)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from shiftbench.core.errors import ShiftbenchError, did_you_mean, one_line
from shiftbench.tasks.ner_metrics import entity_types, ner_sum_metric, per_type_f1_from_counts, sentence_stats
from shiftbench.results.store import predictions_path
from shiftbench.registry.specs import TASKS
from shiftbench.analysis.stats import bootstrap_weights, weighted_sums

N_BINS = 15  # the runner's ECE binning (metrics.expected_calibration_error's default)
CAL_WIDTH = 3 * N_BINS + 1  # (count, correct - confidence, confidence sum) per bin + Brier sum


def _cal_columns(metric: str, start: int) -> np.ndarray:
    """The columns of a calibration block starting at ``start`` that ``metric`` reads."""
    if metric == "ece":
        return np.arange(start, start + 2 * N_BINS)
    if metric == "brier":
        return np.r_[np.arange(start, start + N_BINS), start + 3 * N_BINS]
    return np.arange(start, start + CAL_WIDTH)
TEXT, TOKENS = TASKS  # the registry's task names (shiftbench.registry.specs), one home
LOWER_IS_BETTER = frozenset({"ece", "ece_debiased", "brier"})

SumMetric = Callable[[np.ndarray], np.ndarray]  # summed unit statistics (..., D) -> scores (...)


# --------------------------------------------------------------------------- calibration block


def _bins(confidence: np.ndarray) -> np.ndarray:
    """The runner's bin index of each confidence (see metrics.expected_calibration_error)."""
    edges = np.arange(N_BINS + 1) / N_BINS
    return np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, N_BINS - 1)


def calibration_stats(probs: np.ndarray, labels: np.ndarray, preds: np.ndarray, group: np.ndarray, n_groups: int,
                      keep: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
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
        out[:, j * N_BINS : (j + 1) * N_BINS] = np.bincount(cell, weights=values, minlength=size).reshape(n_groups, N_BINS)
    out[:, -1] = np.bincount(group, weights=w * brier, minlength=n_groups)
    return out


def _calibration_metric(metric: str) -> SumMetric:
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


# --------------------------------------------------------------------------- the task kinds


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)


@dataclass(frozen=True)
class TextClassification:
    """Unit = example; statistics: one-hot confusion cell (K*K), then the calibration block."""

    task: str = TEXT
    headline: str = "macro_f1"

    def metrics(self, label_space: Sequence[str]) -> tuple[str, ...]:
        return ("accuracy", "macro_f1", "macro_precision", "macro_recall", "ece", "ece_debiased", "brier")

    def width(self, label_space: Sequence[str]) -> int:
        return len(label_space) ** 2 + CAL_WIDTH

    def unit_stats(self, labels, preds, probs, lengths, label_space: Sequence[str]) -> np.ndarray:
        labels, preds = np.asarray(labels, dtype=np.int64), np.asarray(preds, dtype=np.int64)
        k, n = len(label_space), len(labels)
        out = np.zeros((n, k * k + CAL_WIDTH))
        out[np.arange(n), labels * k + preds] = 1.0
        out[:, k * k :] = calibration_stats(np.asarray(probs), labels, preds, np.arange(n), n)
        return out

    def columns(self, metric: str, label_space: Sequence[str]) -> np.ndarray:
        """Indices of the statistics ``metric`` reads (a bootstrap need resample only these)."""
        _check(self, metric, label_space)
        k = len(label_space)
        return _cal_columns(metric, k * k) if metric in LOWER_IS_BETTER else np.arange(k * k)

    def metric_fn(self, metric: str, label_space: Sequence[str]) -> SumMetric:
        _check(self, metric, label_space)
        k = len(label_space)
        if metric in LOWER_IS_BETTER:
            cal = _calibration_metric(metric)
            return lambda sums: cal(np.asarray(sums)[..., k * k :])

        def fn(sums: np.ndarray) -> np.ndarray:
            cm = np.asarray(sums)[..., : k * k].reshape(*np.shape(sums)[:-1], k, k)
            tp = np.diagonal(cm, axis1=-2, axis2=-1)
            if metric == "accuracy":
                return _divide(tp.sum(axis=-1), cm.sum(axis=(-2, -1)))
            true_count, pred_count = cm.sum(axis=-1), cm.sum(axis=-2)
            present = (true_count + pred_count) > 0  # classes in the labels or predictions of this sample
            per_class = {"macro_f1": _divide(2.0 * tp, true_count + pred_count), "macro_precision": _divide(tp, pred_count),
                         "macro_recall": _divide(tp, true_count)}[metric]  # fmt: skip
            return _divide((per_class * present).sum(axis=-1), present.sum(axis=-1).astype(np.float64))

        return fn


@dataclass(frozen=True)
class TokenClassification:
    """Unit = sentence; statistics: (tp, fp, fn) per entity type, correct and total words, the
    calibration block over every word, the calibration block over entity words."""

    task: str = TOKENS
    headline: str = "entity_micro_f1"

    def metrics(self, label_space: Sequence[str]) -> tuple[str, ...]:
        per_type = tuple(f"f1_{t}" for t in entity_types(label_space))
        return ("entity_micro_f1", "entity_micro_precision", "entity_micro_recall", "macro_f1", "accuracy", *per_type,
                "ece", "ece_debiased", "brier")  # fmt: skip

    def width(self, label_space: Sequence[str]) -> int:
        return 3 * len(entity_types(label_space)) + 2 + 2 * CAL_WIDTH

    def unit_stats(self, labels, preds, probs, lengths, label_space: Sequence[str]) -> np.ndarray:
        labels, preds = np.asarray(labels, dtype=np.int64), np.asarray(preds, dtype=np.int64)
        lengths = np.asarray(lengths, dtype=np.int64)
        n = len(lengths)
        entity = sentence_stats(labels, preds, lengths, label_space).astype(np.float64)
        sentence = np.repeat(np.arange(n), lengths)
        outside = [i for i, t in enumerate(label_space) if t == "O"]
        is_entity = ~(np.isin(labels, outside) & np.isin(preds, outside))  # gold or predicted entity word
        words = calibration_stats(np.asarray(probs), labels, preds, sentence, n)
        ents = calibration_stats(np.asarray(probs), labels, preds, sentence, n, keep=is_entity)
        return np.concatenate([entity, words, ents], axis=1)

    def columns(self, metric: str, label_space: Sequence[str]) -> np.ndarray:
        """Indices of the statistics ``metric`` reads (a bootstrap need resample only these)."""
        _check(self, metric, label_space)
        base = 3 * len(entity_types(label_space)) + 2
        if metric == "ece":
            return _cal_columns(metric, base)
        if metric in LOWER_IS_BETTER:
            return _cal_columns(metric, base + CAL_WIDTH)
        return np.arange(base)

    def metric_fn(self, metric: str, label_space: Sequence[str]) -> SumMetric:
        _check(self, metric, label_space)
        types = entity_types(label_space)
        base = 3 * len(types) + 2
        if metric == "ece":  # every word, as the runner records it
            cal = _calibration_metric("ece")
            return lambda sums: cal(np.asarray(sums)[..., base : base + CAL_WIDTH])
        if metric in LOWER_IS_BETTER:  # entity words
            cal = _calibration_metric(metric)
            return lambda sums: cal(np.asarray(sums)[..., base + CAL_WIDTH :])
        if metric.startswith("f1_"):
            j = types.index(metric[3:])

            def type_f1(sums: np.ndarray) -> np.ndarray:
                counts = np.asarray(sums)[..., : 3 * len(types)].reshape(*np.shape(sums)[:-1], len(types), 3)
                return per_type_f1_from_counts(counts)[..., j]

            return type_f1
        inner = ner_sum_metric(metric, len(types))
        return lambda sums: inner(np.asarray(sums)[..., :base])


TaskKind = TextClassification | TokenClassification
_KINDS: dict[str, TaskKind] = {TEXT: TextClassification(), TOKENS: TokenClassification()}


def task_kind(task: str) -> TaskKind:
    """The statistics of ``task`` ("text-classification" or "token-classification")."""
    try:
        return _KINDS[task]
    except KeyError:
        raise ShiftbenchError(f"task {task!r} has no statistics layer{did_you_mean(task, _KINDS)}") from None


def _check(kind: TaskKind, metric: str, label_space: Sequence[str]) -> None:
    allowed = kind.metrics(label_space)
    if metric not in allowed:
        raise ShiftbenchError(f"metric {metric!r} is not defined for {kind.task}{did_you_mean(metric, allowed)}")


def headline_metric(task: str) -> str:
    """The metric every command uses by default for ``task``."""
    return task_kind(task).headline


def lower_is_better(metric: str) -> bool:
    return metric in LOWER_IS_BETTER


# --------------------------------------------------------------------------- stored predictions


@dataclass(frozen=True, eq=False)
class SplitStats:
    """One split of one run: per-unit statistics and the flat labels / predictions (per word for NER)."""

    values: np.ndarray  # (n_units, D) float64
    labels: np.ndarray  # (N,) int64
    preds: np.ndarray  # (N,) int64

    @property
    def n_units(self) -> int:
        return int(self.values.shape[0])


@dataclass(frozen=True, eq=False)
class RunStats:
    """The ID and OOD test splits of one run, under one task kind and label space."""

    run_id: str
    task: str
    label_space: tuple[str, ...]
    id: SplitStats
    ood: SplitStats | None  # None: the target is unlabelled (no OOD score)

    def split(self, name: str) -> SplitStats | None:
        return self.id if name == "id" else self.ood

    def scores(self, metric: str) -> tuple[float, float]:
        """(ID, OOD) ``metric`` of the full test splits (OOD NaN for an unlabelled target)."""
        fn = task_kind(self.task).metric_fn(metric, self.label_space)
        ood = float(fn(self.ood.values.sum(axis=0))) if self.ood is not None else float("nan")
        return float(fn(self.id.values.sum(axis=0))), ood


_CACHE: dict[tuple, RunStats] = {}
_CACHE_SIZE = 256  # runs kept per process (a report reads each run for the board and the ER fit)


def load_run_stats(results_dir: Path, run_id: str, task: str, label_space: Sequence[str]) -> RunStats:
    """Read ``predictions/<run_id>.parquet`` and turn both splits into unit statistics (cached per
    process by path, size and modification time)."""
    kind = task_kind(task)
    label_space = tuple(label_space)
    path = predictions_path(results_dir, run_id)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ShiftbenchError(f"{path}: predictions of run {run_id} are missing") from None
    key = (str(path), st.st_size, st.st_mtime_ns, task, label_space)
    if key in _CACHE:
        return _CACHE[key]
    try:
        names = pq.read_schema(path).names
        table = pq.read_table(path, columns=["split", "index", "label", "pred", "probs"] + (["position"] if "position" in names else []))
    except Exception as exc:  # unreadable or foreign file: one line naming it
        why = one_line(exc)
        raise ShiftbenchError(f"{path}: unreadable predictions of run {run_id} ({why})") from None
    split = table.column("split").to_numpy(zero_copy_only=False)
    index = table.column("index").to_numpy(zero_copy_only=False).astype(np.int64)
    position = table.column("position").to_numpy(zero_copy_only=False) if "position" in names else None
    tokens = kind.task == TOKENS
    if tokens and (position is None or np.isnan(position.astype(np.float64)).all()):
        raise ShiftbenchError(f"{path}: run {run_id} is token classification but its predictions have no word positions")
    label_col = table.column("label")
    labels_all = label_col.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)  # -1: unlabelled (checked below)
    preds_all = table.column("pred").to_numpy(zero_copy_only=False).astype(np.int64)
    probs_col = table.column("probs").combine_chunks()
    width = len(label_space)
    flat = probs_col.flatten().to_numpy(zero_copy_only=False)
    if len(flat) != width * len(table):
        raise ShiftbenchError(f"{path}: probs of run {run_id} do not have {width} columns (its label space) on every row")
    probs_all = flat.reshape(len(table), width)
    out = {}
    for name, tag in (("id", "id_test"), ("ood", "ood_test")):
        rows = np.flatnonzero(split == tag)
        if rows.size == 0:
            raise ShiftbenchError(f"{path}: no {tag} predictions")
        order = np.lexsort((position[rows].astype(np.int64), index[rows])) if tokens else np.argsort(index[rows], kind="stable")
        rows = rows[order]
        y, p = labels_all[rows], preds_all[rows]
        if (y == -1).any() and label_col.null_count:
            if tag == "ood_test":  # an unlabelled target: nothing to score there; the ID split still is
                out[name] = None
                continue
            raise ShiftbenchError(f"{path}: the {tag} split of run {run_id} has unlabelled rows")
        if min(y.min(), p.min()) < 0:
            raise ShiftbenchError(f"{path}: negative class ids in the {tag} labels or predictions")
        top = int(max(y.max(), p.max()))
        if top >= width:
            raise ShiftbenchError(f"{path}: class id {top} in the {tag} labels or predictions is outside the run's {width} labels")
        lengths = np.bincount(index[rows] - index[rows].min()) if tokens else None
        if lengths is not None:
            lengths = lengths[lengths > 0]
        out[name] = SplitStats(kind.unit_stats(y, p, probs_all[rows], lengths, label_space), y, p)
    stats = RunStats(run_id, task, label_space, out["id"], out["ood"])
    if len(_CACHE) >= _CACHE_SIZE:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = stats
    return stats


def resampled_unit_sums(blocks: Sequence[np.ndarray], n_boot: int, rng: np.random.Generator | None,
                        columns: np.ndarray | None = None, weights: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """Sums (n_boot, M, D) of ``n_boot`` bootstrap resamples of the units, one resample shared by
    the M blocks (each (n_units, D), the same units: e.g. every seed of both models on one test
    split). ``columns``: only these statistics are resampled (the others stay 0). ``weights``:
    the multiplicities (n_boot, n_units) to use instead of drawing them from ``rng``."""
    m, (n, d) = len(blocks), blocks[0].shape
    cols = np.arange(d) if columns is None else np.asarray(columns)
    stacked = np.concatenate([b[:, cols] for b in blocks], axis=1)
    if weights is None:
        assert rng is not None
        weights = bootstrap_weights(n, n_boot, rng)
    out = np.zeros((n_boot, m, d))
    out[:, :, cols] = weighted_sums(weights, stacked).reshape(n_boot, m, len(cols))
    return out


def replicate_scores(blocks: Sequence[np.ndarray], task: str, metric: str, label_space: Sequence[str], n_boot: int,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(points (M,), replicates (n_boot, M)) of ``metric`` for M blocks of unit statistics over the
    same units, under one shared resample per replicate."""
    kind = task_kind(task)
    fn = kind.metric_fn(metric, label_space)
    points = fn(np.stack([b.sum(axis=0) for b in blocks]))
    return points, fn(resampled_unit_sums(blocks, n_boot, rng, kind.columns(metric, label_space)))


def check_metric(metric: str, task: str, label_space: Sequence[str], where: str = "") -> None:
    """One-line error unless ``task`` defines ``metric`` (``where``: e.g. the pair, for the message)."""
    kind = task_kind(task)
    allowed = kind.metrics(label_space)
    if metric not in allowed:
        at = f" ({where})" if where else ""
        raise ShiftbenchError(f"metric {metric!r} is not defined for {task}{at}{did_you_mean(metric, allowed)}")


__all__ = [
    "CAL_WIDTH", "N_BINS", "RunStats", "SplitStats", "TaskKind", "TextClassification", "TokenClassification",
    "calibration_stats", "check_metric", "headline_metric", "load_run_stats", "lower_is_better", "replicate_scores", "resampled_unit_sums", "task_kind",
]  # fmt: skip
