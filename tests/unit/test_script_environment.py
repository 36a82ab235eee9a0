"""Script mode's view of the job: which jobs are script mode, and the SM_* variables and command line a user's
script receives — compared value for value with AWS's training toolkit (its test_mapping.py examples)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from optml.container.hosts import usable_interface
from optml.container.paths import Paths
from optml.train.script.environment import (
    Context,
    Host,
    count_gpus,
    process_environment,
    sm_variables,
    to_cmd_args,
    to_env_vars,
)
from optml.train.script.job import ScriptJob, requested, script_job, split_hyperparameters

# What SDK v2's PyTorch estimator writes to hyperparameters.json: every value JSON-encoded.
SDK_V2_HYPERPARAMETERS = {
    "epochs": "10",
    "batch_size": "64",
    "precision": "5.434322",
    "loss": '"SGD"',
    "augment": "true",
    "sagemaker_program": '"train.py"',
    "sagemaker_submit_directory": '"s3://bucket/job/source/sourcedir.tar.gz"',
    "sagemaker_region": '"us-west-2"',
    "sagemaker_container_log_level": "20",
    "sagemaker_job_name": '"pytorch-training-2026-12-01"',
}
INPUT_DATA_CONFIG = {
    "train": {
        "ContentType": "trainingContentType",
        "TrainingInputMode": "File",
        "S3DistributionType": "FullyReplicated",
        "RecordWrapperType": "None",
    },
    "validation": {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"},
}
RESOURCE_CONFIG = {"current_host": "algo-2", "hosts": ["algo-1", "algo-2", "algo-3"]}


@pytest.mark.parametrize(
    ("hyperparameters", "expected"),
    [
        (
            {"da-sh": "1", "un_der": "2", "un-sh": "3", "da_der": "2"},
            ["--da-sh", "1", "--da_der", "2", "--un-sh", "3", "--un_der", "2"],
        ),
        ({}, []),
        ({"floats": 4.0, "int": 2, "unicode": "¡ø"}, ["--floats", "4.0", "--int", "2", "--unicode", "¡ø"]),
        ({"U": "1", "b": "2", "T": ""}, ["-T", "", "-U", "1", "-b", "2"]),
        ({"nested": ["1", ["2", "3", [["6"]]]]}, ["--nested", "['1', ['2', '3', [['6']]]]"]),
        (
            {"map": {"a": [1, 3, 4]}, "channel_dirs": {"train": "foo", "eval": "bar"}},
            ["--channel_dirs", "eval=bar,train=foo", "--map", "a=[1, 3, 4]"],
        ),
        ({"truthy": True, "falsy": False}, ["--falsy", "False", "--truthy", "True"]),
    ],
)
def test_command_line_is_rendered_as_the_toolkit_renders_it(hyperparameters: dict, expected: list[str]) -> None:
    assert to_cmd_args(hyperparameters) == expected


@pytest.mark.parametrize(
    ("mapping", "expected"),
    [
        (
            {"model_dir": "/opt/ml/model", "OUTPUT_DIR": "/opt/ml/output"},
            {"SM_MODEL_DIR": "/opt/ml/model", "SM_OUTPUT_DIR": "/opt/ml/output"},
        ),
        (
            {"floats": 4.0, "int": 2, "unicode": "¡ø", "none": None},
            {"SM_FLOATS": "4.0", "SM_INT": "2", "SM_UNICODE": "¡ø", "SM_NONE": ""},
        ),
        ({"nested": ["1", ["2", "3", [["6"]]]]}, {"SM_NESTED": '["1",["2","3",[["6"]]]]'}),
        (
            {"channel_dirs": {"train": "foo", "eval": "bar"}, "map": {"a": [1, 3, 4]}},
            {"SM_CHANNEL_DIRS": '{"eval":"bar","train":"foo"}', "SM_MAP": '{"a":[1,3,4]}'},
        ),
        ({"truthy": True, "falsy": False}, {"SM_FALSY": "false", "SM_TRUTHY": "true"}),
    ],
)
def test_env_values_are_strings_as_they_are_and_sorted_compact_json_otherwise(mapping: dict, expected: dict) -> None:
    assert to_env_vars(mapping) == expected


def test_sdk_v2_values_are_json_decoded_and_sdk_keys_kept_apart() -> None:
    user, sdk = split_hyperparameters({**SDK_V2_HYPERPARAMETERS, "_tuning_objective_metric": "validation:loss"})
    assert user == {"epochs": 10, "batch_size": 64, "precision": 5.434322, "loss": "SGD", "augment": True}
    assert sdk["sagemaker_program"] == "train.py" and sdk["sagemaker_container_log_level"] == 20
    assert "_tuning_objective_metric" in sdk
    # A plain file's values: what does not parse as JSON stays as written.
    assert split_hyperparameters({"optimizer": "adam", "flag": "True", "n": 3})[0] == {
        "optimizer": "adam",
        "flag": "True",
        "n": 3,
    }


def test_script_mode_is_chosen_by_the_hyperparameter_or_the_environment(tmp_path: Path) -> None:
    paths = Paths(root=tmp_path)
    assert requested(paths, {}) is False  # no hyperparameters.json at all: the built-in trainer
    paths.config_dir.mkdir(parents=True)
    paths.hyperparameters_file.write_text(json.dumps({"epochs": "3"}))
    assert requested(paths, {}) is False
    assert requested(paths, {"SAGEMAKER_PROGRAM": "train.py"}) is True
    paths.hyperparameters_file.write_text(json.dumps({"sagemaker_program": '"train.py"'}))
    assert requested(paths, {}) is True
    paths.hyperparameters_file.write_text(json.dumps({"sagemaker_program": "train.py"}))  # written by hand
    assert requested(paths, {}) is True
    paths.hyperparameters_file.write_text("{not json")  # left to the built-in path to report
    assert requested(paths, {}) is False


def test_the_environment_variable_wins_over_the_hyperparameter() -> None:
    job = script_job({"sagemaker_program": '"train.py"'}, {"SAGEMAKER_PROGRAM": "other.py"})
    assert job is not None and job.program == "other.py"
    assert script_job({"epochs": "3"}, {}) is None


def context(tmp_path: Path, network_interface: str = "eth0") -> Context:
    job = script_job(SDK_V2_HYPERPARAMETERS, {})
    assert job is not None
    host = Host(resource_config=RESOURCE_CONFIG, network_interface=network_interface, num_gpus=0, num_cpus=4)
    return Context(job, host, Paths(root=tmp_path / "ml"), INPUT_DATA_CONFIG, job_name="pytorch-training-2026-12-01")


def test_sm_variables_match_the_toolkit_value_for_value(tmp_path: Path) -> None:
    env = sm_variables(context(tmp_path))
    ml = tmp_path / "ml"
    assert env["SM_HPS"] == '{"augment":true,"batch_size":64,"epochs":10,"loss":"SGD","precision":5.434322}'
    assert env["SM_USER_ARGS"] == (
        '["--augment","True","--batch_size","64","--epochs","10","--loss","SGD","--precision","5.434322"]'
    )
    assert (env["SM_HP_EPOCHS"], env["SM_HP_LOSS"], env["SM_HP_AUGMENT"], env["SM_HP_PRECISION"]) == (
        "10",
        "SGD",
        "true",
        "5.434322",
    )
    assert env["SM_INPUT_DATA_CONFIG"] == (
        '{"train":{"ContentType":"trainingContentType","RecordWrapperType":"None",'
        '"S3DistributionType":"FullyReplicated","TrainingInputMode":"File"},"validation":{"RecordWrapperType":"None",'
        '"S3DistributionType":"FullyReplicated","TrainingInputMode":"File"}}'
    )
    assert env["SM_RESOURCE_CONFIG"] == '{"current_host":"algo-2","hosts":["algo-1","algo-2","algo-3"]}'
    assert env["SM_HOSTS"] == '["algo-1","algo-2","algo-3"]'
    assert env["SM_CHANNELS"] == '["train","validation"]'
    assert env["SM_CHANNEL_TRAIN"] == str(ml / "input/data/train")
    assert env["SM_CHANNEL_VALIDATION"] == str(ml / "input/data/validation")
    assert env["SM_MODEL_DIR"] == str(ml / "model")
    assert env["SM_OUTPUT_DATA_DIR"] == str(ml / "output/data")
    assert env["SM_OUTPUT_DIR"] == str(ml / "output")
    assert env["SM_INPUT_DIR"] == str(ml / "input")
    assert env["SM_INPUT_CONFIG_DIR"] == str(ml / "input/config")
    assert env["SM_MODULE_NAME"] == "train"
    assert env["SM_USER_ENTRY_POINT"] == "train.py"
    assert env["SM_MODULE_DIR"] == "s3://bucket/job/source/sourcedir.tar.gz"
    assert env["SM_LOG_LEVEL"] == "20"
    assert env["SM_FRAMEWORK_PARAMS"] == "{}"
    assert (env["SM_CURRENT_HOST"], env["SM_CURRENT_INSTANCE_TYPE"]) == ("algo-2", "local")
    assert (env["SM_NUM_GPUS"], env["SM_NUM_CPUS"], env["SM_NETWORK_INTERFACE_NAME"]) == ("0", "4", "eth0")
    training_env = json.loads(env["SM_TRAINING_ENV"])
    assert training_env["hyperparameters"] == json.loads(env["SM_HPS"])
    assert (training_env["master_hostname"], training_env["is_master"]) == ("algo-1", False)
    assert training_env["job_name"] == "pytorch-training-2026-12-01"
    assert env["SM_TRAINING_ENV"] == json.dumps(training_env, sort_keys=True, separators=(",", ":"))


def test_hyphens_stay_in_hyperparameter_variable_names_as_in_the_toolkit(tmp_path: Path) -> None:
    job = ScriptJob(program="train.py", hyperparameters={"learning-rate": 0.1})
    ctx = context(tmp_path)
    env = sm_variables(Context(job, ctx.host, ctx.paths, {}))
    assert env["SM_HP_LEARNING-RATE"] == "0.1"
    assert env["SM_CHANNELS"] == "[]"


def test_distribution_switches_are_framework_parameters(tmp_path: Path) -> None:
    job = script_job({"sagemaker_program": "train.py", "sagemaker_torch_distributed_enabled": "true", "lr": "0.1"}, {})
    assert job is not None
    ctx = context(tmp_path)
    env = sm_variables(Context(job, ctx.host, ctx.paths, {}))
    assert env["SM_FRAMEWORK_PARAMS"] == '{"sagemaker_torch_distributed_enabled":true}'
    assert env["SM_HPS"] == '{"lr":0.1}'
    assert json.loads(env["SM_TRAINING_ENV"])["distribution_instance_groups"] == ["homogeneousCluster"]


def test_the_child_gets_master_address_unbuffered_output_and_the_code_first_on_the_path(tmp_path: Path) -> None:
    env = process_environment(context(tmp_path), {"PYTHONPATH": "/opt/optml", "PATH": "/usr/bin", "KEEP": "1"})
    assert (env["MASTER_ADDR"], env["MASTER_PORT"], env["PYTHONUNBUFFERED"]) == ("algo-1", "7777", "1")
    assert env["PYTHONPATH"] == f"{tmp_path / 'ml' / 'code'}:/opt/optml"
    assert (env["KEEP"], env["SAGEMAKER_REGION"], env["SAGEMAKER_JOB_NAME"]) == (
        "1",
        "us-west-2",
        "pytorch-training-2026-12-01",
    )
    assert env["NCCL_SOCKET_IFNAME"] == env["GLOO_SOCKET_IFNAME"] == "eth0"
    assert process_environment(context(tmp_path), {"NCCL_SOCKET_IFNAME": "ens5"})["NCCL_SOCKET_IFNAME"] == "ens5"


def test_a_network_interface_that_does_not_exist_falls_back_to_one_that_does(tmp_path: Path) -> None:
    net = tmp_path / "net"
    for name in ("lo", "eth0", "eth1"):
        (net / name).mkdir(parents=True)
    assert usable_interface("eth1", net) == "eth1"
    assert usable_interface("ethwe", net) == "eth0"  # what SDK v3 local mode writes; its containers have eth0
    assert usable_interface(None, net) == "eth0"
    (net / "eth0").rmdir()
    assert usable_interface("ethwe", net) == "eth1"
    (net / "eth1").rmdir()
    assert usable_interface("ethwe", net) == "lo"  # a container without a network
    assert usable_interface("ethwe", tmp_path / "no-sysfs") == "ethwe"


def test_gpus_are_counted_from_the_device_files(tmp_path: Path) -> None:
    for name in ("nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm"):
        (tmp_path / name).touch()
    assert count_gpus(tmp_path) == 2
