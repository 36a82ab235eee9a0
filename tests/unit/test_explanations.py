"""The global explanation at the end of training (optml.train.explanations): mean |SHAP| per user column in
Clarify's analysis.json shape, partial dependence, and the plots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from optml.container.artifact import ModelArtifact
from optml.container.explain import DEEP_LIFT_SHAP, GRADIENT_SHAP, Explainer
from optml.container.kinds import BINARY, MULTICLASS, REGRESSION
from optml.train.explanations import (
    explain_globally,
    partial_dependence,
    sample_rows,
    write_explanations,
)
from tests.unit.test_explain import background_for, other_artifact, raw_rows, tabular_artifact


def ignoring_income(task: str) -> ModelArtifact:
    """A model whose first layer never reads income (encoded input 4)."""
    artifact = tabular_artifact(task)
    first_layer = next(m for m in artifact.network.modules() if isinstance(m, torch.nn.Linear))
    with torch.no_grad():
        first_layer.weight[:, 4] = 0.0
    return artifact


@pytest.mark.parametrize("task", [BINARY, MULTICLASS, REGRESSION])
def test_global_importance_is_mean_absolute_shap_per_user_column(task: str) -> None:
    artifact = ignoring_income(task)
    rows = raw_rows(30, seed=3)
    explainer = Explainer(artifact, background_for(artifact))
    explanation = explain_globally(explainer, rows)

    assert explanation is not None and explanation.rows == 30
    per_row = explainer.explain(rows)
    expected = np.abs(per_row.values).mean(0)
    assert list(explanation.importance) == ["age", "colour", "income"]
    np.testing.assert_allclose(list(explanation.importance.values()), expected)
    assert explanation.importance["income"] == 0.0
    assert explanation.importance["age"] > 0 and explanation.importance["colour"] > 0
    assert explanation.expected_value == pytest.approx(float(per_row.base_values.mean()))
    assert explanation.ranked()[-1] == "income"


def test_the_section_has_clarifys_analysis_json_shape() -> None:
    artifact = ignoring_income(BINARY)
    explanation = explain_globally(Explainer(artifact, background_for(artifact)), raw_rows(10))
    assert explanation is not None
    section = explanation.analysis_section("diagnosis")
    entry = section["explanations"][DEEP_LIFT_SHAP]["diagnosis"]
    assert set(entry) == {"global_shap_values", "expected_value"}
    assert entry["global_shap_values"] == explanation.importance
    json.dumps(section)  # plain JSON types


def test_no_rows_no_explanation() -> None:
    artifact = tabular_artifact(REGRESSION)
    assert explain_globally(Explainer(artifact, background_for(artifact)), raw_rows(0)) is None


def test_write_explanations_writes_the_section_and_plots(tmp_path: Path) -> None:
    artifact = ignoring_income(MULTICLASS)
    section, written = write_explanations(
        tmp_path / "out", artifact, background_for(artifact), raw_rows(200), explain_rows=50, seed=1, label="y"
    )
    importance = section["explanations"][DEEP_LIFT_SHAP]["y"]["global_shap_values"]
    top = sorted(importance, key=lambda c: -importance[c])
    names = [path.name for path in written]
    assert names == ["shap_importance.png", "partial_dependence.png"]
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000
    pdp = section["explanations"]["pdp"]
    assert [entry["feature_name"] for entry in pdp] == top
    assert pdp[2] == {  # income, ignored: flat over its grid, one line per class
        "feature_name": "income",
        "data_type": "numerical",
        "feature_values": pdp[2]["feature_values"],
        "model_predictions": pdp[2]["model_predictions"],
        "label_headers": ["P(a)", "P(b)", "P(c)"],
    }
    flat = np.asarray(pdp[2]["model_predictions"])
    assert flat.shape == (3, 10) and np.ptp(flat, axis=1).max() < 1e-6
    json.dumps(section)


def test_more_explain_rows_than_rows_uses_every_row(tmp_path: Path) -> None:
    artifact = tabular_artifact(BINARY)
    rows = raw_rows(7)
    section, _ = write_explanations(tmp_path, artifact, background_for(artifact), rows, explain_rows=100)
    explanation = explain_globally(Explainer(artifact, background_for(artifact)), rows)
    assert explanation is not None
    assert section["explanations"][DEEP_LIFT_SHAP]["label0"]["global_shap_values"] == explanation.importance


def test_explain_rows_zero_writes_nothing(tmp_path: Path) -> None:
    artifact = tabular_artifact(BINARY)
    assert write_explanations(tmp_path / "x", artifact, background_for(artifact), raw_rows(9), 0) == ({}, [])
    assert not (tmp_path / "x").exists()


def test_sample_rows_is_seeded_and_without_replacement() -> None:
    rows = np.arange(100, dtype=np.float32)[:, None]
    sample = sample_rows(rows, 10, seed=4)
    assert len(np.unique(sample)) == 10
    np.testing.assert_array_equal(sample, sample_rows(rows, 10, seed=4))
    np.testing.assert_array_equal(sample_rows(rows[:5], 10, seed=4), rows[:5])


def test_partial_dependence_over_categories_sets_one_hot() -> None:
    artifact = tabular_artifact(BINARY)
    rows = raw_rows(20)
    dependence = partial_dependence(artifact, rows, "colour")
    assert dependence.data_type == "categorical" and dependence.values == ["blue", "green", "red"]
    assert dependence.outputs == ["P(yes)"]
    for index in range(3):
        changed = rows.copy()
        changed[:, 1:4] = np.eye(3, dtype=np.float32)[index]
        scores = artifact.predict(changed).scores
        assert scores is not None
        assert dependence.predictions[0, index] == pytest.approx(float(scores[:, 1].mean()), rel=1e-6)


def test_partial_dependence_of_a_numeric_column_follows_the_model() -> None:
    artifact = tabular_artifact(REGRESSION)
    rows = raw_rows(50)
    dependence = partial_dependence(artifact, rows, "age")
    assert dependence.outputs == ["predicted value"]
    assert dependence.values[0] == pytest.approx(float(np.quantile(rows[:, 0], 0.05)), rel=1e-5)
    changed = rows.copy()
    changed[:, 0] = dependence.values[-1]
    assert dependence.predictions[0, -1] == pytest.approx(
        float(np.asarray(artifact.predict(changed).labels, dtype=float).mean()), rel=1e-5
    )


def test_a_sequence_model_gets_importance_but_no_partial_dependence(tmp_path: Path) -> None:
    artifact = other_artifact("gru", (4, 3), REGRESSION)
    rows = np.random.default_rng(0).normal(size=(12, 12)).astype(np.float32)
    section, written = write_explanations(tmp_path, artifact, rows[:4], rows, explain_rows=8)
    assert list(section["explanations"]) == [GRADIENT_SHAP]
    assert list(section["explanations"][GRADIENT_SHAP]["label0"]["global_shap_values"]) == [
        "feature_0",
        "feature_1",
        "feature_2",
    ]
    assert [path.name for path in written] == ["shap_importance.png"]


def test_plots_false_computes_the_section_and_writes_nothing(tmp_path: Path) -> None:
    artifact = tabular_artifact(BINARY)
    background, rows = background_for(artifact), raw_rows(20)
    section, written = write_explanations(tmp_path / "none", artifact, background, rows, 20, plots=False)
    assert written == [] and not (tmp_path / "none").exists()
    assert section == write_explanations(tmp_path / "with", artifact, background, rows, 20)[0]
