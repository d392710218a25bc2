"""Text classification: one text and one label per example.

Unit = example; statistics D = K*K + 3B + 1 for K labels: the one-hot confusion cell
``label * K + pred`` (row = true, column = predicted), then the top-label calibration block
(:mod:`shiftbench.tasks.stats`). Metrics: ``accuracy``, ``macro_f1`` (headline),
``macro_precision``, ``macro_recall`` (averaged over the labels present in the gold labels or
predictions of the (re)sample, as the runner does), ``ece``, ``ece_debiased``, ``brier``.

>>> kind = get_task("text-classification")
>>> s = kind.unit_stats([0, 1, 1], [0, 1, 0], [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], None, ("neg", "pos"))
>>> s.shape
(3, 50)
>>> round(float(kind.metric_fn("accuracy", ("neg", "pos"))(s.sum(axis=0))), 4)
0.6667
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from shiftbench.tasks import reading
from shiftbench.tasks.base import Encoding, TaskKind, get_task, register_task
from shiftbench.tasks.metrics import classification_metrics
from shiftbench.tasks.stats import (
    CAL_WIDTH,
    LOWER_IS_BETTER,
    MetricDoc,
    MetricExample,
    SumMetric,
    cal_columns,
    calibration_docs,
    calibration_metric,
    calibration_stats,
    divide,
)

_PRESENT = (
    "over the labels present in the gold labels or the predictions of the (re)sampled test set "
    "(scikit-learn's default; a label with a zero denominator counts 0)"
)


class ExampleClassification(TaskKind):
    """What every kind with one label per example shares: the sequence head, one prediction row
    per example, confusion-cell statistics. Subclasses say how an example is read and encoded."""

    headline = "macro_f1"
    head_class = "AutoModelForSequenceClassification"
    peft_task_type = "SEQ_CLS"
    allows_unlabelled = True  # one probability vector per example: the label-free estimators apply

    def label_space(self, labels: Iterable[Any]) -> tuple[str, ...]:
        return tuple(sorted(set(labels)))

    @staticmethod
    def encode_calls(tokenizer: Any, enc: list[list[int]], max_length: int) -> Encoding:
        """Truncate the tokenizer's id lists (special tokens added, nothing cut yet)."""
        n_truncated = sum(len(ids) > max_length for ids in enc)
        keep_last = tokenizer.sep_token_id is not None
        ids = tuple(np.asarray(reading.truncate(seq, max_length, keep_last), dtype=np.int64) for seq in enc)
        return Encoding(ids, n_truncated)

    def scores(self, labels, preds, lengths, label_space) -> dict[str, float]:
        return classification_metrics(labels, preds)

    def metrics(self, label_space: Sequence[str]) -> tuple[str, ...]:
        return ("accuracy", "macro_f1", "macro_precision", "macro_recall", "ece", "ece_debiased", "brier")

    def metric_docs(self) -> tuple[MetricDoc, ...]:
        return (
            MetricDoc("accuracy", "Share of examples whose prediction (the most probable label) is the gold label."),
            MetricDoc(
                "macro_f1",
                f"Unweighted mean of the per-label F1 = 2 TP / (2 TP + FP + FN), {_PRESENT}. The headline: "
                "a rare label (FPB's *negative*, 12 % of its test split) weighs as much as a frequent one, so a model "
                "that predicts the majority label everywhere scores low even where its accuracy looks fine.",
            ),
            MetricDoc("macro_precision", f"Unweighted mean of the per-label precision TP / (TP + FP), {_PRESENT}."),
            MetricDoc("macro_recall", f"Unweighted mean of the per-label recall TP / (TP + FN), {_PRESENT}."),
            *calibration_docs("examples", "examples"),
        )

    def metric_example(self) -> MetricExample:
        return MetricExample(
            label_space=("negative", "neutral", "positive"),
            labels=[0, 1, 1, 2, 2],
            preds=[0, 1, 2, 2, 1],
            probs=[[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.4, 0.5], [0.1, 0.2, 0.7], [0.3, 0.4, 0.3]],
            lengths=None,
            note="five examples, one label each; the third and the fifth are wrong",
        )

    def width(self, label_space: Sequence[str]) -> int:
        return len(label_space) ** 2 + CAL_WIDTH

    def unit_stats(self, labels, preds, probs, lengths, label_space: Sequence[str]) -> np.ndarray:
        labels, preds = np.asarray(labels, dtype=np.int64), np.asarray(preds, dtype=np.int64)
        k, n = len(label_space), len(labels)
        out = np.zeros((n, k * k + CAL_WIDTH))
        out[np.arange(n), labels * k + preds] = 1.0
        out[:, k * k :] = calibration_stats(np.asarray(probs), labels, preds, np.arange(n), n)
        return out

    def columns(self, metric: str, label_space: Sequence[str]) -> np.ndarray:
        self.check_metric(metric, label_space)
        k = len(label_space)
        return cal_columns(metric, k * k) if metric in LOWER_IS_BETTER else np.arange(k * k)

    def metric_fn(self, metric: str, label_space: Sequence[str]) -> SumMetric:
        self.check_metric(metric, label_space)
        k = len(label_space)
        if metric in LOWER_IS_BETTER:
            cal = calibration_metric(metric)
            return lambda sums: cal(np.asarray(sums)[..., k * k :])

        def fn(sums: np.ndarray) -> np.ndarray:
            cm = np.asarray(sums)[..., : k * k].reshape(*np.shape(sums)[:-1], k, k)
            tp = np.diagonal(cm, axis1=-2, axis2=-1)
            if metric == "accuracy":
                return divide(tp.sum(axis=-1), cm.sum(axis=(-2, -1)))
            true_count, pred_count = cm.sum(axis=-1), cm.sum(axis=-2)
            present = (true_count + pred_count) > 0  # classes in the labels or predictions of this sample
            per_class = {
                "macro_f1": divide(2.0 * tp, true_count + pred_count),
                "macro_precision": divide(tp, pred_count),
                "macro_recall": divide(tp, true_count),
            }[metric]
            return divide((per_class * present).sum(axis=-1), present.sum(axis=-1).astype(np.float64))

        return fn


@register_task("text-classification")
class TextClassification(ExampleClassification):
    """One text per example (``text_column``), one label (``label_column``)."""

    def read(self, ds: Any, spec: Any, where: str) -> tuple[list[Any], list[Any]]:
        texts = reading.texts(ds, spec.text_column, where)
        return texts, reading.labels(ds, spec, where, len(texts))

    def encode(self, texts: Sequence[Any], tokenizer: Any, max_length: int) -> Encoding:
        # One call over the whole split: the fast (Rust) tokenizer batches internally.
        enc = tokenizer(list(texts), truncation=False, add_special_tokens=True)["input_ids"]
        return self.encode_calls(tokenizer, enc, max_length)


__all__ = ["ExampleClassification", "TextClassification", "get_task"]
