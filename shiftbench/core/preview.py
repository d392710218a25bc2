"""A short, cut ``repr`` of any value for an error message (:func:`preview`).

Its own module at the bottom of ``core`` because both :mod:`shiftbench.core.errors` (``did_you_mean``)
and :mod:`shiftbench.core.guards` quote values with it; :mod:`shiftbench.core.guards` re-exports it.
"""

from __future__ import annotations

from typing import Any

PREVIEW_CHARS = 60


class _Full(Exception):
    pass


def preview(value: Any, limit: int = PREVIEW_CHARS) -> str:
    """``repr(value)`` when that is short, else its first ``limit`` characters and ``...``;
    never builds more than about ``limit`` characters, whatever the value's size or aliasing.

    >>> preview([1, "a", {"k": None}])
    "[1, 'a', {'k': None}]"
    >>> preview("x" * 100, limit=12)
    "'xxxxxxxx..."
    >>> bomb = ["lol"] * 9
    >>> for _ in range(40):
    ...     bomb = [bomb] * 9
    >>> shown = preview(bomb)
    >>> len(shown) <= 60 and shown.endswith("...")
    True
    """
    parts: list[str] = []
    room = [limit + 1]

    def emit(text: str) -> None:
        if room[0] <= 0:
            raise _Full
        parts.append(text[: room[0]])
        room[0] -= len(text)

    def walk(v: Any, depth: int) -> None:
        if room[0] <= 0 or depth > 32:
            raise _Full
        if isinstance(v, (str, bytes)):
            emit(repr(v[: limit + 1]))
        elif isinstance(v, bool) or v is None or isinstance(v, float):
            emit(repr(v))
        elif isinstance(v, int):
            # repr of an int of more than 4300 digits raises ValueError; its size is what matters
            emit(repr(v) if v.bit_length() <= 256 else f"<an integer of {v.bit_length()} bits>")
        elif isinstance(v, dict):
            emit("{")
            for i, (k, x) in enumerate(v.items()):
                emit(", " if i else "")
                walk(k, depth + 1)
                emit(": ")
                walk(x, depth + 1)
            emit("}")
        elif isinstance(v, (list, tuple)):
            emit("[" if isinstance(v, list) else "(")
            for i, x in enumerate(v):
                emit(", " if i else "")
                walk(x, depth + 1)
            emit("]" if isinstance(v, list) else ",)" if len(v) == 1 else ")")
        else:
            emit(f"<{type(v).__name__}>")

    try:
        walk(value, 0)
        cut = False
    except _Full:
        cut = True
    text = "".join(parts)
    return text if len(text) <= limit and not cut else text[: limit - 3] + "..."
