"""Inter-process claims on work, as lock files under ``<results-dir>/.locks/``.

The lock is advisory (``filelock``: flock on POSIX) and released by the OS when a process dies,
so a SIGKILLed run never leaves a claim behind.

Within one process, filelock refuses (RuntimeError "Deadlock") to wait for a lock another
``FileLock`` instance of the same thread holds; claims are only ever contended between processes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from shiftbench.core.errors import ShiftbenchError

LOCKS_DIR = ".locks"


@contextlib.contextmanager
def claim(results_dir: Path, name: str, wait: bool = True) -> Iterator[bool]:
    """Hold the claim ``name`` for the ``with`` block. Yields True when held; with ``wait=False``
    it makes one attempt and yields False (holding nothing) when another process has it."""
    path = Path(results_dir) / LOCKS_DIR / f"{name}.lock"
    lock = FileLock(str(path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire(blocking=wait)
    except Timeout:  # only without waiting: someone else holds it
        yield False
        return
    except OSError as exc:  # an unwritable results dir: one line, not a traceback
        raise ShiftbenchError(f"cannot lock {path}: {exc.strerror or exc}") from None
    try:
        yield True
    finally:
        lock.release()
