"""Classification and calibration metrics, in plain numpy.

The numbers match scikit-learn's ``accuracy_score`` and
``precision_recall_fscore_support(average="macro", zero_division=0)``: the macro average runs
over every label id that occurs in *either* the references or the predictions, and a ratio
whose denominator is zero (a class never predicted, or predicted but never true) counts as 0.

The same numbers are exposed as a Hugging Face ``evaluate`` module that loads offline::

    import evaluate
    from shiftbench.tasks.metrics import evaluate_module_path
    metric = evaluate.load(evaluate_module_path())
    metric.compute(references=[0, 1, 1], predictions=[0, 1, 0])
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

METRIC_NAMES: tuple[str, ...] = ("accuracy", "macro_f1", "macro_precision", "macro_recall")
PRIMARY_METRIC = "macro_f1"


def _as_label_array(values, name: str) -> np.ndarray:
    """Return ``values`` as a 1-D int64 array, or raise ValueError naming ``name``."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty; need at least one example")
    if arr.dtype.kind not in "biu":
        raise ValueError(f"{name} must hold integer class ids, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def _check_pair(labels, preds) -> tuple[np.ndarray, np.ndarray]:
    y_true = _as_label_array(labels, "labels")
    y_pred = _as_label_array(preds, "preds")
    if y_true.shape[0] != y_pred.shape[0]:
        raise ValueError(f"labels and preds differ in length: {y_true.shape[0]} labels, {y_pred.shape[0]} preds")
    return y_true, y_pred


def confusion_counts(labels, preds, num_labels: int) -> np.ndarray:
    """Count matrix of shape ``(num_labels, num_labels)``: row = true id, column = predicted id.

    Ids must lie in ``[0, num_labels)``.

    >>> confusion_counts([0, 1, 1, 2], [0, 1, 2, 2], 3)
    array([[1, 0, 0],
           [0, 1, 1],
           [0, 0, 1]])
    """
    y_true, y_pred = _check_pair(labels, preds)
    num_labels = int(num_labels)
    if num_labels < 1:
        raise ValueError(f"num_labels must be >= 1, got {num_labels}")
    for name, arr in (("labels", y_true), ("preds", y_pred)):
        if arr.min() < 0 or arr.max() >= num_labels:
            raise ValueError(f"{name} hold ids outside [0, {num_labels}): min {arr.min()}, max {arr.max()}")
    flat = np.bincount(y_true * num_labels + y_pred, minlength=num_labels * num_labels)
    return flat.reshape(num_labels, num_labels).astype(np.int64)


def _safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Elementwise ``num / den`` with 0 wherever ``den == 0`` (scikit-learn's zero_division=0)."""
    out = np.zeros(num.shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out


def classification_metrics(labels, preds) -> dict[str, float]:
    """Accuracy and macro precision / recall / F1 of integer predictions.

    Classes are the union of the ids in ``labels`` and ``preds``; per-class F1 is
    ``2 * tp / (2 * tp + fp + fn)`` and the macro scores are unweighted means over classes.
    Raises ValueError on empty input, length mismatch, non-1-D or non-integer input.

    >>> m = classification_metrics([0, 1, 2, 2], [0, 2, 2, 2])
    >>> {k: round(v, 4) for k, v in m.items()}
    {'accuracy': 0.75, 'macro_f1': 0.6, 'macro_precision': 0.5556, 'macro_recall': 0.6667}

    Class 1 is never predicted, so its precision, recall and F1 are all 0.
    """
    y_true, y_pred = _check_pair(labels, preds)
    classes = np.union1d(y_true, y_pred)
    cm = confusion_counts(np.searchsorted(classes, y_true), np.searchsorted(classes, y_pred), classes.size)
    tp = np.diag(cm).astype(np.float64)
    pred_count = cm.sum(axis=0).astype(np.float64)  # tp + fp
    true_count = cm.sum(axis=1).astype(np.float64)  # tp + fn
    precision = _safe_divide(tp, pred_count)
    recall = _safe_divide(tp, true_count)
    f1 = _safe_divide(2.0 * tp, pred_count + true_count)
    return {
        "accuracy": float(tp.sum() / y_true.size),
        "macro_f1": float(f1.mean()),
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
    }


def expected_calibration_error(labels, probs, n_bins: int = 15) -> float:
    """Top-label expected calibration error (Guo et al., 2017).

    Confidence is the row maximum of ``probs`` (shape ``(N, C)``) and the prediction its argmax
    (first index on ties). Confidences fall in ``n_bins`` equal-width bins
    ``(0, 1/n], (1/n, 2/n], ..., ((n-1)/n, 1]`` (a confidence of exactly 0 goes in the first);
    the result is ``sum_b |b| / N * |accuracy(b) - mean confidence(b)|`` over non-empty bins.

    One bin holding a right answer at 0.9 and a wrong one at 0.6: ``|0.5 - 0.75| = 0.25``.

    >>> round(expected_calibration_error([0, 1], [[0.9, 0.1], [0.6, 0.4]], n_bins=2), 4)
    0.25
    >>> expected_calibration_error([0, 1], [[1.0, 0.0], [0.0, 1.0]])
    0.0
    """
    y_true = _as_label_array(labels, "labels")
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"probs must be 2-D (N, C), got shape {p.shape}")
    if p.shape[0] != y_true.shape[0]:
        raise ValueError(f"labels and probs differ in length: {y_true.shape[0]} vs {p.shape[0]}")
    if p.shape[1] == 0:
        raise ValueError("probs has no columns")
    if not np.all(np.isfinite(p)):
        raise ValueError("probs contain NaN or infinity")
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    n_bins = int(n_bins)

    confidence = p.max(axis=1)
    correct = (p.argmax(axis=1) == y_true).astype(np.float64)
    edges = np.arange(n_bins + 1) / n_bins  # correctly rounded k / n_bins, unlike linspace
    # bin i holds edges[i] < conf <= edges[i + 1]; clip puts conf == 0 (and > 1) at the ends.
    bin_ids = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    counts = np.bincount(bin_ids, minlength=n_bins).astype(np.float64)
    acc_sum = np.bincount(bin_ids, weights=correct, minlength=n_bins)
    conf_sum = np.bincount(bin_ids, weights=confidence, minlength=n_bins)
    nonempty = counts > 0
    gaps = np.abs(acc_sum[nonempty] - conf_sum[nonempty]) / counts[nonempty]
    return float(np.sum(counts[nonempty] / y_true.size * gaps))


def evaluate_module_path() -> str:
    """Absolute path of the bundled ``evaluate`` script (a ``evaluate.Metric`` subclass).

    ``evaluate.load(evaluate_module_path())`` works offline and returns the same numbers as
    :func:`classification_metrics`.

    >>> evaluate_module_path().endswith("shiftbench_classification.py")
    True
    """
    module_dir = Path(__file__).resolve().parent.parent / "evaluate_modules" / "shiftbench_classification"
    return str(module_dir / "shiftbench_classification.py")


__all__ = [
    "METRIC_NAMES",
    "PRIMARY_METRIC",
    "classification_metrics",
    "confusion_counts",
    "evaluate_module_path",
    "expected_calibration_error",
]
