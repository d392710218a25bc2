"""Turn settings into a plan: which fine-tunes to run and which (pair, target) to score.

Building the plan validates everything a run needs (registry entries, every data file of every
selected pair, label spaces, model directories, the results dir) before any training starts,
so a broken target file fails in seconds rather than after a fine-tune.

Identity (DomainBed style): a fine-tune is the hash of (model sha256, source data fingerprint,
protocol hash, seed, runner version; for a remedy that depends on other fine-tunes (distill: its
teacher) also their fine-tune ids, computed the same way); a run is that plus (model name, pair, target, target
fingerprint), so two aliases of the same weights share one fine-tune but keep their own rows.
A run whose file exists in the results dir is done and is skipped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass

from shiftbench.core import console
from shiftbench.core.errors import DataUnavailable, ShiftbenchError
from shiftbench.core.guards import preview
from shiftbench.core.version import RUNNER_VERSION
from shiftbench.data.datasets import DomainData, load_domain, pair_label_space
from shiftbench.data.overlap import Overlap, count_overlap, without_overlap
from shiftbench.execution.config import RunSettings
from shiftbench.modeling.models import ResolvedModel, check_head_labels, check_loadable, resolve_model
from shiftbench.registry.catalog import Catalog
from shiftbench.registry.protocol import Protocol
from shiftbench.registry.specs import PairSpec
from shiftbench.remedies import remedy_for
from shiftbench.results.store import is_done


def short_hash(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def finetune_id(
    model_sha256: str,
    source_fingerprint: str,
    protocol: Protocol,
    seed: int,
    eval_only: bool = False,
    dependency_ids: tuple[str, ...] = (),
) -> str:
    """The identity of one fine-tune (of a distill student: with its teacher's fine-tune id)."""
    kind = "eval-only" if eval_only else "fine-tune"
    parts = (kind, model_sha256, source_fingerprint, protocol.hash, seed, RUNNER_VERSION)
    return short_hash(*parts, *dependency_ids)


@dataclass(frozen=True)
class ScoredTarget:
    pair: PairSpec
    target: DomainData  # with overlapping texts removed when the run deduplicates
    run_id: str
    done: bool
    overlap: Overlap | None  # of the target test split as loaded with the source train split


@dataclass(frozen=True)
class FineTuneJob:
    model: ResolvedModel
    source: DomainData
    seed: int
    protocol: Protocol
    label_space: tuple[str, ...]
    finetune_id: str
    targets: tuple[ScoredTarget, ...]  # every (pair, target) of the selection sharing this source
    # Fine-tunes the remedy needs before this one, on this source and seed (distill: the teacher),
    # as jobs of their own with no targets: the runner executes them first.
    dependencies: tuple[DependencyJob, ...] = ()

    @property
    def pending(self) -> tuple[ScoredTarget, ...]:
        return tuple(t for t in self.targets if not t.done)

    @property
    def task(self) -> str:
        return self.source.spec.task


@dataclass(frozen=True)
class DependencyJob:
    role: str  # what the remedy calls it ("teacher")
    job: FineTuneJob


@dataclass(frozen=True)
class Plan:
    settings: RunSettings
    jobs: tuple[FineTuneJob, ...]

    @property
    def pending_jobs(self) -> tuple[FineTuneJob, ...]:
        return tuple(j for j in self.jobs if j.pending)

    def describe(self) -> str:
        s = self.settings
        lines = [
            f"protocol {s.protocol.name} ({s.protocol.hash}), seeds {list(s.seeds)}, results in {s.results_dir}",
        ]
        # What a job does, and what a count of jobs is called.
        verb, unit = ("evaluate", "evaluations") if s.eval_only else remedy_for(s.protocol).job_words
        for job in self.jobs:
            state = "pending" if job.pending else "done"
            lines.append(
                f"[{state}] {verb} {job.model.name} on {job.source.spec.name} "
                f"(train {len(job.source.role('train')) if 'train' in job.source.splits else '-'}) "
                f"seed {job.seed}  id={job.finetune_id}"
            )
            for dep in job.dependencies:
                lines.append(
                    f"    {dep.role}: {dep.job.model.name} under {dep.job.protocol.name}  id={dep.job.finetune_id}"
                )
            for t in job.targets:
                mark = "done" if t.done else "todo"
                seen = (
                    f", {t.overlap.normalised}/{t.overlap.n_test} target texts seen in source train"
                    if t.overlap
                    else ""
                )
                lines.append(
                    f"    [{mark}] {t.pair.name}: score {job.source.spec.name} (ID) and {t.target.spec.name} (OOD)"
                    f"{seen}{' (removed: --dedup)' if s.dedup and t.overlap else ''}  run={t.run_id}"
                )
        n_runs = sum(len(j.targets) for j in self.jobs)
        n_todo = sum(len(j.pending) for j in self.jobs)
        lines.append(f"{len(self.pending_jobs)} of {len(self.jobs)} {unit} and {n_todo} of {n_runs} runs to do")
        return "\n".join(lines)


def refresh(job: FineTuneJob, results_dir) -> FineTuneJob:
    """The same job with each target's done flag re-read from the results dir."""
    targets = tuple(dataclasses.replace(t, done=is_done(results_dir, t.run_id)) for t in job.targets)
    return dataclasses.replace(job, targets=targets)


SOURCE_ROLES = ("train", "validation", "test")  # also for --eval-only: same fingerprint, overlap known


def _load_pairs(settings: RunSettings, catalog: Catalog, log: Callable[[str], None]):
    """Every dataset of every selected pair, loaded once (fingerprints, label sets, file checks).

    Sources and targets are kept apart: a dataset's fingerprint covers the files of the roles it
    is used in, so a target's run id never depends on which other pairs were selected. A suite
    skips a pair whose ``optional`` dataset cannot be loaded (with a warning); a pair asked for
    with ``--pair`` fails instead."""
    pairs: list[PairSpec] = []
    sources: dict[str, DomainData] = {}
    targets: dict[str, DomainData] = {}
    for pair in (catalog.pairs.get(name) for name in settings.pairs):
        try:
            if pair.source not in sources:
                sources[pair.source] = load_domain(catalog.datasets.get(pair.source), settings.data_dir, SOURCE_ROLES)
            for target in pair.targets:
                if target not in targets:
                    targets[target] = load_domain(catalog.datasets.get(target), settings.data_dir, ("test",))
        except DataUnavailable as exc:
            needed = [catalog.datasets.get(n) for n in (pair.source, *pair.targets)]
            if settings.suite is None or not any(d.optional for d in needed):
                raise
            log(f"warning: suite {preview(settings.suite)}: skipping pair {preview(pair.name)}: {exc}")
            continue
        pairs.append(pair)
    if not pairs:
        raise ShiftbenchError(f"suite {preview(settings.suite)}: no pair has its data available")
    return pairs, sources, targets


def build_plan(settings: RunSettings, catalog: Catalog, log: Callable[[str], None] = console.log) -> Plan:
    remedy = remedy_for(settings.protocol)
    # --eval-only trains nothing: a remedy that fine-tunes has no dependencies or checks then.
    trains = remedy.fine_tunes and not settings.eval_only
    dependencies = remedy.dependencies(catalog, settings.load) if trains else ()
    models = [resolve_model(name, catalog, settings.load) for name in settings.models]
    if trains or not remedy.fine_tunes:  # the remedy's own checks (task kinds, peft, ...), before any data is loaded
        remedy.check(settings, [catalog.pairs.get(name) for name in settings.pairs], models, dependencies)
    # Config, tokenizer and head are read now, so a model defect fails the dry run, not a fine-tune
    # (a remedy that replaces fine-tuning loads no classifier head).
    tasks = tuple(sorted({catalog.pairs.get(n).task for n in settings.pairs})) if remedy.fine_tunes else ()
    for model in models + [d.model for d in dependencies]:
        check_loadable(model, settings.load, settings.protocol.max_length, tasks)
    pairs, sources_, domains = _load_pairs(settings, catalog, log)
    spaces = {p.name: pair_label_space(sources_[p.source], [domains[t] for t in p.targets], p.name) for p in pairs}

    jobs: list[FineTuneJob] = []
    sources = list(dict.fromkeys(p.source for p in pairs))
    # Target test texts also seen in the source train split, once per (source, target).
    seen: dict[tuple[str, str], tuple[Overlap, DomainData]] = {}
    for pair in pairs:
        src = sources_[pair.source]
        for t in pair.targets:
            if "train" in src.splits and (pair.source, t) not in seen:
                deduped = without_overlap(domains[t], src) if settings.dedup else domains[t]
                seen[(pair.source, t)] = (
                    count_overlap(src.role("train").plain_texts(), domains[t].role("test").plain_texts()),
                    deduped,
                )
    # Seed-major: every model gets its first seed before any gets a second, so a long suite
    # that is stopped early still compares all models (and can fit effective robustness).
    for seed in settings.seeds:
        for model in models:
            for source_name in sources:
                source = sources_[source_name]
                space = spaces[next(p.name for p in pairs if p.source == source_name)]
                # Each dependency is the very fine-tune a plain run of its model under its protocol makes.
                deps = tuple(
                    DependencyJob(
                        d.role,
                        FineTuneJob(
                            d.model,
                            source,
                            seed,
                            d.protocol,
                            space,
                            finetune_id(d.model.sha256, source.fingerprint, d.protocol, seed),
                            (),
                        ),
                    )
                    for d in dependencies
                )
                ft_id = finetune_id(
                    model.sha256,
                    source.fingerprint,
                    settings.protocol,
                    seed,
                    settings.eval_only,
                    tuple(d.job.finetune_id for d in deps),
                )
                targets = []
                for pair in (p for p in pairs if p.source == source_name):
                    for t in pair.targets:
                        overlap, target = seen.get((source_name, t), (None, domains[t]))
                        run_id = short_hash(ft_id, model.name, pair.name, t, target.fingerprint)
                        done = is_done(settings.results_dir, run_id)
                        targets.append(ScoredTarget(pair, target, run_id, done, overlap))
                if settings.eval_only:
                    check_head_labels(model, space)
                jobs.append(FineTuneJob(model, source, seed, settings.protocol, space, ft_id, tuple(targets), deps))
    return Plan(settings, tuple(jobs))
