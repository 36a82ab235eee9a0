"""model_quality.json: a model's quality on a test set in the statistics shape SageMaker's Model Monitor
(model quality) writes, which the Model Registry reads as `ModelMetrics.model_statistics`:

    {"binary_classification_metrics": {"confusion_matrix": {"0": {"0": 50, "1": 3}, "1": {...}},
                                       "accuracy": {"value": 0.94, "standard_deviation": 0.011}, ...}}

with `multiclass_classification_metrics` or `regression_metrics` for the other tasks. The metric names are
SageMaker's. The values come from the metric code training uses (optml.train.metrics), so they agree with
evaluation.json; the confusion matrix is keyed by true label, then predicted label, as SageMaker's is.

- Binary: the positive class is the second of the model's classes (class index 1), as in training's metrics.
  The "best constant classifier" always predicts the positive class — the constant with the best recall and
  F-scores (the other scores 0), and the one SageMaker's published examples describe.
- Multiclass: weighted averages (by each class's share of the test rows). The best constant classifier
  predicts the test set's most frequent class: no constant does better on accuracy or any weighted score.
- `standard_deviation`: over BOOTSTRAP_RESAMPLES bootstrap resamples of the test rows (drawn with
  replacement, seeded, so a rerun writes the same file), of the resamples where the metric is defined (AUC
  needs both classes, r2 a label that varies). SageMaker's Model Monitor instead takes the spread of five
  random 80% subsamples, and writes "NaN" below 200 rows; a bootstrap estimates the metric's standard error
  on a test set of this size.
- A value that cannot be computed is the string "NaN", as SageMaker writes it (JSON has no NaN).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from optml.container.artifact import Label
from optml.container.kinds import BINARY, MULTICLASS, REGRESSION
from optml.train.metrics import (
    confusion_matrix,
    f_score,
    per_class_rates,
    precision_recall_curve,
    regression_metrics,
    roc_auc,
    roc_curve,
)
from optml.train.report import ChannelResult

MODEL_QUALITY_FILE = "model_quality.json"
BOOTSTRAP_RESAMPLES = 200  # the standard deviation's own relative error is then about 5% (1/sqrt(2*199))
BOOTSTRAP_SEED = 0
MAX_CURVE_POINTS = 1000  # a curve has a point per distinct score: cap the file's size for large test sets
F_SCORES = {"f0_5": 0.5, "f1": 1.0, "f2": 2.0}
SECTION = {
    BINARY: "binary_classification_metrics",
    MULTICLASS: "multiclass_classification_metrics",
    REGRESSION: "regression_metrics",
}

Scores = dict[str, float]


def binary_scores(matrix: np.ndarray) -> Scores:
    """The positive class's (index 1) scores from a 2×2 confusion matrix (rows true, columns predicted)."""
    precision, recall, _ = per_class_rates(matrix)
    (true_neg, false_pos), (false_neg, true_pos) = matrix.astype(np.float64)
    scores = {
        "recall": float(recall[1]),
        "precision": float(precision[1]),
        "accuracy": float((true_pos + true_neg) / matrix.sum()),
        "true_positive_rate": _rate(true_pos, true_pos + false_neg),
        "true_negative_rate": _rate(true_neg, true_neg + false_pos),
        "false_positive_rate": _rate(false_pos, true_neg + false_pos),
        "false_negative_rate": _rate(false_neg, true_pos + false_neg),
    }
    for name, beta in F_SCORES.items():
        scores[name] = float(f_score(precision, recall, beta)[1])
    return scores


def _rate(count: float, total: float) -> float:
    return float(count / total) if total > 0 else 0.0  # 0 when undefined, as per_class_rates


def multiclass_scores(matrix: np.ndarray) -> Scores:
    """Accuracy and support-weighted recall, precision and F-scores (scikit-learn's average="weighted")."""
    precision, recall, _ = per_class_rates(matrix)
    support = matrix.sum(axis=1) / matrix.sum()
    scores = {
        "accuracy": float(np.trace(matrix) / matrix.sum()),
        "weighted_recall": float(np.sum(recall * support)),
        "weighted_precision": float(np.sum(precision * support)),
    }
    for name, beta in F_SCORES.items():
        scores[f"weighted_{name}"] = float(np.sum(f_score(precision, recall, beta) * support))
    return scores


def _best_constant(scores: Scores, names: Sequence[str]) -> Scores:
    return {f"{name}_best_constant_classifier": scores[name] for name in names}


def binary_statistics(y_true: np.ndarray, predicted: np.ndarray, positive_scores: np.ndarray) -> Scores:
    """Every scalar of binary_classification_metrics for one sample of rows: true and predicted class
    indices, and the positive class's probability."""
    model = binary_scores(confusion_matrix(y_true, predicted, 2))
    always_positive = binary_scores(confusion_matrix(y_true, np.ones_like(y_true), 2))
    constant = _best_constant(always_positive, ["recall", "precision", "accuracy", *F_SCORES])
    return model | constant | {"auc": roc_auc(y_true, positive_scores)}


