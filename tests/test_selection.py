"""Selections at an edge of the protocol's grid: flagged in run rows, counted in the leaderboard,
warned about once per fine-tune, and recovered for run files written before the flags existed."""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import shiftbench
from shiftbench.analysis.leaderboard import GROUP_KEYS, aggregate, summary_table
from shiftbench.cli import main
from shiftbench.registry.selection import SelectionEdges, edge_warning, selection_edges
from shiftbench.results.store import (
    ADDED_COLUMNS,
    RUN_SCHEMA,
    RUNS_DIR,
    SCHEMA_VERSION,
    edge_warnings,
    read_runs,
)

GRID = (2e-5, 5e-5, 1e-4)


def history(lrs=GRID, epochs=3, last_epoch_of=None):
    """EpochRecords as dicts; ``last_epoch_of``: {lr: the last epoch it trained} (max_steps, early stopping)."""
    last_epoch_of = last_epoch_of or {}
    return [
        {"learning_rate": lr, "epoch": e, "val_scores": {"macro_f1": 0.5}}
        for lr in lrs
        for e in range(1, last_epoch_of.get(lr, epochs) + 1)
    ]


@pytest.mark.parametrize(
    ("lr", "epoch", "expected"),
    [
        (2e-5, 2, SelectionEdges("low", False)),
        (1e-4, 3, SelectionEdges("high", True)),
        (1e-4, 1, SelectionEdges("high", False)),
        (5e-5, 2, SelectionEdges("interior", False)),
        (5e-5, 3, SelectionEdges("interior", True)),
    ],
)
def test_edges_of_a_three_by_three_grid(lr, epoch, expected):
    edges = selection_edges(history(), lr, epoch)
    assert edges == expected
    assert edges.at_edge == (expected.lr != "interior" or expected.epoch_at_edge)
    assert edges.applicable


def test_the_last_epoch_is_the_last_the_selected_lr_trained():
    # 5e-5 stopped after epoch 2 (max_steps or early stopping): its epoch 2 is its last
    h = history(last_epoch_of={5e-5: 2})
    assert selection_edges(h, 5e-5, 2) == SelectionEdges("interior", True)
    # an lr that trained past its best epoch is bracketed in epochs
    h = history(epochs=5, last_epoch_of={5e-5: 3})
    assert selection_edges(h, 5e-5, 1) == SelectionEdges("interior", False)


def test_a_one_element_grid_has_no_lr_edge():
    # quick (one lr, one epoch): nothing to be at the edge of
    assert selection_edges(history(lrs=(1e-4,), epochs=1), 1e-4, 1) == SelectionEdges(None, None)
    # one lr, several epochs: only the epoch can be at an edge
    assert selection_edges(history(lrs=(1e-4,), epochs=3), 1e-4, 3) == SelectionEdges(None, True)
    assert selection_edges(history(lrs=(1e-4,), epochs=3), 1e-4, 2) == SelectionEdges(None, False)
    # several lrs, one epoch each (max_steps within the first epoch): only the lr can be
    assert selection_edges(history(epochs=1), 2e-5, 1) == SelectionEdges("low", None)


def test_nothing_selected_is_not_applicable():
    for h, lr, epoch in (((), None, None), (history(), None, None), ((), 1e-4, 3)):  # eval-only, icl, no history
        edges = selection_edges(h, lr, epoch)
        assert edges == SelectionEdges(None, None) and not edges.at_edge and not edges.applicable
    assert edge_warning("x", (), None, None) is None


def test_lr_equality_survives_a_json_round_trip():
    h = json.loads(json.dumps(history(lrs=(1e-5 / 3, 0.1 / 3))))
    assert selection_edges(h, 0.1 / 3, 1).lr == "high"


