"""`--executor ray` on a local 2-CPU Ray cluster gives the rows the local executor gives."""

from __future__ import annotations

import importlib.util

import pytest

import shiftbench
from shiftbench.results.store import read_runs

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None, reason="ray not installed (pip install 'shiftbench[ray]')"
)

COLS = [
    "run_id",
    "finetune_id",
    "model",
    "pair",
    "target",
    "seed",
    "metric",
    "id_score",
    "ood_score",
    "gap",
    "selected_lr",
    "selected_epoch",
    "n_id",
    "n_ood",
]


def test_ray_executor_matches_local(tiny_env, tmp_path):
    import ray

    # Both executors with one torch thread per fine-tune, so the float sums agree exactly.
    local = shiftbench.run(pairs=["news_to_tweets", "reviews_to_forum"], seeds="0,1", **tiny_env)
    remote_env = {**tiny_env, "results_dir": tmp_path / "ray-results", "cache_dir": tmp_path / "ray-cache"}
    try:
        on_ray = shiftbench.run(
            pairs=["news_to_tweets", "reviews_to_forum"], seeds="0,1", executor="ray", cpus_per_task=1, **remote_env
        )
    finally:
        ray.shutdown()
    assert len(on_ray.new_results) == len(local.new_results) == 6
    a = (
        read_runs(tiny_env["results_dir"])
        .table.to_pandas()[COLS]
        .sort_values(["run_id", "metric"])
        .reset_index(drop=True)
    )
    b = (
        read_runs(remote_env["results_dir"])
        .table.to_pandas()[COLS]
        .sort_values(["run_id", "metric"])
        .reset_index(drop=True)
    )
    assert a.equals(b)
    assert set(on_ray.leaderboard["n_seeds"]) == {2}


def test_address_without_ray_executor_is_refused(tiny_env, capsys):
    from shiftbench.cli import main

    rc = main(
        [
            "run",
            "--pair",
            "news_to_forum",
            "--registry",
            str(tiny_env["registries"][0]),
            "--address",
            "auto",
            "--data-dir",
            str(tiny_env["data_dir"]),
            "--dry-run",
        ]
    )
    assert rc == 2 and "--address is only meaningful with --executor ray" in capsys.readouterr().err
