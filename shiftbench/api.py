"""The Python API; the CLI is a thin layer over these functions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from shiftbench.analysis.leaderboard import rebuild_leaderboard
from shiftbench.execution.config import resolve_settings
from shiftbench.execution.plan import Plan, build_plan
from shiftbench.execution.settings import RunRequest, options_doc
from shiftbench.registry.catalog import load_catalog
from shiftbench.registry.protocol import Protocol
from shiftbench.results.store import RunResult, check_results_dir


@dataclass(frozen=True)
class RunSummary:
    plan: Plan
    new_results: tuple[RunResult, ...]  # runs computed by this call (done ones are skipped)
    leaderboard: pd.DataFrame | None  # rebuilt after the run; None for a dry run
    skipped_files: tuple[tuple[Path, str], ...] = ()


def plan_request(request: RunRequest) -> Plan:
    """Resolve a request's settings and validate everything the run needs; nothing is trained."""
    catalog = load_catalog(request.registries)
    settings = resolve_settings(catalog, request)
    plan = build_plan(settings, catalog)  # every registry, data and model check first: a bad input writes nothing
    if not request.dry_run:
        check_results_dir(settings.results_dir)
    return plan


def make_plan(
    *,
    suite: str | None = None,
    pairs: Sequence[str] = (),
    models: Sequence[str] = (),
    seeds: str | Sequence[int] | None = None,
    protocol: str | Protocol | None = None,
    registries: Sequence[str | Path] = (),
    dry_run: bool = False,
    **options: Any,
) -> Plan:
    """Resolve settings and validate everything a run needs; nothing is trained. Returns the plan.

    Takes the keywords of :func:`run` (``options`` are the ones not named here); an unknown one is
    refused in one line. The options, as declared in :class:`shiftbench.execution.settings.RunRequest`:

    """
    request = RunRequest.from_options(
        suite=suite,
        pairs=pairs,
        models=models,
        seeds=seeds,
        protocol=protocol,
        registries=registries,
        dry_run=dry_run,
        **options,
    )
    return plan_request(request)


def run_plan(plan: Plan) -> RunSummary:
    """Execute a plan and rebuild the leaderboard."""
    settings = plan.settings
    if settings.dry_run:
        return RunSummary(plan, (), None)
    # The executors bring torch (the runner trains and scores): imported when there is work, so a
    # plan (--dry-run) is made without it.
    from shiftbench.execution.executors import execute

    new = execute(plan)
    board, skipped = rebuild_leaderboard(settings.results_dir)
    return RunSummary(plan, tuple(new), board, skipped)


def run(
    *,
    suite: str | None = None,
    pairs: Sequence[str] = (),
    models: Sequence[str] = (),
    seeds: str | Sequence[int] | None = None,
    protocol: str | Protocol | None = None,
    precision: str | None = None,
    registries: Sequence[str | Path] = (),
    data_dir: str | Path | None = None,
    results_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    device: str | None = None,
    dry_run: bool = False,
    eval_only: bool = False,
    dedup: bool = False,
    executor: str = "local",
    workers: int = 1,
    skip_claimed: bool = False,
    ray_address: str | None = None,
    cpus_per_task: int = 1,
    gpus_per_task: float = 0.0,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
) -> RunSummary:
    """Fine-tune and evaluate; returns typed results. A run is planned first (:func:`make_plan`):
    a bad input raises :class:`~shiftbench.core.errors.ShiftbenchError` before anything is written.

    >>> summary = run(pairs=["fpb_to_tfns"], models=["minilm-l6"], protocol="quick")  # doctest: +SKIP
    >>> summary.new_results[0].gap("macro_f1")  # doctest: +SKIP
    0.164...

    The keywords are the run options, one per field of :class:`shiftbench.execution.settings.RunRequest`
    (the command line's ``run`` flags in brackets):

    """
    request = RunRequest(**locals())  # first statement: the locals are exactly the keywords
    return run_plan(plan_request(request))


if make_plan.__doc__ and run.__doc__:  # (absent under python -OO)
    make_plan.__doc__ = make_plan.__doc__.rstrip(" ") + options_doc()
    run.__doc__ = run.__doc__.rstrip(" ") + options_doc()
