"""Results: one immutable Parquet file per completed run, in one explicit, versioned schema.

Layout under the results dir::

    runs/<run_id>.parquet         one row per metric of one (fine-tune, pair, target); the
                                  file's existence is the run's done marker
    predictions/<run_id>.parquet  per-example labels, predictions and probabilities (ID and OOD)
    leaderboard.parquet           derived from runs/ by `shiftbench leaderboard`

A run file is written only after its predictions file, both atomically, so a killed process
leaves either nothing or a complete run. Files are never rewritten.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from shiftbench.core import faults
from shiftbench.core.atomic import write_atomic
from shiftbench.core.errors import ShiftbenchError, one_line
from shiftbench.core.guards import check_output_dir
from shiftbench.registry.selection import SelectionEdges, edge_warning, selection_edges


# What this layer records is described here, by shape, not imported from the layers that make it
# (training's Predictions, analysis.verdict's RunEstimate): results sits below both (README "Layers").
class Predictions(Protocol):
    """One split's predictions (:class:`shiftbench.training.evaluation.Predictions`)."""

    @property
    def labels(self) -> np.ndarray: ...  # (N,) gold ids, negative: unlabelled
    @property
    def preds(self) -> np.ndarray: ...  # (N,) predicted ids
    @property
    def probs(self) -> np.ndarray: ...  # (N, C) probabilities
    @property
    def lengths(self) -> np.ndarray | None: ...  # token classification: words per example


class MetricEstimate(Protocol):
    """One metric's label-free estimate (:class:`shiftbench.analysis.verdict.RowEstimate`)."""

    @property
    def method(self) -> str: ...
    @property
    def value(self) -> float: ...
    @property
    def low(self) -> float: ...
    @property
    def high(self) -> float: ...
    @property
    def trusted(self) -> bool: ...


class RunEstimate(Protocol):
    """A run's label-free estimates (:class:`shiftbench.analysis.verdict.RunEstimate`)."""

    def for_metric(self, metric: str) -> MetricEstimate | None: ...
    def as_dict(self) -> dict: ...


# 2: selected_lr_edge and selected_epoch_at_edge; 3: the label-free OOD estimate columns
# (ood_estimate*) and unlabelled targets (null ood_score / gap / relative_gap). Files of an older
# version are still read: the columns a later version added are filled in (see _added_columns),
# so every reader sees RUN_SCHEMA.
SCHEMA_VERSION = 3
ESTIMATE_COLUMNS = (
    "ood_estimate",
    "ood_estimate_method",
    "ood_estimate_low",
    "ood_estimate_high",
    "ood_estimate_trusted",
)
# Columns each schema version added, in RUN_SCHEMA order; add a later version's columns here.
ADDED_COLUMNS: dict[int, tuple[str, ...]] = {2: ("selected_lr_edge", "selected_epoch_at_edge"), 3: ESTIMATE_COLUMNS}
RUNS_DIR = "runs"
ESTIMATE_META_KEY = b"shiftbench.ood_estimate"  # run-file metadata: the run's estimate details (JSON)
PREDICTIONS_DIR = "predictions"

