"""Per-epoch training checkpoints, so a killed fine-tune resumes from its last finished epoch.

``<cache-dir>/checkpoints/<finetune_id>/state-<lr index>-<epoch>/`` holds the model weights,
the best weights so far (safetensors), optimizer + scheduler + RNG states (``torch.save``,
read back with ``weights_only=True``: tensors and plain containers only, no arbitrary
unpickling) and ``progress.json``. Each state directory is written under a temporary name and
renamed into place, so the newest ``state-*`` directory is always complete; older ones are
removed after the rename.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

CHECKPOINTS = "checkpoints"


@dataclass
class TrainState:
    lr_index: int  # index into protocol.learning_rates
    epoch: int  # epochs completed at this learning rate
    step: int  # optimizer steps completed at this learning rate
    history: list[dict]  # EpochRecord dicts so far, all learning rates
    best: tuple[float, float, int] | None  # (score, lr, epoch) of the best so far
    elapsed: float  # training seconds spent before this checkpoint
    model_state: dict[str, torch.Tensor]
    best_state: dict[str, torch.Tensor] | None
    optimizer_state: dict[str, Any]
    scheduler_state: dict[str, Any]
    torch_rng: torch.Tensor
    cuda_rng: list[torch.Tensor] | None
    data_rng: dict[str, Any]  # numpy Generator.bit_generator.state


def checkpoint_dir(cache_dir: Path, finetune_id: str) -> Path:
    return Path(cache_dir) / CHECKPOINTS / finetune_id


def _states(root: Path) -> list[Path]:
    """Saved states, oldest first. A state is named state-<epochs trained in all>-<lr index>-<epoch>:
    a bracketing grid search (standard-v2) trains lower rates after higher ones, so only the total
    count orders them. The older state-<lr index>-<epoch> names (ascending grids) sort first."""

    def key(p: Path) -> tuple[int, int, int]:
        parts = [int(x) for x in p.name.split("-")[1:]]
        return (parts[0], parts[1], parts[2]) if len(parts) == 3 else (-1, parts[0], parts[1])

    if not root.is_dir():
        return []
    states = [p for p in root.glob("state-*") if p.is_dir() and re.fullmatch(r"state(-\d+){2,3}", p.name)]
    return sorted(states, key=key)


def _cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in state.items()}


def save_checkpoint(root: Path, st: TrainState) -> None:
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".state.", dir=root))
    save_file(_cpu(st.model_state), str(tmp / "model.safetensors"))
    if st.best_state is not None:
        save_file(_cpu(st.best_state), str(tmp / "best.safetensors"))
    torch.save(
        {
            "optimizer": st.optimizer_state,
            "scheduler": st.scheduler_state,
            "torch_rng": st.torch_rng,
            "cuda_rng": st.cuda_rng,
        },
        tmp / "optim.pt",
    )
    progress = {
        k: v
        for k, v in asdict(st).items()
        if k in ("lr_index", "epoch", "step", "history", "best", "elapsed", "data_rng")
    }
    (tmp / "progress.json").write_text(json.dumps(progress), encoding="utf-8")
    final = root / f"state-{len(st.history)}-{st.lr_index}-{st.epoch}"
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    for old in _states(root)[:-1]:
        shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(root: Path) -> TrainState | None:
    """The newest complete state, or None (nothing saved, or unreadable: start over)."""
    states = _states(root)
    if not states:
        return None
    path = states[-1]
    try:
        progress = json.loads((path / "progress.json").read_text(encoding="utf-8"))
        extra = torch.load(path / "optim.pt", weights_only=True)
        best_file = path / "best.safetensors"
        return TrainState(
            lr_index=progress["lr_index"],
            epoch=progress["epoch"],
            step=progress["step"],
            history=progress["history"],
            best=tuple(progress["best"]) if progress["best"] else None,
            elapsed=progress["elapsed"],
            model_state=load_file(str(path / "model.safetensors")),
            best_state=load_file(str(best_file)) if best_file.exists() else None,
            optimizer_state=extra["optimizer"],
            scheduler_state=extra["scheduler"],
            torch_rng=extra["torch_rng"],
            cuda_rng=extra["cuda_rng"],
            data_rng=progress["data_rng"],
        )
    except (OSError, ValueError, KeyError, RuntimeError):
        return None


def clear_checkpoints(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)
