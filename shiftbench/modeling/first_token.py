"""Inference shortcut for BERT-family sequence classifiers: the last layer computes the first token only.

A BERT classifier reads one vector, the last layer's output at position 0 (``[CLS]``, through the
pooler). Every other position of the last layer is computed and thrown away: its attention
output projection and its feed-forward block (10 of the 12 d x d matmuls a layer spends per
token) are dead work. Only the keys and values of the last layer still need every position.
For a 6-layer model that is ~14 % of the inference FLOPs, for a 2-layer one ~40 %.

Used by evaluation only (``torch.inference_mode``, dropout off), where the result is the same
function: logits agree with the full forward to float rounding (tested to 1e-5). Training keeps
the stock forward, so fine-tuned weights and the runner's reproducibility are untouched.

Applies when the model is a ``BertModel``-based sequence classifier with the stock layer
(no decoder, no cross-attention); anything else runs unchanged.

    >>> import torch
    >>> from transformers import BertConfig, BertForSequenceClassification
    >>> cfg = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
    ...                  intermediate_size=32, num_labels=3)
    >>> model = BertForSequenceClassification(cfg).eval()
    >>> ids = torch.tensor([[2, 5, 7, 3, 0], [2, 9, 3, 0, 0]])
    >>> batch = {"input_ids": ids, "attention_mask": (ids != 0).long()}
    >>> full = model(**batch).logits
    >>> with first_token_only(model) as applied:
    ...     fast = model(**batch).logits
    >>> applied, torch.allclose(full, fast, atol=1e-5)
    (True, True)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch


def _last_bert_layer(model: Any):
    """The last encoder layer when the shortcut is exact for this model, else None."""
    try:
        from transformers.models.bert.modeling_bert import BertForSequenceClassification, BertLayer
    except ImportError:  # pragma: no cover - transformers always ships BERT
        return None
    if type(model) is not BertForSequenceClassification or model.bert.pooler is None:
        return None
    layer = model.bert.encoder.layer[-1]
    if type(layer) is not BertLayer or layer.is_decoder or layer.add_cross_attention:
        return None
    if layer.chunk_size_feed_forward:
        return None
    return layer


def _first_token_forward(layer):
    """A replacement ``BertLayer.forward`` returning hidden states for position 0 only ([B, 1, D])."""
    attention = layer.attention
    self_attn = attention.self

    def forward(hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, *args, **kwargs):
        b, t, _ = hidden_states.shape
        heads, size = self_attn.num_attention_heads, self_attn.attention_head_size
        first = hidden_states[:, :1]
        q = self_attn.query(first).view(b, 1, heads, size).transpose(1, 2)  # [B, H, 1, d]
        k = self_attn.key(hidden_states).view(b, t, heads, size).transpose(1, 2)  # [B, H, T, d]
        v = self_attn.value(hidden_states).view(b, t, heads, size).transpose(1, 2)
        mask = attention_mask
        if mask is not None and mask.dim() == 4 and mask.shape[-2] > 1:
            mask = mask[:, :, :1, :]  # the query row of position 0
        context = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self_attn.scaling)
        context = context.transpose(1, 2).reshape(b, 1, heads * size)
        attended = attention.output(context, first)  # dense, residual, LayerNorm
        return layer.output(layer.intermediate(attended), attended)

    return forward


@contextlib.contextmanager
def first_token_only(model: Any) -> Iterator[bool]:
    """Within the block, ``model``'s last layer computes position 0 only (yields whether it applies).

    Only for inference: the patched layer has no dropout."""
    layer = _last_bert_layer(model)
    if layer is None or model.training:
        yield False
        return
    layer.forward = _first_token_forward(layer)  # instance attribute shadows the class method
    try:
        yield True
    finally:
        del layer.forward
