"""Unlabelled targets (issue #18, steps 1 and 6): a user's own stream of unlabelled text runs end
to end offline, with label-free OOD estimates, their verdict and the shift measures."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from shiftbench.cli import main
from shiftbench.execution import shift
from shiftbench.results.store import (
    ESTIMATE_COLUMNS,
    PREDICTIONS_DIR,
    RUNS_DIR,
    SCHEMA_VERSION,
    read_estimate,
    read_runs,
)
from tests.conftest import balanced_labels, make_texts, user_error, write

MINE = """
datasets:
  my_feed:
    hub_id: me/feed
    text_column: text
    splits: {{test: test}}
{extra}pairs:
  news_to_my_feed:
    task: text-classification
    source: news
    targets: [my_feed]
"""


def _write_feed(data_dir, texts, name="me/feed"):
    import datasets

    ds = datasets.Dataset.from_dict({"text": list(texts)})
    path = data_dir / name.replace("/", "__") / "default" / "test.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.to_parquet(str(path))
    return path


@pytest.fixture()
def feed(tmp_path, tiny_data_dir, tiny_registry, tiny_model_dir, tiny_protocol, monkeypatch, clean_env):
    """The tiny registry's news source, a user registry with an unlabelled feed, and a data dir
    holding both (the tiny mirror copied, the feed written here without a label column)."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_data_dir, data)
    _write_feed(data, make_texts(balanced_labels(40, ["negative", "neutral", "positive"], 11), 11, "tweet"))
    mine = write(tmp_path / "mine.yaml", MINE.format(extra=""))
    monkeypatch.setattr(shift, "DEFAULT_ENCODER", "tiny")  # the tiny random BERT stands in for MiniLM
    args = [
        "--registry",
        tiny_registry,
        "--registry",
        mine,
        "--data-dir",
        data,
        "--protocol",
        tiny_protocol,
        "--results-dir",
        tmp_path / "results",
        "--cache-dir",
        tmp_path / "cache",
    ]
    return tmp_path, args