def test_warning_says_which_edge_and_what_to_do():
    who = "minilm-l6-l2 on fpb, seed 0, protocol standard,"
    line = edge_warning(who, history(), 1e-4, 3)
    assert line == (
        "warning: minilm-l6-l2 on fpb, seed 0, protocol standard, selected lr 0.0001, the largest of the grid "
        "{2e-05, 5e-05, 0.0001}, at epoch 3, the last it trained: the grid may not bracket the optimum; "
        "add learning rates above 0.0001 and train more epochs (protocol learning_rates and epochs)"
    )
    assert "\n" not in line
    low = edge_warning(who, history(), 2e-5, 2)
    assert "the smallest of the grid" in low and "at epoch 2 of 3" in low
    assert low.endswith("add learning rates below 2e-05 (protocol learning_rates)")
    last = edge_warning(who, history(), 5e-5, 3)
    assert "selected lr 5e-05 at epoch 3, the last it trained" in last
    assert last.endswith("train more epochs (protocol epochs)")
    assert edge_warning(who, history(), 5e-5, 2) is None


# --- runs, files, leaderboard ------------------------------------------------------------


def test_run_rows_carry_the_flags_of_their_history(tiny_env):
    summary = shiftbench.run(pairs=["news_to_forum"], seeds="0,1", **tiny_env)
    rows = read_runs(tiny_env["results_dir"]).table.to_pandas()
    assert len(summary.new_results) == 2
    for r in summary.new_results:
        edges = selection_edges(r.history, r.selected_lr, r.selected_epoch)
        mine = rows[rows["run_id"] == r.run_id]
        assert set(mine["selected_lr_edge"]) == {edges.lr} and edges.lr in ("low", "high")  # a 2-lr grid has no inside
        assert set(mine["selected_epoch_at_edge"]) == {edges.epoch_at_edge}
        assert (mine["schema_version"] == SCHEMA_VERSION).all()
    board = summary.leaderboard
    row = board[board["metric"] == "macro_f1"].iloc[0]
    # every selection in a two-lr grid is at an lr edge
    assert row["n_edge_selections"] == row["n_seeds"] == 2
    assert " 2/2" in summary_table(board)


def test_cli_warns_once_per_fine_tune_at_an_edge(tiny_env, capsys):
    argv = [
        "run",
        "--pair",
        "news_to_tweets",
        "--seeds",
        "0",
        "--registry",
        str(tiny_env["registries"][0]),
        "--data-dir",
        str(tiny_env["data_dir"]),
        "--protocol",
        tiny_env["protocol"],
        "--model",
        "tiny",
        "--results-dir",
        str(tiny_env["results_dir"]),
        "--cache-dir",
        str(tiny_env["cache_dir"]),
        "--device",
        "cpu",
    ]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    # two targets, one fine-tune, and a two-lr grid always selects at an lr edge: one line
    assert len(warnings) == 1
    assert warnings[0].startswith("warning: tiny on news, seed 0, protocol tiny, selected lr ")
    (header,) = [line for line in out.splitlines() if line.startswith("model ")]
    assert header.split()[-1] == "edge"  # the closing table shows the seeds at an edge
    assert main(argv) == 0  # nothing new: nothing to warn about
    assert "warning: " not in capsys.readouterr().err


def test_quick_and_eval_only_rows_have_no_edge(tiny_env, tmp_path):
    quick = tmp_path / "one.yaml"
    quick.write_text("base: quick\nbatch_size: 8\nmax_length: 24\n")  # one lr, one epoch
    summary = shiftbench.run(pairs=["news_to_forum"], seeds=[0], **{**tiny_env, "protocol": str(quick)})
    (r,) = summary.new_results
    assert r.edges == SelectionEdges(None, None) and r.edge_warning() is None
    assert edge_warnings(summary.new_results) == []
    row = summary.leaderboard.iloc[0]
    assert pd.isna(row["n_edge_selections"])
    assert summary_table(summary.leaderboard).splitlines()[-1].endswith(" -")
    assert pd.isna(read_runs(tiny_env["results_dir"]).table.to_pandas()["selected_epoch_at_edge"]).all()


