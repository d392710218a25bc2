"""Tokenize a split once into variable-length id sequences (padding happens per batch)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from shiftbench.data import SplitData


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
