"""The ``lora`` remedy: low-rank adapters (Hu et al. 2021) with peft, on a frozen checkpoint.

Inside :func:`shiftbench.training.train.fine_tune` the freshly loaded classifier is wrapped by
:func:`wrap` (the ``wrap_model`` hook): every checkpoint weight is frozen, each targeted linear layer W gets a trainable
update ``(lora_alpha / lora_r) * B @ A`` (A: r x in, B: out x r, B starts at zero so training
starts from the checkpoint), and the new classification head (``classifier`` / ``score``) stays
fully trainable. ``lora_targets: null`` takes peft's default for the architecture (the attention
query and value projections: ``query``/``value`` for BERT, ``q_proj``/``v_proj`` for Llama, as in
the LoRA paper). Everything else, the BERT pooler included, stays as the checkpoint has it.

What a fine-tune keeps is :func:`merged_state` (the ``export_state`` hook): the adapters folded into W and peft's wrappers
removed, so the state has exactly the keys of a plain classifier and the cache, scoring and
``--eval-only`` never need peft. peft itself is imported only when the remedy is used.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from shiftbench.core.errors import ShiftbenchError, one_line
from shiftbench.core.guards import preview
from shiftbench.modeling.models import ResolvedModel
from shiftbench.registry.protocol import Protocol
from shiftbench.remedies.base import Dependency, Remedy, TrainContext, register_remedy
from shiftbench.training.hooks import TrainHooks

if TYPE_CHECKING:  # annotations only: torch is imported when a model is wrapped, not with this module
    import torch

MISSING_PEFT = "the lora remedy needs peft: pip install shiftbench[lora]"


def require_peft() -> Any:
    """The peft module, or a one-line error saying how to install it."""
    try:
        import peft
    except ImportError:
        raise ShiftbenchError(MISSING_PEFT) from None
    return peft


def wrap(model: torch.nn.Module, protocol: Protocol, task_type: str) -> torch.nn.Module:
    """``model`` with LoRA adapters: only the adapters and the classification head train.

    Call after seeding: the A matrices are drawn from the global generator (after the head,
    so the head starts exactly as it does in a plain fine-tune). ``task_type``: peft's task type
    of the model's head, as its task kind declares it (``TaskKind.peft_task_type``).
    """
    peft = require_peft()
    config = peft.LoraConfig(
        task_type=task_type,
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


def merged_state(peft_model: torch.nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The plain-classifier state dict of ``state`` (a state dict of ``peft_model``): W + scale * B @ A
    in each adapted layer, the trained head in place of peft's wrapper, on the CPU.

    ``peft_model`` is used up: its weights are overwritten and merged in place.
    """
    peft_model.load_state_dict(state)
    plain = peft_model.merge_and_unload()
    return {k: v.detach().to("cpu", copy=True) for k, v in plain.state_dict().items()}


class LoraHooks(TrainHooks):
    def __init__(self, protocol: Protocol, task_type: str):
        self.protocol = protocol
        self.task_type = task_type  # peft's name for the head, from the task kind

    def wrap_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return wrap(model, self.protocol, self.task_type)

    def export_state(
        self, state: dict[str, torch.Tensor], build: Callable[[], torch.nn.Module]
    ) -> dict[str, torch.Tensor]:
        return merged_state(build(), state)


@register_remedy("lora")
class Lora(Remedy):
    def check(
        self, settings: Any, pairs: Sequence[Any], models: Sequence[ResolvedModel], dependencies: Sequence[Dependency]
    ) -> None:
        super().check(settings, pairs, models, dependencies)
        require_peft()  # fail before any data is loaded, not after the first fine-tune starts

    def train_hooks(self, ctx: TrainContext) -> TrainHooks:
        return LoraHooks(self.protocol, ctx.train.kind.peft_task_type)
