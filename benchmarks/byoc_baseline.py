"""The baseline: a model server written the way the canonical SageMaker bring-your-own-container
example (scikit_bring_your_own/container/decision_trees/predictor.py) writes it, ported to our PyTorch
model. Used only by serve_benchmark.py, never by the image.

What makes it the baseline, on purpose: a lazily loaded model singleton, pandas.read_csv on every
request, torch with its default thread count in every worker, the answer built with a DataFrame.
It does use torch.no_grad(), as any reasonable PyTorch port would.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import flask
import pandas as pd
import torch

from optml.container.artifact import ModelArtifact, load_model
from optml.container.kinds import BINARY, REGRESSION

model_path = Path(os.environ.get("BASELINE_MODEL_DIR", "/opt/ml/model"))


class ScoringService:
    model: ModelArtifact | None = None  # where we keep the model when it's loaded

    @classmethod
    def get_model(cls) -> ModelArtifact:
        """Get the model object for this instance, loading it if it's not already loaded."""
        if cls.model is None:
            cls.model = load_model(model_path)
        return cls.model

    @classmethod
    def predict(cls, data: pd.DataFrame) -> list[Any]:
        model = cls.get_model()
        metadata = model.metadata
        inputs = torch.tensor(data.values, dtype=torch.float32)
        inputs = (inputs - torch.tensor(metadata.feature_mean)) / torch.tensor(metadata.feature_std)
        with torch.no_grad():
            outputs = model.network(inputs)
        if metadata.task == REGRESSION:
            return (outputs[:, 0] * metadata.target_std + metadata.target_mean).tolist()
        if metadata.task == BINARY:
            indices = (torch.sigmoid(outputs[:, 0]) >= 0.5).long().tolist()
        else:
            indices = outputs.argmax(dim=1).tolist()
        return [metadata.classes[i] for i in indices]


app = flask.Flask(__name__)


@app.route("/ping", methods=["GET"])
def ping() -> flask.Response:
    health = ScoringService.get_model() is not None
    status = 200 if health else 404
    return flask.Response(response="\n", status=status, mimetype="application/json")


@app.route("/invocations", methods=["POST"])
def transformation() -> flask.Response:
    if flask.request.content_type == "text/csv":
        text = flask.request.data.decode("utf-8")
        data = pd.read_csv(io.StringIO(text), header=None)
    else:
        return flask.Response(response="This predictor only supports CSV data", status=415, mimetype="text/plain")
    predictions = ScoringService.predict(data)
    out = io.StringIO()
    pd.DataFrame({"results": predictions}).to_csv(out, header=False, index=False)
    return flask.Response(response=out.getvalue(), status=200, mimetype="text/csv")
