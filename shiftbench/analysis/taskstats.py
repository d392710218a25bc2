"""The statistics layer, analysis side: per-unit statistics of stored predictions and the
resampling that every interval in shiftbench runs on them.

What a test *unit* contributes to a score, and every score as a function of summed unit
statistics, is defined once per task kind in :mod:`shiftbench.tasks` (``unit_stats``,
``metric_fn``, ``columns``; the calibration block in :mod:`shiftbench.tasks.stats`). This module
loads a run's predictions into those statistics (:func:`load_run_stats`) and resamples them.

Why sums: every interval in shiftbench resamples test units (bootstrap) and recomputes scores.
If a score is a function of *sums* of per-unit statistics, a replicate is one multinomial weight
vector times an (n_units, D) matrix (:func:`shiftbench.analysis.stats.resampled_sums`) and every metric
of every run comes out of the same product. ``compare``, ``leaderboard``, ``robustness`` and
``report`` all go through this module, so a metric means the same thing everywhere.

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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from shiftbench.analysis.stats import bootstrap_weights, weighted_sums
from shiftbench.core.errors import ShiftbenchError, one_line
from shiftbench.results.store import predictions_path
from shiftbench.tasks import TaskKind, TextClassification, TokenClassification, get_task
from shiftbench.tasks.stats import CAL_WIDTH, LOWER_IS_BETTER, N_BINS, SumMetric, calibration_stats

task_kind = get_task  # the statistics of a task: its task kind


def headline_metric(task: str) -> str:
    """The metric every command uses by default for ``task``."""
    return get_task(task).headline


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

    def labelled(self, name: str) -> SplitStats:
        """The split's statistics, where they are known to exist (an error for an unlabelled target)."""
        stats = self.split(name)
        if stats is None:
            raise ShiftbenchError(
                f"run {self.run_id}: its {name.upper()} test split is unlabelled; nothing to score there"
            )
        return stats

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
        table = pq.read_table(
            path, columns=["split", "index", "label", "pred", "probs"] + (["position"] if "position" in names else [])
        )
    except Exception as exc:  # unreadable or foreign file: one line naming it
        why = one_line(exc)
        raise ShiftbenchError(f"{path}: unreadable predictions of run {run_id} ({why})") from None
    split = table.column("split").to_numpy(zero_copy_only=False)
    index = table.column("index").to_numpy(zero_copy_only=False).astype(np.int64)
    position = table.column("position").to_numpy(zero_copy_only=False) if "position" in names else None
    tokens = kind.word_level  # one row per word: units are sentences, rows ordered by word position
    if tokens and (position is None or np.isnan(position.astype(np.float64)).all()):
        raise ShiftbenchError(
            f"{path}: run {run_id} is {kind.name} (one row per word) but its predictions have no word positions"
        )
    label_col = table.column("label")
    labels_all = (
        label_col.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    )  # -1: unlabelled (checked below)
    preds_all = table.column("pred").to_numpy(zero_copy_only=False).astype(np.int64)
    probs_col = table.column("probs").combine_chunks()
    width = len(label_space)
    flat = probs_col.flatten().to_numpy(zero_copy_only=False)
    if len(flat) != width * len(table):
        raise ShiftbenchError(
            f"{path}: probs of run {run_id} do not have {width} columns (its label space) on every row"
        )
    probs_all = flat.reshape(len(table), width)
    out: dict[str, SplitStats | None] = {}
    for name, tag in (("id", "id_test"), ("ood", "ood_test")):
        rows = np.flatnonzero(split == tag)
        if rows.size == 0:
            raise ShiftbenchError(f"{path}: no {tag} predictions")
        order = (
            np.lexsort((position[rows].astype(np.int64), index[rows]))
            if tokens and position is not None
            else np.argsort(index[rows], kind="stable")
        )
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
            raise ShiftbenchError(
                f"{path}: class id {top} in the {tag} labels or predictions is outside the run's {width} labels"
            )
        lengths = None
        if tokens:  # words per sentence
            lengths = np.bincount(index[rows] - index[rows].min())
            lengths = lengths[lengths > 0]
        out[name] = SplitStats(kind.unit_stats(y, p, probs_all[rows], lengths, label_space), y, p)
    id_stats = out["id"]
    assert id_stats is not None  # only the OOD split may be unlabelled (an unlabelled ID split raised above)
    stats = RunStats(run_id, task, label_space, id_stats, out["ood"])
    if len(_CACHE) >= _CACHE_SIZE:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = stats
    return stats


def resampled_unit_sums(
    blocks: Sequence[np.ndarray],
    n_boot: int,
    rng: np.random.Generator | None,
    columns: np.ndarray | None = None,
    weights: np.ndarray | None = None,
) -> np.ndarray:
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


def replicate_scores(
    blocks: Sequence[np.ndarray],
    task: str,
    metric: str,
    label_space: Sequence[str],
    n_boot: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """(points (M,), replicates (n_boot, M)) of ``metric`` for M blocks of unit statistics over the
    same units, under one shared resample per replicate."""
    kind = task_kind(task)
    fn = kind.metric_fn(metric, label_space)
    points = fn(np.stack([b.sum(axis=0) for b in blocks]))
    return points, fn(resampled_unit_sums(blocks, n_boot, rng, kind.columns(metric, label_space)))


def check_metric(metric: str, task: str, label_space: Sequence[str], where: str = "") -> None:
    """One-line error unless ``task`` defines ``metric`` (``where``: e.g. the pair, for the message)."""
    get_task(task).check_metric(metric, label_space, where)


__all__ = [
    "CAL_WIDTH",
    "N_BINS",
    "RunStats",
    "SplitStats",
    "SumMetric",
    "TaskKind",
    "TextClassification",
    "TokenClassification",
    "calibration_stats",
    "check_metric",
    "headline_metric",
    "load_run_stats",
    "lower_is_better",
    "replicate_scores",
    "resampled_unit_sums",
    "task_kind",
]
