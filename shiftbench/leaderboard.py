"""The leaderboard: derived from the immutable run files, never edited by hand.

One row per (model, model sha, pair, source, target, task, metric, protocol, protocol hash,
source and target data fingerprints, schema version): rows that differ in any of these are
never pooled. Columns: number of seeds, mean and std over seeds of ID, OOD, gap and relative
gap, and a 95 % confidence interval for each: a t-interval over seeds, or, for a single seed,
a percentile bootstrap over test examples (ID and OOD resampled independently) from the stored
predictions (``ci_method`` says which; accuracy and macro-F1, and for token classification the
entity-level scores, resampling sentences).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from scipy import stats

from shiftbench.atomic import write_atomic
from shiftbench.locks import claim
from shiftbench.results import PREDICTIONS_DIR, RUNS_DIR, LoadedRuns, read_runs
from shiftbench.selection import LR_EDGES

LEADERBOARD_SCHEMA_VERSION = 2  # 2: n_edge_selections
LEADERBOARD_FILE = "leaderboard.parquet"
_VERSION_KEY = b"shiftbench.leaderboard_schema_version"
_SKIPPED_KEY = b"shiftbench.skipped_run_files"
_INPUTS_KEY = b"shiftbench.built_from"
GROUP_KEYS = [
    "model", "model_sha256", "pair", "source", "target", "task", "metric",
    "protocol", "protocol_hash", "source_fingerprint", "target_fingerprint", "schema_version",
]  # fmt: skip
VALUES = ["id_score", "ood_score", "gap", "relative_gap"]
# Where each value can lie: every metric is a score in [0, 1] (accuracy, F1, precision, recall,
# ECE), so gap = ID - OOD is in [-1, 1] and relative gap = gap / ID is at most 1. A t-interval
# over 2-3 seeds can reach past these; its ends are clipped to them (a CI of [0.11, 1.12] for an
# F1 says no more than [0.11, 1]).
BOUNDS = {"id_score": (0.0, 1.0), "ood_score": (0.0, 1.0), "gap": (-1.0, 1.0), "relative_gap": (-np.inf, 1.0)}


def _t_halfwidth(std: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Half-width of the 95 % t-interval of a mean over n seeds (NaN for n < 2)."""
    n = np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        q = np.where(n >= 2, stats.t.ppf(0.975, np.maximum(n - 1, 1)), np.nan)
        return q * np.asarray(std, dtype=float) / np.sqrt(n)


def _seed_lists(runs: pd.DataFrame, group_ids: np.ndarray, n_groups: int) -> list[str]:
    """"0,1,2" per group, without a Python call per row (1M rows in well under a second)."""
    order = np.lexsort((runs["seed"].to_numpy(), group_ids))
    g, seeds = group_ids[order], runs["seed"].to_numpy()[order]
    bounds = np.flatnonzero(np.diff(g)) + 1
    return [",".join(map(str, np.unique(chunk))) for chunk in np.split(seeds, bounds)][:n_groups]


EDGE_COLUMNS = ["selected_lr_edge", "selected_epoch_at_edge"]


def _edge_selections(runs: pd.DataFrame, n_groups: int) -> pd.arrays.IntegerArray:
    """Per leaderboard row (in ``aggregate``'s group order): how many of its seeds selected at an
    edge of the protocol's grid (the smallest or largest lr, or the last epoch; see
    shiftbench.selection); <NA> where no seed had an edge to be at (one lr and one epoch,
    eval-only, icl) or the frame has no edge columns."""
    if not set(EDGE_COLUMNS) <= set(runs.columns):
        return pd.array([pd.NA] * n_groups, dtype="Int64")
    lr_edge, epoch_edge = runs["selected_lr_edge"], runs["selected_epoch_at_edge"]
    # `== True`, not truth-testing: the epoch column holds True, False and None
    at_edge = lr_edge.isin(LR_EDGES).to_numpy() | (epoch_edge == True).to_numpy()
    flagged = runs[GROUP_KEYS].assign(_edge_seed=runs["seed"].where(at_edge), _applicable=lr_edge.notna() | epoch_edge.notna())
    grouped = flagged.groupby(GROUP_KEYS, sort=True, dropna=False, observed=True)
    counts = pd.array(grouped["_edge_seed"].nunique().to_numpy(), dtype="Int64")
    counts[~grouped["_applicable"].any().to_numpy()] = pd.NA
    return counts


