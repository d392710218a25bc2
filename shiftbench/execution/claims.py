"""The claim/refresh loop both executors share: concurrent processes on one results dir never
train or write the same run twice.

Each fine-tune is claimed with a lock file in the results dir (:func:`shiftbench.core.locks.claim`);
whoever gets a claim re-reads what is done (another process may have finished it while this one
waited) and works only on what is still pending.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow as pa

from shiftbench.core.console import log
from shiftbench.core.locks import claim
from shiftbench.execution.plan import DependencyJob, FineTuneJob, Plan, refresh
from shiftbench.results.store import RunResult, is_done, write_run


def claimed_jobs(plan: Plan) -> Iterator[FineTuneJob]:
    """Each of the plan's pending jobs, re-checked under its claim and yielded while the claim is
    held, when any of its targets is still pending (a job finished meanwhile is skipped).

    First every job whose claim is free now, skipping those another process holds and those that
    need a fine-tune first (distill's teacher) whose claim another process holds, which would only
    wait for it; then, in order, a wait for each skipped one (usually done by then, and skipped).
    So processes going through the same plan in the same order share its jobs instead of queueing
    behind one claim. With ``settings.skip_claimed`` there is no second pass: the jobs another
    process holds are left to it, each with one line saying so."""
    results_dir = plan.settings.results_dir
    held_elsewhere: list[tuple[FineTuneJob, str]] = []  # (job, whose claim another process holds)
    for job in plan.pending_jobs:
        dep = _held_dependency(results_dir, job)
        if dep is not None:
            held_elsewhere.append((job, f"its {dep.role} {dep.job.finetune_id}"))
            continue
        with claim(results_dir, job.finetune_id, wait=False) as got:
            if not got:
                held_elsewhere.append((job, "it"))
                continue
            job = refresh(job, results_dir)
            if job.pending:
                yield job
    if plan.settings.skip_claimed:
        for job, whose in held_elsewhere:
            log(
                f"--skip-claimed: {job.model.name} on {job.source.spec.name} seed {job.seed} "
                f"(id={job.finetune_id}) left for now: another process has claimed {whose}"
            )
        return
    for job, _ in held_elsewhere:
        with claim(results_dir, job.finetune_id):
            job = refresh(job, results_dir)
            if job.pending:
                yield job


def _held_dependency(results_dir: Path, job: FineTuneJob) -> DependencyJob | None:
    """A fine-tune the job needs first that another process has claimed right now, if any (the
    runner takes that claim before the job's own fine-tune, so the job would sit waiting for it)."""
    for dep in job.dependencies:
        with claim(results_dir, dep.job.finetune_id, wait=False) as got:
            if not got:
                return dep
    return None


def write_unwritten(
    results_dir: Path, job: FineTuneJob, scored: Iterable[tuple[RunResult, pa.Table]]
) -> list[RunResult]:
    """Under the job's claim, write each scored run that no other process wrote meanwhile (a
    job scored without holding its claim, e.g. on a Ray worker); returns the runs written."""
    written: list[RunResult] = []
    with claim(results_dir, job.finetune_id):
        for result, preds in scored:
            if not is_done(results_dir, result.run_id):
                write_run(results_dir, result, preds)
                written.append(result)
    return written
