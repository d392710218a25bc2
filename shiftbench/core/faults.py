"""Fault injection for the crash-safety tests: ``SHIFTBENCH_FAULT=point[:n]`` SIGKILLs the
process the n-th time (default 1st) execution reaches ``point``. Unset, it costs one dict
lookup. Points: ``tokenize``, ``train_step``, ``epoch_end``, ``evaluate``, ``write_run``.
"""

from __future__ import annotations

import os
import signal

_hits: dict[str, int] = {}


def checkpoint(point: str) -> None:
    spec = os.environ.get("SHIFTBENCH_FAULT")
    if not spec:
        return
    name, _, nth = spec.partition(":")
    if name != point:
        return
    _hits[point] = _hits.get(point, 0) + 1
    if _hits[point] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