def aggregate(runs: pd.DataFrame) -> pd.DataFrame:
    if runs.empty:
        return pd.DataFrame(columns=GROUP_KEYS + ["n_seeds", "seeds"])
    grouped = runs.groupby(GROUP_KEYS, sort=True, dropna=False, observed=True)
    out = grouped["seed"].nunique().rename("n_seeds").to_frame()
    out["seeds"] = _seed_lists(runs, grouped.ngroup().to_numpy(), len(out))
    out["n_edge_selections"] = _edge_selections(runs, len(out))
    n = out["n_seeds"].to_numpy()
    for col in VALUES:
        mean = grouped[col].mean()
        std = grouped[col].std(ddof=1)
        half = _t_halfwidth(std.to_numpy(), n)
        out[f"{col}_mean"] = mean
        out[f"{col}_std"] = std
        low, high = BOUNDS[col]
        out[f"{col}_ci_low"] = np.clip(mean.to_numpy() - half, low, high)
        out[f"{col}_ci_high"] = np.clip(mean.to_numpy() + half, low, high)
    out = out.reset_index()
    out["leaderboard_schema_version"] = LEADERBOARD_SCHEMA_VERSION
    return out


N_BOOT = 1000


def _label_space(results_dir: Path, run_id: str) -> tuple[str, ...]:
    """One run's label space, read only where needed (a list column is slow to read for 1M rows)."""
    from shiftbench.results import run_path

    return tuple(pq.read_table(run_path(results_dir, run_id), columns=["label_space"]).column(0)[0].as_py())


def _bootstrap_single_seed(board: pd.DataFrame, runs: pd.DataFrame, results_dir: Path) -> pd.DataFrame:
    """Fill the CI columns of one-seed rows from a bootstrap over the run's test examples."""
    from shiftbench.compare import load_predictions, split_stats, sum_metric
    from shiftbench.errors import ShiftbenchError
    from shiftbench.ner_metrics import NER_SUM_METRICS
    from shiftbench.stats import COUNT_METRICS, confusion_codes, resampled_counts, resampled_sums

    board = board.copy()
    board["ci_method"] = np.where(board["n_seeds"] >= 2, "t over seeds", None)
    tokens = board["task"] == "token-classification"
    can = np.where(tokens, board["metric"].isin(NER_SUM_METRICS), board["metric"].isin(list(COUNT_METRICS)))
    todo = board.index[(board["n_seeds"] == 1) & can]
    if len(todo) == 0:
        return board
    first_run = runs.drop_duplicates(GROUP_KEYS).set_index(GROUP_KEYS)
    loaded: dict[str, tuple] = {}  # run id -> (predictions, NER label space and sentence stats): read once per run, not per metric
    for i in todo:
        row = board.loc[i]
        try:
            run_id = first_run.loc[tuple(row[GROUP_KEYS]), "run_id"]
            if run_id not in loaded:
                preds = load_predictions(results_dir, run_id)
                tags = _label_space(results_dir, run_id) if preds.is_tokens else None
                stats = {split: split_stats(preds, split, tags).astype(np.float64) for split in ("id", "ood")} if tags else None
                loaded[run_id] = (preds, tags, stats)
            preds, tags, stats = loaded[run_id]
        except (ShiftbenchError, KeyError):
            continue  # no predictions kept: the row keeps no interval
        rng = np.random.default_rng(0)
        if stats is not None:  # token classification: resample sentences
            fn = sum_metric(row["metric"], tags)
            id_rep, ood_rep = (fn(resampled_sums(stats[split], N_BOOT, rng)) for split in ("id", "ood"))
        else:
            fn = COUNT_METRICS[row["metric"]]
            k = int(max(preds.id_labels.max(), preds.id_preds.max(), preds.ood_labels.max(), preds.ood_preds.max())) + 1
            id_rep, ood_rep = (
                fn(resampled_counts(confusion_codes(y, p, k)[:, None], k * k, N_BOOT, rng).reshape(N_BOOT, k, k))
                for y, p in ((preds.id_labels, preds.id_preds), (preds.ood_labels, preds.ood_preds))
            )
        with np.errstate(invalid="ignore", divide="ignore"):
            reps = {"id_score": id_rep, "ood_score": ood_rep, "gap": id_rep - ood_rep,
                    "relative_gap": (id_rep - ood_rep) / id_rep}  # fmt: skip
        for col, rep in reps.items():
            rep = rep[np.isfinite(rep)]  # a resample with ID score 0 has no relative gap
            lo, hi = np.quantile(rep, [0.025, 0.975]) if rep.size else (np.nan, np.nan)
            board.loc[i, [f"{col}_ci_low", f"{col}_ci_high"]] = [lo, hi]
        board.loc[i, "ci_method"] = "bootstrap over examples"
    return board


