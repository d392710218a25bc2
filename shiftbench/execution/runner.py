"""Execute a plan: fine-tune once per (model, source, seed), then score the source test split
(ID) and every pending target (OOD), writing one immutable run file per (pair, target)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict

import numpy as np
import pyarrow as pa
import torch
import transformers

from shiftbench.analysis.estimate import HeldOut, Target
from shiftbench.analysis.verdict import RunEstimate, run_estimates
from shiftbench.core import faults
from shiftbench.core.console import log as _log
from shiftbench.core.errors import ShiftbenchError
from shiftbench.core.locks import claim
from shiftbench.core.version import RUNNER_VERSION, __version__
from shiftbench.data.datasets import DomainData
from shiftbench.data.encode import Encoder
from shiftbench.execution.cache import load_finetuned, save_finetuned
from shiftbench.execution.plan import DependencyJob, FineTuneJob, Plan
from shiftbench.modeling.device import Runtime
from shiftbench.modeling.models import load_classifier, load_finetuned_classifier, load_tokenizer
from shiftbench.remedies import remedy_for
from shiftbench.remedies.base import TrainContext, Trained
from shiftbench.results.store import (
    ID_TEST,
    OOD_TEST,
    SOURCE_VALIDATION,
    RunResult,
    now_utc,
    predictions_table,
    write_run,
)
from shiftbench.tasks import get_task
from shiftbench.tasks.metrics import expected_calibration_error
from shiftbench.training.checkpoint import checkpoint_dir, clear_checkpoints
from shiftbench.training.evaluation import Predictions, predict
from shiftbench.training.train import FineTuned, fine_tune


def _scores(p: Predictions) -> dict[str, float]:
    """The recorded scores: the task's metrics, ECE (as ever: every example, every word for NER),
    and the debiased ECE and Brier score of :mod:`shiftbench.analysis.taskstats` (NER: entity words)."""
    out = {**p.scores(), "ece": expected_calibration_error(p.labels, p.probs)}
    kind = p.kind
    space = p.label_space if p.label_space is not None else tuple(str(i) for i in range(p.probs.shape[1]))
    sums = kind.unit_stats(p.labels, p.preds, p.probs, p.lengths, space).sum(axis=0)
    for metric in ("ece_debiased", "brier"):
        out[metric] = float(kind.metric_fn(metric, space)(sums))
    return out


def _counts(p: Predictions, label_space: tuple[str, ...]) -> tuple[int, ...] | None:
    if (p.labels < 0).any():  # an unlabelled target: its label counts are unknown
        return None
    return tuple(int(c) for c in np.bincount(p.labels, minlength=len(label_space)))


def _stored_probs(p: Predictions) -> np.ndarray:
    """The probabilities as the predictions file stores them (float32, 6 decimals), so the
    recorded estimates can be recomputed exactly from that file."""
    return np.round(p.probs.astype(np.float32), 6).astype(np.float64)


def _estimate(job: FineTuneJob, held: Predictions, held_split: str, target: Predictions) -> RunEstimate | None:
    """The run-time label-free estimates of the OOD scores (not for a word-level task kind: the
    estimators read one probability vector per example)."""
    if get_task(job.task).word_level:
        return None
    try:
        return run_estimates(
            HeldOut(held.labels.astype(np.int64), _stored_probs(held)), Target(_stored_probs(target)), held_split
        )
    except ShiftbenchError as exc:  # a degenerate split must not cost the scored run: record it without estimates
        _log(f"warning: no label-free estimates for {job.model.name} on {job.source.spec.name}: {exc}")
        return None


def _dependency(dep: DependencyJob, plan: Plan, runtime: Runtime) -> Trained:
    """A fine-tune the job's remedy needs first (distill: the teacher), fine-tuned or reused through
    exactly the code path of a plain run of its model, under the claim such a run takes."""
    settings, job = plan.settings, dep.job
    tokenizer = load_tokenizer(job.model, settings.load)
    encoder = Encoder(tokenizer, job.label_space, job.protocol.max_length, settings.cache_dir)
    with claim(settings.results_dir, job.finetune_id):
        ft = _fine_tuned(job, plan, tokenizer, encoder, dataclasses.replace(runtime, precision=job.protocol.precision))
    return Trained(job, ft)


def _fine_tuned(job: FineTuneJob, plan: Plan, tokenizer, encoder: Encoder, runtime: Runtime) -> FineTuned:
    settings = plan.settings
    cached = load_finetuned(settings.cache_dir, job.finetune_id)
    if cached is not None:
        _log(f"reusing fine-tuned weights {job.finetune_id} from {settings.cache_dir}")
        return cached
    remedy = remedy_for(job.protocol)
    done = {dep.role: _dependency(dep, plan, runtime) for dep in job.dependencies}  # before this fine-tune
    source = remedy.transform_source(job.source, job.seed)  # augment: the train texts; validation as it is
    train, val = encoder(source, "train"), encoder(job.source, "validation")
    faults.fault_point("tokenize")
    hooks = remedy.train_hooks(TrainContext(train, job.label_space, runtime, settings.load, done))
    _log(
        f"fine-tuning {job.model.name} on {job.source.spec.name} ({len(train)} train, {len(val)} validation), seed {job.seed}"
    )
    ft = fine_tune(
        lambda: load_classifier(job.model, job.label_space, tokenizer.pad_token_id, settings.load, job.task),
        train,
        val,
        job.protocol,
        job.seed,
        tokenizer.pad_token_id,
        runtime,
        desc=f"{job.model.name}/{job.source.spec.name}/s{job.seed}",
        log=_log,
        checkpoints=checkpoint_dir(settings.cache_dir, job.finetune_id),
        hooks=hooks,
    )
    save_finetuned(settings.cache_dir, job.finetune_id, ft)
    clear_checkpoints(checkpoint_dir(settings.cache_dir, job.finetune_id))
    return ft


def _classifier_scorer(
    job: FineTuneJob, plan: Plan, runtime: Runtime
) -> tuple[FineTuned | None, Callable[[DomainData], Predictions]]:
    """The fine-tuned (or, with --eval-only, the given) classifier and ``score(domain)`` for its test split."""
    settings = plan.settings
    protocol = job.protocol
    tokenizer = load_tokenizer(job.model, settings.load)
    encoder = Encoder(tokenizer, job.label_space, protocol.max_length, settings.cache_dir)
    columns = None
    if settings.eval_only:
        ft = None
        model, columns = load_finetuned_classifier(job.model, job.label_space, settings.load, job.task)
    else:
        ft = _fine_tuned(job, plan, tokenizer, encoder, runtime)
        model = ft.model  # just trained: already holds the selected weights
        if model is None:  # from the fine-tune cache
            model = load_classifier(job.model, job.label_space, tokenizer.pad_token_id, settings.load, job.task)
            model.load_state_dict(ft.state)
    model.to(runtime.device)

    def score(domain, role: str = "test"):
        data = encoder(domain, role)
        return predict(model, data, protocol.eval_batch_size, tokenizer.pad_token_id, runtime, columns)

    return ft, score


def score_job(job: FineTuneJob, plan: Plan, runtime: Runtime) -> Iterator[tuple[RunResult, pa.Table]]:
    """Fine-tune (or reuse the cached fine-tune; a remedy with its own scorer, icl, prompts the checkpoint instead) and
    yield, per pending target, the run record and its per-example predictions. Writes nothing to the results dir: the caller does, so a remote
    worker can compute and the driver can write."""
    settings = plan.settings
    protocol = job.protocol
    remedy = remedy_for(protocol)
    if not remedy.fine_tunes:  # icl: few-shot prompting, nothing is fine-tuned or cached
        ft, score = None, remedy.scorer(job, settings.load, runtime, _log)
        t0 = time.perf_counter()
        id_pred = score(job.source)
        # Prompting is slow and selects nothing on validation: the estimators' held-out split is
        # the source test split, as for the committed runs.
        held_split, held_pred, val_seconds = ID_TEST, id_pred, 0.0
    else:
        ft, score = _classifier_scorer(job, plan, runtime)
        t0 = time.perf_counter()
        id_pred = score(job.source)
        # The selected model on source validation: stored, and the held-out split of the estimates.
        t_val = time.perf_counter()
        # Made during selection when the fine-tune ran in this process (same weights, same batches):
        # scoring validation again would add ~11-17 % to the run's scoring time for the same numbers.
        fresh = ft.val_predictions if ft is not None else None
        held_split, held_pred = SOURCE_VALIDATION, fresh if fresh is not None else score(job.source, "validation")
        val_seconds = time.perf_counter() - t_val
    id_seconds = time.perf_counter() - t0
    id_scores = _scores(id_pred)
    for t in job.pending:
        t1 = time.perf_counter()
        ood_pred = score(t.target)
        faults.fault_point("evaluate")
        labelled = t.target.role("test").labelled
        t_est = time.perf_counter()
        estimate = _estimate(job, held_pred, held_split, ood_pred)
        if estimate is not None:
            _log(
                f"estimates for {t.target.spec.name}: {time.perf_counter() - t_est:.2f} s "
                f"(scoring {id_seconds - val_seconds + t_est - t1:.2f} s, source validation {val_seconds:.2f} s)"
            )
        result = RunResult(
            run_id=t.run_id,
            finetune_id=job.finetune_id,
            model=job.model.name,
            model_sha256=job.model.sha256,
            pair=t.pair.name,
            source=job.source.spec.name,
            target=t.target.spec.name,
            task=t.pair.task,
            seed=job.seed,
            protocol=protocol.name,
            protocol_hash=protocol.hash,
            id_scores=id_scores,
            ood_scores=_scores(ood_pred) if labelled else dict.fromkeys(id_scores),
            n_id=id_pred.n_units,
            n_ood=ood_pred.n_units,
            label_space=job.label_space,
            id_label_counts=_counts(id_pred, job.label_space),
            ood_label_counts=_counts(ood_pred, job.label_space),
            overlap_exact=t.overlap.exact if t.overlap else None,
            overlap_normalised=t.overlap.normalised if t.overlap else None,
            dedup=settings.dedup,
            source_fingerprint=job.source.fingerprint,
            target_fingerprint=t.target.fingerprint,
            selected_lr=ft.selected_lr if ft else None,
            selected_epoch=ft.selected_epoch if ft else None,
            selection_score=ft.selection_score if ft else None,
            eval_only=settings.eval_only,
            device=str(runtime.device),
            precision=protocol.precision,
            num_threads=torch.get_num_threads(),
            train_seconds=ft.train_seconds if ft else 0.0,
            eval_seconds=id_seconds + time.perf_counter() - t1,
            created_at=now_utc(),
            shiftbench_version=__version__,
            runner_version=RUNNER_VERSION,
            transformers_version=transformers.__version__,
            torch_version=torch.__version__,
            history=tuple(asdict(h) for h in ft.history) if ft else (),
            trainable_params=ft.trainable_params if ft else None,
            estimate=estimate,
        )
        splits = {ID_TEST: id_pred, OOD_TEST: ood_pred}
        if held_split == SOURCE_VALIDATION:
            splits[SOURCE_VALIDATION] = held_pred
        preds = predictions_table(splits)
        yield result, preds


def run_job(job: FineTuneJob, plan: Plan, runtime: Runtime) -> list[RunResult]:
    """Score a job and write each run as soon as it is scored."""
    results = []
    for result, preds in score_job(job, plan, runtime):
        write_run(plan.settings.results_dir, result, preds)
        results.append(result)
    return results
