"""Known-answer and property tests for shiftbench.tasks.metrics (and its `evaluate` wrapper)."""

from __future__ import annotations

import doctest
import os
from collections import Counter
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import shiftbench.tasks.metrics as metrics_module
from shiftbench.tasks.metrics import (
    METRIC_NAMES,
    PRIMARY_METRIC,
    classification_metrics,
    confusion_counts,
    evaluate_module_path,
    expected_calibration_error,
)


def _approx(expected: dict) -> dict:
    return {k: pytest.approx(float(v), abs=1e-12) for k, v in expected.items()}


# ---------------------------------------------------------------------------- known answers


def test_constants():
    assert METRIC_NAMES == ("accuracy", "macro_f1", "macro_precision", "macro_recall")
    assert PRIMARY_METRIC == "macro_f1"
    assert PRIMARY_METRIC in METRIC_NAMES


def test_three_class_ten_examples():
    labels = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    preds = [0, 0, 1, 2, 1, 1, 0, 2, 2, 1]
    # Confusion (rows true, cols pred):
    #   true 0: [2, 1, 1]   true 1: [1, 2, 0]   true 2: [0, 1, 2]
    # tp = [2, 2, 2]; predicted counts (col sums) = [3, 4, 3]; true counts = [4, 3, 3]
    # accuracy  = 6/10
    # precision = [2/3, 2/4, 2/3]           -> macro (2/3 + 1/2 + 2/3) / 3 = 11/18
    # recall    = [2/4, 2/3, 2/3]           -> macro 11/18
    # F1 = 2tp/(pred+true) = [4/7, 4/7, 4/6] -> macro (4/7 + 4/7 + 2/3) / 3 = 38/63
    np.testing.assert_array_equal(confusion_counts(labels, preds, 3), [[2, 1, 1], [1, 2, 0], [0, 1, 2]])
    got = classification_metrics(labels, preds)
    assert list(got) == list(METRIC_NAMES)
    assert all(type(v) is float for v in got.values())
    assert got == _approx(
        {
            "accuracy": Fraction(6, 10),
            "macro_f1": Fraction(38, 63),
            "macro_precision": Fraction(11, 18),
            "macro_recall": Fraction(11, 18),
        }
    )


def test_class_never_predicted_scores_zero():
    labels = [0, 0, 1, 1, 2, 2]
    preds = [0, 0, 1, 1, 1, 1]
    # Class 2 is never predicted: P = R = F1 = 0 for it (zero_division=0).
    # tp = [2, 2, 0]; pred counts = [2, 4, 0]; true counts = [2, 2, 2]
    # precision = [1, 1/2, 0] -> 1/2;  recall = [1, 1, 0] -> 2/3
    # F1 = [4/4, 4/6, 0] -> (1 + 2/3) / 3 = 5/9;  accuracy = 4/6
    assert classification_metrics(labels, preds) == _approx(
        {
            "accuracy": Fraction(2, 3),
            "macro_f1": Fraction(5, 9),
            "macro_precision": Fraction(1, 2),
            "macro_recall": Fraction(2, 3),
        }
    )


def test_class_only_predicted_counts_in_macro_average():
    labels = [0, 0, 1, 1]
    preds = [0, 2, 1, 1]
    # Class 2 never occurs in labels but is predicted once: it still enters the macro mean.
    # tp = [1, 2, 0]; pred counts = [1, 2, 1]; true counts = [2, 2, 0]
    # precision = [1, 1, 0] -> 2/3;  recall = [1/2, 1, 0] -> 1/2
    # F1 = [2/3, 4/4, 0] -> 5/9;  accuracy = 3/4
    assert classification_metrics(labels, preds) == _approx(
        {
            "accuracy": Fraction(3, 4),
            "macro_f1": Fraction(5, 9),
            "macro_precision": Fraction(2, 3),
            "macro_recall": Fraction(1, 2),
        }
    )


def test_binary():
    labels = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    preds = [1, 1, 1, 0, 1, 1, 0, 0, 0, 0]
    # class 1: tp 3, fp 2, fn 1 -> P 3/5, R 3/4, F1 6/9 = 2/3
    # class 0: tp 4, fp 1, fn 2 -> P 4/5, R 4/6, F1 8/11
    # macro P = 7/10, macro R = (3/4 + 2/3)/2 = 17/24, macro F1 = (2/3 + 8/11)/2 = 23/33
    assert classification_metrics(labels, preds) == _approx(
        {
            "accuracy": Fraction(7, 10),
            "macro_f1": Fraction(23, 33),
            "macro_precision": Fraction(7, 10),
            "macro_recall": Fraction(17, 24),
        }
    )


