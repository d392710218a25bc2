"""Four concurrent `shiftbench run` processes on one results dir with overlapping work."""

from __future__ import annotations

import os
import subprocess
import sys

import pyarrow.parquet as pq

import shiftbench
from shiftbench.results.store import RUNS_DIR, read_runs


def _argv(kw, results, cache, pairs, seeds):
    argv = [
        sys.executable,
        "-m",
        "shiftbench",
        "run",
        "--model",
        "tiny",
        "--seeds",
        seeds,
        "--protocol",
        kw["protocol"],
        "--registry",
        str(kw["registries"][0]),
        "--data-dir",
        str(kw["data_dir"]),
        "--results-dir",
        str(results),
        "--cache-dir",
        str(cache),
        "--device",
        "cpu",
    ]
    for p in pairs:
        argv += ["--pair", p]
    return argv


def test_four_concurrent_runs_lose_nothing_and_duplicate_nothing(tiny_env, tmp_path, monkeypatch):
    # One intra-op thread everywhere: float reductions depend on the thread count, and the
    # sequential reference below must compute exactly what the subprocesses did.
    monkeypatch.setenv("SHIFTBENCH_NUM_THREADS", "1")
    results, cache = tmp_path / "results", tmp_path / "cache"
    jobs = [
        (["news_to_tweets"], "0,1"),
        (["news_to_forum", "news_to_tweets"], "1,0"),
        (["news_to_tweets", "reviews_to_forum"], "1"),
        (["reviews_to_forum"], "0,1"),
    ]
    env = {**os.environ, "SHIFTBENCH_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            _argv(tiny_env, results, cache, p, s), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for p, s in jobs
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]

    # Expected: news_to_tweets (2 targets) x 2 seeds + news_to_forum x 2 + reviews_to_forum x 2.
    loaded = read_runs(results)
    assert loaded.skipped == ()
    rows = loaded.table.to_pandas()
    assert rows["run_id"].nunique() == 4 + 2 + 2
    assert not rows.duplicated(["run_id", "metric"]).any()
    files = list((results / RUNS_DIR).glob("*.parquet"))
    assert len(files) == 8
    for f in files:
        pq.read_table(f)  # every file complete
    # The leaderboard written last has every run.
    board = pq.read_table(results / "leaderboard.parquet").to_pandas()
    assert board[board.metric == "macro_f1"]["n_seeds"].sum() == 8

    # And the numbers equal a single sequential process.
    seq = {**tiny_env, "results_dir": tmp_path / "seq", "cache_dir": tmp_path / "seq-cache"}
    for p, s in jobs:
        shiftbench.run(pairs=p, seeds=s, **seq)
    ref = read_runs(seq["results_dir"]).table.to_pandas()
    cols = ["run_id", "metric", "id_score", "ood_score", "selected_lr", "selected_epoch"]
    a = rows[cols].sort_values(["run_id", "metric"]).reset_index(drop=True)
    b = ref[cols].sort_values(["run_id", "metric"]).reset_index(drop=True)
    assert a.equals(b)
