"""Evaluation is owned by the benchmark: one prediction routine and one scorer for every model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from shiftbench.batching import collate, sorted_batches
from shiftbench.device import Runtime
from shiftbench.encode import EncodedSplit
from shiftbench.metrics import classification_metrics


@dataclass(frozen=True)
class Predictions:
    labels: np.ndarray  # (N,) gold label ids
    preds: np.ndarray  # (N,) predicted label ids
    probs: np.ndarray  # (N, C) float32 softmax probabilities, in dataset order

    def scores(self) -> dict[str, float]:
        return classification_metrics(self.labels, self.preds)


@torch.inference_mode()
def predict(
    model: Any, data: EncodedSplit, batch_size: int, pad_id: int, runtime: Runtime, columns: list[int] | None = None
) -> Predictions:
    """Class probabilities for every example, batched longest-first and returned in order.

    ``columns`` picks and orders the logits (a fine-tuned checkpoint's own label order may differ
    from the pair's sorted label space).
    """
    model.eval()
    n_out = len(columns) if columns is not None else model.config.num_labels
    probs = np.zeros((len(data), n_out), dtype=np.float32)
    for idx in sorted_batches(data.lengths, batch_size):
        batch = collate(data.input_ids, idx, pad_id, runtime.device)
        with runtime.autocast():
            logits = model(**batch).logits
        if columns is not None:
            logits = logits[:, columns]
        probs[idx] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
    return Predictions(data.labels, probs.argmax(axis=1), probs)
