"""Typed, frozen records for registry entries: datasets, pairs, suites and models.

These are the documented YAML contract (see the README, "Adding a pair"). Validation that
needs only the entry itself lives in ``__post_init__``; cross-entry checks (a pair's source
exists, tasks agree) live in :mod:`shiftbench.registry.catalog`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shiftbench.core.errors import ShiftbenchError, did_you_mean
from shiftbench.core.guards import check_path_component, preview
from shiftbench.tasks import TextClassification, get_task, task_names

SPLIT_ROLES = ("train", "validation", "test")
MAX_SEED = 2**32 - 1  # numpy's global seeding (train.seed_everything) takes no more


def _check_task(task: object) -> None:
    if not isinstance(task, str) or task not in task_names():
        raise ShiftbenchError(f"field 'task': unknown task {preview(task)}{did_you_mean(str(task), task_names())}")


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset of one domain, as a registry YAML entry describes it."""

    name: str
    hub_id: str  # resolved offline as <data-dir>/<owner>__<name>/<config>/<split>.parquet
    text_column: str
    splits: dict  # role (train/validation/test) -> split name in the data
    # Absent (None): an unlabelled dataset, usable only as a pair's target (its true OOD score is
    # unknown; runs on it record label-free estimates instead). Checked in catalog._check_references.
    label_column: str | None = None
    config: str = "default"
    revision: str | None = None  # pinned Hub revision, used when loading from the Hub
    domain: str = "unspecified"
    license: str = "unknown"
    label_map: dict | None = None  # {raw label name or value: canonical name or null (drop)}
    task: str = TextClassification.name
    # The column of each example's second text (e.g. the hypothesis), for a task kind that reads
    # text pairs (text-pair-classification); the first is text_column.
    text_pair_column: str | None = None
    description: str = ""
    # Whether example texts may be quoted in generated data cards (False for e.g. FPB, NC-SA).
    redistributable: bool = False
    # Carving a missing validation/test role out of train: fixed seed, stratified by label,
    # independent of the training seed so every seed is scored on the same test examples.
    split_seed: int = 0
    carve_fraction: float = 0.1
    # Not in the data mirror and possibly absent (e.g. CoNLL-2003, not redistributable): a suite
    # skips the pairs that need it, with a warning, when its data cannot be loaded; a pair asked
    # for by name still fails.
    optional: bool = False
    base: str | None = None  # inherit fields from another dataset entry

    def __post_init__(self) -> None:
        _check_task(self.task)
        # hub_id, config and split names become <data-dir>/<owner>__<name>/<config>/<split>.parquet:
        # each must name one entry, so no value can reach a file outside the data dir.
        parts = self.hub_id.split("/")
        if len(parts) > 2:
            raise ShiftbenchError(
                f"field 'hub_id': {preview(self.hub_id)} is not a plain 'owner/name' or 'name'; it must stay inside the data dir"
            )
        for part in parts:
            check_path_component(part, "field 'hub_id'")
        check_path_component(self.config, "field 'config'")
        for role, split in self.splits.items():
            if role not in SPLIT_ROLES:
                raise ShiftbenchError(
                    f"field 'splits': unknown role {preview(role)}{did_you_mean(str(role), SPLIT_ROLES)}"
                )
            if not isinstance(split, str) or not split:
                raise ShiftbenchError(
                    f"field 'splits': split name for role {preview(role)} must be a string, got {preview(split)}"
                )
            check_path_component(split, f"field 'splits': split name for role {preview(role)}")
        if "train" not in self.splits and "test" not in self.splits:
            raise ShiftbenchError("field 'splits': needs at least a 'train' or a 'test' role")
        if len(set(self.splits.values())) != len(self.splits):
            # e.g. {train: train, test: train} would score the model on its own training data
            raise ShiftbenchError(f"field 'splits': two roles read the same split, got {preview(self.splits)}")
        if not 0 <= self.split_seed <= MAX_SEED:
            raise ShiftbenchError(
                f"field 'split_seed': must be between 0 and {MAX_SEED}, got {preview(self.split_seed)}"
            )
        if not 0.0 < self.carve_fraction < 0.5:
            raise ShiftbenchError(f"field 'carve_fraction': must be in (0, 0.5), got {preview(self.carve_fraction)}")
        if self.label_column is None and self.label_map is not None:
            raise ShiftbenchError(
                "field 'label_map': an unlabelled dataset (no 'label_column') has no labels to map; drop label_map or add label_column"
            )
        get_task(self.task).check_spec(self)  # the fields its task kind needs (label_column, text_pair_column)
        if self.label_map is not None:
            for key, value in self.label_map.items():
                if value is not None and (not isinstance(value, str) or not value):
                    raise ShiftbenchError(
                        f"field 'label_map': value for {preview(key)} must be a label name or null, got {preview(value)}"
                    )

    @property
    def labelled(self) -> bool:
        return self.label_column is not None

    @property
    def local_dirname(self) -> str:
        return self.hub_id.replace("/", "__")


