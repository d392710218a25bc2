"""Did the selection land on an edge of the protocol's grid?

A fine-tune trains every learning rate of its protocol's grid for the protocol's epochs and keeps
the (learning rate, epoch) with the best source-validation score. When that is the smallest or
largest learning rate, or the last epoch its learning rate trained, the grid does not bracket
the optimum: a wider grid or more epochs might have scored better, and a model that is merely
under-trained looks worse than it is. Every run row records where its selection lay
(``selected_lr_edge``, ``selected_epoch_at_edge``), the leaderboard counts the seeds at an edge,
and a run prints one warning line per fine-tune at an edge.

Everything is computed from the fine-tune's per-epoch history, which lists every (learning rate,
epoch) trained, so run files written before these columns existed get the same flags on reading.

>>> h = [{"learning_rate": lr, "epoch": e} for lr in (2e-5, 5e-5, 1e-4) for e in (1, 2, 3)]
>>> selection_edges(h, 1e-4, 3)
SelectionEdges(lr='high', epoch_at_edge=True)
>>> selection_edges(h, 5e-5, 2).at_edge
False
>>> selection_edges([{"learning_rate": 1e-4, "epoch": 1}], 1e-4, 1)  # quick: one lr, one epoch
SelectionEdges(lr=None, epoch_at_edge=None)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

LR_EDGES = ("low", "high")  # values of selected_lr_edge that are an edge; the third is "interior"


@dataclass(frozen=True)
class SelectionEdges:
    # "low" / "high": the selected lr is the smallest / largest of a grid of two or more;
    # "interior": strictly between them; None: no grid to be on the edge of (a one-element grid,
    # as in `quick`, `decoder-quick` and `icl`, is its own edge on both sides, which says nothing
    # about the optimum), or nothing was selected (--eval-only, icl).
    lr: str | None
    # True: the selected epoch is the last one its lr trained (the protocol's last epoch, or the
    # last before max_steps or early stopping ended it), so more epochs might have scored better;
    # None: that lr trained a single epoch, or nothing was selected.
    epoch_at_edge: bool | None

    @property
    def at_edge(self) -> bool:
        return self.lr in LR_EDGES or self.epoch_at_edge is True

    @property
    def applicable(self) -> bool:
        """Was there an edge to be at (a grid of two or more lrs, or two or more epochs)?"""
        return self.lr is not None or self.epoch_at_edge is not None


NOT_APPLICABLE = SelectionEdges(None, None)


def _same(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)


def selection_edges(
    history: Sequence[dict[str, Any]], selected_lr: float | None, selected_epoch: int | None
) -> SelectionEdges:
    """Where (``selected_lr``, ``selected_epoch``) lies on the grid that ``history`` (EpochRecords
    as dicts: ``learning_rate``, ``epoch``, ...) trained."""
    if selected_lr is None or selected_epoch is None or not history:
        return NOT_APPLICABLE
    lrs = sorted({float(h["learning_rate"]) for h in history})
    lr_edge = None
    if len(lrs) >= 2:
        lr_edge = "low" if _same(selected_lr, lrs[0]) else "high" if _same(selected_lr, lrs[-1]) else "interior"
    epochs = [int(h["epoch"]) for h in history if _same(float(h["learning_rate"]), selected_lr)]
    epoch_edge = selected_epoch == max(epochs) if len(epochs) >= 2 else None
    return SelectionEdges(lr_edge, epoch_edge)


def edge_warning(
    who: str, history: Sequence[dict[str, Any]], selected_lr: float | None, selected_epoch: int | None
) -> str | None:
    """One line saying which edge the selection of ``who`` (e.g. "minilm-l6-l2 on fpb, seed 0,
    protocol standard") is at and what to do; None when it is at none."""
    edges = selection_edges(history, selected_lr, selected_epoch)
    if not edges.at_edge:
        return None
    assert selected_lr is not None and selected_epoch is not None  # at an edge: something was selected
    lrs = sorted({float(h["learning_rate"]) for h in history})
    grid = "{" + ", ".join(f"{lr:g}" for lr in lrs) + "}"
    last = max(int(h["epoch"]) for h in history if _same(float(h["learning_rate"]), selected_lr))
    where = f"lr {selected_lr:g}"
    if edges.lr in LR_EDGES:
        where += f", the {'smallest' if edges.lr == 'low' else 'largest'} of the grid {grid},"
    where += f" at epoch {selected_epoch}" + (", the last it trained" if edges.epoch_at_edge else f" of {last}")
    todo = []
    if edges.lr == "low":
        todo.append(f"add learning rates below {selected_lr:g}")
    elif edges.lr == "high":
        todo.append(f"add learning rates above {selected_lr:g}")
    if edges.epoch_at_edge:
        todo.append("train more epochs")
    fields = " and ".join(
        f for f, on in (("learning_rates", edges.lr in LR_EDGES), ("epochs", edges.epoch_at_edge)) if on
    )
    return (
        f"warning: {who} selected {where}: the grid may not bracket the optimum; "
        f"{' and '.join(todo)} (protocol {fields})"
    )


def next_learning_rate(
    trained: Sequence[tuple[float, float]],
    learning_rates: Sequence[float],
    grid_patience: int | None,
    lr_start: float | None,
) -> float | None:
    """The learning rate to train next, or None when the grid search is over.

    ``trained``: (learning rate, source-validation score) for every epoch trained so far, in
    training order. The choice depends on the history alone, so a resumed fine-tune trains what
    an uninterrupted one would.

    - No ``grid_patience``: every rate, in the order listed (``standard``).
    - ``grid_patience`` without ``lr_start``: upwards, stopping after ``grid_patience`` rates in a
      row whose best does not beat the best before them.
    - ``lr_start`` (a bracketing search, ``standard-v2``): train ``lr_start``, search upwards as
      above, and, when no larger rate beat ``lr_start``, search downwards from it the same way
      (without ``grid_patience`` each direction runs to the grid's end; protocols require it
      with ``lr_start``). The score is taken to be unimodal in log learning rate, so the search ends with the best
      rate between two worse ones, unless the best is the grid's smallest or largest rate: the
      edge that ``selection_edges`` then reports.

    >>> grid = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3)
    >>> next_learning_rate([], grid, 1, 1e-4)
    0.0001
    >>> next_learning_rate([(1e-4, 0.80), (3e-4, 0.70)], grid, 1, 1e-4)  # up was worse: go down
    3e-05
    >>> next_learning_rate([(1e-4, 0.80), (3e-4, 0.70), (3e-5, 0.75)], grid, 1, 1e-4) is None
    True
    >>> next_learning_rate([(1e-4, 0.60), (3e-4, 0.80), (1e-3, 0.70)], grid, 1, 1e-4) is None
    True
    >>> next_learning_rate([(2e-5, 0.5), (2e-5, 0.6)], (2e-5, 5e-5, 1e-4), None, None)
    5e-05
    """
    best: dict[float, float] = {}  # lr -> its best score, in training order
    for lr, score in trained:
        best[lr] = max(best.get(lr, -math.inf), score)
    if lr_start is None:
        if grid_patience is not None and best and since_best(list(best.values())) >= grid_patience:
            return None
        return next((lr for lr in learning_rates if lr not in best), None)

    rates = sorted(learning_rates)
    start = rates.index(lr_start)
    if lr_start not in best:
        return lr_start
    patience = grid_patience if grid_patience is not None else len(rates)
    up, down = rates[start + 1 :], rates[:start][::-1]  # nearest first
    tried_up = [lr for lr in best if lr > lr_start]
    scores_up = [best[lr_start]] + [best[lr] for lr in tried_up]
    if len(tried_up) < len(up) and since_best(scores_up) < patience:
        return up[len(tried_up)]
    if since_best(scores_up) < len(scores_up) - 1:
        return None  # a larger rate beat lr_start: the optimum is above it, nothing to find below
    tried_down = [lr for lr in best if lr < lr_start]
    scores_down = [best[lr_start]] + [best[lr] for lr in tried_down]
    if len(tried_down) < len(down) and since_best(scores_down) < patience:
        return down[len(tried_down)]
    return None


def since_best(scores: list[float]) -> int:
    """Entries after the best one (the first best: ties keep the earlier, as selection does)."""
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))
    return len(scores) - 1 - best
