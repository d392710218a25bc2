"""Where the board's fine-tunes selected, what they trained, and what they cost (issue #16).

Reads only run files (``runs/*.parquet``: the rows and the per-epoch source-validation history
in each file's metadata), so it works on the committed ``results/`` and on a board still
running. One line per fine-tune (a fine-tune serves every pair with its source: its run files
share a ``finetune_id``), then three summaries:

- **edges**: fine-tunes whose selection lies on an edge of what their protocol trained (smallest
  or largest learning rate, or the last epoch of the selected rate;
  ``shiftbench.registry.selection``), against the issue's goal of at most 1 in 5;
- **plateau**: for ``minilm-l6-l2`` and ``minilm-l6-random``, the issue's goal: the selected epoch
  is not the last one its rate trained, or that rate's last two epochs differ by < 0.005;
- **cost**: epochs trained and training core-seconds (``train_seconds`` x ``num_threads``: the
  board runs as lanes of 1 thread, the old board as one process of 2) per (model, source), for
  each protocol given, so ``--protocol standard --protocol standard-v2`` on a results dir holding
  both puts the old protocol's cost beside the new one's.

    python benchmarks/board_audit.py --results-dir results                       # *-v2 protocols
    python benchmarks/board_audit.py --results-dir results --protocol standard --protocol standard-v2
    python benchmarks/board_audit.py --results-dir results --sweep               # + the (lr x epoch) curves
"""

from __future__ import annotations

import argparse
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from shiftbench.registry.selection import LR_EDGES, selection_edges
from shiftbench.results.store import RUNS_DIR, read_history

PLATEAU_MODELS = ("minilm-l6-l2", "minilm-l6-random")
PLATEAU_TOLERANCE = 0.005  # the issue's: the last two epochs differ by less than this
COLUMNS = ["finetune_id", "model", "source", "seed", "protocol", "selected_lr", "selected_epoch", "selection_score"]
COLUMNS += ["train_seconds", "num_threads", "eval_only"]


@dataclass(frozen=True)
class FineTune:
    finetune_id: str
    model: str
    source: str
    seed: int
    protocol: str
    selected_lr: float
    selected_epoch: int
    selection_score: float
    train_seconds: float
    num_threads: int
    history: tuple[dict, ...]  # EpochRecords as dicts, in training order

    @property
    def edges(self):
        return selection_edges(self.history, self.selected_lr, self.selected_epoch)

    @property
    def lrs_trained(self) -> list[float]:
        return list(dict.fromkeys(float(h["learning_rate"]) for h in self.history))  # in search order

    def curve(self, lr: float) -> list[float]:
        """Source-validation selection scores of one learning rate, epoch by epoch."""
        return [_score(h) for h in self.history if math.isclose(float(h["learning_rate"]), lr)]

    @property
    def plateaued(self) -> bool:
        curve = self.curve(self.selected_lr)
        return self.selected_epoch < len(curve) or (len(curve) >= 2 and abs(curve[-1] - curve[-2]) < PLATEAU_TOLERANCE)

    @property
    def core_seconds(self) -> float:
        return self.train_seconds * self.num_threads


def _score(record: dict) -> float:
    scores = record["val_scores"]
    return float(scores.get("macro_f1", next(iter(scores.values()))))


def read_finetunes(results_dir: Path, protocols: list[str] | None) -> list[FineTune]:
    """One FineTune per finetune_id among the run files (trained ones only: eval-only and icl
    rows select nothing)."""
    seen: dict[str, FineTune] = {}
    for path in sorted((results_dir / RUNS_DIR).glob("*.parquet")):
        row = pq.read_table(path, columns=COLUMNS).slice(0, 1).to_pylist()[0]
        keep = protocols is None and row["protocol"].endswith("-v2") or protocols and row["protocol"] in protocols
        if not keep or row["eval_only"] or row["selected_lr"] is None or row["finetune_id"] in seen:
            continue
        seen[row["finetune_id"]] = FineTune(
            finetune_id=row["finetune_id"],
            model=row["model"],
            source=row["source"],
            seed=int(row["seed"]),
            protocol=row["protocol"],
            selected_lr=float(row["selected_lr"]),
            selected_epoch=int(row["selected_epoch"]),
            selection_score=float(row["selection_score"]),
            train_seconds=float(row["train_seconds"]),
            num_threads=int(row["num_threads"] or 1),
            history=tuple(read_history(path)),
        )
    return sorted(seen.values(), key=lambda f: (f.protocol, f.model, f.source, f.seed))


