"""The fixed, versioned fine-tuning protocol: a frozen record whose canonical hash is stored in
every result row, so numbers from different recipes are never pooled.

Built-ins live in ``shiftbench/builtin/protocols/<name>.yaml``; a user protocol is any YAML
file with the same fields, optionally ``base: standard`` to change only a few.

>>> p = load_protocol("quick")
>>> (p.epochs, p.learning_rates, p.max_length)
(1, (0.0001,), 64)
>>> p.hash == load_protocol("quick").hash != load_protocol("standard").hash
True
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from shiftbench.core.errors import ShiftbenchError, did_you_mean
from shiftbench.core.guards import preview
from shiftbench.core.yamlio import load_yaml
from shiftbench.registry.records import from_mapping

DEFAULT_PROTOCOL = "standard-v2"  # what a run uses when neither it nor its suite names one (issue #16: standard under-trained the board)
OPTIMIZERS = ("adamw",)
SCHEDULES = ("linear", "constant")
PRECISIONS = ("fp32", "bf16")
SELECTION_METRICS = ("macro_f1", "accuracy")
# Fields added after results were recorded under the protocols that have them, whose default
# computes what the protocols did before: hashed only when set to something other than their
# default, so those results keep their hash. "remedy" itself is one: `standard` and `quick` were
# recorded before there were remedies.
_HASHED_UNLESS_DEFAULT = ("remedy", "icl_calibrate", "patience", "grid_patience", "lr_start")
# Fields that describe a protocol but do not change what it computes: left out of the hash.
_NOT_HASHED = ("name", "description", "base")


def _remedy(remedy: str, default: Any, check: tuple[Callable[[Any], bool], str] | None = None) -> Any:
    """A protocol field that configures ``remedy`` (with ``check``: a test its value must pass, and why,
    when that remedy is chosen)."""
    return dataclasses.field(default=default, metadata={"remedy": remedy, **({"check": check} if check else {})})


@dataclass(frozen=True)
class Protocol:
    name: str
    learning_rates: tuple[float, ...]  # grid; the best (lr, epoch) on source validation is kept
    epochs: int
    batch_size: int  # training examples per optimizer step
    max_length: int  # tokens; longer inputs are truncated
    optimizer: str = "adamw"
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06  # share of all optimizer steps spent warming the lr up linearly
    schedule: str = "linear"  # linear decay to 0 after warmup, or constant
    max_grad_norm: float = 1.0
    eval_batch_size: int = 128
    selection_metric: str = "macro_f1"  # measured on the source validation split only
    precision: str = "fp32"
    max_steps: int | None = None  # cap on optimizer steps per learning rate (None: full epochs)
    # Early stopping on source validation (standard-v2). patience: stop a learning rate after this
    # many epochs without a better score than its best so far. grid_patience: the grid is trained
    # in ascending order and stops after this many learning rates in a row whose best does not beat
    # the best so far (the score is taken to be unimodal in the learning rate). None: train every
    # epoch of every learning rate. Either way the linear schedule spans all `epochs`.
    patience: int | None = None
    grid_patience: int | None = None
    # Bracketing search (standard-v2): train this rate of the grid first, search upwards, and,
    # when no larger rate beat it, downwards (selection.next_learning_rate). None: from the
    # smallest rate upwards.
    lr_start: float | None = None
    # none | augment (social-media-style source text) | adversarial (FGM on embeddings) |
    # lora (low-rank adapters, peft) | distill (soft targets from a fine-tuned teacher) |
    # icl (few-shot prompting of a causal LM, no weight update)
    remedy: str = "none"
    # A remedy's own fields are declared here once, each with the name of the remedy it configures
    # (field metadata "remedy"): REMEDY_FIELDS and each remedy's `fields` are read from it. They are
    # hashed only when that remedy is chosen, so adding a remedy changes no other protocol's hash.
    # "check" (optional): a test the value must pass when that remedy is chosen, and why.
    augment_strength: float = _remedy("augment", 0.3)  # per-operation probability (see shiftbench.remedies.augment)
    adversarial_epsilon: float = _remedy("adversarial", 1.0)  # L2 norm of the embedding perturbation
    lora_r: int = _remedy("lora", 8)  # rank of the adapter matrices
    lora_alpha: int = _remedy("lora", 16)  # scaling numerator (the update is scaled by alpha / r)
    lora_dropout: float = _remedy("lora", 0.1)  # dropout on the adapter input
    lora_targets: tuple[str, ...] | None = _remedy(
        "lora", None
    )  # module names; None = peft's default for the architecture
    distill_teacher: str | None = _remedy(  # model alias of the teacher (fine-tuned on the same source and seed)
        "distill", None, check=(bool, "the distill remedy needs a teacher model alias")
    )
    distill_teacher_protocol: str = _remedy("distill", "standard")  # protocol the teacher is fine-tuned under
    distill_temperature: float = _remedy("distill", 2.0)  # softmax temperature of the soft targets
    distill_alpha: float = _remedy("distill", 0.5)  # weight of the hard-label loss (1 - alpha on the soft one)
    icl_shots: int = _remedy("icl", 8)  # labelled source-train examples in the prompt
    icl_template: str = _remedy(  # one demonstration; the query ends before {label}
        "icl",
        "Text: {text}\nLabel: {label}\n\n",
        check=(lambda t: 0 <= t.find("{text}") < t.find("{label}"), "must contain {text} and then {label}"),
    )
    icl_instruction: str = _remedy("icl", "")  # text put before the demonstrations; "{labels}" becomes the label names
    icl_calibrate: bool = _remedy("icl", False)  # contextual calibration (Zhao et al. 2021) by content-free queries
    description: str = ""
    base: str | None = None

    def __post_init__(self) -> None:
        def bad(field: str, why: str) -> ShiftbenchError:
            return ShiftbenchError(f"field {preview(field)}: {why}, got {preview(getattr(self, field))}")

        if not self.learning_rates or any(lr <= 0 or lr >= 1 for lr in self.learning_rates):
            raise bad("learning_rates", "needs one or more learning rates in (0, 1)")
        for name in ("epochs", "batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise bad(name, "must be >= 1")
        if not 8 <= self.max_length <= 8192:
            raise bad("max_length", "must be between 8 and 8192")
        if not 0 <= self.weight_decay < 1:
            raise bad("weight_decay", "must be in [0, 1)")
        if not 0 <= self.warmup_ratio < 1:
            raise bad("warmup_ratio", "must be in [0, 1)")
        if self.max_grad_norm <= 0:
            raise bad("max_grad_norm", "must be > 0")
        if self.max_steps is not None and self.max_steps < 1:
            raise bad("max_steps", "must be >= 1 or null")
        for name in ("patience", "grid_patience"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise bad(name, "must be >= 1 or null")
        if self.grid_patience is not None and list(self.learning_rates) != sorted(set(self.learning_rates)):
            raise bad("learning_rates", "must be strictly increasing with grid_patience (the grid is searched upwards)")
        if self.lr_start is not None and (self.grid_patience is None or self.lr_start not in self.learning_rates):
            raise bad("lr_start", "must be one of learning_rates, with grid_patience set")
        if not 0 < self.augment_strength <= 1:
            raise bad("augment_strength", "must be in (0, 1]")
        if self.adversarial_epsilon <= 0:
            raise bad("adversarial_epsilon", "must be > 0")
        if self.lora_r < 1 or self.lora_alpha < 1:
            raise bad("lora_r" if self.lora_r < 1 else "lora_alpha", "must be >= 1")
        if not 0 <= self.lora_dropout < 1:
            raise bad("lora_dropout", "must be in [0, 1)")
        if self.distill_temperature <= 0:
            raise bad("distill_temperature", "must be > 0")
        if not 0 <= self.distill_alpha <= 1:
            raise bad("distill_alpha", "must be in [0, 1]")
        if self.icl_shots < 0:
            raise bad("icl_shots", "must be >= 0")
        for name, allowed in (
            ("optimizer", OPTIMIZERS),
            ("schedule", SCHEDULES),
            ("precision", PRECISIONS),
            ("selection_metric", SELECTION_METRICS),
            ("remedy", remedy_names()),
        ):
            value = getattr(self, name)
            if value not in allowed:
                raise ShiftbenchError(
                    f"field {preview(name)}: unknown value {preview(value)}{did_you_mean(value, allowed)}"
                )
        for f in _REMEDY_FIELD_SPECS.get(self.remedy, ()):  # the chosen remedy's own field checks
            if "check" in f.metadata and not f.metadata["check"][0](getattr(self, f.name)):
                raise bad(f.name, f.metadata["check"][1])

    def canonical(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        skip = set(_NOT_HASHED) | (set(_ALL_REMEDY_FIELDS) - set(REMEDY_FIELDS.get(self.remedy, ())))
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        skip |= {k for k in _HASHED_UNLESS_DEFAULT if d[k] == defaults[k]}
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in sorted(d.items()) if k not in skip}

    @property
    def hash(self) -> str:
        blob = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def with_overrides(self, **changes: Any) -> Protocol:
        return dataclasses.replace(self, **changes) if changes else self


# Each remedy and the protocol fields that configure it, read from the field declarations above
# ("none": no fields). The remedy objects (shiftbench.remedies) read their fields from here.
_REMEDY_FIELD_SPECS: dict[str, tuple[dataclasses.Field, ...]] = {}
for _f in dataclasses.fields(Protocol):
    if "remedy" in _f.metadata:
        _REMEDY_FIELD_SPECS[_f.metadata["remedy"]] = (*_REMEDY_FIELD_SPECS.get(_f.metadata["remedy"], ()), _f)
REMEDY_FIELDS: dict[str, tuple[str, ...]] = {
    "none": (),
    **{r: tuple(f.name for f in fs) for r, fs in _REMEDY_FIELD_SPECS.items()},
}
_ALL_REMEDY_FIELDS = tuple(f for fields in REMEDY_FIELDS.values() for f in fields)
# Remedies without fields of their own that were registered by name (shiftbench.remedies.base.register_remedy).
_DECLARED_REMEDIES: list[str] = []


def declare_remedy(name: str) -> None:
    """Make ``name`` a valid value of the ``remedy`` field (called when a remedy is registered)."""
    if name not in _DECLARED_REMEDIES:
        _DECLARED_REMEDIES.append(name)


def remedy_names() -> tuple[str, ...]:
    """The values the ``remedy`` field accepts: "none", every remedy with declared fields, and every
    registered remedy."""
    return tuple(dict.fromkeys((*REMEDY_FIELDS, *_DECLARED_REMEDIES)))


def builtin_protocol_dir() -> Path:
    return Path(str(resources.files("shiftbench") / "builtin" / "protocols"))


def builtin_protocols() -> list[str]:
    return sorted(p.stem for p in builtin_protocol_dir().glob("*.yaml"))


def _locate(ref: str, referrer: Path | None) -> tuple[Path, str, str]:
    """(file, default name, identity) of a protocol given on the command line (``referrer`` None:
    a built-in name or any existing file) or as ``base:`` of the file ``referrer`` (a built-in
    name, or a .yaml/.yml file relative to the referring file)."""
    candidate = Path(ref)
    if referrer is None:
        try:
            is_file = candidate.suffix in (".yaml", ".yml") or candidate.exists()
        except OSError:  # e.g. a name too long for the file system: not a file, so a name
            is_file = False
    else:
        is_file = ref.endswith((".yaml", ".yml"))
        candidate = referrer.parent / candidate
    if is_file:
        return candidate, candidate.stem, os.path.abspath(candidate)
    if ref not in builtin_protocols():
        where = f"{referrer}: field 'base': " if referrer is not None else ""
        raise ShiftbenchError(f"{where}unknown protocol {preview(ref)}{did_you_mean(ref, builtin_protocols())}")
    return builtin_protocol_dir() / f"{ref}.yaml", ref, ref


def _raw(path: Path, default_name: str, ident: str, chain: tuple[str, ...]) -> tuple[dict[str, Any], str]:
    """Raw field mapping of one protocol file with ``base`` resolved, and the protocol's name."""
    doc = load_yaml(path, "protocol")
    if not isinstance(doc, dict):
        raise ShiftbenchError(f"{path}: a protocol file must be a mapping of fields, got {preview(doc)}")
    doc = dict(doc)
    name = doc.pop("name", default_name)
    if not isinstance(name, str) or not name.strip():
        raise ShiftbenchError(f"{path}: field 'name': expected a non-empty string, got {preview(name)}")
    base = doc.get("base")
    if base is not None:
        if not isinstance(base, str) or not base.strip():
            raise ShiftbenchError(f"{path}: field 'base': expected a protocol name or file, got {preview(base)}")
        base_path, base_name, base_ident = _locate(base, path)
        try:
            missing = not base_path.is_file()
        except (OSError, ValueError):
            missing = True
        if missing:
            raise ShiftbenchError(f"{path}: field 'base': protocol file not found: {base_path}")
        if base_ident in chain + (ident,):
            raise ShiftbenchError(f"{path}: field 'base': cycle {' -> '.join(chain + (ident, base_ident))}")
        parent, _ = _raw(base_path, base_name, base_ident, chain + (ident,))
        doc = {**{k: v for k, v in parent.items() if k != "base"}, **doc}
    return doc, name


def load_protocol(name_or_path: str) -> Protocol:
    """A built-in protocol by name, or a user protocol from a YAML file."""
    path, default_name, ident = _locate(str(name_or_path), None)
    doc, name = _raw(path, default_name, ident, ())
    return from_mapping(Protocol, doc, f"{path}: protocol {preview(name)}", name=name)


def protocol_root(name: str) -> str | None:
    """The built-in protocol at the root of built-in ``name``'s ``base:`` chain (``name`` itself
    when it has no ``base``), e.g. ``icl-calibrated`` -> ``icl`` -> ``standard``.

    None, never an error, when ``name`` is not a built-in protocol, or its chain leaves the
    built-ins (a file ``base``), loops, or cannot be read: it classifies protocol names recorded in
    run files, where a user protocol file is stored under its own name and is not a built-in.
    """
    known = set(builtin_protocols())
    try:
        while name in known:
            base = load_protocol(name).base  # the loader resolves the whole chain: a loop or bad file raises
            if base is None:
                return name
            name = base
    except ShiftbenchError:
        return None
    return None