def downgrade_to_v1(path):
    """Rewrite a run file as schema version 1 wrote it: without the columns versions 2 and later added."""
    table = pq.read_table(path)
    meta = dict(table.schema.metadata)
    meta[b"shiftbench.schema_version"] = b"1"
    old = table.drop_columns([c for v, cols in ADDED_COLUMNS.items() for c in cols])
    old = old.set_column(
        old.schema.get_field_index("schema_version"), "schema_version", pa.array([1] * len(old), pa.int32())
    )
    pq.write_table(old.replace_schema_metadata(meta), path)


def test_version_1_files_read_with_flags_from_their_history(tiny_env):
    shiftbench.run(pairs=["news_to_tweets"], seeds=[0], **tiny_env)
    results = tiny_env["results_dir"]
    new = read_runs(results).table.to_pandas().sort_values(["run_id", "metric"]).reset_index(drop=True)
    files = sorted((results / RUNS_DIR).glob("*.parquet"))
    downgrade_to_v1(files[0])
    loaded = read_runs(results)
    assert loaded.skipped == ()
    assert loaded.table.schema == RUN_SCHEMA
    old = loaded.table.to_pandas().sort_values(["run_id", "metric"]).reset_index(drop=True)
    assert sorted(set(old["schema_version"])) == [1, SCHEMA_VERSION]  # a file's version stays its own
    v1 = old["schema_version"] == 1
    assert old.loc[v1, list(ADDED_COLUMNS[3])].isna().all().all()  # no estimate before version 3
    pd.testing.assert_frame_equal(
        old.drop(columns=["schema_version", *ADDED_COLUMNS[3]]), new.drop(columns=["schema_version", *ADDED_COLUMNS[3]])
    )
    # only some columns, the added ones among them (as the leaderboard reads)
    some = read_runs(results, columns=["run_id", "selected_lr_edge"]).table.to_pandas()
    assert set(some["selected_lr_edge"]) == set(new["selected_lr_edge"])
    assert read_runs(results, columns=["run_id", "seed"]).table.num_rows == len(new)


def test_unknown_versions_and_incomplete_v2_files_are_skipped(tiny_env):
    shiftbench.run(pairs=["news_to_tweets"], seeds=[0], **tiny_env)
    a, b = sorted((tiny_env["results_dir"] / RUNS_DIR).glob("*.parquet"))
    table = pq.read_table(a)
    pq.write_table(
        table.replace_schema_metadata(
            {**table.schema.metadata, b"shiftbench.schema_version": str(SCHEMA_VERSION + 1).encode()}
        ),
        a,
    )
    table = pq.read_table(b)
    pq.write_table(table.drop_columns(["selected_lr_edge"]), b)  # still says version 2
    loaded = read_runs(tiny_env["results_dir"])
    assert loaded.table.num_rows == 0
    reasons = dict(loaded.skipped)
    assert reasons[a] == f"schema version {str(SCHEMA_VERSION + 1).encode()!r}, expected 1 to {SCHEMA_VERSION}"
    assert reasons[b] == "columns do not match the run schema (missing selected_lr_edge)"


def test_leaderboard_counts_seeds_at_an_edge():
    base = {k: "x" for k in GROUP_KEYS} | {
        "schema_version": 2,
        "run_id": "r",
        "id_score": 0.8,
        "ood_score": 0.6,
        "gap": 0.2,
        "relative_gap": 0.25,
    }
    flags = [("high", False), ("interior", True), ("interior", False), ("low", None)]
    runs = pd.DataFrame(
        [base | {"seed": s, "selected_lr_edge": lr, "selected_epoch_at_edge": ep} for s, (lr, ep) in enumerate(flags)]
    )
    na = pd.DataFrame(
        [base | {"model": "y", "seed": s, "selected_lr_edge": None, "selected_epoch_at_edge": None} for s in (0, 1)]
    )
    board = aggregate(pd.concat([runs, na], ignore_index=True)).set_index("model")
    assert board.loc["x", "n_edge_selections"] == 3  # seeds 0, 1 and 3
    assert pd.isna(board.loc["y", "n_edge_selections"])  # no grid edge to be at
    # a frame without the flags (older callers) counts nothing rather than zero
    (row,) = aggregate(runs.drop(columns=["selected_lr_edge", "selected_epoch_at_edge"])).itertuples()
    assert pd.isna(row.n_edge_selections)


