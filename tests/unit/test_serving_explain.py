"""Per-request explanations (custom attribute explain=true): the shape of each response type, the sum that
reproduces the model's score, the refusals, and that plain predictions never load the explainer (nor captum).

The models are the trained fixtures of tests/fixtures/models/v1, copied with a background saved beside them
(they were saved before backgrounds existed: as they are, they are the "older model" of the refusal test).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from flask.testing import FlaskClient

from optml.container.artifact import ModelMetadata, load_model, save_model
from optml.container.errors import UserError
from optml.container.explain import save_background, summarize_background
from optml.container.features import FeatureEncoder
from optml.container.kinds import BINARY
from optml.container.networks import NetworkSpec, build_network
from optml.serve.app import create_app
from optml.serve.builtin import BuiltinModel
from optml.serve.invocation import InferenceRequest
from optml.serve.multimodel import ModelRegistry
from optml.serve.negotiation import parse_custom_attributes
from optml.serve.settings import ServerSettings

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "models" / "v1"
ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"
EXPLAIN = {ATTRIBUTES: "explain=true"}
CSV = {"Content-Type": "text/csv"}
JSON_LINES = "application/jsonlines"
JSON = "application/json"
# What this server promises: base_value + sum(attributions) is the explained score within 1e-4 (probabilities),
# or 1e-4 x max(1, |value|, the label's standard deviation) for regression (float32 rounding of DeepLIFT).
TOLERANCE = 1e-4
CHURN_COLUMNS = ["tenure", "usage", "plan"]  # the binary fixture's columns, in training order
CHURN_ROWS = [[1.29, 3.275, "team"], [57.79, 5.079, "basic"], [7.93, 4.89, "pro"], [37.91, 1.441, "pro"]]
NUMERIC_ROWS = [[-0.488, -1.9044, 0.6568], [0.5575, -0.5956, -1.7906], [2.8456, 2.128, 0.9537]]


def training_like_rows(name: str, count: int) -> list[list[object]]:
    """Rows drawn like the fixture's training data (tools/make_model_fixtures.py), as a client sends them."""
    rng = np.random.default_rng(3)
    if name == "binary_mlp":
        columns = rng.uniform(0, 60, count), rng.normal(5, 2, count), rng.choice(["basic", "pro", "team"], count)
        return [[float(tenure), float(usage), str(plan)] for tenure, usage, plan in zip(*columns, strict=True)]
    return rng.normal(size=(count, 3)).round(4).tolist()


def with_background(name: str, directory: Path) -> Path:
    """The fixture model `name` copied into `directory`, with a k-means background of rows like its training
    rows, encoded as the model predicts them (as training saves it)."""
    model_dir = directory / name
    shutil.copytree(FIXTURES / name / "model", model_dir)
    rows = training_like_rows(name, 200)
    encoder_json = load_model(model_dir).metadata.encoder
    encoded = FeatureEncoder.from_json(encoder_json).transform(rows) if encoder_json else np.asarray(rows)
    save_background(model_dir, summarize_background(np.asarray(encoded, dtype=np.float64), 8, "kmeans", 0))
    return model_dir


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("explained")
    return {name: with_background(name, root) for name in ("binary_mlp", "multiclass_mlp", "regression_mlp")}


def client(model_dir: Path, settings: ServerSettings | None = None) -> FlaskClient:
    return create_app(BuiltinModel.load(model_dir), settings).test_client()


def post(test_client: FlaskClient, body: str, content_type: str, accept: str, attributes: str = "explain=true") -> str:
    headers = {"Content-Type": content_type, "Accept": accept, ATTRIBUTES: attributes}
    response = test_client.post("/invocations", data=body, headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_data(as_text=True)


def explained_score(record: dict[str, object]) -> float:
    explanation = record["explanation"]
    assert isinstance(explanation, dict)
    return float(explanation["base_value"]) + sum(explanation["attributions"].values())


# ---- the custom attribute --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [("explain=true", True), ("explain=TRUE; top_k=1", True), ("explain=false", False), ("trace-7", False)],
)
def test_explain_is_a_custom_attribute_true_or_false(header: str, expected: bool) -> None:
    assert parse_custom_attributes(header).explain is expected