# The results schema, in one place. README "Results schema" documents the same columns.
RUN_SCHEMA = pa.schema(
    [
        ("schema_version", pa.int32()),
        ("run_id", pa.string()),  # hash of finetune_id, pair, target and target data fingerprint
        ("finetune_id", pa.string()),  # hash of model sha, source fingerprint, protocol hash, seed, runner version
        ("model", pa.string()),
        ("model_sha256", pa.string()),
        ("pair", pa.string()),
        ("source", pa.string()),
        ("target", pa.string()),
        ("task", pa.string()),
        ("seed", pa.int64()),
        ("protocol", pa.string()),
        ("protocol_hash", pa.string()),
        ("metric", pa.string()),
        ("id_score", pa.float64()),  # source test split (id_test)
        ("ood_score", pa.float64()),  # target test split (ood_test); null for an unlabelled target
        ("gap", pa.float64()),  # id_score - ood_score (null for an unlabelled target)
        ("relative_gap", pa.float64()),  # gap / id_score (null when id_score is 0 or the target is unlabelled)
        # The run-time label-free estimate of ood_score (shiftbench.analysis.verdict.run_estimates): its
        # value, method, 95 % bootstrap interval and reliability verdict; null where no estimator
        # covers the metric (only accuracy and macro_f1 of text classification are covered).
        ("ood_estimate", pa.float64()),
        ("ood_estimate_method", pa.string()),
        ("ood_estimate_low", pa.float64()),
        ("ood_estimate_high", pa.float64()),
        ("ood_estimate_trusted", pa.bool_()),
        ("n_id", pa.int64()),
        ("n_ood", pa.int64()),
        ("label_space", pa.list_(pa.string())),  # label names; ids index this list
        ("id_label_counts", pa.list_(pa.int64())),  # source test label counts (label prior)
        ("ood_label_counts", pa.list_(pa.int64())),  # target test label counts
        ("overlap_exact", pa.int64()),  # target test texts also in the source train split (null: not checked)
        ("overlap_normalised", pa.int64()),  # ... after lower-casing, dropping URLs/@mentions, collapsing space
        ("dedup", pa.bool_()),  # overlapping target texts were removed before scoring (--dedup)
        ("source_fingerprint", pa.string()),
        ("target_fingerprint", pa.string()),
        ("selected_lr", pa.float64()),  # null for --eval-only
        ("selected_epoch", pa.int32()),
        ("selection_score", pa.float64()),  # source-validation score that chose the checkpoint
        # Where the selection lay on the grid (shiftbench.registry.selection): "low" / "high" (smallest /
        # largest lr of a grid of >= 2), "interior", or null (a one-lr grid, eval-only, icl) ...
        ("selected_lr_edge", pa.string()),
        # ... and whether the selected epoch is the last its lr trained (null: it trained one epoch)
        ("selected_epoch_at_edge", pa.bool_()),
        ("eval_only", pa.bool_()),
        ("device", pa.string()),
        ("precision", pa.string()),
        ("num_threads", pa.int32()),  # CPU intra-op threads: float sums (and so scores) depend on it
        ("train_seconds", pa.float64()),
        ("eval_seconds", pa.float64()),
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("shiftbench_version", pa.string()),
        ("runner_version", pa.int32()),
        ("transformers_version", pa.string()),
        ("torch_version", pa.string()),
    ],
    metadata={"shiftbench.schema_version": str(SCHEMA_VERSION)},
)

# Version 2 added `position` (token classification); version-1 files (no such column) are
# read as sequence-level predictions. Version 3 (same columns): rows of split `source_validation`
# (the selected model on source validation, the held-out split of the label-free estimates) and
# null labels (an unlabelled target). Every reader selects rows by split.
PREDICTIONS_SCHEMA_VERSION = 3
ID_TEST, OOD_TEST, SOURCE_VALIDATION = "id_test", "ood_test", "source_validation"
PREDICTIONS_SCHEMA = pa.schema(
    [
        ("split", pa.string()),  # id_test, ood_test or source_validation
        ("index", pa.int32()),  # example position in the split as loaded (after label_map drops/carving)
        ("position", pa.int32()),  # token classification: word position in the example; null otherwise
        ("label", pa.int16()),  # null: the example has no label (unlabelled target)
        ("pred", pa.int16()),
        ("probs", pa.list_(pa.float32())),
    ],
    metadata={"shiftbench.schema_version": str(PREDICTIONS_SCHEMA_VERSION)},
)


