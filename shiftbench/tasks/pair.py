"""Text-pair classification (NLI-style): two texts per example -- ``text_column`` (e.g. the
premise) and ``text_pair_column`` (the hypothesis) -- and one label.

The tokenizer receives the pair as a pair (``tokenizer(first, second)``), so it adds the
separator between the two texts and whatever special tokens its model was pretrained with
(``[CLS] a [SEP] b [SEP]`` for BERT). Everything after encoding -- the sequence head, one
prediction row per example, the statistics and metrics -- is that of text classification
(:class:`shiftbench.tasks.text.ExampleClassification`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from shiftbench.core.errors import ShiftbenchError
from shiftbench.tasks import reading
from shiftbench.tasks.base import Encoding, register_task
from shiftbench.tasks.text import ExampleClassification


@register_task("text-pair-classification")
class TextPairClassification(ExampleClassification):
    """Two texts per example (``text_column``, ``text_pair_column``), one label."""

    reads_text_pairs = True

    def check_spec(self, spec: Any) -> None:
        super().check_spec(spec)
        if spec.text_pair_column is None:
            raise ShiftbenchError(
                f"field 'text_pair_column': required for {self.name} (the column of each example's second text)"
            )
        if spec.text_pair_column == spec.text_column:
            raise ShiftbenchError(
                f"field 'text_pair_column': {spec.text_pair_column!r} is also the text_column; a pair needs two columns"
            )

    def read(self, ds: Any, spec: Any, where: str) -> tuple[list[Any], list[Any]]:
        first = reading.texts(ds, spec.text_column, where)
        second = reading.texts(ds, spec.text_pair_column, where)
        texts = list(zip(first, second))
        return texts, reading.labels(ds, spec, where, len(texts))

    def plain_text(self, text: Any) -> str:
        return " ".join(text)

    def encode(self, texts: Sequence[Any], tokenizer: Any, max_length: int) -> Encoding:
        first, second = [a for a, _ in texts], [b for _, b in texts]
        out = tokenizer(first, second, truncation=False, add_special_tokens=True)
        enc = self.encode_calls(tokenizer, out["input_ids"], max_length)
        if "token_type_ids" not in getattr(tokenizer, "model_input_names", ()):
            return enc  # the model has no segment embeddings (e.g. a decoder): the separator alone marks the pair
        # Where segment 1 starts (as the tokenizer marks it: BERT's [CLS] a [SEP] | b [SEP]); the
        # model sees it as token_type_ids (training.batching.collate), as it was pretrained on pairs.
        starts = np.fromiter(
            (next((i for i, t in enumerate(types) if t == 1), len(types)) for types in out["token_type_ids"]),
            dtype=np.int64,
            count=len(texts),
        )
        return Encoding(enc.input_ids, enc.n_truncated, segment_starts=starts)


__all__ = ["TextPairClassification"]