def build_leaderboard(
    results_dir: Path, bootstrap: bool = True, loaded: LoadedRuns | None = None
) -> tuple[pd.DataFrame, tuple[tuple[Path, str], ...]]:
    """The leaderboard of every run under ``results_dir`` (``loaded``: its run files already
    read, with at least the columns used here, so a caller reading them anyway reads once)."""
    columns = [*GROUP_KEYS, "seed", "run_id", *VALUES, *EDGE_COLUMNS]
    loaded = read_runs(results_dir, columns=columns) if loaded is None else loaded
    runs = loaded.table.select(columns).to_pandas()
    board = aggregate(runs)
    if bootstrap and not board.empty:
        board = _bootstrap_single_seed(board, runs, Path(results_dir))
    return board, loaded.skipped


def rebuild_leaderboard(results_dir: Path) -> tuple[pd.DataFrame, tuple[tuple[Path, str], ...]]:
    """Read every run file and rewrite ``leaderboard.parquet``, serialised across processes so
    the last rebuild always sees every run written before it started. When the run and
    prediction files are exactly those it was built from (a re-run that found everything done),
    the written file is current and is returned as it is."""
    results_dir = Path(results_dir)
    with claim(results_dir, "leaderboard"):
        inputs = _inputs_signature(results_dir)
        current = _current_leaderboard(results_dir, inputs)
        if current is not None:
            return current
        board, skipped = build_leaderboard(results_dir)
        write_leaderboard(board, results_dir / LEADERBOARD_FILE, skipped, inputs)
    return board, skipped


# Bumped whenever the aggregation computes other numbers from the same run files (2: t-interval
# ends clipped to the value's range), so a leaderboard written by older code is not reused.
AGGREGATION_VERSION = 2


def _inputs_signature(results_dir: Path) -> str:
    """Hash of the aggregation version and (name, size, modification time) of every run and
    prediction file: any file added, replaced or removed, or another aggregation, changes it."""
    entries: list = [["aggregation", AGGREGATION_VERSION]]
    for folder in (RUNS_DIR, PREDICTIONS_DIR):
        for path in sorted((results_dir / folder).glob("*.parquet")) if (results_dir / folder).is_dir() else []:
            st = path.stat()
            entries.append([folder, path.name, st.st_size, st.st_mtime_ns])
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()


