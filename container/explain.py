"""SHAP explanations of a saved model, shared by training (global importance) and serving (per request).

INTERFACE STUB (issue 15): the signatures below are the contract between train/ and serve/; the
implementation lands with the explainability work.

    background.safetensors   (in the model directory) the explainer's background: k-means centroids of the
                             train rows by default (no personal data), or a raw sample (explain_background=rows);
                             raw, unscaled rows like the ones a client sends.

`Explainer(artifact, background).explain(rows)` returns, per row, the base value and one attribution per
user column (one-hot categories summed back to their column) whose sum plus the base value is the model's
score: the positive class's probability (binary), the predicted class's probability (multiclass) or the
predicted value (regression).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from optml.container.artifact import ModelArtifact

BACKGROUND_FILE = "background.safetensors"


@dataclass
class Explanations:
    """Attributions of `rows` rows: `values[i, j]` is column `columns[j]`'s share of row i's score."""

    method: str  # the analysis.json key: "deep_lift_shap" or "gradient_shap"
    columns: list[str]  # the user's columns (tabular) or input names
    base_values: np.ndarray  # (rows,)
    values: np.ndarray  # (rows, len(columns))
    scores: np.ndarray  # (rows,) the explained score: base_values + values.sum(1) reproduces it
    targets: np.ndarray  # (rows,) the class index explained (binary: 1; regression: 0)

    def as_dicts(self) -> list[dict[str, object]]:
        """Per row {"base_value": b, "attributions": {column: value}}: the response's "explanation"."""
        return [
            {"base_value": float(base), "attributions": dict(zip(self.columns, map(float, row), strict=True))}
            for base, row in zip(self.base_values, self.values, strict=True)
        ]


def summarize_background(rows: np.ndarray, size: int, kind: str, seed: int) -> np.ndarray:
    """`size` k-means centroids (kind="kmeans") or sampled rows (kind="rows") of raw float rows."""
    raise NotImplementedError


def save_background(model_dir: Path, background: np.ndarray) -> None:
    raise NotImplementedError


def load_background(model_dir: Path) -> np.ndarray | None:
    """The saved background, or None for a model saved without one (it cannot be explained)."""
    raise NotImplementedError


class Explainer:
    def __init__(self, artifact: ModelArtifact, background: np.ndarray) -> None:
        self.artifact = artifact
        self.background = background

    def explain(self, rows: np.ndarray) -> Explanations:
        """`rows`: raw float rows as `ModelArtifact.predict` takes them (validated by the caller)."""
        raise NotImplementedError
