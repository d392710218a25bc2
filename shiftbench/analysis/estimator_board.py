"""The estimator leaderboard: how well does each label-free estimate match the true OOD accuracy?

Every labelled run with one label per example (text classification, text pairs) under ``results/`` is a test of the estimators of
:mod:`shiftbench.analysis.estimate`: its stored per-example probabilities give the estimates (from the
in-domain held-out split and the target's predictions only), its stored target labels give the
truth. Per (pair, target) and estimator: the mean absolute error of the OOD-accuracy estimate
over runs, with a 95 % percentile-bootstrap interval over runs; and the reliability verdict's
two error rates (:mod:`shiftbench.analysis.verdict`).

Held-out split: ``source_validation`` (the selected model on source validation) for runs that
stored it (runs made since schema version 3), ``id_test`` for the committed runs, which did not:
per (pair, target, data fingerprints) group, source validation when every run of the group has it
(the agreement line needs every model on the same held-out examples), else ``id_test``. See
:mod:`shiftbench.analysis.estimate`.

``no_drop`` (OOD = ID accuracy) is the baseline every estimator must beat. ALine-S and ALine-D are
fitted per (pair, target, data fingerprints) over every run on that board scored on the same
examples.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from shiftbench.analysis.estimate import GROUP_METHODS, N_BOOT, Estimate, HeldOut, Target
from shiftbench.analysis.verdict import assess, judge
from shiftbench.core.atomic import write_atomic
from shiftbench.core.errors import ShiftbenchError, one_line
from shiftbench.results.store import predictions_path, read_runs
from shiftbench.tasks import get_task

ESTIMATOR_BOARD_FILE = "estimator_leaderboard.parquet"
ESTIMATES_FILE = "estimates.parquet"
ESTIMATOR_BOARD_SCHEMA_VERSION = 1
BOARD_ESTIMATORS = ("no_drop", "avg_conf", "doc", "atc_mc", "atc_ne", "bbse", "aline_s", "aline_d")
HELD_OUT_SPLIT = (
    "id_test"  # the labelled in-domain split of the committed runs (no source-validation predictions stored)
)
PREFERRED_HELD_OUT = "source_validation"  # stored by runs since schema version 3
_GROUP = ["pair", "target", "source_fingerprint", "target_fingerprint"]
_RUN_COLUMNS = [
    "run_id",
    "model",
    "protocol",
    "seed",
    "pair",
    "source",
    "target",
    "task",
    "metric",
    "id_score",
    "ood_score",
    *_GROUP[2:],
]


@dataclass(frozen=True)
class RunProbs:
    """One run's stored predictions: labelled held-out split, target probabilities, and the
    target labels (used only to score the estimates, never by them)."""

    run_id: str
    held_out: HeldOut
    target: Target
    target_labels: np.ndarray | None


def load_run_probs(results_dir: Path, run_id: str, held_out_split: str = HELD_OUT_SPLIT) -> RunProbs:
    path = predictions_path(results_dir, run_id)
    try:
        table = pq.read_table(path, columns=["split", "index", "label", "probs"])
    except FileNotFoundError:
        raise ShiftbenchError(f"{path}: predictions of run {run_id} are missing") from None
    except Exception as exc:  # unreadable or foreign file: one line naming it
        why = one_line(exc)
        raise ShiftbenchError(f"{path}: unreadable predictions of run {run_id} ({why})") from None
    split = np.asarray(table.column("split").to_numpy(zero_copy_only=False))
    index = table.column("index").to_numpy()
    labels = table.column("label").to_numpy(zero_copy_only=False)
    probs_col = table.column("probs").combine_chunks()
    lengths = np.diff(probs_col.offsets.to_numpy())
    if lengths.size and (lengths != lengths[0]).any():
        raise ShiftbenchError(f"{path}: rows have different numbers of class probabilities")
    probs = probs_col.values.to_numpy().astype(np.float64).reshape(len(table), -1) if len(table) else np.empty((0, 2))
    parts = {}
    for name in (held_out_split, "ood_test"):
        rows = np.flatnonzero(split == name)
        if not rows.size:
            raise ShiftbenchError(f"{path}: no {name} predictions")
        rows = rows[np.argsort(index[rows], kind="stable")]
        parts[name] = (labels[rows], probs[rows])
    held_labels, held_probs = parts[held_out_split]
    if pd.isna(held_labels).any():
        raise ShiftbenchError(f"{path}: {held_out_split} has unlabelled rows; the held-out split must be labelled")
    ood_labels, ood_probs = parts["ood_test"]
    truth = None if pd.isna(ood_labels).any() else ood_labels.astype(np.int64)
    return RunProbs(run_id, HeldOut(held_labels.astype(np.int64), held_probs), Target(ood_probs), truth)


def _has_split(results_dir: Path, run_id: str, split: str) -> bool:
    """Whether a run's predictions file holds rows of ``split`` (False when unreadable: the
    regular read reports it)."""
    try:
        column = pq.read_table(predictions_path(results_dir, run_id), columns=["split"]).column(0)
    except Exception:
        return False
    return bool(pc.any(pc.equal(column, split)).as_py())


def labelled_runs(results_dir: Path) -> tuple[pd.DataFrame, tuple[tuple[Path, str], ...]]:
    """One row per labelled run of a task with one label per example (its accuracy row): the
    estimators read one probability vector per example."""
    loaded = read_runs(results_dir, columns=_RUN_COLUMNS)
    frame = loaded.table.to_pandas()
    per_example = frame["task"].map(lambda t: not get_task(t).word_level).astype(bool)
    frame = frame[per_example & (frame["metric"] == "accuracy") & frame["ood_score"].notna()]
    return frame.drop_duplicates("run_id").sort_values(
        ["pair", "target", "model", "protocol", "seed", "run_id"]
    ).reset_index(drop=True), loaded.skipped


def estimate_board(
    results_dir: Path, n_boot: int = N_BOOT, seed: int = 0
) -> tuple[pd.DataFrame, tuple[tuple[Path, str], ...]]:
    """Per run and estimator: the OOD-accuracy estimate, its interval, the truth, the error,
    the label-free evidence and the verdict on that estimate (one row per (run, estimator);
    ``default`` marks the run's headline estimate). Also the files left out, with why: unreadable
    run files, and runs whose predictions are missing or unreadable (as the leaderboard does,
    they are reported and never touched)."""
    results_dir = Path(results_dir)
    runs, unreadable = labelled_runs(results_dir)
    skipped = list(unreadable)
    rows = []
    for _, group in runs.groupby(_GROUP, sort=True):
        kept, probs = [], []
        held_split = (
            PREFERRED_HELD_OUT
            if all(_has_split(results_dir, r, PREFERRED_HELD_OUT) for r in group["run_id"])
            else HELD_OUT_SPLIT
        )
        for run in group.itertuples():
            try:
                probs.append(load_run_probs(results_dir, run.run_id, held_split))
                kept.append(run)
            except ShiftbenchError as exc:
                skipped.append((predictions_path(results_dir, run.run_id), str(exc).split(": ", 1)[-1]))
        if not probs:
            continue
        assessed = assess([p.held_out for p in probs], [p.target for p in probs], n_boot=n_boot, seed=seed)
        for run, p, a in zip(kept, probs, assessed):
            truth = float((p.target.preds == p.target_labels).mean()) if p.target_labels is not None else np.nan
            k = p.held_out.probs.shape[1]
            true_priors = (
                (np.bincount(p.target_labels, minlength=k) / len(p.target_labels)).tolist()
                if p.target_labels is not None
                else None
            )
            no_drop = Estimate("no_drop", "accuracy", a.run.held_out_accuracy, np.nan, np.nan)
            for e in (no_drop, *a.estimates):
                verdict = a.verdicts.get(e.method) or judge(a.evidence, e.method)
                # The verdict a single model would get (no agreement line): what a user with one
                # fine-tune sees, so its error rates are reported apart.
                alone = judge(replace(a.evidence, aline_r2=None, aline_gap=None), e.method)
                rows.append(
                    {
                        "run_id": run.run_id,
                        "model": run.model,
                        "protocol": run.protocol,
                        "seed": int(run.seed),
                        "pair": run.pair,
                        "source": run.source,
                        "target": run.target,
                        "held_out_split": held_split,
                        "estimator": e.method,
                        "estimate": e.value,
                        "low": e.low,
                        "high": e.high,
                        "true_accuracy": truth,
                        "error": e.value - truth,
                        "default": e.method == a.default.method,
                        "temperature": a.run.temperature,
                        **a.evidence.as_dict(),
                        "trusted": verdict.trusted,
                        "reasons": "; ".join(verdict.reasons),
                        "trusted_without_line": alone.trusted if e.method not in GROUP_METHODS else verdict.trusted,
                        # label distributions (label-space order): held-out, BBSE's estimate for the target, and the truth
                        "source_priors": list(a.run.source_priors),
                        "estimated_target_priors": list(a.run.target_priors),
                        "true_target_priors": true_priors,
                    }
                )
    return pd.DataFrame(rows), tuple(skipped)


def _mae_interval(abs_err: np.ndarray, n_boot: int, rng: np.random.Generator) -> tuple[float, float]:
    if len(abs_err) < 2:
        return np.nan, np.nan
    means = abs_err[rng.integers(0, len(abs_err), (n_boot, len(abs_err)))].mean(axis=1)
    lo, hi = np.quantile(means, [0.025, 0.975])
    return float(lo), float(hi)


BAD_ERROR = 0.10  # an estimate off by more than this must be flagged (issue #18)
GOOD_ERROR = 0.05  # an estimate within this should be trusted


def summarise(per_run: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per (pair, target, estimator) and over all pairs ("all"): MAE with a bootstrap interval
    over runs, and the verdict's error rates for that estimator's estimates:
    ``missed_bad`` = unflagged among |error| > 0.10, ``false_alarm`` = flagged among |error| < 0.05."""
    rng = np.random.default_rng(seed)
    out = []
    scopes = [(p, t, g) for (p, t), g in per_run.groupby(["pair", "target"], sort=True)] + [("all", "all", per_run)]
    for pair, target, g in scopes:
        for method in (*BOARD_ESTIMATORS, "default"):
            rows = g[g["default"]] if method == "default" else g[g["estimator"] == method]
            if rows.empty:
                continue
            err = rows["error"].abs().to_numpy()
            lo, hi = _mae_interval(err, n_boot, rng)
            bad, good = err > BAD_ERROR, err < GOOD_ERROR
            trusted = rows["trusted"].to_numpy(bool)
            alone = rows["trusted_without_line"].to_numpy(bool)
            covered = ((rows["low"] <= rows["true_accuracy"]) & (rows["true_accuracy"] <= rows["high"])).to_numpy()
            out.append(
                {
                    "pair": pair,
                    "target": target,
                    "estimator": method,
                    "n_runs": len(rows),
                    "mae": float(err.mean()),
                    "mae_low": lo,
                    "mae_high": hi,
                    "mean_error": float(rows["error"].mean()),
                    "n_bad": int(bad.sum()),
                    "missed_bad": int((bad & trusted).sum()),
                    "n_good": int(good.sum()),
                    "false_alarm": int((good & ~trusted).sum()),
                    "missed_bad_without_line": int((bad & alone).sum()),
                    "false_alarm_without_line": int((good & ~alone).sum()),
                    "interval_coverage": float(covered.mean()) if rows["low"].notna().any() else np.nan,
                    "estimator_board_schema_version": ESTIMATOR_BOARD_SCHEMA_VERSION,
                }
            )
    return pd.DataFrame(out)


def _rate(k: int, n: int) -> str:
    return f"{k}/{n} ({k / n:.0%})" if n else "0/0"


def to_markdown(summary: pd.DataFrame, held_out_split: str = HELD_OUT_SPLIT) -> str:
    """MAE per pair (rows) and estimator (columns), then the verdict's error rates per estimator."""
    methods = [m for m in (*BOARD_ESTIMATORS, "default") if m in set(summary["estimator"])]
    lines = [
        f"OOD accuracy: mean absolute error of each label-free estimate over runs [95 % bootstrap over runs]; "
        f"held-out split {held_out_split}",
        "",
        "| pair | target | runs | " + " | ".join(methods) + " |",
        "|---|---|---|" + "---|" * len(methods),
    ]
    for (pair, target), g in summary.groupby(["pair", "target"], sort=False):
        by = g.set_index("estimator")
        cells = [
            f"{by.loc[m, 'mae']:.3f} [{by.loc[m, 'mae_low']:.3f}, {by.loc[m, 'mae_high']:.3f}]" if m in by.index else ""
            for m in methods
        ]
        lines.append(f"| {pair} | {target} | {int(by['n_runs'].max())} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Reliability verdict (trusted / flagged per run, from label-free evidence only): missed = "
        f"|error| > {BAD_ERROR} left trusted, false alarm = |error| < {GOOD_ERROR} flagged",
        "",
        "| estimator | missed bad estimates | false alarms | missed, single model (no line; its default is doc) | false alarms, single model | "
        "truth inside the 95 % interval |",
        "|---|---|---|---|---|---|",
    ]
    for m in methods:
        r = summary[(summary["pair"] == "all") & (summary["estimator"] == m)].iloc[0]
        cov = f"{r['interval_coverage']:.0%}" if pd.notna(r["interval_coverage"]) else "-"
        alone = (
            ["n/a (needs >= 3 models)"] * 2
            if m in (*GROUP_METHODS, "default")
            else [
                _rate(int(r["missed_bad_without_line"]), int(r["n_bad"])),
                _rate(int(r["false_alarm_without_line"]), int(r["n_good"])),
            ]
        )
        lines.append(
            f"| {m} | {_rate(int(r['missed_bad']), int(r['n_bad']))} | {_rate(int(r['false_alarm']), int(r['n_good']))} | "
            f"{alone[0]} | {alone[1]} | {cov} |"
        )
    return "\n".join(lines) + "\n"


def write_table(frame: pd.DataFrame, path: Path, held_out_split: str = HELD_OUT_SPLIT) -> None:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[b"shiftbench.estimator_board_schema_version"] = str(ESTIMATOR_BOARD_SCHEMA_VERSION).encode()
    meta[b"shiftbench.held_out_split"] = held_out_split.encode()
    table = table.replace_schema_metadata(meta)
    write_atomic(Path(path), lambda p: pq.write_table(table, p))


__all__ = ["RunProbs", "estimate_board", "labelled_runs", "load_run_probs", "summarise", "to_markdown", "write_table"]
