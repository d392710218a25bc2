"""`run --workers N`: fine-tunes shared by N local processes, and the non-blocking claims that let
processes on one results dir share a plan's jobs."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import threading

import pytest

import shiftbench
from shiftbench import api
from shiftbench.core.errors import ShiftbenchError
from shiftbench.core.locks import LOCKS_DIR
from shiftbench.execution.claims import claimed_jobs
from shiftbench.execution.workers import _sendable
from shiftbench.modeling.device import physical_cores
from shiftbench.results.store import RUNS_DIR, read_runs, run_path
from tests.conftest import user_error

PAIRS = ["news_to_tweets", "reviews_to_forum"]  # two fine-tunes (news serves two targets): three runs

# Holds a claim's lock file in another process until told to let go (filelock refuses to wait,
# in one thread, for a lock another FileLock instance of the same process holds).
HOLDER = """
import sys
from filelock import FileLock
lock = FileLock(sys.argv[1])
lock.acquire()
print("held", flush=True)
sys.stdin.readline()
lock.release()
"""


@contextlib.contextmanager
def held_elsewhere(results_dir, finetune_id):
    """The job's claim held by another process; yields a function that makes it let go."""
    lock_file = results_dir / LOCKS_DIR / f"{finetune_id}.lock"
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(lock_file)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )

    def release():
        holder.stdin.write("\n")
        holder.stdin.flush()

    try:
        assert holder.stdout.readline().strip() == "held"
        yield release
    finally:
        holder.kill() if holder.poll() is None else None
        holder.wait()


def _run_files(results_dir):
    return sorted(p.name for p in (results_dir / RUNS_DIR).glob("*.parquet"))


def test_claimed_jobs_takes_free_jobs_first_then_waits_for_held_ones(tiny_env):
    plan = api.make_plan(pairs=PAIRS, seeds="0,1", dry_run=True, **tiny_env)
    ids = [job.finetune_id for job in plan.pending_jobs]
    assert len(ids) == 4
    with held_elsewhere(tiny_env["results_dir"], ids[0]) as release:
        jobs = claimed_jobs(plan)
        assert [next(jobs).finetune_id for _ in range(3)] == ids[1:]  # the held job is skipped, not waited for
        # Meanwhile the holder "finishes" the job: the wait ends, and the re-check under the claim skips it.
        first = plan.pending_jobs[0]
        for target in first.targets:
            path = run_path(tiny_env["results_dir"], target.run_id)
            path.parent.mkdir(exist_ok=True)
            path.touch()
        release()
        assert next(jobs, None) is None


def test_claimed_jobs_waits_for_a_held_job_that_is_still_pending(tiny_env):
    plan = api.make_plan(pairs=PAIRS, seeds="0", dry_run=True, **tiny_env)
    ids = [job.finetune_id for job in plan.pending_jobs]
    with held_elsewhere(tiny_env["results_dir"], ids[0]) as release:
        jobs = claimed_jobs(plan)
        assert next(jobs).finetune_id == ids[1]
        release()  # without finishing it: this process gets it after all
        assert next(jobs).finetune_id == ids[0]
        assert next(jobs, None) is None


def test_skip_claimed_leaves_a_held_job_to_its_holder_and_says_so(tiny_env, capsys):
    """`run --skip-claimed` (board lanes): the held fine-tune is neither waited for nor trained; the
    rest of the plan is, and a second run without the flag finishes the held one."""
    plan = api.make_plan(pairs=PAIRS, seeds="0", dry_run=True, **tiny_env)
    held = plan.pending_jobs[0]
    out: list = []
    with held_elsewhere(tiny_env["results_dir"], held.finetune_id) as release:
        runner = threading.Thread(
            target=lambda: out.append(shiftbench.run(pairs=PAIRS, seeds="0", skip_claimed=True, **tiny_env))
        )
        runner.start()
        runner.join(timeout=120)
        waited = runner.is_alive()
        release()  # a run that waits for the claim (the bug) gets it now and ends
        runner.join()
    assert not waited, "run --skip-claimed waited for a claim another process holds"
    (summary,) = out
    held_runs = {t.run_id for t in held.targets}
    written = {r.run_id for r in summary.new_results}
    assert written and not written & held_runs  # the free job ran, the held one did not
    assert written | held_runs == {t.run_id for job in plan.jobs for t in job.targets}
    err = capsys.readouterr().err
    assert f"--skip-claimed: {held.model.name} on {held.source.spec.name} seed 0 (id={held.finetune_id})" in err
    assert "another process has claimed it" in err
    rest = shiftbench.run(pairs=PAIRS, seeds="0", **tiny_env)  # the claim is free again: no wait, it runs
    assert {r.run_id for r in rest.new_results} == held_runs


