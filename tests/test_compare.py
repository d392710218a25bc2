"""shiftbench.analysis.compare on synthetic run files (fast), plus one comparison of real tiny runs."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

import shiftbench
from shiftbench.analysis.compare import ModelRef, compare
from shiftbench.core.errors import ShiftbenchError
from shiftbench.results.store import RunResult, predictions_table, write_run
from shiftbench.tasks.metrics import classification_metrics
from shiftbench.training.evaluation import Predictions


def write_fake_run(
    results_dir: Path,
    *,
    model: str,
    seed: int,
    id_labels,
    id_preds,
    ood_labels,
    ood_preds,
    protocol: str = "standard-v2",  # the run default: what a bare model name on compare means
    pair: str = "news_to_tweets",
    source: str = "news",
    target: str = "tweets",
    source_fp: str = "src-fp",
    target_fp: str = "tgt-fp",
    protocol_hash: str = "proto-hash",
    model_sha: str | None = None,
    created_at: datetime | None = None,
    num_labels: int = 3,
    history: tuple[dict, ...] = (),
) -> RunResult:
    """Write a run file + predictions file exactly as the runner does (RunResult.to_table)."""
    arrays = [np.asarray(x, dtype=np.int64) for x in (id_labels, id_preds, ood_labels, ood_preds)]
    model_sha = model_sha or hashlib.sha256(model.encode()).hexdigest()
    run_id = hashlib.sha256(
        repr((model_sha, protocol_hash, pair, target, seed, source_fp, target_fp)).encode()
    ).hexdigest()[:16]
    result = RunResult(
        run_id=run_id,
        finetune_id=run_id,
        model=model,
        model_sha256=model_sha,
        pair=pair,
        source=source,
        target=target,
        task="text-classification",
        seed=seed,
        protocol=protocol,
        protocol_hash=protocol_hash,
        id_scores=classification_metrics(arrays[0], arrays[1]),
        ood_scores=classification_metrics(arrays[2], arrays[3]),
        n_id=len(arrays[0]),
        n_ood=len(arrays[2]),
        label_space=tuple(f"l{i}" for i in range(num_labels)),
        id_label_counts=tuple(np.bincount(arrays[0], minlength=num_labels).tolist()),
        ood_label_counts=tuple(np.bincount(arrays[2], minlength=num_labels).tolist()),
        overlap_exact=None,
        overlap_normalised=None,
        dedup=False,
        source_fingerprint=source_fp,
        target_fingerprint=target_fp,
        selected_lr=1e-3,
        selected_epoch=1,
        selection_score=0.5,
        eval_only=False,
        device="cpu",
        precision="fp32",
        num_threads=1,
        train_seconds=0.0,
        eval_seconds=0.0,
        created_at=created_at or datetime(2024, 1, 1, tzinfo=timezone.utc),
        shiftbench_version="test",
        runner_version=1,
        transformers_version="test",
        torch_version="test",
        history=history,
    )

    def split(labels, preds):
        return Predictions(labels, preds, np.eye(num_labels, dtype=np.float32)[preds])

    write_run(results_dir, result, predictions_table({"id_test": split(*arrays[:2]), "ood_test": split(*arrays[2:])}))
    return result


def _preds(labels: np.ndarray, n_right: int, rng: np.random.Generator) -> np.ndarray:
    """Predictions right on exactly ``n_right`` randomly chosen examples (3 classes)."""
    preds = (labels + 1) % 3
    right = rng.permutation(len(labels))[:n_right]
    preds[right] = labels[right]
    return preds


@pytest.fixture()
def synthetic(tmp_path):
    """A: 60 % right OOD; B: same ID, right on A's OOD hits plus 60 more of 400; C only seed 1."""
    rng = np.random.default_rng(0)
    y_id, y_ood = rng.integers(0, 3, 300), rng.integers(0, 3, 400)
    for seed in (0, 1):
        id_a = _preds(y_id, 240, rng)
        ood_a = _preds(y_ood, 240, rng)
        ood_b = ood_a.copy()
        wrong = np.flatnonzero(ood_a != y_ood)[:60]
        ood_b[wrong] = y_ood[wrong]
        write_fake_run(
            tmp_path, model="alpha", seed=seed, id_labels=y_id, id_preds=id_a, ood_labels=y_ood, ood_preds=ood_a
        )
        write_fake_run(
            tmp_path, model="beta", seed=seed, id_labels=y_id, id_preds=id_a, ood_labels=y_ood, ood_preds=ood_b
        )
    write_fake_run(tmp_path, model="gamma", seed=2, id_labels=y_id, id_preds=id_a, ood_labels=y_ood, ood_preds=ood_a)
    return tmp_path


