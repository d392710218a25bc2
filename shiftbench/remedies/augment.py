"""The ``augment`` remedy: source-side text augmentation towards social-media style.

Each training text is replaced, with probability 1/2, by a variant where each operation fires
with probability ``augment_strength`` (p): random casing of words (lower / UPPER / Title), a
#hashtag made of one of its words, a leading @user mention, a trailing short URL; and, each with
probability p/3, swapping two adjacent characters inside a word (typo) and dropping one word.
Seeded by the training seed, so a run is reproducible; validation and test texts are never
changed. Text classification only: word-level edits would shift a word/tag alignment.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random

from shiftbench.core.errors import ShiftbenchError
from shiftbench.core.guards import preview
from shiftbench.data.datasets import DomainData, SplitData
from shiftbench.remedies.base import Remedy, register_remedy
from shiftbench.tasks import TextClassification


def augment_text(text: str, rng: random.Random, p: float) -> str:
    """One social-media-style variant of ``text``.

    >>> augment_text("Operating profit rose to EUR 13.1 mn", random.Random(3), 0.9)
    '@user Operating profit Rose to EUR 1.31 Mn #EUR https://t.co/oOj3'
    """
    words = text.split()
    if not words:
        return text
    if rng.random() < p:
        style = rng.choice((str.lower, str.upper, str.title))
        words = [style(w) if rng.random() < 0.5 else w for w in words]
    if rng.random() < p / 3 and len(words) > 1:
        del words[rng.randrange(len(words))]
    if rng.random() < p / 3:
        i = rng.randrange(len(words))
        w = words[i]
        if len(w) > 3:
            j = rng.randrange(len(w) - 1)
            words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2 :]
    if rng.random() < p:
        tag = "#" + "".join(ch for ch in rng.choice(words) if ch.isalnum())
        if len(tag) > 1:
            words.insert(rng.randrange(len(words) + 1), tag)
    if rng.random() < p:
        words.insert(0, "@user")
    if rng.random() < p:
        suffix = "".join(rng.choice("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") for _ in range(4))
        words.append(f"https://t.co/{suffix}")
    return " ".join(words)


def augment_split(split: SplitData, seed: int, strength: float) -> SplitData:
    """Each text replaced, with probability 1/2, by :func:`augment_text` of it; labels kept."""
    rng = random.Random(seed)
    texts = tuple(augment_text(t, rng, strength) if rng.random() < 0.5 else t for t in split.texts)
    return SplitData(texts, split.labels)


def augmented_source(source: DomainData, seed: int, strength: float) -> DomainData:
    """The source with its train role augmented and a fingerprint that says so (so the token
    cache and the data identity never confuse it with the original)."""
    kind = source.role("train").kind
    if not isinstance(kind, TextClassification):
        # Word-level edits (hashtags, dropout) would shift the word/tag alignment; a pair is two texts.
        raise ShiftbenchError(
            f"dataset {preview(source.spec.name)}: the augment remedy supports text classification only, not {kind.name}"
        )
    train = augment_split(source.role("train"), seed, strength)
    fp = hashlib.sha256(f"{source.fingerprint}|augment|{strength}|{seed}".encode()).hexdigest()[:16]
    return dataclasses.replace(source, splits={**source.splits, "train": train}, fingerprint=fp)


@register_remedy("augment")
class Augment(Remedy):
    tasks = (TextClassification.name,)  # one text per example (a prompt, an augmented sentence, soft targets per text)

    def transform_source(self, source: DomainData, seed: int) -> DomainData:
        return augmented_source(source, seed, self.protocol.augment_strength)
