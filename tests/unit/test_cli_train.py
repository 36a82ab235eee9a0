"""`optml train` in AWS: the CreateTrainingJob request, exactly, checked against botocore's model of the API;
--dry-run; every mistake refused before any call with what to change; --wait to the end and the spot saving."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from optml.cli import train
from optml.cli.aws import Aws
from optml.train import metric_definitions as image_command
from tests.unit.cli_fakes import IMAGE, REGION, ROLE, credentials_fixture, printed_requests, run_cli, stub_fixture  # noqa: F401 (fixtures)

SPOT_JOB = (
    "train", "--name", "churn-1", "--image-uri", IMAGE, "--role", ROLE,
    "--channel", "train=s3://my-bucket/churn/train", "--channel", "validation=s3://my-bucket/churn/validation",
    "--content-type", "train=text/csv", "--distribution", "validation=sharded", "--input-mode", "train=Pipe",
    "--hp", "epochs=30", "--hp", "learning_rate=0.01",
    "--output-path", "s3://my-bucket/churn/models", "--instance-type", "ml.c5.2xlarge",
    "--spot", "--max-run", "3600", "--max-wait", "7200", "--checkpoint-s3-uri", "s3://my-bucket/churn/checkpoints",
    "--metric", "my_loss=my_loss=([0-9.]+)",
)  # fmt: skip
BASE = (
    "train",
    "--image-uri",
    IMAGE,
    "--role",
    ROLE,
    "--channel",
    "train=s3://my-bucket/t",
    "--output-path",
    "s3://my-bucket/o",
)


def image_metric_definitions(capsys: pytest.CaptureFixture[str]) -> list[dict[str, str]]:
    """What `docker run IMAGE metric-definitions` prints: the image's own command, run here."""
    image_command.main()
    definitions: list[dict[str, str]] = json.loads(capsys.readouterr().out)
    return definitions


def expected_spot_request(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    metrics = image_metric_definitions(capsys)
    assert len(metrics) == 39
    # validation: and cv: first (what a tuner optimizes, never left out), then train:
    assert metrics[0] == {
        "Name": "validation:loss",
        "Regex": r" validation:loss=([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)[ ;]",
    }
    assert [definition["Name"].split(":")[0] for definition in metrics] == ["validation"] * 13 + ["cv"] * 13 + [
        "train"
    ] * 13
    return {
        "TrainingJobName": "churn-1",
        "AlgorithmSpecification": {
            "TrainingImage": IMAGE,
            "TrainingInputMode": "File",
            "MetricDefinitions": [*metrics, {"Name": "my_loss", "Regex": "my_loss=([0-9.]+)"}],
        },
        "RoleArn": ROLE,
        "InputDataConfig": [
            {
                "ChannelName": "train",
                "ContentType": "text/csv",
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": "s3://my-bucket/churn/train",
                        "S3DataDistributionType": "FullyReplicated",
                    }
                },
                "InputMode": "Pipe",
            },
            {
                "ChannelName": "validation",
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": "s3://my-bucket/churn/validation",
                        "S3DataDistributionType": "ShardedByS3Key",
                    }
                },
            },
        ],
        "OutputDataConfig": {"S3OutputPath": "s3://my-bucket/churn/models"},
        "ResourceConfig": {"InstanceType": "ml.c5.2xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200},
        "HyperParameters": {"epochs": "30", "learning_rate": "0.01"},
        "EnableManagedSpotTraining": True,
        "CheckpointConfig": {"S3Uri": "s3://my-bucket/churn/checkpoints", "LocalPath": "/opt/ml/checkpoints"},
    }


def test_a_spot_job_is_one_exact_create_training_job(stub: Any, capsys: pytest.CaptureFixture[str]) -> None:
    expected = expected_spot_request(capsys)
    arn = "arn:aws:sagemaker:eu-west-1:123456789012:training-job/churn-1"
    stub("sagemaker").add_response("create_training_job", {"TrainingJobArn": arn}, expected)

    assert run_cli(*SPOT_JOB) == 0

    assert capsys.readouterr().out.splitlines() == [
        f"training job churn-1: {arn}",
        "follow it: aws sagemaker describe-training-job --training-job-name churn-1",
    ]