def test_model_ref_parsing():
    assert ModelRef.parse("minilm-l6@lora") == ModelRef("minilm-l6", "lora")
    assert ModelRef.parse("minilm-l6") == ModelRef("minilm-l6", "standard-v2")
    assert str(ModelRef.parse("tiny")) == "tiny@standard-v2"
    assert ModelRef.parse("minilm-l6@standard") == ModelRef("minilm-l6", "standard")
    with pytest.raises(ShiftbenchError):
        ModelRef.parse("tiny@")


def test_compare_verdicts_and_regressions(synthetic):
    better = compare(synthetic, "alpha", "beta@standard-v2", n_boot=500)
    [t] = better.targets
    assert (t.pair, t.target, t.seeds, t.n_id, t.n_ood) == ("news_to_tweets", "tweets", (0, 1), 300, 400)
    assert better.a == "alpha@standard-v2" and better.b == "beta@standard-v2"
    assert t.verdict == "better" and better.regressions == []
    assert t.id_diff == type(t.id_diff)(0.0, 0.0, 0.0)  # identical ID predictions
    assert t.mcnemar_ood.b == 0 and t.mcnemar_ood.c == 120 and t.mcnemar_ood.p_value < 1e-20
    assert t.gap_diff.estimate == pytest.approx(-t.ood_diff.estimate)
    acc = compare(synthetic, "alpha", "beta", metric="accuracy", n_boot=500).targets[0]
    assert acc.ood_diff.estimate == pytest.approx(60 / 400)
    assert (acc.ood_a, acc.ood_b) == (pytest.approx(0.6), pytest.approx(0.75))
    worse = compare(synthetic, "beta", "alpha", n_boot=500)
    assert worse.targets[0].verdict == "worse"
    assert worse.regressions == [("news_to_tweets", "tweets")]
    text = worse.to_text()
    assert "regressions (B significantly worse OOD, Holm-adjusted one-sided p <= 0.05): news_to_tweets/tweets" in text
    assert "news_to_tweets (source news)" in text and " recipe " in text and "0,1" in text
    t = worse.targets[0]
    assert t.question == "recipe" and t.ood.v_seed < t.ood.v_example  # (almost) the same effect in both seeds
    assert 0 < t.mde_ood < 0.15 and t.p_holm == pytest.approx(t.p_regression)  # one test: Holm changes nothing


def _history(*lrs: float) -> tuple[dict, ...]:
    """Two epochs per learning rate; every run above selects lr 1e-3 at epoch 1."""
    return tuple({"learning_rate": lr, "epoch": e, "val_scores": {"macro_f1": 0.5}} for lr in lrs for e in (1, 2))


def test_compare_notes_fine_tunes_selected_at_a_grid_edge(tmp_path):
    rng = np.random.default_rng(1)
    y_id, y_ood = rng.integers(0, 3, 200), rng.integers(0, 3, 300)
    for seed in (0, 1, 2):
        preds = dict(
            id_labels=y_id, id_preds=_preds(y_id, 150, rng), ood_labels=y_ood, ood_preds=_preds(y_ood, 180, rng)
        )
        # "edgy": 1e-3 is its grid's largest rate; "inner": 1e-3 lies inside; "plain": no history, no grid known
        write_fake_run(tmp_path, model="edgy", seed=seed, history=_history(1e-4, 1e-3), **preds)
        write_fake_run(tmp_path, model="inner", seed=seed, history=_history(1e-4, 1e-3, 1e-2), **preds)
        write_fake_run(tmp_path, model="plain", seed=seed, **preds)
    [t] = compare(tmp_path, "inner", "edgy", n_boot=200).targets
    assert (t.edge_seeds_a, t.edge_seeds_b) == (0, 3)
    text = compare(tmp_path, "inner", "edgy", n_boot=200).to_text()
    assert (
        "tweets: grid edge: edgy@standard-v2 in 3 of 3 seeds selected at an edge" in text
        and "inner@standard-v2 in" not in text
    )
    [t] = compare(tmp_path, "plain", "inner", n_boot=200).targets
    assert (t.edge_seeds_a, t.edge_seeds_b) == (None, 0)
    assert "grid edge" not in compare(tmp_path, "plain", "inner", n_boot=200).to_text()