def test_perfect_predictions():
    labels = np.array([3, 0, 1, 1, 2, 3])
    assert classification_metrics(labels, labels.copy()) == {name: 1.0 for name in METRIC_NAMES}


def test_single_class_all_wrong():
    # labels all 0, preds all 1: both classes have P = R = F1 = 0.
    assert classification_metrics([0, 0], [1, 1]) == {name: 0.0 for name in METRIC_NAMES}


def test_label_ids_need_not_be_contiguous():
    # Same structure as the binary case with ids {0, 1} -> {-4, 17}.
    base = classification_metrics([1, 1, 0, 0, 0], [1, 0, 0, 1, 0])
    remapped = classification_metrics([17, 17, -4, -4, -4], [17, -4, -4, 17, -4])
    assert remapped == _approx(base)


def test_accepts_numpy_and_tuples():
    a = classification_metrics(np.array([0, 1, 1], dtype=np.int32), (0, 1, 0))
    b = classification_metrics([0, 1, 1], [0, 1, 0])
    assert a == b


# ---------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("labels", "preds", "match"),
    [
        ([0, 1, 2], [0, 1], "differ in length"),
        ([], [], "empty"),
        ([0, 1], [], "empty"),
        ([[0, 1]], [[0, 1]], "1-D"),
        ([0.0, 1.0], [0, 1], "integer"),
        (["a", "b"], [0, 1], "integer"),
    ],
)
def test_classification_metrics_rejects_bad_input(labels, preds, match):
    with pytest.raises(ValueError, match=match):
        classification_metrics(labels, preds)


def test_confusion_counts_rejects_out_of_range_ids():
    with pytest.raises(ValueError, match="outside"):
        confusion_counts([0, 3], [0, 1], 3)
    with pytest.raises(ValueError, match="outside"):
        confusion_counts([0, 1], [-1, 1], 3)


# ---------------------------------------------------------------------------- ECE


def test_ece_hand_computed_two_bins():
    labels = [0, 1, 0, 0]
    probs = [
        [0.9, 0.05, 0.05],  # conf 0.9, pred 0, correct -> bin (0.5, 1]
        [0.7, 0.2, 0.1],  # conf 0.7, pred 0, wrong   -> bin (0.5, 1]
        [0.4, 0.35, 0.25],  # conf 0.4, pred 0, correct -> bin (0, 0.5]
        [0.2, 0.3, 0.5],  # conf 0.5, pred 2, wrong   -> bin (0, 0.5] (right edge is closed)
    ]
    # bin (0, 0.5]: acc 1/2, conf (0.4 + 0.5)/2 = 0.45 -> 2/4 * 0.05 = 0.025
    # bin (0.5, 1]: acc 1/2, conf (0.9 + 0.7)/2 = 0.8  -> 2/4 * 0.30 = 0.150
    # ECE = 0.175  (were 0.5 put in the upper bin it would be 0.425)
    assert expected_calibration_error(labels, probs, n_bins=2) == pytest.approx(0.175, abs=1e-12)


def test_ece_one_bin_is_abs_accuracy_minus_mean_confidence():
    labels = [0, 1, 1, 0]
    probs = np.array([[0.6, 0.4], [0.3, 0.7], [0.8, 0.2], [0.55, 0.45]])
    # acc 3/4, mean conf (0.6 + 0.7 + 0.8 + 0.55)/4 = 0.6625 -> |0.75 - 0.6625| = 0.0875
    assert expected_calibration_error(labels, probs, n_bins=1) == pytest.approx(0.0875)


def test_ece_zero_for_confident_correct_predictions():
    assert expected_calibration_error([0, 1, 2], np.eye(3)) == 0.0


def test_ece_rejects_bad_input():
    with pytest.raises(ValueError, match="differ in length"):
        expected_calibration_error([0, 1], [[1.0, 0.0]])
    with pytest.raises(ValueError, match="2-D"):
        expected_calibration_error([0], [1.0, 0.0])
    with pytest.raises(ValueError, match="n_bins"):
        expected_calibration_error([0], [[1.0, 0.0]], n_bins=0)
    with pytest.raises(ValueError, match="empty"):
        expected_calibration_error([], np.zeros((0, 2)))
    with pytest.raises(ValueError, match="NaN"):
        expected_calibration_error([0], [[np.nan, 0.0]])


# ---------------------------------------------------------------------------- properties


