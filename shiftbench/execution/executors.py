"""Execute a plan here or on a Ray cluster (``settings.executor``).

Above both executors so that neither imports the other: :mod:`shiftbench.execution.runner`
scores a job, :mod:`shiftbench.execution.ray_executor` runs :func:`~shiftbench.execution.runner.score_job`
on workers, and both take their work through :mod:`shiftbench.execution.claims`.
"""

from __future__ import annotations

from shiftbench.execution.claims import claimed_jobs
from shiftbench.execution.plan import Plan
from shiftbench.execution.runner import run_job
from shiftbench.modeling.device import make_runtime
from shiftbench.results.store import RunResult, check_results_dir


def execute(plan: Plan) -> list[RunResult]:
    """Run every pending job, here or on a Ray cluster (``settings.executor``).

    Locally each fine-tune is claimed with a lock file in the results dir, so concurrent
    processes on one results dir never train or write the same run twice: whoever waits for a
    claim re-checks what is done once it gets it."""
    settings = plan.settings
    check_results_dir(settings.results_dir)
    if settings.executor == "ray":
        from shiftbench.execution.ray_executor import execute_on_ray

        return execute_on_ray(plan)
    runtime = make_runtime(settings.device, settings.protocol.precision)
    results: list[RunResult] = []
    for job in claimed_jobs(plan):  # the claim is held while the job runs
        results.extend(run_job(job, plan, runtime))
    return results