@dataclass(frozen=True)
class RunResult:
    """Everything one (fine-tune, pair, target) produced; turned into long rows by ``to_table``."""

    run_id: str
    finetune_id: str
    model: str
    model_sha256: str
    pair: str
    source: str
    target: str
    task: str
    seed: int
    protocol: str
    protocol_hash: str
    id_scores: dict[str, float]
    ood_scores: dict[str, float | None]  # None: the target is unlabelled
    n_id: int
    n_ood: int
    label_space: tuple[str, ...]
    id_label_counts: tuple[int, ...]
    ood_label_counts: tuple[int, ...]
    overlap_exact: int | None
    overlap_normalised: int | None
    dedup: bool
    source_fingerprint: str
    target_fingerprint: str
    selected_lr: float | None
    selected_epoch: int | None
    selection_score: float | None
    eval_only: bool
    device: str
    precision: str
    num_threads: int
    train_seconds: float
    eval_seconds: float
    created_at: datetime
    shiftbench_version: str
    runner_version: int
    transformers_version: str
    torch_version: str
    history: tuple[dict, ...] = ()  # per-epoch source-validation history (EpochRecord as dicts)
    trainable_params: int | None = None  # parameters the fine-tune updated (lora: adapters + head)
    # label-free OOD estimates (text classification), see shiftbench.analysis.verdict
    estimate: RunEstimate | None = None

    @property
    def labelled(self) -> bool:
        """Whether the target has labels (else its true OOD scores are unknown)."""
        return all(v is not None for v in self.ood_scores.values())

    def gap(self, metric: str) -> float | None:
        ood = self.ood_scores[metric]
        return None if ood is None else self.id_scores[metric] - ood

    @property
    def edges(self) -> SelectionEdges:
        """Where the selected (lr, epoch) lies on the protocol's grid."""
        return selection_edges(self.history, self.selected_lr, self.selected_epoch)

    def edge_warning(self) -> str | None:
        """One warning line when the selection is at an edge of the grid, else None."""
        who = f"{self.model} on {self.source}, seed {self.seed}, protocol {self.protocol},"
        return edge_warning(who, self.history, self.selected_lr, self.selected_epoch)

    def to_table(self) -> pa.Table:
        base = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for k in ("id_scores", "ood_scores", "history", "trainable_params", "estimate"):
            base.pop(k)
        edges = self.edges
        base |= {"selected_lr_edge": edges.lr, "selected_epoch_at_edge": edges.epoch_at_edge}
        rows = []
        for metric in self.id_scores:
            i, o = self.id_scores[metric], self.ood_scores[metric]
            gap = i - o if o is not None else None
            rel = gap / i if gap is not None and i else None
            est = self.estimate.for_metric(metric) if self.estimate is not None else None
            rows.append(
                {
                    **base,
                    "schema_version": SCHEMA_VERSION,
                    "metric": metric,
                    "id_score": i,
                    "ood_score": o,
                    "gap": gap,
                    "relative_gap": rel,
                    "ood_estimate": est.value if est else None,
                    "ood_estimate_method": est.method if est else None,
                    "ood_estimate_low": est.low if est else None,
                    "ood_estimate_high": est.high if est else None,
                    "ood_estimate_trusted": est.trusted if est else None,
                }
            )
        table = pa.Table.from_pylist(rows, schema=RUN_SCHEMA)
        meta = dict(RUN_SCHEMA.metadata)
        meta[b"shiftbench.history"] = json.dumps(list(self.history)).encode()
        if self.estimate is not None:  # every estimate, the evidence and the label distributions
            meta[ESTIMATE_META_KEY] = json.dumps(self.estimate.as_dict()).encode()
        if self.trainable_params is not None:  # schema metadata, not a column: RUN_SCHEMA is unchanged
            meta[b"shiftbench.trainable_params"] = str(self.trainable_params).encode()
        return table.replace_schema_metadata(meta)


def edge_warnings(results: Sequence[RunResult]) -> list[str]:
    """One warning line per fine-tune of ``results`` whose selection is at an edge of its grid."""
    lines, seen = [], set()
    for r in results:
        if r.finetune_id not in seen:
            seen.add(r.finetune_id)
            line = r.edge_warning()
            if line is not None:
                lines.append(line)
    return lines


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


def run_path(results_dir: Path, run_id: str) -> Path:
    return Path(results_dir) / RUNS_DIR / f"{run_id}.parquet"


def predictions_path(results_dir: Path, run_id: str) -> Path:
    return Path(results_dir) / PREDICTIONS_DIR / f"{run_id}.parquet"


def is_done(results_dir: Path, run_id: str) -> bool:
    try:
        return run_path(results_dir, run_id).is_file()
    except OSError:  # e.g. a results-dir name too long for the file system: check_results_dir reports it
        return False


def predictions_table(splits: dict[str, Predictions]) -> pa.Table:
    """``splits`` maps split name (id_test, ood_test, source_validation) -> its predictions; one
    row per example, or per word (``index`` = example, ``position`` = word) for token
    classification. A negative label id (an unlabelled example) is written as null."""
    cols: dict[str, list] = {"split": [], "index": [], "position": [], "label": [], "pred": [], "probs": []}
    for name, p in splits.items():
        n = len(p.labels)
        cols["split"] += [name] * n
        if not p.kind.word_level:  # one row per example
            cols["index"] += list(range(n))
            cols["position"] += [None] * n
        else:
            cols["index"] += np.repeat(np.arange(len(p.lengths)), p.lengths).tolist()
            cols["position"] += np.concatenate([np.arange(k) for k in p.lengths]).tolist() if n else []
        cols["label"] += [None if y < 0 else y for y in p.labels.tolist()]
        cols["pred"] += p.preds.tolist()
        cols["probs"] += np.round(p.probs.astype(np.float32), 6).tolist()
    return pa.Table.from_pydict(cols, schema=PREDICTIONS_SCHEMA)


def write_run(results_dir: Path, result: RunResult, predictions: pa.Table) -> Path:
    """Predictions first, then the run file (the done marker); both atomic."""
    write_atomic(predictions_path(results_dir, result.run_id), lambda p: pq.write_table(predictions, p))
    faults.fault_point("write_run")
    target = run_path(results_dir, result.run_id)
    write_atomic(target, lambda p: pq.write_table(result.to_table(), p))
    return target


@dataclass(frozen=True)
class LoadedRuns:
    table: pa.Table  # every readable run row, RUN_SCHEMA
    skipped: tuple[tuple[Path, str], ...]  # (file, reason) for unreadable or foreign files