@dataclass(frozen=True)
class PairSpec:
    """A source -> targets shift with one task and one label space."""

    name: str
    task: str
    source: str
    targets: tuple[str, ...]
    description: str = ""

    def __post_init__(self) -> None:
        _check_task(self.task)
        if not self.targets:
            raise ShiftbenchError("field 'targets': needs at least one target dataset")
        if self.source in self.targets:
            raise ShiftbenchError(f"field 'targets': the source {preview(self.source)} cannot also be a target")
        if len(set(self.targets)) != len(self.targets):
            raise ShiftbenchError(f"field 'targets': a target is listed twice in {list(self.targets)}")


@dataclass(frozen=True)
class SuiteSpec:
    """A named set of pairs, with optional defaults for models, seeds and protocol."""

    name: str
    pairs: tuple[str, ...]
    models: tuple[str, ...] = ()
    seeds: tuple[int, ...] = ()
    protocol: str | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if not self.pairs:
            raise ShiftbenchError("field 'pairs': a suite needs at least one pair")
        for name in ("pairs", "models", "seeds"):
            values = getattr(self, name)
            if len(set(values)) != len(values):
                raise ShiftbenchError(f"field {preview(name)}: an entry is listed twice in {list(values)}")
        if any(not 0 <= s <= MAX_SEED for s in self.seeds):
            raise ShiftbenchError(f"field 'seeds': seeds must be between 0 and {MAX_SEED}, got {list(self.seeds)}")


@dataclass(frozen=True)
class ModelSpec:
    """A model alias. Exactly one of ``package`` (a pip-installed package shipping the weights,
    located without importing it), ``path`` (a local directory), ``hub_id`` or ``base`` (another
    alias, e.g. to truncate it)."""

    name: str
    package: str | None = None
    package_path: str = ""  # directory inside the package holding config.json + weights
    path: str | None = None
    hub_id: str | None = None
    revision: str | None = None
    base: str | None = None
    gguf_file: str | None = None  # a GGUF file in the model dir (config, tokenizer and weights in one; dequantized)
    num_layers: int | None = None  # keep only the first N transformer layers
    random_init: bool = False  # same architecture, weights drawn from the config's initializer
    description: str = ""
    extras: dict = field(default_factory=dict)  # free-form notes shown by `shiftbench list`

    def __post_init__(self) -> None:
        given = [k for k in ("package", "path", "hub_id", "base") if getattr(self, k)]
        if len(given) != 1:
            raise ShiftbenchError(f"needs exactly one of 'package', 'path', 'hub_id' or 'base', got {given or 'none'}")
        if self.num_layers is not None and self.num_layers < 1:
            raise ShiftbenchError(f"field 'num_layers': must be >= 1, got {self.num_layers}")


def as_plain(value: Any) -> Any:
    """Canonical JSON-able view of a record field (used for hashing and cards)."""
    if isinstance(value, dict):
        return {str(k): as_plain(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [as_plain(v) for v in value]
    return value
