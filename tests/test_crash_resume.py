"""SIGKILL a real `shiftbench run` subprocess at each kill point, re-run the same command, and
compare with an uninterrupted run: same rows, same predictions, no duplicates."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from shiftbench.results.store import PREDICTIONS_DIR, read_runs

COMPARED = [
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
    "selection_score",
    "n_id",
    "n_ood",
]


def _run(env_kw, results, cache, fault=None):
    argv = [
        sys.executable,
        "-m",
        "shiftbench",
        "run",
        "--pair",
        "news_to_tweets",
        "--model",
        "tiny",
        "--seeds",
        "0",
        "--protocol",
        env_kw["protocol"],
        "--registry",
        str(env_kw["registries"][0]),
        "--data-dir",
        str(env_kw["data_dir"]),
        "--results-dir",
        str(results),
        "--cache-dir",
        str(cache),
        "--device",
        "cpu",
    ]
    env = {**os.environ, "SHIFTBENCH_NUM_THREADS": "1"}
    env.pop("SHIFTBENCH_FAULT", None)
    if fault:
        env["SHIFTBENCH_FAULT"] = fault
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)


def _snapshot(results):
    rows = read_runs(results).table.to_pandas()[COMPARED].sort_values(["run_id", "metric"]).reset_index(drop=True)
    preds = {p.name: pq.read_table(p).to_pandas() for p in sorted((results / PREDICTIONS_DIR).glob("*.parquet"))}
    return rows, preds


@pytest.fixture(scope="module")
def reference(tiny_registry, tiny_data_dir, tiny_protocol, tmp_path_factory):
    kw = {"registries": [tiny_registry], "data_dir": tiny_data_dir, "protocol": str(tiny_protocol)}
    base = tmp_path_factory.mktemp("reference")
    proc = _run(kw, base / "results", base / "cache")
    assert proc.returncode == 0, proc.stderr
    return kw, _snapshot(base / "results")


# tokenize: before training; train_step:3 mid-epoch; epoch_end:3 after lr #2 epoch 1 (checkpoint
# resume mid-grid); evaluate: after scoring the first target; write_run:2 after the first run
# file, between a predictions file and its run file.
@pytest.mark.parametrize("fault", ["tokenize", "train_step:3", "epoch_end:3", "evaluate", "write_run:2"])
def test_kill_and_rerun_matches_uninterrupted(reference, fault, tmp_path):
    kw, (ref_rows, ref_preds) = reference
    results, cache = tmp_path / "results", tmp_path / "cache"
    killed = _run(kw, results, cache, fault=fault)
    assert killed.returncode == -9, (killed.returncode, killed.stderr[-2000:])
    resumed = _run(kw, results, cache)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    if fault.startswith("epoch_end"):
        assert "resuming after lr #2 epoch 1" in resumed.stderr
    rows, preds = _snapshot(results)
    assert not rows.duplicated(["run_id", "metric"]).any()
    assert rows.equals(ref_rows)
    assert preds.keys() == ref_preds.keys()
    for name in preds:
        assert preds[name][["split", "index", "label", "pred"]].equals(
            ref_preds[name][["split", "index", "label", "pred"]]
        )
        assert np.array_equal(np.stack(preds[name]["probs"]), np.stack(ref_preds[name]["probs"]))
    # The training checkpoints are gone once the fine-tune is cached.
    assert not any((cache / "checkpoints").glob("*/state-*"))