def test_readme_documents_the_edge_columns():
    from .conftest import REPO

    section = (REPO / "README.md").read_text().split("## Results schema", 1)[1].split("\n## ", 1)[0]
    for column in ("selected_lr_edge", "selected_epoch_at_edge", "n_edge_selections"):
        assert column in section


# --- early stopping (patience, grid_patience) ----------------------------------------------

LABELS = ("negative", "neutral", "positive")


@pytest.fixture()
def scripted(tiny_registry, tiny_data_dir, tiny_protocol, monkeypatch):
    """fine_tune on the tiny world with source-validation scores read from a script (one per
    epoch, in training order) instead of measured, so where it stops is known exactly."""
    from shiftbench.data.datasets import load_domain
    from shiftbench.data.encode import Encoder
    from shiftbench.modeling.device import make_runtime
    from shiftbench.modeling.models import load_classifier, load_tokenizer, resolve_model
    from shiftbench.registry.catalog import load_catalog
    from shiftbench.registry.protocol import load_protocol
    from shiftbench.training.train import fine_tune

    monkeypatch.setenv("SHIFTBENCH_NUM_THREADS", "1")
    catalog = load_catalog([tiny_registry], include_env=False)
    model = resolve_model("tiny", catalog)
    tok = load_tokenizer(model)
    source = load_domain(catalog.datasets.get("news"), tiny_data_dir, ("train", "validation", "test"))
    base = load_protocol(str(tiny_protocol))
    enc = Encoder(tok, LABELS, base.max_length, None)
    train, val = enc(source, "train"), enc(source, "validation")

    def run(scores: list[float], checkpoints=None, **fields):
        script = iter(scores)

        class Scored:
            def __init__(self):
                self.value = next(script)  # StopIteration: more epochs trained than scripted

            def scores(self):
                return {"macro_f1": self.value, "accuracy": self.value}

        monkeypatch.setattr("shiftbench.training.train.predict", lambda *a, **k: Scored())
        protocol = dataclasses.replace(base, **fields)
        ft = fine_tune(
            lambda: load_classifier(model, LABELS, tok.pad_token_id),
            train,
            val,
            protocol,
            0,
            tok.pad_token_id,
            make_runtime("cpu", "fp32"),
            checkpoints=checkpoints,
        )
        assert next(script, None) is None, "fewer epochs trained than scripted"
        return ft

    return run


def trace(ft):
    return [(h.learning_rate, h.epoch) for h in ft.history]


def test_patience_stops_a_learning_rate_after_its_best(scripted):
    ft = scripted(
        [0.5, 0.6, 0.55, 0.7, 0.8, 0.85, 0.9, 0.3, 0.3], learning_rates=(1e-3, 2e-3, 3e-3), epochs=4, patience=1
    )
    # 1e-3: best at epoch 2, epoch 3 not better: stop; 2e-3: better every epoch: all 4;
    # 3e-3: a tie is not better: stop after epoch 2
    assert trace(ft) == [
        (1e-3, 1),
        (1e-3, 2),
        (1e-3, 3),
        (2e-3, 1),
        (2e-3, 2),
        (2e-3, 3),
        (2e-3, 4),
        (3e-3, 1),
        (3e-3, 2),
    ]
    assert (ft.selected_lr, ft.selected_epoch, ft.selection_score) == (2e-3, 4, 0.9)
    # the selection is at the last epoch its lr trained, and inside the grid
    assert selection_edges(
        [dataclasses.asdict(h) for h in ft.history], ft.selected_lr, ft.selected_epoch
    ) == SelectionEdges("interior", True)


