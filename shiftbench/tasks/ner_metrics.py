"""Entity-level NER metrics over BIO (IOB2) tags, in plain numpy, with seqeval semantics.

The numbers match ``seqeval`` 1.2's default mode (``mode=None``, the conlleval-compatible,
non-strict one) with ``zero_division=0``: an entity is a ``(type, start, end)`` span, a
prediction counts only on an exact span *and* type match, ``I-X`` after ``O`` or after a
different type starts a new entity, and a ratio whose denominator is zero counts as 0.
seqeval itself is not a dependency.

For a bootstrap over sentences, :func:`sentence_counts` gives per-sentence ``(tp, fp, fn)``
per type; resample its first axis, sum, and pass the sums to :func:`micro_f1_from_counts`:

>>> y_true = [["B-PER", "I-PER", "O"], ["B-LOC", "O"]]
>>> y_pred = [["B-PER", "I-PER", "O"], ["B-ORG", "O"]]
>>> c = sentence_counts(y_true, y_pred, ["LOC", "ORG", "PER"])
>>> c.shape
(2, 3, 3)
>>> idx = np.array([[0, 0], [0, 1]])  # two bootstrap resamples of the 2 sentences
>>> micro_f1_from_counts(c[idx].sum(axis=1)).round(3).tolist()
[1.0, 0.5]
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

NER_PRIMARY_METRIC = "entity_micro_f1"

Span = tuple[str, int, int]


def parse_tag(tag: object, pos: int) -> tuple[str, str]:
    """Split one tag into ``(prefix, type)``; ``("O", "")`` for outside, ValueError if malformed."""
    if tag == "O":
        return "O", ""
    if not isinstance(tag, str):
        raise ValueError(f"tag at position {pos} is {tag!r}, not a string")  # noqa: TRY004 (one error type for bad tags)
    prefix, sep, etype = tag.partition("-")
    if prefix not in ("B", "I") or not sep or not etype:
        raise ValueError(f"malformed BIO tag {tag!r} at position {pos}: expected 'O', 'B-<TYPE>' or 'I-<TYPE>'")
    return prefix, etype


def extract_entities(tags: Sequence[str]) -> list[Span]:
    """Entity spans ``(type, start, end_exclusive)`` of one BIO tag sequence, in order.

    ``B-X`` always starts an entity; ``I-X`` continues the open entity of type X, or starts a
    new one after ``O`` or after a different type (conlleval / seqeval default); ``O`` ends one.

    >>> extract_entities(["B-PER", "I-PER", "O", "I-LOC", "I-ORG", "B-ORG", "I-ORG"])
    [('PER', 0, 2), ('LOC', 3, 4), ('ORG', 4, 5), ('ORG', 5, 7)]
    >>> extract_entities(["O", "X-PER"])
    Traceback (most recent call last):
    ...
    ValueError: malformed BIO tag 'X-PER' at position 1: expected 'O', 'B-<TYPE>' or 'I-<TYPE>'
    """
    if isinstance(tags, str):
        raise ValueError(f"expected a sequence of tags, got the string {tags!r}")  # noqa: TRY004
    spans: list[Span] = []
    cur: str | None = None
    start = 0
    for i, tag in enumerate(tags):
        prefix, etype = parse_tag(tag, i)
        if cur is not None and (prefix != "I" or etype != cur):
            spans.append((cur, start, i))
            cur = None
        if prefix == "B" or (prefix == "I" and cur is None):
            cur, start = etype, i
    if cur is not None:
        spans.append((cur, start, len(tags)))
    return spans


def _check_pair(true_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]]) -> None:
    """Raise ValueError unless both are equally long, non-empty lists of equally long tag lists."""
    for name, seqs in (("true_tags", true_tags), ("pred_tags", pred_tags)):
        if isinstance(seqs, str) or any(isinstance(s, str) for s in seqs):
            raise ValueError(f"{name} must be a sequence of tag sequences (one per sentence), not of strings")
    if len(true_tags) != len(pred_tags):
        raise ValueError(f"true_tags has {len(true_tags)} sentences but pred_tags has {len(pred_tags)}")
    if len(true_tags) == 0:
        raise ValueError("no sentences; need at least one")
    for i, (t, p) in enumerate(zip(true_tags, pred_tags)):
        if len(t) != len(p):
            raise ValueError(f"sentence {i}: {len(t)} true tags but {len(p)} predicted tags")


def _spans(true_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]]) -> list[tuple[set[Span], set[Span]]]:
    """Per sentence, the sets of true and predicted spans (errors name the sentence)."""
    _check_pair(true_tags, pred_tags)
    out = []
    for i, (t, p) in enumerate(zip(true_tags, pred_tags)):
        try:
            out.append((set(extract_entities(t)), set(extract_entities(p))))
        except ValueError as err:
            raise ValueError(f"sentence {i}: {err}") from None
    return out


def _count(pairs: list[tuple[set[Span], set[Span]]], types: Sequence[str]) -> np.ndarray:
    """(n_sentences, n_types, 3) int64 (tp, fp, fn) from per-sentence span sets."""
    index = {t: k for k, t in enumerate(types)}
    out = np.zeros((len(pairs), len(index), 3), dtype=np.int64)
    for i, (true, pred) in enumerate(pairs):
        for col, spans in ((0, true & pred), (1, pred - true), (2, true - pred)):
            for etype, _, _ in spans:
                if etype not in index:
                    raise ValueError(f"sentence {i}: entity type {etype!r} is not in types {list(types)}")
                out[i, index[etype], col] += 1
    return out


@dataclass(frozen=True, eq=False)
class EntityCounts:
    """Corpus-level exact-match counts; ``tp``, ``fp``, ``fn`` are int64 arrays aligned with ``types``."""

    types: tuple[str, ...]
    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray

    @property
    def counts(self) -> np.ndarray:
        """The counts as one ``(n_types, 3)`` array of ``(tp, fp, fn)`` rows."""
        return np.stack([self.tp, self.fp, self.fn], axis=-1)

    def per_type(self) -> dict[str, dict[str, int]]:
        """``{type: {"tp": .., "fp": .., "fn": ..}}`` as plain ints."""
        return {
            t: {"tp": int(a), "fp": int(b), "fn": int(c)} for t, a, b, c in zip(self.types, self.tp, self.fp, self.fn)
        }


def entity_counts(true_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]]) -> EntityCounts:
    """Per-type tp/fp/fn over all sentences; ``types`` is every type in truth or prediction, sorted.

    >>> c = entity_counts([["B-PER", "I-PER", "O"]], [["B-ORG", "I-ORG", "B-PER"]])
    >>> c.types, c.per_type()["PER"]
    (('ORG', 'PER'), {'tp': 0, 'fp': 1, 'fn': 1})
    """
    pairs = _spans(true_tags, pred_tags)
    types = tuple(sorted({s[0] for true, pred in pairs for s in true | pred}))
    total = _count(pairs, types).sum(axis=0)
    cols = [np.ascontiguousarray(total[:, k]) for k in range(3)]
    for arr in cols:
        arr.setflags(write=False)
    return EntityCounts(types, *cols)


def sentence_counts(
    true_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]], types: Sequence[str]
) -> np.ndarray:
    """``(n_sentences, len(types), 3)`` int64 array of ``(tp, fp, fn)`` per sentence and type.

    ``types`` fixes the second axis (pass ``entity_counts(...).types``); an entity of a type not
    in it raises ValueError rather than being dropped.

    >>> sentence_counts([["B-PER"], ["O"]], [["B-PER"], ["I-LOC"]], ["LOC", "PER"]).tolist()
    [[[0, 0, 0], [1, 0, 0]], [[0, 1, 0], [0, 0, 0]]]
    """
    if len(set(types)) != len(types):
        raise ValueError(f"types has duplicates: {list(types)}")
    return _count(_spans(true_tags, pred_tags), types)


def _prf(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall, F1 elementwise, with 0 wherever a denominator is 0."""
    tp, fp, fn = (np.asarray(x, dtype=np.float64) for x in (tp, fp, fn))

    def div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)

    return div(tp, tp + fp), div(tp, tp + fn), div(2 * tp, 2 * tp + fp + fn)


