"""The leaderboard: derived from the immutable run files, never edited by hand.

One row per (model, model sha, pair, source, target, task, metric, protocol, protocol hash,
source and target data fingerprints, schema version): rows that differ in any of these are
never pooled. Columns: number of seeds, mean and std over seeds of ID, OOD, gap and relative
gap, and one kind of 95 % interval for each, on every row (``ci_method`` says which):

* ``seeds + examples`` (>= 2 seeds): :func:`shiftbench.analysis.stats.seed_aware_interval` on the
  per-seed values, with the shared test-set variance from 1,000 example-bootstrap resamples of
  the mean over seeds (one resample shared by the seeds; ID and OOD resampled independently;
  units and metrics from :mod:`shiftbench.analysis.taskstats`, so NER resamples sentences);
* ``examples only (1 seed)``: the same with one seed: example noise only, conditional on that
  fine-tune (markdown and the report mark these rows with a dagger);
* ``t over seeds (no predictions)``: a run's predictions are missing, so only the spread over
  seeds is known (a t-interval; test-set noise is not in it).

Interval ends are clipped to what the value can be. ``*_se`` columns hold the standard errors.

``rank`` (per pair, target, metric and protocol, on the OOD score; lower is better for
``ece``/``ece_debiased``/``brier``): the best model has rank 1, and so does every model it is not
significantly better than; among the rest the best starts the next tier, whose rank is one more
than the number of models ranked above it (competition ranking: 1, 1, 3). "Significantly
better": a one-sided 5 % test on the difference of the two OOD means, whose half-width is the
two rows' 95 % half-widths added in quadrature and rescaled from two- to one-sided
(x 1.645 / 1.96). It treats the two rows as independent; they share the test set, whose noise
then partly cancels, so the test is conservative (more ties, never a false order).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from scipy import special

from shiftbench.core.atomic import write_atomic
from shiftbench.core.locks import claim
from shiftbench.registry.selection import LR_EDGES
from shiftbench.results.store import PREDICTIONS_DIR, RUNS_DIR, LoadedRuns, read_runs

LEADERBOARD_SCHEMA_VERSION = 3  # 2: one interval method, ``*_se`` and ``rank`` columns; 3: n_edge_selections
LEADERBOARD_FILE = "leaderboard.parquet"
_VERSION_KEY = b"shiftbench.leaderboard_schema_version"
_SKIPPED_KEY = b"shiftbench.skipped_run_files"
_INPUTS_KEY = b"shiftbench.built_from"
GROUP_KEYS = [
    "model",
    "model_sha256",
    "pair",
    "source",
    "target",
    "task",
    "metric",
    "protocol",
    "protocol_hash",
    "source_fingerprint",
    "target_fingerprint",
    "schema_version",
]
VALUES = ["id_score", "ood_score", "gap", "relative_gap"]
# Where each value can lie: every metric but one is a score in [0, 1] (accuracy, F1, precision,
# recall, ECE), so gap = ID - OOD is in [-1, 1] and relative gap = gap / ID is at most 1. A t-interval
# over 2-3 seeds can reach past these; its ends are clipped to them (a CI of [0.11, 1.12] for an
# F1 says no more than [0.11, 1]).
BOUNDS = {"id_score": (0.0, 1.0), "ood_score": (0.0, 1.0), "gap": (-1.0, 1.0), "relative_gap": (-np.inf, 1.0)}
# The exception: the multi-class Brier score (taskstats) lies in [0, 2], so its bounds scale by 2.
_BOUND_SCALE = {"brier": 2.0}


def _bounds(col: str, metric) -> tuple:
    """Where ``col`` can lie for ``metric`` (a name, or an array of names: arrays of bounds)."""
    low, high = BOUNDS[col]
    scale = np.ones(np.shape(metric))
    for name, factor in _BOUND_SCALE.items():  # vectorised: a leaderboard may have 1M rows
        scale = np.where(np.asarray(metric) == name, factor, scale)
    if col == "relative_gap":
        return low, high
    return low * scale, high * scale


def _t_halfwidth(std: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Half-width of the 95 % t-interval of a mean over n seeds (NaN for n < 2)."""
    n = np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        q = np.where(n >= 2, special.stdtrit(np.maximum(n - 1, 1), 0.975), np.nan)
        return q * np.asarray(std, dtype=float) / np.sqrt(n)


