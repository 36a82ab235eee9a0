"""The global explanation written at the end of training: SHAP feature importance and partial dependence.

Mean |SHAP value| per user column over a sample of held-out rows (`explain_rows` of them), with the
explainer serving uses (optml.container.explain), so the importance in analysis.json and the per-request
attributions come from one method and one background. The section has SageMaker Clarify's analysis.json
shape, so tools that read Clarify's output read ours:

    {"explanations": {"deep_lift_shap": {"<label>": {"global_shap_values": {column: mean |SHAP|},
                                                     "expected_value": base value}},
                      "pdp": [{"feature_name": ..., "data_type": "numerical" | "categorical",
                               "feature_values": [...], "model_predictions": [[...] per output],
                               "label_headers": [...]}]}}

Plots (PNG): shap_importance.png (a bar chart) and partial_dependence.png, one panel for each of the
`PDP_TOP_COLUMNS` most important columns (tabular models only: a partial dependence over pixels or time
steps says little).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from optml.container.artifact import ModelArtifact
from optml.container.explain import Explainer, Explanations
from optml.container.features import CATEGORICAL, FeatureEncoder
from optml.container.kinds import BINARY, REGRESSION, TABULAR_MODELS
from optml.train.report import pyplot, save_figure

PDP_GRID_POINTS = 10
PDP_TOP_COLUMNS = 3


@dataclass
class GlobalExplanation:
    """Mean |SHAP| per column over `rows` explained rows; `expected_value` is their mean base value."""

    method: str
    importance: dict[str, float]  # in the model's column order
    expected_value: float
    rows: int

    def ranked(self) -> list[str]:
        """Columns, most important first."""
        return sorted(self.importance, key=lambda column: -self.importance[column])

    def analysis_section(self, label: str = "label0") -> dict[str, Any]:
        """The "explanations" section of analysis.json (Clarify's key names; `label`: the label column)."""
        entry = {"global_shap_values": self.importance, "expected_value": self.expected_value}
        return {"explanations": {self.method: {label: entry}}}


@dataclass
class PartialDependence:
    """The mean model output over the sample rows with `column` set to each of `values`."""

    column: str
    data_type: str  # "numerical" or "categorical"
    values: list[float | str]
    predictions: np.ndarray  # (outputs, len(values))
    outputs: list[str]  # what each prediction row is: a class's probability or the predicted value

    def as_json(self) -> dict[str, Any]:
        return {
            "feature_name": self.column,
            "data_type": self.data_type,
            "feature_values": self.values,
            "model_predictions": self.predictions.tolist(),
            "label_headers": self.outputs,
        }


def sample_rows(rows: np.ndarray, count: int, seed: int) -> np.ndarray:
    """At most `count` rows, drawn without replacement (all of them, in order, when there are fewer)."""
    if count <= 0:
        return rows[:0]
    if len(rows) <= count:
        return rows
    picked = np.sort(np.random.default_rng(seed).choice(len(rows), size=count, replace=False))
    return rows[picked]


def explain_globally(explainer: Explainer, rows: np.ndarray) -> GlobalExplanation | None:
    """Mean |SHAP| per column over `rows` (already sampled); None without rows."""
    if len(rows) == 0:
        return None
    explained: Explanations = explainer.explain(rows)
    importance = np.abs(explained.values).mean(0)
    return GlobalExplanation(
        method=explained.method,
        importance={column: float(value) for column, value in zip(explained.columns, importance, strict=True)},
        expected_value=float(explained.base_values.mean()),
        rows=len(rows),
    )


def partial_dependence(artifact: ModelArtifact, rows: np.ndarray, column: str) -> PartialDependence:
    """Vary one user column over a grid (numeric: quantiles 5 %…95 % of the rows; categorical: each
    category, one-hot) and average the model's outputs over the rows."""
    metadata = artifact.metadata
    encoder = FeatureEncoder.from_json(metadata.encoder) if metadata.encoder else None
    offset, spec = _encoded_position(encoder, metadata.feature_names, column)
    flat = rows.reshape(len(rows), -1).astype(np.float32)
    variants: list[np.ndarray] = []
    values: list[float | str]
    if spec is not None and spec.kind == CATEGORICAL:
        values = list(spec.categories)
        for index in range(len(values)):
            changed = flat.copy()
            changed[:, offset : offset + spec.width] = 0.0
            changed[:, offset + index] = 1.0
            variants.append(changed)
    else:
        grid = np.unique(np.quantile(flat[:, offset], np.linspace(0.05, 0.95, PDP_GRID_POINTS)))
        values = [float(v) for v in grid]
        for value in grid:
            changed = flat.copy()
            changed[:, offset] = value
            variants.append(changed)
    outputs = _outputs(artifact, np.concatenate(variants))  # one forward pass for the whole grid
    means = outputs.reshape(len(variants), len(flat), -1).mean(1).T
    data_type = "categorical" if spec is not None and spec.kind == CATEGORICAL else "numerical"
    return PartialDependence(column, data_type, values, means, _output_names(artifact))


def _encoded_position(encoder: FeatureEncoder | None, names: list[str], column: str) -> tuple[int, Any]:
    """Where `column` starts among the encoded inputs, and its FeatureColumn (None without an encoder)."""
    if encoder is not None:
        offset = 0
        for spec in encoder.columns:
            if spec.name == column:
                return offset, spec
            offset += spec.width
        raise KeyError(column)
    if column in names:
        return names.index(column), None
    match = re.fullmatch(r"feature_(\d+)", column)
    if match is None:
        raise KeyError(column)
    return int(match.group(1)), None


def _outputs(artifact: ModelArtifact, rows: np.ndarray) -> np.ndarray:
    """(rows, outputs): the positive class's probability (binary), every class's (multiclass), the value."""
    predictions = artifact.predict(rows)
    if predictions.scores is None:
        return np.asarray(predictions.labels, dtype=np.float64)[:, None]
    if artifact.task == BINARY:
        return predictions.scores[:, 1:].astype(np.float64)
    return predictions.scores.astype(np.float64)


def _output_names(artifact: ModelArtifact) -> list[str]:
    classes = [str(c) for c in artifact.metadata.classes]
    if artifact.task == REGRESSION:
        return ["predicted value"]
    if artifact.task == BINARY:
        return [f"P({classes[1]})"]
    return [f"P({c})" for c in classes]


def write_explanations(
    output_dir: Path,
    artifact: ModelArtifact,
    background: np.ndarray,
    rows: np.ndarray,
    explain_rows: int,
    seed: int = 0,
    label: str = "label0",
    plots: bool = True,
) -> tuple[dict[str, Any], list[Path]]:
    """The analysis.json section and the plots written, for `explain_rows` of `rows` (raw, unscaled,
    encoded rows of validation, else test, else train). Nothing (an empty section) when explain_rows is 0
    or no rows are given; fewer rows than asked are all used. The plots are most of the cost (two figures,
    ~0.2 s each on an idle core); `plots=False` computes the section alone."""
    sample = sample_rows(rows, explain_rows, seed)
    if len(sample) == 0:
        return {}, []
    explanation = explain_globally(Explainer(artifact, background), sample)
    assert explanation is not None
    section = explanation.analysis_section(label)
    dependences = []
    if artifact.metadata.network.kind in TABULAR_MODELS:
        dependences = [partial_dependence(artifact, sample, c) for c in explanation.ranked()[:PDP_TOP_COLUMNS]]
        section["explanations"]["pdp"] = [d.as_json() for d in dependences]
    if not plots:
        return section, []
    output_dir.mkdir(parents=True, exist_ok=True)
    written = [plot_importance(output_dir / "shap_importance.png", explanation)]
    if dependences:
        written.append(plot_partial_dependence(output_dir / "partial_dependence.png", dependences))
    return section, written


def plot_importance(path: Path, explanation: GlobalExplanation, top: int = 20) -> Path:
    """A horizontal bar chart of mean |SHAP| for the `top` most important columns."""
    plt = pyplot()
    ranked = explanation.ranked()[:top][::-1]
    label_width = 0.08 * max(len(c) for c in ranked) + 0.3  # inches, for the column names left of the bars
    height = 0.3 * len(ranked) + 1.2
    fig, ax = plt.subplots(figsize=(5 + label_width, height))
    ax.barh(ranked, [explanation.importance[c] for c in ranked], color="tab:blue")
    ax.set(title=f"feature importance ({explanation.method}, {explanation.rows} rows)", xlabel="mean |SHAP value|")
    # Fixed margins, not tight_layout: that draws the figure once more, a third of the plot's cost.
    fig.subplots_adjust(left=label_width / (5 + label_width), right=0.96, top=1 - 0.4 / height, bottom=0.6 / height)
    return save_figure(fig, path)


def plot_partial_dependence(path: Path, dependences: list[PartialDependence]) -> Path:
    """One panel per column (one figure: each PNG costs a render), a line per model output."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(dependences), figsize=(4.5 * len(dependences), 4), squeeze=False)
    for ax, dependence in zip(axes[0], dependences, strict=True):
        positions = list(range(len(dependence.values)))
        categorical = dependence.data_type == "categorical"
        for name, line in zip(dependence.outputs, dependence.predictions, strict=True):
            x = positions if categorical else dependence.values
            ax.plot(x, line, marker="o", markersize=4, linestyle="" if categorical else "-", label=name)
        if categorical:
            ax.set_xticks(positions, [str(v) for v in dependence.values], rotation=45, ha="right")
        ax.set(title=f"partial dependence on {dependence.column}", xlabel=dependence.column)
    axes[0][0].set(ylabel="mean prediction")
    axes[0][0].legend()
    fig.subplots_adjust(left=0.6 / fig.get_figwidth(), right=0.98, top=0.92, bottom=0.22, wspace=0.25)
    return save_figure(fig, path)
