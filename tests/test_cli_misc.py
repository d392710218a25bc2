"""list, leaderboard and cache commands on a tiny finished run."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

import shiftbench
from shiftbench.analysis.leaderboard import LEADERBOARD_SCHEMA_VERSION
from shiftbench.cli import main


@pytest.fixture()
def finished(tiny_env):
    shiftbench.run(pairs=["news_to_tweets"], seeds="0,1", **tiny_env)
    return tiny_env


def test_list_shows_builtin_and_user_entries(tiny_registry, capsys):
    assert main(["list", "--registry", str(tiny_registry)]) == 0
    out = capsys.readouterr().out
    for name in ("fpb_to_tfns", "sst2_to_tweeteval", "news_to_tweets", "minilm-l6", "tiny", "standard", "quick"):
        assert name in out
    metrics = out.split("metrics (definitions: data_cards/metrics/):\n", 1)[1].splitlines()
    assert any(line.split()[:2] == ["ece_debiased", "lower"] for line in metrics)
    assert any(
        line.split()[:2] == ["entity_micro_f1", "higher"] and "headline of token-classification" in line
        for line in metrics
    )


@pytest.mark.parametrize("fmt", ["csv", "markdown"])
def test_leaderboard_text_formats(finished, capsys, fmt):
    assert (
        main(["leaderboard", "--results-dir", str(finished["results_dir"]), "--format", fmt, "--metric", "macro_f1"])
        == 0
    )
    out = capsys.readouterr().out
    assert "news_to_tweets" in out and "tweets" in out and "forum" in out
    if fmt == "markdown":
        assert out.startswith("| model |") and " [" in out  # CIs with 2 seeds
    else:
        assert out.splitlines()[0].startswith("model,model_sha256,pair")


def test_leaderboard_parquet_rebuild_and_corrupt_file_is_skipped(finished, capsys):
    results = finished["results_dir"]
    bad = results / "runs" / "corrupt.parquet"
    bad.write_bytes(b"PAR1 not really")
    out_file = results / "lb.parquet"
    assert main(["leaderboard", "--results-dir", str(results), "--out", str(out_file)]) == 0
    captured = capsys.readouterr()
    assert "skipped" in captured.err and "corrupt.parquet" in captured.err
    assert bad.read_bytes() == b"PAR1 not really"  # reported, never rewritten
    board = pq.read_table(out_file).to_pandas()
    assert set(board["n_seeds"]) == {2}
    assert (
        pq.read_schema(out_file).metadata[b"shiftbench.leaderboard_schema_version"]
        == str(LEADERBOARD_SCHEMA_VERSION).encode()
    )


def test_cache_info_and_prune(finished, capsys):
    cache = finished["cache_dir"]
    assert main(["cache", "info", "--cache-dir", str(cache)]) == 0
    out = capsys.readouterr().out
    assert "finetunes" in out and "2 entries" in out  # two seeds
    assert main(["cache", "prune", "--cache-dir", str(cache), "--kind", "tokens"]) == 0
    assert not list((cache / "tokens").glob("*"))
    assert len(list((cache / "finetunes").iterdir())) == 2
    assert main(["cache", "prune", "--cache-dir", str(cache), "--older-than", "-1"]) == 2
    assert main(["cache", "prune", "--cache-dir", str(cache)]) == 0
    assert not list((cache / "finetunes").iterdir())
    # The results are untouched and a re-run needs nothing.
    again = shiftbench.run(pairs=["news_to_tweets"], seeds="0,1", **finished)
    assert again.new_results == ()


def test_rerun_with_nothing_new_reuses_the_current_leaderboard(finished, monkeypatch):
    """A re-run that finds everything done does not rebuild (its bootstrap is the slow part);
    a run file added, removed or corrupt since then does trigger the rebuild, and skipped files
    are still reported by a run that reuses the leaderboard."""
    from shiftbench.analysis import leaderboard

    results = finished["results_dir"]
    path = results / leaderboard.LEADERBOARD_FILE
    before = pq.read_table(path).to_pandas()
    builds: list[int] = []
    real_build = leaderboard.build_leaderboard
    monkeypatch.setattr(leaderboard, "build_leaderboard", lambda *a, **k: builds.append(1) or real_build(*a, **k))

    again = shiftbench.run(pairs=["news_to_tweets"], seeds="0,1", **finished)
    assert not again.new_results and not builds
    assert again.leaderboard.equals(before)

    bad = results / "runs" / "corrupt.parquet"
    bad.write_bytes(b"PAR1 not really")
    third = shiftbench.run(pairs=["news_to_tweets"], seeds="0,1", **finished)
    assert builds == [1] and [p.name for p, _ in third.skipped_files] == ["corrupt.parquet"]
    fourth = shiftbench.run(pairs=["news_to_tweets"], seeds="0,1", **finished)  # current again
    assert builds == [1] and [p.name for p, _ in fourth.skipped_files] == ["corrupt.parquet"]

    bad.unlink()  # deleting a run file changes its folder: rebuilt
    shiftbench.run(pairs=["news_to_tweets"], seeds="0,1", **finished)
    assert builds == [1, 1]

    # a leaderboard written by another aggregation (older code) is not reused either
    monkeypatch.setattr(leaderboard, "AGGREGATION_VERSION", leaderboard.AGGREGATION_VERSION + 1)
    shiftbench.run(pairs=["news_to_tweets"], seeds="0,1", **finished)
    assert builds == [1, 1, 1]


def test_summary_table_never_cuts_names():
    import pandas as pd

    from shiftbench.analysis.leaderboard import summary_table

    row = {
        "metric": "macro_f1",
        "model": "a-local-checkpoint-with-a-long-name",
        "pair": "fpb_to_tweeteval",
        "target": "tweeteval_sentiment_binary",
        "protocol": "icl-calibrated",
        "n_seeds": 3,
        "id_score_mean": 0.8,
        "ood_score_mean": 0.6,
        "gap_mean": 0.2,
        "relative_gap_mean": 0.25,
    }
    board = pd.DataFrame([row, {**row, "model": "m", "protocol": "icl"}])
    lines = summary_table(board).splitlines()
    assert lines[0] == "macro_f1" and len({len(line) for line in lines[1:]}) == 1  # one width for every line
    for value in ("a-local-checkpoint-with-a-long-name", "tweeteval_sentiment_binary", "icl-calibrated"):
        assert value in lines[3]
    assert lines[4].split()[:4] == ["m", "fpb_to_tweeteval", "tweeteval_sentiment_binary", "icl"]
    assert summary_table(board, "accuracy") == "(no results for metric accuracy)"


def test_t_intervals_stay_inside_what_a_score_can_be():
    """Two seeds far apart: the t-interval (t = 12.7 at 1 df) would pass 1 and 0; it is clipped."""
    import numpy as np
    import pandas as pd
    from scipy import stats

    from shiftbench.analysis.leaderboard import GROUP_KEYS, aggregate

    base = {k: "x" for k in GROUP_KEYS} | {"schema_version": 1}
    runs = pd.DataFrame(
        [
            {**base, "seed": 0, "id_score": 0.95, "ood_score": 0.90, "gap": 0.05, "relative_gap": 0.05 / 0.95},
            {**base, "seed": 1, "id_score": 0.55, "ood_score": 0.10, "gap": 0.45, "relative_gap": 0.45 / 0.55},
        ]
    )
    (row,) = aggregate(runs).itertuples()
    half = stats.t.ppf(0.975, 1) * np.std([0.95, 0.55], ddof=1) / np.sqrt(2)
    assert row.id_score_mean == pytest.approx(0.75) and 0.75 + half > 1 and 0.75 - half < 0  # unclipped: past both ends
    assert (row.id_score_ci_low, row.id_score_ci_high) == (0.0, 1.0)
    assert (row.ood_score_ci_low, row.ood_score_ci_high) == (0.0, 1.0)
    assert (row.gap_ci_low, row.gap_ci_high) == (-1.0, 1.0)  # 0.25 -/+ 2.54
    assert row.relative_gap_ci_high == 1.0
    # a narrow interval is left as it is
    runs["id_score"] = [0.80, 0.81]
    (row,) = aggregate(runs).itertuples()
    half = stats.t.ppf(0.975, 1) * np.std([0.80, 0.81], ddof=1) / np.sqrt(2)
    assert (row.id_score_ci_low, row.id_score_ci_high) == (pytest.approx(0.805 - half), pytest.approx(0.805 + half))