def test_grid_patience_stops_the_ascending_grid_after_the_optimum(scripted):
    ft = scripted(
        [0.5, 0.6, 0.7, 0.8, 0.75, 0.7], learning_rates=(1e-3, 2e-3, 3e-3, 4e-3, 5e-3), epochs=2, grid_patience=1
    )
    assert trace(ft) == [(1e-3, 1), (1e-3, 2), (2e-3, 1), (2e-3, 2), (3e-3, 1), (3e-3, 2)]  # 4e-3, 5e-3 never trained
    assert ft.selected_lr == 2e-3 and ft.model is not None  # the module is kept for scoring
    h = [dataclasses.asdict(r) for r in ft.history]
    assert selection_edges(h, ft.selected_lr, ft.selected_epoch) == SelectionEdges("interior", True)
    # patience 2: one worse lr is not enough
    ft = scripted(
        [0.5, 0.6, 0.7, 0.8, 0.75, 0.7, 0.6, 0.6],
        learning_rates=(1e-3, 2e-3, 3e-3, 4e-3, 5e-3),
        epochs=2,
        grid_patience=2,
    )
    assert [lr for lr, e in trace(ft) if e == 1] == [1e-3, 2e-3, 3e-3, 4e-3]


def test_early_stopping_resumes_where_an_uninterrupted_run_stops(scripted, tmp_path, monkeypatch):
    from shiftbench.core import faults

    from .conftest import Killed, kill_at

    scores = [0.5, 0.6, 0.55, 0.7, 0.8, 0.85, 0.9, 0.3, 0.3]
    fields = {"learning_rates": (1e-3, 2e-3, 3e-3), "epochs": 4, "patience": 1, "grid_patience": 1}
    reference = scripted(scores, **fields)
    kill_at(monkeypatch, "epoch_end", 3)  # right after 1e-3's epoch 3, the one that ends it
    with pytest.raises(Killed):
        scripted(scores, checkpoints=tmp_path / "ckpt", **fields)
    monkeypatch.setattr(faults, "fault_point", lambda point: None)
    resumed = scripted(scores[3:], checkpoints=tmp_path / "ckpt", **fields)  # scores of the epochs still to train
    assert trace(resumed) == trace(reference)
    assert (resumed.selected_lr, resumed.selected_epoch) == (reference.selected_lr, reference.selected_epoch)


def test_early_stopping_fields_are_validated_and_hashed_only_when_set():
    from shiftbench.core.errors import ShiftbenchError
    from shiftbench.registry.protocol import load_protocol

    std = load_protocol("standard")
    assert "patience" not in std.canonical() and "grid_patience" not in std.canonical()
    assert std.with_overrides(patience=1).hash != std.hash != std.with_overrides(grid_patience=1).hash
    with pytest.raises(ShiftbenchError, match="'patience': must be >= 1"):
        std.with_overrides(patience=0)
    with pytest.raises(ShiftbenchError, match="strictly increasing with grid_patience"):
        std.with_overrides(grid_patience=1, learning_rates=(1e-4, 2e-5))


# --- bracketing search (lr_start, standard-v2) ---------------------------------------------

GRID5 = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3)


