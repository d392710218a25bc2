"""Load the registry YAML files (built-in first, then the user's) into typed registries.

File layout (all sections optional)::

    datasets: {name: {hub_id, text_column, label_column (absent: unlabelled, targets only), splits, ...}}
    pairs:    {name: {task, source, targets}}
    suites:   {name: {pairs: [...], models: [...], seeds: [...], protocol: ...}}
    models:   {name: {package | path | hub_id | base, ...}}

A dataset entry may say ``base: other`` to inherit every field it does not set. Names must
be unique across all files; cross references (a pair's datasets, a suite's pairs) are checked
once everything is loaded, so a user file may refer to built-in entries and vice versa.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from shiftbench.core.errors import ShiftbenchError, did_you_mean
from shiftbench.core.guards import preview
from shiftbench.core.yamlio import load_yaml
from shiftbench.registry.base import Registry
from shiftbench.registry.records import from_mapping
from shiftbench.registry.specs import DatasetSpec, ModelSpec, PairSpec, SuiteSpec

SECTIONS = ("datasets", "pairs", "suites", "models")
REGISTRY_ENV = "SHIFTBENCH_REGISTRY"


def builtin_registry_path() -> Path:
    return Path(str(resources.files("shiftbench") / "builtin" / "registry.yaml"))


@dataclass(frozen=True)
class Catalog:
    datasets: Registry[DatasetSpec]
    pairs: Registry[PairSpec]
    suites: Registry[SuiteSpec]
    models: Registry[ModelSpec]
    files: tuple[Path, ...]

    def pair_datasets(self, pair: PairSpec) -> tuple[DatasetSpec, list[DatasetSpec]]:
        return self.datasets.get(pair.source), [self.datasets.get(t) for t in pair.targets]


def registry_files_from_env() -> list[Path]:
    value = os.environ.get(REGISTRY_ENV, "")
    return [Path(p) for p in value.split(os.pathsep) if p.strip()]


def _read_sections(path: Path) -> dict[str, dict[str, Any]]:
    doc = load_yaml(path, "registry")
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ShiftbenchError(f"{path}: a registry file must be a mapping with sections {', '.join(SECTIONS)}")
    for section, entries in doc.items():
        if section not in SECTIONS:
            raise ShiftbenchError(f"{path}: unknown section {preview(section)}{did_you_mean(str(section), SECTIONS)}")
        if entries is not None and not isinstance(entries, dict):
            raise ShiftbenchError(
                f"{path}: section {preview(section)} must map names to entries, got {preview(entries)}"
            )
        for name in entries or {}:
            if not isinstance(name, str) or not name.strip():
                raise ShiftbenchError(
                    f"{path}: section {preview(section)}: entry names must be strings, got {preview(name)}"
                )
    return {s: dict(doc.get(s) or {}) for s in SECTIONS}


def _resolve_bases(raw: dict[str, tuple[Any, Path]]) -> dict[str, dict[str, Any]]:
    """Merge each dataset entry over its ``base`` chain (child fields win)."""
    resolved: dict[str, dict[str, Any]] = {}

    def resolve(name: str, chain: tuple[str, ...]) -> dict[str, Any]:
        if name in resolved:
            return resolved[name]
        entry, path = raw[name]
        if not isinstance(entry, dict):
            raise ShiftbenchError(
                f"{path}: dataset {preview(name)}: expected a mapping of fields, got {preview(entry)}"
            )
        base = entry.get("base")
        merged = dict(entry)
        if base is not None:
            if not isinstance(base, str):
                raise ShiftbenchError(
                    f"{path}: dataset {preview(name)}: field 'base': expected a dataset name, got {preview(base)}"
                )
            if base not in raw:
                raise ShiftbenchError(
                    f"{path}: dataset {preview(name)}: field 'base': unknown dataset {preview(base)}{did_you_mean(str(base), raw)}"
                )
            if base in chain:
                raise ShiftbenchError(
                    f"{path}: dataset {preview(name)}: field 'base': cycle {' -> '.join(chain + (base,))}"
                )
            merged = {**{k: v for k, v in resolve(base, chain + (base,)).items() if k != "base"}, **entry}
        resolved[name] = merged
        return merged

    for name in raw:
        resolve(name, (name,))
    return resolved


def load_catalog(extra_files: Sequence[Path | str] = (), include_env: bool = True) -> Catalog:
    """Built-in registry, then ``$SHIFTBENCH_REGISTRY`` files, then ``extra_files``."""
    files = [builtin_registry_path()]
    if include_env:
        files += registry_files_from_env()
    files += [Path(f) for f in extra_files]

    raw: dict[str, dict[str, tuple[Any, Path]]] = {s: {} for s in SECTIONS}
    for path in files:
        for section, entries in _read_sections(path).items():
            for name, entry in entries.items():
                if name in raw[section]:
                    first = raw[section][name][1]
                    raise ShiftbenchError(
                        f"duplicate {section[:-1]} {preview(name)}: defined in {first} and again in {path}"
                    )
                raw[section][name] = (entry, path)

    datasets: Registry[DatasetSpec] = Registry("dataset")
    _check_dataset_fields(raw["datasets"])
    merged = _resolve_bases(raw["datasets"])
    for name, (_, path) in raw["datasets"].items():
        datasets.add(
            name, from_mapping(DatasetSpec, merged[name], f"{path}: dataset {preview(name)}", name=name), str(path)
        )
    pairs: Registry[PairSpec] = Registry("pair")
    for name, (entry, path) in raw["pairs"].items():
        pairs.add(name, from_mapping(PairSpec, entry, f"{path}: pair {preview(name)}", name=name), str(path))
    suites: Registry[SuiteSpec] = Registry("suite")
    for name, (entry, path) in raw["suites"].items():
        suites.add(name, from_mapping(SuiteSpec, entry, f"{path}: suite {preview(name)}", name=name), str(path))
    models: Registry[ModelSpec] = Registry("model")
    for name, (entry, path) in raw["models"].items():
        spec = from_mapping(ModelSpec, entry, f"{path}: model {preview(name)}", name=name)
        if spec.path is not None and not Path(spec.path).expanduser().is_absolute():
            # A relative model path is relative to the registry file that names it.
            spec = dataclasses.replace(spec, path=str(Path(path).parent / spec.path))
        models.add(name, spec, str(path))

    catalog = Catalog(datasets, pairs, suites, models, tuple(files))
    _check_references(catalog)
    return catalog


def _check_dataset_fields(raw: dict[str, tuple[Any, Path]]) -> None:
    """Unknown keys are reported against the entry that has them, before ``base`` merging
    would attribute a base's typo to every dataset inheriting from it."""
    known = [f.name for f in dataclasses.fields(DatasetSpec) if f.init and f.name != "name"]
    for name, (entry, path) in raw.items():
        for key in entry if isinstance(entry, dict) else ():
            if key not in known:
                raise ShiftbenchError(
                    f"{path}: dataset {preview(name)}: unknown field {preview(key)}{did_you_mean(str(key), known)}"
                )