def test_unlabelled_target_runs_end_to_end(feed, capsys):
    tmp_path, args = feed
    rc = main(["run", "--pair", "news_to_my_feed", "--model", "tiny", "--seeds", "0", *map(str, args)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "estimated OOD accuracy" in out and "(target unlabelled)" in out
    assert "(doc)" in out and ("trusted" in out or "FLAGGED" in out)
    assert "target estimated (BBSE)" in out
    assert "shift news_to_my_feed -> my_feed: vocab Jaccard" in out and "MMD2" in out and "PAD" in out
    runs = read_runs(tmp_path / "results").table.to_pandas()
    assert len(runs) and (runs["schema_version"] == SCHEMA_VERSION).all()
    assert runs["ood_score"].isna().all() and runs["gap"].isna().all() and runs["relative_gap"].isna().all()
    assert runs["id_score"].notna().all()
    acc = runs[runs["metric"] == "accuracy"].iloc[0]
    f1 = runs[runs["metric"] == "macro_f1"].iloc[0]
    assert acc["ood_estimate_method"] == "doc" and f1["ood_estimate_method"] == "bbse"
    for row in (acc, f1):
        assert row["ood_estimate_low"] <= row["ood_estimate"] <= row["ood_estimate_high"]
        assert row["ood_estimate_trusted"] in (True, False)
    ece = runs[runs["metric"] == "ece"].iloc[0]
    assert all(ece[c] is None or ece[c] != ece[c] for c in ESTIMATE_COLUMNS)  # null: no estimator covers ECE
    run_id = acc["run_id"]
    preds = pq.read_table(tmp_path / "results" / PREDICTIONS_DIR / f"{run_id}.parquet").to_pandas()
    ood = preds[preds["split"] == "ood_test"]
    assert ood["label"].isna().all() and list(ood["index"]) == list(range(40))
    assert set(preds["split"]) == {"id_test", "ood_test", "source_validation"}
    assert preds[preds["split"] != "ood_test"]["label"].notna().all()
    # The recorded estimate is recomputable from the predictions file (held-out = source validation).
    from shiftbench.analysis.estimator_board import load_run_probs
    from shiftbench.analysis.verdict import run_estimates

    probs = load_run_probs(tmp_path / "results", run_id, "source_validation")
    assert probs.target_labels is None
    again = run_estimates(probs.held_out, probs.target, "source_validation")
    assert again.for_metric("accuracy").value == pytest.approx(acc["ood_estimate"], abs=1e-9)
    meta = read_estimate(tmp_path / "results" / RUNS_DIR / f"{run_id}.parquet")
    assert meta["held_out_split"] == "source_validation" and len(meta["target_priors"]) == 3
    # Aggregators cope with the null OOD columns.
    rc = main(["leaderboard", "--results-dir", str(tmp_path / "results"), "--format", "markdown"])
    assert rc == 0
    capsys.readouterr()
    from shiftbench.analysis.leaderboard import build_leaderboard

    board, _ = build_leaderboard(tmp_path / "results")
    row = board[board["metric"] == "accuracy"].iloc[0]
    assert np.isnan(row["ood_score_mean"]) and np.isnan(row["gap_mean"]) and np.isnan(row["rank"])
    assert (
        row["ci_method"] == "examples only (1 seed)"
        and row["id_score_ci_low"] <= row["id_score_mean"] <= row["id_score_ci_high"]
    )
    from shiftbench.analysis.robustness import effective_robustness

    fits, points = effective_robustness(tmp_path / "results", min_models=2)
    assert not fits and points.empty  # skipped: no OOD score to fit
    user_error(
        capsys,
        ["compare", "tiny@tiny", "tiny@tiny", "--results-dir", tmp_path / "results"],
        "unlabelled",
        "news_to_my_feed/my_feed",
    )
    user_error(capsys, ["leaderboard", "--estimators", "--results-dir", tmp_path / "results"], "no labelled")


def test_labelled_runs_get_estimates_beside_the_truth(
    tiny_data_dir, tiny_registry, tiny_protocol, tmp_path, capsys, clean_env
):
    rc = main(
        [
            "run",
            "--pair",
            "news_to_forum",
            "--model",
            "tiny",
            "--seeds",
            "0",
            "--registry",
            str(tiny_registry),
            "--data-dir",
            str(tiny_data_dir),
            "--protocol",
            str(tiny_protocol),
            "--results-dir",
            str(tmp_path / "r"),
            "--cache-dir",
            str(tmp_path / "c"),
        ]
    )
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "(true " in out
    runs = read_runs(tmp_path / "r").table.to_pandas()
    acc = runs[runs["metric"] == "accuracy"].iloc[0]
    assert np.isfinite(acc["ood_score"]) and np.isfinite(acc["ood_estimate"]) and acc["ood_estimate_method"] == "doc"
    # The estimator board reads the new run's source-validation predictions as its held-out split
    # and gets the recorded point estimate back.
    from shiftbench.analysis.estimator_board import estimate_board

    per_run, skipped = estimate_board(tmp_path / "r", n_boot=5)
    assert not skipped and set(per_run["held_out_split"]) == {"source_validation"}
    doc = per_run[per_run["estimator"] == "doc"].iloc[0]
    assert doc["estimate"] == pytest.approx(acc["ood_estimate"], abs=1e-12)
    assert doc["true_accuracy"] == pytest.approx(acc["ood_score"])


def _nothing_written(results):
    return not results.exists() or not any(p.is_file() for p in results.rglob("*"))


def test_unlabelled_source_is_refused(feed, capsys):
    tmp_path, args = feed
    mine = write(
        tmp_path / "bad.yaml",
        MINE.format(extra="")
        .replace("source: news", "source: my_feed")
        .replace("targets: [my_feed]", "targets: [news]"),
    )
    args = [str(a) for a in args]
    args[args.index(str(tmp_path / "mine.yaml"))] = str(mine)
    user_error(
        capsys,
        ["run", "--pair", "news_to_my_feed", "--model", "tiny", *args],
        str(mine),
        "my_feed",
        "label_column",
        "only be a target",
    )
    assert _nothing_written(tmp_path / "results")


def test_unlabelled_with_label_map_is_refused(feed, capsys):
    tmp_path, args = feed
    mine = write(
        tmp_path / "mine.yaml",
        MINE.format(extra="").replace("splits: {test: test}", "splits: {test: test}\n    label_map: {a: b}"),
    )
    user_error(
        capsys,
        ["run", "--pair", "news_to_my_feed", "--model", "tiny", *map(str, args)],
        str(mine),
        "my_feed",
        "label_map",
    )
    assert _nothing_written(tmp_path / "results")


def test_unlabelled_empty_text_is_refused(feed, capsys):
    tmp_path, args = feed
    _write_feed(tmp_path / "data", ["fine text", "   ", "more"])
    user_error(
        capsys,
        ["run", "--pair", "news_to_my_feed", "--model", "tiny", *map(str, args)],
        "test.parquet",
        "row 1",
        "empty text",
    )
    assert _nothing_written(tmp_path / "results")


def test_eval_only_head_mismatch_on_unlabelled_pair_is_refused(feed, capsys, tiny_model_dir):
    # The tiny model's head (a plain BertModel config: LABEL_0/LABEL_1) does not name news's labels.
    tmp_path, args = feed
    user_error(
        capsys,
        ["run", "--pair", "news_to_my_feed", "--model", str(tiny_model_dir), "--eval-only", *map(str, args)],
        "config.json",
    )
    assert _nothing_written(tmp_path / "results")


def test_mixed_pair_compare_skips_the_unlabelled_target_and_shift_measures_it(feed, capsys):
    tmp_path, args = feed
    mixed = (
        MINE.format(extra="")
        .replace("news_to_my_feed", "news_to_mixed")
        .replace("targets: [my_feed]", "targets: [forum, my_feed]")
    )
    write(tmp_path / "mine.yaml", mixed)
    rc = main(["run", "--pair", "news_to_mixed", "--model", "tiny", "--seeds", "0", *map(str, args)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "(true " in out and "(target unlabelled)" in out  # forum labelled, my_feed not
    results = tmp_path / "results"
    runs = read_runs(results).table.to_pandas()
    assert runs.loc[runs["target"] == "forum", "ood_score"].notna().all()
    assert runs.loc[runs["target"] == "my_feed", "ood_score"].isna().all()
    rc = main(["compare", "tiny@tiny", "tiny@tiny", "--results-dir", str(results)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "skipped news_to_mixed/my_feed: the target is unlabelled" in out and "forum" in out
    reg = [str(a) for a in args[:4]]  # both --registry flags
    rc = main(
        [
            "shift",
            "--pair",
            "news_to_mixed",
            *reg,
            "--data-dir",
            str(tmp_path / "data"),
            "--results-dir",
            str(results),
            "--sample",
            "20",
        ]
    )
    out, err = capsys.readouterr()
    assert rc == 0, err
    feed_line = next(line for line in out.splitlines() if line.startswith("news_to_mixed") and "my_feed" in line)
    assert " - " in feed_line  # no label-prior distance without labels


def test_unlabelled_dataset_loads_texts_only_and_carves_a_test_split(tmp_path):
    from shiftbench.data.datasets import load_domain
    from shiftbench.registry.specs import DatasetSpec

    texts = [f"text number {i}" for i in range(50)]
    _write_feed(tmp_path, texts, "me/stream")
    (tmp_path / "me__stream" / "default" / "test.parquet").rename(tmp_path / "me__stream" / "default" / "train.parquet")
    spec = DatasetSpec(name="stream", hub_id="me/stream", text_column="text", splits={"train": "train"})
    assert not spec.labelled
    d = load_domain(spec, tmp_path, ("test",))
    test = d.role("test")
    assert len(test) == 5 and not test.labelled and set(test.labels) == {None}  # 10 % carved, as for labelled data
    assert (
        d.label_names == ()
        and (test.label_ids(("a", "b")) == -1).all()
        and test.label_counts(("a", "b")).tolist() == [0, 0]
    )
    assert set(test.texts) <= set(texts)
