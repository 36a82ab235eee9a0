"""Script mode serving: a user's inference.py (or the default handlers) behind the same app, limits and errors."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from optml.container.artifact import ModelLoadError
from optml.serve.app import create_app
from optml.serve.main import main
from optml.serve.multimodel import ModelRegistry
from optml.serve.readiness import WorkerReadiness
from optml.serve.script import ScriptModel
from optml.serve.settings import ServerSettings
from optml.serve.user_module import UserCode, UserCodeError, locate_user_code
from optml.serve.wsgi import is_builtin_model, load_any_model
from tests.conftest import REPO, model_with_script, save_torchscript

ROW = [1.0, 2.0, 3.0]  # the test model answers [x0, x1 + x2 + 0.5]: [1.0, 5.5]


@pytest.fixture(autouse=True)
def restore_import_state() -> Iterator[None]:
    """Each test's script is imported fresh and leaves no directory on sys.path behind."""
    path = list(sys.path)
    modules = set(sys.modules)
    yield
    sys.path[:] = path
    for name in set(sys.modules) - modules:
        del sys.modules[name]


def serve(model_dir: Path, settings: ServerSettings | None = None, env: dict[str, str] | None = None) -> FlaskClient:
    settings = settings or ServerSettings()
    code = locate_user_code(env or {}, model_dir, model_dir / "no-code")
    model = ScriptModel.prepare(model_dir, code, settings.default_accept)
    model.load()
    return create_app(model, settings).test_client()


def post(client: FlaskClient, body: bytes | str, content_type: str, accept: str | None = None) -> TestResponse:
    headers = {"Accept": accept} if accept else {}
    return client.post("/invocations", data=body, content_type=content_type, headers=headers)


# ---- the default handlers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ("1,2,3\n1,2,3\n", "text/csv"),
        ("[[1, 2, 3], [1, 2, 3]]", "application/json"),
        ('{"instances": [[1, 2, 3], [1, 2, 3]]}', "application/json"),
        ("[1, 2, 3]\n[1, 2, 3]\n", "application/jsonlines"),
        ('{"features": [1, 2, 3]}\n{"features": [1, 2, 3]}\n', "application/jsonlines"),
    ],
)
def test_the_default_handlers_serve_a_torchscript_model_per_content_type(
    tmp_path: Path, torchscript_dir: Path, body: str, content_type: str
) -> None:
    client = serve(model_with_script(tmp_path, torchscript_dir, None))

    response = post(client, body, content_type)

    assert response.status_code == 200, response.text
    assert response.content_type == "application/json"  # the toolkits' default Accept
    assert response.json == [[1.0, 5.5], [1.0, 5.5]]


def test_the_default_output_fn_encodes_per_accept(tmp_path: Path, torchscript_dir: Path) -> None:
    client = serve(model_with_script(tmp_path, torchscript_dir, None))
    buffer = io.BytesIO()
    np.save(buffer, np.array([ROW, ROW], dtype=np.float32))

    assert post(client, "1,2,3\n1,2,3\n", "text/csv", "text/csv").data == b"1.0,5.5\n1.0,5.5\n"
    assert post(client, "1,2,3\n", "text/csv", "application/jsonlines").data == b"[1.0, 5.5]\n"
    npy = post(client, buffer.getvalue(), "application/x-npy", "application/x-npy")
    assert npy.content_type == "application/x-npy"
    np.testing.assert_array_equal(np.load(io.BytesIO(npy.data)), np.array([[1.0, 5.5], [1.0, 5.5]], np.float32))


def test_the_default_input_fn_keeps_the_shape_of_nested_json(tmp_path: Path) -> None:
    """An image batch (N, 1, 2, 2) stays one: a CNN's input is not flattened into rows."""
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    save_torchscript(torch.nn.Flatten(), model_dir / "only.pt")  # the single *.pt
    client = serve(model_dir)

    response = post(client, json.dumps([[[[1, 2], [3, 4]]]]), "application/json")

    assert response.json == [[1.0, 2.0, 3.0, 4.0]]


