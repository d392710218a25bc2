"""``--workers N``: the local executor's fine-tunes in N processes on this machine.

On a few CPU cores one fine-tune does not keep its torch threads busy (small matrices, and the
single-threaded parts of a step), so N processes of cores/N threads each train more steps per
second than one process of all of them (benchmarks/threads_vs_lanes.py: 1.17x on 2 cores).
Each worker takes jobs through :func:`~shiftbench.execution.claims.claimed_jobs` like any other
process on the results dir and writes its own runs (atomically); the parent gathers the records.
"""

from __future__ import annotations

import os
import pickle
import traceback
from collections.abc import Callable
from multiprocessing import get_context
from multiprocessing.connection import Connection, wait
from typing import Any

from shiftbench.core.errors import ShiftbenchError, one_line
from shiftbench.execution.claims import claimed_jobs
from shiftbench.execution.plan import Plan
from shiftbench.execution.runner import run_job
from shiftbench.modeling.device import make_runtime, physical_cores
from shiftbench.results.store import RunResult


def execute_in_workers(plan: Plan, workers: int) -> list[RunResult]:
    """The plan's pending jobs run by ``workers`` processes; returns the new runs in plan order.

    When a worker fails, the others finish the job they are on (nothing done is lost) and take no
    other; then the first failure is raised (a ShiftbenchError stays one line)."""
    # spawn, not fork: a forked child would inherit torch's thread pools and locks in whatever state they were.
    ctx = get_context("spawn")
    stop = ctx.Event()
    threads = max(1, physical_cores() // workers)
    pending: dict[Any, tuple[int, Any]] = {}  # the parent's end of each worker's pipe -> (number, process)
    for number in range(1, workers + 1):
        receive, send = ctx.Pipe(duplex=False)
        # daemon: an interrupted parent takes its workers with it (finished runs are on disk already).
        proc = ctx.Process(
            target=_worker, args=(plan, threads, stop, send), name=f"shiftbench-worker-{number}", daemon=True
        )
        proc.start()
        send.close()  # the worker holds the only sending end: its death reads as EOF here
        pending[receive] = (number, proc)
    results: list[RunResult] = []
    failures: list[BaseException] = []
    while pending:
        for receive in wait(list(pending)):
            number, proc = pending.pop(receive)
            try:
                ok, value = receive.recv()  # (True, its runs) or (False, its error); before join: a big result
            except EOFError:  # killed without a word (SIGKILL, out of memory)
                ok, value = False, None
            proc.join()
            if value is None:
                value = ShiftbenchError(
                    f"--workers: worker {number} died (exit status {proc.exitcode}); "
                    "completed runs are kept, re-run the same command to resume"
                )
            if ok:
                results.extend(value)
            else:
                stop.set()
                failures.append(value)
    if failures:
        raise failures[0]
    order = {t.run_id: i for i, t in enumerate(t for job in plan.jobs for t in job.targets)}
    return sorted(results, key=lambda r: order[r.run_id])


def run_claimed(plan: Plan, stopped: Callable[[], bool] = lambda: False) -> list[RunResult]:
    """This process's share of the plan's pending jobs (all of them when it is alone on the results
    dir): each job is trained and scored while its claim is held; ``stopped`` is asked before each
    job. The local executor runs it in-process, and each worker runs it."""
    runtime = make_runtime(plan.settings.device, plan.settings.protocol.precision)
    results: list[RunResult] = []
    for job in claimed_jobs(plan):  # the claim is held while the job runs
        if stopped():
            break
        results.extend(run_job(job, plan, runtime))
    return results


def _worker(plan: Plan, threads: int, stop: Any, send: Connection) -> None:
    """One worker process: its share of the plan's jobs, then its outcome through ``send``."""
    outcome: tuple[bool, Any]
    try:
        # Before the runtime sets torch's threads; an explicit SHIFTBENCH_NUM_THREADS wins.
        os.environ.setdefault("SHIFTBENCH_NUM_THREADS", str(threads))
        outcome = (True, run_claimed(plan, stopped=stop.is_set))  # another worker failed: stop at a job boundary
    except BaseException as exc:  # also KeyboardInterrupt: the parent hears of every end
        stop.set()
        if not isinstance(exc, (ShiftbenchError, KeyboardInterrupt)):
            traceback.print_exc()  # where it failed, as an in-process run would show it
        outcome = (False, _sendable(exc))
    send.send(outcome)
    send.close()


def _sendable(exc: BaseException) -> BaseException:
    """The exception itself when it pickles (its type is kept), else its type and first line."""
    try:
        pickle.loads(pickle.dumps(exc))  # our own object, made in this process
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {one_line(exc)}")
    return exc