def finetune_table(finetunes: list[FineTune]) -> list[str]:
    lines = [
        "| protocol | model | source | seed | rates trained (in order) | epochs | selected lr | epoch | edge | "
        "source-val | train s | threads |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for f in finetunes:
        edges = f.edges
        edge = ", ".join(
            e for e, on in ((f"lr {edges.lr}", edges.lr in ("low", "high")), ("last epoch", edges.epoch_at_edge)) if on
        )
        lines.append(
            f"| {f.protocol} | {f.model} | {f.source} | {f.seed} | {', '.join(f'{lr:g}' for lr in f.lrs_trained)} | "
            f"{len(f.history)} | {f.selected_lr:g} | {f.selected_epoch} | {edge or '-'} | {f.selection_score:.4f} | "
            f"{f.train_seconds:.0f} | {f.num_threads} |"
        )
    return lines


def sweep_table(finetunes: list[FineTune]) -> list[str]:
    """Every (fine-tune, learning rate) with its source-validation score per epoch; bold: selected."""
    width = max((len(f.curve(lr)) for f in finetunes for lr in f.lrs_trained), default=0)
    lines = [
        "| protocol | model | source | seed | lr | " + " | ".join(f"epoch {e}" for e in range(1, width + 1)) + " |",
        "|---|---|---|---|---|" + "---|" * width,
    ]
    for f in finetunes:
        for lr in sorted(f.lrs_trained):
            cells = [
                f"**{s:.4f}**" if math.isclose(lr, f.selected_lr) and e == f.selected_epoch else f"{s:.4f}"
                for e, s in enumerate(f.curve(lr), start=1)
            ]
            cells += [""] * (width - len(cells))
            lines.append(f"| {f.protocol} | {f.model} | {f.source} | {f.seed} | {lr:g} | " + " | ".join(cells) + " |")
    return lines


def summaries(finetunes: list[FineTune]) -> list[str]:
    out = []
    at_edge = [f for f in finetunes if f.edges.at_edge]
    n_lr = sum(f.edges.lr in LR_EDGES for f in finetunes)
    n_epoch = sum(f.edges.epoch_at_edge is True for f in finetunes)
    share = len(at_edge) / len(finetunes) if finetunes else float("nan")
    out.append(
        f"edges: {len(at_edge)} of {len(finetunes)} fine-tunes ({share:.0%}) selected at an edge "
        f"({n_lr} on a learning-rate edge, {n_epoch} at the last epoch); goal: at most 1 in 5"
    )
    for f in at_edge:
        # An epoch edge on a flat end (last two epochs within PLATEAU_TOLERANCE) is within the noise of a
        # validation split of a few hundred examples: more epochs would not have been expected to help.
        flat = " (flat end: last two epochs within 0.005)" if f.edges.epoch_at_edge and f.plateaued else ""
        out.append(
            f"  at an edge: {f.protocol} {f.model} {f.source} seed {f.seed}: lr {f.selected_lr:g} "
            f"epoch {f.selected_epoch}{flat}"
        )
    for f in (f for f in finetunes if f.model in PLATEAU_MODELS):
        curve = f.curve(f.selected_lr)
        verdict = "plateau" if f.plateaued else "NO plateau"
        out.append(
            f"plateau: {f.protocol} {f.model} {f.source} seed {f.seed}: {verdict} (lr {f.selected_lr:g}: "
            f"{' '.join(f'{s:.3f}' for s in curve)}; selected epoch {f.selected_epoch} of {len(curve)})"
        )
    groups: dict[tuple[str, str, str], list[FineTune]] = defaultdict(list)
    for f in finetunes:
        groups[(f.model, f.source, f.protocol)].append(f)
    out.append("cost (mean per fine-tune; core-s = train seconds x torch threads):")
    for (model, source, protocol), fs in sorted(groups.items()):
        out.append(
            f"  {protocol:<15} {model:<17} {source:<9} n={len(fs)}  epochs {statistics.mean(len(f.history) for f in fs):5.1f}"
            f"  rates {statistics.mean(len(f.lrs_trained) for f in fs):3.1f}"
            f"  train {statistics.mean(f.train_seconds for f in fs):6.0f} s  {statistics.mean(f.core_seconds for f in fs):6.0f} core-s"
        )
    total = sum(f.core_seconds for f in finetunes)
    out.append(f"  total: {total / 3600:.1f} core-hours of training over {len(finetunes)} fine-tunes")
    return out


@dataclass(frozen=True)
class BoardSummary:
    """The standard-v2 board's selection and cost, as the README's Leaderboard section quotes them
    (``sentences``; tests/test_board_audit.py checks they are the committed runs')."""

    n: int  # fine-tunes of the *-v2 protocols
    core_hours: float
    epochs_min: int
    epochs_max: int
    epochs_mean: float
    at_edge: int
    lr_edge: int
    last_epoch: int
    flat_end: int  # of the last-epoch edges, those whose last two epochs are within PLATEAU_TOLERANCE
    plateau: int  # of the PLATEAU_MODELS' fine-tunes (distill-v2's student included)
    plateau_of: int
    core_hours_mean: float
    standard_core_hours_mean: float  # the `standard` fine-tunes of the same models, for comparison

    def sentences(self) -> tuple[str, ...]:
        return (
            f"Its {self.n} fine-tunes trained for {self.core_hours:.1f} core-hours"
            f" ({self.epochs_min}–{self.epochs_max} epochs each",
            f"On this board {self.at_edge} of its {self.n} fine-tunes selected at an edge of the grid (the goal was"
            f" at most 1 in 5): {self.lr_edge} on a learning-rate edge and {self.last_epoch} at the last epoch,"
            f" {self.flat_end} of these on a flat end (the last two epochs within {PLATEAU_TOLERANCE}, where more"
            " epochs would not be expected to help).",
            f"in {self.plateau} of their {self.plateau_of} fine-tunes (`distill-v2`'s included)",
            f"A `standard-v2` fine-tune trained {self.epochs_mean:.1f} epochs on average against `standard`'s 9,"
            f" and {self.core_hours_mean:.2f} core-hours (train seconds × torch threads) against"
            f" {self.standard_core_hours_mean:.2f} for a `standard` one",
        )


def board_summary(results_dir: Path) -> BoardSummary:
    v2 = read_finetunes(results_dir, None)
    models = {f.model for f in v2}
    standard = [f for f in read_finetunes(results_dir, ["standard"]) if f.model in models]
    epochs = [len(f.history) for f in v2]
    small = [f for f in v2 if f.model in PLATEAU_MODELS]
    last = [f for f in v2 if f.edges.epoch_at_edge is True]
    return BoardSummary(
        n=len(v2),
        core_hours=sum(f.core_seconds for f in v2) / 3600,
        epochs_min=min(epochs),
        epochs_max=max(epochs),
        epochs_mean=statistics.mean(epochs),
        at_edge=sum(f.edges.at_edge for f in v2),
        lr_edge=sum(f.edges.lr in LR_EDGES for f in v2),
        last_epoch=len(last),
        flat_end=sum(f.plateaued for f in last),
        plateau=sum(f.plateaued for f in small),
        plateau_of=len(small),
        core_hours_mean=statistics.mean(f.core_seconds for f in v2) / 3600,
        standard_core_hours_mean=statistics.mean(f.core_seconds for f in standard) / 3600,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results-dir", type=Path, default=Path("results"))
    parser.add_argument("--protocol", action="append", help="repeatable (default: every *-v2 protocol)")
    parser.add_argument("--sweep", action="store_true", help="also print every (lr x epoch) source-validation curve")
    args = parser.parse_args()
    finetunes = read_finetunes(args.results_dir, args.protocol)
    print("\n".join(finetune_table(finetunes)))
    if args.sweep:
        print()
        print("\n".join(sweep_table(finetunes)))
    print()
    print("\n".join(summaries(finetunes)))


if __name__ == "__main__":
    main()
