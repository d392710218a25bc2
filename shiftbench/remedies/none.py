"""The ``none`` remedy: the plain fine-tune of the protocol (every hook is the no-op default)."""

from __future__ import annotations

from shiftbench.remedies.base import Remedy, register_remedy


@register_remedy("none")
class NoRemedy(Remedy):
    """Fine-tune the checkpoint as the protocol says; nothing else."""