@pytest.mark.parametrize(
    ("body", "content_type", "accept", "status", "message"),
    [
        ("[[1, 2], [3]]", "application/json", None, 400, "the JSON body must be numbers in lists of equal length"),
        ('{"rows": []}', "application/json", None, 400, "the JSON body must be numbers: nested lists,"),
        ("[[1, 2, NaN]]", "application/json", None, 400, "the JSON body: the value at (0, 2) (nan) is not a finite"),
        ("1,2,3\n", "text/plain", None, 415, "Content-Type 'text/plain' is not supported by the default input_fn"),
        ("1,2,3\n", "text/csv", "image/png", 406, "Accept 'image/png' cannot be served"),
        ("1,2\n", "text/csv", None, 400, "the model cannot take an input of shape (1, 2): "),
    ],
)
def test_the_default_handlers_answer_client_mistakes_with_4xx(
    tmp_path: Path, torchscript_dir: Path, body: str, content_type: str, accept: str | None, status: int, message: str
) -> None:
    client = serve(model_with_script(tmp_path, torchscript_dir, None))

    response = post(client, body, content_type, accept)

    assert response.status_code == status, response.text
    assert response.json is not None and response.json["message"].startswith(message), response.json


def test_the_default_model_fn_says_what_it_needs(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"x")
    model = ScriptModel.prepare(tmp_path, None, None)

    with pytest.raises(ModelLoadError) as failed:
        model.load()

    assert str(failed.value) == (
        f"the default model_fn loads a TorchScript model.pt (or the single *.pt / *.pth) from {tmp_path};"
        " found: weights.bin. Define model_fn in inference.py to load anything else"
    )


# ---- the user's handlers -----------------------------------------------------------------------------

FOUR_HANDLERS = """
    import json, os, warnings
    import torch

    def model_fn(model_dir):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.load(os.path.join(model_dir, "model.pt"))

    def input_fn(body, content_type, context):
        assert isinstance(body, str), type(body)  # JSON and CSV arrive as text, as the toolkits send them
        return torch.tensor(json.loads(body)["rows"], dtype=torch.float32), context.get_request_header(0, "X-Tag")

    def predict_fn(data, model):
        rows, tag = data
        return model(rows).tolist(), tag

    def output_fn(prediction, accept, context):
        scores, tag = prediction
        document = {"scores": scores, "tag": tag, "model_dir": context.system_properties["model_dir"], "accept": accept}
        return json.dumps(document), "application/vnd.test+json"
"""


def test_the_four_handlers_with_and_without_context(tmp_path: Path, torchscript_dir: Path) -> None:
    model_dir = model_with_script(tmp_path, torchscript_dir, FOUR_HANDLERS)
    client = serve(model_dir)

    response = client.post(
        "/invocations", data='{"rows": [[1, 2, 3]]}', content_type="application/json", headers={"X-Tag": "t1"}
    )

    assert response.status_code == 200, response.text
    assert response.content_type == "application/vnd.test+json"
    expected = {"scores": [[1.0, 5.5]], "tag": "t1", "model_dir": str(model_dir), "accept": "application/json"}
    assert response.json == expected


def test_transform_fn_alone_gets_the_body_as_bytes_for_other_types(tmp_path: Path, torchscript_dir: Path) -> None:
    script = """
        def transform_fn(model, body, content_type, accept, context):
            return repr((type(body).__name__, body, content_type, accept, context.system_properties["gpu_id"]))
    """
    client = serve(model_with_script(tmp_path, torchscript_dir, script))

    response = post(client, b"\x00\x01", "application/octet-stream", "text/plain")

    assert response.data == b"('bytes', b'\\x00\\x01', 'application/octet-stream', 'text/plain', None)"
    assert response.content_type == "text/plain"  # a body alone is sent as the Accept type


def test_an_output_that_is_not_bytes_or_text_is_sent_as_json(tmp_path: Path, torchscript_dir: Path) -> None:
    script = """
        def output_fn(prediction, accept):
            return {"first": prediction[0].tolist()}
    """
    client = serve(model_with_script(tmp_path, torchscript_dir, script))

    assert post(client, "1,2,3\n", "text/csv").json == {"first": [1.0, 5.5]}


@pytest.mark.parametrize(
    ("script", "message"),
    [
        (
            "def transform_fn(model, body, content_type, accept): ...\ndef model_fn(model_dir): ...\n",
            "{file} defines transform_fn together with model_fn: transform_fn answers the whole request alone",
        ),
        (
            "def transform_fn(m, b, c, a): ...\ndef input_fn(b, c): ...\ndef output_fn(p, a): ...\n",
            "{file} defines transform_fn together with input_fn, output_fn: ",
        ),
        (
            "def predict_fn(data): ...\n",
            "{file}: predict_fn(data) takes 1 arguments; it is called as predict_fn(data, model) or"
            " predict_fn(data, model, context)",
        ),
        ("input_fn = 3\n", "{file}: input_fn is a int, not a function"),
        ("def model_fn(model_dir)\n", "{file} failed to import: SyntaxError: "),
        ("import not_a_module_anywhere\n", "{file} failed to import: ModuleNotFoundError: No module named"),
    ],
)
def test_a_script_that_cannot_be_served_is_refused_at_start(
    tmp_path: Path, torchscript_dir: Path, script: str, message: str
) -> None:
    model_dir = model_with_script(tmp_path, torchscript_dir, script)
    code = UserCode(model_dir / "code", "inference")

    with pytest.raises(UserCodeError) as refused:
        ScriptModel.prepare(model_dir, code, None)

    assert str(refused.value).startswith(message.format(file=code.file)), str(refused.value)


