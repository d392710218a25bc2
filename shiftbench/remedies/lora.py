"""The ``lora`` remedy: low-rank adapters (Hu et al. 2021) with peft, on a frozen checkpoint.

Inside :func:`shiftbench.training.train.fine_tune` the freshly loaded classifier is wrapped by
:func:`wrap`: every checkpoint weight is frozen, each targeted linear layer W gets a trainable
update ``(lora_alpha / lora_r) * B @ A`` (A: r x in, B: out x r, B starts at zero so training
starts from the checkpoint), and the new classification head (``classifier`` / ``score``) stays
fully trainable. ``lora_targets: null`` takes peft's default for the architecture (the attention
query and value projections: ``query``/``value`` for BERT, ``q_proj``/``v_proj`` for Llama, as in
the LoRA paper). Everything else, the BERT pooler included, stays as the checkpoint has it.

What a fine-tune keeps is :func:`merged_state`: the adapters folded into W and peft's wrappers
removed, so the state has exactly the keys of a plain classifier and the cache, scoring and
``--eval-only`` never need peft. peft itself is imported only when the remedy is used.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from shiftbench.core.errors import ShiftbenchError, one_line
from shiftbench.core.guards import preview
from shiftbench.registry.protocol import Protocol

MISSING_PEFT = "the lora remedy needs peft: pip install shiftbench[lora]"


def require_peft() -> Any:
    """The peft module, or a one-line error saying how to install it."""
    try:
        import peft
    except ImportError:
        raise ShiftbenchError(MISSING_PEFT) from None
    return peft


def task_type(model: torch.nn.Module) -> str:
    """peft's task type for a transformers classifier: TOKEN_CLS for a token classifier, else SEQ_CLS."""
    return "TOKEN_CLS" if type(model).__name__.endswith("ForTokenClassification") else "SEQ_CLS"


def wrap(model: torch.nn.Module, protocol: Protocol) -> torch.nn.Module:
    """``model`` with LoRA adapters: only the adapters and the classification head train.

    Call after seeding: the A matrices are drawn from the global generator (after the head,
    so the head starts exactly as it does in a plain fine-tune).
    """
    peft = require_peft()
    config = peft.LoraConfig(
        task_type=task_type(model),
        r=protocol.lora_r,
        lora_alpha=protocol.lora_alpha,
        lora_dropout=protocol.lora_dropout,
        target_modules=list(protocol.lora_targets) if protocol.lora_targets else None,
        bias="none",
    )
    try:
        with warnings.catch_warnings():  # peft calls a transformers API that transformers 5 deprecates
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
            return peft.get_peft_model(model, config)
    except ValueError as exc:  # no default targets for this architecture, or targets not found
        model_type = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
        first = one_line(exc)
        raise ShiftbenchError(
            f"lora remedy on model type {preview(model_type)}: {first} (set lora_targets in the protocol to module names of the model)"
        ) from None


def count_trainable(model: torch.nn.Module) -> int:
    """Parameters the optimizer updates (for a plain fine-tune: all of them)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def merged_state(peft_model: torch.nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The plain-classifier state dict of ``state`` (a state dict of ``peft_model``): W + scale * B @ A
    in each adapted layer, the trained head in place of peft's wrapper, on the CPU.

    ``peft_model`` is used up: its weights are overwritten and merged in place.
    """
    peft_model.load_state_dict(state)
    plain = peft_model.merge_and_unload()
    return {k: v.detach().to("cpu", copy=True) for k, v in plain.state_dict().items()}
