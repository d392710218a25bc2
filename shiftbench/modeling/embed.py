"""Sentence embeddings from a fixed frozen encoder, for the shift measures (the one module of
the shift analysis that needs torch).

all-MiniLM-L6-v2 (the ``minilm-l6`` alias) is a sentence-embedding model: its sentence vector is
the attention-masked mean of the last hidden states, L2-normalised (what sentence-transformers
does for it). Texts are truncated to 128 tokens (the length it was fine-tuned with) and encoded
in length-sorted batches, so padding costs little.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from shiftbench.modeling.models import ResolvedModel

MAX_LENGTH = 128
BATCH_SIZE = 64


def embed_texts(
    texts: Sequence[str], model: ResolvedModel, batch_size: int = BATCH_SIZE, max_length: int = MAX_LENGTH
) -> np.ndarray:
    """(len(texts), hidden) float32, unit-norm rows, in the order of ``texts``."""
    import torch
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    tok = AutoTokenizer.from_pretrained(model.location, revision=model.revision)
    enc = AutoModel.from_pretrained(model.location, revision=model.revision).eval()
    order = np.argsort([len(t) for t in texts], kind="stable")
    out = np.empty((len(texts), enc.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = tok(
                [texts[i] for i in idx], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
            )
            hidden = enc(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            out[idx] = torch.nn.functional.normalize(mean, dim=-1).numpy()
    return out
