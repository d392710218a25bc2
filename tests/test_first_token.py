"""The first-token last layer used at evaluation computes the same function as the stock forward."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertForTokenClassification,
    GPT2Config,
    GPT2ForSequenceClassification,
)

from shiftbench.data.encode import EncodedSplit
from shiftbench.modeling.device import make_runtime
from shiftbench.modeling.first_token import first_token_only
from shiftbench.training import evaluation


def bert(attn: str, layers: int = 3) -> BertForSequenceClassification:
    cfg = BertConfig(
        vocab_size=60,
        hidden_size=16,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=3,
        pad_token_id=0,
        attn_implementation=attn,
    )
    torch.manual_seed(0)
    return BertForSequenceClassification(cfg).eval()


def padded_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, 60, (5, 11), generator=g)
    for row, length in enumerate([11, 7, 3, 9, 1]):
        ids[row, length:] = 0
    return {"input_ids": ids, "attention_mask": (ids != 0).long()}


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_same_logits_with_padding(attn):
    model, batch = bert(attn), padded_batch()
    with torch.inference_mode():
        full = model(**batch).logits
        with first_token_only(model) as applied:
            fast = model(**batch).logits
        again = model(**batch).logits  # the stock forward is back after the block
    assert applied
    torch.testing.assert_close(fast, full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(again, full, atol=0, rtol=0)
    assert "forward" not in vars(model.bert.encoder.layer[-1])


def test_other_models_and_training_mode_untouched():
    token_cfg = BertConfig(
        vocab_size=60, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, num_labels=5
    )
    gpt_cfg = GPT2Config(vocab_size=60, n_embd=16, n_layer=1, n_head=2, num_labels=3, pad_token_id=0)
    for model in (BertForTokenClassification(token_cfg).eval(), GPT2ForSequenceClassification(gpt_cfg).eval()):
        with first_token_only(model) as applied:
            assert not applied
    training = bert("sdpa").train()  # dropout on: the shortcut is for inference only
    with first_token_only(training) as applied:
        assert not applied


def test_predict_uses_it_and_matches_the_stock_forward(monkeypatch):
    model, batch = bert("sdpa", layers=2), padded_batch(1)
    ids = tuple(row[row != 0].numpy() for row in batch["input_ids"])
    split = EncodedSplit(input_ids=ids, labels=np.array([0, 1, 2, 0, 1]), n_truncated=0)
    runtime = make_runtime("cpu", "fp32")
    calls: list[bool] = []

    real = evaluation.first_token_only

    def spy(m):
        cm = real(m)
        calls.append(True)
        return cm

    monkeypatch.setattr(evaluation, "first_token_only", spy)
    fast = evaluation.predict(model, split, 2, 0, runtime)
    assert calls
    with torch.inference_mode():
        full = torch.softmax(model(**batch).logits, -1).numpy()
    np.testing.assert_allclose(fast.probs, full, atol=1e-5)
