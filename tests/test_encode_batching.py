"""Tokenization (with its on-disk cache), truncation and batching."""

from __future__ import annotations

import numpy as np
import torch

from shiftbench.data.datasets import SplitData, load_domain
from shiftbench.data.encode import Encoder, encode_split
from shiftbench.modeling.models import load_tokenizer, resolve_model
from shiftbench.registry.catalog import load_catalog
from shiftbench.training.batching import collate, length_grouped_batches, sorted_batches


def _tokenizer(tiny_registry):
    catalog = load_catalog([tiny_registry], include_env=False)
    return load_tokenizer(resolve_model("tiny", catalog)), catalog


def test_truncation_keeps_the_final_special_token(tiny_registry):
    tok, _ = _tokenizer(tiny_registry)
    split = SplitData(("good " * 40, "bad day"), ("positive", "negative"))
    enc = encode_split(split, tok, ("negative", "positive"), max_length=10)
    assert [len(x) for x in enc.input_ids] == [10, 6]  # [CLS] bad d ##a ##y [SEP]
    assert tok.convert_ids_to_tokens(enc.input_ids[1].tolist()) == ["[CLS]", "bad", "d", "##a", "##y", "[SEP]"]
    assert enc.input_ids[0][0] == tok.cls_token_id and enc.input_ids[0][-1] == tok.sep_token_id
    assert enc.n_truncated == 1
    assert enc.labels.tolist() == [1, 0]


def test_encoder_cache_round_trips(tiny_registry, tiny_data_dir, tmp_path):
    tok, catalog = _tokenizer(tiny_registry)
    domain = load_domain(catalog.datasets.get("news"), tiny_data_dir, ("train", "validation", "test"))
    space = domain.label_names
    fresh = Encoder(tok, space, 16, None)(domain, "train")
    cached = Encoder(tok, space, 16, tmp_path)
    first = cached(domain, "train")
    assert len(list((tmp_path / "tokens").glob("*.parquet"))) == 1
    second = Encoder(tok, space, 16, tmp_path)(domain, "train")  # read back from disk
    for enc in (first, second):
        assert len(enc) == len(fresh) and enc.n_truncated == fresh.n_truncated
        assert all(np.array_equal(a, b) for a, b in zip(enc.input_ids, fresh.input_ids))
        assert np.array_equal(enc.labels, fresh.labels)
    # Another max length is another cache entry.
    Encoder(tok, space, 12, tmp_path)(domain, "train")
    assert len(list((tmp_path / "tokens").glob("*.parquet"))) == 2


def test_length_grouped_batches_cover_each_example_once_and_group_lengths():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 120, size=1000)
    batches = length_grouped_batches(lengths, 32, np.random.default_rng(1))
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(1000))
    assert all(len(b) <= 32 for b in batches)
    padded = sum(len(b) * lengths[b].max() for b in batches)
    random_padded = sum(len(b) * lengths[b].max() for b in np.array_split(rng.permutation(1000), len(batches)))
    assert padded < 0.8 * random_padded  # grouping removes most padding
    # Same generator seed, same batches.
    again = length_grouped_batches(lengths, 32, np.random.default_rng(1))
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))


def test_sorted_batches_are_longest_first():
    lengths = np.array([3, 9, 1, 7, 5])
    batches = sorted_batches(lengths, 2)
    assert [b.tolist() for b in batches] == [[1, 3], [4, 0], [2]]


def test_collate_right_pads_with_mask():
    ids = (np.array([1, 2, 3]), np.array([4]), np.array([5, 6]))
    batch = collate(ids, np.array([0, 1]), pad_id=0, device=torch.device("cpu"))
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_tokenizer_identity_does_not_change_when_the_tokenizer_is_used(tiny_model_dir):
    """Calling a fast tokenizer with truncation stores that setting in its serialisation; the
    token cache key must not depend on it (else every second Encoder misses the cache)."""
    from transformers import AutoTokenizer

    from shiftbench.data.encode import tokenizer_identity

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    before = tokenizer_identity(tok)
    tok(["stocks rise"], truncation=True, max_length=7, padding="max_length")
    assert tokenizer_identity(tok) == before
    other = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    other.add_tokens(["newword"])
    assert tokenizer_identity(other) != before