def _protocol_problem(name: str) -> str | None:
    """Why a suite's ``protocol`` cannot be loaded, or None; files are only checked at run time."""
    from shiftbench.registry.protocol import builtin_protocols

    if name.endswith((".yaml", ".yml")) or name in builtin_protocols():
        return None
    try:
        if Path(name).exists():
            return None
    except (OSError, ValueError):
        pass
    return f"unknown protocol {preview(name)}{did_you_mean(name, builtin_protocols())}"


def _check_references(catalog: Catalog) -> None:
    ds = catalog.datasets
    for name, pair in catalog.pairs.items():
        where = f"{catalog.pairs.origin(name)}: pair {preview(name)}"
        for field_name, ref in [("source", pair.source)] + [("targets", t) for t in pair.targets]:
            if ref not in ds:
                raise ShiftbenchError(
                    f"{where}: field {preview(field_name)}: unknown dataset {preview(ref)}{did_you_mean(ref, ds)}"
                )
            if ds.get(ref).task != pair.task:
                raise ShiftbenchError(
                    f"{where}: field {preview(field_name)}: dataset {preview(ref)} is {ds.get(ref).task}, the pair is {pair.task}"
                )
        if not ds.get(pair.source).labelled:
            raise ShiftbenchError(
                f"{ds.origin(pair.source)}: dataset {preview(pair.source)}: field 'label_column' is missing, so the dataset is "
                f"unlabelled and can only be a target, but pair {preview(name)} ({catalog.pairs.origin(name)}) uses it as its source"
            )
        if "train" not in ds.get(pair.source).splits:
            raise ShiftbenchError(f"{where}: field 'source': dataset {preview(pair.source)} has no 'train' split role")
    for name, suite in catalog.suites.items():
        for ref in suite.pairs:
            if ref not in catalog.pairs:
                raise ShiftbenchError(
                    f"{catalog.suites.origin(name)}: suite {preview(name)}: field 'pairs': unknown pair {preview(ref)}"
                    f"{did_you_mean(ref, catalog.pairs)}"
                )
        problem = _protocol_problem(suite.protocol) if suite.protocol is not None else None
        if problem is not None:
            raise ShiftbenchError(f"{catalog.suites.origin(name)}: suite {preview(name)}: field 'protocol': {problem}")
    for name, model in catalog.models.items():
        if model.base is not None and model.base not in catalog.models:
            raise ShiftbenchError(
                f"{catalog.models.origin(name)}: model {preview(name)}: field 'base': unknown model {preview(model.base)}"
                f"{did_you_mean(model.base, catalog.models)}"
            )
