"""model_quality.json: SageMaker's model-quality statistics, checked against SageMaker's published example
(docs: "Model quality metrics and Amazon CloudWatch monitoring") and scikit-learn."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as reference

from optml.container.kinds import BINARY, MULTICLASS, REGRESSION
from optml.train import model_quality as mq
from optml.train.metrics import precision_recall_curve
from optml.train.report import ChannelResult


def classified(y_true: list[int] | np.ndarray, positive_or_probabilities: np.ndarray) -> ChannelResult:
    y = np.asarray(y_true)
    scores = np.asarray(positive_or_probabilities, dtype=np.float64)
    probabilities = np.column_stack([1 - scores, scores]) if scores.ndim == 1 else scores
    return ChannelResult(len(y), 1, {}, probabilities, y)


def values_of(section: dict[str, object]) -> dict[str, object]:
    return {name: entry["value"] for name, entry in section.items() if isinstance(entry, dict) and "value" in entry}


def rows_from_confusion(matrix: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    pairs = [
        (truth, predicted) for truth, row in enumerate(matrix) for predicted, n in enumerate(row) for _ in range(n)
    ]
    truth, predicted = np.array(pairs).T
    return truth, predicted


def test_binary_values_are_sagemakers_published_example() -> None:
    # SageMaker's example: confusion {"0": {"0": 1, "1": 2}, "1": {"0": 0, "1": 1}} (true label, then predicted).
    section = mq.model_quality(BINARY, [0, 1], classified([0, 0, 0, 1], np.array([0.2, 0.6, 0.7, 0.9])))[
        "binary_classification_metrics"
    ]
    assert list(section) == list(mq.BINARY_ORDER)
    assert section["confusion_matrix"] == {"0": {"0": 1, "1": 2}, "1": {"0": 0, "1": 1}}
    published = {
        "recall": 1.0,
        "precision": 0.3333333333333333,
        "accuracy": 0.5,
        "recall_best_constant_classifier": 1.0,
        "precision_best_constant_classifier": 0.25,
        "accuracy_best_constant_classifier": 0.25,
        "true_positive_rate": 1.0,
        "true_negative_rate": 0.33333333333333337,  # SageMaker's 1 - FPR; ours is 1/3 computed directly
        "false_positive_rate": 0.6666666666666666,
        "false_negative_rate": 0.0,
        "auc": 1.0,
        "f0_5": 0.3846153846153846,
        "f1": 0.5,
        "f2": 0.7142857142857143,
        "f0_5_best_constant_classifier": 0.29411764705882354,
        "f1_best_constant_classifier": 0.4,
        "f2_best_constant_classifier": 0.625,
    }
    assert values_of(section) == pytest.approx(published, rel=1e-15)


def test_binary_metrics_match_scikit_learn_with_text_labels() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 500)
    positive = np.clip(0.35 * y + 0.65 * rng.random(500), 0, 1).round(2)  # rounded: many tied scores
    section = mq.model_quality(BINARY, ["no", "yes"], classified(y, positive))["binary_classification_metrics"]
    predicted = (positive > 0.5).astype(int)
    (tn, fp), (fn, tp) = reference.confusion_matrix(y, predicted)
    assert section["confusion_matrix"] == {"no": {"no": tn, "yes": fp}, "yes": {"no": fn, "yes": tp}}
    expected = {
        "recall": reference.recall_score(y, predicted),
        "precision": reference.precision_score(y, predicted),
        "accuracy": reference.accuracy_score(y, predicted),
        "true_positive_rate": tp / (tp + fn),
        "true_negative_rate": tn / (tn + fp),
        "false_positive_rate": fp / (tn + fp),
        "false_negative_rate": fn / (tp + fn),
        "auc": reference.roc_auc_score(y, positive),
        "f0_5": reference.fbeta_score(y, predicted, beta=0.5),
        "f1": reference.f1_score(y, predicted),
        "f2": reference.fbeta_score(y, predicted, beta=2),
    }
    always_positive = np.ones_like(y)
    for name, score in (("recall", reference.recall_score), ("precision", reference.precision_score)):
        expected[f"{name}_best_constant_classifier"] = score(y, always_positive)
    expected["accuracy_best_constant_classifier"] = reference.accuracy_score(y, always_positive)
    for name, beta in mq.F_SCORES.items():
        expected[f"{name}_best_constant_classifier"] = reference.fbeta_score(y, always_positive, beta=beta)
    assert values_of(section) == pytest.approx(expected, rel=1e-12)
    fpr, tpr, _ = reference.roc_curve(y, positive, drop_intermediate=False)
    curve = section["receiver_operating_characteristic_curve"]
    assert curve == {"false_positive_rates": pytest.approx(fpr.tolist()), "true_positive_rates": pytest.approx(tpr)}
    precision, recall, _ = reference.precision_recall_curve(y, positive)
    assert section["precision_recall_curve"] == {
        "precisions": pytest.approx(precision[::-1].tolist()),
        "recalls": pytest.approx(recall[::-1].tolist()),
    }


def test_multiclass_values_are_sagemakers_example_and_scikit_learns_weighted_averages() -> None:
    # SageMaker's multiclass example, confusion {"0": {"0": 1180, "1": 510}, "1": {"0": 268, "1": 138}}, plus a
    # third class; labels as text.
    truth, predicted = rows_from_confusion([[1180, 510, 0], [268, 138, 0], [0, 0, 0]])
    section = mq.model_quality(MULTICLASS, ["a", "b", "c"], classified(truth, np.eye(3)[predicted]))[
        "multiclass_classification_metrics"
    ]
    assert section["confusion_matrix"] == {
        "a": {"a": 1180, "b": 510, "c": 0},
        "b": {"a": 268, "b": 138, "c": 0},
        "c": {"a": 0, "b": 0, "c": 0},
    }
    model_scores = {
        "accuracy": 0.6288167938931297,
        "weighted_recall": 0.6288167938931297,
        "weighted_precision": 0.6983172269629505,
        "weighted_f0_5": 0.6803947317178771,
        "weighted_f1": 0.6571162346664904,
        "weighted_f2": 0.6384024354394601,
    }
    majority = np.zeros_like(truth)  # class "a", 1690 of the 2096 rows
    constant = {
        "accuracy": reference.accuracy_score(truth, majority),
        "weighted_recall": reference.recall_score(truth, majority, average="weighted", zero_division=0),
        "weighted_precision": reference.precision_score(truth, majority, average="weighted", zero_division=0),
    }
    for name, beta in mq.F_SCORES.items():
        constant[f"weighted_{name}"] = reference.fbeta_score(
            truth, majority, beta=beta, average="weighted", zero_division=0
        )
    expected = model_scores | {f"{name}_best_constant_classifier": value for name, value in constant.items()}
    assert values_of(section) == pytest.approx(expected, rel=1e-12)
    assert list(section) == ["confusion_matrix", *expected]


def test_regression_metrics_match_scikit_learn() -> None:
    rng = np.random.default_rng(4)
    truth = rng.normal(size=300) * 4 + 2
    predicted = truth + rng.normal(size=300)
    result = ChannelResult(300, 1, {}, values=predicted, true_values=truth)
    section = mq.model_quality(REGRESSION, [], result)["regression_metrics"]
    assert values_of(section) == pytest.approx(
        {
            "mse": reference.mean_squared_error(truth, predicted),
            "rmse": np.sqrt(reference.mean_squared_error(truth, predicted)),
            "mae": reference.mean_absolute_error(truth, predicted),
            "r2": reference.r2_score(truth, predicted),
        },
        rel=1e-12,
    )


def test_standard_deviation_is_over_200_seeded_bootstrap_resamples() -> None:
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 400)
    positive = np.clip(0.3 * y + 0.7 * rng.random(400), 0, 1)
    section = mq.model_quality(BINARY, [0, 1], classified(y, positive))["binary_classification_metrics"]
    predicted = (positive > 0.5).astype(int)
    draws = np.random.default_rng(0)
    accuracies, aucs = [], []
    for _ in range(200):
        rows = draws.integers(0, 400, size=400)
        accuracies.append(reference.accuracy_score(y[rows], predicted[rows]))
        aucs.append(reference.roc_auc_score(y[rows], positive[rows]))
    assert section["accuracy"]["standard_deviation"] == pytest.approx(np.std(accuracies, ddof=1), rel=1e-12)
    assert section["auc"]["standard_deviation"] == pytest.approx(np.std(aucs, ddof=1), rel=1e-12)
    again = mq.model_quality(BINARY, [0, 1], classified(y, positive))
    assert again["binary_classification_metrics"] == section  # seeded: the same file every run


def test_what_cannot_be_computed_is_nan_as_sagemaker_writes_it(tmp_path: Path) -> None:
    # Every row positive: AUC is undefined; so is its spread.
    document = mq.model_quality(BINARY, [0, 1], classified([1, 1, 1, 1], np.array([0.2, 0.6, 0.7, 0.9])))
    section = document["binary_classification_metrics"]
    assert section["auc"] == {"value": "NaN", "standard_deviation": "NaN"}
    assert section["recall"]["value"] == 0.75
    path = mq.write_model_quality(tmp_path / "out", document)
    assert json.loads(path.read_text()) == document  # valid JSON: no bare NaN


def test_curves_keep_at_most_1000_points_with_both_ends() -> None:
    rng = np.random.default_rng(6)
    y = rng.integers(0, 2, 5000)
    section = mq.model_quality(BINARY, [0, 1], classified(y, rng.random(5000)))["binary_classification_metrics"]
    roc = section["receiver_operating_characteristic_curve"]
    pr = section["precision_recall_curve"]
    assert len(roc["false_positive_rates"]) == len(roc["true_positive_rates"]) == 1000
    assert len(pr["precisions"]) == len(pr["recalls"]) == 1000
    assert (roc["false_positive_rates"][0], roc["true_positive_rates"][0]) == (0.0, 0.0)
    assert (roc["false_positive_rates"][-1], roc["true_positive_rates"][-1]) == (1.0, 1.0)
    assert (pr["recalls"][0], pr["precisions"][0], pr["recalls"][-1]) == (0.0, 1.0, 1.0)


def test_precision_recall_curve_counts_tied_scores_as_one_threshold() -> None:
    precision, recall = precision_recall_curve(np.array([1, 0, 1, 1]), np.array([0.9, 0.5, 0.5, 0.1]))
    assert precision.tolist() == [1.0, 1.0, 2 / 3, 0.75]
    assert recall.tolist() == [0.0, 1 / 3, 2 / 3, 1.0]
