"""Batches with little padding: length-grouped for training, length-sorted for evaluation.

Transformer cost grows with the padded length of a batch, so batching examples of similar
length cuts the work without changing what a batch contains on average.
"""

from __future__ import annotations

import numpy as np
import torch

MEGABATCH = 50  # batches per shuffled pool that is sorted by length (as transformers' grouping)


def length_grouped_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffle, sort by length within pools of ``MEGABATCH`` batches, cut, shuffle batch order.

    Every example appears exactly once; batches hold examples of similar length, and the
    order of batches is random so long and short batches are interleaved across the epoch.
    """
    order = rng.permutation(len(lengths))
    pool = batch_size * MEGABATCH
    batches: list[np.ndarray] = []
    for start in range(0, len(order), pool):
        chunk = order[start : start + pool]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def sorted_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Evaluation batches in order of decreasing length (callers restore the original order)."""
    order = np.argsort(-lengths, kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def pad_right(seqs, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, attention mask), both (len(seqs), longest) int64: each sequence right-padded with ``pad_id``."""
    width = max(len(s) for s in seqs)
    ids = np.full((len(seqs), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(seqs), width), dtype=np.int64)
    for row, s in enumerate(seqs):
        ids[row, : len(s)] = s
        mask[row, : len(s)] = 1
    return ids, mask


def collate(
    input_ids: tuple[np.ndarray, ...],
    idx: np.ndarray,
    pad_id: int,
    device: torch.device,
    segment_starts: np.ndarray | None = None,
) -> dict[str, torch.Tensor]:
    """Right-pad the selected sequences to the longest one in the batch. With ``segment_starts``
    (text pairs, for a model with segment embeddings) also ``token_type_ids``: 1 from where each
    example's second text starts to its end, 0 before it and on padding."""
    ids, mask = pad_right([input_ids[i] for i in idx], pad_id)
    pin = device.type == "cuda"
    out = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
    if segment_starts is not None:
        positions = np.arange(ids.shape[1])[None, :]
        types = (positions >= segment_starts[idx][:, None]) & (mask == 1)
        out["token_type_ids"] = torch.from_numpy(types.astype(np.int64))
    if pin:
        out = {k: v.pin_memory() for k, v in out.items()}
    return {k: v.to(device, non_blocking=pin) for k, v in out.items()}
