"""`optml deploy`, `optml invoke` and `optml delete-endpoint` in AWS: the exact requests (checked against
botocore's model), --dry-run, --wait, and the mistakes refused before any call; `invoke --local` over HTTP."""

from __future__ import annotations

import hashlib
import io
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from optml.cli import deploy
from optml.cli.aws import Aws
from optml.cli.jobs import Request
from tests.unit.cli_fakes import (  # noqa: F401 (fixtures)
    IMAGE,
    REGION,
    ROLE,
    credentials_fixture,
    printed_requests,
    run_cli,
    streaming,
    stub_fixture,
)

MODEL_DATA = "s3://my-bucket/churn/models/churn-1/output/model.tar.gz"
DEPLOY = ("deploy", "--name", "churn", "--image-uri", IMAGE, "--role", ROLE, "--model-data", MODEL_DATA)
CREATE: list[tuple[str, dict[str, Any]]] = [
    ("create_model", {
        "ModelName": "churn",
        "PrimaryContainer": {"Image": IMAGE, "ModelDataUrl": MODEL_DATA, "Environment": {"SAGEMAKER_MODEL_SERVER_WORKERS": "2"}},  # noqa: E501
        "ExecutionRoleArn": ROLE,
    }),
    ("create_endpoint_config", {
        "EndpointConfigName": "churn",
        "ProductionVariants": [{
            "VariantName": "blue", "ModelName": "churn", "InitialInstanceCount": 2, "InstanceType": "ml.c5.large",
            "InitialVariantWeight": 1.0,
        }],
    }),
    ("create_endpoint", {"EndpointName": "churn", "EndpointConfigName": "churn"}),
]  # fmt: skip
OPTIONS = (
    "--instance-type",
    "ml.c5.large",
    "--instance-count",
    "2",
    "--variant",
    "blue",
    "--env",
    "SAGEMAKER_MODEL_SERVER_WORKERS=2",
)
ANSWERS = {
    "create_model": {"ModelArn": "arn:aws:sagemaker:eu-west-1:123456789012:model/churn"},
    "create_endpoint_config": {"EndpointConfigArn": "arn:aws:sagemaker:eu-west-1:123456789012:endpoint-config/churn"},
    "create_endpoint": {"EndpointArn": "arn:aws:sagemaker:eu-west-1:123456789012:endpoint/churn"},
}


def endpoint(status: str) -> dict[str, Any]:
    at = datetime(2026, 12, 1, tzinfo=UTC)
    return {
        "EndpointName": "churn",
        "EndpointArn": "arn:aws:sagemaker:eu-west-1:123456789012:endpoint/churn",
        "EndpointConfigName": "churn",
        "EndpointStatus": status,
        "CreationTime": at,
        "LastModifiedTime": at,
    }


def test_deploy_creates_model_config_and_endpoint(stub: Any, capsys: pytest.CaptureFixture[str]) -> None:
    sagemaker = stub("sagemaker")
    for operation, request in CREATE:
        sagemaker.add_response(operation, ANSWERS[operation], request)

    assert run_cli(*DEPLOY, *OPTIONS) == 0

    assert (
        capsys.readouterr().out
        == "endpoint churn is being created (minutes); then: optml invoke --endpoint churn FILE\n"
    )


