"""The statistics layer and the verdicts on the committed results (``results/``, read-only; every
test that writes works on a copy under tmp_path).

* every metric of every committed run, recomputed from its stored predictions through
  :mod:`shiftbench.analysis.taskstats`, equals the run file;
* the regression gate on a null comparison -- B is A's own recipe under other seeds (each run
  file copied with the model renamed and the seeds permuted) -- passes on every pair, NER
  included, while the real regression on the board (``minilm-l6-random`` vs ``minilm-l6``) fails;
* ``report --metric entity_micro_f1``, ``compare --metric entity_micro_f1`` and
  ``leaderboard --metric ece`` work on the committed results.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shiftbench.analysis.taskstats import load_run_stats, task_kind
from shiftbench.cli import main

from .conftest import REPO

COMMITTED = REPO / "results"
RUNS = sorted((COMMITTED / "runs").glob("*.parquet"))
# Stored probabilities are rounded to 6 decimals (results.predictions_table), so the metrics made of
# probabilities move by up to ~5e-7 per example's confidence when recomputed (ece_debiased by 1.9e-8
# on one standard-v2 run); every metric made of labels alone is exact.
TOLERANCE = {"ece": 1e-6, "ece_debiased": 1e-6, "brier": 1e-6}

pytestmark = pytest.mark.skipif(not RUNS, reason="no committed run files")


def test_every_committed_metric_is_recomputed_from_its_predictions():
    worst: dict[str, float] = {}
    for path in RUNS:
        rows = pd.read_parquet(path)
        first = rows.iloc[0]
        stats = load_run_stats(COMMITTED, first["run_id"], first["task"], tuple(first["label_space"]))
        assert set(rows["metric"]) <= set(task_kind(first["task"]).metrics(first["label_space"]))
        for r in rows.itertuples():
            id_score, ood_score = stats.scores(r.metric)
            err = max(abs(id_score - r.id_score), abs(ood_score - r.ood_score))
            worst[r.metric] = max(worst.get(r.metric, 0.0), err)
            assert err <= TOLERANCE.get(r.metric, 1e-9), f"{path.name} {r.metric}: recomputed {id_score}, {ood_score}"
        assert stats.id.n_units == first["n_id"] and stats.ood.n_units == first["n_ood"]
    assert len(RUNS) >= 58 and {"macro_f1", "entity_micro_f1", "ece", "f1_ORG"} <= set(worst)


def _copy_with(dest: Path) -> Path:
    for sub in ("runs", "predictions"):
        shutil.copytree(COMMITTED / sub, dest / sub)
    return dest


def _reseed(results: Path, model: str, protocol: str, new_model: str) -> int:
    """Copy every run of ``model@protocol`` as ``new_model``, seed s taking the run of the next
    seed (cyclically) among that (pair, target)'s seeds: the same recipe under other seeds. Returns
    the number of run files written."""
    written = 0
    frames = [(p, pq.read_table(p)) for p in sorted((results / "runs").glob("*.parquet"))]
    mine = [
        (p, t)
        for p, t in frames
        if t.column("model")[0].as_py() == model and t.column("protocol")[0].as_py() == protocol
    ]
    by_target: dict[tuple, list] = {}
    for _p, t in mine:
        by_target.setdefault((t.column("pair")[0].as_py(), t.column("target")[0].as_py()), []).append(t)
    for tables in by_target.values():
        tables.sort(key=lambda t: t.column("seed")[0].as_py())
        seeds = [t.column("seed")[0].as_py() for t in tables]
        for i in range(len(tables)):
            source = tables[(i + 1) % len(tables)]  # seed seeds[i] gets the run of the next seed
            old_id = source.column("run_id")[0].as_py()
            new_id = hashlib.sha256(f"{old_id}/reseeded/{new_model}".encode()).hexdigest()[:16]
            n = source.num_rows
            out = source
            for name, value in (("model", new_model), ("run_id", new_id), ("seed", seeds[i])):
                col = out.schema.get_field_index(name)
                out = out.set_column(col, out.schema.field(col), pa.array([value] * n, type=out.schema.field(col).type))
            out = out.replace_schema_metadata(source.schema.metadata)
            pq.write_table(out, results / "runs" / f"{new_id}.parquet")
            shutil.copyfile(
                results / "predictions" / f"{old_id}.parquet", results / "predictions" / f"{new_id}.parquet"
            )
            written += 1
    return written


def test_gate_passes_on_reseeded_nulls_and_fails_on_the_real_regression(tmp_path, capsys):
    results = _copy_with(tmp_path / "results")
    base = ["--results-dir", str(results), "--n-boot", "400", "--fail-on-regression"]
    recipes = [
        ("minilm-l6", "standard"),
        ("minilm-l6", "lora"),
        ("minilm-l6-l2", "standard"),
        ("minilm-l6-random", "standard"),
        ("minilm-l6", "standard-v2"),
        ("minilm-l6-l2", "standard-v2"),
    ]
    for model, protocol in recipes:
        assert _reseed(results, model, protocol, f"{model}-reseeded") >= 3
        for a, b in (
            (f"{model}@{protocol}", f"{model}-reseeded@{protocol}"),
            (f"{model}-reseeded@{protocol}", f"{model}@{protocol}"),
        ):
            assert main(["compare", a, b, *base]) == 0, capsys.readouterr().out
            out = capsys.readouterr().out
            assert (
                " recipe " in out and "regressions (B significantly worse OOD" in out and out.rstrip().endswith("none")
            )
    # the NER pairs are in the minilm-l6 comparisons, on their headline metric (a bare name: standard-v2)
    assert main(["compare", "minilm-l6", "minilm-l6-reseeded", "--results-dir", str(results), "--n-boot", "300"]) == 0
    out = capsys.readouterr().out
    assert "wikigold_to_btc (source wikigold)" in out and "entity_micro_f1" in out
    # the real regression still fails the gate, on the pairs the README names
    assert main(["compare", "minilm-l6", "minilm-l6-random", *base]) == 1
    out, err = capsys.readouterr()
    assert "regression: minilm-l6-random is significantly worse than minilm-l6 out of domain" in err
    failed = out.rsplit("regressions (B significantly worse OOD", 1)[1].split(": ", 1)[1].split()
    readme = " ".join((REPO / "README.md").read_text().split())
    said = readme.split("`minilm-l6-random` vs `minilm-l6` fails (", 1)[1].split(")", 1)[0]
    pairs = {p.strip().replace(" → ", "_to_") for p in said.replace(" and ", ", ").split(", ")}
    assert {f.rstrip(",").split("/")[0] for f in failed} == pairs, (failed, said)


def test_task_metrics_work_on_the_committed_results(tmp_path, capsys):
    results = _copy_with(tmp_path / "results")
    argv = ["compare", "minilm-l6", "minilm-l6-random", "--results-dir", str(results), "--n-boot", "200"]
    assert main(argv) == 0 and " macro_f1 " in capsys.readouterr().out  # the text pairs' headline
    for metric in ("ece_debiased", "brier", "ece"):
        assert main([*argv, "--metric", metric]) == 0
        assert f" {metric} " in capsys.readouterr().out
    ner = [
        "compare",
        "minilm-l6",
        "minilm-l6",
        "--pair",
        "wikigold_to_btc",
        "--results-dir",
        str(results),
        "--n-boot",
        "200",
    ]
    assert main([*ner, "--metric", "entity_micro_f1"]) == 0
    assert "fixed checkpoints" in capsys.readouterr().out  # the same fine-tunes on both sides
    assert main([*ner, "--metric", "macro_precision"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "metric 'macro_precision' is not defined for token-classification" in err
    assert main(["leaderboard", "--results-dir", str(results), "--format", "markdown", "--metric", "ece"]) == 0
    assert "| ece |" in capsys.readouterr().out
    board_file = tmp_path / "board.parquet"
    assert main(["leaderboard", "--results-dir", str(results), "--metric", "ecee", "--out", str(board_file)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did you mean 'ece'" in err and not board_file.exists()  # nothing written
    out = tmp_path / "ner.html"
    assert (
        main(
            [
                "report",
                "--results-dir",
                str(results),
                "--out",
                str(out),
                "--cards-dir",
                str(REPO / "data_cards"),
                "--metric",
                "entity_micro_f1",
            ]
        )
        == 0
    )
    html = out.read_text()
    assert (
        "Leaderboard (entity_micro_f1)" in html
        and "wikigold_to_wnut17" in html
        and "fpb_to_tfns" not in html.split("<nav>")[1]
    )


def headline_ood_replicates(results_dir: Path, n_boot: int, rng: np.random.Generator):
    """Per (model, protocol, pair, target) with at least 3 seeds: the OOD headline score of each seed
    (in seed order) and its ``n_boot`` example-bootstrap replicates under one shared resample, from
    the stored predictions (also used by benchmarks/verdict_calibration.py)."""
    from shiftbench.analysis.taskstats import headline_metric, replicate_scores

    cols = ["run_id", "model", "protocol", "pair", "target", "task", "seed", "label_space"]
    frame = pd.concat(
        pd.read_parquet(p, columns=cols).iloc[:1] for p in sorted((results_dir / "runs").glob("*.parquet"))
    )
    for _, g in frame.groupby(["model", "protocol", "pair", "target"]):
        if len(g) < 3:
            continue
        g = g.sort_values("seed")
        task, tags = g["task"].iloc[0], tuple(g["label_space"].iloc[0])
        stats = [load_run_stats(results_dir, rid, task, tags) for rid in g["run_id"]]
        yield replicate_scores([s.ood.values for s in stats], task, headline_metric(task), tags, n_boot, rng)


def two_seed_nulls(points: np.ndarray, replicates: np.ndarray):
    """Null comparisons from the first three seeds of one recipe: A = seeds (i, j), B = seeds (j, k)
    relabelled as (i, j), for the three rotations; yields the per-seed differences B - A (2,) and
    their bootstrap replicates (n_boot, 2)."""
    for i, j, k in ((0, 1, 2), (1, 2, 0), (2, 0, 1)):
        d = np.array([points[j] - points[i], points[k] - points[j]])
        yield d, np.stack([replicates[:, j] - replicates[:, i], replicates[:, k] - replicates[:, j]], axis=1)


@dataclass(frozen=True)
class NullCounts:
    """Significant verdicts among null comparisons (same recipe on both sides) on a results dir."""

    old: int  # seed i vs seed j under the examples-only percentile interval (the old ``compare``)
    old_n: int
    two: int  # 2-seed nulls under the seed-aware interval, two-sided 5 %
    two_n: int
    gate: int  # 2-seed nulls under the gate's one-sided 5 % test before Holm, both directions
    gate_n: int


def null_counts(results_dir: Path, n_boot: int, seed: int = 0) -> NullCounts:
    """The null comparisons of benchmarks/verdict_calibration.py and the README, counted."""
    from shiftbench.analysis.stats import percentile_interval, seed_aware_interval

    old = old_n = two = two_n = gate = gate_n = 0
    for pts, reps in headline_ood_replicates(results_dir, n_boot, np.random.default_rng(seed)):
        for i in range(3):
            for j in range(3):
                if i != j:
                    ci = percentile_interval(pts[j] - pts[i], reps[:, j] - reps[:, i])
                    old, old_n = old + ci.excludes_zero, old_n + 1
        for d, dr in two_seed_nulls(pts, reps):
            sa = seed_aware_interval(d, dr)
            two, two_n = two + (sa.low > 0 or sa.high < 0), two_n + 1
            for sign in (1, -1):
                gate += seed_aware_interval(sign * d, sign * dr).p_below(0.0) <= 0.05
                gate_n += 1
    return NullCounts(int(old), old_n, int(two), two_n, int(gate), gate_n)


def test_null_comparisons_on_committed_predictions_rarely_reject():
    """2-seed null comparisons from every (model, protocol, pair, target) with 3 seeds (see
    :func:`two_seed_nulls`). Same recipe on both sides, so at alpha = 0.05 the two-sided verdict should
    fire rarely. (With only 3 seeds the two sides share one fine-tune, which inflates the seed
    variance: these nulls are conservative.)"""
    n = null_counts(COMMITTED, 400)
    assert n.two_n >= 30 and n.two / n.two_n <= 0.1, f"{n.two} of {n.two_n} null comparisons significant"


def test_compare_notes_the_committed_edge_selections():
    """Every committed standard and lora fine-tune selected at an edge (README); icl has no grid."""
    from shiftbench.analysis.compare import compare

    c = compare(COMMITTED, "minilm-l6@standard", "minilm-l6@lora", pairs=["fpb_to_tfns"], n_boot=50)
    [t] = c.targets
    assert (t.edge_seeds_a, t.edge_seeds_b) == (3, 3)
    assert "grid edge: minilm-l6@standard in 3 of 3 seeds and minilm-l6@lora in 3 of 3 seeds" in c.to_text()
    [t] = compare(COMMITTED, "smollm2-135m@icl", "smollm2-135m@standard", pairs=["fpb_to_tfns"], n_boot=50).targets
    assert (t.edge_seeds_a, t.edge_seeds_b) == (None, 0)  # its standard fine-tune selected inside the grid (0/1)
