"""`optml tune` in AWS: the CreateHyperParameterTuningJob request, exactly, checked against botocore's model;
every mistake (ranges, objective, strategy rules, warm start) refused before any call, with what to change."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from optml.cli import train, tune
from optml.cli.aws import Aws
from tests.unit.cli_fakes import IMAGE, REGION, ROLE, credentials_fixture, printed_requests, run_cli, stub_fixture  # noqa: F401 (fixtures)

RANGES = (
    '{"learning_rate": {"min": 0.0001, "max": 0.1, "scaling": "log"},\n'
    ' "batch_size": {"min": 16, "max": 256, "type": "integer", "scaling": "linear"},\n'
    ' "momentum": {"min": 0.5, "max": 0.99, "scaling": "reverse_log"},\n'
    ' "optimizer": ["adam", "sgd"], "batch_norm": [true, false]}'
)


@pytest.fixture(name="ranges")
def ranges_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "ranges.json"
    path.write_text(RANGES)
    return path


def base(ranges: Path | str, *extra: str) -> tuple[str, ...]:
    return (
        "tune", "--name", "churn-tune", "--ranges", str(ranges), "--objective", "validation:f1",
        "--image-uri", IMAGE, "--role", ROLE, "--channel", "train=s3://my-bucket/t",
        "--channel", "validation=s3://my-bucket/v", "--output-path", "s3://my-bucket/o", "--hp", "epochs=30", *extra,
    )  # fmt: skip


def dry_run(capsys: pytest.CaptureFixture[str], *argv: str) -> list[dict[str, Any]]:
    assert run_cli(*argv, "--dry-run", "--region", REGION) == 0, capsys.readouterr().err
    return [request["request"] for request in printed_requests(capsys.readouterr().out)]


def test_a_bayesian_search_is_one_exact_request(
    no_network: None, ranges: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    [request] = dry_run(capsys, *base(ranges, "--max-jobs", "20", "--max-parallel-jobs", "3", "--random-seed", "7"))

    definitions = train.metric_definitions({}, None)
    assert request == {
        "HyperParameterTuningJobName": "churn-tune",
        "HyperParameterTuningJobConfig": {
            "Strategy": "Bayesian",
            "HyperParameterTuningJobObjective": {"Type": "Maximize", "MetricName": "validation:f1"},
            "ResourceLimits": {"MaxParallelTrainingJobs": 3, "MaxNumberOfTrainingJobs": 20},
            "ParameterRanges": {
                "ContinuousParameterRanges": [
                    {"Name": "learning_rate", "MinValue": "0.0001", "MaxValue": "0.1", "ScalingType": "Logarithmic"},
                    {"Name": "momentum", "MinValue": "0.5", "MaxValue": "0.99", "ScalingType": "ReverseLogarithmic"},
                ],
                "IntegerParameterRanges": [
                    {"Name": "batch_size", "MinValue": "16", "MaxValue": "256", "ScalingType": "Linear"}
                ],
                "CategoricalParameterRanges": [
                    {"Name": "optimizer", "Values": ["adam", "sgd"]},
                    {"Name": "batch_norm", "Values": ["true", "false"]},
                ],
            },
            "TrainingJobEarlyStoppingType": "Off",
            "RandomSeed": 7,
        },
        "TrainingJobDefinition": {
            "AlgorithmSpecification": {
                "TrainingImage": IMAGE,
                "TrainingInputMode": "File",
                "MetricDefinitions": definitions,
            },
            "RoleArn": ROLE,
            "InputDataConfig": [
                train.Channel("train", "s3://my-bucket/t").request(),
                train.Channel("validation", "s3://my-bucket/v").request(),
            ],
            "OutputDataConfig": {"S3OutputPath": "s3://my-bucket/o"},
            "ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
            "StoppingCondition": {"MaxRuntimeInSeconds": 86400},
            "StaticHyperParameters": {"epochs": "30"},
        },
    }
    assert len(definitions) == 39


def config(request: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = request["HyperParameterTuningJobConfig"]
    return result


def test_hyperband_takes_its_max_resource_from_epochs(
    no_network: None, ranges: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    [request] = dry_run(capsys, *base(ranges, "--strategy", "Hyperband"))

    assert config(request)["Strategy"] == "Hyperband"
    assert config(request)["StrategyConfig"] == {"HyperbandStrategyConfig": {"MinResource": 1, "MaxResource": 30}}
    assert config(request)["TrainingJobEarlyStoppingType"] == "Off"


def test_random_with_early_stopping_and_a_loss_minimized(
    no_network: None, ranges: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [a if a != "validation:f1" else "validation:log_loss" for a in base(ranges)]
    [request] = dry_run(capsys, *argv, "--strategy", "Random", "--early-stopping", "auto")

    assert config(request)["Strategy"] == "Random"
    assert config(request)["TrainingJobEarlyStoppingType"] == "Auto"
    assert config(request)["HyperParameterTuningJobObjective"] == {
        "Type": "Minimize",
        "MetricName": "validation:log_loss",
    }
    assert config(request)["ResourceLimits"] == {"MaxParallelTrainingJobs": 2, "MaxNumberOfTrainingJobs": 10}


def test_grid_runs_every_combination_of_its_lists(
    no_network: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ranges = tmp_path / "grid.yaml"
    ranges.write_text("optimizer: [adam, sgd, adamw]\nbatch_size: [32, 64]\n")

    [request] = dry_run(capsys, *base(ranges, "--strategy", "Grid"))

    assert config(request)["ParameterRanges"] == {
        "CategoricalParameterRanges": [
            {"Name": "optimizer", "Values": ["adam", "sgd", "adamw"]},
            {"Name": "batch_size", "Values": ["32", "64"]},
        ]
    }
    assert config(request)["ResourceLimits"] == {"MaxParallelTrainingJobs": 2}  # SageMaker counts the grid: 6


def test_a_yaml_ranges_file_and_warm_start(
    no_network: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ranges = tmp_path / "ranges.yml"
    ranges.write_text("learning_rate:\n  min: 0.001\n  max: 0.1\n  scaling: log\ndropout: {min: 0, max: 0.5}\n")

    [request] = dry_run(
        capsys,
        *base(ranges, "--warm-start-from", "old-1", "old-2", "--warm-start-type", "TransferLearning", "--minimize"),
    )

    assert config(request)["ParameterRanges"] == {
        "ContinuousParameterRanges": [
            {"Name": "learning_rate", "MinValue": "0.001", "MaxValue": "0.1", "ScalingType": "Logarithmic"},
            {"Name": "dropout", "MinValue": "0.0", "MaxValue": "0.5", "ScalingType": "Auto"},
        ]
    }
    assert config(request)["HyperParameterTuningJobObjective"]["Type"] == "Minimize"
    assert request["WarmStartConfig"] == {
        "ParentHyperParameterTuningJobs": [
            {"HyperParameterTuningJobName": "old-1"},
            {"HyperParameterTuningJobName": "old-2"},
        ],
        "WarmStartType": "TransferLearning",
    }


def test_a_known_task_defines_its_test_metrics_and_a_user_metric_is_an_objective(
    no_network: None, ranges: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [a if a != "validation:f1" else "my_error" for a in base(ranges)]
    [request] = dry_run(capsys, *argv, "--hp", "task=binary_classification", "--metric", "my_error=err=([0-9.]+)")

    names = [d["Name"] for d in request["TrainingJobDefinition"]["AlgorithmSpecification"]["MetricDefinitions"]]
    assert len(names) == 37 and "test:f1" in names and "validation:r2" not in names and names[-1] == "my_error"
    assert config(request)["HyperParameterTuningJobObjective"] == {"Type": "Minimize", "MetricName": "my_error"}


def test_the_experiment_gets_a_trial_and_the_tuning_job_its_tag(
    no_network: None, ranges: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    experiment, trial, tuning = dry_run(capsys, *base(ranges, "--experiment", "churn", "--run", "lr-search"))

    assert experiment == {"ExperimentName": "churn"}
    assert trial == {"TrialName": "lr-search", "ExperimentName": "churn"}
    assert tuning["Tags"] == [{"Key": "optml:experiment", "Value": "churn"}]


def test_wait_follows_counts_joins_the_trial_and_prints_the_best_job(stub: Any, ranges: Path) -> None:
    sagemaker = stub("sagemaker")
    name = {"HyperParameterTuningJobName": "churn-tune"}
    counters = {"Completed": 1, "InProgress": 1, "RetryableError": 0, "NonRetryableError": 0, "Stopped": 0}
    described = {
        **name, "HyperParameterTuningJobArn": "arn:tune", "CreationTime": 0, "TrainingJobStatusCounters": counters,
        "ObjectiveStatusCounters": {"Succeeded": 1, "Pending": 1, "Failed": 0},
        "HyperParameterTuningJobConfig": {"Strategy": "Bayesian", "ResourceLimits": {"MaxParallelTrainingJobs": 2}},
    }  # fmt: skip
    summary = {
        "TrainingJobArn": "arn:j", "CreationTime": 0, "TrainingJobStatus": "Completed", "TunedHyperParameters": {},
    }  # fmt: skip
    best = {**summary, "TrainingJobName": "churn-tune-001-a", "TunedHyperParameters": {"learning_rate": "0.01"},
            "FinalHyperParameterTuningJobObjectiveMetric": {"MetricName": "validation:f1", "Value": 0.93}}  # fmt: skip
    listed = {**name, "MaxResults": 100}
    sagemaker.add_response(
        "describe_hyper_parameter_tuning_job", {**described, "HyperParameterTuningJobStatus": "InProgress"}, name
    )
    sagemaker.add_response(
        "list_training_jobs_for_hyper_parameter_tuning_job",
        {"TrainingJobSummaries": [{**summary, "TrainingJobName": "churn-tune-001-a"}]},
        listed,
    )
    sagemaker.add_response(
        "associate_trial_component",
        {},
        {"TrialComponentName": "churn-tune-001-a-aws-training-job", "TrialName": "churn-tune"},
    )
    sagemaker.add_response(
        "describe_hyper_parameter_tuning_job",
        {**described, "HyperParameterTuningJobStatus": "Completed", "BestTrainingJob": best},
        name,
    )
    sagemaker.add_response(
        "list_training_jobs_for_hyper_parameter_tuning_job",
        {"TrainingJobSummaries": [{**summary, "TrainingJobName": "churn-tune-001-a"}]},
        listed,
    )
    out, sleeps = io.StringIO(), list[float]()

    assert tune.follow_tuning_job(Aws(out=out), "churn-tune", "churn-tune", out, sleep=sleeps.append) == 0

    assert out.getvalue().splitlines() == [
        "InProgress: Completed 1, InProgress 1, RetryableError 0, NonRetryableError 0, Stopped 0",
        "Completed: Completed 1, InProgress 1, RetryableError 0, NonRetryableError 0, Stopped 0",
        "best training job: churn-tune-001-a",
        "objective: validation:f1 = 0.93",
        "  learning_rate=0.01",
    ]
    assert sleeps == [15.0]


def write(tmp_path: Path, name: str, text: str) -> str:
    (tmp_path / name).write_text(text)
    return str(tmp_path / name)


@pytest.mark.parametrize(
    ("ranges_text", "extra", "message"),
    [
        (RANGES, ("--objective", "validation:f2"), "--objective validation:f2: no job defines that metric; did you mean validation:r2 or validation:f1"),  # noqa: E501
        (RANGES, ("--objective", "my_score"), "a metric of your own script needs --metric my_score=REGEX"),
        (RANGES, ("--strategy", "Hyperband", "--early-stopping", "auto"), "--early-stopping auto with --strategy Hyperband: SageMaker requires it off"),  # noqa: E501
        (RANGES, ("--warm-start-from", "a", "b", "c", "d", "e", "f"), "--warm-start-from names 6 tuning jobs: SageMaker takes at most 5 parents"),  # noqa: E501
        (RANGES, ("--warm-start-type", "TransferLearning"), "--warm-start-type says how to use --warm-start-from"),
        (RANGES, ("--strategy", "Grid"), "--strategy Grid searches lists of values only: learning_rate, batch_size, momentum"),  # noqa: E501
        (RANGES, ("--name", "a-tuning-job-name-of-33-characterz"), "is not a tuning job name SageMaker accepts: 1 to 32"),  # noqa: E501
        (RANGES, ("--warm-start-from", "old_1"), "--warm-start-from 'old_1' is not a tuning job's name: 1 to 32"),
        (RANGES, ("--objective", "validation:log_loss", "--hp", "task=regression"), "did you mean validation:loss"),
        (RANGES, ("--parallel", "2"), "--parallel only apply to a local search: add --local"),
        (RANGES, ("--local", "--role", ROLE), "--role, --name only apply in AWS: drop them with --local"),
        (RANGES, ("--run", "r1"), "--run r1 names a run within an experiment: add --experiment NAME"),
        (RANGES, ("--hp", "optimizer=adam"), "optimizer is both a range and a static --hp: drop one"),
        ('{"learnin_rate": {"min": 0.1, "max": 1}}', (), "unknown hyperparameter 'learnin_rate' (did you mean learning_rate?)"),  # noqa: E501
        ('{"dropout": {"min": 0, "max": 1.5}}', (), "dropout='1.5' is invalid: expected a number in [0, 1)"),
        ('{"optimizer": ["adam", "rmsprop"]}', (), "optimizer='rmsprop' is invalid: expected one of sgd, adam, adamw"),
        ('{"batch_size": {"min": 1, "max": 9.5, "type": "continuous"}}', (), "batch_size: a continuous range, but batch_size is integer"),  # noqa: E501
        ('{"learning_rate": {"min": 0, "max": 0.1, "scaling": "log"}}', (), "learning_rate: log scaling needs min > 0"),
        ('{"dropout": {"min": 0.1, "max": 0.5, "step": 0.1}}', (), "dropout: unknown key 'step'"),
        ('{"learning_rate": {"min": 0.1,\n "max": }}', (), "line 2, column 9: not JSON (Expecting value)"),
        ("[1, 2]", (), "expected an object of hyperparameter ranges"),
    ],
    ids=lambda value: None if isinstance(value, tuple) else None,
)  # fmt: skip
def test_mistakes_are_refused_before_any_call(
    credentials: None, tmp_path: Path, ranges_text: str, extra: tuple[str, ...], message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """With credentials but no network: a check that was missing would reach the network guard instead."""
    assert run_cli(*base(write(tmp_path, "ranges.json", ranges_text), *extra)) == 2
    assert message in capsys.readouterr().err


def test_yaml_that_does_not_parse_names_line_and_column(
    credentials: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(*base(write(tmp_path, "ranges.yaml", "optimizer: [adam, sgd\nbatch_size: 3\n"))) == 2
    assert f"--ranges {tmp_path / 'ranges.yaml'}: line 2, column 11: not YAML" in capsys.readouterr().err


def test_epochs_cannot_be_a_hyperband_range(
    credentials: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        a for a in base(write(tmp_path, "r.json", '{"epochs": [5, 10]}'), "--strategy", "Hyperband") if a != "epochs=30"
    ]
    argv.remove("--hp")
    assert run_cli(*argv) == 2
    assert "epochs is a range, but Hyperband owns the epoch budget" in capsys.readouterr().err


def test_the_bundled_ranges_file_of_make_demo_tune_is_a_valid_search() -> None:
    from optml.cli import search
    from tests.conftest import REPO

    ranges = search.read_ranges(str(REPO / "examples" / "tuning" / "ranges.json"), {"epochs": "10"})

    assert ranges == (
        search.ContinuousRange("learning_rate", 0.0001, 10.0, "Logarithmic"),
        search.IntegerRange("batch_size", 16, 128, "Auto"),
        search.ContinuousRange("dropout", 0.0, 0.5, "Auto"),
        search.CategoricalRange("optimizer", ("adam", "adamw", "sgd")),
    )
