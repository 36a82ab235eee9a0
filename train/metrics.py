"""Evaluation metrics, computed with numpy on a whole channel at once.

Classification metrics take class-index labels and per-class probabilities; binary F1 and AUC treat
class index 1 as positive, multiclass ones are macro averages (one-vs-rest for AUC).
"""

from __future__ import annotations

import numpy as np

from container.artifact import BINARY, MULTICLASS, REGRESSION

# The metrics `validation:` reports per task; the names users put in MetricDefinitions and objectives.
TASK_METRICS = {
    BINARY: ("accuracy", "f1", "auc"),
    MULTICLASS: ("accuracy", "f1", "auc"),
    REGRESSION: ("rmse", "mae", "r2"),
}


def all_metric_names() -> list[str]:
    """Every metric name a job can log, in log order, for `metric-definitions`."""
    names = ["train:loss", "validation:loss"]
    for task_names in TASK_METRICS.values():
        names += [f"validation:{name}" for name in task_names if f"validation:{name}" not in names]
    return names


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean(y_true == y_pred))


def f1_score(y_true: np.ndarray, y_pred: np.ndarray, classes: int) -> float:
    positives = [1] if classes == 2 else range(classes)
    scores = []
    for label in positives:
        true_pos = np.sum((y_pred == label) & (y_true == label))
        predicted = np.sum(y_pred == label)
        actual = np.sum(y_true == label)
        scores.append(0.0 if predicted + actual == 0 else 2 * true_pos / (predicted + actual))
    return float(np.mean(scores))


def roc_auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Binary ROC AUC as the Mann–Whitney U statistic (ties count half); NaN with one class present."""
    positive = y_true == 1
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    # Average ranks over ties.
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    average = first + (counts - 1) / 2.0 + 1
    ranks[order] = np.repeat(average, counts)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def classification_metrics(y_true: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    classes = probabilities.shape[1]
    y_pred = probabilities.argmax(axis=1)
    if classes == 2:
        auc = roc_auc(y_true, probabilities[:, 1])
    else:
        per_class = [roc_auc((y_true == c).astype(int), probabilities[:, c]) for c in range(classes)]
        finite = [value for value in per_class if np.isfinite(value)]
        auc = float(np.mean(finite)) if finite else float("nan")
    return {"accuracy": accuracy(y_true, y_pred), "f1": f1_score(y_true, y_pred, classes), "auc": auc}


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    error = y_pred - y_true
    total = np.sum((y_true - y_true.mean()) ** 2)
    return {
        "rmse": float(np.sqrt(np.mean(error**2))),
        "mae": float(np.mean(np.abs(error))),
        "r2": float(1 - np.sum(error**2) / total) if total > 0 else float("nan"),
    }
