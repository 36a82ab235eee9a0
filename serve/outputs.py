"""The model's predictions shaped by the request's output options (threshold, top-k)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from optml.container.artifact import Label, Predictions
from optml.container.kinds import BINARY, MULTICLASS
from optml.serve.errors import bad_request
from optml.serve.negotiation import OutputOptions

if TYPE_CHECKING:  # not at run time: the explainer's module brings captum, which plain predictions never need
    from optml.container.explain import Explanations


@dataclass
class Result:
    labels: list[Label]  # per record: the class (after any threshold) or the regression value
    scores: np.ndarray | None  # (records, classes) probabilities; None for regression
    top: list[list[tuple[Label, float]]] | None = None  # per record: the k most likely (class, probability)
    explanations: Explanations | None = None  # explain=true: per record, its score's SHAP attributions


def check_options(options: OutputOptions, task: str) -> None:
    """Reject options the model cannot honour before any work is done."""
    if task != BINARY and options.threshold is not None:
        raise bad_request(f"custom attribute threshold applies to binary classification; this model is {task}")
    if task not in (BINARY, MULTICLASS) and (options.top_k is not None or options.output == "probabilities"):
        raise bad_request(
            f"custom attributes top_k and output=probabilities apply to classification; this model is {task}"
        )


def shape_result(predictions: Predictions, classes: list[Label], options: OutputOptions) -> Result:
    scores = predictions.scores
    labels = predictions.labels
    _check_finite(np.asarray(labels, dtype=np.float64) if scores is None else scores)
    if scores is None:
        return Result(labels, None)
    if options.threshold is not None:
        negative, positive = classes[0], classes[1]
        labels = [positive if p >= options.threshold else negative for p in scores[:, 1].tolist()]
    top = None
    if options.top_k is not None:
        k = min(options.top_k, scores.shape[1])
        indices = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        top = [
            [(classes[i], float(row_scores[i])) for i in row_indices.tolist()]
            for row_indices, row_scores in zip(indices, scores, strict=True)
        ]
    return Result(labels, scores, top)


def _check_finite(outputs: np.ndarray) -> None:
    """Inputs far outside the training data can overflow inside the network: say so, not NaN."""
    finite = np.isfinite(outputs)
    if not finite.all():
        row = int(np.argwhere(~finite)[0][0])
        raise bad_request(
            f"row {row + 1}: the model's output is not a finite number for these features;"
            " values far outside the training data overflow the network"
        )
