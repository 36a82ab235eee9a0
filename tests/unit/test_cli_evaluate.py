"""`optml evaluate`: CreateProcessingJob exactly (checked against botocore's model), --dry-run, --wait to the
evaluation's files or the job's failure, and the mistakes refused before any call."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

import pytest

from optml.cli import evaluate
from optml.cli.aws import Aws
from tests.unit.cli_fakes import (  # noqa: F401 (fixtures)
    IMAGE,
    REGION,
    ROLE,
    credentials_fixture,
    printed_requests,
    run_cli,
    stub_fixture,
    with_mistake,
)

MODEL_DATA = "s3://my-bucket/churn/models/churn-1/output/model.tar.gz"
EVALUATE = (
    "evaluate", "--name", "churn-eval-1", "--image-uri", IMAGE, "--role", ROLE, "--model-data", MODEL_DATA,
    "--test", "s3://my-bucket/churn/test/", "--output-path", "s3://my-bucket/churn/evaluation/",
)  # fmt: skip
OPTIONS = ("--content-type", "text/csv", "--instance-type", "ml.c5.xlarge", "--max-run", "3600", "--volume-size", "50")
CREATE_JOB: dict[str, Any] = {
    "ProcessingJobName": "churn-eval-1",
    "RoleArn": ROLE,
    "AppSpecification": {
        "ImageUri": IMAGE,
        "ContainerArguments": [
            "evaluate",
            "--model",
            "/opt/ml/processing/input/model",
            "--test",
            "/opt/ml/processing/input/test",
            "--output",
            "/opt/ml/processing/evaluation",
            "--content-type",
            "text/csv",
        ],  # fmt: skip
    },
    "ProcessingInputs": [
        {
            "InputName": "model",
            "S3Input": {
                "S3Uri": MODEL_DATA,
                "LocalPath": "/opt/ml/processing/input/model",
                "S3DataType": "S3Prefix",
                "S3InputMode": "File",
            },
        },
        {
            "InputName": "test",
            "S3Input": {
                "S3Uri": "s3://my-bucket/churn/test/",
                "LocalPath": "/opt/ml/processing/input/test",
                "S3DataType": "S3Prefix",
                "S3InputMode": "File",
            },
        },
    ],
    "ProcessingOutputConfig": {
        "Outputs": [
            {
                "OutputName": "evaluation",
                "S3Output": {
                    "S3Uri": "s3://my-bucket/churn/evaluation/",
                    "LocalPath": "/opt/ml/processing/evaluation",
                    "S3UploadMode": "EndOfJob",
                },
            }
        ]
    },
    "ProcessingResources": {
        "ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.c5.xlarge", "VolumeSizeInGB": 50}
    },
    "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
}
ARN = "arn:aws:sagemaker:eu-west-1:123456789012:processing-job/churn-eval-1"


def test_evaluate_creates_the_processing_job(stub: Any, capsys: pytest.CaptureFixture[str]) -> None:
    stub("sagemaker").add_response("create_processing_job", {"ProcessingJobArn": ARN}, CREATE_JOB)

    assert run_cli(*EVALUATE, *OPTIONS) == 0

    assert capsys.readouterr().out.splitlines() == [
        f"processing job churn-eval-1: {ARN}",
        "follow it: aws sagemaker describe-processing-job --processing-job-name churn-eval-1",
        "its files go to s3://my-bucket/churn/evaluation/",
    ]


def test_dry_run_prints_the_request_and_calls_nothing(no_network: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(*EVALUATE, *OPTIONS, "--dry-run", "--region", REGION) == 0

    printed = printed_requests(capsys.readouterr().out)
    assert [(request["operation"], request["request"]) for request in printed] == [("CreateProcessingJob", CREATE_JOB)]


def test_the_defaults(no_network: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(*EVALUATE, "--dry-run", "--region", REGION) == 0

    job = printed_requests(capsys.readouterr().out)[0]["request"]
    assert job["AppSpecification"]["ContainerArguments"] == CREATE_JOB["AppSpecification"]["ContainerArguments"][:7]
    assert job["ProcessingResources"]["ClusterConfig"] == {
        "InstanceCount": 1,
        "InstanceType": "ml.m5.xlarge",
        "VolumeSizeInGB": 30,
    }
    assert job["StoppingCondition"] == {"MaxRuntimeInSeconds": 86400}


def described(status: str, **fields: Any) -> dict[str, Any]:
    return {
        "ProcessingJobName": "churn-eval-1",
        "ProcessingJobArn": ARN,
        "ProcessingJobStatus": status,
        "ProcessingResources": CREATE_JOB["ProcessingResources"],
        "AppSpecification": CREATE_JOB["AppSpecification"],
        "CreationTime": datetime(2026, 12, 1, tzinfo=UTC),
        **fields,
    }


def follow_job(stub: Any, statuses: tuple[str, ...], **last_fields: Any) -> tuple[int, list[str], list[float]]:
    """The job created and described once per status (the last with `last_fields`): exit code, output lines
    and the waits between descriptions."""
    sagemaker = stub("sagemaker")
    sagemaker.add_response("create_processing_job", {"ProcessingJobArn": ARN}, CREATE_JOB)
    for index, status in enumerate(statuses):
        fields = last_fields if index == len(statuses) - 1 else {}
        sagemaker.add_response(
            "describe_processing_job", described(status, **fields), {"ProcessingJobName": "churn-eval-1"}
        )
    job = evaluate.EvaluationJob(
        name="churn-eval-1", image=IMAGE, role=ROLE, model_data=MODEL_DATA, test="s3://my-bucket/churn/test/",
        output_path="s3://my-bucket/churn/evaluation/", content_type="text/csv", instance_type="ml.c5.xlarge",
        volume_size=50, max_run=3600,
    )  # fmt: skip
    out, sleeps = io.StringIO(), list[float]()
    exit_code = evaluate.evaluate_in_aws(job, Aws(), True, out, sleep=sleeps.append)
    return exit_code, out.getvalue().splitlines(), sleeps


def test_wait_follows_the_job_and_names_its_files(stub: Any) -> None:
    exit_code, lines, sleeps = follow_job(stub, ("InProgress", "InProgress", "Completed"))

    assert exit_code == 0
    assert lines == [
        f"processing job churn-eval-1: {ARN}",
        "ProcessingJobStatus: InProgress",
        "ProcessingJobStatus: Completed",
        "evaluation: s3://my-bucket/churn/evaluation/evaluation.json",
        "model quality: s3://my-bucket/churn/evaluation/model_quality.json",
        "register the model with it: optml register ... --model-metrics"
        " s3://my-bucket/churn/evaluation/model_quality.json",
    ]
    assert sleeps == [15.0, 15.0]


@pytest.mark.parametrize(
    ("last", "fields", "message"),
    [
        ("Failed", {"FailureReason": "AlgorithmError: see the log", "ExitMessage": "test: no rows in /opt/ml/…"},
         "optml: processing job churn-eval-1 Failed: AlgorithmError: see the log; test: no rows in /opt/ml/…"),
        ("Stopped", {}, "optml: processing job churn-eval-1 Stopped: "),
    ],
    ids=["failed", "stopped"],
)  # fmt: skip
def test_wait_exits_1_with_the_reason_unless_the_job_completed(
    stub: Any, last: str, fields: dict[str, str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    exit_code, lines, _ = follow_job(stub, ("InProgress", last), **fields)

    assert exit_code == 1
    assert lines[-1] == f"ProcessingJobStatus: {last}"
    assert not any(line.startswith("evaluation:") for line in lines)
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--image-uri", None, "--image-uri is required"),
        ("--image-uri", "optml:latest", "--image-uri 'optml:latest' is not in ECR, where SageMaker pulls"),
        ("--role", None, "--role is required"),
        ("--role", "SageMakerExecution", "--role 'SageMakerExecution' is not an IAM role ARN"),
        ("--model-data", None, "--model-data is required: the model.tar.gz in S3"),
        ("--model-data", "model.tar.gz", "--model-data: 'model.tar.gz' is not an S3 location"),
        ("--test", None, "--test is required"),
        ("--test", "s3://My_Bucket/test/", "--test: 'My_Bucket' in 's3://My_Bucket/test/' is not an S3 bucket name"),
        ("--output-path", None, "--output-path is required"),
        ("--output-path", "evaluation/", "--output-path: 'evaluation/' is not an S3 location"),
        ("--instance-type", "m5.xlarge", "--instance-type 'm5.xlarge' is not a SageMaker instance type"),
        ("--max-run", "777601", "--max-run 777601: a Processing job runs at most 777600 seconds"),
        ("--name", "churn_eval", "--name 'churn_eval' is not a name SageMaker accepts"),
    ],
)  # fmt: skip
def test_mistakes_are_refused_before_any_call(
    credentials: None, option: str, value: str | None, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`credentials` has no network: a check that was missing would reach AWS and fail the test."""
    assert run_cli(*with_mistake(EVALUATE, option, value)) == 2
    assert message in capsys.readouterr().err