def test_compare_unknown_model_suggests_names(synthetic):
    with pytest.raises(ShiftbenchError, match=r"no runs of alpah@standard-v2 .*did you mean 'alpha@standard-v2'"):
        compare(synthetic, "alpah", "beta")
    with pytest.raises(ShiftbenchError, match=r"no runs of beta@lora .*did you mean 'beta@standard-v2'"):
        compare(synthetic, "alpha", "beta@lora")


def test_a_bare_model_name_is_its_standard_v2_recipe_never_the_superseded_one(tmp_path):
    """Runs under the superseded ``standard`` are reached by name only: a bare name is the run default."""
    y = np.array([0, 1, 2, 0])
    for model in ("alpha", "beta"):
        write_fake_run(
            tmp_path, model=model, seed=0, id_labels=y, id_preds=y, ood_labels=y, ood_preds=y, protocol="standard"
        )
    with pytest.raises(ShiftbenchError, match=r"no runs of alpha@standard-v2 .*did you mean 'alpha@standard'"):
        compare(tmp_path, "alpha", "beta")
    assert compare(tmp_path, "alpha@standard", "beta@standard", n_boot=50).a == "alpha@standard"


def test_compare_no_shared_seed(synthetic):
    expected = r"news_to_tweets/tweets: no seed in common \(alpha@standard-v2: seeds \[0, 1\]; gamma@standard-v2: seeds \[2\]\)"
    with pytest.raises(ShiftbenchError, match=expected):
        compare(synthetic, "alpha", "gamma")


def test_compare_fingerprint_mismatch(tmp_path):
    y = np.array([0, 1, 2, 0])
    write_fake_run(tmp_path, model="alpha", seed=0, id_labels=y, id_preds=y, ood_labels=y, ood_preds=y)
    write_fake_run(
        tmp_path, model="beta", seed=0, id_labels=y, id_preds=y, ood_labels=y, ood_preds=y, target_fp="other-fp"
    )
    with pytest.raises(ShiftbenchError) as err:
        compare(tmp_path, "alpha", "beta")
    msg = str(err.value)
    assert "news_to_tweets/tweets" in msg and "tgt-fp" in msg and "other-fp" in msg and "\n" not in msg


def test_compare_label_mismatch_and_pair_selection(tmp_path):
    y = np.array([0, 1, 2, 0])
    write_fake_run(tmp_path, model="alpha", seed=0, id_labels=y, id_preds=y, ood_labels=y, ood_preds=y)
    write_fake_run(tmp_path, model="beta", seed=0, id_labels=y, id_preds=y, ood_labels=y[::-1], ood_preds=y)
    with pytest.raises(ShiftbenchError, match="different OOD test labels"):
        compare(tmp_path, "alpha", "beta")
    with pytest.raises(ShiftbenchError, match=r"pair 'news_to_tweet' .*did you mean 'news_to_tweets'"):
        compare(tmp_path, "alpha", "beta", pairs=["news_to_tweet"])
    write_fake_run(
        tmp_path, model="delta", seed=0, id_labels=y, id_preds=y, ood_labels=y, ood_preds=y, pair="other_pair"
    )
    with pytest.raises(ShiftbenchError, match="no pair/target in common"):
        compare(tmp_path, "alpha", "delta")
    with pytest.raises(
        ShiftbenchError, match=r"metric 'f1_PER' is not defined for text-classification \(pair news_to_tweets\)"
    ):
        compare(tmp_path, "alpha", "beta", metric="f1_PER")


def test_compare_refuses_to_pool_protocol_versions(tmp_path):
    y = np.array([0, 1, 2, 0])
    for seed, ph in ((0, "old-hash"), (1, "new-hash")):
        write_fake_run(
            tmp_path,
            model="alpha",
            seed=seed,
            id_labels=y,
            id_preds=y,
            ood_labels=y,
            ood_preds=y,
            protocol_hash=ph,
            created_at=datetime(2024, 1, 1, tzinfo=timezone.utc) + timedelta(days=seed),
        )
        write_fake_run(tmp_path, model="beta", seed=seed, id_labels=y, id_preds=y, ood_labels=y, ood_preds=y)
    with pytest.raises(ShiftbenchError, match="alpha@standard-v2 has runs from 2 different protocol versions"):
        compare(tmp_path, "alpha", "beta")


