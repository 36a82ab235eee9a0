"""Evaluation metrics, computed with numpy on a whole channel at once.

Classification metrics take class-index labels and per-class probabilities. Binary precision, recall,
F1, F-beta, specificity and AUC treat class index 1 as positive; multiclass ones are macro averages
(one-vs-rest for AUC), and the report adds support-weighted averages. Checked against scikit-learn
in tests/unit/test_metrics.py.
"""

from __future__ import annotations

import numpy as np

from optml.train.metric_names import CLASSIFICATION_METRICS


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted classes."""
    return np.bincount(y_true * classes + y_pred, minlength=classes * classes).reshape(classes, classes)


def roc_auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Binary ROC AUC as the Mann–Whitney U statistic (ties count half); NaN with one class present."""
    positive = y_true == 1
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    # U counts, over every positive, the negatives scored below it plus half those tied with it: the same
    # exact integer (or half) the rank-sum form gives, without ranking all rows. Sorting each class on its
    # own and binary-searching is several times faster, and this runs on the train channel every epoch.
    # NaN scores sort last and tie with each other, as in a ranking.
    negatives = np.sort(scores[~positive])
    positives = np.sort(scores[positive])
    below = np.searchsorted(negatives, positives, side="left")
    below_or_tied = np.searchsorted(negatives, positives, side="right")
    u_statistic = (int(below.sum()) + int(below_or_tied.sum())) / 2
    return float(u_statistic / (n_pos * n_neg))


def _counts_at_thresholds(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, int]:
    """True and false positives when every row scored at least each distinct score, highest score first;
    and the numbers of positives and negatives."""
    order = np.argsort(-scores, kind="mergesort")
    labels, sorted_scores = y_true[order] == 1, scores[order]
    last_of_threshold = np.r_[np.flatnonzero(np.diff(sorted_scores)), len(labels) - 1]
    true_positives = np.cumsum(labels)[last_of_threshold]
    false_positives = last_of_threshold + 1 - true_positives
    positives = int(labels.sum())
    return true_positives, false_positives, positives, len(labels) - positives


def roc_curve(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates at every distinct threshold, from (0, 0) to (1, 1)."""
    true_positives, false_positives, positives, negatives = _counts_at_thresholds(y_true, scores)
    tpr = np.r_[0, true_positives / max(positives, 1)]
    fpr = np.r_[0, false_positives / max(negatives, 1)]
    return fpr, tpr


def precision_recall_curve(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall at every distinct threshold, highest first, after the point (recall 0,
    precision 1) that no positive prediction gives by convention (scikit-learn's, reversed)."""
    true_positives, false_positives, positives, _ = _counts_at_thresholds(y_true, scores)
    precision = np.r_[1.0, true_positives / (true_positives + false_positives)]
    recall = np.r_[0.0, true_positives / max(positives, 1)]
    return precision, recall


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    return np.divide(numerator, denominator, out=np.zeros_like(numerator, dtype=np.float64), where=denominator > 0)


def per_class_rates(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and specificity of each class against the rest, from a confusion matrix (rows
    true, columns predicted); 0 where a rate's denominator is 0, as scikit-learn's zero_division=0."""
    matrix = matrix.astype(np.float64)
    true_pos = np.diag(matrix)
    predicted, actual = matrix.sum(axis=0), matrix.sum(axis=1)
    true_neg = matrix.sum() - predicted - actual + true_pos
    return (
        _safe_divide(true_pos, predicted),
        _safe_divide(true_pos, actual),
        _safe_divide(true_neg, true_neg + predicted - true_pos),
    )


def f_score(precision: np.ndarray, recall: np.ndarray, beta: float) -> np.ndarray:
    """F-beta per class (beta > 1 weighs recall more); 0 where precision and recall are both 0."""
    beta2 = beta**2
    return _safe_divide((1 + beta2) * precision * recall, beta2 * precision + recall)


def classification_report(y_true: np.ndarray, probabilities: np.ndarray, f_beta: float = 1.0) -> dict[str, object]:
    """Every classification metric, the confusion matrix and per-class scores, for evaluation.json."""
    classes = probabilities.shape[1]
    y_pred = probabilities.argmax(axis=1)
    matrix = confusion_matrix(y_true, y_pred, classes).astype(np.float64)
    true_pos, actual = np.diag(matrix), matrix.sum(axis=1)
    precision, recall, specificity = per_class_rates(matrix)
    f1, fb = f_score(precision, recall, 1.0), f_score(precision, recall, f_beta)
    if classes == 2:
        auc_per_class = np.array([float("nan"), roc_auc(y_true, probabilities[:, 1])])
    else:
        auc_per_class = np.array([roc_auc((y_true == c).astype(int), probabilities[:, c]) for c in range(classes)])
    # Binary metrics are about the positive class; multiclass ones are macro averages.
    pick = (lambda values: float(values[1])) if classes == 2 else (lambda values: float(np.nanmean(values)))
    support = actual / actual.sum()
    picked_probability = np.clip(probabilities[np.arange(len(y_true)), y_true], 1e-15, 1.0)
    finite_auc = auc_per_class[np.isfinite(auc_per_class)]
    return {
        "accuracy": float(true_pos.sum() / matrix.sum()),
        "precision": pick(precision),
        "recall": pick(recall),
        "f1": pick(f1),
        "f_beta": pick(fb),
        "specificity": pick(specificity),
        "auc": float(auc_per_class[1])
        if classes == 2
        else (float(finite_auc.mean()) if len(finite_auc) else float("nan")),
        "log_loss": float(-np.mean(np.log(picked_probability))),
        "precision_weighted": float(np.sum(precision * support)),
        "recall_weighted": float(np.sum(recall * support)),
        "f1_weighted": float(np.sum(f1 * support)),
        "confusion_matrix": matrix.astype(int).tolist(),
        "per_class": {
            "precision": precision.tolist(),
            "recall": recall.tolist(),
            "f1": f1.tolist(),
            "support": actual.astype(int).tolist(),
        },
    }


def classification_metrics(y_true: np.ndarray, probabilities: np.ndarray, f_beta: float = 1.0) -> dict[str, float]:
    """The scalar metrics that are logged each epoch."""
    report = classification_report(y_true, probabilities, f_beta)
    return {name: float(report[name]) for name in CLASSIFICATION_METRICS}  # type: ignore[arg-type]


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    error = y_pred - y_true
    total = np.sum((y_true - y_true.mean()) ** 2)
    mse = float(np.mean(error**2))
    return {
        "mse": mse,
        "rmse": float(np.sqrt(mse)),
        "mae": float(np.mean(np.abs(error))),
        "r2": float(1 - np.sum(error**2) / total) if total > 0 else float("nan"),
    }