def multiclass_statistics(y_true: np.ndarray, predicted: np.ndarray, classes: int) -> Scores:
    """Every scalar of multiclass_classification_metrics for one sample of rows (class indices)."""
    model = multiclass_scores(confusion_matrix(y_true, predicted, classes))
    majority = np.full_like(y_true, np.bincount(y_true, minlength=classes).argmax())
    constant = multiclass_scores(confusion_matrix(y_true, majority, classes))
    return model | _best_constant(constant, list(constant))


def bootstrap(statistics: Callable[[np.ndarray], Scores], rows: int) -> dict[str, dict[str, Any]]:
    """Each statistic's value on every row and its standard deviation over bootstrap resamples."""
    values = statistics(np.arange(rows))
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    resampled = [statistics(rng.integers(0, rows, size=rows)) for _ in range(BOOTSTRAP_RESAMPLES)]
    result = {}
    for name, value in values.items():
        samples = np.array([scores[name] for scores in resampled])
        samples = samples[np.isfinite(samples)]
        spread = float(np.std(samples, ddof=1)) if len(samples) >= 2 and math.isfinite(value) else math.nan
        result[name] = {"value": _number(value), "standard_deviation": _number(spread)}
    return result


def _number(value: float) -> float | str:
    return value if math.isfinite(value) else "NaN"


def labelled_confusion_matrix(matrix: np.ndarray, classes: Sequence[Label]) -> dict[str, dict[str, int]]:
    """{true label: {predicted label: rows}}, labels as text, as SageMaker keys it."""
    names = [str(label) for label in classes]
    return {truth: dict(zip(names, map(int, row), strict=True)) for truth, row in zip(names, matrix, strict=True)}


def _thinned(*curve: np.ndarray) -> list[list[float]]:
    """At most MAX_CURVE_POINTS of a curve's points, evenly spaced over its thresholds, ends included."""
    keep = np.unique(np.linspace(0, len(curve[0]) - 1, min(len(curve[0]), MAX_CURVE_POINTS)).round().astype(int))
    return [axis[keep].astype(float).tolist() for axis in curve]


def _binary_curves(y_true: np.ndarray, positive_scores: np.ndarray) -> dict[str, dict[str, list[float]]]:
    false_positive_rates, true_positive_rates = _thinned(*roc_curve(y_true, positive_scores))
    precisions, recalls = _thinned(*precision_recall_curve(y_true, positive_scores))
    return {
        "receiver_operating_characteristic_curve": {
            "false_positive_rates": false_positive_rates,
            "true_positive_rates": true_positive_rates,
        },
        "precision_recall_curve": {"precisions": precisions, "recalls": recalls},
    }


# SageMaker's order of the binary metrics, the curves among them.
BINARY_ORDER = (
    "confusion_matrix", "recall", "precision", "accuracy", "recall_best_constant_classifier",
    "precision_best_constant_classifier", "accuracy_best_constant_classifier", "true_positive_rate",
    "true_negative_rate", "false_positive_rate", "false_negative_rate", "receiver_operating_characteristic_curve",
    "precision_recall_curve", "auc", "f0_5", "f1", "f2", "f0_5_best_constant_classifier",
    "f1_best_constant_classifier", "f2_best_constant_classifier",
)  # fmt: skip


def model_quality(task: str, classes: Sequence[Label], result: ChannelResult) -> dict[str, Any]:
    """The model_quality.json document for one scored channel."""
    if task == REGRESSION:
        assert result.values is not None and result.true_values is not None
        truth, predicted = result.true_values, result.values
        return {SECTION[task]: bootstrap(lambda rows: regression_metrics(truth[rows], predicted[rows]), len(truth))}
    assert result.probabilities is not None and result.class_indices is not None
    y_true, classes_count = result.class_indices, result.probabilities.shape[1]
    predicted = result.probabilities.argmax(axis=1)
    matrix = confusion_matrix(y_true, predicted, classes_count)
    metrics: dict[str, Any] = {"confusion_matrix": labelled_confusion_matrix(matrix, classes)}
    if task == MULTICLASS:
        scalars = bootstrap(
            lambda rows: multiclass_statistics(y_true[rows], predicted[rows], classes_count), len(y_true)
        )
        return {SECTION[task]: metrics | scalars}
    scores = result.probabilities[:, 1]
    metrics |= bootstrap(lambda rows: binary_statistics(y_true[rows], predicted[rows], scores[rows]), len(y_true))
    metrics |= _binary_curves(y_true, scores)
    return {SECTION[task]: {name: metrics[name] for name in BINARY_ORDER}}


def write_model_quality(output_dir: Path, document: dict[str, Any]) -> Path:
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / MODEL_QUALITY_FILE
    path.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return path
