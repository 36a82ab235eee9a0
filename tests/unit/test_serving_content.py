"""Every request and response type, CSV headers, Accept negotiation and the custom attributes."""

from __future__ import annotations

import copy
import io
import json

import numpy as np
import pytest
from flask.testing import FlaskClient

from optml.container.artifact import ModelArtifact
from optml.serve.app import create_app
from optml.serve.builtin import BuiltinModel
from optml.serve.negotiation import OutputOptions, choose_response_type, parse_custom_attributes
from optml.serve.settings import ServerSettings
from tests.conftest import make_classification

ROWS = make_classification(6, 4, 2, seed=11)[:, 1:]
NAMES = ["age", "height", "weight", "score"]
ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"


def csv_text(rows: np.ndarray) -> str:
    return "\n".join(",".join(repr(float(v)) for v in row) for row in rows) + "\n"


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def npz_bytes(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


@pytest.fixture
def named_model(model: ModelArtifact) -> ModelArtifact:
    """The same network, saved as if training had seen a header row with these column names."""
    metadata = copy.deepcopy(model.metadata)
    metadata.feature_names = list(NAMES)
    assert metadata.encoder is not None
    for column, name in zip(metadata.encoder["columns"], NAMES, strict=True):
        column["name"] = name
    return ModelArtifact(model.network, metadata)


@pytest.fixture
def client(model: ModelArtifact) -> FlaskClient:
    return create_app(BuiltinModel(model)).test_client()


@pytest.fixture
def named_client(named_model: ModelArtifact) -> FlaskClient:
    return create_app(BuiltinModel(named_model)).test_client()


def expected_labels(model: ModelArtifact, rows: np.ndarray = ROWS) -> list[str]:
    return [str(label) for label in model.predict(rows).labels]


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/csv", csv_text(ROWS)),
        ("text/csv; charset=utf-8", csv_text(ROWS).rstrip("\n")),  # no trailing newline
        ("text/csv; charset=ISO-8859-1", csv_text(ROWS).replace("\n", "\r\n")),
        ("text/csv", "\ufeff" + csv_text(ROWS)),  # a spreadsheet's byte-order mark
        ("application/json", json.dumps({"instances": ROWS.tolist()})),
        ("application/json", json.dumps({"instances": [{"features": row} for row in ROWS.tolist()]})),
        ("application/json", json.dumps(ROWS.tolist())),
        ("application/jsonlines", "".join(json.dumps(row) + "\n" for row in ROWS.tolist())),
        ("application/jsonlines", "\n".join(json.dumps({"features": row}) for row in ROWS.tolist())),
        ("application/x-npy", npy_bytes(ROWS)),
        ("application/x-npy", npy_bytes(ROWS.astype(np.float32))),
        ("application/x-npz", npz_bytes(instances=ROWS)),
        ("application/x-npz", npz_bytes(anything=ROWS)),  # a single array, whatever its name
    ],
)
def test_every_request_type_gives_the_same_predictions(
    client: FlaskClient, model: ModelArtifact, content_type: str, body: str | bytes
) -> None:
    response = client.post("/invocations", data=body, headers={"Content-Type": content_type, "Accept": "text/csv"})
    assert response.status_code == 200, response.get_json()
    assert response.get_data(as_text=True).splitlines() == expected_labels(model)


def test_single_records_in_json_and_npy(client: FlaskClient, model: ModelArtifact) -> None:
    for content_type, body in [
        ("application/json", json.dumps({"features": ROWS[0].tolist()})),
        ("application/json", json.dumps(ROWS[0].tolist())),
        ("application/x-npy", npy_bytes(ROWS[0])),
    ]:
        response = client.post("/invocations", data=body, headers={"Content-Type": content_type, "Accept": "text/csv"})
        assert response.get_data(as_text=True).splitlines() == expected_labels(model, ROWS[:1])


def test_csv_header_is_matched_to_feature_names_in_any_order(named_client: FlaskClient, model: ModelArtifact) -> None:
    order = [2, 0, 3, 1]
    header = ",".join(NAMES[i] for i in order)
    response = named_client.post(
        "/invocations",
        data=header + "\n" + csv_text(ROWS[:, order]),
        headers={"Content-Type": "text/csv", "Accept": "text/csv"},
    )
    assert response.status_code == 200, response.get_json()
    assert response.get_data(as_text=True).splitlines() == expected_labels(model)


