"""One interface for every remedy, registered by name (as lm-eval's ``@register_model``).

A remedy is what a protocol's ``remedy:`` field names. Each lives in one module of this package
that defines a :class:`Remedy` subclass and registers it::

    @register_remedy("lora")
    class Lora(Remedy):
        def train_hooks(self, ctx):
            return LoraHooks(self.protocol)

and says, by overriding what it changes:

- its protocol fields: declared once in :class:`shiftbench.registry.protocol.Protocol` with the
  remedy's name in their metadata (so the protocol hash covers them only when the remedy is
  chosen); :meth:`Remedy.fields` reads them from there;
- which task kinds it supports (:attr:`Remedy.tasks`) and its plan-time checks
  (:meth:`Remedy.check`: one-line errors before any data is loaded or anything trained);
- the fine-tunes it depends on (:meth:`Remedy.dependencies`: distill's teacher), which the plan
  turns into jobs of their own and the runner executes, each under its own claim, before this one;
- an optional transform of the source data before it is encoded (:meth:`Remedy.transform_source`:
  augment);
- its training hooks (:meth:`Remedy.train_hooks`, a :class:`~shiftbench.training.hooks.TrainHooks`:
  wrap the model (lora), the loss (distill), a step after the backward pass (adversarial), the
  weights kept (lora merge));
- or a scorer that replaces fine-tuning altogether (:attr:`Remedy.fine_tunes` False and
  :meth:`Remedy.scorer`: icl).

The planner and the runner ask the remedy object; only this package compares remedy names.
Importing it does not import torch: a remedy module imports torch inside the functions that
need it, so ``--dry-run`` starts without it.

>>> get_remedy("lora").name
'lora'
>>> get_remedy("lorra")
Traceback (most recent call last):
...
shiftbench.core.errors.ShiftbenchError: unknown remedy 'lorra' (did you mean 'lora'?)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar
from typing import Protocol as Structural

from shiftbench.core.errors import ShiftbenchError
from shiftbench.core.guards import preview
from shiftbench.data.datasets import DomainData
from shiftbench.data.encode import EncodedSplit
from shiftbench.modeling.models import LoadOptions, ResolvedModel
from shiftbench.registry.base import Registry
from shiftbench.registry.protocol import REMEDY_FIELDS, Protocol, declare_remedy
from shiftbench.training.hooks import TrainHooks


class Job(Structural):
    """What a remedy reads of a fine-tune job (:class:`shiftbench.execution.plan.FineTuneJob` is one)."""

    model: ResolvedModel
    source: DomainData
    seed: int
    protocol: Protocol
    label_space: tuple[str, ...]
    finetune_id: str


@dataclass(frozen=True)
class Dependency:
    """A fine-tune a remedy needs before its own, on the same source split and seed (distill: the
    teacher). ``role`` names it to the remedy's hooks and in the plan."""

    role: str
    model: ResolvedModel
    protocol: Protocol


@dataclass(frozen=True)
class Trained:
    """A dependency, fine-tuned: its job and its :class:`shiftbench.training.train.FineTuned`."""

    job: Job
    fine_tuned: Any


@dataclass(frozen=True)
class TrainContext:
    """What a remedy's training hooks may read."""

    train: EncodedSplit  # the encoded (and transformed) source train split the loop trains on
    label_space: tuple[str, ...]
    runtime: Any  # shiftbench.modeling.device.Runtime
    load: LoadOptions = LoadOptions()
    done: Mapping[str, Trained] = field(default_factory=dict)  # the dependencies, by role


class Remedy:
    """The plain fine-tune; a remedy overrides what it changes. One instance per protocol."""

    name: ClassVar[str] = ""  # set by register_remedy
    tasks: ClassVar[tuple[str, ...] | None] = None  # names of the task kinds it supports; None: every kind
    fine_tunes: ClassVar[bool] = True  # False: `scorer` replaces fine-tuning (nothing is trained or cached)
    job_words: ClassVar[tuple[str, str]] = ("fine-tune", "fine-tunes")  # what the plan calls one job, and several

    def __init__(self, protocol: Protocol):
        self.protocol = protocol

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        """The protocol fields that configure this remedy (hashed only when it is chosen)."""
        return REMEDY_FIELDS.get(cls.name, ())

    def check(
        self, settings: Any, pairs: Sequence[Any], models: Sequence[ResolvedModel], dependencies: Sequence[Dependency]
    ) -> None:
        """Plan-time checks, before any data is loaded: one-line errors. ``pairs``: the selected
        pair specs; ``models``: the resolved models; ``dependencies``: as :meth:`dependencies` gave.
        The planner skips them for --eval-only when the remedy fine-tunes (nothing is trained)."""
        for pair in pairs:
            self.check_task(pair.name, pair.task)

    def check_task(self, pair_name: str, task: str) -> None:
        if self.tasks is not None and task not in self.tasks:
            raise ShiftbenchError(
                f"pair {preview(pair_name)}: the {self.name} remedy supports {' and '.join(self.tasks)} pairs only, not {task}"
            )

    def dependencies(self, catalog: Any, load: LoadOptions) -> tuple[Dependency, ...]:
        """The fine-tunes this one needs first, resolved at plan time (models and protocols)."""
        return ()

    def transform_source(self, source: DomainData, seed: int) -> DomainData:
        """The source data the fine-tune encodes and trains on (its train role); validation and
        test are never changed. A changed source carries another fingerprint."""
        return source

    def train_hooks(self, ctx: TrainContext) -> TrainHooks:
        """What this remedy changes in the training loop; the base class changes nothing."""
        return TrainHooks()

    def scorer(
        self, job: Job, load: LoadOptions, runtime: Any, log: Callable[[str], None]
    ) -> Callable[[DomainData], Any]:
        """For a remedy that does not fine-tune: ``score(domain)`` -> Predictions on the domain's test split."""
        raise NotImplementedError(f"the {self.name} remedy fine-tunes; it has no scorer of its own")


R = TypeVar("R", bound=type[Remedy])
REMEDIES: Registry[type[Remedy]] = Registry("remedy")


def register_remedy(name: str) -> Callable[[R], R]:
    """Class decorator: register a :class:`Remedy` subclass under ``name`` (the protocol's ``remedy:``)."""

    def register(cls: R) -> R:
        REMEDIES.add(name, cls, origin=f"{cls.__module__}.{cls.__qualname__}")
        cls.name = name
        declare_remedy(name)
        return cls

    return register


def get_remedy(name: str) -> type[Remedy]:
    """The remedy class registered under ``name`` (unknown: a one-line error with did-you-mean)."""
    return REMEDIES.get(name)


def remedy_for(protocol: Protocol) -> Remedy:
    """The remedy of ``protocol``, configured by it."""
    return get_remedy(protocol.remedy)(protocol)
