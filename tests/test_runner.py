"""End-to-end runs on tiny random models and tiny in-test data (seconds, no network)."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

import shiftbench
from shiftbench.results.store import PREDICTIONS_DIR, RUN_SCHEMA, RUNS_DIR, SCHEMA_VERSION, read_history, read_runs


def test_user_pair_runs_end_to_end(tiny_env):
    """A pair over datasets the package does not ship, added only through --registry."""
    summary = shiftbench.run(pairs=["news_to_tweets"], seeds=[0], **tiny_env)
    results = summary.new_results
    assert {r.target for r in results} == {"tweets", "forum"}
    for r in results:
        assert r.pair == "news_to_tweets" and r.source == "news" and r.model == "tiny"
        assert set(r.id_scores) == {
            "accuracy",
            "macro_f1",
            "macro_precision",
            "macro_recall",
            "ece",
            "ece_debiased",
            "brier",
        }
        assert 0.0 <= r.id_scores["macro_f1"] <= 1.0 and 0.0 <= r.ood_scores["macro_f1"] <= 1.0
        assert r.gap("macro_f1") == pytest.approx(r.id_scores["macro_f1"] - r.ood_scores["macro_f1"])
        assert r.n_id == 9 and r.n_ood == 30  # 10 % of 90 carved, stratified
        assert r.selected_lr in (1e-3, 3e-3) and r.selected_epoch in (1, 2)
        assert len(r.history) == 4  # 2 learning rates x 2 epochs, all on source validation
    # Both targets share one fine-tune and one ID score.
    assert len({r.finetune_id for r in results}) == 1
    assert results[0].id_scores == results[1].id_scores

    runs_dir = tiny_env["results_dir"] / RUNS_DIR
    files = sorted(runs_dir.glob("*.parquet"))
    assert len(files) == 2
    table = pq.read_table(files[0])
    assert table.schema.remove_metadata() == RUN_SCHEMA.remove_metadata()
    assert table.schema.metadata[b"shiftbench.schema_version"] == str(SCHEMA_VERSION).encode()
    rows = table.to_pandas()
    assert set(rows["metric"]) == {
        "accuracy",
        "macro_f1",
        "macro_precision",
        "macro_recall",
        "ece",
        "ece_debiased",
        "brier",
    }
    assert np.allclose(rows["gap"], rows["id_score"] - rows["ood_score"])
    assert np.allclose(rows["relative_gap"], rows["gap"] / rows["id_score"], equal_nan=True)  # null when ID is 0
    assert len(read_history(files[0])) == 4

    preds = pq.read_table(tiny_env["results_dir"] / PREDICTIONS_DIR / files[0].name).to_pandas()
    assert set(preds["split"]) == {
        "id_test",
        "ood_test",
        "source_validation",
    }  # validation: the estimates' held-out split
    assert (preds["split"] == "source_validation").sum() == 9 and preds["label"].notna().all()
    assert rows["ood_estimate_method"].notna().sum() == 2  # accuracy (doc) and macro_f1 (bbse)
    assert np.allclose(np.stack(preds["probs"]).sum(axis=1), 1.0, atol=1e-4)
    assert (tiny_env["results_dir"] / "leaderboard.parquet").is_file()


def test_binary_pair_with_int_labels_and_dropped_class(tiny_env):
    summary = shiftbench.run(pairs=["reviews_to_forum"], seeds=[0], **tiny_env)
    (r,) = summary.new_results
    assert r.n_id == 16
    assert r.n_ood == 20  # the 10 neutral forum posts are dropped by label_map
    preds = pq.read_table(tiny_env["results_dir"] / PREDICTIONS_DIR / f"{r.run_id}.parquet").to_pandas()
    assert set(preds["label"]) <= {0, 1} and len(preds["probs"][0]) == 2


def test_rerun_skips_done_and_new_target_reuses_finetune(tiny_env):
    first = shiftbench.run(pairs=["news_to_forum"], seeds=[0], **tiny_env)
    assert len(first.new_results) == 1
    again = shiftbench.run(pairs=["news_to_forum"], seeds=[0], **tiny_env)
    assert again.new_results == ()
    assert again.plan.pending_jobs == ()
    # A second pair on the same source: only its evaluation runs, from the cached weights.
    more = shiftbench.run(pairs=["news_to_tweets"], seeds=[0], **tiny_env)
    fresh = {r.target for r in more.new_results}
    assert fresh == {"tweets", "forum"}  # another pair name is another run id...
    (forum,) = [r for r in more.new_results if r.target == "forum"]
    # ...but the same fine-tune, so identical numbers.
    assert forum.finetune_id == first.new_results[0].finetune_id
    assert forum.ood_scores == first.new_results[0].ood_scores
    assert forum.train_seconds == first.new_results[0].train_seconds  # taken from the cache


def test_cpu_runs_are_deterministic(tiny_env, tmp_path):
    a = shiftbench.run(pairs=["news_to_forum"], seeds=[3], **tiny_env)
    other = {**tiny_env, "results_dir": tmp_path / "r2", "cache_dir": tmp_path / "c2"}
    b = shiftbench.run(pairs=["news_to_forum"], seeds=[3], **other)
    ra, rb = a.new_results[0], b.new_results[0]
    assert ra.run_id == rb.run_id
    assert ra.id_scores == rb.id_scores and ra.ood_scores == rb.ood_scores
    pa_ = pq.read_table(tiny_env["results_dir"] / PREDICTIONS_DIR / f"{ra.run_id}.parquet").to_pandas()
    pb_ = pq.read_table(other["results_dir"] / PREDICTIONS_DIR / f"{rb.run_id}.parquet").to_pandas()
    assert (pa_["pred"] == pb_["pred"]).all()
    assert np.array_equal(np.stack(pa_["probs"]), np.stack(pb_["probs"]))


def test_seeds_give_separate_rows_and_leaderboard_aggregates(tiny_env):
    summary = shiftbench.run(pairs=["news_to_forum"], seeds="0,1,2", **tiny_env)
    assert len(summary.new_results) == 3
    board = summary.leaderboard
    row = board[(board.metric == "macro_f1") & (board.target == "forum")].iloc[0]
    assert row.n_seeds == 3 and row.seeds == "0,1,2"
    gaps = [r.gap("macro_f1") for r in summary.new_results]
    assert row.gap_mean == pytest.approx(np.mean(gaps))
    assert row.gap_std == pytest.approx(np.std(gaps, ddof=1))
    assert row.gap_ci_low <= row.gap_mean <= row.gap_ci_high
    assert len(read_runs(tiny_env["results_dir"]).table) == 3 * 7


def test_dry_run_trains_nothing(tiny_env):
    summary = shiftbench.run(pairs=["news_to_tweets"], seeds=[0], dry_run=True, **tiny_env)
    text = summary.plan.describe()
    assert "fine-tune tiny on news" in text and "2 of 2 runs to do" in text.replace("1 of 1 fine-tunes and ", "")
    assert not (tiny_env["results_dir"] / RUNS_DIR).exists()


def test_overlap_is_recorded_and_dedup_removes_it(tiny_env, tiny_registry, tiny_data_dir, tmp_path):
    from shiftbench.data.datasets import load_domain
    from shiftbench.registry.catalog import load_catalog

    from .conftest import write_split

    catalog = load_catalog([tiny_registry], include_env=False)
    train = load_domain(catalog.datasets.get("news"), tiny_data_dir, ("train", "validation", "test")).role("train")
    # A target whose test split repeats 3 source training texts verbatim and 2 in another case.
    texts = list(train.texts[:3]) + [t.upper() for t in train.texts[3:5]] + ["a fresh text", "another one today"]
    labels = list(train.labels[:5]) + ["neutral", "positive"]
    write_split(tiny_data_dir, "acme/echo", "default", "test", texts, labels, ["negative", "neutral", "positive"])
    reg = tmp_path / "echo.yaml"
    reg.write_text(
        "datasets:\n  echo:\n    hub_id: acme/echo\n    text_column: text\n    label_column: label\n"
        "    splits: {test: test}\npairs:\n  news_to_echo:\n    task: text-classification\n"
        "    source: news\n    targets: [echo]\n"
    )
    env = {**tiny_env, "registries": [tiny_registry, reg]}
    (raw,) = shiftbench.run(pairs=["news_to_echo"], seeds=[0], **env).new_results
    assert (raw.overlap_exact, raw.overlap_normalised, raw.n_ood, raw.dedup) == (3, 5, 7, False)
    (dedup,) = shiftbench.run(pairs=["news_to_echo"], seeds=[0], dedup=True, **env).new_results
    assert (dedup.overlap_exact, dedup.overlap_normalised, dedup.n_ood, dedup.dedup) == (3, 5, 2, True)
    assert dedup.run_id != raw.run_id and dedup.target_fingerprint != raw.target_fingerprint
    assert dedup.finetune_id == raw.finetune_id  # same fine-tune, only the scoring differs
    assert raw.label_space == ("negative", "neutral", "positive")
    assert sum(raw.ood_label_counts) == 7 and sum(raw.id_label_counts) == raw.n_id


def test_eval_only_scores_a_finetuned_checkpoint_without_training(tiny_env, tiny_registry, tmp_path):
    from shiftbench.modeling.models import load_classifier, load_tokenizer, resolve_model
    from shiftbench.registry.catalog import load_catalog

    catalog = load_catalog([tiny_registry], include_env=False)
    base = resolve_model("tiny", catalog)
    tok = load_tokenizer(base)
    # A "fine-tuned" checkpoint whose head lists the labels in another order than the pair's.
    net = load_classifier(base, ("positive", "negative", "neutral"), tok.pad_token_id)
    ckpt = tmp_path / "my-finetuned"
    net.save_pretrained(str(ckpt))
    tok.save_pretrained(str(ckpt))
    env = {**tiny_env, "models": [str(ckpt)]}
    summary = shiftbench.run(pairs=["news_to_forum"], eval_only=True, **env)
    (r,) = summary.new_results
    assert r.eval_only and r.selected_lr is None and r.train_seconds == 0.0 and r.history == ()
    assert r.model == "my-finetuned"
    assert not (tiny_env["cache_dir"] / "finetunes").exists()  # nothing was trained
    # The columns were re-ordered to the pair's label space: probabilities match the model's own.
    import numpy as np
    import pyarrow.parquet as pq
    import torch

    from shiftbench.data.encode import encode_split

    preds = pq.read_table(tiny_env["results_dir"] / "predictions" / f"{r.run_id}.parquet").to_pandas()
    ood = preds[preds.split == "ood_test"]
    domain = summary.plan.jobs[0].targets[0].target
    enc = encode_split(domain.role("test"), tok, ("negative", "neutral", "positive"), 24)
    with torch.no_grad():
        logits = net(
            input_ids=torch.tensor(enc.input_ids[0][None]),
            attention_mask=torch.ones(1, len(enc.input_ids[0]), dtype=torch.long),
        ).logits
    mine = torch.softmax(logits, -1)[0].numpy()[[1, 2, 0]]  # model order pos,neg,neu -> neg,neu,pos
    assert np.allclose(np.asarray(ood["probs"].iloc[0]), mine, atol=1e-5)


def test_eval_only_refuses_a_head_with_other_labels(tiny_env, tiny_registry, tmp_path, capsys):
    from shiftbench.cli import main
    from shiftbench.modeling.models import load_classifier, load_tokenizer, resolve_model
    from shiftbench.registry.catalog import load_catalog

    catalog = load_catalog([tiny_registry], include_env=False)
    base = resolve_model("tiny", catalog)
    tok = load_tokenizer(base)
    ckpt = tmp_path / "binary-head"
    load_classifier(base, ("bad", "good"), tok.pad_token_id).save_pretrained(str(ckpt))
    tok.save_pretrained(str(ckpt))
    rc = main(
        [
            "run",
            "--eval-only",
            "--pair",
            "news_to_forum",
            "--model",
            str(ckpt),
            "--registry",
            str(tiny_registry),
            "--data-dir",
            str(tiny_env["data_dir"]),
            "--results-dir",
            str(tmp_path / "r"),
            "--cache-dir",
            str(tmp_path / "c"),
            "--protocol",
            tiny_env["protocol"],
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "id2label" in err and "'bad', 'good'" in err


def test_two_aliases_of_the_same_weights_share_a_finetune_but_keep_their_rows(tiny_env, tiny_model_dir, tmp_path):
    alias = tmp_path / "alias.yaml"
    alias.write_text(f"models:\n  tiny_copy:\n    path: {tiny_model_dir}\n")
    env = {**tiny_env, "registries": [*tiny_env["registries"], alias], "models": ["tiny", "tiny_copy"]}
    summary = shiftbench.run(pairs=["news_to_forum"], seeds=[0], **env)
    a, b = sorted(summary.new_results, key=lambda r: r.model)
    assert (a.model, b.model) == ("tiny", "tiny_copy")
    assert a.model_sha256 == b.model_sha256 and a.finetune_id == b.finetune_id and a.run_id != b.run_id
    assert a.ood_scores == b.ood_scores
    assert b.train_seconds == a.train_seconds  # the second alias reused the cached fine-tune


def test_single_seed_rows_get_a_bootstrap_interval(tiny_env):
    summary = shiftbench.run(pairs=["news_to_forum"], seeds=[0], **tiny_env)
    board = summary.leaderboard
    f1 = board[board.metric == "macro_f1"].iloc[0]
    assert f1.n_seeds == 1 and f1.ci_method == "examples only (1 seed)"
    assert f1.ood_score_ci_low <= f1.ood_score_mean <= f1.ood_score_ci_high
    assert f1.gap_ci_low <= f1.gap_mean <= f1.gap_ci_high and f1.gap_ci_high > f1.gap_ci_low
    ece = board[board.metric == "ece"].iloc[0]  # recomputed from the stored probabilities (taskstats)
    assert ece.ci_method == "examples only (1 seed)" and ece.gap_ci_low <= ece.gap_mean <= ece.gap_ci_high


def test_bf16_precision_is_its_own_protocol(tiny_env):
    fp32 = shiftbench.run(pairs=["news_to_forum"], seeds=[0], **tiny_env).new_results[0]
    bf16 = shiftbench.run(pairs=["news_to_forum"], seeds=[0], precision="bf16", **tiny_env).new_results[0]
    assert bf16.precision == "bf16" and fp32.precision == "fp32"
    assert bf16.protocol_hash != fp32.protocol_hash and bf16.finetune_id != fp32.finetune_id
    assert 0.0 <= bf16.ood_scores["macro_f1"] <= 1.0


def test_source_validation_predictions_from_selection_equal_a_rescoring(tiny_env, tmp_path, monkeypatch):
    """A fine-tune run in this process stores the validation predictions it made when it selected
    the (lr, epoch); a run that reuses the cached fine-tune scores validation itself. Same weights and
    batches: the two must be identical, so skipping the second scoring pass changes no number."""
    import shiftbench.execution.runner as runner

    roles: list[str] = []
    scorer = runner._classifier_scorer

    def counting(*args, **kwargs):  # records which splits the runner scores after fine-tuning
        ft, score = scorer(*args, **kwargs)
        return ft, lambda domain, role="test": roles.append(role) or score(domain, role)

    monkeypatch.setattr(runner, "_classifier_scorer", counting)
    first = shiftbench.run(pairs=["news_to_forum"], seeds=[1], **tiny_env)  # trains: validation from selection
    assert "validation" not in roles
    other = {**tiny_env, "results_dir": tmp_path / "r2"}  # same cache: the fine-tune is reused, validation re-scored
    second = shiftbench.run(pairs=["news_to_forum"], seeds=[1], **other)
    assert roles.count("validation") == 1
    (ra,), (rb,) = first.new_results, second.new_results
    assert ra.finetune_id == rb.finetune_id and rb.train_seconds == ra.train_seconds  # really the cached fine-tune
    read = lambda d, r: pq.read_table(d / PREDICTIONS_DIR / f"{r.run_id}.parquet").to_pandas()  # noqa: E731
    va, vb = (
        p[p["split"] == "source_validation"].sort_values("index")
        for p in (read(tiny_env["results_dir"], ra), read(other["results_dir"], rb))
    )
    assert len(va) == len(vb) > 0
    assert (va["pred"].to_numpy() == vb["pred"].to_numpy()).all()
    assert np.array_equal(np.stack(va["probs"]), np.stack(vb["probs"]))
