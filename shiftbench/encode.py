"""Tokenize a split once into variable-length id sequences (padding happens per batch), with an
on-disk cache so a split is tokenized once per tokenizer and max length, not once per run."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from shiftbench.atomic import write_atomic
from shiftbench.data import DomainData, SplitData
from shiftbench.errors import ShiftbenchError


@dataclass(frozen=True)
class EncodedSplit:
    input_ids: tuple[np.ndarray, ...]  # one int64 array per example, unpadded, truncated
    labels: np.ndarray  # (N,) int64 label ids in the pair's label space
    n_truncated: int  # examples longer than max_length before truncation

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(x) for x in self.input_ids), dtype=np.int64, count=len(self.input_ids))

    @property
    def n_tokens(self) -> int:
        return int(self.lengths.sum())


def encode_split(split: SplitData, tokenizer: Any, label_space: tuple[str, ...], max_length: int) -> EncodedSplit:
    # One call over the whole split: the fast (Rust) tokenizer batches internally.
    enc = tokenizer(list(split.texts), truncation=False, add_special_tokens=True)["input_ids"]
    n_truncated = sum(len(ids) > max_length for ids in enc)
    ids = []
    for seq in enc:
        if len(seq) > max_length:
            # Keep the final special token (e.g. [SEP] / EOS) the model was trained to see.
            seq = seq[: max_length - 1] + seq[-1:] if tokenizer.sep_token_id is not None else seq[:max_length]
        ids.append(np.asarray(seq, dtype=np.int64))
    return EncodedSplit(tuple(ids), split.label_ids(label_space), n_truncated)


def tokenizer_identity(tokenizer: Any) -> str:
    """Content hash of a tokenizer: its full serialisation when it is a fast tokenizer."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    blob = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
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
            table = pq.read_table(path)
            ids = table.column("input_ids").to_numpy(zero_copy_only=False)
            return EncodedSplit(
                tuple(np.asarray(x, dtype=np.int64) for x in ids),
                table.column("label").to_numpy().astype(np.int64),
                int((table.schema.metadata or {}).get(b"n_truncated", b"0")),
            )
        except (OSError, pa.ArrowInvalid, KeyError):
            pass  # not cached yet, or damaged: tokenize again
        enc = encode_split(split, self.tokenizer, self.label_space, self.max_length)
        table = pa.table(
            {"input_ids": pa.array([x.astype(np.int32) for x in enc.input_ids], type=pa.list_(pa.int32())),
             "label": pa.array(enc.labels, type=pa.int64())}  # fmt: skip
        ).replace_schema_metadata({"n_truncated": str(enc.n_truncated)})
        try:
            write_atomic(path, lambda p: pq.write_table(table, p))
        except ShiftbenchError:
            pass  # a full disk makes the cache miss, never the run fail
        return enc