def test_dry_run_prints_the_request_and_calls_nothing(no_network: None, capsys: pytest.CaptureFixture[str]) -> None:
    """No credentials and no network: the request is built from the command line alone."""
    expected = expected_spot_request(capsys)

    assert run_cli(*SPOT_JOB, "--dry-run", "--region", REGION) == 0

    assert printed_requests(capsys.readouterr().out) == [
        {"service": "sagemaker", "operation": "CreateTrainingJob", "region": REGION, "request": expected}
    ]


def test_the_defaults_make_an_on_demand_job_of_a_day_at_most(
    no_network: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(*BASE, "--dry-run", "--region", REGION, "--name", "j") == 0

    request = printed_requests(capsys.readouterr().out)[0]["request"]
    assert request["ResourceConfig"] == {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30}
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 86400}
    assert not {"EnableManagedSpotTraining", "CheckpointConfig", "HyperParameters"} & set(request)


def test_a_generated_name_has_the_time_in_it(no_network: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(*BASE, "--dry-run", "--region", REGION) == 0
    name = printed_requests(capsys.readouterr().out)[0]["request"]["TrainingJobName"]
    assert name.startswith("optml-20") and len(name) == len("optml-20261201-152143-0e51")


def test_hp_file_values_are_read_as_the_image_reads_them_and_hp_overrides(
    no_network: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hp_file = tmp_path / "hp.json"
    hp_file.write_text(json.dumps({"epochs": 10, "batch_norm": True, "optimizer": '"adamw"', "sagemaker_x": "1"}))

    assert run_cli(*BASE, "--hp-file", str(hp_file), "--hp", "epochs=12", "--dry-run", "--region", REGION) == 0

    request = printed_requests(capsys.readouterr().out)[0]["request"]
    assert request["HyperParameters"] == {"epochs": "12", "batch_norm": "true", "optimizer": "adamw"}


def test_a_script_of_your_own_takes_its_own_hyperparameters(
    no_network: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """Script mode (sagemaker_program): the names are the script's, not the image's table, so none is refused."""
    argv = (*BASE, "--hp", "sagemaker_program=train.py", "--hp", "my_width=3", "--dry-run", "--region", REGION)

    assert run_cli(*argv) == 0

    request = printed_requests(capsys.readouterr().out)[0]["request"]
    assert request["HyperParameters"] == {"sagemaker_program": "train.py", "my_width": "3"}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--spot", "--max-run", "3600", "--max-wait", "1800", "--checkpoint-s3-uri", "s3://my-bucket/c"),
         "--max-wait 1800 is less than --max-run 3600: SageMaker requires max-wait ≥ max-run"),
        (("--spot", "--max-wait", "90000"),
         "--spot needs --checkpoint-s3-uri s3://bucket/prefix: a job that loses its spot host resumes from"),
        (("--spot", "--checkpoint-s3-uri", "s3://my-bucket/c"),
         "--spot needs --max-wait SECONDS, at least --max-run (86400)"),
        (("--max-wait", "7200",), "--max-wait limits a spot job's total time: add --spot, or drop --max-wait"),
        (("--hp", "epoch=3"), "Invalid hyperparameters: unknown hyperparameter 'epoch' (did you mean epochs?)"),
        (("--hp", "epochs=0", "--hp", "dropout=2"),
         "Invalid hyperparameters: epochs='0' is invalid: expected a positive integer; dropout='2' is invalid"),
        (("--hp", "epochs"), "--hp 'epochs' is not NAME=VALUE"),
        (("--hp-file", "missing.json"), "--hp-file missing.json does not exist"),
        (("--channel", "validation=no/such/folder"), "--channel validation=no/such/folder: "),
        (("--channel", "validation=s3://my-bucket/v", "--distribution", "validation=sharded", "--instance-count", "2",
          "--hp", "data_loading=memory"),
         "channel 'validation' is sharded across 2 instances, but data_loading=memory: each instance gets different"
         " files, which only the streaming path combines; use data_loading=auto (or stream), or --distribution"
         " validation=replicated"),
        (("--distribution", "train=split"), "--distribution train=split: use train=sharded or train=replicated"),
        (("--input-mode", "train=pipe"), "--input-mode train=pipe: use train=File or train=FastFile or train=Pipe"),
        (("--input-mode", "test=Pipe"), "--input-mode test=...: no --channel test=URI (channels: train)"),
        (("--content-type", "test=text/csv"), "--content-type test=...: no --channel test=URI (channels: train)"),
        (("--channel", "train=s3://my-bucket/u"), "--channel names 'train' twice"),
        (tuple(arg for i in range(15) for arg in ("--metric", f"m{i}=m{i}=([0-9]+)")),
         "54 metric definitions: SageMaker accepts 40, and the image's validation: and cv: metrics (26) never make"
         " way, so --metric can add 14"),
        (("--metric", "my_loss=my_loss=[0-9.]+"), "--metric my_loss=my_loss=[0-9.]+: SageMaker records the regex's first group"),  # noqa: E501
        (("--metric", "validation:f1=f1=([0-9.]+)"), "the image defines a metric of that name already"),
        (("--name", "churn_1"), "--name 'churn_1' is not a name SageMaker accepts"),
    ],
    ids=lambda value: value[0] if isinstance(value, tuple) else None,
)  # fmt: skip
def test_mistakes_are_refused_before_any_call(
    credentials: None, extra: tuple[str, ...], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """With credentials but no network: a check that was missing would reach the network guard instead."""
    assert run_cli(*BASE, *extra) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--channel", "train=data/t"), "--channel train=data/t: a training job in AWS reads S3; upload the data"),
        (("--role", "SageMakerExecution"), "--role 'SageMakerExecution' is not an IAM role ARN"),
        (("--output-path", "/tmp/o"), "--output-path: '/tmp/o' is not an S3 location: use s3://bucket/prefix"),
        (("--output-path", "s3://My_Bucket/o"), "--output-path: 'My_Bucket' in 's3://My_Bucket/o' is not an S3 bucket"),
        (("--image-uri", ""), "--image-uri is required: the image's URI in ECR"),
        (("--image-uri", "optml:latest"), "--image-uri 'optml:latest' is not in ECR, where SageMaker pulls"),
        (("--instance-type", "m5.xlarge"), "--instance-type 'm5.xlarge'"),
    ],
    ids=["local-channel", "role", "output-path", "bucket", "image", "not-ecr", "instance-type"],
)  # fmt: skip
def test_aws_needs_s3_a_role_and_an_image(
    credentials: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argv: tuple[str, ...], message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "t").mkdir(parents=True)
    base = dict(zip(BASE[1::2], BASE[2::2], strict=True))
    base.update(zip(argv[0::2], argv[1::2], strict=True))
    assert run_cli("train", *[item for pair in base.items() for item in pair]) == 2
    err = capsys.readouterr().err
    assert message in err
    if "upload" in message:
        assert f"(aws s3 sync {tmp_path / 'data' / 't'} s3://BUCKET/PREFIX)" in err