def test_an_invalid_explain_value_is_a_400_naming_the_attribute_and_its_values(model_dirs: dict[str, Path]) -> None:
    response = client(model_dirs["binary_mlp"]).post(
        "/invocations", data="1,2,pro", headers={"Content-Type": "text/csv", ATTRIBUTES: "explain=maybe,top_k=0"}
    )
    assert response.status_code == 400
    message = response.get_json()["message"]
    assert "explain='maybe' (expected true or false)" in message
    assert "top_k='0'" in message  # reported together with the other bad values, like every option


# ---- JSON, JSON Lines, CSV -----------------------------------------------------------------------------


def test_json_adds_an_explanation_to_each_prediction_that_sums_to_the_positive_class_probability(
    model_dirs: dict[str, Path],
) -> None:
    test_client = client(model_dirs["binary_mlp"])
    body = json.dumps({"instances": CHURN_ROWS})
    plain = json.loads(post(test_client, body, JSON, JSON, ""))["predictions"]
    explained = json.loads(post(test_client, body, JSON, JSON))["predictions"]
    assert len(explained) == len(CHURN_ROWS)
    for before, record in zip(plain, explained, strict=True):
        assert {key: record[key] for key in ("label", "scores")} == before  # the prediction itself is unchanged
        assert list(record["explanation"]["attributions"]) == CHURN_COLUMNS  # one per user column, one-hot summed
        assert explained_score(record) == pytest.approx(record["scores"][1], abs=TOLERANCE)
    assert len({record["explanation"]["base_value"] for record in explained}) == 1  # one background, one base


def test_json_lines_explains_the_predicted_class_of_a_multiclass_model(model_dirs: dict[str, Path]) -> None:
    body = "\n".join(json.dumps(row) for row in NUMERIC_ROWS)
    answer = post(client(model_dirs["multiclass_mlp"]), body, JSON_LINES, JSON_LINES)
    records = [json.loads(line) for line in answer.splitlines()]
    assert len(records) == len(NUMERIC_ROWS)
    predicted = {int(np.argmax(record["scores"])) for record in records}
    assert len(predicted) > 1, "the rows should be predicted as different classes"
    for record in records:
        assert len(set(record["explanation"]["attributions"])) == 3  # a model without a header: no names to check
        assert explained_score(record) == pytest.approx(max(record["scores"]), abs=TOLERANCE)


def test_regression_explains_the_predicted_value(model_dirs: dict[str, Path]) -> None:
    target_std = load_model(model_dirs["regression_mlp"]).metadata.target_std
    answer = post(client(model_dirs["regression_mlp"]), json.dumps(NUMERIC_ROWS), JSON, JSON)
    for record in json.loads(answer)["predictions"]:
        scale = max(1.0, abs(record["value"]), target_std)
        assert explained_score(record) == pytest.approx(record["value"], abs=TOLERANCE * scale)
        assert set(record) == {"value", "explanation"}


@pytest.mark.parametrize(
    ("attributes", "prediction_columns"), [("explain=true", 1), ("explain=true,output=probabilities", 2)]
)
def test_csv_gives_the_usual_columns_then_the_base_value_then_one_attribution_per_column(
    model_dirs: dict[str, Path], attributes: str, prediction_columns: int
) -> None:
    test_client = client(model_dirs["binary_mlp"])
    rows = "\n".join(",".join(map(str, row)) for row in CHURN_ROWS)
    usual = post(test_client, rows, "text/csv", "text/csv", attributes.replace("explain=true", "")).splitlines()
    as_json = json.loads(post(test_client, rows, "text/csv", "application/json"))["predictions"]
    lines = post(test_client, rows, "text/csv", "text/csv", attributes).splitlines()
    assert len(lines) == len(CHURN_ROWS)
    for line, plain, record in zip(lines, usual, as_json, strict=True):
        fields = line.split(",")
        assert len(fields) == prediction_columns + 1 + len(CHURN_COLUMNS)
        assert ",".join(fields[:prediction_columns]) == plain
        explanation = record["explanation"]
        expected = [explanation["base_value"], *(explanation["attributions"][c] for c in CHURN_COLUMNS)]
        assert [float(f) for f in fields[prediction_columns:]] == pytest.approx(expected, rel=1e-8, abs=1e-12)


