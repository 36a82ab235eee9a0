"""Serving models trained on richer data: categorical text columns (one-hot encoded by the saved
encoder), images and sequences (records shaped like a training record)."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pytest
from flask.testing import FlaskClient

from optml.container.artifact import ModelArtifact, load_model
from optml.container.features import FeatureEncoder
from optml.container.paths import Paths
from optml.serve.app import create_app
from optml.serve.builtin import BuiltinModel
from optml.train.main import run
from tests.conftest import make_opt_ml

ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"


def churn_table(rows: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    plan = rng.choice(["basic", "pro", "team"], rows)
    usage = np.round(rng.normal(size=rows), 4)
    tenure = np.round(rng.normal(size=rows), 4)
    churned = np.where((plan == "basic") & (usage < 0.3), "yes", "no")
    return pa.table({"plan": plan, "usage": usage, "tenure": tenure, "churned": churned})


@pytest.fixture(scope="module")
def churn_model(tmp_path_factory: pytest.TempPathFactory) -> ModelArtifact:
    root = make_opt_ml(
        tmp_path_factory.mktemp("churn") / "ml",
        None,
        None,
        {"label_column": "churned", "epochs": "30", "learning_rate": "0.02"},
    )
    (root / "input/data/train").mkdir(parents=True)
    pa_csv.write_csv(churn_table(400, 1), root / "input/data/train/d.csv")
    run(Paths(root=root))
    return load_model(root / "model")


@pytest.fixture(scope="module")
def sequence_model(tmp_path_factory: pytest.TempPathFactory) -> ModelArtifact:
    rng = np.random.default_rng(1)
    sequences = rng.normal(size=(120, 6, 2))
    labels = (sequences[:, :, 0].sum(axis=1) > 0).astype(int)
    root = make_opt_ml(
        tmp_path_factory.mktemp("sequences") / "ml", None, None, {"model": "lstm", "hidden_size": "8", "epochs": "2"}
    )
    (root / "input/data/train").mkdir(parents=True)
    np.savez(root / "input/data/train/seq.npz", x=sequences, y=labels)
    run(Paths(root=root))
    return load_model(root / "model")


def expected(model: ModelArtifact, raw: list[list[object]]) -> list[str]:
    assert model.metadata.encoder is not None
    encoded = FeatureEncoder.from_json(model.metadata.encoder).transform(raw)
    return [str(label) for label in model.predict(encoded).labels]


@pytest.fixture
def churn(churn_model: ModelArtifact) -> FlaskClient:
    return create_app(BuiltinModel(churn_model)).test_client()


RAW = [["basic", -2.0, 0.5], ["pro", -2.0, 0.5], ["team", 1.5, -1.0], ["enterprise", 0.1, 0.0]]


def test_categorical_columns_arrive_as_text_in_csv_with_or_without_header(
    churn: FlaskClient, churn_model: ModelArtifact
) -> None:
    want = expected(churn_model, RAW)
    assert want[:2] == ["yes", "no"]
    rows = "\n".join(",".join(map(str, row)) for row in RAW)
    for body in (rows, "plan,usage,tenure\n" + rows):
        response = churn.post("/invocations", data=body, headers={"Content-Type": "text/csv", "Accept": "text/csv"})
        assert response.status_code == 200, response.get_json()
        assert response.get_data(as_text=True).splitlines() == want
    reordered = "tenure,plan,usage\n" + "\n".join(f"{t},{p},{u}" for p, u, t in RAW)
    response = churn.post("/invocations", data=reordered, headers={"Content-Type": "text/csv", "Accept": "text/csv"})
    assert response.get_data(as_text=True).splitlines() == want


def test_categorical_columns_in_json_and_json_lines(churn: FlaskClient, churn_model: ModelArtifact) -> None:
    want = expected(churn_model, RAW)
    objects = [dict(zip(("plan", "usage", "tenure"), row, strict=True)) for row in RAW]
    for content_type, body in (
        ("application/json", json.dumps({"instances": objects})),
        ("application/json", json.dumps({"instances": RAW})),
        ("application/jsonlines", "\n".join(json.dumps(row) for row in RAW)),
    ):
        response = churn.post("/invocations", data=body, headers={"Content-Type": content_type, "Accept": "text/csv"})
        assert response.status_code == 200, response.get_json()
        assert response.get_data(as_text=True).splitlines() == want


@pytest.mark.parametrize(
    ("content_type", "body", "message"),
    [
        ("text/csv", "basic,lots,0.5", "row 1, column 2 ('usage'): 'lots' is not a number"),
        ("text/csv", "basic,,0.5", "row 1, column 2 ('usage'): value is missing"),
        ("text/csv", "basic,1e39,0.5", "row 1: a value is beyond the float32 range"),
        ("text/csv", "basic,1", "CSV line 1 has 2 values; each row needs 3 features"),
        ("application/json", '{"instances": [["pro", [1], 2]]}', "instance 1, feature 2: expected a number or a text"),
        ("application/json", '{"instances": [{"plan": "pro", "usage": 1}]}', "missing: 'tenure'"),
    ],
)
def test_bad_values_for_text_column_models_are_400(
    churn: FlaskClient, content_type: str, body: str, message: str
) -> None:
    response = churn.post("/invocations", data=body, headers={"Content-Type": content_type})
    assert response.status_code == 400
    assert message in response.get_json()["message"]


def test_sequences_as_npy_and_nested_json(sequence_model: ModelArtifact) -> None:
    assert sequence_model.input_shape == (6, 2)
    client = create_app(BuiltinModel(sequence_model)).test_client()
    sequences = np.random.default_rng(7).normal(size=(3, 6, 2))
    want = [str(label) for label in sequence_model.predict(sequences.reshape(3, -1)).labels]
    buffer = io.BytesIO()
    np.save(buffer, sequences)
    for content_type, body in (
        ("application/x-npy", buffer.getvalue()),
        ("application/json", json.dumps({"instances": sequences.tolist()})),
        ("application/jsonlines", "\n".join(json.dumps(s) for s in sequences.tolist())),
    ):
        response = client.post("/invocations", data=body, headers={"Content-Type": content_type, "Accept": "text/csv"})
        assert response.status_code == 200, response.get_json()
        assert response.get_data(as_text=True).splitlines() == want
    one = io.BytesIO()
    np.save(one, sequences[0])
    response = client.post("/invocations", data=one.getvalue(), headers={"Content-Type": "application/x-npy"})
    assert np.load(io.BytesIO(response.data)).tolist() == sequence_model.predict(sequences[:1].reshape(1, -1)).labels
    bad = client.post("/invocations", json={"instances": [[[1, 2, 3]] * 6]})
    assert bad.status_code == 400
    assert bad.get_json()["message"] == "instance 1 has shape (6, 3); one record is shaped (6, 2)"
