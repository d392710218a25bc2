"""What a remedy may change in the training loop (:func:`shiftbench.training.train.fine_tune`).

The loop calls these at fixed points and knows nothing else about remedies; this base class
changes nothing (a plain fine-tune). A remedy (:mod:`shiftbench.remedies`) returns a subclass:
lora wraps the model and exports merged weights, distill replaces the loss, adversarial adds a
step after the backward pass. Importing this module does not import torch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def cross_entropy(logits: Any, labels: Any) -> Any:
    """Mean cross-entropy (nats) over the labelled positions: (B, C) logits with (B,) labels, or
    (B, T, C) with (B, T) tag ids where IGNORE (-100) marks sub-tokens, specials and padding."""
    import torch.nn.functional as F

    from shiftbench.data.encode import IGNORE

    return F.cross_entropy(logits.float().flatten(0, -2), labels.flatten(), ignore_index=IGNORE)


def count_trainable(model: Any) -> int:
    """Parameters the optimizer updates (for a plain fine-tune: all of them)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class TrainHooks:
    """No-op hooks: the plain fine-tune. Subclasses override what their remedy changes."""

    def wrap_model(self, model: Any) -> Any:
        """The module to train, given the freshly loaded classifier (called after seeding)."""
        return model

    def loss(self, logits: Any, labels: Any, idx: Any) -> Any:
        """The loss of one batch; ``idx``: the batch's example indices in the train split."""
        return cross_entropy(logits, labels)

    def after_backward(self, model: Any, batch: dict, labels: Any, runtime: Any) -> None:
        """Called after ``loss.backward()``, before gradient clipping and the optimizer step."""

    def export_state(self, state: dict[str, Any], build: Callable[[], Any]) -> dict[str, Any] | None:
        """The weights to keep instead of the selected ``state`` (a state dict of the wrapped module),
        or None to keep ``state`` as it is. ``build()`` makes a fresh wrapped module."""
        return None


NO_HOOKS = TrainHooks()  # the plain fine-tune's (stateless, so one instance serves every call)