def _check_counts(counts: np.ndarray) -> np.ndarray:
    arr = np.asarray(counts)
    if arr.ndim < 2 or arr.shape[-1] != 3:
        raise ValueError(f"counts must have shape (..., n_types, 3), got {arr.shape}")
    return arr


def micro_f1_from_counts(counts: np.ndarray) -> np.ndarray:
    """Micro F1 from ``(..., n_types, 3)`` counts; shape ``(...)`` (0-d for a single table).

    >>> micro_f1_from_counts(np.array([[[1, 1, 0], [0, 0, 1]], [[2, 0, 0], [1, 0, 0]]])).tolist()
    [0.5, 1.0]
    """
    total = _check_counts(counts).sum(axis=-2)
    return _prf(total[..., 0], total[..., 1], total[..., 2])[2]


def per_type_f1_from_counts(counts: np.ndarray) -> np.ndarray:
    """Per-type F1 from ``(..., n_types, 3)`` counts; shape ``(..., n_types)``.

    >>> per_type_f1_from_counts(np.array([[1, 1, 0], [0, 0, 1]])).tolist()
    [0.6666666666666666, 0.0]
    """
    arr = _check_counts(counts)
    return _prf(arr[..., 0], arr[..., 1], arr[..., 2])[2]


def ner_metrics(true_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]]) -> dict[str, float]:
    """Entity micro P/R/F1, token accuracy, and ``f1_<TYPE>`` per type in truth or prediction.

    >>> m = ner_metrics([["B-PER", "I-PER", "O", "B-LOC"]], [["B-PER", "I-PER", "O", "O"]])
    >>> {k: round(v, 3) for k, v in m.items()}  # doctest: +NORMALIZE_WHITESPACE
    {'entity_micro_f1': 0.667, 'entity_micro_precision': 1.0, 'entity_micro_recall': 0.5,
     'token_accuracy': 0.75, 'f1_LOC': 0.0, 'f1_PER': 1.0}
    """
    c = entity_counts(true_tags, pred_tags)
    n_tokens = sum(len(t) for t in true_tags)
    if n_tokens == 0:
        raise ValueError("no tokens in any sentence; need at least one")
    n_correct = sum(a == b for t, p in zip(true_tags, pred_tags) for a, b in zip(t, p))
    p, r, f = _prf(c.tp.sum(), c.fp.sum(), c.fn.sum())
    out = {
        "entity_micro_f1": float(f),
        "entity_micro_precision": float(p),
        "entity_micro_recall": float(r),
        "token_accuracy": n_correct / n_tokens,
    }
    per_type = _prf(c.tp, c.fp, c.fn)[2]
    out.update({f"f1_{t}": float(v) for t, v in zip(c.types, per_type)})
    return out