def test_json_objects_keyed_by_feature_name(named_client: FlaskClient, model: ModelArtifact) -> None:
    instances = [dict(zip(reversed(NAMES), reversed(row), strict=True)) for row in ROWS.tolist()]
    response = named_client.post("/invocations", json={"instances": instances}, headers={"Accept": "text/csv"})
    assert response.status_code == 200, response.get_json()
    assert response.get_data(as_text=True).splitlines() == expected_labels(model)


@pytest.mark.parametrize(
    ("named", "body", "content_type", "message"),
    [
        (
            False,
            "a,b,c,d\n1,2,3,4\n",
            "text/csv",
            "CSV line 1 looks like a header ('a', 'b', 'c', 'd'), but this model was trained without"
            " feature names: send rows of 4 numbers without a header",
        ),
        (
            True,
            "age,height,mass,score\n1,2,3,4\n",
            "text/csv",
            "CSV header does not match the model's features (unknown: 'mass'; missing: 'weight');"
            " expected the columns age, height, weight, score",
        ),
        (True, "age,height,weight,score\n", "text/csv", "CSV body has a header row but no rows of features"),
        (
            True,
            "age,height,weight,score\n1,2,3,4\n1,2,3\n",
            "text/csv",
            "CSV line 3 has 3 values; each row needs 4 features",
        ),
        (
            False,
            '{"instances": [{"age": 1}]}',
            "application/json",
            "instance 1 is an object, but this model was trained without feature names",
        ),
        (
            True,
            '{"instances": [{"age": 1, "height": 2, "weight": 3, "size": 4}]}',
            "application/json",
            "instance 1 does not match the model's features; unknown: 'size'; missing: 'score'",
        ),
        (True, '[1, 2, 3, "x"]', "application/json", 'the record, feature 4: "x" is not a number'),
        (True, '{"features": [1, 2, 3]}', "application/json", "the record has 3 values"),
        (True, "[1,2,3,4]\n[1,2]\n", "application/jsonlines", "JSON Lines line 2 has 2 values"),
        (True, "[1,2,3,4]\n{oops\n", "application/jsonlines", "JSON Lines line 2: invalid JSON"),
        (True, "[1e999, 2, 3, 4]", "application/json", "row 1, column 1: inf is not a finite number"),
        (True, "[3.5e38, 2, 3, 4]", "application/json", "row 1, column 1: 3.5e+38 is beyond the float32"),
        (True, "1,2,3,4\n1,2,-4e38,4", "text/csv", "row 2, column 3: -4e+38 is beyond the float32 range"),
        (True, "[1" + "0" * 400 + ", 2, 3, 4]", "application/json", "is too large for a float"),
        (True, "[[[1, 2, 3, 4]]]", "application/json", "instance 1 has 1 values"),
        # Rows of several records take one numpy conversion; anything but plain numbers is still named:
        (
            True,
            '{"instances": [[1, 2, 3, 4], [1, true, 3, 4]]}',
            "application/json",
            "instance 2, feature 2: bool is not a number",
        ),
        (True, '[[1, 2, 3, 4], [1, 2, "3", 4]]', "application/json", 'instance 2, feature 3: "3" is not a number'),
        (True, "[[1, 2, 3, 4], [1, 2, null, 4]]", "application/json", "instance 2, feature 3: null is not a number"),
        (True, "[[1, 2, 3, 4], [1, 2, 3]]", "application/json", "instance 2 has 3 values"),
        (True, "[[1, 2, 3, 4], [1e999, 2, 3, 4]]", "application/json", "row 2, column 1: inf is not a finite"),
        (True, "[[1, 2, 3, 4], [1" + "0" * 40 + ", 2, 3, 4]]", "application/json", "row 2, column 1: 1e+40 is beyond"),
        (True, "\n\n", "application/jsonlines", "empty JSON Lines body"),
        (True, b"", "application/x-npy", "empty body: expected an application/x-npy array"),
        (True, b"not numpy", "application/x-npy", "body is not a readable .npy array"),
        (
            True,
            npy_bytes(np.zeros((2, 3))),
            "application/x-npy",
            "has shape (2, 3); expected (rows, 4) or one record (4)",
        ),
        (True, npy_bytes(np.zeros((2, 2, 4))), "application/x-npy", "has shape (2, 2, 4); expected"),
        (True, npy_bytes(np.array(["a", "b"])), "application/x-npy", "has dtype <U1; expected integers"),
        (True, npz_bytes(a=ROWS, b=ROWS), "application/x-npz", ".npz holds a, b; send one array"),
        (True, b"PK\x03\x04junk", "application/x-npz", "body is not a readable .npz archive"),
        (True, "1,2,3,4", "text/csv; charset=klingon", "charset 'klingon' is not supported"),
    ],
)
def test_malformed_bodies_are_400_naming_the_problem(
    client: FlaskClient,
    named_client: FlaskClient,
    named: bool,
    body: str | bytes,
    content_type: str,
    message: str,
) -> None:
    response = (named_client if named else client).post(
        "/invocations", data=body, headers={"Content-Type": content_type}
    )
    assert response.status_code in (400, 415)
    assert message in response.get_json()["message"]
    assert set(response.get_json()) == {"error", "message"}