def test_a_failing_model_fn_is_a_load_error_chained_to_the_users_exception(
    tmp_path: Path, torchscript_dir: Path
) -> None:
    script = "def model_fn(model_dir):\n    raise FileNotFoundError('weights.pth')\n"
    model_dir = model_with_script(tmp_path, torchscript_dir, script)
    model = ScriptModel.prepare(model_dir, UserCode(model_dir / "code", "inference"), None)

    with pytest.raises(UserCodeError) as failed:
        model.load()

    assert str(failed.value) == f"{model_dir / 'code' / 'inference.py'}: model_fn raised FileNotFoundError: weights.pth"
    assert isinstance(failed.value.__cause__, FileNotFoundError)


# ---- where the script is -----------------------------------------------------------------------------


def test_the_script_is_looked_for_where_each_sdk_puts_it(tmp_path: Path) -> None:
    model_dir, code_dir, submitted = tmp_path / "model", tmp_path / "code", tmp_path / "submitted"
    for directory in (model_dir / "code", code_dir, submitted):
        directory.mkdir(parents=True)
        (directory / "inference.py").write_text("")
    (submitted / "serve.py").write_text("")

    assert locate_user_code({}, model_dir, code_dir) == UserCode(model_dir / "code", "inference")
    v2_local = {"SAGEMAKER_PROGRAM": "serve.py", "SAGEMAKER_SUBMIT_DIRECTORY": f"file://{submitted}"}
    assert locate_user_code(v2_local, model_dir, code_dir) == UserCode(submitted, "serve")
    s3 = {"SAGEMAKER_SUBMIT_DIRECTORY": "s3://bucket/sourcedir.tar.gz"}  # the SDK repacked it into model/code
    assert locate_user_code(s3, model_dir, code_dir) == UserCode(model_dir / "code", "inference")
    (model_dir / "code" / "inference.py").unlink()
    assert locate_user_code({}, model_dir, code_dir) == UserCode(code_dir, "inference")
    (code_dir / "inference.py").unlink()
    assert locate_user_code({}, model_dir, code_dir) is None


def test_a_sagemaker_program_that_is_nowhere_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(UserCodeError) as missing:
        locate_user_code({"SAGEMAKER_PROGRAM": "src/predict.py"}, tmp_path / "model", tmp_path / "code")

    assert str(missing.value) == (
        f"SAGEMAKER_PROGRAM=src/predict.py: predict.py is not in {tmp_path / 'model' / 'code'}, {tmp_path / 'code'}"
    )


def test_a_script_imports_its_neighbours(tmp_path: Path, torchscript_dir: Path) -> None:
    """AWS's examples: `from train import Net` in inference.py."""
    model_dir = model_with_script(tmp_path, torchscript_dir, "from helper import double\ndef predict_fn(d, m):\n"
                                  "    return double(m(d))\n")  # fmt: skip
    (model_dir / "code" / "helper.py").write_text("def double(x):\n    return x * 2\n")

    assert post(serve(model_dir), "1,2,3\n", "text/csv").json == [[2.0, 11.0]]


# ---- errors in the user's code ----------------------------------------------------------------------

FAILING = """
    class BadInput(Exception):
        status_code = 422

    def input_fn(body, content_type):
        if body.startswith("bad"):
            raise BadInput("column 'age' must be a number")
        if body.startswith("boom"):
            raise KeyError("secret-internal-detail")
        return body

    def predict_fn(data, model):
        return [len(data)]
"""


