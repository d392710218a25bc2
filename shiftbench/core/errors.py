"""The one exception type for bad user input.

Anything the user can fix (a registry file, a data file, a CLI flag, a results directory)
raises :class:`ShiftbenchError` with a single line that names the file, field and value. The
CLI prints it on stderr and exits with status 2, no traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from shiftbench.core.preview import preview

EXIT_USAGE = 2


class ShiftbenchError(Exception):
    """A user-facing error: one line, names what is wrong and where."""

    # A last bound on a message (values quoted in it are cut by preview; paths are not).
    MAX_CHARS = 2000

    def __init__(self, message: str):
        text = " ".join(str(message).split())
        super().__init__(text if len(text) <= self.MAX_CHARS else text[: self.MAX_CHARS - 3] + "...")


class DataUnavailable(ShiftbenchError):
    """A dataset's files are not in the data dir and cannot be fetched (offline, or the Hub refused)."""


def one_line(exc: BaseException) -> str:
    """The first non-blank line of an exception's message, or its type's name when it has none
    (for quoting a library's multi-line error inside a one-line :class:`ShiftbenchError`).

    >>> one_line(ValueError("bad header\\n  at byte 12"))
    'bad header'
    >>> one_line(KeyError())
    'KeyError'
    """
    lines = str(exc).strip().splitlines()
    return lines[0].strip() if lines else type(exc).__name__


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Suffix suggesting the closest known names, or listing them when nothing is close.

    >>> did_you_mean("fpb_to_tfn", ["fpb_to_tfns", "sst2_to_tweeteval"])
    " (did you mean 'fpb_to_tfns'?)"
    >>> did_you_mean("zzz", ["a", "b"])
    ' (known: a, b)'
    """
    choices = sorted(str(c) for c in choices)
    name = str(name)
    # A name far longer than any choice is not a typo of one (and matching it costs its length).
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.6) if len(name) <= 1000 else []
    if close:
        return " (did you mean " + " or ".join(preview(c) for c in close) + "?)"
    if not choices:
        return " (none are defined)"
    shown = ", ".join(c if len(c) <= 60 else preview(c) for c in choices[:12]) + (", ..." if len(choices) > 12 else "")
    return f" (known: {shown})"
