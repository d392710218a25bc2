"""On-disk caches (fine-tuned weights, training checkpoints, tokenized splits) and their upkeep.

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
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from shiftbench.core.errors import ShiftbenchError
from shiftbench.training.train import EpochRecord, FineTuned

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
            "trainable_params": ft.trainable_params,
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
        return FineTuned(
            state,
            meta["selected_lr"],
            meta["selected_epoch"],
            meta["selection_score"],
            history,
            meta["train_seconds"],
            meta.get("trainable_params"),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None  # missing or damaged: fine-tune again


KINDS = ("finetunes", "checkpoints", "tokens")


@dataclass(frozen=True)
class CacheUsage:
    kind: str
    entries: int
    bytes: int


def _entries(cache_dir: Path, kind: str) -> list[Path]:
    root = Path(cache_dir) / kind
    return sorted(p for p in root.iterdir() if not p.name.startswith(".")) if root.is_dir() else []


def _size(path: Path) -> int:
    """Bytes of an entry, never following a symlink (a linked entry counts as the link: pruning
    removes the link, not what it points to)."""
    if path.is_symlink() or not path.is_dir():
        return path.lstat().st_size
    return sum(f.lstat().st_size for f in path.rglob("*") if f.is_symlink() or f.is_file())


def _remove(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        path.unlink()  # a symlinked entry: the link goes, its target is not ours to delete
    else:
        shutil.rmtree(path)


def cache_usage(cache_dir: Path) -> list[CacheUsage]:
    return [CacheUsage(k, len(e), sum(_size(p) for p in e)) for k in KINDS for e in [_entries(cache_dir, k)]]


def prune_cache(cache_dir: Path, kinds: tuple[str, ...] = KINDS, older_than_days: float = 0.0) -> tuple[int, int]:
    """Delete cache entries of ``kinds`` not modified for ``older_than_days``; (entries, bytes) freed.

    Results are never touched: a pruned fine-tune is trained again only if a run still needs it.
    """
    cutoff = time.time() - older_than_days * 86400
    n = freed = 0
    for kind in kinds:
        for entry in _entries(cache_dir, kind):
            try:
                if entry.lstat().st_mtime <= cutoff:
                    size = _size(entry)
                    _remove(entry)
                    n, freed = n + 1, freed + size
            except FileNotFoundError:
                continue  # removed meanwhile by another prune
            except OSError as exc:
                raise ShiftbenchError(f"cache prune: cannot remove {entry}: {exc.strerror or exc}") from None
    return n, freed
