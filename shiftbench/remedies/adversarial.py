"""The ``adversarial`` remedy: FGM (Miyato et al. 2017) on the input embeddings.

After each clean backward pass the input embedding matrix is moved by ``adversarial_epsilon``
along its normalised gradient, the loss on that perturbed input is back-propagated too (the two
gradients add up), and the embeddings are restored before the optimizer step.
"""

from __future__ import annotations

from typing import Any

from shiftbench.remedies.base import Remedy, TrainContext, register_remedy
from shiftbench.training.hooks import TrainHooks, cross_entropy


def fgm_step(model: Any, batch: dict, labels: Any, epsilon: float, runtime: Any) -> None:
    """FGM: add epsilon * g / ||g|| to the input embedding matrix (g: its gradient from the clean
    loss), accumulate the gradient of the loss on that perturbed input, then restore the
    embeddings. No host sync: the norm stays on the device."""
    emb = model.get_input_embeddings().weight
    if emb.grad is None:
        return
    delta = epsilon * emb.grad / (emb.grad.norm() + 1e-12)
    emb.data.add_(delta)
    with runtime.autocast():
        adv_logits = model(**batch).logits
    cross_entropy(adv_logits, labels).backward()
    emb.data.sub_(delta)


class FGMHooks(TrainHooks):
    def __init__(self, epsilon: float):
        self.epsilon = epsilon

    def after_backward(self, model: Any, batch: dict, labels: Any, runtime: Any) -> None:
        fgm_step(model, batch, labels, self.epsilon, runtime)


@register_remedy("adversarial")
class Adversarial(Remedy):
    def train_hooks(self, ctx: TrainContext) -> TrainHooks:
        return FGMHooks(self.protocol.adversarial_epsilon)
