"""Evaluation is owned by the benchmark: one prediction routine and one scorer for every model."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from shiftbench.data.encode import EncodedSplit
from shiftbench.modeling.device import Runtime
from shiftbench.modeling.first_token import first_token_only
from shiftbench.tasks import TextClassification, get_task
from shiftbench.training.batching import collate, sorted_batches


@dataclass(frozen=True)
class Predictions:
    """Gold ids, predicted ids and probabilities, in dataset order: one row per prediction row
    of the task kind (an example; for token classification a *word*, examples concatenated).

    ``lengths``: the rows of each example, for a word-level kind; ``label_space``: the names
    the ids index (None: not given); ``task``: the task kind that scores them."""

    labels: np.ndarray  # (N,) gold label ids
    preds: np.ndarray  # (N,) predicted label ids
    probs: np.ndarray  # (N, C) float32 softmax probabilities
    lengths: np.ndarray | None = None  # word-level kinds: words per example
    label_space: tuple[str, ...] | None = None
    task: str = TextClassification.name

    @property
    def kind(self):
        return get_task(self.task)

    @property
    def n_units(self) -> int:
        """Test units behind the rows (examples; sentences, not words, for NER)."""
        return self.kind.n_units(self.labels, self.lengths)

    def scores(self) -> dict[str, float]:
        return self.kind.scores(self.labels, self.preds, self.lengths, self.label_space)


@torch.inference_mode()
def predict(
    model: Any,
    data: EncodedSplit,
    batch_size: int,
    pad_id: int,
    runtime: Runtime,
    columns: list[int] | None = None,
) -> Predictions:
    """Class probabilities for every prediction row of ``data`` (every example, every word for
    token classification: its task kind places the model's outputs), batched longest-first and
    returned in order.

    ``columns`` picks and orders the logits (a fine-tuned checkpoint's own label order may differ
    from the pair's sorted label space).
    """
    model.eval()
    kind = data.kind
    n_out = len(columns) if columns is not None else model.config.num_labels
    lengths, offsets = data.word_lengths, None  # word-level kinds: words per example, and where each starts
    if kind.word_level:
        offsets = np.concatenate([[0], np.cumsum(lengths)])
    probs = kind.new_probs(int(offsets[-1]) if kind.word_level else len(data), n_out)
    # A pooled classifier reads position 0 of the last layer only.
    with first_token_only(model) if kind.pooled_head else nullcontext():
        for idx in sorted_batches(data.lengths, batch_size):
            batch = collate(data.input_ids, idx, pad_id, runtime.device, data.segment_starts)
            with runtime.autocast():
                logits = model(**batch).logits  # (B, C), or (B, T, C) per position
            if columns is not None:
                logits = logits[..., columns]
            kind.place(probs, torch.softmax(logits.float(), dim=-1).cpu().numpy(), idx, data, offsets)
    return Predictions(data.labels, probs.argmax(axis=1), probs, lengths, data.label_space, data.task)
