"""Our numpy metrics agree with scikit-learn's on fixed data."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as reference

from optml.train.metrics import classification_metrics, regression_metrics, roc_auc


def test_binary_metrics_match_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    positive = np.clip(y * 0.3 + rng.random(200) * 0.7, 0, 1)
    positive[:20] = 0.5  # ties
    probabilities = np.column_stack([1 - positive, positive])
    ours = classification_metrics(y, probabilities)
    predicted = probabilities.argmax(axis=1)
    assert ours["accuracy"] == pytest.approx(reference.accuracy_score(y, predicted))
    assert ours["f1"] == pytest.approx(reference.f1_score(y, predicted))
    assert ours["auc"] == pytest.approx(reference.roc_auc_score(y, positive))


def test_multiclass_metrics_match_scikit_learn_macro_averages() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 300)
    logits = rng.normal(size=(300, 4)) + np.eye(4)[y] * 1.5
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    ours = classification_metrics(y, probabilities)
    predicted = probabilities.argmax(axis=1)
    assert ours["accuracy"] == pytest.approx(reference.accuracy_score(y, predicted))
    assert ours["f1"] == pytest.approx(reference.f1_score(y, predicted, average="macro"))
    assert ours["auc"] == pytest.approx(reference.roc_auc_score(y, probabilities, multi_class="ovr", average="macro"))


def test_auc_is_nan_with_a_single_class() -> None:
    assert np.isnan(roc_auc(np.ones(5, dtype=int), np.linspace(0, 1, 5)))


def test_regression_metrics_match_scikit_learn() -> None:
    rng = np.random.default_rng(2)
    y = rng.normal(size=100) * 3 + 1
    predicted = y + rng.normal(size=100) * 0.5
    ours = regression_metrics(y, predicted)
    assert ours["rmse"] == pytest.approx(np.sqrt(reference.mean_squared_error(y, predicted)))
    assert ours["mae"] == pytest.approx(reference.mean_absolute_error(y, predicted))
    assert ours["r2"] == pytest.approx(reference.r2_score(y, predicted))
