"""The flask app through its test client: content types, negotiation, and an error shape for every mistake."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient

from optml.container.artifact import ModelArtifact
from optml.serve.app import create_app
from optml.serve.builtin import BuiltinModel
from optml.serve.invocation import InferenceRequest, InferenceResponse
from optml.serve.settings import ServerSettings, SettingsError
from tests.conftest import make_classification

ROWS = make_classification(5, 4, 2, seed=9)[:, 1:]
CSV_BODY = "\n".join(",".join(str(v) for v in row) for row in ROWS) + "\n"


@pytest.fixture
def app(model: ModelArtifact) -> Flask:
    return create_app(BuiltinModel(model), ServerSettings(max_payload_bytes=4096))


@pytest.fixture
def client(app: Flask) -> Iterator[FlaskClient]:
    with app.test_client() as test_client:
        yield test_client


def test_ping_is_healthy_with_an_empty_body(client: FlaskClient) -> None:
    response = client.get("/ping")
    assert response.status_code == 200
    assert response.data == b""


def test_csv_in_csv_out_gives_one_label_per_row(client: FlaskClient, model: ModelArtifact) -> None:
    response = client.post("/invocations", data=CSV_BODY, headers={"Content-Type": "text/csv", "Accept": "text/csv"})
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    expected = model.predict(ROWS).labels
    assert response.get_data(as_text=True).splitlines() == [str(label) for label in expected]


def test_json_in_json_out_gives_labels_and_scores(client: FlaskClient, model: ModelArtifact) -> None:
    response = client.post("/invocations", json={"instances": ROWS.tolist()}, headers={"Accept": "application/json"})
    assert response.status_code == 200
    predictions = response.get_json()["predictions"]
    expected = model.predict(ROWS)
    assert [p["label"] for p in predictions] == expected.labels
    assert expected.scores is not None
    np.testing.assert_allclose([p["scores"] for p in predictions], expected.scores, atol=1e-6)


def test_a_single_flat_json_row_is_accepted(client: FlaskClient) -> None:
    response = client.post("/invocations", json=ROWS[0].tolist(), headers={"Accept": "text/csv"})
    assert response.status_code == 200
    assert len(response.get_data(as_text=True).splitlines()) == 1


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, "text/csv"),  # no preference: answer in the request's type
        ("*/*", "text/csv"),
        ("application/json", "application/json"),
        ("text/html;q=0.9, application/json;q=0.5", "application/json"),
        ("text/csv;q=0.2, application/json;q=0.8", "application/json"),
    ],
)
def test_accept_negotiation(client: FlaskClient, accept: str | None, expected: str) -> None:
    headers = {"Content-Type": "text/csv; charset=utf-8"} | ({"Accept": accept} if accept else {})
    response = client.post("/invocations", data=CSV_BODY, headers=headers)
    assert response.status_code == 200
    assert response.mimetype == expected


def test_default_accept_comes_from_the_environment_setting(model: ModelArtifact) -> None:
    app = create_app(BuiltinModel(model), ServerSettings(default_accept="application/json"))
    response = app.test_client().post("/invocations", data=CSV_BODY, headers={"Content-Type": "text/csv"})
    assert response.mimetype == "application/json"


@pytest.mark.parametrize(
    ("body", "content_type", "status", "message"),
    [
        (CSV_BODY, "application/x-unknown", 415, "Content-Type 'application/x-unknown' is not supported"),
        ("", "text/csv", 400, "empty CSV body"),
        ("1,2,3\n", "text/csv", 400, "CSV line 1 has 3 values; each row needs 4 features"),
        ("1,2,3,4\n1,2,x,4\n", "text/csv", 400, "CSV line 2, column 3: 'x' is not a number"),
        ("1,2,3,nan\n", "text/csv", 400, "row 1, column 4: nan is not a finite number"),
        (b"\xff\xfe1,2", "text/csv", 400, "body is not valid UTF-8 (byte 0)"),
        ("{", "application/json", 400, "invalid JSON at line 1 column 2"),
        ('{"rows": []}', "application/json", 400, 'JSON body must be {"instances"'),
        ('{"instances": [[1, 2, 3, 4], [1, 2]]}', "application/json", 400, "instance 2 has 2 values"),
        (
            '{"instances": [[1, 2, "3", 4]]}',
            "application/json",
            400,
            'instance 1, feature 3: "3" is not a number',
        ),
        ('{"instances": []}', "application/json", 400, "no rows to predict"),
    ],
)
def test_client_mistakes_get_a_json_error_naming_the_problem(
    client: FlaskClient, body: str | bytes, content_type: str, status: int, message: str
) -> None:
    response = client.post("/invocations", data=body, headers={"Content-Type": content_type})
    assert response.status_code == status
    payload = response.get_json()
    assert message in payload["message"]
    assert set(payload) == {"error", "message"}
    assert client.get("/ping").status_code == 200


def test_unsatisfiable_accept_is_406(client: FlaskClient) -> None:
    response = client.post("/invocations", data=CSV_BODY, headers={"Content-Type": "text/csv", "Accept": "image/png"})
    assert response.status_code == 406
    assert response.get_json() == {
        "error": "not_acceptable",
        "message": "Accept 'image/png' cannot be served; this model answers"
        " text/csv, application/json, application/jsonlines, application/x-npy",
    }


def test_oversized_body_is_413_json(client: FlaskClient) -> None:
    response = client.post("/invocations", data="1,2,3,4\n" * 1000, headers={"Content-Type": "text/csv"})
    assert response.status_code == 413
    assert response.get_json()["message"] == "request body is larger than the 4096 bytes this endpoint accepts"


def test_a_failed_request_is_logged_with_its_reason(client: FlaskClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="optml.serve")
    client.post("/invocations", data="1,2,x,4\n", headers={"Content-Type": "text/csv"})
    client.get("/nowhere")
    assert "POST /invocations -> 400 bad_request: CSV line 1, column 3: 'x' is not a number" in caplog.text
    assert "GET /nowhere -> 404 not_found" in caplog.text


def test_unknown_route_and_method_answer_json(client: FlaskClient) -> None:
    assert client.get("/nowhere").get_json()["error"] == "not_found"
    response = client.get("/invocations")
    assert response.status_code == 405
    assert response.get_json()["error"] == "method_not_allowed"


def test_unexpected_errors_are_500_without_traceback(
    model: ModelArtifact, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def explode(features: np.ndarray) -> None:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(model, "predict", explode)
    client = create_app(BuiltinModel(model)).test_client()
    response = client.post("/invocations", data=CSV_BODY, headers={"Content-Type": "text/csv"})
    assert response.status_code == 500
    assert response.get_json() == {
        "error": "internal_error",
        "message": "the model server failed on this request; see the endpoint logs",
    }
    assert b"secret" not in response.data and b"Traceback" not in response.data
    assert "secret internal detail" in caplog.text  # logged server-side
    assert client.get("/ping").status_code == 200


def test_server_settings_from_environment() -> None:
    settings = ServerSettings.from_env(
        {
            "SAGEMAKER_BIND_TO_PORT": "9090",
            "SAGEMAKER_MODEL_SERVER_WORKERS": "3",
            "SAGEMAKER_MAX_PAYLOAD_IN_MB": "20",
        }
    )
    assert (settings.port, settings.workers, settings.timeout, settings.max_payload_mb) == (9090, 3, 60, 20)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"SAGEMAKER_MODEL_SERVER_WORKERS": "many"},
            "SAGEMAKER_MODEL_SERVER_WORKERS='many' is not an integer",
        ),
        ({"SAGEMAKER_BIND_TO_PORT": "70000"}, "SAGEMAKER_BIND_TO_PORT=70000 is out of range"),
        ({"SAGEMAKER_MAX_PAYLOAD_IN_MB": "0"}, "expected at least 1 and at most 100"),
    ],
)
def test_bad_server_settings_are_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace("(", r"\(")):
        ServerSettings.from_env(env)


class EchoModel:
    """Another kind of ServedModel, as a user's inference script will be: it decodes and encodes itself."""

    def __init__(self) -> None:
        self.requests: list[InferenceRequest] = []

    def invoke(self, request: InferenceRequest, settings: ServerSettings) -> InferenceResponse:
        self.requests.append(request)
        return InferenceResponse(b"echo:" + request.body, "application/x-echo; v=1")

    def describe(self) -> dict[str, object]:
        return {"kind": "echo"}


def test_a_served_model_gets_the_request_as_sent_and_answers_in_its_own_type() -> None:
    model = EchoModel()
    headers = {
        "Content-Type": "application/x-thing; charset=latin-1",
        "Accept": "application/x-echo",
        "X-Amzn-SageMaker-Custom-Attributes": "trace=7",
    }
    response = create_app(model).test_client().post("/invocations", data=b"\x00raw", headers=headers)
    assert response.status_code == 200
    assert (response.data, response.headers["Content-Type"]) == (b"echo:\x00raw", "application/x-echo; v=1")
    assert response.headers["X-Amzn-SageMaker-Custom-Attributes"] == "trace=7"
    [request] = model.requests
    assert (request.content_type, dict(request.content_type_params), request.accept, request.custom_attributes) == (
        "application/x-thing",
        {"charset": "latin-1"},
        "application/x-echo",
        "trace=7",
    )
