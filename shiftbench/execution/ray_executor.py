"""Scale-out on an existing engine: one Ray task per (model, source, seed) fine-tune.

Workers fine-tune and score (``runner.score_job``) and send back run records and prediction
tables; the driver writes them through the same atomic writer as a local run, re-checking
under the results-dir claim that nobody wrote them meanwhile. Workers use their own
``--cache-dir`` (local to the node they run on) and need the model files and the data at the
same paths as the driver (a shared file system, or the same install on every node).

    shiftbench run --suite default --executor ray                       # local cluster
    shiftbench run --suite default --executor ray --address auto        # the cluster this node is in
    shiftbench run --suite default --executor ray --address ray://head:10001 --cpus-per-task 4
"""

from __future__ import annotations

import os

from shiftbench.core.errors import ShiftbenchError, one_line
from shiftbench.execution.claims import claimed_jobs, write_unwritten
from shiftbench.execution.plan import FineTuneJob, Plan
from shiftbench.execution.runner import score_job
from shiftbench.results.store import RunResult


def _task(job: FineTuneJob, plan: Plan, threads: int) -> list:
    """Runs on a worker: this job's fine-tune and scores, nothing written to the results dir."""
    os.environ.setdefault("SHIFTBENCH_NUM_THREADS", str(threads))  # torch threads = the task's CPUs
    from shiftbench.modeling.device import make_runtime

    runtime = make_runtime(plan.settings.device, plan.settings.protocol.precision)
    return list(score_job(job, plan, runtime))


def execute_on_ray(plan: Plan) -> list[RunResult]:
    try:
        import ray
    except ImportError:
        raise ShiftbenchError("--executor ray needs Ray: pip install 'shiftbench[ray]'") from None
    s = plan.settings
    if not ray.is_initialized():
        kwargs = {"address": s.ray_address} if s.ray_address else {"num_cpus": os.cpu_count() or 1}
        try:
            ray.init(**kwargs, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        except Exception as exc:  # unreachable address, bad URL, ...: one line
            raise ShiftbenchError(f"--address {s.ray_address}: cannot connect to Ray ({one_line(exc)})") from None
    remote = ray.remote(num_cpus=s.cpus_per_task, num_gpus=s.gpus_per_task)(_task)
    pending = {}
    for job in claimed_jobs(plan):  # submitted under its claim; scored without it
        pending[remote.remote(job, plan, s.cpus_per_task)] = job
    results: list[RunResult] = []
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        job = pending.pop(done[0])
        results.extend(write_unwritten(s.results_dir, job, ray.get(done[0])))  # another process may have written some
    return results
