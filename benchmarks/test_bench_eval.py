"""Evaluation throughput: ``shiftbench.training.evaluation.predict`` of MiniLM over the TFNS test split
(2388 finance tweets, the ``fpb_to_tfns`` target), eval batch 128, fp32.

Three members of one group, the same ``predict`` code with one thing changed each:

- ``sorted``: as shipped, batches cut from the examples in order of decreasing length, so each
  batch pads to a similar length, and the last layer computes position 0 only
  (``shiftbench.modeling.first_token``);
- ``unsorted``: batches of the same size cut from a random permutation (the ``sorted_batches``
  used by ``predict`` is swapped for a random one), so each batch pads to its longest member;
- ``all_positions``: sorted, but the last layer computes every position (the stock forward).

``extra_info``: examples/s, real tokens/s, the padding efficiency (real / padded tokens) and,
once the baseline has run, the speed-up of sorting and of the first-token last layer.
"""

from __future__ import annotations

import contextlib
import time

import numpy as np
import pytest
from conftest import EVAL_EXAMPLES, EVAL_ROUNDS, SEED, head, median_seconds

from shiftbench.data.encode import encode_split
from shiftbench.modeling.models import load_classifier
from shiftbench.training import evaluation
from shiftbench.training.batching import sorted_batches
from shiftbench.training.train import seed_everything

_SECONDS: dict[str, float] = {}
_PROBS: dict[str, np.ndarray] = {}


def random_order_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Batches of ``batch_size`` in a fixed random order (the unsorted baseline)."""
    order = np.random.default_rng(SEED).permutation(len(lengths))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


@pytest.fixture(scope="module")
def tfns_test(fpb_to_tfns, minilm_tokenizer, protocol):
    _, target, space = fpb_to_tfns
    return head(encode_split(target.role("test"), minilm_tokenizer, space, protocol.max_length), EVAL_EXAMPLES)


@pytest.fixture(scope="module")
def eval_model(minilm, fpb_to_tfns, minilm_tokenizer, runtime, tfns_test, protocol):
    """MiniLM with a fresh 3-class head (the weights do not change the cost), warmed up once."""
    _, _, space = fpb_to_tfns
    seed_everything(SEED)
    net = load_classifier(minilm, space, minilm_tokenizer.pad_token_id).to(runtime.device)
    evaluation.predict(
        net, head(tfns_test, protocol.eval_batch_size), protocol.eval_batch_size, minilm_tokenizer.pad_token_id, runtime
    )
    return net


def padded_tokens(lengths: np.ndarray, batches: list[np.ndarray]) -> int:
    return int(sum(len(b) * int(lengths[b].max()) for b in batches))


@contextlib.contextmanager
def stock_forward(model):
    """Stand-in for ``first_token_only`` that leaves the model alone."""
    yield False


@pytest.mark.benchmark(group="eval-tfns")
@pytest.mark.parametrize("order", ["sorted", "unsorted", "all_positions"])
def test_predict_tfns(
    benchmark, report, monkeypatch, order, eval_model, tfns_test, minilm_tokenizer, runtime, protocol
):
    make_batches = random_order_batches if order == "unsorted" else sorted_batches
    if order == "unsorted":
        monkeypatch.setattr(evaluation, "sorted_batches", random_order_batches)
    if order == "all_positions":
        monkeypatch.setattr(evaluation, "first_token_only", stock_forward)
    bs, pad_id = protocol.eval_batch_size, minilm_tokenizer.pad_token_id
    seconds: list[float] = []

    def target():
        t0 = time.perf_counter()
        out = evaluation.predict(eval_model, tfns_test, bs, pad_id, runtime)
        seconds.append(time.perf_counter() - t0)
        return out

    preds = benchmark.pedantic(target, rounds=EVAL_ROUNDS, iterations=1)
    s = median_seconds(seconds)
    lengths = tfns_test.lengths
    padded = padded_tokens(lengths, make_batches(lengths, bs))
    info = {
        "examples": len(tfns_test),
        "batch_size": bs,
        "seconds": s,
        "examples_per_s": len(tfns_test) / s,
        "tokens_per_s": tfns_test.n_tokens / s,
        "real_tokens": tfns_test.n_tokens,
        "padded_tokens": padded,
        "padding_efficiency": tfns_test.n_tokens / padded,
        "device": str(runtime.device),
    }
    _SECONDS[order], _PROBS[order] = s, preds.probs
    if order == "unsorted" and "sorted" in _SECONDS:
        info["sorted_speedup"] = _SECONDS["unsorted"] / _SECONDS["sorted"]
        # Same predictions whatever the batch order (padding is masked out).
        agree = float(np.mean(_PROBS["sorted"].argmax(1) == _PROBS["unsorted"].argmax(1)))
        info["argmax_agreement"] = agree
        assert agree >= 0.99, f"sorted and unsorted batches disagree on {1 - agree:.1%} of predictions"
    if order == "all_positions" and "sorted" in _SECONDS:
        info["first_token_speedup"] = _SECONDS["all_positions"] / _SECONDS["sorted"]
        # The shortcut computes the same function: same batches, probabilities equal to rounding.
        info["max_prob_difference"] = float(np.abs(_PROBS["sorted"] - _PROBS["all_positions"]).max())
        assert info["max_prob_difference"] < 1e-4
    speedups = tuple(k for k in ("sorted_speedup", "first_token_speedup") if k in info)
    show = ("examples_per_s", "tokens_per_s", "padding_efficiency") + speedups
    report(benchmark, info, show=show)