def _reference_metrics(labels: list[int], preds: list[int]) -> dict[str, float]:
    """Straightforward per-class loop with scikit-learn's macro / zero_division=0 semantics."""
    classes = sorted(set(labels) | set(preds))
    ps, rs, fs = [], [], []
    for c in classes:
        tp = sum(1 for t, p in zip(labels, preds) if t == c and p == c)
        fp = sum(1 for t, p in zip(labels, preds) if t != c and p == c)
        fn = sum(1 for t, p in zip(labels, preds) if t == c and p != c)
        ps.append(tp / (tp + fp) if tp + fp else 0.0)
        rs.append(tp / (tp + fn) if tp + fn else 0.0)
        fs.append(2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else 0.0)
    n = len(classes)
    return {
        "accuracy": sum(t == p for t, p in zip(labels, preds)) / len(labels),
        "macro_f1": sum(fs) / n,
        "macro_precision": sum(ps) / n,
        "macro_recall": sum(rs) / n,
    }


def _reference_ece(labels: list[int], probs: list[list[float]], n_bins: int) -> float:
    edges = [i / n_bins for i in range(n_bins + 1)]
    bins: dict[int, list[tuple[float, bool]]] = {}
    for y, row in zip(labels, probs):
        conf = max(row)
        pred = row.index(conf)
        b = next((i for i in range(n_bins) if edges[i] < conf <= edges[i + 1]), 0)
        bins.setdefault(b, []).append((conf, pred == y))
    total = 0.0
    for items in bins.values():
        acc = sum(ok for _, ok in items) / len(items)
        conf = sum(c for c, _ in items) / len(items)
        total += len(items) / len(labels) * abs(acc - conf)
    return total


_label_pairs = st.integers(min_value=1, max_value=30).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(-2, 5), min_size=n, max_size=n),
        st.lists(st.integers(-2, 5), min_size=n, max_size=n),
    )
)


@settings(max_examples=150, deadline=None)
@given(_label_pairs)
def test_matches_reference_implementation(pair):
    labels, preds = pair
    got = classification_metrics(labels, preds)
    assert got == _approx(_reference_metrics(labels, preds))
    assert all(0.0 <= v <= 1.0 for v in got.values())
    # Every class in the union is present in the confusion matrix exactly as counted.
    classes = sorted(set(labels) | set(preds))
    idx = {c: i for i, c in enumerate(classes)}
    cm = confusion_counts([idx[t] for t in labels], [idx[p] for p in preds], len(classes))
    assert cm.sum() == len(labels)
    assert Counter(zip(labels, preds)) == Counter(
        {(classes[i], classes[j]): int(cm[i, j]) for i, j in zip(*np.nonzero(cm))}
    )


@settings(max_examples=100, deadline=None)
@given(
    st.integers(min_value=1, max_value=25).flatmap(
        lambda n: st.tuples(
            st.lists(st.integers(0, 2), min_size=n, max_size=n),
            st.lists(
                st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=3, max_size=3),
                min_size=n,
                max_size=n,
            ),
        )
    ),
    st.integers(min_value=1, max_value=20),
)
def test_ece_matches_reference_implementation(data, n_bins):
    labels, probs = data
    got = expected_calibration_error(labels, probs, n_bins=n_bins)
    assert 0.0 <= got <= 1.0
    assert got == pytest.approx(_reference_ece(labels, probs, n_bins), abs=1e-12)


# ---------------------------------------------------------------------------- evaluate + doctests


def test_doctests_pass():
    result = doctest.testmod(metrics_module, verbose=False)
    assert result.attempted >= 5
    assert result.failed == 0


def test_evaluate_module_file_is_inside_package():
    path = evaluate_module_path()
    assert os.path.isabs(path)
    assert os.path.isfile(path)
    # shiftbench/evaluate_modules/<name>/<name>.py, beside the tasks/ package metrics.py lives in
    package = os.path.dirname(os.path.dirname(os.path.abspath(metrics_module.__file__)))
    assert os.path.dirname(os.path.dirname(os.path.dirname(path))) == package


def test_evaluate_load_offline_matches(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")
    evaluate = pytest.importorskip("evaluate")

    metric = evaluate.load(evaluate_module_path(), cache_dir=str(tmp_path), keep_in_memory=True)
    assert type(metric).__name__ == "ShiftbenchClassification"
    labels = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    preds = [0, 0, 1, 2, 1, 1, 0, 2, 2, 1]
    got = metric.compute(references=labels, predictions=preds)
    assert got == classification_metrics(labels, preds)

    for start in range(0, len(labels), 4):  # batched accumulation gives the same numbers
        metric.add_batch(references=labels[start : start + 4], predictions=preds[start : start + 4])
    assert metric.compute() == classification_metrics(labels, preds)
