"""Per-request SHAP explanations (custom attribute `explain=true`) of optml's own models.

Plain predictions pay nothing for them: captum, the model's background and the Explainer
(container/explain.py) are loaded on the first request that asks for an explanation, in the worker that
answers it (after gunicorn's fork: each worker builds its own), and kept for the next ones. Nothing here
imports captum at import time or when the model loads.

The explainer works on its own copy of the network (its weights once more, per worker that explains): where
captum attributes it runs the network with autograd on, and its DeepLiftShap hooks the network's modules, while
the threads of a multi-model endpoint keep predicting with the served network, which must see none of that.
For the same reason one model's explanations are computed one at a time (a lock).
"""

from __future__ import annotations

import copy
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from optml.container.artifact import ModelArtifact
from optml.container.errors import UserError
from optml.serve.errors import RequestError

if TYPE_CHECKING:
    from optml.container.explain import Explainer, Explanations

# The response types that carry an explanation; npy holds one array of labels, with no room for one.
EXPLAINED_TYPES = ("application/json", "application/jsonlines", "text/csv")


def cannot_explain(message: str) -> RequestError:
    """The 400 for a model that cannot answer explain=true; the message says why and what to do."""
    return RequestError(400, "cannot_explain", message)


def check_explained_type(response_type: str) -> None:
    """explain=true with a response type that cannot carry it: refused before any work is done."""
    if response_type not in EXPLAINED_TYPES:
        raise RequestError(
            406,
            "not_acceptable",
            f"custom attribute explain=true is answered in {', '.join(EXPLAINED_TYPES)}; this response would be"
            f" {response_type} (from Accept, or the request's own type): ask for one of those in Accept",
        )


class LazyExplainer:
    """One served model's Explainer, built on first use and kept; a model that cannot be explained is
    found out once, and every explain request is then refused with the same message."""

    def __init__(self, artifact: ModelArtifact, model_dir: Path | None) -> None:
        self.artifact = artifact
        self.model_dir = model_dir
        self._explainer: Explainer | None = None
        self._refusal: RequestError | None = None
        self._lock = threading.Lock()

    @property
    def built(self) -> bool:
        return self._explainer is not None

    def explain(self, features: np.ndarray, predicted: np.ndarray | None = None) -> Explanations:
        """`features`: the rows as the model predicts them (decoded and validated); `predicted`: the
        model's probabilities (or regression values) for them, already computed."""
        with self._lock:
            explainer = self._explainer or self._build()
            return explainer.explain(features, predicted)

    def _build(self) -> Explainer:
        if self._refusal is not None:
            raise self._refusal
        try:
            self._explainer = build_explainer(self.artifact, self.model_dir)
        except RequestError as error:
            self._refusal = error
            raise
        return self._explainer


def build_explainer(artifact: ModelArtifact, model_dir: Path | None) -> Explainer:
    """The Explainer over a copy of the network, with the background saved beside the model; a 400 naming
    why for a model saved without a background or of a kind the explainer does not take."""
    from optml.container import explain  # only once a client asks for an explanation (captum: CNNs, RNNs)

    background = explain.load_background(model_dir) if model_dir is not None else None
    if background is None:
        raise cannot_explain(
            f"this model cannot be explained: it was saved without the background its explanations are"
            f" measured against ({explain.BACKGROUND_FILE} is not in its model directory), as models trained"
            " before explanations existed are; train it again with this image to serve explain=true"
        )
    own_copy = ModelArtifact(copy.deepcopy(artifact.network), artifact.metadata)
    try:
        return explain.Explainer(own_copy, background)
    except UserError as error:  # a model kind (or input) the explainer does not take: its words
        raise cannot_explain(f"this model cannot be explained: {error}") from None
