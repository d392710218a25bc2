"""Execute a plan here (in this process, or in ``--workers`` processes) or on a Ray cluster (``settings.executor``).

Above both executors so that neither imports the other: :mod:`shiftbench.execution.runner`
scores a job, :mod:`shiftbench.execution.ray_executor` runs :func:`~shiftbench.execution.runner.score_job`
on workers, and both take their work through :mod:`shiftbench.execution.claims`.
"""

from __future__ import annotations

from shiftbench.execution.plan import Plan
from shiftbench.execution.workers import execute_in_workers, run_claimed
from shiftbench.results.store import RunResult, check_results_dir


def execute(plan: Plan) -> list[RunResult]:
    """Run every pending job, here or on a Ray cluster (``settings.executor``).

    Locally each fine-tune is claimed with a lock file in the results dir, so concurrent
    processes on one results dir never train or write the same run twice: whoever waits for a
    claim re-checks what is done once it gets it. With ``settings.workers`` > 1 the jobs are shared
    the same way by that many processes here (:mod:`shiftbench.execution.workers`)."""
    settings = plan.settings
    # Again (plan_request checked it too): a plan may be executed long after it was made, and a
    # results dir that became unwritable meanwhile must fail here, before hours of training.
    check_results_dir(settings.results_dir)
    if settings.executor == "ray":
        from shiftbench.execution.ray_executor import execute_on_ray

        return execute_on_ray(plan)
    # No more processes than fine-tunes to share; one worker is this process, as before --workers.
    workers = min(settings.workers, len(plan.pending_jobs))
    return execute_in_workers(plan, workers) if workers > 1 else run_claimed(plan)
