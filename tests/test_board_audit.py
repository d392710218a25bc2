"""benchmarks/board_audit.py: the issue-#16 goals it reports (edges, plateau, cost) are computed
right, and the numbers the READMEs quote from it are the committed run files'."""

from __future__ import annotations

import importlib.util
import re
import sys

import pytest

from .conftest import REPO


def _audit():
    spec = importlib.util.spec_from_file_location("board_audit", REPO / "benchmarks" / "board_audit.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["board_audit"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


audit = _audit()


def finetune(curves: dict[float, list[float]], lr: float, epoch: int, model="minilm-l6-l2"):
    history = tuple(
        {"learning_rate": r, "epoch": e, "val_scores": {"macro_f1": s}}
        for r, scores in curves.items()
        for e, s in enumerate(scores, start=1)
    )
    score = curves[lr][epoch - 1]
    return audit.FineTune("f", model, "fpb", 0, "standard-v2", lr, epoch, score, 100.0, 2, history)


def test_plateau_is_a_selection_before_the_last_epoch_or_a_flat_end():
    assert finetune({1e-4: [0.5, 0.8, 0.7, 0.6]}, 1e-4, 2).plateaued  # early-stopped after its best
    assert finetune({1e-4: [0.5, 0.7, 0.802, 0.8]}, 1e-4, 3).plateaued  # selected before the last
    assert finetune({1e-4: [0.5, 0.798, 0.801]}, 1e-4, 3).plateaued  # last two within 0.005
    assert not finetune({1e-4: [0.5, 0.7, 0.8]}, 1e-4, 3).plateaued  # still climbing at the end
    # only the selected rate's curve counts, not another rate's flat end
    assert not finetune({1e-4: [0.5, 0.7, 0.8], 3e-4: [0.4, 0.5, 0.5]}, 1e-4, 3).plateaued


def test_edges_and_cost_of_one_finetune():
    f = finetune(
        {1e-4: [0.6, 0.8, 0.7, 0.7], 3e-4: [0.5, 0.6, 0.6, 0.55], 3e-5: [0.4, 0.6, 0.7, 0.75, 0.76, 0.76]}, 1e-4, 2
    )
    assert f.lrs_trained == [1e-4, 3e-4, 3e-5]  # in search order
    assert not f.edges.at_edge and f.core_seconds == 200.0
    assert finetune({1e-4: [0.6, 0.8], 3e-4: [0.5, 0.6]}, 1e-4, 2).edges.at_edge  # lowest rate, last epoch
    summary = "\n".join(audit.summaries([f, finetune({1e-4: [0.6, 0.8], 3e-4: [0.5, 0.6]}, 1e-4, 2)]))
    assert "edges: 1 of 2 fine-tunes (50%)" in summary and "1 on a learning-rate edge, 1 at the last epoch" in summary


@pytest.mark.skipif(not any((REPO / "results" / "runs").glob("*.parquet")), reason="no committed run files")
def test_readme_numbers_are_the_committed_standard_boards():
    finetunes = audit.read_finetunes(REPO / "results", ["standard"])
    at_edge = sum(f.edges.at_edge for f in finetunes)  # the board's 24, NER's 3 and smollm2-135m's 1
    readme = (REPO / "README.md").read_text()
    flat = " ".join(readme.split())
    assert f"{at_edge} of its {len(finetunes)} `standard` fine-tunes selected at an edge" in flat
    high = sum(f.edges.lr == "high" for f in finetunes)
    last = sum(f.edges.epoch_at_edge is True for f in finetunes)
    assert f"({high} the largest learning rate, 1e-4; {last} the last of the 3 epochs)" in flat
    remedies = audit.read_finetunes(REPO / "results", ["adversarial", "augment", "distill", "lora"])
    assert len(remedies) == 12 and all(f.edges.at_edge for f in remedies)  # "and so did every ... fine-tune"
    small = [f for f in finetunes if f.model in audit.PLATEAU_MODELS]
    no_plateau = sum(not f.plateaued for f in small)
    core_hours = sum(f.core_seconds for f in finetunes) / 3600
    bench = " ".join((REPO / "benchmarks" / "README.md").read_text().split())
    quoted = re.search(r"committed `standard` board: (\d+) fine-tunes, 9 epochs each, ([0-9.]+) core-hours", bench)
    assert quoted and int(quoted[1]) == len(finetunes) and float(quoted[2]) == pytest.approx(core_hours, abs=0.05)
    assert f"{no_plateau} of its {len(small)} `minilm-l6-l2` and `minilm-l6-random` fine-tunes had not reached" in bench


@pytest.mark.skipif(not any((REPO / "results" / "runs").glob("*.parquet")), reason="no committed run files")
def test_readme_numbers_are_the_committed_v2_board():
    """The Leaderboard section's cost, edge and plateau sentences are the committed standard-v2 board's."""
    summary = audit.board_summary(REPO / "results")
    assert summary.n == 39  # (4 checkpoints x FPB and SST-2, minilm-l6 on WikiGold, 4 remedies) x seeds 0-2
    flat = " ".join((REPO / "README.md").read_text().split())
    for sentence in summary.sentences():
        assert sentence in flat, f"README should say: {sentence}"
    pilot = " ".join((REPO / "benchmarks" / "pilot" / "README.md").read_text().split())
    assert summary.sentences()[0] in pilot, "the pilot's measured cost is the board's"
