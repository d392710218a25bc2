"""What the run-time label-free estimates add to a run's scoring time (issue #18 goal: < 5 %).

For every committed text-classification run (minilm-l6, standard protocol), time
:func:`shiftbench.analysis.verdict.run_estimates` on its stored predictions (held-out = id_test, the
committed runs' stand-in; a new run uses source validation, about as large) and divide by the
run's recorded ``eval_seconds`` (scoring the source test split and the target).

    PYTHONPATH=. python benchmarks/estimate_overhead.py [results_dir]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from shiftbench.analysis.estimator_board import labelled_runs, load_run_probs
from shiftbench.analysis.verdict import run_estimates
from shiftbench.results.store import read_runs


def main(results_dir: Path = Path("results")) -> None:
    runs, _ = labelled_runs(results_dir)
    secs = (
        read_runs(results_dir, columns=["run_id", "eval_seconds"])
        .table.to_pandas()
        .drop_duplicates("run_id")
        .set_index("run_id")
    )
    runs = runs[(runs["model"] == "minilm-l6") & (runs["protocol"] == "standard")]
    print("| pair | seed | n_held | n_target | estimates s | eval_seconds | share |")
    print("|---|---|---|---|---|---|---|")
    shares = []
    for r in runs.itertuples():
        p = load_run_probs(results_dir, r.run_id)
        t0 = time.perf_counter()
        run_estimates(p.held_out, p.target, "id_test")
        dt = time.perf_counter() - t0
        ev = float(secs.loc[r.run_id, "eval_seconds"])
        shares.append(dt / ev)
        print(
            f"| {r.pair} | {r.seed} | {len(p.held_out.labels)} | {len(p.target.probs)} | {dt:.2f} | {ev:.1f} | {dt / ev:.1%} |"
        )
    print(f"\nmean share {sum(shares) / len(shares):.1%}, max {max(shares):.1%} over {len(shares)} runs")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("results"))
