"""Training throughput: ``fine_tune`` for 20 AdamW steps (batch 32, max length 128,
length-grouped batches), fp32.

Reported in ``extra_info``: real (non-padding) tokens per second of the step loop and of the
whole call, and MFU = (6 x non-embedding parameters x real tokens + attention FLOPs) per
second of the step loop / the fp32 matmul peak measured once this session. Target (issue):
training >= 60 % MFU on real tokens.

Model creation happens in ``benchmark.pedantic``'s setup, outside the timed part; the timed
call also scores a 32-example validation head once (fine_tune always does after an epoch).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SEED, VAL_EXAMPLES, head

from shiftbench.data.datasets import SplitData
from shiftbench.data.encode import encode_split
from shiftbench.modeling.models import load_tokenizer, resolve_model

TINY_LABELS = ("negative", "neutral", "positive")
TINY_TRAIN_EXAMPLES = 2000


@pytest.mark.benchmark(group="train")
def test_train_minilm_fpb(benchmark, train_benchmark, minilm, minilm_tokenizer, fpb_to_tfns, fpb_encoded):
    """MiniLM-L6 (real checkpoint) on the real FPB train split."""
    _, _, space = fpb_to_tfns
    train, val = fpb_encoded
    train_benchmark(benchmark, minilm, space, minilm_tokenizer.pad_token_id, train, val)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory, catalog):
    """A random 2-layer, 64-wide BERT saved as a local checkpoint, its word-level tokenizer, and
    synthetic 3-class texts whose lengths spread like sentences (some longer than 128 tokens).
    Needs neither the real checkpoint nor the data mirror."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    d = tmp_path_factory.mktemp("tiny-bert-h64")
    words = [f"w{i}" for i in range(2000)]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words
    # transformers 5 ignores `vocab_file=` (every word would be [UNK]): pass the vocab itself.
    BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True).save_pretrained(str(d))
    config = BertConfig(
        vocab_size=5 + len(words),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=256,
        max_position_embeddings=512,
        pad_token_id=0,
    )
    torch.manual_seed(SEED)
    BertModel(config).save_pretrained(str(d))
    model = resolve_model(str(d), catalog)
    tok = load_tokenizer(model)

    rng = np.random.default_rng(SEED)
    n_words = np.clip(rng.lognormal(3.2, 0.7, TINY_TRAIN_EXAMPLES + VAL_EXAMPLES), 3, 300).astype(int)
    texts = tuple(" ".join(rng.choice(words, size=k)) for k in n_words)
    labels = tuple(TINY_LABELS[i] for i in rng.integers(0, len(TINY_LABELS), size=len(texts)))
    enc = encode_split(SplitData(texts, labels), tok, TINY_LABELS, 128)
    train = head(enc, TINY_TRAIN_EXAMPLES)
    val = type(enc)(enc.input_ids[TINY_TRAIN_EXAMPLES:], enc.labels[TINY_TRAIN_EXAMPLES:], 0)
    return model, tok, train, val


@pytest.mark.benchmark(group="train")
def test_train_tiny_random_bert(benchmark, train_benchmark, tiny_bert):
    """Same loop on a tiny random BERT (hidden 64, 2 layers): always runs, measures overheads."""
    model, tok, train, val = tiny_bert
    train_benchmark(benchmark, model, TINY_LABELS, tok.pad_token_id, train, val)