def test_bracketing_search_goes_down_when_no_larger_rate_beats_the_start(scripted, tmp_path, monkeypatch):
    from shiftbench.core import faults

    from .conftest import Killed, kill_at

    # 1e-4: 0.6, 0.7; 3e-4: 0.65 (worse: up stops); 3e-5: 0.8 (better: keep going down); 1e-5: 0.5 (stop)
    scores = [0.6, 0.7, 0.65, 0.6, 0.75, 0.8, 0.5, 0.4]
    fields = {"learning_rates": GRID5, "lr_start": 1e-4, "epochs": 2, "grid_patience": 1}
    ft = scripted(scores, **fields)
    assert trace(ft) == [(1e-4, 1), (1e-4, 2), (3e-4, 1), (3e-4, 2), (3e-5, 1), (3e-5, 2), (1e-5, 1), (1e-5, 2)]
    assert (ft.selected_lr, ft.selected_epoch) == (3e-5, 2)
    h = [dataclasses.asdict(r) for r in ft.history]
    assert selection_edges(h, ft.selected_lr, ft.selected_epoch) == SelectionEdges("interior", True)
    # killed in the downward phase (after 3e-5's first epoch), it resumes with 3e-5 and ends alike:
    # the saved state of a lower rate trained later is the newest one
    kill_at(monkeypatch, "epoch_end", 5)
    with pytest.raises(Killed):
        scripted(scores, checkpoints=tmp_path / "ckpt", **fields)
    monkeypatch.setattr(faults, "fault_point", lambda point: None)
    resumed = scripted(scores[5:], checkpoints=tmp_path / "ckpt", **fields)
    assert trace(resumed) == trace(ft) and (resumed.selected_lr, resumed.selected_epoch) == (3e-5, 2)


def test_bracketing_search_does_not_go_down_once_a_larger_rate_won(scripted):
    ft = scripted([0.6, 0.8, 0.7], learning_rates=GRID5, lr_start=1e-4, epochs=1, grid_patience=1)
    assert trace(ft) == [(1e-4, 1), (3e-4, 1), (1e-3, 1)]  # 3e-5 and 1e-5 never trained
    assert ft.selected_lr == 3e-4
    # the optimum at the grid's top: the search ends there and the selection is an edge
    ft = scripted([0.6, 0.7, 0.8], learning_rates=GRID5, lr_start=1e-4, epochs=1, grid_patience=1)
    h = [dataclasses.asdict(r) for r in ft.history]
    assert selection_edges(h, ft.selected_lr, ft.selected_epoch).lr == "high"


@pytest.mark.parametrize("peak", range(5))
@pytest.mark.parametrize("start", range(5))
def test_bracketing_search_finds_the_peak_of_any_unimodal_curve(peak, start):
    from shiftbench.registry.selection import next_learning_rate

    score = {lr: -abs(i - peak) for i, lr in enumerate(GRID5)}  # unimodal in log lr
    trained: list[tuple[float, float]] = []
    while (lr := next_learning_rate(trained, GRID5, 1, GRID5[start])) is not None:
        assert lr not in {t for t, _ in trained}, "a rate trained twice"
        trained.append((lr, score[lr]))
    best = max(trained, key=lambda t: t[1])[0]
    assert best == GRID5[peak]
    lrs = sorted(t for t, _ in trained)
    # bracketed: the best has a worse trained neighbour on each side, unless it is the grid's edge
    assert best in (GRID5[0], GRID5[-1]) or lrs[0] < best < lrs[-1]
    assert len(trained) <= abs(peak - start) + 3  # the start, the way to the peak, one past it, one the other way


def test_lr_start_is_validated_and_hashed_only_when_set():
    from shiftbench.core.errors import ShiftbenchError
    from shiftbench.registry.protocol import load_protocol

    v2 = load_protocol("standard-v2")
    assert "lr_start" not in load_protocol("standard").canonical() and v2.canonical()["lr_start"] == 1e-4
    assert v2.with_overrides(lr_start=3e-4).hash != v2.hash
    with pytest.raises(ShiftbenchError, match="'lr_start': must be one of learning_rates"):
        v2.with_overrides(lr_start=2e-4)
    with pytest.raises(ShiftbenchError, match="'lr_start': must be one of learning_rates, with grid_patience"):
        v2.with_overrides(grid_patience=None)