@pytest.mark.parametrize(
    ("accept", "default", "request_type", "expected"),
    [
        (None, None, "application/x-npz", "application/json"),
        (None, "application/jsonlines", "text/csv", "application/jsonlines"),
        ("*/*", None, "application/jsonlines", "application/jsonlines"),
        ("application/*", None, "text/csv", "application/json"),
        ("application/*", None, "application/x-npy", "application/x-npy"),
        ("text/html, application/x-npy;q=0.5, text/csv;q=0.4", None, "text/csv", "application/x-npy"),
        ("application/json;q=0.5, */*;q=0.1", None, "text/csv", "application/json"),
        ("image/png, */*;q=0.1", None, "application/json", "application/json"),
    ],
)
def test_accept_negotiation_honours_q_values_lists_and_wildcards(
    accept: str | None, default: str | None, request_type: str, expected: str
) -> None:
    assert choose_response_type(accept, default, request_type) == expected


def test_every_response_type(client: FlaskClient, model: ModelArtifact) -> None:
    expected = model.predict(ROWS)
    assert expected.scores is not None
    headers = {"Content-Type": "text/csv"}
    lines = client.post("/invocations", data=csv_text(ROWS), headers=headers | {"Accept": "application/jsonlines"})
    records = [json.loads(line) for line in lines.get_data(as_text=True).splitlines()]
    assert [r["label"] for r in records] == expected.labels
    npy = client.post("/invocations", data=csv_text(ROWS), headers=headers | {"Accept": "application/x-npy"})
    assert npy.mimetype == "application/x-npy"
    assert np.load(io.BytesIO(npy.data)).tolist() == expected.labels
    probabilities = client.post(
        "/invocations",
        data=csv_text(ROWS),
        headers=headers | {"Accept": "application/x-npy", ATTRIBUTES: "output=probabilities"},
    )
    np.testing.assert_allclose(np.load(io.BytesIO(probabilities.data)), expected.scores)


def test_custom_attributes_select_the_output_and_are_echoed(client: FlaskClient, model: ModelArtifact) -> None:
    expected = model.predict(ROWS)
    assert expected.scores is not None
    attributes = "trace-id-1234, output=probabilities; colour=blue"
    response = client.post(
        "/invocations",
        data=csv_text(ROWS),
        headers={"Content-Type": "text/csv", "Accept": "text/csv", ATTRIBUTES: attributes},
    )
    assert response.status_code == 200
    assert response.headers[ATTRIBUTES] == attributes
    got = [[float(v) for v in line.split(",")] for line in response.get_data(as_text=True).splitlines()]
    np.testing.assert_allclose(got, expected.scores, atol=1e-6)
    assert (
        client.post("/invocations", data=csv_text(ROWS), headers={"Content-Type": "text/csv"}).headers.get(ATTRIBUTES)
        is None
    )


def test_threshold_moves_the_binary_decision(client: FlaskClient, model: ModelArtifact) -> None:
    classes = model.metadata.classes
    for threshold, label in (("0", classes[1]), ("1", classes[0])):
        response = client.post(
            "/invocations",
            data=csv_text(ROWS),
            headers={"Content-Type": "text/csv", ATTRIBUTES: f"threshold={threshold}"},
        )
        # P(positive) of this small model is never exactly 1, so threshold=1 gives all negative.
        assert response.get_data(as_text=True).splitlines() == [str(label)] * len(ROWS)


