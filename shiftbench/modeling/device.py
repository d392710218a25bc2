"""Where and in what precision the math runs.

torch is imported inside the functions that use it: planning validates --device and the thread
count through this module (execution.config), and ``run --dry-run`` should not pay for torch.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shiftbench.core.errors import ShiftbenchError
from shiftbench.core.guards import preview

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    precision: str  # "fp32" or "bf16" (autocast)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "bf16":
            import torch

            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()


def physical_cores() -> int:
    """Physical cores (hyper-threads share one core's matmul units, so they do not help)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii") as fh:
            pairs = {
                (block.get("physical id"), block.get("core id"))
                for block in (
                    dict(line.split(":", 1) for line in chunk.splitlines() if ":" in line)
                    for chunk in fh.read().split("\n\n")
                )
                if "core id" in block
            }
        pairs = {(p.strip(), c.strip()) for p, c in pairs}
        if pairs:
            return len(pairs)
    except OSError:
        pass
    return os.cpu_count() or 1


def make_runtime(device: str | None, precision: str) -> Runtime:
    """``device`` is "cpu", "cuda", "cuda:N" or None (CUDA when present, else CPU)."""
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    check_device(device)
    dev = torch.device(device)
    threads = num_threads_from_env()
    if threads is not None:
        torch.set_num_threads(threads)
    elif dev.type == "cpu":
        torch.set_num_threads(physical_cores())
    return Runtime(dev, precision)


def num_threads_from_env() -> int | None:
    """``SHIFTBENCH_NUM_THREADS`` (intra-op threads), validated; None when unset."""
    value = os.environ.get("SHIFTBENCH_NUM_THREADS")
    if value is None or value == "":
        return None
    if not value.isascii() or not value.isdigit() or int(value) < 1:
        raise ShiftbenchError(f"SHIFTBENCH_NUM_THREADS: expected a positive integer, got {preview(value)}")
    return int(value)


def check_device(device: str | None) -> None:
    """Validate a --device value without touching the accelerator (used when planning)."""
    if device is None:
        return
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ShiftbenchError(f"--device: unknown device {preview(device)} (use cpu or cuda)") from None
    if dev.type not in ("cpu", "cuda"):
        raise ShiftbenchError(f"--device {device}: only cpu and cuda are supported")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ShiftbenchError(f"--device {device}: CUDA is not available on this machine")
