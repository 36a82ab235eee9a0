"""`optml register`: CreateModelPackageGroup and CreateModelPackage exactly (checked against botocore's model),
a group that exists already, --dry-run, --approval, and the mistakes refused before any call."""

from __future__ import annotations

from typing import Any

import pytest

from optml.cli import jobs, register, transform
from tests.unit.cli_fakes import (  # noqa: F401 (fixtures)
    IMAGE,
    REGION,
    credentials_fixture,
    printed_requests,
    run_cli,
    stub_fixture,
    with_mistake,
)

MODEL_DATA = "s3://my-bucket/churn/models/churn-1/output/model.tar.gz"
METRICS = "s3://my-bucket/churn/evaluation/model_quality.json"
REGISTER = (
    "register", "--group", "churn", "--image-uri", IMAGE, "--model-data", MODEL_DATA, "--model-metrics", METRICS,
)  # fmt: skip
CREATE_GROUP = {"ModelPackageGroupName": "churn"}
CREATE_PACKAGE: dict[str, Any] = {
    "ModelPackageGroupName": "churn",
    "InferenceSpecification": {
        "Containers": [{"Image": IMAGE, "ModelDataUrl": MODEL_DATA}],
        "SupportedContentTypes": [
            "text/csv", "application/json", "application/jsonlines", "application/x-npy", "application/x-npz",
        ],
        "SupportedResponseMIMETypes": ["text/csv", "application/json", "application/jsonlines", "application/x-npy"],
        "SupportedRealtimeInferenceInstanceTypes": ["ml.m5.large", "ml.m5.xlarge", "ml.c5.xlarge"],
        "SupportedTransformInstanceTypes": ["ml.m5.large", "ml.m5.xlarge", "ml.c5.xlarge"],
    },
    "ModelApprovalStatus": "PendingManualApproval",
    "ModelMetrics": {"ModelQuality": {"Statistics": {"ContentType": "application/json", "S3Uri": METRICS}}},
}  # fmt: skip
GROUP_ARN = "arn:aws:sagemaker:eu-west-1:123456789012:model-package-group/churn"
ARN = "arn:aws:sagemaker:eu-west-1:123456789012:model-package/churn/3"
APPROVE = f"approve it: aws sagemaker update-model-package --model-package-arn {ARN} --model-approval-status Approved"


def test_register_creates_the_group_and_the_model_package(stub: Any, capsys: pytest.CaptureFixture[str]) -> None:
    sagemaker = stub("sagemaker")
    sagemaker.add_response("create_model_package_group", {"ModelPackageGroupArn": GROUP_ARN}, CREATE_GROUP)
    sagemaker.add_response("create_model_package", {"ModelPackageArn": ARN}, CREATE_PACKAGE)

    assert run_cli(*REGISTER) == 0

    assert capsys.readouterr().out.splitlines() == [
        "model package group churn: created",
        f"model package {ARN}: PendingManualApproval",
        APPROVE,
    ]


def test_a_group_that_exists_already_gets_a_new_version(stub: Any, capsys: pytest.CaptureFixture[str]) -> None:
    sagemaker = stub("sagemaker")
    sagemaker.add_client_error(
        "create_model_package_group",
        service_error_code="ValidationException",
        service_message=f"Model Package Group already exists: {GROUP_ARN}",
        http_status_code=400,
        expected_params=CREATE_GROUP,
    )
    sagemaker.add_response("create_model_package", {"ModelPackageArn": ARN}, CREATE_PACKAGE)

    assert run_cli(*REGISTER) == 0

    assert capsys.readouterr().out.splitlines()[:2] == [
        "model package group churn: exists already",
        f"model package {ARN}: PendingManualApproval",
    ]


def test_approved_with_every_option(stub: Any, capsys: pytest.CaptureFixture[str]) -> None:
    options = (
        "--approval", "Approved", "--description", "20 epochs, test AUC 0.97", "--group-description", "churn models",
        "--content-type", "text/csv", "--content-type", "text/csv", "--response-type", "application/json",
        "--instance-type", "ml.c5.2xlarge", "--transform-instance-type", "ml.m5.4xlarge",
        "--metadata", "git=0e51c3a", "--metadata", "data=s3://my-bucket/churn/train",
    )  # fmt: skip
    specification = {
        **CREATE_PACKAGE["InferenceSpecification"],
        "SupportedContentTypes": ["text/csv"],
        "SupportedResponseMIMETypes": ["application/json"],
        "SupportedRealtimeInferenceInstanceTypes": ["ml.c5.2xlarge"],
        "SupportedTransformInstanceTypes": ["ml.m5.4xlarge"],
    }
    package = {
        **CREATE_PACKAGE,
        "InferenceSpecification": specification,
        "ModelApprovalStatus": "Approved",
        "ModelPackageDescription": "20 epochs, test AUC 0.97",
        "CustomerMetadataProperties": {"git": "0e51c3a", "data": "s3://my-bucket/churn/train"},
    }
    sagemaker = stub("sagemaker")
    group = {**CREATE_GROUP, "ModelPackageGroupDescription": "churn models"}
    sagemaker.add_response("create_model_package_group", {"ModelPackageGroupArn": GROUP_ARN}, group)
    sagemaker.add_response("create_model_package", {"ModelPackageArn": ARN}, package)

    assert run_cli(*REGISTER, *options) == 0

    assert capsys.readouterr().out.splitlines()[1:] == [
        f"model package {ARN}: Approved",
        f"deploy it: optml deploy --image-uri {IMAGE} --model-data {MODEL_DATA} --role ARN",
    ]


