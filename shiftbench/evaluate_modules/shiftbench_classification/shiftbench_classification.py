"""Hugging Face ``evaluate`` wrapper around :func:`shiftbench.tasks.metrics.classification_metrics`.

Load it offline by absolute path (``evaluate`` copies this script into its module cache, so the
import below must stay absolute)::

    import evaluate
    from shiftbench.tasks.metrics import evaluate_module_path
    metric = evaluate.load(evaluate_module_path())
    metric.compute(references=[0, 1, 1], predictions=[0, 1, 0])
"""

import datasets
import evaluate

from shiftbench.tasks.metrics import classification_metrics

_DESCRIPTION = (
    "Accuracy plus macro-averaged precision, recall and F1 over the union of label ids seen in "
    "references or predictions; a zero denominator counts as 0 (scikit-learn's "
    "zero_division=0). Identical to shiftbench.tasks.metrics.classification_metrics."
)

_KWARGS_DESCRIPTION = (
    "Args:\n"
    "    predictions (list of int): predicted class ids.\n"
    "    references (list of int): gold class ids, same length as predictions.\n"
    "Returns:\n"
    "    dict with float values for 'accuracy', 'macro_f1', 'macro_precision', 'macro_recall'.\n"
    "Example:\n"
    "    >>> metric.compute(references=[0, 1, 1], predictions=[0, 1, 0])['accuracy']\n"
    "    0.6666666666666666\n"
)

_CITATION = ""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ShiftbenchClassification(evaluate.Metric):
    """Accuracy and macro precision / recall / F1 for single-label classification."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("int32"),
                    "references": datasets.Value("int32"),
                }
            ),
        )

    def _compute(self, predictions, references):
        return classification_metrics(references, predictions)
