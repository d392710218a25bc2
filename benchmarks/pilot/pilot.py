"""Pilot sweep for ``standard-v2`` (issue #16): learning rate x epoch -> source-validation score.

``python benchmarks/pilot/pilot.py run [--epochs 6]`` trains the queue for that schedule length
    (or ``--item``s), one (model, source, lr) at a time, with ``python -m shiftbench run`` (so a
    killed sweep resumes where it stopped: finished fine-tunes are skipped, a killed one resumes
    from its last epoch checkpoint).
``python benchmarks/pilot/pilot.py table`` prints (and writes ``--out``) the per-epoch
    source-validation macro-F1 and train loss of everything finished.
``python benchmarks/pilot/pilot.py simulate --epochs 6 --grid ... --patience 2 --grid-patience 1``
    what a protocol with that grid and early stopping would train and select, from those runs.

Only the source-validation history (run file metadata ``shiftbench.history``) is read: the target
scores the runner also records are never read here, so they cannot steer the grid.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BASE = HERE / "pilot.yaml"
SCRATCH = Path(os.environ.get("SHIFTBENCH_PILOT_DIR", "/work/scratch/pilot"))
PAIRS = {"fpb": "fpb_to_tfns", "sst2": "sst2_to_tweeteval"}  # one pair per source: the fine-tune is what counts
# 2-layer and random-init models: 1e-4, standard's largest, was their selection: 1e-4..1e-3.
# 4 and 6 layers: standard's optimum lay in 5e-5..1e-4: 3e-5..3e-4. lora: 1e-3, its largest, won
# every time: 3e-3 and 1e-2 (1e-3 itself last).
# (model, source, lr, remedy), most under-trained (and cheapest) first: the question is
# whether they plateau. Within a model the larger rates come first: standard's 1e-4 already
# showed them under-trained, so the open question is where the score turns down.
QUEUE = [
    *[("minilm-l6-l2", "fpb", lr, "none") for lr in ("1e-4", "3e-4", "1e-3")],
    *[("minilm-l6-random", "fpb", lr, "none") for lr in ("1e-3", "3e-4", "1e-4")],
    *[("minilm-l6-l2", "sst2", lr, "none") for lr in ("1e-3", "3e-4", "1e-4")],
    *[("minilm-l6-random", "sst2", lr, "none") for lr in ("1e-3", "3e-4", "1e-4")],
    *[("minilm-l6-l4", "fpb", lr, "none") for lr in ("3e-4", "1e-4", "3e-5")],
    *[("minilm-l6", "fpb", lr, "none") for lr in ("3e-4", "1e-4", "3e-5")],
    *[("minilm-l6", "fpb", lr, "lora") for lr in ("3e-3", "1e-2")],
    *[("minilm-l6-l4", "sst2", lr, "none") for lr in ("3e-4", "1e-4", "3e-5")],
    *[("minilm-l6", "sst2", lr, "none") for lr in ("3e-4", "1e-4", "3e-5")],
    # the outer brackets, if time allows
    ("minilm-l6", "fpb", "1e-3", "lora"),
    *[(m, s, "3e-5", "none") for s in PAIRS for m in ("minilm-l6-l2", "minilm-l6-random")],
    *[(m, s, "1e-3", "none") for s in PAIRS for m in ("minilm-l6-l4", "minilm-l6")],
]
# 6 epochs (standard-v2's proposal), patience 2: what the proposal still needs, in this order.
# FPB first: minilm-l6's bracket, then whether 1e-5 beats 3e-5 for 4 and 6 layers (the 4-layer
# model's best at 6 epochs was 3e-5, the grid's lowest), then the small models' remaining rates.
QUEUE_6 = [
    *[("minilm-l6", "fpb", lr, "none") for lr in ("3e-5", "1e-4", "3e-4")],
    ("minilm-l6-l4", "fpb", "1e-5", "none"),
    ("minilm-l6", "fpb", "1e-5", "none"),
    *[("minilm-l6-random", "fpb", lr, "none") for lr in ("3e-4", "1e-4", "3e-5")],
    *[("minilm-l6-l2", "fpb", lr, "none") for lr in ("3e-4", "1e-4", "3e-5", "1e-3")],
    *[(m, "sst2", lr, "none") for m in ("minilm-l6-l2", "minilm-l6-random") for lr in ("3e-5", "1e-4", "3e-4", "1e-3")],
    *[(m, "sst2", lr, "none") for m in ("minilm-l6-l4", "minilm-l6") for lr in ("1e-5", "3e-5", "1e-4", "3e-4")],
    *[("minilm-l6", "fpb", lr, "lora") for lr in ("1e-3", "3e-3", "1e-2")],
]
QUEUES = {4: QUEUE, 6: QUEUE_6}


def protocol_file(lr: str, remedy: str, scratch: Path, epochs: int = 4, patience: int = 2) -> Path:
    """``pilot[-lora][-e<epochs>]-lr<lr>-es[<patience>].yaml`` in the scratch dir: pilot.yaml (with the
    remedy's fields from its built-in protocol, and ``epochs`` when not 4), a one-element grid and
    early stopping: the epochs after the stop are never used by a protocol that stops this way, so
    they are not trained. ``-es`` runs used patience 1; standard-v2 uses 2 (``-es2``). A run with
    less patience, or none (the first runs, ``pilot[-lora]-lr<lr>``), computed a prefix of a run
    with more, and ``simulate`` counts it only where it reaches as far as the simulated protocol."""
    name = "pilot" if remedy == "none" else f"pilot-{remedy}"
    name += "" if epochs == 4 else f"-e{epochs}"
    path = scratch / "protocols" / f"{name}-lr{lr}-es{'' if patience == 1 else patience}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = "" if remedy == "none" else _remedy_fields(remedy)
    fields += "" if epochs == 4 else f"epochs: {epochs}\n"
    path.write_text(f"base: {BASE}\n{fields}learning_rates: [{float(lr)!r}]\npatience: {patience}\n")
    return path


_NAME = re.compile(r"^pilot(?:-(?P<remedy>[a-z]+))?(?:-e(?P<epochs>\d+))?-lr")


def _remedy_fields(remedy: str) -> str:
    """The remedy's own fields as its built-in protocol sets them, as YAML lines."""
    import json

    from shiftbench.registry.protocol import REMEDY_FIELDS, load_protocol

    p = load_protocol(remedy)
    return "".join(f"{k}: {json.dumps(getattr(p, k))}\n" for k in ("remedy", *REMEDY_FIELDS[remedy]))


def _children_cpu() -> float:
    """CPU seconds (user + system) of the finished child processes: the sweep's compute."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cmd_run(args: argparse.Namespace) -> int:
    scratch = Path(args.scratch)
    queue = (
        [tuple(item.split(":")) + (("none",) if item.count(":") == 2 else ()) for item in args.item]
        if args.item
        else QUEUES[args.epochs]
    )
    todo = [q for q in queue if args.model is None or q[0] in args.model]
    for pid in args.after or ():  # a sweep process still finishing an item: let it, then skip that item
        while Path(f"/proc/{pid}").exists():
            time.sleep(10)
    for i, (model, source, lr, remedy) in enumerate(todo, 1):
        mine = [
            r["val_macro_f1"]
            for r in sweep_rows(scratch / "results")
            if (r["model"], r["remedy"], r["epochs"], r["source"], r["lr"])
            == (model, remedy, args.epochs, source, float(lr))
        ]
        if mine and (len(mine) == args.epochs or _since_best(mine) >= args.patience):
            continue  # a finished run reaches as far as this patience would
        cmd = [
            sys.executable,
            "-m",
            "shiftbench",
            "run",
            "--pair",
            PAIRS[source],
            "--model",
            model,
            "--protocol",
            str(protocol_file(lr, remedy, scratch, args.epochs, args.patience)),
            "--seeds",
            str(args.seed),
            "--results-dir",
            str(scratch / "results"),
            "--cache-dir",
            str(scratch / "cache"),
        ]
        print(f"[{time.strftime('%H:%M:%S')}] {i}/{len(todo)} {model} {source} lr {lr} remedy {remedy}", flush=True)
        t0, cpu0 = time.perf_counter(), _children_cpu()
        # stdout (the plan and the closing ID/OOD table) is dropped: target scores are not to be
        # looked at while choosing the grid. stderr keeps the per-epoch source-validation lines.
        rc = subprocess.call(cmd, stdout=subprocess.DEVNULL)
        print(
            f"[{time.strftime('%H:%M:%S')}] {model} {source} lr {lr} remedy {remedy}: exit {rc}, "
            f"{time.perf_counter() - t0:.0f} s wall, {_children_cpu() - cpu0:.0f} CPU-s",
            flush=True,
        )
        if rc != 0:
            return rc
        # Fine-tuned weights are not needed again (the history is in the run file): keep the disk small.
        subprocess.call(
            [
                sys.executable,
                "-m",
                "shiftbench",
                "cache",
                "prune",
                "--kind",
                "finetunes",
                "--cache-dir",
                str(scratch / "cache"),
            ]
        )
    return 0


def sweep_rows(results_dir: Path) -> list[dict]:
    """One row per (model, remedy, schedule length, source, seed, lr, epoch) of the finished pilot
    fine-tunes (source validation only). Runs of one rate that differ only in their patience
    computed prefixes of one curve: the longest is kept."""
    import pyarrow.parquet as pq

    from shiftbench.results.store import RUNS_DIR, read_history

    runs: dict[tuple, list[dict]] = {}
    for path in sorted((results_dir / RUNS_DIR).glob("*.parquet")):
        meta = (
            pq.read_table(path, columns=["finetune_id", "model", "source", "seed", "protocol"])
            .slice(0, 1)
            .to_pylist()[0]
        )
        name = _NAME.match(meta["protocol"])
        remedy, epochs = (name["remedy"] or "none", int(name["epochs"] or 4)) if name else ("?", 0)
        history = read_history(path)
        lr = history[0]["learning_rate"] if history else None
        key = (meta["model"], remedy, epochs, meta["source"], meta["seed"], lr)
        rows = [
            {
                "model": meta["model"],
                "remedy": remedy,
                "epochs": epochs,
                "source": meta["source"],
                "seed": meta["seed"],
                "lr": h["learning_rate"],
                "epoch": h["epoch"],
                "val_macro_f1": h["val_scores"]["macro_f1"],
                "train_loss": h["train_loss"],
                "seconds": h["seconds"],
            }
            for h in history
        ]
        if len(rows) > len(runs.get(key, [])):
            runs[key] = rows
    order = {"minilm-l6-l2": 0, "minilm-l6-random": 1, "minilm-l6-l4": 2, "minilm-l6": 3}
    rows = [r for rs in runs.values() for r in rs]
    return sorted(
        rows,
        key=lambda r: (
            r["remedy"],
            r["epochs"],
            order.get(r["model"], 9),
            r["model"],
            r["source"],
            r["seed"],
            r["lr"],
            r["epoch"],
        ),
    )


def markdown(rows: list[dict]) -> str:
    """Rows: (model, source, lr); columns: val macro-F1 per epoch (train loss); best of each (model, source) in bold."""
    by_run: dict[tuple, list[dict]] = {}
    for r in rows:
        by_run.setdefault((r["model"], r["remedy"], r["epochs"], r["source"], r["seed"], r["lr"]), []).append(r)
    best: dict[tuple, float] = {}
    for (m, remedy, n, s, seed, _), rs in by_run.items():
        key = (m, remedy, n, s, seed)
        best[key] = max(best.get(key, -1.0), max(r["val_macro_f1"] for r in rs))
    n_epochs = max((r["epoch"] for r in rows), default=0)
    head = (
        "| model | remedy | epochs | source | seed | lr | "
        + " | ".join(f"epoch {e}" for e in range(1, n_epochs + 1))
        + " | s/epoch |"
    )
    lines = [head, "|" + "---|" * (7 + n_epochs)]
    for (m, remedy, n, s, seed, lr), rs in by_run.items():
        cells = []
        for e in range(1, n_epochs + 1):
            r = next((r for r in rs if r["epoch"] == e), None)
            if r is None:
                cells.append("")
                continue
            f1 = f"{r['val_macro_f1']:.4f}"
            f1 = f"**{f1}**" if r["val_macro_f1"] == best[(m, remedy, n, s, seed)] else f1
            cells.append(f"{f1} ({r['train_loss']:.3f})")
        sec = sum(r["seconds"] for r in rs) / len(rs)
        lines.append(f"| {m} | {remedy} | {n} | {s} | {seed} | {lr:g} | " + " | ".join(cells) + f" | {sec:.0f} |")
    return "\n".join(lines) + "\n"


def simulate(
    rows: list[dict], grid: tuple[float, ...], patience: int | None, grid_patience: int | None, epochs: int = 4
) -> list[dict]:
    """What a protocol with the pilot's recipe and epochs, this ascending ``grid`` and this early
    stopping would have trained and selected, per (model, remedy, source, seed), from the sweep's
    scores (exact: each lr of a grid trains independently, and stopping only truncates). A row
    whose grid reaches a learning rate the sweep has not run says so in ``missing``."""
    from shiftbench.registry.selection import selection_edges

    rows = [r for r in rows if r["epochs"] == epochs]  # the sweep's runs with this schedule length
    runs: dict[tuple, dict[float, list[dict]]] = {}
    for r in rows:
        runs.setdefault((r["model"], r["remedy"], r["source"], r["seed"]), {}).setdefault(r["lr"], []).append(r)
    n_epochs = epochs
    out = []
    for key, by_lr in runs.items():
        trained: list[dict] = []
        missing = None
        for lr in grid:
            epochs = sorted(by_lr.get(lr, []), key=lambda r: r["epoch"])
            if not epochs:
                missing = lr
                break
            mine: list[float] = []
            for r in epochs:
                if patience is not None and mine and _since_best(mine) >= patience:
                    break
                mine.append(r["val_macro_f1"])
                trained.append(r)
            stopped = patience is not None and _since_best(mine) >= patience
            if len(mine) < n_epochs and not stopped:  # a sweep run that stopped earlier than this protocol would
                missing = lr
                break
            bests = [
                max(t["val_macro_f1"] for t in trained if t["lr"] == x) for x in dict.fromkeys(t["lr"] for t in trained)
            ]
            if grid_patience is not None and _since_best(bests) >= grid_patience:
                break
        best = max(trained, key=lambda r: (r["val_macro_f1"], -trained.index(r))) if trained else None
        history = [{"learning_rate": t["lr"], "epoch": t["epoch"]} for t in trained]
        edges = selection_edges(history, best["lr"], best["epoch"]) if best and missing is None else None
        out.append(
            {
                "model": key[0],
                "remedy": key[1],
                "source": key[2],
                "seed": key[3],
                "missing": missing,
                "epochs_trained": len(trained),
                "minutes": sum(t["seconds"] for t in trained) / 60,
                "lr": best["lr"] if best else None,
                "epoch": best["epoch"] if best else None,
                "val_macro_f1": best["val_macro_f1"] if best else None,
                "lr_edge": edges.lr if edges else None,
                "epoch_at_edge": edges.epoch_at_edge if edges else None,
            }
        )
    return out


def _since_best(scores: list[float]) -> int:
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))  # the first best, as selection keeps
    return len(scores) - 1 - best


def cmd_simulate(args: argparse.Namespace) -> int:
    grid = tuple(sorted(float(x) for x in args.grid.split(",")))
    sims = simulate(sweep_rows(Path(args.scratch) / "results"), grid, args.patience, args.grid_patience, args.epochs)
    print(
        f"grid {', '.join(f'{x:g}' for x in grid)}; {args.epochs} epochs; patience {args.patience}; grid_patience {args.grid_patience}"
    )
    print(
        "| model | remedy | source | epochs trained | train minutes (pilot) | selected lr | epoch | val macro-F1 | lr edge | last epoch |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in sims:
        if r["missing"] is not None:
            print(
                f"| {r['model']} | {r['remedy']} | {r['source']} | needs lr {r['missing']:g} (not swept, or not its epochs) |  |  |  |  |  |  |"
            )
            continue
        print(
            f"| {r['model']} | {r['remedy']} | {r['source']} | {r['epochs_trained']} | {r['minutes']:.1f} | {r['lr']:g} | "
            f"{r['epoch']} | {r['val_macro_f1']:.4f} | {r['lr_edge']} | {r['epoch_at_edge']} |"
        )
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    text = markdown(sweep_rows(Path(args.scratch) / "results"))
    print(text, end="")
    if args.out:
        from shiftbench.core.atomic import write_text_atomic

        write_text_atomic(Path(args.out), text)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scratch", default=str(SCRATCH), help="results/, cache/ and protocols/ of the sweep")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train the queue (resumable)")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--model", action="append", help="only this model (repeatable)")
    run.add_argument("--after", type=int, action="append", help="first wait for this process to exit (repeatable)")
    run.add_argument("--epochs", type=int, default=4, help="schedule length (pilot.yaml: 4)")
    run.add_argument("--patience", type=int, default=2, help="early stopping patience (standard-v2: 2)")
    run.add_argument(
        "--item", action="append", help="MODEL:SOURCE:LR[:REMEDY] instead of the built-in queue (repeatable)"
    )
    table = sub.add_parser("table", help="lr x epoch -> source-validation macro-F1 (train loss)")
    table.add_argument("--out", help="also write the Markdown table here")
    sim = sub.add_parser("simulate", help="what a candidate grid with early stopping would train and select")
    sim.add_argument("--grid", required=True, help="comma-separated learning rates, e.g. 3e-5,1e-4,3e-4,1e-3")
    sim.add_argument("--patience", type=int, default=None)
    sim.add_argument("--grid-patience", type=int, default=None)
    sim.add_argument("--epochs", type=int, default=4, help="the schedule length of the sweep runs to use")
    args = parser.parse_args(argv)
    return {"run": cmd_run, "table": cmd_table, "simulate": cmd_simulate}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
