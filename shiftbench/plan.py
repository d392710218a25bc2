"""Turn settings into a plan: which fine-tunes to run and which (pair, target) to score.

Building the plan validates everything a run needs (registry entries, every data file of every
selected pair, label spaces, model directories, the results dir) before any training starts,
so a broken target file fails in seconds rather than after a fine-tune.

Identity (DomainBed style): a fine-tune is the hash of (model sha256, source data fingerprint,
protocol hash, seed, runner version); a run is that plus (model name, pair, target, target
fingerprint), so two aliases of the same weights share one fine-tune but keep their own rows.
A run whose file exists in the results dir is done and is skipped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

from shiftbench import RUNNER_VERSION
from shiftbench.catalog import Catalog
from shiftbench.config import RunSettings
from shiftbench.data import DomainData, load_domain, pair_label_space
from shiftbench.models import ResolvedModel, check_head_labels, resolve_model
from shiftbench.overlap import Overlap, count_overlap, without_overlap
from shiftbench.protocol import Protocol
from shiftbench.results import is_done
from shiftbench.specs import PairSpec


def short_hash(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


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

    @property
    def pending(self) -> tuple[ScoredTarget, ...]:
        return tuple(t for t in self.targets if not t.done)


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
        for job in self.jobs:
            verb = "evaluate" if s.eval_only else "prompt (icl)" if s.protocol.remedy == "icl" else "fine-tune"
            state = "pending" if job.pending else "done"
            lines.append(
                f"[{state}] {verb} {job.model.name} on {job.source.spec.name} "
                f"(train {len(job.source.role('train')) if 'train' in job.source.splits else '-'}) "
                f"seed {job.seed}  id={job.finetune_id}"
            )
            for t in job.targets:
                mark = "done" if t.done else "todo"
                seen = f", {t.overlap.normalised}/{t.overlap.n_test} target texts seen in source train" if t.overlap else ""
                lines.append(
                    f"    [{mark}] {t.pair.name}: score {job.source.spec.name} (ID) and {t.target.spec.name} (OOD)"
                    f"{seen}{' (removed: --dedup)' if s.dedup and t.overlap else ''}  run={t.run_id}"
                )
        n_runs = sum(len(j.targets) for j in self.jobs)
        n_todo = sum(len(j.pending) for j in self.jobs)
        lines.append(f"{len(self.pending_jobs)} of {len(self.jobs)} fine-tunes and {n_todo} of {n_runs} runs to do")
        return "\n".join(lines)


def refresh(job: FineTuneJob, results_dir) -> FineTuneJob:
    """The same job with each target's done flag re-read from the results dir."""
    targets = tuple(dataclasses.replace(t, done=is_done(results_dir, t.run_id)) for t in job.targets)
    return dataclasses.replace(job, targets=targets)


def build_plan(settings: RunSettings, catalog: Catalog) -> Plan:
    pairs = [catalog.pairs.get(name) for name in settings.pairs]
    models = [resolve_model(name, catalog, settings.load) for name in settings.models]
    if settings.protocol.remedy == "icl":  # causal LMs and text classification only, checked before any work
        from shiftbench.icl import check_icl

        check_icl(settings, pairs, models)

    # Load every dataset once (fingerprints, label sets, file validation) before any training.
    source_roles = ("train", "validation", "test")  # also for --eval-only: same fingerprint, overlap known
    # Sources and targets are cached apart: a dataset's fingerprint covers the files of the roles
    # it is used in, so a target's run id never depends on which other pairs were selected.
    sources_: dict[str, DomainData] = {}
    domains: dict[str, DomainData] = {}  # as targets
    for pair in pairs:
        if pair.source not in sources_:
            sources_[pair.source] = load_domain(catalog.datasets.get(pair.source), settings.data_dir, source_roles)
        for target in pair.targets:
            if target not in domains:
                domains[target] = load_domain(catalog.datasets.get(target), settings.data_dir, ("test",))
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
                seen[(pair.source, t)] = (count_overlap(src.role("train").texts, domains[t].role("test").texts), deduped)
    # Seed-major: every model gets its first seed before any gets a second, so a long suite
    # that is stopped early still compares all models (and can fit effective robustness).
    for seed in settings.seeds:
        for model in models:
            for source_name in sources:
                source = sources_[source_name]
                kind = "eval-only" if settings.eval_only else "fine-tune"
                ft_id = short_hash(kind, model.sha256, source.fingerprint, settings.protocol.hash, seed, RUNNER_VERSION)
                targets = []
                for pair in (p for p in pairs if p.source == source_name):
                    for t in pair.targets:
                        overlap, target = seen.get((source_name, t), (None, domains[t]))
                        run_id = short_hash(ft_id, model.name, pair.name, t, target.fingerprint)
                        done = is_done(settings.results_dir, run_id)
                        targets.append(ScoredTarget(pair, target, run_id, done, overlap))
                space = spaces[next(p.name for p in pairs if p.source == source_name)]
                if settings.eval_only:
                    check_head_labels(model, space)
                jobs.append(FineTuneJob(model, source, seed, settings.protocol, space, ft_id, tuple(targets)))
    return Plan(settings, tuple(jobs))
