"""The task-kind interface and its registry.

A *task kind* says everything that differs between kinds of benchmark task, so the rest of the
package never asks which task it is running: how a split's labels and texts are read and which
label space they span, how the tokenizer is called, which transformers head is put on the
checkpoint, how the model's outputs become predictions, what one test *unit* contributes to a
score (per-unit sufficient statistics) and every metric as a function of summed statistics, and
the headline metric. Only this package compares task names.

Kinds register by name with :func:`register_task`; :func:`get_task` looks one up:

>>> get_task("text-classification").headline
'macro_f1'
>>> get_task("ner")
Traceback (most recent call last):
...
shiftbench.core.errors.ShiftbenchError: unknown task 'ner' (known: text-classification, text-pair-classification, token-classification)

This package imports neither torch nor transformers at import time (the head is a class *name*,
resolved by :mod:`shiftbench.modeling.models`) and depends on :mod:`shiftbench.core` only.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np

from shiftbench.core.errors import ShiftbenchError, did_you_mean
from shiftbench.core.guards import preview
from shiftbench.tasks.stats import MetricDoc, MetricExample, SumMetric

IGNORE = -100  # training target of positions the loss skips (torch's cross_entropy default ignore_index)


@dataclass(frozen=True)
class Encoding:
    """What the tokenizer made of a split: one int64 id array per example (unpadded, truncated),
    how many examples were longer than ``max_length``, and for a word-level kind the position of
    each word's first sub-token (-1: the word has none, or was cut off)."""

    input_ids: tuple[np.ndarray, ...]
    n_truncated: int
    word_starts: tuple[np.ndarray, ...] | None = None
    # Text pairs, for a tokenizer whose model takes segment ids (BERT's token_type_ids): the
    # position where each example's second text starts (its segment 1); None otherwise.
    segment_starts: np.ndarray | None = None


