"""The nightly workflow file and the leaderboard diff that `shiftbench nightly` prints."""

from __future__ import annotations

import re
import shlex

import pandas as pd
import yaml

from shiftbench.cli import build_parser
from shiftbench.nightly import significant_moves
from shiftbench.registry.catalog import load_catalog

from .conftest import REPO

WORKFLOW = REPO / ".github" / "workflows" / "nightly.yml"


def test_workflow_is_valid_yaml_with_the_expected_shape():
    doc = yaml.safe_load(WORKFLOW.read_text())
    triggers = doc.get("on", doc.get(True))  # YAML 1.1 reads a bare `on` key as True
    assert isinstance(doc["name"], str)
    assert set(triggers) == {"schedule", "workflow_dispatch"}
    (cron,) = [c["cron"] for c in triggers["schedule"]]
    fields = cron.split()
    assert len(fields) == 5 and all(re.fullmatch(r"[\d*/,-]+", f) for f in fields)
    assert doc["permissions"]["contents"] == "write"  # it commits the leaderboard
    (job,) = doc["jobs"].values()
    assert job["runs-on"] == "ubuntu-latest" and isinstance(job["timeout-minutes"], int)
    for step in job["steps"]:
        assert isinstance(step, dict) and (("uses" in step) ^ ("run" in step)), step
        if "uses" in step:
            assert re.fullmatch(r"[\w.-]+/[\w.-]+@v\d+", step["uses"]), step["uses"]
    runs = "\n".join(s["run"] for s in job["steps"] if "run" in s)
    assert "python -m shiftbench nightly" in runs
    assert "torch==2.13.0" in runs and 'pip install -e ".[test,minilm]"' in runs
    # the nightly command line is one the CLI parses (a misspelt flag fails here, not at 2 a.m.)
    (command,) = [line.strip() for line in runs.splitlines() if "python -m shiftbench nightly" in line]
    args = build_parser().parse_args(shlex.split(command.split("python -m shiftbench ", 1)[1]))
    assert args.command == "nightly" and args.results_dir == "results"
    uploads = [s for s in job["steps"] if s.get("uses", "").startswith("actions/upload-artifact")]
    assert uploads and "results/leaderboard.parquet" in uploads[0]["with"]["path"]


def test_nightly_suite_is_the_default_pairs_with_minilm_one_seed_standard_v2():
    catalog = load_catalog(include_env=False)
    nightly, default = catalog.suites.get("nightly"), catalog.suites.get("default")
    assert nightly.pairs[: len(default.pairs)] == default.pairs
    # ... plus the NER pairs, CoNLL-2003 ones included (skipped with a warning where it is absent).
    extra = [catalog.pairs.get(p) for p in nightly.pairs[len(default.pairs) :]]
    assert {p.task for p in extra} == {"token-classification"}
    assert any(catalog.datasets.get(p.source).optional for p in extra)
    assert (
        nightly.models == ("minilm-l6",)
        and nightly.seeds == (0,)
        and nightly.protocol == default.protocol == "standard-v2"
    )


def _board(mean, low, high):
    return pd.DataFrame(
        [
            {
                "model": "m",
                "pair": "p",
                "target": "t",
                "metric": "macro_f1",
                "protocol": "standard",
                "protocol_hash": "h",
                **{f"{v}_mean": mean for v in ("id_score", "ood_score", "gap")},
                **{f"{v}_ci_low": low for v in ("id_score", "ood_score", "gap")},
                **{f"{v}_ci_high": high for v in ("id_score", "ood_score", "gap")},
            }
        ]
    )


def test_significant_moves():
    before = _board(0.70, 0.68, 0.72)
    assert significant_moves(before, _board(0.71, 0.69, 0.73)).empty  # within each other's CI
    moved = significant_moves(before, _board(0.80, 0.78, 0.82))
    assert len(moved) == 3 and set(moved["value"]) == {"id_score", "ood_score", "gap"}
    assert moved["change"].round(6).tolist() == [0.1, 0.1, 0.1]
    assert significant_moves(None, _board(0.8, 0.7, 0.9)).empty  # first night: nothing to compare
    no_ci = _board(0.80, float("nan"), float("nan"))
    assert significant_moves(before, no_ci).empty