def _seed_lists(runs: pd.DataFrame, group_ids: np.ndarray, n_groups: int) -> list[str]:
    """ "0,1,2" per group, without a Python call per row (1M rows in well under a second)."""
    order = np.lexsort((runs["seed"].to_numpy(), group_ids))
    g, seeds = group_ids[order], runs["seed"].to_numpy()[order]
    bounds = np.flatnonzero(np.diff(g)) + 1
    return [",".join(map(str, np.unique(chunk))) for chunk in np.split(seeds, bounds)][:n_groups]


EDGE_COLUMNS = ["selected_lr_edge", "selected_epoch_at_edge"]


def stored_edges(runs: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Per run row, from its edge columns: (selected at an edge of the grid, had an edge to be at);
    see shiftbench.registry.selection.SelectionEdges, whose ``at_edge`` and ``applicable`` these are."""
    lr_edge, epoch_edge = runs["selected_lr_edge"], runs["selected_epoch_at_edge"]
    # `== True`, not truth-testing: the epoch column holds True, False and None
    at_edge = lr_edge.isin(LR_EDGES).to_numpy() | (epoch_edge == True).to_numpy()  # noqa: E712
    return at_edge, (lr_edge.notna() | epoch_edge.notna()).to_numpy()


def _edge_selections(runs: pd.DataFrame, n_groups: int) -> pd.arrays.IntegerArray:
    """Per leaderboard row (in ``aggregate``'s group order): how many of its seeds selected at an
    edge of the protocol's grid (the smallest or largest lr, or the last epoch; see
    shiftbench.registry.selection); <NA> where no seed had an edge to be at (one lr and one epoch,
    eval-only, icl) or the frame has no edge columns."""
    if not set(EDGE_COLUMNS) <= set(runs.columns):
        return pd.array([pd.NA] * n_groups, dtype="Int64")
    at_edge, applicable = stored_edges(runs)
    flagged = runs[GROUP_KEYS].assign(_edge_seed=runs["seed"].where(at_edge), _applicable=applicable)
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
        low, high = _bounds(col, out.index.get_level_values("metric").to_numpy())
        out[f"{col}_ci_low"] = np.clip(mean.to_numpy() - half, low, high)
        out[f"{col}_ci_high"] = np.clip(mean.to_numpy() + half, low, high)
        out[f"{col}_se"] = std.to_numpy() / np.sqrt(n)
    out["ci_method"] = np.where(n >= 2, CI_SEEDS_ONLY, None)  # type: ignore[call-overload]  # an object column: the label or None
    out = out.reset_index()
    out["leaderboard_schema_version"] = LEADERBOARD_SCHEMA_VERSION
    return out


N_BOOT = 1000
CI_SEEDS_EXAMPLES = "seeds + examples"
CI_EXAMPLES_ONLY = "examples only (1 seed)"
CI_SEEDS_ONLY = "t over seeds (no predictions)"


def _label_space(results_dir: Path, run_id: str) -> tuple[str, ...]:
    """One run's label space, read only where needed (a list column is slow to read for 1M rows)."""
    from shiftbench.results.store import run_path

    return tuple(pq.read_table(run_path(results_dir, run_id), columns=["label_space"]).column(0)[0].as_py())


def _group_seed(run_ids: list[str]) -> np.random.SeedSequence:
    """A resampling seed that depends on the runs only, not on the order rows are built in."""
    return np.random.SeedSequence(int(hashlib.sha256(",".join(sorted(run_ids)).encode()).hexdigest()[:16], 16))


def _seed_aware(board: pd.DataFrame, runs: pd.DataFrame, results_dir: Path) -> pd.DataFrame:
    """Replace the intervals of every row whose runs kept their predictions by the seed- and
    example-aware ones (one example bootstrap per group of runs serves all its metrics)."""
    from shiftbench.analysis.stats import bootstrap_weights, seed_aware_interval
    from shiftbench.analysis.taskstats import load_run_stats, resampled_unit_sums, task_kind
    from shiftbench.core.errors import ShiftbenchError

    board = board.copy()
    for col in VALUES:
        board[f"{col}_half"] = np.nan
    run_keys = [k for k in GROUP_KEYS if k != "metric"]
    row_index = {key: i for i, key in enumerate(zip(*(board[k] for k in GROUP_KEYS)))}
    updates: dict[int, list] = {}
    weights: dict[tuple, np.ndarray] = {}
    for key, group in runs.groupby(run_keys, sort=True, dropna=False, observed=True):
        per_seed = group.drop_duplicates(["seed", "metric"]).sort_values("seed")
        run_ids = list(dict.fromkeys(per_seed["run_id"]))
        try:
            kind = task_kind(str(group["task"].iloc[0]))
            tags = _label_space(results_dir, run_ids[0])
            stats = [load_run_stats(results_dir, rid, kind.name, tags) for rid in run_ids]
        except (ShiftbenchError, KeyError, OSError):
            continue  # no predictions kept (or another task): the row keeps the spread over seeds
        allowed = set(kind.metrics(tags))
        wanted = [m for m in per_seed["metric"].unique() if m in allowed]
        if not wanted:
            continue
        cols = np.unique(np.concatenate([kind.columns(m, tags) for m in wanted]))  # resample only what is read
        sums = {}
        for split, fp_col in (("id", "source_fingerprint"), ("ood", "target_fingerprint")):
            if any(r.split(split) is None for r in stats):
                continue  # an unlabelled target: only the ID scores have intervals
            blocks = [r.labelled(split).values for r in stats]
            # One resample per test set, shared by every row scored on it (each row's interval is
            # valid on its own; sharing only saves drawing the same multiplicities again).
            wkey = (split, group[fp_col].iloc[0], blocks[0].shape[0])
            if wkey not in weights:
                weights[wkey] = bootstrap_weights(
                    blocks[0].shape[0], N_BOOT, np.random.default_rng(_group_seed([repr(wkey)]))
                )
            sums[split] = resampled_unit_sums(blocks, N_BOOT, None, cols, weights[wkey])
        for metric, rows in per_seed.groupby("metric", sort=True):
            i = row_index.get((*key[:6], metric, *key[6:]))
            if i is None or metric not in allowed or list(rows["run_id"]) != run_ids:
                continue
            fn = kind.metric_fn(metric, tags)
            rep_id = fn(sums["id"])  # (R, S)
            rep_ood = fn(sums["ood"]) if "ood" in sums else np.full_like(rep_id, np.nan)  # NaN: skipped below
            pt_id, pt_ood = rows["id_score"].to_numpy(float), rows["ood_score"].to_numpy(float)  # recorded per seed
            with np.errstate(invalid="ignore", divide="ignore"):
                values = {
                    "id_score": (pt_id, rep_id),
                    "ood_score": (pt_ood, rep_ood),
                    "gap": (pt_id - pt_ood, rep_id - rep_ood),
                    "relative_gap": ((pt_id - pt_ood) / pt_id, (rep_id - rep_ood) / rep_id),
                }
            for col, (points, reps) in values.items():
                if not np.isfinite(points).all():
                    continue
                ci = seed_aware_interval(points, reps)
                lo, hi = _bounds(col, metric)
                updates.setdefault(i, []).append(
                    (col, np.clip(ci.low, lo, hi), np.clip(ci.high, lo, hi), ci.se, ci.half_width)
                )
            updates.setdefault(i, []).append(
                ("ci_method", CI_SEEDS_EXAMPLES if len(run_ids) >= 2 else CI_EXAMPLES_ONLY)
            )
    for i, items in updates.items():
        for item in items:
            if item[0] == "ci_method":
                board.at[i, "ci_method"] = item[1]
                continue
            col, low, high, se, half = item
            board.at[i, f"{col}_ci_low"], board.at[i, f"{col}_ci_high"], board.at[i, f"{col}_se"] = low, high, se
            board.at[i, f"{col}_half"] = half
    return board


def _ranks(board: pd.DataFrame) -> np.ndarray:
    """Tiered competition rank on the OOD score per (pair, target, metric, protocol); see the
    module docstring."""
    from shiftbench.analysis.taskstats import lower_is_better

    rank = np.full(len(board), np.nan)
    half = board["ood_score_half"].to_numpy(float) if "ood_score_half" in board else np.full(len(board), np.nan)
    half = np.where(np.isfinite(half), half, 0.0)
    mean = board["ood_score_mean"].to_numpy(float)
    one_sided = special.ndtri(0.95) / special.ndtri(0.975)
    for (_, _, metric, _), idx in board.groupby(["pair", "target", "metric", "protocol"], sort=False).indices.items():
        sign = -1.0 if lower_is_better(metric) else 1.0
        idx = [j for j in idx if np.isfinite(mean[j])]  # an unlabelled target has no OOD score: no rank
        left = sorted(idx, key=lambda j: -sign * mean[j])
        placed = 0
        while left:
            best = left[0]
            tier = [j for j in left if sign * (mean[best] - mean[j]) <= one_sided * np.hypot(half[best], half[j])]
            rank[tier] = placed + 1
            placed += len(tier)
            left = [j for j in left if j not in tier]
    return rank


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
        board = _seed_aware(board, runs, Path(results_dir))
    if not board.empty:
        board["rank"] = _ranks(board)
        board = board.drop(columns=[c for c in board.columns if c.endswith("_half")])
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
# ends clipped to the value's range; 3: seed- and example-aware intervals, rank; 4: n_edge_selections), so a
# leaderboard written by older code is not reused.
AGGREGATION_VERSION = 4


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
        if (
            meta.get(_VERSION_KEY) != str(LEADERBOARD_SCHEMA_VERSION).encode()
            or meta.get(_INPUTS_KEY) != inputs.encode()
        ):
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


def edge_cell(n_edge: Any, n_seeds: int, none: str = "–") -> str:
    """ "k/n": k of a row's n seeds selected at an edge of the grid; ``none`` where no seed had an
    edge to be at (the terminal table uses "-", the markdown view and the report "–")."""
    return none if pd.isna(n_edge) else f"{int(n_edge)}/{int(n_seeds)}"


def _edge_cell(row) -> str:
    return edge_cell(getattr(row, "n_edge_selections", pd.NA), row.n_seeds, none="-")


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
        if pd.isna(r.ood_score_mean):  # an unlabelled target: no true OOD score (see the label-free estimates)
            lines.append(f"{names} {r.n_seeds:>2} {r.id_score_mean:7.4f} {'-':>7} {'-':>7} {'-':>6} {_edge_cell(r):>4}")
            continue
        lines.append(
            f"{names} {r.n_seeds:>2} "
            f"{r.id_score_mean:7.4f} {r.ood_score_mean:7.4f} {r.gap_mean:7.4f} {r.relative_gap_mean:6.1%} {_edge_cell(r):>4}"
        )
    return "\n".join(lines)


def to_markdown(board: pd.DataFrame) -> str:
    """A compact Markdown view: means with 95 % intervals (seeds + examples; a dagger marks a
    one-seed row, whose interval holds example noise only), the OOD rank, and "at grid edge":
    k/n seeds whose selection lay on an edge of the protocol's grid ("–": no edge to be at)."""
    cols = ["model", "pair", "target", "protocol", "metric", "n_seeds"]

    def fmt(row: pd.Series, col: str) -> str:
        m, lo, hi = row[f"{col}_mean"], row[f"{col}_ci_low"], row[f"{col}_ci_high"]
        mark = "†" if row.get("ci_method") == CI_EXAMPLES_ONLY else ""
        return f"{m:.4f}" if pd.isna(lo) else f"{m:.4f} [{lo:.4f}, {hi:.4f}]{mark}"

    lines = ["| " + " | ".join(cols + ["ID", "OOD", "gap", "relative gap", "OOD rank", "at grid edge"]) + " |"]
    lines.append("|" + "---|" * (len(cols) + 6))
    for _, row in board.iterrows():
        cells = [str(row[c]) for c in cols] + [fmt(row, "id_score"), fmt(row, "ood_score"), fmt(row, "gap")]
        cells.append(f"{row['relative_gap_mean']:.1%}" if pd.notna(row["relative_gap_mean"]) else "")
        cells.append(str(int(row["rank"])) if "rank" in row and pd.notna(row["rank"]) else "")
        cells.append(edge_cell(row.get("n_edge_selections", pd.NA), row["n_seeds"]))
        lines.append("| " + " | ".join(cells) + " |")
    if "ci_method" in board and (board["ci_method"] == CI_EXAMPLES_ONLY).any():
        lines.append("")
        lines.append("† one seed: the interval holds test-example noise only (conditional on that fine-tune).")
    return "\n".join(lines) + "\n"
