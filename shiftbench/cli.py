"""Command line: ``python -m shiftbench {run,list,card,leaderboard}``.

Every user error is one line on stderr and exit status 2; nothing is printed as a traceback.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from shiftbench.core.errors import EXIT_USAGE, ShiftbenchError
from shiftbench.execution.settings import RunRequest, add_run_arguments

MAX_N_BOOT = 100_000


def _check_n_boot(n_boot: int, low: int) -> None:
    """Every --n-boot is bounded: memory grows with it (10^9 resamples asked for 268 GiB)."""
    if not low <= n_boot <= MAX_N_BOOT:
        raise ShiftbenchError(f"--n-boot: use between {low} and {MAX_N_BOOT} resamples, got {n_boot}")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line instead of usage + message
        raise ShiftbenchError(f"{self.prog}: {message}")


def _common(p: argparse.ArgumentParser) -> None:
    add_run_arguments(p, ("registries", "data_dir"))  # --registry, --data-dir as `run` has them


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="shiftbench", description="Domain-shift benchmark harness for NLP.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="fine-tune on sources, score ID and OOD, record the gap")
    add_run_arguments(run)  # every run option, declared once in execution/settings.py

    lst = sub.add_parser("list", help="datasets, pairs, suites, models and protocols")
    _common(lst)

    card = sub.add_parser("card", help="(re)generate the data cards")
    card.add_argument("--out", default="data_cards", help="directory for the Markdown cards")
    card.add_argument("--check", action="store_true", help="exit 1 if any card on disk is stale")
    _common(card)

    cmp_ = sub.add_parser("compare", help="is checkpoint B really better than A out of domain? (paired tests)")
    cmp_.add_argument("a", help="baseline: MODEL or MODEL@PROTOCOL (a bare MODEL: the protocol `run` uses by default)")
    cmp_.add_argument("b", help="candidate: MODEL or MODEL@PROTOCOL")
    cmp_.add_argument(
        "--pair", action="append", default=[], help="only this pair (repeatable; default: every shared pair)"
    )
    cmp_.add_argument(
        "--metric",
        default=None,
        help="any metric of the task (default: the headline, macro_f1 text / entity_micro_f1 NER)",
    )
    cmp_.add_argument("--results-dir", default="results")
    cmp_.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples")
    cmp_.add_argument(
        "--fail-on-regression",
        action="store_true",
        help="exit 1 if B is worse OOD anywhere (one-sided, Holm-adjusted over every pair/target tested)",
    )
    cmp_.add_argument(
        "--margin",
        type=float,
        default=None,
        help="with --fail-on-regression: fail only where B is worse by more than this (in (0, 1))",
    )
    cmp_.add_argument(
        "--effect",
        type=float,
        default=None,
        help="also print the seeds per side needed to detect this OOD difference (> 0)",
    )

    rep = sub.add_parser("report", help="one self-contained HTML report (+ PNG plots) of a results dir")
    rep.add_argument("--results-dir", default="results")
    rep.add_argument("--out", help="HTML file (default: <results-dir>/report.html)")
    rep.add_argument("--cards-dir", default="data_cards", help="data cards to summarise per pair")
    rep.add_argument(
        "--metric", default=None, help="default: each task's headline (macro_f1 text, entity_micro_f1 NER)"
    )

    nightly = sub.add_parser("nightly", help="nightly suite -> leaderboard -> report -> what moved")
    nightly.add_argument("--results-dir", default="results")
    add_run_arguments(nightly, ("cache_dir", "workers"))
    nightly.add_argument("--no-report", action="store_true", help="skip the HTML report")
    _common(nightly)

    cache = sub.add_parser("cache", help="show or trim the caches (fine-tuned weights, checkpoints, tokens)")
    cache.add_argument("action", choices=["info", "prune"])
    add_run_arguments(cache, ("cache_dir",))
    cache.add_argument(
        "--kind",
        action="append",
        choices=["finetunes", "checkpoints", "tokens"],
        help="prune only this kind (repeatable; default: all)",
    )
    cache.add_argument("--older-than", type=float, default=0.0, metavar="DAYS", help="prune entries unused this long")

    board = sub.add_parser("leaderboard", help="aggregate run files over seeds")
    board.add_argument("--results-dir", default="results")
    board.add_argument("--format", choices=["parquet", "csv", "markdown"], default="parquet")
    board.add_argument(
        "--out", help="output file (default: <results-dir>/leaderboard.parquet, or stdout for csv/markdown)"
    )
    board.add_argument("--metric", default=None, help="only this metric (csv/markdown)")
    board.add_argument(
        "--estimators",
        action="store_true",
        help="the label-free estimators' errors on OOD accuracy instead (markdown on stdout; Parquet to "
        "<results-dir>/estimator_leaderboard.parquet or --out, per-run rows to <results-dir>/estimates.parquet)",
    )
    board.add_argument(
        "--n-boot", type=int, default=200, help="--estimators: bootstrap replicates per estimate (default 200)"
    )

    shift = sub.add_parser(
        "shift", help="how far each target is from its source: vocabulary, label priors, MMD, proxy A-distance"
    )
    shift.add_argument(
        "--pair",
        action="append",
        default=[],
        help="pair name (repeatable; default: every pair with one label per example, not NER, with data)",
    )
    shift.add_argument("--results-dir", default="results", help="the cache lives under <results-dir>/shift/")
    shift.add_argument(
        "--sample", type=int, default=None, help="texts per side for MMD and PAD (default 1000; fixed seed)"
    )
    shift.add_argument("--seed", type=int, default=0, help="subsample, permutation and CV-fold seed")
    shift.add_argument("--format", choices=["text", "markdown"], default="text")
    _common(shift)
    return parser


def _cmd_run(args: argparse.Namespace) -> int:
    from shiftbench.analysis.leaderboard import summary_table
    from shiftbench.api import plan_request, run_plan
    from shiftbench.results.store import edge_warnings

    plan = plan_request(RunRequest.from_cli(args))
    print(plan.describe(), flush=True)
    if args.dry_run:
        return 0
    summary = run_plan(plan)
    for path, why in summary.skipped_files:
        print(f"warning: skipped {path}: {why}", file=sys.stderr)
    board = summary.leaderboard
    mine = board[board["pair"].isin(summary.plan.settings.pairs)] if board is not None else board
    print(f"{len(summary.new_results)} new run(s) written to {summary.plan.settings.results_dir}")
    print(summary_table(mine))
    for line in _estimate_lines(summary, args.registries):
        print(line)
    for warning in edge_warnings(summary.new_results):  # one line per fine-tune selected at a grid edge
        print(warning, file=sys.stderr)
    return 0


def _estimate_lines(summary, registries: Sequence[str] = ()) -> list[str]:
    """The final table's label-free part: per new run, the estimated OOD accuracy and macro-F1
    with their intervals and the verdict (beside the true score where the target is labelled);
    per unlabelled target, its estimated label priors and how far it is from the source."""
    results = [r for r in summary.new_results if r.estimate is not None]
    if not results:
        return []
    held = ", ".join(sorted({r.estimate.held_out_split for r in results}))
    lines = ["", f"label-free OOD estimates (no target label read; held-out split {held}; 95 % bootstrap intervals)"]
    for r in results:
        lines.append(f"{r.model} {r.pair} {r.target} seed {r.seed}:")
        for row in r.estimate.rows:
            true = r.ood_scores.get(row.metric)
            truth = f"  (true {true:.4f})" if true is not None else "  (target unlabelled)"
            verdict = "trusted" if row.trusted else "FLAGGED: " + "; ".join(row.reasons)
            lines.append(
                f"  estimated OOD {row.metric:<8} {row.value:.4f} [{row.low:.4f}, {row.high:.4f}] ({row.method}){truth}  {verdict}"
            )
        if not r.labelled:
            src = ", ".join(f"{n} {p:.2f}" for n, p in zip(r.label_space, r.estimate.source_priors))
            tgt = ", ".join(f"{n} {p:.2f}" for n, p in zip(r.label_space, r.estimate.target_priors))
            lines.append(
                f"  label priors: held-out {src}; target estimated (BBSE) {tgt}; "
                f"shift {r.estimate.evidence.prior_shift_tv:.3f} (total variation)"
            )
    lines += _shift_lines(summary, {(r.pair, r.target) for r in results if not r.labelled}, registries)
    return lines


def _shift_lines(summary, unlabelled: set[tuple[str, str]], registries: Sequence[str] = ()) -> list[str]:
    """Shift measures of each unlabelled target of the run (cached under <results-dir>/shift/).
    MMD and PAD need the sentence encoder; without it the vocabulary measures are printed alone."""
    from shiftbench.execution import shift
    from shiftbench.registry.catalog import load_catalog

    catalog = load_catalog(registries)  # the encoder alias may come from a user registry
    lines, seen = [], set()
    for job in summary.plan.jobs:
        for t in job.targets:
            key = (t.pair.name, t.target.spec.name)
            if key not in unlabelled or key in seen or "train" not in job.source.splits:
                continue
            seen.add(key)
            head = f"shift {key[0]} -> {key[1]}:"
            try:
                m = shift.measure_domains(
                    key[0], job.source, t.target, summary.plan.settings.results_dir, catalog=catalog
                ).measures
            except ShiftbenchError as exc:  # no encoder (e.g. minilm-l6 not installed): vocabulary only
                v = shift.vocabulary(job.source.role("train").plain_texts(), t.target.role("test").plain_texts())
                lines.append(
                    f"{head} vocab Jaccard {v.jaccard:.3f}, target OOV tokens {v.target_oov_rate:.3f}; "
                    f"MMD/PAD skipped: encoder {shift.DEFAULT_ENCODER} unavailable ({str(exc)[:120]})"
                )
                continue
            lines.append(
                f"{head} vocab Jaccard {m.vocab_jaccard:.3f}, target OOV tokens {m.target_oov_rate:.3f}, "
                f"MMD2 {m.mmd2:.4f} (p {m.mmd2_p_value:.3f}; source halves {m.mmd2_baseline:.4f}), "
                f"PAD {m.pad:.3f} (source halves {m.pad_baseline:.3f}) on {m.sample_size} texts per side"
            )
    return lines


def _cmd_list(args: argparse.Namespace) -> int:
    from shiftbench.registry.catalog import load_catalog
    from shiftbench.registry.protocol import builtin_protocols, load_protocol
    from shiftbench.reporting.cards import metric_summaries

    c = load_catalog(args.registries)
    print("datasets:")
    for name, d in c.datasets.items():
        print(f"  {name:<28} {d.task:<20} {d.hub_id} [{d.config}]  domain: {d.domain}  license: {d.license}")
    print("pairs:")
    for name, p in c.pairs.items():
        print(f"  {name:<28} {p.task:<20} {p.source} -> {', '.join(p.targets)}")
    print("suites:")
    for name, s in c.suites.items():
        print(f"  {name:<28} {', '.join(s.pairs)}")
    print("models:")
    for name, m in c.models.items():
        print(f"  {name:<28} {m.description}")
    print("protocols:")
    for name in builtin_protocols():
        p = load_protocol(name)
        print(f"  {name:<28} {p.hash}  {p.description}")
    print("metrics (definitions: data_cards/metrics/):")
    for m in metric_summaries():
        note = f"  headline of {', '.join(m.headline_of)}" if m.headline_of else ""
        print(f"  {m.name:<28} {m.better:<7} {', '.join(m.kinds)}{note}")
    return 0


def _cmd_card(args: argparse.Namespace) -> int:
    from shiftbench.reporting.cards import write_cards

    stale = write_cards(Path(args.out), registries=args.registries, data_dir=args.data_dir, check=args.check)
    if args.check and stale:
        print("stale data cards: " + ", ".join(str(p) for p in stale), file=sys.stderr)
        return 1
    return 0


def _cmd_leaderboard(args: argparse.Namespace) -> int:
    import contextlib

    from shiftbench.analysis.leaderboard import (
        LEADERBOARD_FILE,
        build_leaderboard,
        rebuild_leaderboard,
        to_markdown,
        write_leaderboard,
    )
    from shiftbench.core.errors import did_you_mean
    from shiftbench.core.guards import check_output_dir, check_output_file, preview
    from shiftbench.core.locks import claim

    results_dir = Path(args.results_dir)
    if not results_dir.is_dir():
        raise ShiftbenchError(f"--results-dir {results_dir} is not a directory")
    if args.estimators:
        return _estimator_board(args, results_dir)
    default_out = results_dir / LEADERBOARD_FILE
    out = Path(args.out) if args.out else default_out if args.format == "parquet" else None
    if out is not None:
        check_output_dir(results_dir, "--results-dir")
        check_output_file(out, results_dir, "--out")  # never over an immutable run or predictions file
    # The results dir's own board is rebuilt under the lock `run` takes for it, so a slow
    # `leaderboard` cannot write a board older than the one a run has just written.
    own_board = args.format == "parquet" and out.resolve() == default_out.resolve()
    if own_board and args.metric is None:
        board, skipped = rebuild_leaderboard(results_dir)
    else:
        with claim(results_dir, "leaderboard") if own_board else contextlib.nullcontext():
            board, skipped = build_leaderboard(results_dir)
            if args.metric is not None:
                present = sorted(set(board["metric"]))
                if args.metric not in present:  # checked before anything is written
                    raise ShiftbenchError(
                        f"--metric {preview(args.metric)}: no results for this metric in {results_dir}{did_you_mean(args.metric, present)}"
                    )
                board = board[board["metric"] == args.metric]
            if args.format == "parquet":
                write_leaderboard(board, out)
    for path, why in skipped:
        print(f"warning: skipped {path}: {why}", file=sys.stderr)
    if args.format == "parquet":
        print(f"{len(board)} leaderboard rows written to {out}")
        return 0
    text = board.to_csv(index=False) if args.format == "csv" else to_markdown(board)
    if out is not None:
        from shiftbench.core.atomic import write_text_atomic

        write_text_atomic(out, text)
    else:
        sys.stdout.write(text)
    return 0


def _estimator_board(args: argparse.Namespace, results_dir: Path) -> int:
    from shiftbench.analysis.estimator_board import (
        ESTIMATES_FILE,
        ESTIMATOR_BOARD_FILE,
        estimate_board,
        summarise,
        to_markdown,
        write_table,
    )

    if args.format == "csv" or args.metric not in (None, "accuracy"):
        raise ShiftbenchError("--estimators: prints markdown and writes Parquet, for the accuracy metric only")
    _check_n_boot(args.n_boot, 0)  # 0: point estimates without intervals
    per_run, skipped = estimate_board(results_dir, n_boot=args.n_boot)
    for path, why in skipped:
        print(f"warning: skipped {path}: {why}", file=sys.stderr)
    if per_run.empty:
        raise ShiftbenchError(
            f"--estimators: no labelled runs with one label per example (not NER) with predictions under {results_dir}"
        )
    summary = summarise(per_run)
    out = Path(args.out) if args.out else results_dir / ESTIMATOR_BOARD_FILE
    held = ", ".join(
        sorted(set(per_run["held_out_split"]))
    )  # id_test for the committed runs, source_validation for new ones
    write_table(summary, out, held)
    write_table(per_run, results_dir / ESTIMATES_FILE, held)
    sys.stdout.write(to_markdown(summary, held))
    print(f"\n{len(summary)} rows written to {out}; per-run estimates in {results_dir / ESTIMATES_FILE}")
    return 0


def _cmd_shift(args: argparse.Namespace) -> int:
    from shiftbench.execution.shift import SAMPLE_SIZE, measure_pairs, to_markdown, to_text

    sample = SAMPLE_SIZE if args.sample is None else args.sample
    if sample < 4:
        raise ShiftbenchError(f"--sample: at least 4 texts per side, got {sample}")
    if args.seed < 0:
        raise ShiftbenchError(f"--seed: must be >= 0, got {args.seed}")
    rows, unavailable = measure_pairs(
        args.pair, args.registries, args.data_dir, args.results_dir, sample_size=sample, seed=args.seed
    )
    for why in unavailable:
        print(f"warning: skipped {why}", file=sys.stderr)
    if not rows:
        raise ShiftbenchError("shift: no pair has its data present (give --data-dir or $SHIFTBENCH_DATA_DIR)")
    print(to_text(rows) if args.format == "text" else to_markdown(rows).rstrip("\n"))
    print(
        f"(MMD and PAD on {sample} sampled texts per side, seed {args.seed}; cached under {Path(args.results_dir) / 'shift'})"
    )
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from shiftbench.analysis.compare import compare

    _check_n_boot(args.n_boot, 100)
    if args.margin is not None and not 0 < args.margin < 1:
        raise ShiftbenchError(f"--margin: must lie in (0, 1), got {args.margin}")
    if args.effect is not None and not args.effect > 0:
        raise ShiftbenchError(f"--effect: must be > 0, got {args.effect}")
    result = compare(
        Path(args.results_dir),
        args.a,
        args.b,
        pairs=args.pair or None,
        metric=args.metric,
        n_boot=args.n_boot,
        margin=args.margin or 0.0,
        effect=args.effect,
    )
    for path, why in result.skipped_files:
        print(f"warning: skipped {path}: {why}", file=sys.stderr)
    print(result.to_text())
    if args.fail_on_regression and result.regressions:
        where = ", ".join(f"{p}/{t}" for p, t in result.regressions)
        by = f" by more than {args.margin:g}" if args.margin else ""
        print(
            f"regression: {args.b} is significantly worse than {args.a} out of domain{by} on {where} (Holm-adjusted)",
            file=sys.stderr,
        )
        return 1
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from shiftbench.core.guards import check_output_dir, check_output_file
    from shiftbench.reporting.report import write_report

    check_output_dir(Path(args.results_dir), "--results-dir")
    if args.out:
        check_output_file(Path(args.out), Path(args.results_dir), "--out")  # never over an immutable run file
    out = write_report(
        Path(args.results_dir),
        out=Path(args.out) if args.out else None,
        cards_dir=Path(args.cards_dir),
        metric=args.metric,
    )
    print(f"report written to {out} (plots under {Path(args.results_dir) / 'plots'})")
    return 0


def _cmd_nightly(args: argparse.Namespace) -> int:
    from shiftbench.nightly import run_nightly

    outcome = run_nightly(
        Path(args.results_dir),
        data_dir=args.data_dir,
        cache_dir=args.cache_dir,
        registries=tuple(args.registries),
        report=not args.no_report,
        workers=args.workers,
    )
    print(f"{outcome.new_runs} new run(s); leaderboard {Path(args.results_dir) / 'leaderboard.parquet'}")
    if outcome.report is not None:
        print(f"report {outcome.report}")
    if outcome.moves.empty:
        print("nothing moved outside the previous 95 % intervals")
    else:
        print("moved significantly since the previous leaderboard:")
        print(outcome.moves.to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    return 0


def _cmd_cache(args: argparse.Namespace) -> int:
    from shiftbench.execution.cache import KINDS, cache_usage, prune_cache
    from shiftbench.execution.config import resolve_cache_dir

    cache_dir = resolve_cache_dir(args.cache_dir)
    if args.action == "info":
        print(f"cache dir {cache_dir}")
        for u in cache_usage(cache_dir):
            print(f"  {u.kind:<12} {u.entries:>5} entries  {u.bytes / 2**20:10.1f} MiB")
        return 0
    if args.older_than < 0:
        raise ShiftbenchError(f"--older-than: must be >= 0 days, got {args.older_than}")
    n, freed = prune_cache(cache_dir, tuple(args.kind or KINDS), args.older_than)
    print(f"pruned {n} entries, {freed / 2**20:.1f} MiB freed from {cache_dir}")
    return 0


COMMANDS = {
    "run": _cmd_run,
    "list": _cmd_list,
    "card": _cmd_card,
    "leaderboard": _cmd_leaderboard,
    "cache": _cmd_cache,
    "nightly": _cmd_nightly,
    "compare": _cmd_compare,
    "report": _cmd_report,
    "shift": _cmd_shift,
}


def _second_interrupt(signum: int, frame: object) -> None:
    # Exit at once, quietly: everything written so far is complete (atomic writes), and a
    # KeyboardInterrupt raised inside cleanup or an atexit handler printed a traceback.
    os.write(2, b"shiftbench: interrupted again; exiting now\n")
    os._exit(130)


def _first_interrupt(signum: int, frame: object) -> None:
    signal.signal(signal.SIGINT, _second_interrupt)
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    if (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    ):
        signal.signal(signal.SIGINT, _first_interrupt)
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except ShiftbenchError as exc:
        print(f"shiftbench: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("shiftbench: interrupted; completed runs are kept, re-run the same command to resume", file=sys.stderr)
        return 130  # SIGINT stays with _second_interrupt through the exit handlers that follow
    finally:
        if signal.getsignal(signal.SIGINT) is _first_interrupt:  # not interrupted: as it was
            signal.signal(signal.SIGINT, signal.default_int_handler)


if __name__ == "__main__":
    sys.exit(main())