@pytest.mark.parametrize(("last", "exit_code"), [("InService", 0), ("Failed", 1)])
def test_wait_follows_the_endpoint_until_it_is_in_service(
    stub: Any, last: str, exit_code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    sagemaker = stub("sagemaker")
    sagemaker.add_response("create_endpoint", ANSWERS["create_endpoint"])
    for status in ("Creating", "Creating", last):
        answer = endpoint(status) if status != "Failed" else {**endpoint(status), "FailureReason": "no /ping answer"}
        sagemaker.add_response("describe_endpoint", answer, {"EndpointName": "churn"})
    out, sleeps = io.StringIO(), list[float]()
    create = Request("sagemaker", "CreateEndpoint", CREATE[2][1])

    assert deploy.deploy_in_aws([create], Aws(), True, out, sleep=sleeps.append) == exit_code

    assert out.getvalue().splitlines()[1:] == ["EndpointStatus: Creating", f"EndpointStatus: {last}"]
    assert sleeps == [15.0, 15.0]
    if exit_code:
        assert "optml: endpoint churn Failed: no /ping answer" in capsys.readouterr().err


def test_deploy_dry_run_prints_the_three_requests(no_network: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(*DEPLOY, *OPTIONS, "--dry-run", "--region", REGION) == 0

    printed = printed_requests(capsys.readouterr().out)
    assert [(request["operation"], request["request"]) for request in printed] == [
        ("CreateModel", CREATE[0][1]),
        ("CreateEndpointConfig", CREATE[1][1]),
        ("CreateEndpoint", CREATE[2][1]),
    ]


@pytest.mark.parametrize(
    ("instance_type", "noted"), [("ml.g5.xlarge", True), ("ml.p4d.24xlarge", True), ("ml.c5.large", False)]
)
def test_a_gpu_instance_type_is_noted_as_unused_by_the_cpu_server(
    no_network: None, capsys: pytest.CaptureFixture[str], instance_type: str, noted: bool
) -> None:
    assert run_cli(*DEPLOY, "--instance-type", instance_type, "--dry-run", "--region", REGION) == 0

    captured = capsys.readouterr()
    assert printed_requests(captured.out)[1]["request"]["ProductionVariants"][0]["InstanceType"] == instance_type
    note = f"optml's server predicts on the CPU, also in the GPU image: {instance_type} pays for accelerators"
    assert (note in captured.err) == noted


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("deploy", "--image-uri", IMAGE, "--role", ROLE, "--model-data", "model.tar.gz"),
         "--model-data: 'model.tar.gz' is not an S3 location"),
        (("deploy", "--image-uri", IMAGE, "--model-data", MODEL_DATA), "--role is required: the ARN of the IAM role"),
        (("deploy", "--image-uri", IMAGE, "--role", ROLE), "--model-data is required: the model.tar.gz in S3"),
        ((*DEPLOY, "--predict-csv", "rows.csv"), "--predict-csv works with --local; for an endpoint in AWS use"),
        ((*DEPLOY, "--predict-from", "data"), "--predict-from works with --local; for an endpoint in AWS use"),
        (("deploy", "--local", "--model-data", __file__, "--predict-csv", "a.csv", "--predict-from", "data"),
         "--predict-csv or --predict-from: one of them, not both"),
        (("deploy", "--local", "--model-data", "no/model.tar.gz"), "--model-data no/model.tar.gz is not a file"),
        (("deploy", "--local", "--model-data", MODEL_DATA, "--role", ROLE, "--wait"),
         "--role, --wait only apply in AWS: drop them with --local"),
        (("delete-endpoint", "churn_v2"), "NAME 'churn_v2' is not a name SageMaker accepts"),
        (("deploy", "--local", "--model-data", MODEL_DATA, "--region", "eu-west-1"),
         "--region only apply in AWS: drop them with --local"),
        ((*DEPLOY, "--variant", "blue_green"), "--variant 'blue_green' is not a name SageMaker accepts"),
        ((*DEPLOY, "--env", "LOG LEVEL=debug"), "--env 'LOG LEVEL' is not a variable name"),
        ((*DEPLOY, "--env", f"BIG={'x' * 1025}"), "--env BIG: the value has 1025 characters, at most 1024 fit"),
    ],
    ids=[
        "model-data", "role", "no-model", "predict", "predict-from", "both", "local-model", "local-role",
        "delete-name", "local-region", "variant", "env-name", "env-value",
    ],
)  # fmt: skip
def test_mistakes_are_refused_before_any_call(
    credentials: None, argv: tuple[str, ...], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(*argv) == 2
    assert message in capsys.readouterr().err


def test_predict_from_labelled_data_sends_its_first_rows_without_the_label(tmp_path: Path) -> None:
    """What `make demo` predicts: the validation channel's first rows, as the endpoint takes them."""
    channel = tmp_path / "validation"
    channel.mkdir()
    (channel / "b.csv").write_text("".join(f"{row % 2},{row}.5,{row}\n" for row in range(10)))
    (channel / "a.csv").write_text("1,0.25,7\n")

    assert deploy.rows_to_predict(None, str(channel)) == ["0.25,7", "0.5,0", "1.5,1"]  # DEFAULT_PREDICT_ROWS
    assert deploy.rows_to_predict(None, str(channel / "b.csv"))[:2] == ["0.5,0", "1.5,1"]
    assert deploy.rows_to_predict(None, None) == []


def test_delete_endpoint_deletes_what_deploy_made(stub: Any, capsys: pytest.CaptureFixture[str]) -> None:
    sagemaker = stub("sagemaker")
    sagemaker.add_response("delete_endpoint", {}, {"EndpointName": "churn"})
    sagemaker.add_response("delete_endpoint_config", {}, {"EndpointConfigName": "churn"})
    sagemaker.add_response("delete_model", {}, {"ModelName": "churn"})

    assert run_cli("delete-endpoint", "churn") == 0

    assert capsys.readouterr().out == "deleted endpoint churn, its endpoint config and its model\n"


def test_delete_endpoint_only(no_network: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("delete-endpoint", "churn", "--endpoint-only", "--dry-run", "--region", REGION) == 0
    assert [request["operation"] for request in printed_requests(capsys.readouterr().out)] == ["DeleteEndpoint"]


def test_invoke_sends_the_file_with_its_content_type_and_prints_the_answer(
    stub: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = tmp_path / "rows.csv"
    rows.write_text("1.5,2\n3,4\n")
    stub("sagemaker-runtime").add_response(
        "invoke_endpoint",
        {"Body": streaming(b"1\n0"), "ContentType": "text/csv"},
        {"EndpointName": "churn", "Body": "1.5,2\n3,4\n", "ContentType": "text/csv", "Accept": "text/csv",
         "CustomAttributes": "output=probabilities"},
    )  # fmt: skip

    assert run_cli("invoke", "--endpoint", "churn", str(rows), "--custom-attributes", "output=probabilities") == 0

    assert capsys.readouterr().out == "1\n0\n"


def test_invoke_a_binary_body_asks_for_json(
    no_network: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    array = tmp_path / "rows.npy"
    array.write_bytes(b"\x93NUMPY\x01\x00")

    assert run_cli("invoke", "--endpoint", "churn", str(array), "--dry-run", "--region", REGION) == 0

    request = printed_requests(capsys.readouterr().out)[0]["request"]
    assert (request["ContentType"], request["Accept"]) == ("application/x-npy", "application/json")
    digest = hashlib.sha256(b"\x93NUMPY\x01\x00").hexdigest()
    assert request["Body"] == f"<8 bytes, sha256 {digest}>"  # a binary body by size and digest, not its bytes


@pytest.mark.parametrize(
    ("name", "content", "extra", "message"),
    [
        ("rows.txt", b"1,2", (), "cannot tell the content type of rows.txt: pass --content-type"),
        ("big.csv", b"1" * (6 * 1024 * 1024 + 1), (), "big.csv is 6291457 bytes; an endpoint takes at most 6291456"),
        ("rows.csv", b"1,2", ("--endpoint", ""), "--endpoint NAME is required"),
        (
            "rows.csv",
            b"1,2",
            ("--custom-attributes", "x" * 1025),
            "--custom-attributes is 1025 characters: SageMaker forwards at most 1024 visible ASCII characters",
        ),
    ],
    ids=["extension", "size", "endpoint", "custom-attributes"],
)
def test_invoke_mistakes_are_refused_before_any_call(
    credentials: None, tmp_path: Path, name: str, content: bytes, extra: tuple[str, ...], message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    (tmp_path / name).write_bytes(content)
    assert run_cli("invoke", "--endpoint", "churn", str(tmp_path / name), *extra) == 2
    assert message in capsys.readouterr().err


class Endpoint(BaseHTTPRequestHandler):
    """A stand-in for a local endpoint's /invocations: echoes what it received, or a 400 for 'bad'."""

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        status = 400 if body == b"bad\n" else 200
        answer = b'{"error": "bad", "message": "CSV line 1: not a number"}' if status == 400 else (
            f"{self.path} {self.headers['Content-Type']} {self.headers['Accept']} "
            f"{self.headers['X-Amzn-SageMaker-Custom-Attributes']} ".encode() + body
        )  # fmt: skip
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def local_endpoint() -> Iterator[int]:
    server = HTTPServer(("127.0.0.1", 0), Endpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_invoke_local_posts_to_the_local_endpoint(
    no_network: None, local_endpoint: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "rows.csv").write_text("1,2\n")
    port = str(local_endpoint)

    assert (
        run_cli(
            "invoke", "--local", "--serving-port", port, str(tmp_path / "rows.csv"), "--custom-attributes", "top_k=2"
        )
        == 0
    )

    assert capsys.readouterr().out == "/invocations text/csv text/csv top_k=2 1,2\n"


def test_invoke_local_reports_the_endpoints_error(
    local_endpoint: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "rows.csv").write_text("bad\n")

    assert run_cli("invoke", "--local", "--serving-port", str(local_endpoint), str(tmp_path / "rows.csv")) == 2

    assert (
        'the endpoint answered HTTP 400: {"error": "bad", "message": "CSV line 1: not a number"}'
        in capsys.readouterr().err
    )


def test_invoke_local_without_an_endpoint_says_how_to_start_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "rows.csv").write_text("1,2\n")
    port = closed_port()

    assert run_cli("invoke", "--local", "--serving-port", str(port), str(tmp_path / "rows.csv")) == 2

    err = capsys.readouterr().err
    assert f"nothing answers on http://localhost:{port}/invocations" in err
    assert "start an endpoint with `optml deploy --local --model-data model.tar.gz`, which serves until Ctrl-C" in err


def closed_port() -> int:
    """A port nothing listens on: bound, then closed."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