def test_no_credentials_fail_before_any_call(no_network: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(*BASE, "--region", REGION) == 2
    assert "optml: error: no AWS credentials: run `aws configure`" in capsys.readouterr().err


def test_no_region_fails_before_any_call(no_network: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(*BASE, "--dry-run") == 2
    assert "optml: error: no AWS region: pass --region" in capsys.readouterr().err


def describe(status: str, transitions: list[str], **fields: Any) -> dict[str, Any]:
    """A DescribeTrainingJob answer (the fields botocore's model requires, and those the test needs)."""
    from datetime import UTC, datetime

    at = datetime(2026, 12, 1, tzinfo=UTC)
    return {
        "TrainingJobName": "churn-1",
        "TrainingJobArn": "arn:aws:sagemaker:eu-west-1:123456789012:training-job/churn-1",
        "ModelArtifacts": {"S3ModelArtifacts": "s3://my-bucket/churn/models/churn-1/output/model.tar.gz"},
        "TrainingJobStatus": status,
        "SecondaryStatus": transitions[-1],
        "AlgorithmSpecification": {"TrainingInputMode": "File"},
        "ResourceConfig": {"InstanceType": "ml.c5.2xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
        "CreationTime": at,
        "SecondaryStatusTransitions": [
            {"Status": name, "StartTime": at, "StatusMessage": f"{name} message"} for name in transitions
        ],
        **fields,
    }


def log_page(*events: tuple[str, int, str]) -> dict[str, Any]:
    return {
        "events": [
            {"logStreamName": "churn-1/algo-1-1764547200", "eventId": event_id, "timestamp": at, "message": message}
            for event_id, at, message in events
        ]
    }


def test_wait_follows_status_and_log_to_the_end_and_prints_the_spot_saving(stub: Any) -> None:
    sagemaker, logs = stub("sagemaker"), stub("logs")
    sagemaker.add_response("create_training_job", {"TrainingJobArn": "arn:job"})
    sagemaker.add_response("describe_training_job", describe("InProgress", ["Starting"]))
    sagemaker.add_response("describe_training_job", describe("InProgress", ["Starting", "Downloading", "Training"]))
    log_query = {"logGroupName": "/aws/sagemaker/TrainingJobs", "logStreamNamePrefix": "churn-1/", "startTime": 0}
    logs.add_response("filter_log_events", log_page(("1", 10, "epoch=1 loss=0.5;\n"), ("2", 12, "epoch=2;")), log_query)
    ended = ["Starting", "Downloading", "Training", "Uploading", "Completed"]
    sagemaker.add_response(
        "describe_training_job",
        describe(
            "Completed", ended, EnableManagedSpotTraining=True, TrainingTimeInSeconds=1200, BillableTimeInSeconds=360
        ),
    )
    # The minute before the newest line seen comes again (for hosts' late lines): event 2 is not printed twice.
    logs.add_response(
        "filter_log_events",
        {**log_page(("2", 12, "epoch=2;"), ("3", 12, "saved")), "nextToken": "t"},
        {**log_query, "startTime": 0},
    )
    logs.add_response("filter_log_events", log_page(("4", 20, "done")), {**log_query, "startTime": 0, "nextToken": "t"})
    out, sleeps = io.StringIO(), list[float]()
    job = train.training_job_from(
        train_args(), train.channels_from(["train=s3://my-bucket/t"], None, None), {"epochs": "3"}
    )  # fmt: skip

    assert train.train_in_aws(job, Aws(dry_run=False, out=out), True, out, sleep=sleeps.append) == 0

    assert out.getvalue().splitlines() == [
        "training job churn-1: arn:job",
        "Starting: Starting message",
        "Downloading: Downloading message",
        "Training: Training message",
        "epoch=1 loss=0.5;",
        "epoch=2;",
        "saved",
        "done",
        "Uploading: Uploading message",
        "Completed: Completed message",
        "managed spot: billed 360 s of 1200 s of training, 70% saved",
        "model: s3://my-bucket/churn/models/churn-1/output/model.tar.gz",
    ]
    assert sleeps == [15.0, 15.0]


def train_args(**overrides: Any) -> Any:
    import argparse

    values = {
        "image_uri": IMAGE, "role": ROLE, "output_path": "s3://my-bucket/o", "max_run": None, "spot": False,
        "max_wait": None, "checkpoint_s3_uri": None, "name": "churn-1", "instance_type": None,
        "instance_count": 1, "volume_size": None, "metric": None, "experiment": None, "run_name": None,
    }  # fmt: skip
    return argparse.Namespace(**{**values, **overrides})


def test_a_failed_job_ends_the_wait_with_its_reason_and_exit_code_1(
    stub: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    sagemaker = stub("sagemaker")
    sagemaker.add_response("create_training_job", {"TrainingJobArn": "arn:job"})
    failed = describe("Failed", ["Starting", "Failed"], FailureReason="AlgorithmError: Invalid hyperparameters")
    sagemaker.add_response("describe_training_job", failed)
    job = train.training_job_from(train_args(), train.channels_from(["train=s3://my-bucket/t"], None, None), {})
    out = io.StringIO()

    assert train.train_in_aws(job, Aws(), True, out, sleep=lambda seconds: None) == 1

    assert out.getvalue().splitlines() == [
        "training job churn-1: arn:job",
        "Starting: Starting message",
        "Failed: Failed message",
    ]
    assert "optml: training job churn-1 Failed: AlgorithmError: Invalid hyperparameters" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--channel", "train=file://{tmp}/no/such/folder", "--output-path", "out"),
         "--channel train=file://{tmp}/no/such/folder: {tmp}/no/such/folder does not exist"),
        (("--channel", "train=data", "--channel", "validation=missing", "--output-path", "out"),
         "--channel validation=missing: {tmp}/missing does not exist"),
        (("--channel", "train=s3://my-bucket/t", "--output-path", "out"),
         "s3://my-bucket/t: only local paths and file:// URIs work offline"),
        (("--channel", "train=data", "--output-path", "out", "--role", ROLE, "--spot"),
         "--role, --spot only apply in AWS: drop them with --local"),
        (("--channel", "train=data"), "--output-path is required: the folder for the run's files"),
        (("--channel", "train=data", "--output-path", "out", "--hp", "epochs=x"),
         "epochs='x' is invalid: expected a positive integer"),
    ],
    ids=["file-uri", "relative", "s3", "aws-options", "output", "hyperparameter"],
)  # fmt: skip
def test_local_mistakes_are_refused_before_any_docker_work(
    no_network: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argv: tuple[str, ...], message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """Local mode needs no AWS credentials (no_network has none), and its checks come before Docker starts."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    monkeypatch.setattr("optml.cli.localmode.run_locally", pytest.fail)

    assert run_cli("train", "--local", *(item.replace("{tmp}", str(tmp_path)) for item in argv)) == 2

    assert message.replace("{tmp}", str(tmp_path)) in capsys.readouterr().err


def test_a_channel_path_that_does_not_exist_is_named_for_aws_too(
    credentials: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    channel = f"validation=file://{tmp_path}/gone"

    assert run_cli(*BASE, "--channel", channel) == 2

    assert f"--channel {channel}: {tmp_path}/gone does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("option", ["--max-run", "--max-wait"])
def test_times_over_sagemakers_28_days_are_refused_by_the_parser(
    option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        run_cli("train", option, "2419201")
    assert exited.value.code == 2
    assert f"argument {option}: 2419201 is more than 2419200, SageMaker's limit (28 days)" in capsys.readouterr().err


def test_an_experiment_is_created_if_missing_and_named_on_the_job(
    stub: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """CreateExperiment answering "already exists" is success; ExperimentConfig as botocore's model has it."""
    sagemaker = stub("sagemaker")
    sagemaker.add_client_error(
        "create_experiment",
        "ValidationException",
        "Experiment churn already exists",
        expected_params={"ExperimentName": "churn"},
    )
    expected = {**expected_spot_request(capsys), "ExperimentConfig": {"ExperimentName": "churn", "RunName": "lr-01"}}
    sagemaker.add_response("create_training_job", {"TrainingJobArn": "arn:job"}, expected)

    assert run_cli(*SPOT_JOB, "--experiment", "churn", "--run", "lr-01") == 0


def test_a_run_needs_an_experiment(credentials: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(*BASE, "--run", "lr-01") == 2
    assert "--run lr-01 names a run within an experiment: add --experiment NAME" in capsys.readouterr().err


def test_metric_definitions_of_a_known_task_include_its_test_metrics(capsys: pytest.CaptureFixture[str]) -> None:
    image_command.main(["--task", "regression"])
    names = [definition["Name"] for definition in json.loads(capsys.readouterr().out)]
    assert names == [f"{channel}:{name}" for channel in ("validation", "cv", "train", "test")
                     for name in ("loss", "mse", "rmse", "mae", "r2")]  # fmt: skip


def test_metric_extras_push_out_train_metrics_with_a_note(capsys: pytest.CaptureFixture[str]) -> None:
    definitions = train.metric_definitions({"a": "a=([0-9]+)", "b": "b=([0-9]+)"})
    assert len(definitions) == 40
    assert [d["Name"] for d in definitions[-3:]] == ["train:mae", "a", "b"]
    assert capsys.readouterr().err == (
        "optml: SageMaker takes 40 metric definitions: left out train:r2 to make room for --metric\n"
    )
