"""Resolve what a run does, in one place. Precedence, highest first:

1. explicit arguments (CLI flags or ``shiftbench.run(...)`` keywords: a
   :class:`~shiftbench.execution.settings.RunRequest`, where every option is declared),
2. the selected suite's defaults (models, seeds, protocol),
3. environment variables (``SHIFTBENCH_DATA_DIR``, ``SHIFTBENCH_CACHE_DIR``, ``SHIFTBENCH_REGISTRY``),
4. built-in defaults (suite ``default``, seed 0, protocol ``standard-v2``, ``results/``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from shiftbench.core.errors import ShiftbenchError
from shiftbench.core.guards import preview
from shiftbench.data.datasets import resolve_data_dir
from shiftbench.execution.settings import RunRequest
from shiftbench.modeling.device import check_device, num_threads_from_env
from shiftbench.modeling.models import LoadOptions
from shiftbench.registry.catalog import Catalog
from shiftbench.registry.protocol import DEFAULT_PROTOCOL, Protocol, load_protocol
from shiftbench.registry.specs import MAX_SEED

DEFAULT_SUITE = "default"
DEFAULT_SEEDS = (0,)
DEFAULT_RESULTS_DIR = Path("results")
_SEED_TEXT = re.compile(r"[+-]?[0-9]{1,30}")


@dataclass(frozen=True)
class RunSettings:
    """A run's options resolved: names checked, defaults filled in, the protocol loaded (the options
    themselves, their defaults and help are declared in :class:`shiftbench.execution.settings.RunRequest`)."""

    pairs: tuple[str, ...]
    suite: str | None
    models: tuple[str, ...]
    seeds: tuple[int, ...]
    protocol: Protocol
    data_dir: Path | None
    results_dir: Path
    cache_dir: Path
    device: str | None  # None: CUDA when available, else CPU
    load: LoadOptions
    eval_only: bool = False
    dry_run: bool = False
    dedup: bool = False  # drop target test texts that also occur in the source train split
    executor: str = "local"  # "local" or "ray"
    workers: int = 1  # local processes, each fine-tuning its own jobs
    skip_claimed: bool = False  # leave jobs another process holds to it instead of waiting for them
    ray_address: str | None = None  # None: start a local Ray cluster; else e.g. "ray://head:10001" or "auto"
    cpus_per_task: int = 1  # Ray resources per (model, source, seed) task
    gpus_per_task: float = 0.0


def parse_seeds(value: str | Sequence[int] | None) -> tuple[int, ...] | None:
    """``"0,1,2"`` -> (0, 1, 2).

    >>> parse_seeds("0, 1,2")
    (0, 1, 2)
    """
    if value is None:
        return None
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",")]
        # int() alone would also take "1_0" and non-ASCII digits; a seed is plain decimal digits.
        if not all(_SEED_TEXT.fullmatch(p) for p in parts):
            raise ShiftbenchError(f"--seeds: expected a comma-separated list of integers, got {preview(value)}")
        seeds = tuple(int(p) for p in parts)
    else:
        seeds = tuple(value)
        if not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
            raise ShiftbenchError(f"seeds: expected integers, got {preview(value)}")
    if not seeds:
        raise ShiftbenchError("--seeds: needs at least one seed")
    if any(s < 0 or s > MAX_SEED for s in seeds):
        raise ShiftbenchError(f"--seeds: seeds must be between 0 and {MAX_SEED}, got {preview(value)}")
    if len(set(seeds)) != len(seeds):
        raise ShiftbenchError(f"--seeds: a seed is repeated in {preview(value)}")
    return seeds


def default_cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "shiftbench"


def resolve_cache_dir(cache_dir: str | Path | None) -> Path:
    """``--cache-dir``, else ``$SHIFTBENCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/shiftbench`` (``~/.cache/...``)."""
    return Path(cache_dir or os.environ.get("SHIFTBENCH_CACHE_DIR") or default_cache_dir()).expanduser()


def resolve_settings(catalog: Catalog, request: RunRequest) -> RunSettings:
    """The request's options resolved and checked, in the order of the module docstring."""
    r = request
    if r.suite is not None and r.pairs:
        raise ShiftbenchError("give either --suite or --pair, not both")
    chosen = None if r.pairs else catalog.suites.get(r.suite or DEFAULT_SUITE)
    for p in r.pairs:
        catalog.pairs.get(p)  # unknown pair -> did-you-mean error
    pair_names = chosen.pairs if chosen is not None else tuple(dict.fromkeys(r.pairs))
    model_names = tuple(dict.fromkeys(r.models)) or (chosen.models if chosen and chosen.models else ("minilm-l6",))
    seed_tuple = parse_seeds(r.seeds) or (chosen.seeds if chosen and chosen.seeds else DEFAULT_SEEDS)
    if r.eval_only and len(seed_tuple) > 1:
        raise ShiftbenchError(f"--eval-only scores one fixed checkpoint: give at most one seed, got {list(seed_tuple)}")
    if isinstance(r.protocol, Protocol):
        proto = r.protocol
    else:
        proto = load_protocol(r.protocol or (chosen.protocol if chosen and chosen.protocol else DEFAULT_PROTOCOL))
    if r.precision is not None:
        proto = load_protocol_override(proto, r.precision)
    check_device(r.device)
    num_threads_from_env()
    if r.executor not in ("local", "ray"):
        raise ShiftbenchError(f"--executor: unknown executor {preview(r.executor)} (use local or ray)")
    if r.cpus_per_task < 1 or r.gpus_per_task < 0:
        raise ShiftbenchError(
            f"--cpus-per-task must be >= 1 and --gpus-per-task >= 0, got {r.cpus_per_task} and {r.gpus_per_task}"
        )
    if not isinstance(r.workers, int) or isinstance(r.workers, bool) or r.workers < 1:
        raise ShiftbenchError(f"--workers: expected an integer >= 1, got {preview(r.workers)}")
    if r.workers > 1 and r.executor == "ray":
        raise ShiftbenchError(
            f"--workers {r.workers} is for the local executor; with --executor ray use --cpus-per-task"
        )
    if r.ray_address is not None and r.executor != "ray":
        raise ShiftbenchError("--address is only meaningful with --executor ray")
    return RunSettings(
        pairs=pair_names,
        suite=chosen.name if chosen is not None else None,
        models=model_names,
        seeds=seed_tuple,
        protocol=proto,
        data_dir=resolve_data_dir(r.data_dir),
        results_dir=Path(r.results_dir) if r.results_dir is not None else DEFAULT_RESULTS_DIR,
        cache_dir=resolve_cache_dir(r.cache_dir),
        device=r.device,
        load=LoadOptions(trust_remote_code=r.trust_remote_code, allow_pickle=r.allow_pickle),
        eval_only=r.eval_only,
        dry_run=r.dry_run,
        dedup=r.dedup,
        executor=r.executor,
        workers=r.workers,
        skip_claimed=r.skip_claimed,
        ray_address=r.ray_address,
        cpus_per_task=r.cpus_per_task,
        gpus_per_task=r.gpus_per_task,
    )


def load_protocol_override(proto: Protocol, precision: str) -> Protocol:
    """``--precision`` changes the protocol (and so its hash): bf16 numbers are never pooled with fp32."""
    try:
        return proto.with_overrides(precision=precision)
    except ShiftbenchError as exc:
        raise ShiftbenchError(f"--precision: {exc}") from None
