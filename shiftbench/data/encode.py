"""Tokenize a split once into variable-length id sequences (padding happens per batch), with an
on-disk cache so a split is tokenized once per tokenizer and max length, not once per run.

Token classification: words are tokenized with ``is_split_into_words`` and each word's tag goes
on its first sub-token; later sub-tokens and special tokens are ignored by the loss (-100), and
predictions are read at the first sub-token of every word (a word cut off by truncation is
predicted ``O``, the first tag of every BIO label space)."""

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
from shiftbench.data.datasets import DomainData, SplitData
from shiftbench.core.errors import ShiftbenchError, one_line


IGNORE = -100  # label of positions the loss skips (torch's cross_entropy default ignore_index)


@dataclass(frozen=True)
class EncodedSplit:
    input_ids: tuple[np.ndarray, ...]  # one int64 array per example, unpadded, truncated
    # (N,) int64 label ids in the pair's label space; for token classification the gold tag of
    # every word of every example, concatenated (word_labels split it per example)
    labels: np.ndarray
    n_truncated: int  # examples longer than max_length before truncation
    word_starts: tuple[np.ndarray, ...] | None = None  # token classification: first sub-token position per word, -1 if none
    word_labels: tuple[np.ndarray, ...] | None = None  # token classification: gold tag id of every word

    def __len__(self) -> int:
        return len(self.input_ids)

    @classmethod
    def of_words(cls, input_ids, n_truncated: int, word_starts, word_labels) -> EncodedSplit:
        """Token classification: ``labels`` is every word's tag, the examples concatenated."""
        flat = np.concatenate(word_labels) if word_labels else np.zeros(0, dtype=np.int64)
        return cls(tuple(input_ids), flat, n_truncated, tuple(word_starts), tuple(word_labels))

    @property
    def is_tokens(self) -> bool:
        return self.word_labels is not None

    def batch_labels(self, idx: np.ndarray) -> np.ndarray:
        """Training targets of a batch: (B,) ids, or (B, longest) tag ids with IGNORE elsewhere."""
        if self.word_labels is None or self.word_starts is None:
            return self.labels[idx]
        out = np.full((len(idx), max(len(self.input_ids[i]) for i in idx)), IGNORE, dtype=np.int64)
        for row, i in enumerate(idx):
            kept = self.word_starts[i] >= 0
            out[row, self.word_starts[i][kept]] = self.word_labels[i][kept]
        return out

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(x) for x in self.input_ids), dtype=np.int64, count=len(self.input_ids))

    @property
    def n_tokens(self) -> int:
        return int(self.lengths.sum())


def _truncate(seq: list, max_length: int, keep_last: bool) -> list:
    # Keep the final special token (e.g. [SEP] / EOS) the model was trained to see.
    if len(seq) <= max_length:
        return seq
    return seq[: max_length - 1] + seq[-1:] if keep_last else seq[:max_length]


def encode_split(split: SplitData, tokenizer: Any, label_space: tuple[str, ...], max_length: int) -> EncodedSplit:
    if split.is_tokens:
        return _encode_words(split, tokenizer, label_space, max_length)
    # One call over the whole split: the fast (Rust) tokenizer batches internally.
    enc = tokenizer(list(split.texts), truncation=False, add_special_tokens=True)["input_ids"]
    n_truncated = sum(len(ids) > max_length for ids in enc)
    keep_last = tokenizer.sep_token_id is not None
    ids = [np.asarray(_truncate(seq, max_length, keep_last), dtype=np.int64) for seq in enc]
    return EncodedSplit(tuple(ids), split.label_ids(label_space), n_truncated)


def _encode_words(split: SplitData, tokenizer: Any, label_space: tuple[str, ...], max_length: int) -> EncodedSplit:
    """Token classification: sub-token ids plus, per example, where each word starts."""
    if not getattr(tokenizer, "is_fast", False):
        raise ShiftbenchError(f"token classification needs a fast tokenizer (word alignment); {type(tokenizer).__name__} is not one")
    try:
        enc = tokenizer([list(w) for w in split.texts], is_split_into_words=True, truncation=False, add_special_tokens=True)
    except (ValueError, TypeError) as exc:  # e.g. byte-level BPE without add_prefix_space=True
        raise ShiftbenchError(f"tokenizer {type(tokenizer).__name__} cannot tokenize pre-split words: {one_line(exc)}") from None
    keep_last = tokenizer.sep_token_id is not None
    ids, starts, n_truncated = [], [], 0
    for i, seq in enumerate(enc["input_ids"]):
        word_ids = enc.word_ids(i)
        n_truncated += len(seq) > max_length
        seq, word_ids = _truncate(seq, max_length, keep_last), _truncate(list(word_ids), max_length, keep_last)
        first: dict[int, int] = {}
        for pos, w in enumerate(word_ids):
            if w is not None and w not in first:
                first[w] = pos
        # -1: a word cut off by truncation, or one that tokenizes to nothing; it is predicted O.
        ids.append(np.asarray(seq, dtype=np.int64))
        starts.append(np.asarray([first.get(w, -1) for w in range(len(split.texts[i]))], dtype=np.int64))
    return EncodedSplit.of_words(ids, n_truncated, starts, split.tag_ids(label_space))


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
            return _from_table(pq.read_table(path), split.is_tokens)
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
    if enc.word_starts is not None and enc.word_labels is not None:
        cols = {"input_ids": _ragged(enc.input_ids), "word_starts": _ragged(enc.word_starts), "word_labels": _ragged(enc.word_labels)}
    else:
        cols = {"input_ids": _ragged(enc.input_ids), "label": pa.array(enc.labels, type=pa.int64())}
    return pa.table(cols).replace_schema_metadata({"n_truncated": str(enc.n_truncated)})


def _from_table(table: pa.Table, is_tokens: bool) -> EncodedSplit:
    def ragged(name: str) -> tuple[np.ndarray, ...]:
        return tuple(np.asarray(x, dtype=np.int64) for x in table.column(name).to_numpy(zero_copy_only=False))

    n_truncated = int((table.schema.metadata or {}).get(b"n_truncated", b"0"))
    if is_tokens:
        return EncodedSplit.of_words(ragged("input_ids"), n_truncated, ragged("word_starts"), ragged("word_labels"))
    return EncodedSplit(ragged("input_ids"), table.column("label").to_numpy().astype(np.int64), n_truncated)
