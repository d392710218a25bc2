"""The nightly job, runnable locally: suite -> leaderboard -> report -> what moved.

``shiftbench nightly`` runs the ``nightly`` suite (resuming whatever is done), rebuilds
``leaderboard.parquet`` and the HTML report, then compares the new leaderboard with the one the
results dir had before, and prints the rows whose mean moved out of the previous 95 % interval.
The GitHub workflow ``.github/workflows/nightly.yml`` runs exactly this command.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from shiftbench.analysis.leaderboard import LEADERBOARD_FILE

KEY = ["model", "pair", "target", "metric", "protocol", "protocol_hash"]
WATCHED = ["id_score", "ood_score", "gap"]


@dataclass(frozen=True)
class NightlyOutcome:
    new_runs: int
    report: Path | None
    moves: pd.DataFrame  # one row per (key, value) that moved significantly


def read_previous(results_dir: Path) -> pd.DataFrame | None:
    path = Path(results_dir) / LEADERBOARD_FILE
    try:
        return pq.read_table(path).to_pandas()
    except Exception:  # missing or unreadable: nothing to compare with
        return None


def significant_moves(previous: pd.DataFrame | None, current: pd.DataFrame) -> pd.DataFrame:
    """Rows (same model, pair, target, metric and protocol hash) whose mean left the other's 95 % CI.

    A row only counts as moved when the new mean is outside the old interval *and* the old mean is
    outside the new one, so noise within either run's uncertainty is not reported. Rows without
    an interval (one seed, no bootstrap) are compared by their means only when both exist.
    """
    cols = ["model", "pair", "target", "metric", "protocol", "protocol_hash", "value", "before", "after", "change"]
    if previous is None or previous.empty or current.empty:
        return pd.DataFrame(columns=cols)
    merged = previous.merge(current, on=KEY, suffixes=("_before", "_after"))
    rows = []
    for _, r in merged.iterrows():
        for v in WATCHED:
            before, after = r[f"{v}_mean_before"], r[f"{v}_mean_after"]
            lo_b, hi_b = r[f"{v}_ci_low_before"], r[f"{v}_ci_high_before"]
            lo_a, hi_a = r[f"{v}_ci_low_after"], r[f"{v}_ci_high_after"]
            if any(pd.isna(x) for x in (lo_b, hi_b, lo_a, hi_a)):
                continue
            if not lo_b <= after <= hi_b and not lo_a <= before <= hi_a:
                rows.append([*(r[k] for k in KEY), v, before, after, after - before])
    return pd.DataFrame(rows, columns=cols)


def run_nightly(
    results_dir: Path,
    data_dir: Path | None = None,
    cache_dir: Path | None = None,
    registries: tuple = (),
    report: bool = True,
    workers: int = 1,
) -> NightlyOutcome:
    from shiftbench.api import run

    previous = read_previous(results_dir)
    summary = run(
        suite="nightly",
        registries=registries,
        data_dir=data_dir,
        results_dir=results_dir,
        cache_dir=cache_dir,
        workers=workers,
    )
    out = None
    if report:
        from shiftbench.reporting.report import write_report

        out = write_report(Path(results_dir))
    assert summary.leaderboard is not None
    return NightlyOutcome(len(summary.new_results), out, significant_moves(previous, summary.leaderboard))
