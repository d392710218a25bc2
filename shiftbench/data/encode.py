"""Tokenize a split once into variable-length id sequences (padding happens per batch), with an
on-disk cache so a split is tokenized once per tokenizer and max length, not once per run.

How the tokenizer is called (one text, pre-split words aligned at their first sub-token, a text
pair) and what a batch's training targets are is the split's task kind's (:mod:`shiftbench.tasks`)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from shiftbench.core.atomic import write_atomic
from shiftbench.core.errors import ShiftbenchError
from shiftbench.data.datasets import DomainData, SplitData
from shiftbench.tasks import IGNORE, TextClassification, get_task

__all__ = ["IGNORE", "EncodedSplit", "Encoder", "encode_split", "tokenizer_identity"]


@dataclass(frozen=True)
class EncodedSplit:
    input_ids: tuple[np.ndarray, ...]  # one int64 array per example, unpadded, truncated
    # (N,) int64 label ids in the pair's label space; for token classification the gold tag of
    # every word of every example, concatenated (word_labels split it per example)
    labels: np.ndarray
    n_truncated: int  # examples longer than max_length before truncation
    # token classification: first sub-token position per word, -1 if none
    word_starts: tuple[np.ndarray, ...] | None = None
    word_labels: tuple[np.ndarray, ...] | None = None  # token classification: gold tag id of every word
    task: str = TextClassification.name  # the task kind that encoded it (and scores its predictions)
    label_space: tuple[str, ...] | None = None  # what the label ids index (None: not given)
    segment_starts: np.ndarray | None = None  # text pairs: where each example's second text starts (Encoding)

    def __len__(self) -> int:
        return len(self.input_ids)

    @classmethod
    def of_words(
        cls, input_ids, n_truncated: int, word_starts, word_labels, task: str, label_space=None
    ) -> EncodedSplit:
        """Word-level kinds: ``labels`` is every word's tag, the examples concatenated."""
        flat = np.concatenate(word_labels) if word_labels else np.zeros(0, dtype=np.int64)
        return cls(tuple(input_ids), flat, n_truncated, tuple(word_starts), tuple(word_labels), task, label_space)

    @property
    def kind(self):
        """The task kind (:class:`shiftbench.tasks.TaskKind`)."""
        return get_task(self.task)

    def batch_labels(self, idx: np.ndarray) -> np.ndarray:
        """Training targets of a batch: (B,) ids, or for token classification (B, longest) tag
        ids at each word's first sub-token with IGNORE elsewhere."""
        return self.kind.targets(self.labels, self, idx, self.word_labels)

    @property
    def word_lengths(self) -> np.ndarray | None:
        """Words per example for a word-level kind (None otherwise)."""
        if self.word_labels is None:
            return None
        return np.fromiter((len(w) for w in self.word_labels), dtype=np.int64, count=len(self))

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(x) for x in self.input_ids), dtype=np.int64, count=len(self.input_ids))

    @property
    def n_tokens(self) -> int:
        return int(self.lengths.sum())


def encode_split(split: SplitData, tokenizer: Any, label_space: tuple[str, ...], max_length: int) -> EncodedSplit:
    kind = split.kind
    enc = kind.encode(split.texts, tokenizer, max_length)
    if kind.word_level:
        return EncodedSplit.of_words(
            enc.input_ids, enc.n_truncated, enc.word_starts, split.tag_ids(label_space), split.task, label_space
        )
    return EncodedSplit(
        enc.input_ids,
        split.label_ids(label_space),
        enc.n_truncated,
        task=split.task,
        label_space=label_space,
        segment_starts=enc.segment_starts,
    )


def tokenizer_identity(tokenizer: Any) -> str:
    """Content hash of a tokenizer: its full serialisation when it is a fast tokenizer.

    The serialisation's ``truncation`` and ``padding`` entries are left out: they are call
    state (the last ``max_length`` it was called with), not what the tokenizer is, and would give
    the same tokenizer a different identity after its first call."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        spec = json.loads(backend.to_str())
        spec.pop("truncation", None), spec.pop("padding", None)
        blob = json.dumps(spec, sort_keys=True)
    else:
        blob = repr(sorted(tokenizer.get_vocab().items()))
    extra = f"{type(tokenizer).__name__}|{tokenizer.sep_token_id}|{tokenizer.pad_token_id}"
    return hashlib.sha256((blob + extra).encode()).hexdigest()[:16]


class Encoder:
    """Tokenize (domain, role) once per (data fingerprint, tokenizer, max length, label space) and
    keep the result on disk under ``<cache-dir>/tokens/`` (Parquet, written atomically)."""

    def __init__(self, tokenizer: Any, label_space: tuple[str, ...], max_length: int, cache_dir: Path | None):
        self.tokenizer, self.label_space, self.max_length = tokenizer, label_space, max_length
        self.cache_dir = Path(cache_dir) / "tokens" if cache_dir is not None else None
        self._tok_id = tokenizer_identity(tokenizer) if cache_dir is not None else ""

    def __call__(self, domain: DomainData, role: str) -> EncodedSplit:
        split = domain.role(role)
        if self.cache_dir is None:
            return encode_split(split, self.tokenizer, self.label_space, self.max_length)
        key = hashlib.sha256(
            json.dumps([domain.fingerprint, role, self._tok_id, self.max_length, list(self.label_space)]).encode()
        ).hexdigest()[:20]
        path = self.cache_dir / f"{key}.parquet"
        try:
            return _from_table(pq.read_table(path), split.task, self.label_space)
        except (OSError, pa.ArrowInvalid, KeyError):
            pass  # not cached yet, or damaged: tokenize again
        enc = encode_split(split, self.tokenizer, self.label_space, self.max_length)
        table = _to_table(enc)
        try:
            write_atomic(path, lambda p: pq.write_table(table, p))
        except ShiftbenchError:
            pass  # a full disk makes the cache miss, never the run fail
        return enc


def _ragged(arrays: tuple[np.ndarray, ...]) -> pa.Array:
    return pa.array([x.astype(np.int32) for x in arrays], type=pa.list_(pa.int32()))


def _to_table(enc: EncodedSplit) -> pa.Table:
    if enc.kind.word_level:
        cols = {
            "input_ids": _ragged(enc.input_ids),
            "word_starts": _ragged(enc.word_starts),
            "word_labels": _ragged(enc.word_labels),
        }
    else:
        cols = {"input_ids": _ragged(enc.input_ids), "label": pa.array(enc.labels, type=pa.int64())}
        if enc.segment_starts is not None:
            cols["segment_start"] = pa.array(enc.segment_starts, type=pa.int64())
    return pa.table(cols).replace_schema_metadata({"n_truncated": str(enc.n_truncated)})


def _from_table(table: pa.Table, task: str, label_space: tuple[str, ...]) -> EncodedSplit:
    def ragged(name: str) -> tuple[np.ndarray, ...]:
        return tuple(np.asarray(x, dtype=np.int64) for x in table.column(name).to_numpy(zero_copy_only=False))

    n_truncated = int((table.schema.metadata or {}).get(b"n_truncated", b"0"))
    if get_task(task).word_level:
        return EncodedSplit.of_words(
            ragged("input_ids"), n_truncated, ragged("word_starts"), ragged("word_labels"), task, label_space
        )
    segments = (
        table.column("segment_start").to_numpy().astype(np.int64) if "segment_start" in table.column_names else None
    )
    return EncodedSplit(
        ragged("input_ids"),
        table.column("label").to_numpy().astype(np.int64),
        n_truncated,
        task=task,
        label_space=label_space,
        segment_starts=segments,
    )
