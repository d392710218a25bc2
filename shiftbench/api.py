"""The Python API; the CLI is a thin layer over these functions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from shiftbench.registry.catalog import load_catalog
from shiftbench.execution.config import resolve_settings
from shiftbench.analysis.leaderboard import rebuild_leaderboard
from shiftbench.execution.plan import Plan, build_plan
from shiftbench.results.store import RunResult, check_results_dir
from shiftbench.execution.executors import execute


@dataclass(frozen=True)
class RunSummary:
    plan: Plan
    new_results: tuple[RunResult, ...]  # runs computed by this call (done ones are skipped)
    leaderboard: pd.DataFrame | None  # rebuilt after the run; None for a dry run
    skipped_files: tuple[tuple[Path, str], ...] = ()


def make_plan(
    *,
    suite: str | None = None,
    pairs: Sequence[str] = (),
    models: Sequence[str] = (),
    seeds: str | Sequence[int] | None = None,
    protocol: str | None = None,
    registries: Sequence[str | Path] = (),
    dry_run: bool = False,
    **options,
) -> RunSummary:
    """Resolve settings and validate everything a run needs; nothing is trained.

    ``options`` are the remaining :func:`shiftbench.execution.config.resolve_settings` keywords:
    ``data_dir``, ``results_dir``, ``cache_dir``, ``device``, ``precision``,
    ``trust_remote_code``, ``allow_pickle``, ``eval_only``.
    """
    catalog = load_catalog(registries)
    settings = resolve_settings(
        catalog, suite=suite, pairs=pairs, models=models, seeds=seeds, protocol=protocol, dry_run=dry_run, **options
    )
    plan = build_plan(settings, catalog)  # every registry, data and model check first: a bad input writes nothing
    if not dry_run:
        check_results_dir(settings.results_dir)
    return plan


def run_plan(plan: Plan) -> RunSummary:
    """Execute a plan and rebuild the leaderboard."""
    settings = plan.settings
    if settings.dry_run:
        return RunSummary(plan, (), None)
    new = execute(plan)
    board, skipped = rebuild_leaderboard(settings.results_dir)
    return RunSummary(plan, tuple(new), board, skipped)


def run(**kwargs) -> RunSummary:
    """Fine-tune and evaluate; returns typed results. Same keywords as :func:`make_plan`.

    >>> summary = run(pairs=["fpb_to_tfns"], models=["minilm-l6"], protocol="quick")  # doctest: +SKIP
    >>> summary.new_results[0].gap("macro_f1")  # doctest: +SKIP
    0.164...
    """
    return run_plan(make_plan(**kwargs))
