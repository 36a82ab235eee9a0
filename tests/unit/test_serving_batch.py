"""Batch transform: execution parameters, and one answer line per input line, in order."""

from __future__ import annotations

import json

import numpy as np
import pytest
from flask.testing import FlaskClient

from optml.container.artifact import ModelArtifact
from optml.serve.app import create_app
from optml.serve.batch import ExecutionParameters
from optml.serve.builtin import BuiltinModel
from optml.serve.settings import ServerSettings, SettingsError
from tests.conftest import make_classification

ROWS = make_classification(25, 4, 2, seed=21)[:, 1:]


@pytest.fixture
def batch_client(model: ModelArtifact) -> FlaskClient:
    return create_app(BuiltinModel(model), ServerSettings(batch=True)).test_client()


@pytest.mark.parametrize(
    ("workers", "payload", "configured", "expected"),
    [
        (2, 6, None, (2, 6)),
        (16, 6, None, (16, 6)),  # 16 x 6 = 96 <= 100
        (20, 6, None, (20, 5)),  # payload cut so that concurrency x payload <= 100
        (1, 100, None, (1, 100)),
        (4, 100, None, (4, 25)),
        (2, 6, 3, (3, 6)),  # SAGEMAKER_MAX_CONCURRENT_TRANSFORMS wins over the worker count
        (500, 6, None, (100, 1)),
    ],
)
def test_execution_parameters_respect_sagemaker_limits(
    workers: int, payload: int, configured: int | None, expected: tuple[int, int]
) -> None:
    parameters = ExecutionParameters.for_server(workers, payload, "MULTI_RECORD", configured)
    assert (parameters.max_concurrent_transforms, parameters.max_payload_mb) == expected
    assert parameters.max_payload_mb <= 100
    assert parameters.max_concurrent_transforms * parameters.max_payload_mb <= 100


def test_execution_parameters_endpoint(model: ModelArtifact) -> None:
    response = create_app(BuiltinModel(model), ServerSettings(workers=3)).test_client().get("/execution-parameters")
    assert response.status_code == 200
    assert response.get_json() == {
        "MaxConcurrentTransforms": 3,
        "BatchStrategy": "MULTI_RECORD",
        "MaxPayloadInMB": 6,
    }


def test_batch_settings_from_environment() -> None:
    settings = ServerSettings.from_env(
        {
            "SAGEMAKER_BATCH": "True",
            "SAGEMAKER_BATCH_STRATEGY": "single_record",
            "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS": "4",
            "SAGEMAKER_SAFE_PORT_RANGE": "9000-9100",
        }
    )
    assert (settings.batch, settings.batch_strategy, settings.max_concurrent_transforms) == (
        True,
        "SINGLE_RECORD",
        4,
    )
    assert settings.safe_port_range == (9000, 9100)
    assert ServerSettings.from_env({}).batch is False


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SAGEMAKER_BATCH": "maybe"}, "SAGEMAKER_BATCH='maybe' is not a boolean"),
        ({"SAGEMAKER_BATCH_STRATEGY": "ALL"}, "SAGEMAKER_BATCH_STRATEGY='ALL' is not one of MULTI_RECORD"),
        ({"SAGEMAKER_SAFE_PORT_RANGE": "9100-9000"}, "is not a port range like 9000-9999"),
    ],
)
def test_bad_batch_settings_are_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        ServerSettings.from_env(env)


@pytest.mark.parametrize("trailing_newline", [True, False])
@pytest.mark.parametrize(
    ("content_type", "accept", "line"),
    [
        ("text/csv", "text/csv", lambda row: ",".join(map(repr, row))),
        ("application/jsonlines", "application/jsonlines", json.dumps),
        ("application/json", "application/json", lambda row: json.dumps({"features": row})),
        ("text/csv", "application/json", lambda row: ",".join(map(repr, row))),
    ],
)
def test_a_multi_record_body_gets_one_line_per_record_in_order(
    batch_client: FlaskClient,
    model: ModelArtifact,
    content_type: str,
    accept: str,
    line,
    trailing_newline: bool,
) -> None:
    body = "\n".join(line(row) for row in ROWS.tolist()) + ("\n" if trailing_newline else "")
    response = batch_client.post("/invocations", data=body, headers={"Content-Type": content_type, "Accept": accept})
    assert response.status_code == 200, response.get_json()
    # No final newline: with AssembleWith=Line SageMaker adds one after each mini-batch's answer.
    lines = response.get_data(as_text=True).split("\n")
    expected = model.predict(ROWS).labels
    if accept == "text/csv":
        assert lines == [str(label) for label in expected]
    else:
        assert [json.loads(text)["label"] for text in lines] == expected


@pytest.mark.parametrize("indent", [None, 2])
def test_a_single_json_document_still_gets_a_json_document_in_batch(batch_client: FlaskClient, indent) -> None:
    body = json.dumps({"instances": ROWS[:3].tolist()}, indent=indent)  # pretty-printed: many lines, one record
    response = batch_client.post("/invocations", data=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.get_json()
    assert len(response.get_json()["predictions"]) == 3


def test_batch_of_the_largest_payload_is_parsed_fast_and_right(model: ModelArtifact) -> None:
    rows = np.round(np.random.default_rng(3).normal(size=(20000, 4)), 6)
    body = "\n".join(",".join(map(repr, row)) for row in rows.tolist())
    client = create_app(BuiltinModel(model), ServerSettings(batch=True)).test_client()
    response = client.post("/invocations", data=body, headers={"Content-Type": "text/csv"})
    assert response.get_data(as_text=True).splitlines() == [str(label) for label in model.predict(rows).labels]
