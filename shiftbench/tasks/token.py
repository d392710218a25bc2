"""Token classification (NER): the text column holds a list of words and the label column a
list of BIO tags (a list of ClassLabel ids on the Hub). ``label_map`` maps entity *types*
(``person: PER``; ``null`` turns that type's words into ``O``), and the label space is the BIO
tag list of the mapped types (``O``, ``B-LOC``, ``I-LOC``, ...).

Words are tokenized with ``is_split_into_words`` and each word's tag goes on its first
sub-token; later sub-tokens and special tokens are ignored by the loss (-100), and predictions
are read at the first sub-token of every word (a word cut off by truncation is predicted ``O``,
the first tag of every BIO label space).

Unit = sentence; statistics D = 3T + 2 + 2 (3B + 1) for T entity types: ``(tp, fp, fn)`` per
entity type (seqeval semantics, :func:`shiftbench.tasks.ner_metrics.sentence_stats`), correct
and total words, the calibration block over *every* word (the recorded ``ece``), and the
calibration block over *entity words* -- words whose gold or predicted tag is not ``O``.
Metrics: ``entity_micro_f1`` (headline), ``entity_micro_precision``, ``entity_micro_recall``,
``macro_f1`` (mean *entity* F1 over the label space's types, as the runner records it -- not a
per-word BIO-tag macro-F1), ``accuracy`` (per word), ``f1_<TYPE>``, ``ece`` (every word, as
recorded; 86-95 % of the words are ``O``, so it mostly measures the ``O`` words),
``ece_debiased`` and ``brier`` (entity words only).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from shiftbench.core.errors import ShiftbenchError, one_line
from shiftbench.core.guards import preview
from shiftbench.tasks import reading
from shiftbench.tasks.base import IGNORE, Encoding, TaskKind, register_task
from shiftbench.tasks.ner_metrics import (
    entity_types,
    ner_sum_metric,
    parse_tag,
    per_type_f1_from_counts,
    sentence_stats,
    token_classification_scores,
)
from shiftbench.tasks.stats import (
    CAL_WIDTH,
    LOWER_IS_BETTER,
    MetricDoc,
    MetricExample,
    SumMetric,
    cal_columns,
    calibration_docs,
    calibration_metric,
    calibration_stats,
)

_ENTITIES = (
    "Entities are ``(type, start, end)`` spans of the BIO tags with seqeval's default (conlleval) semantics: "
    "``I-X`` after ``O`` or after another type starts a new entity, and a predicted entity counts only when "
    "its type and both boundaries match a gold one. Words are predicted at their first sub-token."
)


def bio_tags(types: Iterable[str]) -> tuple[str, ...]:
    """The BIO label space of a set of entity types: ``O`` first, then B-/I- per sorted type.

    >>> bio_tags({"PER", "LOC"})
    ('O', 'B-LOC', 'I-LOC', 'B-PER', 'I-PER')
    """
    return ("O",) + tuple(f"{p}-{t}" for t in sorted(types) for p in ("B", "I"))


def _raw_tags(ds: Any, spec: Any, where: str) -> list[Any]:
    import datasets

    reading.check_column(ds, spec.label_column, "label", where)
    inner = getattr(ds.features[spec.label_column], "feature", None)  # List(ClassLabel) / Sequence(ClassLabel)
    if inner is None:
        raise ShiftbenchError(
            f"{where}: label column {preview(spec.label_column)} must hold a list of tags per example for token classification"
        )
    raw = reading.column(ds, spec.label_column)
    if isinstance(inner, datasets.ClassLabel):
        return [
            [reading.class_name(inner, v, where, spec.label_column, i) for v in row] if row is not None else None
            for i, row in enumerate(raw)
        ]
    return [list(row) if row is not None else None for row in raw]


def _canonical_tags(raw_rows: list[Any], spec: Any, where: str) -> list[tuple[str, ...]]:
    """BIO tags with entity types passed through ``label_map`` (a ``null`` type becomes ``O``)."""
    mapping = {str(k): v for k, v in (spec.label_map or {}).items()}
    out = []
    for row_no, row in enumerate(raw_rows):
        if row is None:
            raise ShiftbenchError(f"{where}: label column {preview(spec.label_column)} row {row_no}: missing tag list")
        tags = []
        for pos, tag in enumerate(row):
            if not isinstance(tag, str):
                raise ShiftbenchError(
                    f"{where}: label column {preview(spec.label_column)} row {row_no}: tag {preview(tag)} is not a string"
                )
            try:
                prefix, etype = parse_tag(tag, pos)
            except ValueError:
                raise ShiftbenchError(
                    f"{where}: label column {preview(spec.label_column)} row {row_no}: tag {preview(tag)} is not BIO ('O', 'B-<TYPE>', 'I-<TYPE>')"
                ) from None
            mapped = mapping.get(etype, etype) if prefix != "O" else None
            tags.append("O" if mapped is None else f"{prefix}-{mapped}")
        out.append(tuple(tags))
    return out


def _words(ds: Any, spec: Any, tags: list[tuple[str, ...]], where: str) -> list[tuple[str, ...]]:
    reading.check_column(ds, spec.text_column, "text", where)
    out = []
    for i, (words, row_tags) in enumerate(zip(reading.column(ds, spec.text_column), tags)):
        # An empty-string word occurs in real data (BTC test): it has no sub-token and is predicted O.
        if not isinstance(words, list) or not words or not all(isinstance(w, str) for w in words):
            raise ShiftbenchError(
                f"{where}: text column {preview(spec.text_column)} row {i}: expected a non-empty list of words (strings)"
            )
        if len(words) != len(row_tags):
            raise ShiftbenchError(
                f"{where}: row {i}: {len(words)} words in {preview(spec.text_column)} but {len(row_tags)} tags in {preview(spec.label_column)}"
            )
        out.append(tuple(words))
    return out


@register_task("token-classification")
class TokenClassification(TaskKind):
    """A list of words per example and one BIO tag per word; a per-token head read at each
    word's first sub-token."""

    headline = "entity_micro_f1"
    head_class = "AutoModelForTokenClassification"
    peft_task_type = "TOKEN_CLS"
    word_level = True
    pooled_head = False

    # ------------------------------------------------------------------ data

    def read(self, ds: Any, spec: Any, where: str) -> tuple[list[Any], list[Any]]:
        tags = _canonical_tags(_raw_tags(ds, spec, where), spec, where)
        return _words(ds, spec, tags, where), tags

    def label_space(self, labels: Iterable[Any]) -> tuple[str, ...]:
        return bio_tags(entity_types(t for tags in labels for t in tags))

    def row_labels(self, labels: Iterable[Any]) -> Iterable[str]:
        return (t for tags in labels for t in tags)

    def stratum(self, label: Any) -> Any:
        return "|".join(entity_types(label))  # the entity types a sentence mentions

    def plain_text(self, text: Any) -> str:
        return " ".join(text)

    # ------------------------------------------------------------------ encoding and targets

    def encode(self, texts: Sequence[Any], tokenizer: Any, max_length: int) -> Encoding:
        """Sub-token ids plus, per example, where each word starts."""
        if not getattr(tokenizer, "is_fast", False):
            raise ShiftbenchError(
                f"token classification needs a fast tokenizer (word alignment); {type(tokenizer).__name__} is not one"
            )
        try:
            enc = tokenizer(
                [list(w) for w in texts], is_split_into_words=True, truncation=False, add_special_tokens=True
            )
        except (ValueError, TypeError) as exc:  # e.g. byte-level BPE without add_prefix_space=True
            raise ShiftbenchError(
                f"tokenizer {type(tokenizer).__name__} cannot tokenize pre-split words: {one_line(exc)}"
            ) from None
        keep_last = tokenizer.sep_token_id is not None
        ids, starts, n_truncated = [], [], 0
        for i, seq in enumerate(enc["input_ids"]):
            word_ids = enc.word_ids(i)
            n_truncated += len(seq) > max_length
            seq, word_ids = (
                reading.truncate(seq, max_length, keep_last),
                reading.truncate(list(word_ids), max_length, keep_last),
            )
            first: dict[int, int] = {}
            for pos, w in enumerate(word_ids):
                if w is not None and w not in first:
                    first[w] = pos
            # -1: a word cut off by truncation, or one that tokenizes to nothing; it is predicted O.
            ids.append(np.asarray(seq, dtype=np.int64))
            starts.append(np.asarray([first.get(w, -1) for w in range(len(texts[i]))], dtype=np.int64))
        return Encoding(tuple(ids), n_truncated, tuple(starts))

    def targets(self, labels: np.ndarray, encoding: Any, idx: np.ndarray, word_labels: Any = None) -> np.ndarray:
        """(B, longest) tag ids at each word's first sub-token, IGNORE elsewhere."""
        out = np.full((len(idx), max(len(encoding.input_ids[i]) for i in idx)), IGNORE, dtype=np.int64)
        for row, i in enumerate(idx):
            kept = encoding.word_starts[i] >= 0
            out[row, encoding.word_starts[i][kept]] = word_labels[i][kept]
        return out

    # ------------------------------------------------------------------ predictions

    def new_probs(self, n_rows: int, n_out: int) -> np.ndarray:
        probs = np.zeros((n_rows, n_out), dtype=np.float32)
        probs[:, 0] = 1.0  # a word without a sub-token is O (id 0) for sure
        return probs

    def place(
        self, probs: np.ndarray, batch: np.ndarray, idx: np.ndarray, encoding: Any, offsets: np.ndarray | None
    ) -> None:
        """Per word: the distribution at its first sub-token."""
        assert offsets is not None
        for row, i in enumerate(idx):
            starts = encoding.word_starts[i]
            kept = np.flatnonzero(starts >= 0)
            probs[offsets[i] + kept] = batch[row, starts[kept]]

    def n_units(self, labels: np.ndarray, lengths: np.ndarray | None) -> int:
        return len(lengths) if lengths is not None else 0  # sentences, not words

    # ------------------------------------------------------------------ scores and statistics

    def scores(self, labels, preds, lengths, label_space) -> dict[str, float]:
        return token_classification_scores(labels, preds, lengths, label_space)

    def metrics(self, label_space: Sequence[str]) -> tuple[str, ...]:
        per_type = tuple(f"f1_{t}" for t in entity_types(label_space))
        return (
            "entity_micro_f1",
            "entity_micro_precision",
            "entity_micro_recall",
            "macro_f1",
            "accuracy",
            *per_type,
            "ece",
            "ece_debiased",
            "brier",
        )

    def metric_docs(self) -> tuple[MetricDoc, ...]:
        micro = "TP, FP and FN summed over the entity types"
        return (
            MetricDoc(
                "entity_micro_f1",
                f"Entity-level micro F1 = 2 TP / (2 TP + FP + FN), {micro}; the headline. {_ENTITIES}",
                reference="seqeval 1.2 (default mode) and the CoNLL-2000 conlleval script",
            ),
            MetricDoc("entity_micro_precision", f"Entity-level micro precision TP / (TP + FP), {micro}. {_ENTITIES}"),
            MetricDoc("entity_micro_recall", f"Entity-level micro recall TP / (TP + FN), {micro}. {_ENTITIES}"),
            MetricDoc(
                "macro_f1",
                "Unweighted mean of the per-type *entity* F1 over every entity type of the label space (a type "
                "with no gold and no predicted entity counts 0); what the protocols select on. Not a per-word "
                f"macro-F1 over BIO tags. {_ENTITIES}",
            ),
            MetricDoc(
                "accuracy",
                "Share of words whose predicted tag is the gold tag, ``O`` words included (most words are ``O``, "
                "so it is high even for a model that finds few entities).",
            ),
            MetricDoc("f1_<TYPE>", f"Entity F1 of one type (``f1_PER``, ``f1_ORG``, ...). {_ENTITIES}"),
            *calibration_docs(
                "every word (as the runner records it; most are ``O``)",
                "entity words (gold or predicted tag not ``O``)",
            ),
        )

    def metric_example(self) -> MetricExample:
        return MetricExample(
            label_space=("O", "B-LOC", "I-LOC", "B-PER", "I-PER"),
            labels=[3, 4, 0, 1, 0, 0],
            preds=[3, 4, 0, 3, 0, 1],
            probs=[
                [0.1, 0.0, 0.0, 0.9, 0.0],
                [0.1, 0.0, 0.0, 0.1, 0.8],
                [0.9, 0.0, 0.0, 0.1, 0.0],
                [0.1, 0.4, 0.0, 0.5, 0.0],
                [0.8, 0.1, 0.0, 0.1, 0.0],
                [0.4, 0.6, 0.0, 0.0, 0.0],
            ],
            lengths=[3, 3],
            note=(
                "two sentences of three words, gold [B-PER I-PER O] [B-LOC O O], predicted [B-PER I-PER O] "
                "[B-PER O B-LOC]: one entity right, one of the wrong type, one spurious"
            ),
        )

    def width(self, label_space: Sequence[str]) -> int:
        return 3 * len(entity_types(label_space)) + 2 + 2 * CAL_WIDTH

    def unit_stats(self, labels, preds, probs, lengths, label_space: Sequence[str]) -> np.ndarray:
        labels, preds = np.asarray(labels, dtype=np.int64), np.asarray(preds, dtype=np.int64)
        lengths = np.asarray(lengths, dtype=np.int64)
        n = len(lengths)
        entity = sentence_stats(labels, preds, lengths, label_space).astype(np.float64)
        sentence = np.repeat(np.arange(n), lengths)
        outside = [i for i, t in enumerate(label_space) if t == "O"]
        is_entity = ~(np.isin(labels, outside) & np.isin(preds, outside))  # gold or predicted entity word
        words = calibration_stats(np.asarray(probs), labels, preds, sentence, n)
        ents = calibration_stats(np.asarray(probs), labels, preds, sentence, n, keep=is_entity)
        return np.concatenate([entity, words, ents], axis=1)

    def columns(self, metric: str, label_space: Sequence[str]) -> np.ndarray:
        self.check_metric(metric, label_space)
        base = 3 * len(entity_types(label_space)) + 2
        if metric == "ece":
            return cal_columns(metric, base)
        if metric in LOWER_IS_BETTER:
            return cal_columns(metric, base + CAL_WIDTH)
        return np.arange(base)

    def metric_fn(self, metric: str, label_space: Sequence[str]) -> SumMetric:
        self.check_metric(metric, label_space)
        types = entity_types(label_space)
        base = 3 * len(types) + 2
        if metric == "ece":  # every word, as the runner records it
            cal = calibration_metric("ece")
            return lambda sums: cal(np.asarray(sums)[..., base : base + CAL_WIDTH])
        if metric in LOWER_IS_BETTER:  # entity words
            cal = calibration_metric(metric)
            return lambda sums: cal(np.asarray(sums)[..., base + CAL_WIDTH :])
        if metric.startswith("f1_"):
            j = types.index(metric[3:])

            def type_f1(sums: np.ndarray) -> np.ndarray:
                counts = np.asarray(sums)[..., : 3 * len(types)].reshape(*np.shape(sums)[:-1], len(types), 3)
                return per_type_f1_from_counts(counts)[..., j]

            return type_f1
        inner = ner_sum_metric(metric, len(types))
        return lambda sums: inner(np.asarray(sums)[..., :base])


__all__ = ["TokenClassification", "bio_tags"]
