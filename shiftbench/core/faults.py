"""Fault injection for the crash-safety tests: ``SHIFTBENCH_FAULT=point[:n]`` SIGKILLs the
process the n-th time (default 1st) execution reaches ``point``. Unset, it costs one dict
lookup. Points: ``tokenize``, ``train_step``, ``epoch_end``, ``evaluate``, ``write_run``.
"""

from __future__ import annotations

import os
import signal

_hits: dict[str, int] = {}


def fault_point(point: str) -> None:
    """Execution reached ``point``: SIGKILL this process if SHIFTBENCH_FAULT names it (and this is its n-th time).
    (Named apart from training checkpoints, the saved training state of training.checkpoint.)"""
    spec = os.environ.get("SHIFTBENCH_FAULT")
    if not spec:
        return
    name, _, nth = spec.partition(":")
    if name != point:
        return
    _hits[point] = _hits.get(point, 0) + 1
    if _hits[point] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
