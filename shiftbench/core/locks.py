"""Inter-process claims on work, as lock files under ``<results-dir>/.locks/``.

The lock is advisory (``filelock``: flock on POSIX) and released by the OS when a process dies,
so a SIGKILLed run never leaves a claim behind.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock

from shiftbench.core.errors import ShiftbenchError

LOCKS_DIR = ".locks"


@contextlib.contextmanager
def claim(results_dir: Path, name: str) -> Iterator[None]:
    path = Path(results_dir) / LOCKS_DIR / f"{name}.lock"
    lock = FileLock(str(path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except OSError as exc:  # an unwritable results dir: one line, not a traceback
        raise ShiftbenchError(f"cannot lock {path}: {exc.strerror or exc}") from None
    try:
        yield
    finally:
        lock.release()