def untrained_model(model_dir: Path, kind: str, shape: tuple[int, ...]) -> Path:
    """A binary model of network `kind` taking records shaped `shape`, its weights as initialised, with a
    background: what an image or sequence model's explanation looks like needs no training."""
    torch.manual_seed(0)
    spec = NetworkSpec(kind, shape, out_features=1, hidden_units=(8,), conv_channels=(4,), hidden_size=8)
    count = int(np.prod(shape))
    save_model(model_dir, build_network(spec), ModelMetadata(BINARY, spec, count, [0.0] * count, [1.0] * count, [0, 1]))
    save_background(model_dir, np.random.default_rng(0).normal(size=(4, count)))
    return model_dir


@pytest.mark.parametrize(
    ("kind", "shape", "columns"),
    [("cnn", (2, 4, 4), ["channel_0", "channel_1"]), ("lstm", (5, 2), ["feature_0", "feature_1"])],
)
def test_images_are_explained_per_channel_and_sequences_per_input_feature(
    tmp_path: Path, kind: str, shape: tuple[int, ...], columns: list[str]
) -> None:
    model_dir = untrained_model(tmp_path, kind, shape)
    records = np.random.default_rng(1).normal(size=(3, *shape)).round(3).tolist()  # each shaped like one record
    answer = json.loads(post(client(model_dir), json.dumps({"instances": records}), JSON, JSON))["predictions"]
    assert len(answer) == len(records)
    for record in answer:
        assert list(record["explanation"]["attributions"]) == columns
        # Expected gradients (CNNs, RNNs) are a quadrature of the integral: within 2e-2, not float32-exact.
        assert explained_score(record) == pytest.approx(record["scores"][1], abs=2e-2)


def test_npy_cannot_carry_an_explanation_406_before_any_work(model_dirs: dict[str, Path]) -> None:
    model = BuiltinModel.load(model_dirs["multiclass_mlp"])
    headers = {**CSV, "Accept": "application/x-npy", **EXPLAIN}
    response = create_app(model).test_client().post("/invocations", data="1,2,3", headers=headers)
    assert response.status_code == 406
    message = response.get_json()["message"]
    assert "explain=true is answered in application/json, application/jsonlines, text/csv" in message
    assert not model.explainer.built


# ---- batch transform and multi-model endpoints ---------------------------------------------------------


def test_batch_transform_lines_each_carry_their_explanation_and_no_final_newline(model_dirs: dict[str, Path]) -> None:
    batch = client(model_dirs["multiclass_mlp"], ServerSettings(batch=True))
    body = "\n".join(json.dumps({"features": row}) for row in NUMERIC_ROWS)  # SplitType=Line, as application/json
    answer = post(batch, body, JSON, JSON)
    assert not answer.endswith("\n")
    records = [json.loads(line) for line in answer.split("\n")]
    assert len(records) == len(NUMERIC_ROWS)
    assert all(explained_score(r) == pytest.approx(max(r["scores"]), abs=TOLERANCE) for r in records)
    csv_lines = post(batch, "\n".join(",".join(map(str, row)) for row in NUMERIC_ROWS), "text/csv", "text/csv")
    assert len(csv_lines.split("\n")) == len(NUMERIC_ROWS) and not csv_lines.endswith("\n")


def test_a_multi_model_endpoint_explains_each_model_from_its_own_directory(
    model_dirs: dict[str, Path], tmp_path: Path
) -> None:
    shutil.copytree(model_dirs["regression_mlp"], tmp_path / "with")
    shutil.copytree(FIXTURES / "regression_mlp" / "model", tmp_path / "without")
    registry = ModelRegistry(tmp_path, 1 << 30, BuiltinModel.load, scratch_dir=tmp_path)
    app = create_app(None, registry=registry).test_client()
    for name in ("with", "without"):
        assert app.post("/models", json={"model_name": name, "url": name}).status_code == 200
    headers = {"Content-Type": "text/csv", "Accept": "application/json", **EXPLAIN}
    explained = app.post("/models/with/invoke", data="0.1,0.2,0.3", headers=headers)
    assert explained.status_code == 200 and "explanation" in explained.get_json()["predictions"][0]
    assert app.post("/models/without/invoke", data="0.1,0.2,0.3", headers=headers).status_code == 400
    assert app.post("/models/without/invoke", data="0.1,0.2,0.3", headers=CSV).status_code == 200