def test_compare_real_tiny_runs_same_weights(tiny_env, tiny_model_dir, tmp_path, monkeypatch):
    """Two aliases of the same checkpoint, fine-tuned with the same seed: no difference at all.

    ``num_layers: 2`` (the model has 2 layers, so the weights are unchanged) gives the alias its
    own model sha256; a plain second ``path:`` alias has the same sha, hence the same run ids,
    and the runner would treat its runs as already done.
    """
    monkeypatch.setenv("SHIFTBENCH_NUM_THREADS", "1")  # a tiny model: one thread avoids contention on a busy box
    extra = tmp_path / "extra.yaml"
    extra.write_text(f"models:\n  tiny2:\n    path: {tiny_model_dir}\n    num_layers: 2\n")
    env = {**tiny_env, "registries": [*tiny_env["registries"], extra], "models": ["tiny", "tiny2"]}
    shiftbench.run(pairs=["news_to_tweets"], seeds=[0], **env)
    results = env["results_dir"]
    cmp = compare(results, "tiny@tiny", "tiny2@tiny", n_boot=500)
    assert [(t.pair, t.target) for t in cmp.targets] == [("news_to_tweets", "forum"), ("news_to_tweets", "tweets")]
    for t in cmp.targets:  # one seed per side: an interval conditional on these fine-tunes, no verdict on the recipe
        assert t.question == "conditional on 1 seed" and t.verdict == "needs >= 2 seeds per side"
        for iv in (t.id_diff, t.ood_diff, t.gap_diff):
            assert (iv.estimate, iv.low, iv.high) == (0.0, 0.0, 0.0)
        assert (t.mcnemar_ood.b, t.mcnemar_ood.c, t.mcnemar_ood.p_value) == (0, 0, 1.0)
        assert t.seeds == (0,) and t.n_ood == 30
    assert cmp.regressions == []
    text = cmp.to_text()
    print(text)
    assert "B = tiny2@tiny vs A = tiny@tiny" in text and "needs >= 2 seeds per side" in text
    with pytest.raises(ShiftbenchError, match="did you mean 'tiny@tiny'"):
        compare(results, "tiny", "tiny2@tiny")


def test_compare_cli_exit_codes(synthetic, capsys):
    from shiftbench.cli import main

    base = ["compare", "--results-dir", str(synthetic), "--n-boot", "300"]
    assert main([*base, "alpha", "beta"]) == 0
    assert "better" in capsys.readouterr().out
    assert main([*base, "alpha", "beta", "--fail-on-regression"]) == 0  # B is better: no regression
    assert main([*base, "beta", "alpha", "--fail-on-regression"]) == 1
    err = capsys.readouterr().err
    assert "regression: alpha is significantly worse than beta out of domain on news_to_tweets/tweets" in err
    assert main([*base, "beta", "alpha", "--fail-on-regression", "--margin", "0.5"]) == 0  # worse, but by less than 0.5
    capsys.readouterr()
    for flag, value in (("--margin", "0"), ("--margin", "1"), ("--effect", "0"), ("--effect", "-0.1")):
        assert main([*base, "beta", "alpha", flag, value]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and flag in err and value in err
    assert main([*base, "alpha", "beta", "--metric", "entity_micro_f1"]) == 2
    assert "metric 'entity_micro_f1' is not defined for text-classification" in capsys.readouterr().err
    assert main([*base, "beta", "alpha"]) == 0  # without the flag a regression is only reported
    capsys.readouterr()
    assert main([*base, "alpha", "gamma"]) == 2  # no shared seed: refused
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("shiftbench: error:") and "seed" in err


def test_class_id_outside_the_label_space_is_one_line(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    y = np.array([0, 1, 2, 0])
    for model in ("alpha", "beta"):
        r = write_fake_run(tmp_path, model=model, seed=0, id_labels=y, id_preds=y, ood_labels=y, ood_preds=y)
    victim = tmp_path / "predictions" / f"{r.run_id}.parquet"
    table = pq.read_table(victim)
    preds = table.column("pred").to_numpy().copy()
    preds[0] = 32767
    column = table.schema.get_field_index("pred")
    pq.write_table(table.set_column(column, table.schema.field("pred"), pa.array(preds)), victim)
    with pytest.raises(
        ShiftbenchError, match=r"class id 32767 in the id_test labels or predictions is outside the run's 3 labels"
    ):
        compare(tmp_path, "alpha", "beta", n_boot=100)