def test_dry_run_prints_both_requests_and_calls_nothing(no_network: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(*REGISTER, "--dry-run", "--region", REGION) == 0

    printed = printed_requests(capsys.readouterr().out)
    assert [(request["operation"], request["request"]) for request in printed] == [
        ("CreateModelPackageGroup", CREATE_GROUP),
        ("CreateModelPackage", CREATE_PACKAGE),
    ]


def test_without_model_metrics_the_package_has_none(no_network: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(*REGISTER[:-2], "--dry-run", "--region", REGION) == 0

    package = printed_requests(capsys.readouterr().out)[1]["request"]
    assert package == {key: value for key, value in CREATE_PACKAGE.items() if key != "ModelMetrics"}


def test_the_default_types_are_those_the_endpoint_serves() -> None:
    assert register.REQUEST_TYPES == tuple(dict.fromkeys(jobs.CONTENT_TYPES.values()))
    assert register.RESPONSE_TYPES == transform.RESPONSE_TYPES  # itself checked against serve/'s


def test_an_aws_error_is_one_line(stub: Any, capsys: pytest.CaptureFixture[str]) -> None:
    sagemaker = stub("sagemaker")
    sagemaker.add_response("create_model_package_group", {"ModelPackageGroupArn": GROUP_ARN}, CREATE_GROUP)
    sagemaker.add_client_error(
        "create_model_package",
        service_error_code="ValidationException",
        service_message="Instance type ml.m5.large is not supported",
        http_status_code=400,
        expected_params=CREATE_PACKAGE,
    )

    assert run_cli(*REGISTER) == 2

    captured = capsys.readouterr()
    assert captured.err == (
        "optml: error: sagemaker CreateModelPackage: ValidationException: Instance type ml.m5.large is not supported\n"
    )
    assert captured.out == ""


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--model-data", None, "--model-data is required: the model.tar.gz in S3"),
        ("--model-data", "model.tar.gz", "--model-data: 'model.tar.gz' is not an S3 location"),
        ("--model-data", "s3://my-bucket/churn/model/", "--model-data 's3://my-bucket/churn/model/' is not a model"
         ".tar.gz: the Model Registry takes the archive"),
        ("--image-uri", None, "--image-uri is required"),
        ("--image-uri", "optml:latest", "--image-uri 'optml:latest' is not in ECR, where SageMaker pulls"),
        ("--group", None, "--group is required: the model package group's name"),
        ("--group", "churn_models", "--group 'churn_models' is not a name SageMaker accepts: 1 to 63 letters"),
        ("--group", "c" * 64, f"--group {'c' * 64!r} is not a name SageMaker accepts"),
        ("--model-metrics", "evaluation/model_quality.json",
         "--model-metrics: 'evaluation/model_quality.json' is not an S3 location"),
        ("--model-metrics", "s3://my-bucket/churn/evaluation/",
         "--model-metrics 's3://my-bucket/churn/evaluation/' is not a JSON file: use the model_quality.json that"
         " `optml evaluate` writes"),
        ("--content-type", "csv", "--content-type 'csv' is not a MIME type: use TYPE/SUBTYPE, e.g. text/csv"),
        ("--response-type", "application json", "--response-type 'application json' is not a MIME type"),
        ("--instance-type", "m5.large", "--instance-type 'm5.large' is not a SageMaker instance type"),
        ("--transform-instance-type", "ml.m5", "--transform-instance-type 'ml.m5' is not a SageMaker instance type"),
        ("--description", "x" * 1025, "--description: at most 1024 printable characters on one line"),
        ("--group-description", "two\nlines", "--group-description: at most 1024 printable characters on one line"),
        ("--metadata", "git", "--metadata 'git' is not NAME=VALUE"),
        ("--metadata", "git=", "--metadata git: the value must be 1 to 256 letters, digits, spaces or _.:/=+-@"),
        ("--metadata", "git=a;b", "--metadata git: the value must be 1 to 256"),
        ("--metadata", f"{'k' * 129}=v", "the key must be 1 to 128 letters"),
    ],
)  # fmt: skip
def test_mistakes_are_refused_before_any_call(
    credentials: None, option: str, value: str | None, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`credentials` has no network: a check that was missing would reach AWS and fail the test."""
    assert run_cli(*with_mistake(REGISTER, option, value)) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.startswith("optml: error: ") and err.count("\n") == 1


def test_too_much_metadata_is_refused_before_any_call(credentials: None, capsys: pytest.CaptureFixture[str]) -> None:
    pairs = [argument for index in range(51) for argument in ("--metadata", f"key{index}=value")]

    assert run_cli(*REGISTER, *pairs) == 2
    assert "--metadata: 51 entries, the Model Registry takes at most 50" in capsys.readouterr().err


def test_an_unknown_approval_status_is_refused_by_argparse(
    credentials: None, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_cli(*REGISTER, "--approval", "approved")

    assert exit_info.value.code == 2
    assert "argument --approval: invalid choice: 'approved'" in capsys.readouterr().err
