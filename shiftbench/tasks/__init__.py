"""Task kinds: how each kind reads labels, encodes, predicts and scores (:mod:`shiftbench.tasks.base`).

Importing this package registers the built-in kinds; adding a kind is one module here (a
:class:`TaskKind` subclass under ``@register_task("name")``) and its import below.
"""

from shiftbench.tasks.base import IGNORE, Encoding, TaskKind, get_task, register_task, task_names
from shiftbench.tasks.pair import TextPairClassification
from shiftbench.tasks.text import ExampleClassification, TextClassification
from shiftbench.tasks.token import TokenClassification, bio_tags

__all__ = [
    "IGNORE",
    "Encoding",
    "ExampleClassification",
    "TaskKind",
    "TextClassification",
    "TextPairClassification",
    "TokenClassification",
    "bio_tags",
    "get_task",
    "register_task",
    "task_names",
]