def test_threads_explaining_and_predicting_at_once_answer_as_one_at_a_time(tmp_path: Path) -> None:
    # A multi-model endpoint's threads share each model: explanations (captum's autograd, for this LSTM) run
    # beside plain predictions of the same model, and neither may change the other's answer.
    model = BuiltinModel.load(untrained_model(tmp_path, "lstm", (1, 3)))
    rows = np.random.default_rng(2).normal(size=(12, 3)).round(3)

    def answer(index: int) -> bytes:
        body = ",".join(map(str, rows[index % len(rows)])).encode()
        attributes = "explain=true" if index % 2 else None
        request = InferenceRequest(body, "text/csv", {}, "application/json", attributes)
        return model.invoke(request, ServerSettings()).body

    alone = [answer(index) for index in range(48)]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(answer, range(48)))
    assert together == alone


# ---- refusals --------------------------------------------------------------------------------------------


def test_a_model_saved_without_a_background_says_why_and_what_to_do_and_still_predicts(tmp_path: Path) -> None:
    model_dir = shutil.copytree(FIXTURES / "binary_mlp" / "model", tmp_path / "model")  # saved before backgrounds
    test_client = client(model_dir)
    for _ in range(2):  # found out once, refused the same way every time
        response = test_client.post("/invocations", data="1,2,pro", headers={**CSV, **EXPLAIN})
        assert response.status_code == 400
        assert response.get_json()["error"] == "cannot_explain"
        message = response.get_json()["message"]
        assert "saved without the background" in message and "background.safetensors" in message
        assert "train it again with this image" in message
    assert test_client.post("/invocations", data="1,2,pro", headers=CSV).status_code == 200


def test_a_model_the_explainer_does_not_take_is_a_400_in_its_words(
    model_dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object) -> None:
        raise UserError("transformer networks are not explained")

    monkeypatch.setattr("optml.container.explain.Explainer", refuse)
    response = client(model_dirs["regression_mlp"]).post("/invocations", data="1,2,3", headers={**CSV, **EXPLAIN})
    assert response.status_code == 400
    assert response.get_json() == {
        "error": "cannot_explain",
        "message": "this model cannot be explained: transformer networks are not explained",
    }


# ---- the hot path ----------------------------------------------------------------------------------------


def test_the_explainer_is_built_on_the_first_explain_request_over_its_own_copy_of_the_network(
    model_dirs: dict[str, Path],
) -> None:
    model = BuiltinModel.load(model_dirs["multiclass_mlp"])
    test_client = create_app(model).test_client()
    assert test_client.post("/invocations", data="1,2,3", headers=CSV).status_code == 200
    assert not model.explainer.built
    assert test_client.post("/invocations", data="1,2,3", headers={**CSV, **EXPLAIN}).status_code == 200
    assert model.explainer.built
    explainer = model.explainer._explainer
    assert explainer is not None and explainer.artifact.network is not model.artifact.network
    served = {id(p) for p in model.artifact.network.parameters()}
    assert not served & {id(p) for p in explainer.artifact.network.parameters()}


PLAIN_THEN_EXPLAIN = """
import sys
from pathlib import Path
from optml.serve.app import create_app
from optml.serve.builtin import BuiltinModel
from optml.serve.invocation import InferenceRequest

client = create_app(BuiltinModel.load(Path(sys.argv[1]))).test_client()
csv = {"Content-Type": "text/csv"}
plain = client.post("/invocations", data="1,2,3", headers=csv)
print(plain.status_code, "captum" in sys.modules)
explained = client.post("/invocations", data="1,2,3", headers={**csv, "%s": "explain=true"})
print(explained.status_code, "captum" in sys.modules)
""".replace("%s", ATTRIBUTES)


def test_plain_predictions_never_import_captum(tmp_path: Path) -> None:
    # A sequence model: its explainer uses captum (an MLP's does not), so the probe can see captum come in.
    model_dir = untrained_model(tmp_path, "lstm", (1, 3))  # one time step of three features: "1,2,3"
    result = subprocess.run(
        [sys.executable, "-c", PLAIN_THEN_EXPLAIN, str(model_dir)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    # Loading the model and a plain answer leave captum out; the first explanation brings it in.
    assert result.stdout.split("\n")[:2] == ["200 False", "200 True"]
