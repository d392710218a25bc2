"""Train/test overlap between a source's training split and a target's test split.

A target test text that also occurs in the source training data is not out of domain for the
model; counting such texts (exactly and after normalisation) protects OOD scores, and
``run --dedup`` removes them from the target before scoring.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace

from shiftbench.data.datasets import DomainData

_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_MENTION = re.compile(r"@\w+")


def normalise_text(text: str) -> str:
    """Text as compared for near-duplicates: URLs and @mentions removed, lower-cased, whitespace collapsed.

    >>> normalise_text("  RT @Trader: $AAPL   UP! https://t.co/xYz\\n  Today ")
    'rt : $aapl up! today'
    """
    return " ".join(_MENTION.sub(" ", _URL.sub(" ", text)).lower().split())


@dataclass(frozen=True)
class Overlap:
    n_test: int
    exact: int  # target test texts that occur verbatim in the source train split
    normalised: int  # ... after normalise_text (a superset of exact)


def _flags(train_texts: Iterable[str], test_texts: Iterable[str]) -> list[tuple[bool, bool]]:
    exact = set(train_texts)
    loose = {normalise_text(t) for t in exact}
    return [(t in exact, normalise_text(t) in loose) for t in test_texts]


def count_overlap(train_texts: Iterable[str], test_texts: Iterable[str]) -> Overlap:
    """
    >>> count_overlap(["Profit rose", "Shares fell"], ["profit   ROSE", "Shares fell", "new text"])
    Overlap(n_test=3, exact=1, normalised=2)
    """
    flags = _flags(train_texts, list(test_texts))
    return Overlap(len(flags), sum(e for e, _ in flags), sum(n for _, n in flags))


def without_overlap(target: DomainData, source: DomainData) -> DomainData:
    """The target with test texts that (after normalisation) occur in the source train split removed.

    Its fingerprint changes with the source's, so deduplicated scores are never pooled with raw ones.
    """
    test = target.role("test")
    flags = _flags(source.role("train").plain_texts(), test.plain_texts())
    kept = test.subset([i for i, (_, loose) in enumerate(flags) if not loose])
    fp = hashlib.sha256(f"{target.fingerprint}|dedup|{source.fingerprint}".encode()).hexdigest()[:16]
    return replace(target, splits={**target.splits, "test": kept}, fingerprint=fp)