def test_two_workers_write_what_one_process_writes(tiny_env, tmp_path, monkeypatch):
    threads = max(1, physical_cores() // 2)
    monkeypatch.delenv("SHIFTBENCH_NUM_THREADS")  # each worker takes cores/2
    two = shiftbench.run(pairs=PAIRS, seeds="0", workers=2, **tiny_env)

    # The reference: one process with the workers' thread count (float sums depend on it).
    monkeypatch.setenv("SHIFTBENCH_NUM_THREADS", str(threads))
    ref_env = {**tiny_env, "results_dir": tmp_path / "ref", "cache_dir": tmp_path / "ref-cache"}
    one = shiftbench.run(pairs=PAIRS, seeds="0", workers=1, **ref_env)

    assert [r.run_id for r in two.new_results] == [r.run_id for r in one.new_results]  # in plan order
    assert len(two.new_results) == 3
    assert _run_files(tiny_env["results_dir"]) == _run_files(ref_env["results_dir"])
    rows = read_runs(tiny_env["results_dir"]).table.to_pandas()
    assert set(rows["num_threads"]) == {threads}
    ref = read_runs(ref_env["results_dir"]).table.to_pandas()
    cols = ["run_id", "metric", "id_score", "ood_score", "selected_lr", "selected_epoch"]
    a = rows[cols].sort_values(["run_id", "metric"]).reset_index(drop=True)
    b = ref[cols].sort_values(["run_id", "metric"]).reset_index(drop=True)
    assert a.equals(b)


def _cli_args(env, *extra):
    return [
        "run",
        "--registry",
        env["registries"][0],
        "--data-dir",
        env["data_dir"],
        "--protocol",
        env["protocol"],
        "--model",
        "tiny",
        "--pair",
        "reviews_to_forum",
        "--results-dir",
        env["results_dir"],
        "--cache-dir",
        env["cache_dir"],
        "--device",
        "cpu",
        *extra,
    ]


def test_bad_workers_values_are_one_line_errors(tiny_env, capsys):
    user_error(capsys, _cli_args(tiny_env, "--workers", "0", "--dry-run"), "--workers", "0")
    user_error(capsys, _cli_args(tiny_env, "--workers", "x", "--dry-run"), "--workers", "'x'")
    user_error(capsys, _cli_args(tiny_env, "--workers", "2", "--executor", "ray", "--dry-run"), "--workers 2", "ray")
    with pytest.raises(ShiftbenchError, match="--workers: expected an integer >= 1, got '2'"):
        api.make_plan(pairs=["reviews_to_forum"], workers="2", dry_run=True, **tiny_env)


def _broken_model(tiny_model_dir, where):
    """The tiny model with its embedding matrix stored transposed: same bytes and parameter count,
    so every plan-time check passes, but loading it into the model fails (in the worker)."""
    from safetensors.torch import load_file, save_file

    d = where / "broken"
    shutil.copytree(tiny_model_dir, d)
    tensors = load_file(str(d / "model.safetensors"))
    key = next(k for k in tensors if k.endswith("word_embeddings.weight"))
    tensors[key] = tensors[key].t().contiguous()
    save_file(tensors, str(d / "model.safetensors"), metadata={"format": "pt"})
    return d


def test_a_failing_worker_fails_the_run_and_keeps_the_others_runs(tiny_env, tiny_model_dir, tmp_path):
    broken = _broken_model(tiny_model_dir, tmp_path)
    argv = [str(a) for a in _cli_args(tiny_env, "--model", broken, "--workers", "2")]
    proc = subprocess.run([sys.executable, "-m", "shiftbench", *argv], capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0, proc.stderr[-2000:]
    assert "ignore_mismatched_sizes" in proc.stderr  # the worker's error reaches the terminal
    # The tiny model's fine-tune (first in the plan, so taken first) was finished and written.
    env = {**tiny_env, "models": ["tiny", str(broken)]}
    plan = api.make_plan(pairs=["reviews_to_forum"], dry_run=True, **env)
    good, bad = plan.jobs
    assert good.model.name == "tiny" and all(t.done for t in good.targets), proc.stderr[-2000:]
    assert not any(t.done for t in bad.targets)


def test_a_workers_error_keeps_its_type_and_line():
    err = _sendable(ShiftbenchError("data file x.parquet: column 'text' missing"))
    assert type(err) is ShiftbenchError and str(err) == "data file x.parquet: column 'text' missing"

    class Unpicklable(Exception):
        def __init__(self, a, b):
            super().__init__(f"{a} {b}\nsecond line")

    err = _sendable(Unpicklable("bad", "thing"))
    assert type(err) is RuntimeError and str(err) == "Unpicklable: bad thing"