def _added_columns(path: Path, version: int, meta: dict, names: Sequence[str], n_rows: int) -> dict[str, pa.Array]:
    """The columns in ``names`` that schema versions after ``version`` added, for a file of that
    version: the selection edges from the file's history (what a current run would have
    written), any other added column null."""
    added = [c for v in range(version + 1, SCHEMA_VERSION + 1) for c in ADDED_COLUMNS.get(v, ()) if c in names]
    if not added:
        return {}
    values: dict[str, object] = {}
    if {"selected_lr_edge", "selected_epoch_at_edge"} & set(added):
        first = pq.read_table(path, columns=["selected_lr", "selected_epoch"]).slice(0, 1).to_pylist()
        lr, epoch = (first[0]["selected_lr"], first[0]["selected_epoch"]) if first else (None, None)
        edges = selection_edges(json.loads(meta.get(b"shiftbench.history", b"[]")), lr, epoch)
        values |= {"selected_lr_edge": edges.lr, "selected_epoch_at_edge": edges.epoch_at_edge}
    return {c: pa.array([values.get(c)] * n_rows, type=RUN_SCHEMA.field(c).type) for c in added}


def read_runs(results_dir: Path, columns: Sequence[str] | None = None) -> LoadedRuns:
    """All run rows (only ``columns``, when given: reading less is most of the cost of a large
    leaderboard). Files of an older schema version are read with the columns added since filled
    in (their ``schema_version`` stays theirs). A corrupt or foreign file is reported in
    ``skipped`` and never touched."""
    runs = Path(results_dir) / RUNS_DIR
    schema = RUN_SCHEMA if columns is None else pa.schema([RUN_SCHEMA.field(c) for c in columns])
    tables, skipped = [], []
    for path in sorted(runs.glob("*.parquet")) if runs.is_dir() else []:
        try:
            file_schema = pq.read_schema(path)
            meta = file_schema.metadata or {}
            raw_version = meta.get(b"shiftbench.schema_version")
            version = int(raw_version) if raw_version is not None and raw_version.isdigit() else None
            if version is None or not 1 <= version <= SCHEMA_VERSION:
                skipped.append((path, f"schema version {raw_version!r}, expected 1 to {SCHEMA_VERSION}"))
                continue
            later = {c for v in range(version + 1, SCHEMA_VERSION + 1) for c in ADDED_COLUMNS.get(v, ())}
            missing = [n for n in RUN_SCHEMA.names if n not in file_schema.names and n not in later]
            if missing:
                skipped.append((path, f"columns do not match the run schema (missing {', '.join(missing)})"))
                continue
            table = pq.read_table(path, columns=[n for n in schema.names if n in file_schema.names])
            wanted = [
                n for n in schema.names if n not in file_schema.names
            ]  # a column the file has is read, whatever its version
            for name, column in _added_columns(path, version, meta, wanted, len(table)).items():
                table = table.append_column(name, column)
            tables.append(table.select(schema.names).cast(schema))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError, OSError) as exc:
            reason = one_line(exc)
            skipped.append((path, f"unreadable ({reason})"))
    table = pa.concat_tables(tables) if tables else schema.empty_table()
    return LoadedRuns(table, tuple(skipped))


def read_estimate(path: Path) -> dict | None:
    """A run file's label-free estimate details (None: a run before schema version 3, or NER)."""
    value = (pq.read_schema(path).metadata or {}).get(ESTIMATE_META_KEY)
    return json.loads(value) if value is not None else None


def read_history(path: Path) -> list[dict]:
    meta = pq.read_schema(path).metadata or {}
    return json.loads(meta.get(b"shiftbench.history", b"[]"))


def read_trainable_params(path: Path) -> int | None:
    """Trainable-parameter count of a run file's fine-tune (None: not recorded)."""
    value = (pq.read_schema(path).metadata or {}).get(b"shiftbench.trainable_params")
    return int(value) if value is not None else None


def check_results_dir(results_dir: Path) -> Path:
    """Create the results dir if needed; fail early and clearly if it cannot be written."""
    results_dir = check_output_dir(Path(results_dir), "results dir")
    try:
        if results_dir.exists() and not results_dir.is_dir():
            raise ShiftbenchError(f"results dir {results_dir} exists and is not a directory")
        (results_dir / RUNS_DIR).mkdir(parents=True, exist_ok=True)
        (results_dir / PREDICTIONS_DIR).mkdir(parents=True, exist_ok=True)
        # A probe of this process's own: concurrent runs on one results dir each check it, and a
        # shared name let one run delete another's probe before that one removed it (ENOENT).
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=results_dir / RUNS_DIR)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ShiftbenchError(f"results dir {results_dir} is not writable: {exc.strerror or exc}") from None
    return results_dir