def test_an_exception_in_user_code_is_a_json_500_with_the_traceback_only_in_the_log(
    tmp_path: Path, torchscript_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = serve(model_with_script(tmp_path, torchscript_dir, FAILING))

    with caplog.at_level(logging.INFO, logger="optml.serve"):
        failed = client.post(
            "/invocations", data="boom", content_type="text/csv", headers={"X-Amzn-SageMaker-Inference-Id": "req-7"}
        )
    after = post(client, "fine", "text/csv")  # the worker keeps serving

    assert failed.status_code == 500
    assert failed.json == {
        "error": "model_error",
        "message": "input_fn failed (KeyError); the endpoint's log has the traceback under request id req-7",
    }
    assert b"secret-internal-detail" not in failed.data and b"Traceback" not in failed.data
    logged = caplog.text
    assert "request req-7: input_fn raised KeyError" in logged
    assert "Traceback (most recent call last)" in logged and "secret-internal-detail" in logged
    assert after.status_code == 200 and after.json == [4]


def test_an_exception_with_a_4xx_status_code_answers_that_status(tmp_path: Path, torchscript_dir: Path) -> None:
    client = serve(model_with_script(tmp_path, torchscript_dir, FAILING))

    response = post(client, "bad row", "text/csv")

    assert response.status_code == 422
    assert response.json == {"error": "unprocessable_entity", "message": "column 'age' must be a number"}


def test_the_payload_limit_holds_in_script_mode(tmp_path: Path, torchscript_dir: Path) -> None:
    client = serve(model_with_script(tmp_path, torchscript_dir, FAILING), ServerSettings(max_payload_bytes=1024))

    assert post(client, "x" * 1025, "text/csv").status_code == 413


# ---- readiness ---------------------------------------------------------------------------------------


def test_ping_is_503_until_every_worker_has_loaded_and_invocations_wait_for_model_fn(
    tmp_path: Path, torchscript_dir: Path
) -> None:
    model_dir = model_with_script(tmp_path, torchscript_dir, None)
    model = ScriptModel.prepare(model_dir, None, None)
    readiness = WorkerReadiness(2)
    client = create_app(model, ServerSettings(workers=2), readiness=readiness).test_client()

    assert post(client, "1,2,3\n", "text/csv").json == {
        "error": "loading",
        "message": "the model is still loading: model_fn has not returned in this worker",
    }
    model.load()
    readiness.mark_loaded()
    loading = client.get("/ping")
    readiness.mark_loaded()

    assert loading.status_code == 503
    assert loading.json == {"error": "loading", "message": "model_fn has returned in 1 of 2 workers"}
    assert client.get("/ping").status_code == 200
    assert post(client, "1,2,3\n", "text/csv").json == [[1.0, 5.5]]


# ---- requirements and multi-model ------------------------------------------------------------------


def test_a_requirements_failure_stops_the_server_before_it_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code = tmp_path / "model" / "code"
    code.mkdir(parents=True)
    (code / "inference.py").write_text("")
    (code / "requirements.txt").write_text("not-a-real-package-optml==1.0\n")
    monkeypatch.setenv("OPTML_ROOT", str(tmp_path))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    monkeypatch.setattr("os.execv", lambda *args: pytest.fail("gunicorn must not start"))

    assert main([]) == 3
    assert capsys.readouterr().err.startswith(
        f"serve: cannot start: {code / 'requirements.txt'} could not be installed (package not-a-real-package-optml"
    )


def test_a_multi_model_endpoint_serves_a_model_directory_with_its_own_script(
    tmp_path: Path, torchscript_dir: Path
) -> None:
    script = "def output_fn(prediction, accept):\n    return 'sum=%s' % prediction.sum().item()\n"
    model_dir = model_with_script(tmp_path, torchscript_dir, script)
    settings = ServerSettings(multi_model=True)
    registry = ModelRegistry(tmp_path, 1 << 30, lambda d: load_any_model(d, settings, ""))
    app: Flask = create_app(None, settings, registry=registry)
    client = app.test_client()

    loaded = client.post("/models", json={"model_name": "mine", "url": str(model_dir)})
    response = client.post("/models/mine/invoke", data="1,2,3\n", content_type="text/csv")

    assert loaded.status_code == 200, loaded.text
    assert loaded.json is not None and loaded.json["task"] == "script"
    assert response.data == b"sum=6.5"


def test_which_path_serves_a_model_directory(tmp_path: Path, torchscript_dir: Path) -> None:
    """optml's own model (or no model: its loader words the error) → built-in; a TorchScript model alone →
    the default handlers."""
    assert is_builtin_model(tmp_path / "missing") is True
    assert is_builtin_model(torchscript_dir) is False
    (tmp_path / "optml-model.json").write_text("{}")
    (tmp_path / "model.pt").write_bytes(b"")
    assert is_builtin_model(tmp_path) is True


def test_serve_installs_requirements_without_importing_torch() -> None:
    """`serve` runs before gunicorn and is replaced by it: torch loaded there would be seconds of cold start lost."""
    check = "import sys, optml.serve.main; print(sorted({'torch', 'flask'} & set(sys.modules)))"
    imported = subprocess.run([sys.executable, "-c", check], cwd=REPO, capture_output=True, text=True, check=True)

    assert imported.stdout == "[]\n"
