"""Decoder checkpoints (GPT-2, Llama) fine-tuned as sequence classifiers: no pad token in the
tokenizer (EOS stands in), last-non-pad-token pooling as transformers does it."""

from __future__ import annotations

import pytest
import torch

import shiftbench

from .conftest import FILLER, WORDS


def _tokenizer(dirpath):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for ws in WORDS.values() for w in ws} | set(FILLER) | {"#stocks", "@user"})
    vocab = ["<unk>", "<eos>"] + words + [w.upper() for w in words]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>")
    assert fast.pad_token is None  # as shipped by GPT-2 and Llama checkpoints
    fast.save_pretrained(str(dirpath))
    return len(vocab)


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def decoder_dir(request, tmp_path_factory):
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    d = tmp_path_factory.mktemp(f"tiny-{request.param}")
    n = _tokenizer(d)
    torch.manual_seed(0)
    if request.param == "gpt2":
        model = GPT2LMHeadModel(
            GPT2Config(vocab_size=n, n_positions=64, n_embd=16, n_layer=2, n_head=2, eos_token_id=1, bos_token_id=1)
        )
    else:
        model = LlamaForCausalLM(
            LlamaConfig(
                vocab_size=n,
                hidden_size=16,
                intermediate_size=32,
                num_hidden_layers=2,
                num_attention_heads=2,
                num_key_value_heads=2,
                max_position_embeddings=64,
                eos_token_id=1,
                bos_token_id=1,
            )
        )
    model.save_pretrained(str(d))
    return request.param, d


def test_decoder_fine_tunes_and_scores(decoder_dir, tiny_env):
    kind, path = decoder_dir
    summary = shiftbench.run(pairs=["news_to_forum"], seeds=[0], **{**tiny_env, "models": [str(path)]})
    (r,) = summary.new_results
    assert r.model == path.name and len(r.history) == 4
    assert 0.0 <= r.ood_scores["macro_f1"] <= 1.0 and r.n_ood == 30
    # Reproducible, and the classifier pools the last real token whatever the padding: scoring a
    # text alone or padded in a batch gives the same probabilities (checked via the stored ones).
    again = shiftbench.run(
        pairs=["news_to_forum"],
        seeds=[0],
        **{
            **tiny_env,
            "models": [str(path)],
            "results_dir": tiny_env["results_dir"] / "again",
            "cache_dir": tiny_env["cache_dir"] / "again",
        },
    )
    assert again.new_results[0].ood_scores == r.ood_scores


def test_last_token_pooling_ignores_padding(decoder_dir, tiny_registry):
    from shiftbench.modeling.models import load_classifier, load_tokenizer, resolve_model
    from shiftbench.registry.catalog import load_catalog

    _, path = decoder_dir
    model = resolve_model(str(path), load_catalog([tiny_registry], include_env=False))
    tok = load_tokenizer(model)
    assert tok.pad_token == tok.eos_token == "<eos>"
    torch.manual_seed(0)
    net = load_classifier(model, ("a", "b", "c"), tok.pad_token_id).eval()
    short = tok(["good profit"], return_tensors="pt")
    batch = tok(["good profit", "the company said shares fall today"], return_tensors="pt", padding=True)
    with torch.no_grad():
        alone = net(**short).logits[0]
        padded = net(**batch).logits[0]
    assert torch.allclose(alone, padded, atol=1e-5)