def test_top_k_lists_the_most_likely_classes(client: FlaskClient, model: ModelArtifact) -> None:
    expected = model.predict(ROWS)
    assert expected.scores is not None
    response = client.post("/invocations", json={"instances": ROWS.tolist()}, headers={ATTRIBUTES: "top_k=3"})
    records = response.get_json()["predictions"]
    for record, scores in zip(records, expected.scores, strict=True):
        assert len(record["top_k"]) == 2  # clamped to the number of classes
        assert record["top_k"][0]["label"] == record["label"]
        assert record["top_k"][0]["score"] == pytest.approx(float(scores.max()), abs=1e-6)
    csv = client.post("/invocations", data=csv_text(ROWS), headers={"Content-Type": "text/csv", ATTRIBUTES: "top_k=2"})
    assert [line.split(",")[0] for line in csv.get_data(as_text=True).splitlines()] == [
        str(label) for label in expected.labels
    ]


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        ("output=everything", "output='everything' (expected one of label, probabilities)"),
        ("threshold=1.5;top_k=0", "threshold='1.5' (expected a number from 0 to 1); top_k='0'"),
        ("threshold=nan", "threshold='nan'"),
        ("x" * 1025, "X-Amzn-SageMaker-Custom-Attributes is 1025 characters; at most 1024"),
    ],
)
def test_bad_custom_attributes_are_400_naming_them(client: FlaskClient, attributes: str, message: str) -> None:
    response = client.post(
        "/invocations", data=csv_text(ROWS), headers={"Content-Type": "text/csv", ATTRIBUTES: attributes}
    )
    assert response.status_code == 400
    assert message in response.get_json()["message"]


def test_custom_attribute_parsing() -> None:
    assert parse_custom_attributes(None) == OutputOptions()
    assert parse_custom_attributes(" Output = label ,threshold=0.25;top_k=3;unknown=1") == OutputOptions(
        output="label", threshold=0.25, top_k=3
    )


def test_oversized_body_is_refused_from_content_length_without_reading_it(model: ModelArtifact) -> None:
    class Unreadable(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            raise AssertionError("the body was read")

        readline = read

    client = create_app(BuiltinModel(model), ServerSettings(max_payload_bytes=1000)).test_client()
    response = client.post(
        "/invocations",
        input_stream=Unreadable(b"1,2,3,4\n" * 200),
        headers={"Content-Type": "text/csv", "Content-Length": "1001"},
    )
    assert response.status_code == 413
    assert response.get_json() == {
        "error": "request_entity_too_large",
        "message": "request body is larger than the 1000 bytes this endpoint accepts",
    }


def test_an_npz_that_would_inflate_past_its_cap_is_a_400(client: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """A compressed .npz is small on the wire: its arrays' declared size is checked before inflating them."""
    monkeypatch.setattr("optml.serve.codecs.NPZ_MAX_UNCOMPRESSED_BYTES", 1 << 20)
    body = io.BytesIO()
    np.savez_compressed(body, instances=np.zeros((40_000, 4)))  # 1.2 MiB of zeros in a few KiB
    response = client.post("/invocations", data=body.getvalue(), headers={"Content-Type": "application/x-npz"})
    assert response.status_code == 400
    assert response.get_json()["message"] == ".npz arrays are larger than 1 MiB"


def test_probabilities_round_trip_float32_tiny_and_near_one(client: FlaskClient, model: ModelArtifact) -> None:
    """6 decimals made 3e-9 a 0.0 (a ranking or a log-loss from the answer broke): every response type now
    reads back as the model's own float32 probabilities, exactly."""
    candidates = np.outer(np.linspace(0, 12, 1201), [1.0, 0.5, 0.0, 0.0])  # from 50:50 to all but certain
    scores = model.predict(candidates).scores
    assert scores is not None and scores.dtype == np.float32
    negative, positive = scores[:, 0], scores[:, 1]
    tiny = int(np.argmin(np.where(negative > 0, negative, np.inf)))  # the smallest P(class 0) above zero
    near_one = int(np.argmax(np.where(positive < 1, positive, -np.inf)))  # the largest P(class 1) below one
    rows = candidates[[tiny, 0, near_one]]
    expected = model.predict(rows).scores
    assert expected is not None and 0 < expected[0, 0] < 1e-12 and 1 - 1e-6 < expected[2, 1] < 1

    def served(accept: str) -> str:
        headers = {"Content-Type": "text/csv", "Accept": accept, ATTRIBUTES: "output=probabilities"}
        response = client.post("/invocations", data=csv_text(rows), headers=headers)
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.get_data(as_text=True)

    from_csv = [[float(v) for v in line.split(",")] for line in served("text/csv").splitlines()]
    from_json = [record["scores"] for record in json.loads(served("application/json"))["predictions"]]
    from_lines = [json.loads(line)["scores"] for line in served("application/jsonlines").splitlines()]
    for got in (from_csv, from_json, from_lines):
        np.testing.assert_array_equal(np.asarray(got, dtype=np.float32), expected)
