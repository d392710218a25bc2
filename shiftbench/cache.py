"""On-disk cache of fine-tuned weights, keyed by fine-tune identity.

``<cache-dir>/finetunes/<finetune_id>/`` holds ``model.safetensors`` and ``finetune.json``
(selected lr/epoch, validation history). The directory is assembled under a temporary name and
renamed into place, so a present directory is always complete. Adding a target to a finished
run then costs only its evaluation. The cache never lives inside the results dir.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from shiftbench.train import EpochRecord, FineTuned

FINETUNES = "finetunes"


def finetune_dir(cache_dir: Path, finetune_id: str) -> Path:
    return Path(cache_dir) / FINETUNES / finetune_id


def save_finetuned(cache_dir: Path, finetune_id: str, ft: FineTuned) -> None:
    final = finetune_dir(cache_dir, finetune_id)
    if final.is_dir():
        return
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{finetune_id}.", dir=final.parent))
    try:
        save_file({k: v.contiguous() for k, v in ft.state.items()}, str(tmp / "model.safetensors"))
        meta = {
            "selected_lr": ft.selected_lr,
            "selected_epoch": ft.selected_epoch,
            "selection_score": ft.selection_score,
            "train_seconds": ft.train_seconds,
            "history": [asdict(h) for h in ft.history],
        }
        (tmp / "finetune.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        os.replace(tmp, final)
    except OSError:
        # A full disk or a concurrent writer: the cache is an optimisation, never a failure.
        shutil.rmtree(tmp, ignore_errors=True)


def load_finetuned(cache_dir: Path, finetune_id: str) -> FineTuned | None:
    path = finetune_dir(cache_dir, finetune_id)
    try:
        meta = json.loads((path / "finetune.json").read_text(encoding="utf-8"))
        state: dict[str, torch.Tensor] = load_file(str(path / "model.safetensors"))
        history = tuple(EpochRecord(**h) for h in meta["history"])
        return FineTuned(state, meta["selected_lr"], meta["selected_epoch"], meta["selection_score"],
                         history, meta["train_seconds"])  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError):
        return None  # missing or damaged: fine-tune again
