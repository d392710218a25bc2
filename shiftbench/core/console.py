"""Progress lines and warnings for the user: one line each on stderr, flushed at once (stdout
carries what a command produces, e.g. the leaderboard table)."""

from __future__ import annotations

import sys


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