def entity_types(tags: Iterable[str]) -> tuple[str, ...]:
    """The entity types BIO tags name, sorted (``O`` names none).

    >>> entity_types(["O", "B-PER", "I-PER", "I-LOC"])
    ('LOC', 'PER')
    """
    return tuple(sorted({t[2:] for t in tags if t != "O"}))


NER_SUM_METRICS = ("entity_micro_f1", "entity_micro_precision", "entity_micro_recall", "macro_f1", "accuracy")


def token_classification_scores(labels, preds, lengths, tags: Sequence[str]) -> dict[str, float]:
    """The scores shiftbench records for token classification, from flat word-level tag ids.

    ``entity_micro_f1`` (the headline), entity micro precision/recall, ``macro_f1`` = the mean
    entity F1 over the label space's entity types (so every run reports the same types and a
    protocol that selects on macro_f1 works for both tasks), ``accuracy`` = word accuracy, and
    ``f1_<TYPE>`` for every entity type of the label space. Computed from the summed
    :func:`sentence_stats`, so a bootstrap over sentences scores exactly the same way.

    >>> tags = ("O", "B-LOC", "I-LOC", "B-PER", "I-PER")
    >>> s = token_classification_scores([3, 4, 0, 1], [3, 4, 0, 0], [3, 1], tags)
    >>> {k: round(v, 3) for k, v in s.items()}  # doctest: +NORMALIZE_WHITESPACE
    {'entity_micro_f1': 0.667, 'entity_micro_precision': 1.0, 'entity_micro_recall': 0.5,
     'macro_f1': 0.5, 'accuracy': 0.75, 'f1_LOC': 0.0, 'f1_PER': 1.0}
    """
    labels, preds = np.asarray(labels, dtype=np.int64), np.asarray(preds, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    if labels.shape != preds.shape or int(lengths.sum()) != len(labels):
        raise ValueError(
            f"{len(labels)} labels, {len(preds)} preds and {int(lengths.sum())} words in lengths must agree"
        )
    types = entity_types(tags)
    sums = sentence_stats(labels, preds, lengths, tags).sum(axis=0)
    out = {metric: float(ner_sum_metric(metric, len(types))(sums)) for metric in NER_SUM_METRICS}
    per_type = per_type_f1_from_counts(sums[: 3 * len(types)].reshape(len(types), 3))
    out.update({f"f1_{t}": float(v) for t, v in zip(types, per_type)})
    return out


def sentence_stats(labels, preds, lengths, tags: Sequence[str]) -> np.ndarray:
    """Per-sentence sufficient statistics for a bootstrap over sentences: ``(n_sentences,
    3 * n_types + 2)`` = (tp, fp, fn) per entity type of ``tags`` (flattened), then correct and
    total words. Summed over any resample, :func:`ner_sum_metric` turns them into a score.

    >>> tags = ("O", "B-PER", "I-PER")
    >>> sentence_stats([1, 2, 0, 0], [1, 2, 0, 1], [3, 1], tags).tolist()
    [[1, 0, 0, 3, 3], [0, 1, 0, 0, 1]]
    """
    labels, preds = np.asarray(labels, dtype=np.int64), np.asarray(preds, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    types = entity_types(tags)
    if len(lengths) == 0:
        return np.zeros((0, 3 * len(types) + 2), dtype=np.int64)
    names = np.asarray(tags, dtype=object)
    cuts = np.cumsum(lengths)[:-1]
    true_tags = [list(x) for x in np.split(names[labels], cuts)]
    pred_tags = [list(x) for x in np.split(names[preds], cuts)]
    counts = sentence_counts(true_tags, pred_tags, types).reshape(len(true_tags), -1)
    correct = (
        np.add.reduceat((labels == preds).astype(np.int64), np.concatenate([[0], cuts]))
        if len(labels)
        else np.zeros(len(lengths), np.int64)
    )
    return np.concatenate([counts, correct[:, None], lengths[:, None]], axis=1)


def ner_sum_metric(metric: str, n_types: int):
    """``metric`` (one of :data:`NER_SUM_METRICS`) as a function of summed :func:`sentence_stats`
    (..., 3 * n_types + 2) -> (...); :func:`token_classification_scores` applies it to the full sums."""
    if metric not in NER_SUM_METRICS:
        raise ValueError(
            f"metric {metric!r} cannot be bootstrapped for token classification; supported: {', '.join(NER_SUM_METRICS)}"
        )

    def fn(sums: np.ndarray) -> np.ndarray:
        counts = sums[..., : 3 * n_types].reshape(*sums.shape[:-1], n_types, 3)
        if metric == "accuracy":
            return np.divide(sums[..., -2], sums[..., -1], out=np.zeros(sums.shape[:-1]), where=sums[..., -1] > 0)
        if metric == "macro_f1":
            return per_type_f1_from_counts(counts).mean(axis=-1) if n_types else np.zeros(sums.shape[:-1])
        total = counts.sum(axis=-2)
        p, r, f = _prf(total[..., 0], total[..., 1], total[..., 2])
        return {"entity_micro_f1": f, "entity_micro_precision": p, "entity_micro_recall": r}[metric]

    return fn