class TaskKind(ABC):
    """One kind of task. Instances are stateless; get them with :func:`get_task`."""

    name: ClassVar[str]  # the registry name, as in a dataset's or pair's ``task`` field
    headline: ClassVar[str]  # the metric every command uses by default
    head_class: ClassVar[str]  # the transformers Auto class of the head, e.g. "AutoModelForSequenceClassification"
    peft_task_type: ClassVar[str]  # peft's TaskType for this head (the lora remedy)
    # Labels, predictions and probabilities are per *word* and a test unit is a sentence (else
    # one label and one distribution per example, and the unit is the example).
    word_level: ClassVar[bool] = False
    # The head reads one position of the last layer (a pooled sequence head): scoring may compute
    # only that position (modeling.first_token).
    pooled_head: ClassVar[bool] = True
    allows_unlabelled: ClassVar[bool] = False  # may be a pair's unlabelled target (label-free estimates)
    reads_text_pairs: ClassVar[bool] = False  # reads ``text_pair_column`` besides ``text_column``

    @property
    def unit(self) -> str:
        """What one test unit is (what intervals resample): "sentence" or "example"."""
        return "sentence" if self.word_level else "example"

    # ------------------------------------------------------------------ registry entries

    def check_spec(self, spec: Any) -> None:
        """One-line error unless a dataset entry (``registry.specs.DatasetSpec``) has the fields
        this kind needs: e.g. a label column, unless the kind may be an unlabelled target."""
        if spec.label_column is None and not self.allows_unlabelled:
            raise ShiftbenchError(
                f"field 'label_column': required for {self.name} (only {' and '.join(unlabelled_kinds())} targets may be unlabelled)"
            )
        if getattr(spec, "text_pair_column", None) is not None and not self.reads_text_pairs:
            raise ShiftbenchError(
                f"field 'text_pair_column': {preview(spec.text_pair_column)} is only read by {' and '.join(pair_kinds())} datasets, not {self.name}"
            )

    # ------------------------------------------------------------------ data

    @abstractmethod
    def read(self, ds: Any, spec: Any, where: str) -> tuple[list[Any], list[Any]]:
        """(texts, labels) of a loaded split (``datasets.Dataset``) of dataset entry ``spec``, in
        file order. A label of None marks an example ``label_map`` drops; an unlabelled dataset
        gives a placeholder label for every example. ``where`` names the file in errors."""

    @abstractmethod
    def label_space(self, labels: Iterable[Any]) -> tuple[str, ...]:
        """The label space the labels of a dataset (all its splits) span, in id order."""

    def row_labels(self, labels: Iterable[Any]) -> Iterable[str]:
        """The label of every prediction row (example, or word), examples in order."""
        return labels

    def stratum(self, label: Any) -> Any:
        """What carving a validation/test split out of train stratifies an example by."""
        return label

    def plain_text(self, text: Any) -> str:
        """One example as a single string (overlap checks, vocabularies, cards)."""
        return text

    # ------------------------------------------------------------------ encoding and targets

    @abstractmethod
    def encode(self, texts: Sequence[Any], tokenizer: Any, max_length: int) -> Encoding:
        """Tokenize the examples of a split (how the tokenizer is called is the kind's business)."""

    def targets(self, labels: np.ndarray, encoding: Any, idx: np.ndarray, word_labels: Any = None) -> np.ndarray:
        """Training targets of batch ``idx``: (B,) label ids for an example-level kind."""
        return labels[idx]

    # ------------------------------------------------------------------ predictions

    def new_probs(self, n_rows: int, n_out: int) -> np.ndarray:
        """The (rows, classes) probability buffer scoring fills in (rows it never fills keep it)."""
        return np.zeros((n_rows, n_out), dtype=np.float32)

    def place(
        self, probs: np.ndarray, batch: np.ndarray, idx: np.ndarray, encoding: Any, offsets: np.ndarray | None
    ) -> None:
        """Write a batch's softmax outputs ``batch`` ((B, C), or (B, T, C) per position) into
        the rows of ``probs`` that examples ``idx`` predict."""
        probs[idx] = batch

    def n_units(self, labels: np.ndarray, lengths: np.ndarray | None) -> int:
        """Test units (examples, or sentences) behind prediction rows ``labels``."""
        return len(labels)

    # ------------------------------------------------------------------ scores and statistics

    @abstractmethod
    def scores(
        self, labels: np.ndarray, preds: np.ndarray, lengths: np.ndarray | None, label_space: Sequence[str] | None
    ) -> dict[str, float]:
        """The scores the runner records and selection reads (without the calibration metrics)."""

    @abstractmethod
    def metrics(self, label_space: Sequence[str]) -> tuple[str, ...]:
        """Every metric :meth:`metric_fn` defines for ``label_space``."""

    @abstractmethod
    def width(self, label_space: Sequence[str]) -> int:
        """D: statistics per unit."""

    @abstractmethod
    def unit_stats(self, labels, preds, probs, lengths, label_space: Sequence[str]) -> np.ndarray:
        """(n_units, D) float64 sufficient statistics of the prediction rows."""

    @abstractmethod
    def columns(self, metric: str, label_space: Sequence[str]) -> np.ndarray:
        """Indices of the statistics ``metric`` reads (a bootstrap need resample only these)."""

    @abstractmethod
    def metric_fn(self, metric: str, label_space: Sequence[str]) -> SumMetric:
        """``metric`` as a function of summed unit statistics (..., D) -> (...)."""

    @abstractmethod
    def metric_docs(self) -> tuple[MetricDoc, ...]:
        """What each metric of :meth:`metrics` computes, for its card (``data_cards/metrics/``):
        one :class:`MetricDoc` per metric name (``f1_<TYPE>`` for a per-type family)."""

    def metric_doc(self, metric: str) -> MetricDoc:
        """The doc of one metric as recorded (``f1_PER`` is documented as ``f1_<TYPE>``)."""
        name = "f1_<TYPE>" if metric.startswith("f1_") else metric
        for doc in self.metric_docs():
            if doc.name == name:
                return doc
        raise ShiftbenchError(f"metric {metric!r} is not documented for {self.name}")

    @abstractmethod
    def metric_example(self) -> MetricExample:
        """A tiny labelled test set the metric cards score in their runnable example."""

    def check_metric(self, metric: str, label_space: Sequence[str], where: str = "") -> None:
        """One-line error unless this kind defines ``metric`` (``where``: e.g. the pair)."""
        allowed = self.metrics(label_space)
        if metric not in allowed:
            at = f" ({where})" if where else ""
            raise ShiftbenchError(
                f"metric {metric!r} is not defined for {self.name}{at}{did_you_mean(metric, allowed)}"
            )

    def __repr__(self) -> str:
        return f"<task kind {self.name}>"


_KINDS: dict[str, TaskKind] = {}
K = TypeVar("K", bound=type[TaskKind])


def register_task(name: str) -> Callable[[K], K]:
    """Class decorator: register a :class:`TaskKind` subclass under ``name`` (its ``name``)."""

    def add(cls: K) -> K:
        if name in _KINDS:
            raise ShiftbenchError(f"duplicate task {preview(name)}: {type(_KINDS[name]).__name__} and {cls.__name__}")
        cls.name = name
        _KINDS[name] = cls()
        return cls

    return add


def get_task(name: str) -> TaskKind:
    """The task kind registered as ``name``; a one-line error with a did-you-mean otherwise."""
    try:
        return _KINDS[name]
    except (KeyError, TypeError):
        raise ShiftbenchError(f"unknown task {preview(name)}{did_you_mean(str(name), _KINDS)}") from None


def task_names() -> tuple[str, ...]:
    """Every registered task name, sorted."""
    return tuple(sorted(_KINDS))


def unlabelled_kinds() -> list[str]:
    return [n for n in task_names() if _KINDS[n].allows_unlabelled]


def pair_kinds() -> list[str]:
    return [n for n in task_names() if _KINDS[n].reads_text_pairs]
