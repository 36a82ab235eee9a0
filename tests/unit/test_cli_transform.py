"""`optml transform` in AWS: CreateModel and CreateTransformJob, exactly (checked against botocore's model),
--dry-run, --wait, and the mistakes refused before any call; --local's checks made before any Docker work."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from optml.cli import transform
from optml.cli.aws import Aws
from optml.cli.jobs import Request
from tests.unit.cli_fakes import (  # noqa: F401 (fixtures)
    IMAGE,
    REGION,
    ROLE,
    credentials_fixture,
    printed_requests,
    run_cli,
    stub_fixture,
)

MODEL_DATA = "s3://my-bucket/churn/models/churn-1/output/model.tar.gz"
TRANSFORM = (
    "transform", "--name", "scores-1", "--image-uri", IMAGE, "--role", ROLE, "--model-data", MODEL_DATA,
    "--input", "s3://my-bucket/churn/to-score/", "--output-path", "s3://my-bucket/churn/scores/",
)  # fmt: skip
CREATE_MODEL = {
    "ModelName": "scores-1",
    "PrimaryContainer": {"Image": IMAGE, "ModelDataUrl": MODEL_DATA, "Environment": {}},
    "ExecutionRoleArn": ROLE,
}
CREATE_JOB = {
    "TransformJobName": "scores-1",
    "ModelName": "scores-1",
    "BatchStrategy": "MultiRecord",
    "TransformInput": {
        "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://my-bucket/churn/to-score/"}},
        "ContentType": "text/csv",
        "SplitType": "Line",
    },
    "TransformOutput": {"S3OutputPath": "s3://my-bucket/churn/scores/", "Accept": "text/csv", "AssembleWith": "Line"},
    "TransformResources": {"InstanceType": "ml.c5.xlarge", "InstanceCount": 2},
    "Environment": {"SAGEMAKER_MODEL_SERVER_WORKERS": "2"},
    "MaxPayloadInMB": 1,
}
OPTIONS = (
    "--instance-type", "ml.c5.xlarge", "--instance-count", "2", "--max-payload", "1",
    "--env", "SAGEMAKER_MODEL_SERVER_WORKERS=2",
)  # fmt: skip


def test_transform_creates_its_model_and_the_job(stub: Any, capsys: pytest.CaptureFixture[str]) -> None:
    sagemaker = stub("sagemaker")
    sagemaker.add_response("create_model", {"ModelArn": "arn:aws:sagemaker:eu-west-1:1:model/scores-1"}, CREATE_MODEL)
    sagemaker.add_response(
        "create_transform_job", {"TransformJobArn": "arn:aws:sagemaker:eu-west-1:1:transform-job/scores-1"}, CREATE_JOB
    )

    assert run_cli(*TRANSFORM, *OPTIONS) == 0

    assert capsys.readouterr().out == "transform job scores-1: its output goes to s3://my-bucket/churn/scores/\n"


def test_an_existing_model_and_a_binary_type_go_one_file_per_request(
    no_network: None, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = (
        "transform", "--name", "scores-1", "--model-name", "churn", "--input", "s3://my-bucket/arrays/",
        "--output-path", "s3://my-bucket/scores/", "--content-type", "application/x-npy", "--accept",
        "application/json", "--dry-run", "--region", REGION,
    )  # fmt: skip

    assert run_cli(*argv) == 0

    printed = printed_requests(capsys.readouterr().out)
    assert [request["operation"] for request in printed] == ["CreateTransformJob"]
    job = printed[0]["request"]
    assert (job["ModelName"], job["BatchStrategy"]) == ("churn", "SingleRecord")
    assert (job["TransformInput"]["SplitType"], job["TransformOutput"]["AssembleWith"]) == ("None", "None")
    assert job["TransformOutput"]["Accept"] == "application/json"


def test_dry_run_prints_both_requests_and_calls_nothing(no_network: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(*TRANSFORM, *OPTIONS, "--dry-run", "--region", REGION) == 0

    printed = printed_requests(capsys.readouterr().out)
    assert [(request["operation"], request["request"]) for request in printed] == [
        ("CreateModel", CREATE_MODEL),
        ("CreateTransformJob", CREATE_JOB),
    ]


def described(status: str, **fields: Any) -> dict[str, Any]:
    return {
        "TransformJobName": "scores-1",
        "TransformJobArn": "arn:aws:sagemaker:eu-west-1:123456789012:transform-job/scores-1",
        "TransformJobStatus": status,
        "ModelName": "scores-1",
        "TransformInput": CREATE_JOB["TransformInput"],
        "TransformResources": CREATE_JOB["TransformResources"],
        "CreationTime": datetime(2026, 12, 1, tzinfo=UTC),
        **fields,
    }


@pytest.mark.parametrize(("last", "exit_code"), [("Completed", 0), ("Failed", 1)])
def test_wait_follows_the_job_to_its_end(
    stub: Any, last: str, exit_code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    sagemaker = stub("sagemaker")
    sagemaker.add_response("create_transform_job", {"TransformJobArn": "arn:job"}, CREATE_JOB)
    for status in ("InProgress", "InProgress", last):
        fields = {"FailureReason": "ClientError: see the log"} if status == "Failed" else {}
        sagemaker.add_response("describe_transform_job", described(status, **fields), {"TransformJobName": "scores-1"})
    out, sleeps = io.StringIO(), list[float]()

    assert (
        transform.transform_in_aws(
            [Request("sagemaker", "CreateTransformJob", CREATE_JOB)], Aws(), True, out, sleep=sleeps.append
        )
        == exit_code
    )

    assert out.getvalue().splitlines()[1:] == ["TransformJobStatus: InProgress", f"TransformJobStatus: {last}"]
    assert sleeps == [15.0, 15.0]
    if exit_code:
        assert "optml: transform job scores-1 Failed: ClientError: see the log" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--model-data", MODEL_DATA), "the model: pass --model-data s3://.../model.tar.gz and --image-uri"),
        (("--image-uri", IMAGE, "--model-data", MODEL_DATA), "--role is required"),
        (("--model-name", "churn", "--role", ROLE), "--model-name uses a model SageMaker has: drop --model-data"),
        (("--model-name", "churn_2"), "--model-name 'churn_2' is not a name SageMaker accepts"),
        (("--model-name", "churn", "--input", "to-score/"), "--input: 'to-score/' is not an S3 location"),
        (("--model-name", "churn", "--output-path", "scores"), "--output-path: 'scores' is not an S3 location"),
        (("--model-data", MODEL_DATA, "--image-uri", IMAGE, "--role", ROLE, "--env", "1BAD=x"),
         "--env '1BAD' is not a variable name: letters, digits and _, not starting with a digit"),
    ],
    ids=["no-image", "no-role", "both-models", "model-name", "input", "output", "env"],
)  # fmt: skip
def test_mistakes_are_refused_before_any_call(
    credentials: None, argv: tuple[str, ...], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    base = {"--input": "s3://my-bucket/in/", "--output-path": "s3://my-bucket/out/"}
    base.update(zip(argv[0::2], argv[1::2], strict=True))
    assert run_cli("transform", *[item for pair in base.items() for item in pair]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--model-data", "model.tar.gz", "--input", "in"), "--model-data model.tar.gz is not a file"),
        (("--model-data", "model.tar.gz", "--input", "in", "--role", ROLE, "--instance-count", "2"),
         "--role, --instance-count only apply in AWS: drop them with --local"),
        (("--model-data", "{model}", "--input", "{model}"), "is not a folder: local mode transforms the files in"),
        (("--input", "in"), "--model-data is required: a model.tar.gz"),
    ],
    ids=["model", "aws-options", "input-file", "no-model"],
)  # fmt: skip
def test_local_mistakes_are_refused_before_any_docker_work(
    no_network: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: tuple[str, ...], message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """No credentials, no network, no Docker: a check that was missing would reach Docker and fail otherwise."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in").mkdir()
    (tmp_path / "real.tar.gz").write_bytes(b"")
    argv = [item.replace("{model}", str(tmp_path / "real.tar.gz")) for item in extra]
    monkeypatch.setattr("optml.cli.localmode.run_locally", pytest.fail)

    assert run_cli("transform", "--local", "--output-path", "out", *argv) == 2

    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content_type", "accept"),
    [("text/csv", "text/csv"), ("application/x-npy", "application/x-npy"), ("application/x-npz", "application/json"),
     ("application/x-parquet", "application/json")],
)  # fmt: skip
def test_the_output_type_is_the_inputs_only_where_the_server_answers_in_it(
    no_network: None, content_type: str, accept: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ("transform", "--model-name", "churn", "--input", "s3://my-bucket/in/", "--output-path", "s3://my-bucket/o/")
    assert run_cli(*argv, "--content-type", content_type, "--dry-run", "--region", "eu-west-1") == 0
    [printed] = printed_requests(capsys.readouterr().out)
    assert printed["request"]["TransformInput"]["ContentType"] == content_type
    assert printed["request"]["TransformOutput"]["Accept"] == accept


def test_a_payload_over_sagemakers_limit_is_refused_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        run_cli("transform", "--model-name", "churn", "--max-payload", "500")
    assert exited.value.code == 2
    assert "argument --max-payload: 500 is more than 100, SageMaker's largest batch request (100 MB)" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize(
    ("content_type", "split", "expected"),
    [("application/json", None, ("Line", "MultiRecord", "Line")),
     ("application/json", "none", ("None", "SingleRecord", "None")),
     ("application/x-npy", None, ("None", "SingleRecord", "None")),
     ("application/x-npy", "line", ("Line", "MultiRecord", "Line"))],
)  # fmt: skip
def test_split_follows_the_type_unless_asked(
    no_network: None, content_type: str, split: str | None, expected: tuple[str, str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    argv = ["transform", "--model-name", "churn", "--input", "s3://my-bucket/in/", "--output-path", "s3://my-bucket/o/"]
    argv += ["--content-type", content_type, *(("--split", split) if split else ()), "--dry-run", "--region", REGION]
    assert run_cli(*argv) == 0
    request = printed_requests(capsys.readouterr().out)[0]["request"]
    split_type = request["TransformInput"]["SplitType"]
    assert (split_type, request["BatchStrategy"], request["TransformOutput"]["AssembleWith"]) == expected


def test_the_clis_copies_of_the_servers_types_match_the_server() -> None:
    """The light install cannot import serve/ (werkzeug): cli/ keeps copies, which must not drift."""
    from optml.cli.jobs import CONTENT_TYPES
    from optml.serve.codecs import REQUEST_TYPES
    from optml.serve.negotiation import RESPONSE_TYPES as SERVED

    assert transform.RESPONSE_TYPES == SERVED
    assert set(CONTENT_TYPES.values()) <= set(REQUEST_TYPES)
