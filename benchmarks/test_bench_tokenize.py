"""Tokenization throughput: ``shiftbench.data.encode.encode_split`` of the TweetEval sentiment test
split (12,284 tweets, the ``fpb_to_tweeteval`` target) with MiniLM's fast tokenizer, max
length 128: one tokenizer call over the whole split plus truncation and conversion to
per-example int64 arrays. ``extra_info``: texts/s and tokens/s.

The Rust tokenizer batches across threads unless ``TOKENIZERS_PARALLELISM=false``; the value
in effect is recorded in ``extra_info``.
"""

from __future__ import annotations

import os
import time

import pytest
from conftest import TOKENIZE_ROUNDS, TOKENIZE_TEXTS, median_seconds, real_domain

from shiftbench.data.datasets import SplitData
from shiftbench.data.encode import encode_split


@pytest.fixture(scope="module")
def tweeteval_test(catalog):
    domain = real_domain(catalog, "tweeteval_sentiment", ("test",))
    split = domain.role("test")
    if TOKENIZE_TEXTS is not None:
        split = SplitData(split.texts[:TOKENIZE_TEXTS], split.labels[:TOKENIZE_TEXTS])
    return split, domain.label_names


@pytest.mark.benchmark(group="tokenize")
def test_encode_tweeteval_test(benchmark, report, tweeteval_test, minilm_tokenizer, protocol):
    split, space = tweeteval_test
    seconds: list[float] = []

    def target():
        t0 = time.perf_counter()
        out = encode_split(split, minilm_tokenizer, space, protocol.max_length)
        seconds.append(time.perf_counter() - t0)
        return out

    enc = benchmark.pedantic(
        target, rounds=TOKENIZE_ROUNDS, iterations=1, warmup_rounds=1 if TOKENIZE_ROUNDS > 1 else 0
    )
    s = median_seconds(seconds[-TOKENIZE_ROUNDS:])  # without the warm-up round
    info = {
        "texts": len(split),
        "seconds": s,
        "texts_per_s": len(split) / s,
        "tokens": enc.n_tokens,
        "tokens_per_s": enc.n_tokens / s,
        "n_truncated": enc.n_truncated,
        "max_length": protocol.max_length,
        "tokenizers_parallelism": os.environ.get("TOKENIZERS_PARALLELISM", "(unset)"),
    }
    report(benchmark, info, show=("texts", "texts_per_s", "tokens_per_s"))