def _current_leaderboard(results_dir: Path, inputs: str) -> tuple[pd.DataFrame, tuple[tuple[Path, str], ...]] | None:
    """The written leaderboard and the files it skipped when it was built from exactly
    ``inputs`` under this schema version; None when it must be rebuilt."""
    path = results_dir / LEADERBOARD_FILE
    try:
        meta = pq.read_schema(path).metadata or {}
        if meta.get(_VERSION_KEY) != str(LEADERBOARD_SCHEMA_VERSION).encode() or meta.get(_INPUTS_KEY) != inputs.encode():
            return None
        skipped = tuple((Path(p), why) for p, why in json.loads(meta[_SKIPPED_KEY]))
        return pq.read_table(path).to_pandas(), skipped
    except (OSError, KeyError, ValueError, pa.ArrowException):  # missing, unreadable or foreign: rebuild it
        return None


def write_leaderboard(
    board: pd.DataFrame, path: Path, skipped: tuple[tuple[Path, str], ...] = (), inputs: str | None = None
) -> None:
    table = pa.Table.from_pandas(board, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[_VERSION_KEY] = str(LEADERBOARD_SCHEMA_VERSION).encode()
    # The run files the build skipped (corrupt or foreign), so a later run that finds the
    # leaderboard current can still report them.
    meta[_SKIPPED_KEY] = json.dumps([[str(p), why] for p, why in skipped]).encode()
    if inputs is not None:  # what it was built from (a board written elsewhere is never reused)
        meta[_INPUTS_KEY] = inputs.encode()
    table = table.replace_schema_metadata(meta)
    write_atomic(path, lambda p: pq.write_table(table, p))


def _edge_cell(row) -> str:
    """"k/n": k of the row's n seeds selected at an edge of the grid; "-": no edge to be at."""
    k = getattr(row, "n_edge_selections", pd.NA)
    return "-" if pd.isna(k) else f"{int(k)}/{row.n_seeds}"


def summary_table(board: pd.DataFrame, metric: str = "macro_f1") -> str:
    """A short fixed-width ID / OOD / gap table for the terminal ("edge": seeds whose selection
    lay on an edge of the protocol's grid)."""
    rows = board[board["metric"] == metric]
    if rows.empty:
        return f"(no results for metric {metric})"
    # Text columns as wide as their longest value: a cut name ("icl-calibr") could be another one.
    text = ("model", "pair", "target", "protocol")
    width = {c: max(len(c), *(len(str(v)) for v in rows[c])) for c in text}
    head = " ".join(f"{c:<{width[c]}}" for c in text)
    header = f"{head} {'n':>2} {'ID':>7} {'OOD':>7} {'gap':>7} {'rel':>6} {'edge':>4}"
    lines = [f"{metric}", header, "-" * len(header)]
    for r in rows.itertuples():
        names = " ".join(f"{str(getattr(r, c)):<{width[c]}}" for c in text)
        lines.append(
            f"{names} {r.n_seeds:>2} "
            f"{r.id_score_mean:7.4f} {r.ood_score_mean:7.4f} {r.gap_mean:7.4f} {r.relative_gap_mean:6.1%} {_edge_cell(r):>4}"
        )
    return "\n".join(lines)


def to_markdown(board: pd.DataFrame) -> str:
    """A compact Markdown view: means with 95 % CIs where there are several seeds."""
    cols = ["model", "pair", "target", "protocol", "metric", "n_seeds"]

    def fmt(row: pd.Series, col: str) -> str:
        m, lo, hi = row[f"{col}_mean"], row[f"{col}_ci_low"], row[f"{col}_ci_high"]
        return f"{m:.4f}" if pd.isna(lo) else f"{m:.4f} [{lo:.4f}, {hi:.4f}]"

    lines = ["| " + " | ".join(cols + ["ID", "OOD", "gap", "relative gap"]) + " |"]
    lines.append("|" + "---|" * (len(cols) + 4))
    for _, row in board.iterrows():
        cells = [str(row[c]) for c in cols] + [fmt(row, "id_score"), fmt(row, "ood_score"), fmt(row, "gap")]
        cells.append(f"{row['relative_gap_mean']:.1%}" if pd.notna(row["relative_gap_mean"]) else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
