"""Evaluation is owned by the benchmark: one prediction routine and one scorer for every model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from shiftbench.training.batching import collate, sorted_batches
from shiftbench.modeling.device import Runtime
from shiftbench.data.encode import EncodedSplit
from shiftbench.modeling.first_token import first_token_only
from shiftbench.tasks.metrics import classification_metrics
from shiftbench.tasks.ner_metrics import token_classification_scores


@dataclass(frozen=True)
class Predictions:
    """Gold ids, predicted ids and probabilities, in dataset order.

    Token classification: one entry per *word*, examples concatenated; ``lengths`` gives the
    words of each example and ``tags`` the BIO tag names the ids index."""

    labels: np.ndarray  # (N,) gold label ids
    preds: np.ndarray  # (N,) predicted label ids
    probs: np.ndarray  # (N, C) float32 softmax probabilities
    lengths: np.ndarray | None = None  # token classification: words per example
    tags: tuple[str, ...] | None = None  # token classification: tag name of each id

    def scores(self) -> dict[str, float]:
        if self.lengths is None or self.tags is None:
            return classification_metrics(self.labels, self.preds)
        return token_classification_scores(self.labels, self.preds, self.lengths, self.tags)


@torch.inference_mode()
def predict(
    model: Any, data: EncodedSplit, batch_size: int, pad_id: int, runtime: Runtime,
    columns: list[int] | None = None, tags: tuple[str, ...] | None = None,
) -> Predictions:  # fmt: skip
    """Class probabilities for every example (every word, for token classification), batched
    longest-first and returned in order.

    ``columns`` picks and orders the logits (a fine-tuned checkpoint's own label order may differ
    from the pair's sorted label space). ``tags``: the label space, for token classification.
    """
    model.eval()
    n_out = len(columns) if columns is not None else model.config.num_labels
    if data.word_starts is not None and data.word_labels is not None:
        return _predict_words(model, data, batch_size, pad_id, runtime, columns, n_out, tags)
    probs = np.zeros((len(data), n_out), dtype=np.float32)
    with first_token_only(model):  # a classifier reads position 0 of the last layer only
        for idx in sorted_batches(data.lengths, batch_size):
            batch = collate(data.input_ids, idx, pad_id, runtime.device)
            with runtime.autocast():
                logits = model(**batch).logits
            if columns is not None:
                logits = logits[:, columns]
            probs[idx] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
    return Predictions(data.labels, probs.argmax(axis=1), probs)


def _predict_words(model, data: EncodedSplit, batch_size, pad_id, runtime, columns, n_out, tags) -> Predictions:
    """Per word: the distribution at its first sub-token; a word without one is O (id 0) for sure."""
    assert data.word_starts is not None and data.word_labels is not None
    lengths = np.fromiter((len(w) for w in data.word_labels), dtype=np.int64, count=len(data))
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    probs = np.zeros((int(offsets[-1]), n_out), dtype=np.float32)
    probs[:, 0] = 1.0
    for idx in sorted_batches(data.lengths, batch_size):
        batch = collate(data.input_ids, idx, pad_id, runtime.device)
        with runtime.autocast():
            logits = model(**batch).logits  # (B, T, C)
        if columns is not None:
            logits = logits[..., columns]
        p = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        for row, i in enumerate(idx):
            starts = data.word_starts[i]
            kept = np.flatnonzero(starts >= 0)
            probs[offsets[i] + kept] = p[row, starts[kept]]
    return Predictions(data.labels, probs.argmax(axis=1), probs, lengths, tags)
