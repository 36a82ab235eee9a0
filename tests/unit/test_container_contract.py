"""container/: config files, paths, failure file, metric log format and command dispatch."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from optml.container.config import (
    decode_hyperparameter_value,
    read_hyperparameters,
    read_input_data_config,
    read_resource_config,
)
from optml.container.entrypoint import main as entrypoint_main
from optml.container.entrypoint import resolve_command
from optml.container.errors import UserError
from optml.container.failure import truncate_reason, write_failure
from optml.container.logs import format_metric_line, metric_definitions
from optml.container.paths import Paths
from tests.conftest import REPO


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("10", "10"),
        ('"adam"', "adam"),  # SDK v2 framework estimators JSON-encode strings
        ('"0.01"', "0.01"),
        ('"64,32"', "64,32"),
        (7, "7"),
        (0.5, "0.5"),
        (True, "true"),
        ([64, 32], "64,32"),
        ('"unterminated', '"unterminated'),
    ],
)
def test_hyperparameter_values_decode_to_plain_strings(raw: object, expected: str) -> None:
    assert decode_hyperparameter_value(raw) == expected


def test_hyperparameters_file_drops_sdk_keys_and_keeps_the_tuning_objective(tmp_path: Path) -> None:
    path = tmp_path / "hyperparameters.json"
    path.write_text(
        json.dumps(
            {
                "epochs": "3",
                "learning_rate": '"0.01"',
                "sagemaker_program": '"train.py"',
                "sagemaker_region": '"us-east-1"',
                "_tuning_objective_metric": "validation:auc",
            }
        )
    )
    parsed = read_hyperparameters(path)
    assert parsed.values == {"epochs": "3", "learning_rate": "0.01"}
    assert parsed.tuning_objective_metric == "validation:auc"
    assert set(parsed.ignored_keys) == {"sagemaker_program", "sagemaker_region"}


def test_missing_hyperparameters_file_means_defaults(tmp_path: Path) -> None:
    assert read_hyperparameters(tmp_path / "absent.json").values == {}


@pytest.mark.parametrize(("content", "message"), [("{not json", "not valid JSON"), ("[1, 2]", "JSON object")])
def test_malformed_config_file_is_a_user_error_naming_the_file(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "hyperparameters.json"
    path.write_text(content)
    with pytest.raises(UserError, match=message) as raised:
        read_hyperparameters(path)
    assert str(path) in str(raised.value)


def test_resource_config_master_is_first_sorted_host(tmp_path: Path) -> None:
    path = tmp_path / "resourceconfig.json"
    path.write_text(
        json.dumps({"current_host": "algo-2", "hosts": ["algo-2", "algo-1"], "network_interface_name": "ethwe"})
    )
    resources = read_resource_config(path)
    assert resources.master_host == "algo-1"
    assert resources.is_master is False
    assert resources.network_interface_name == "ethwe"
    assert read_resource_config(tmp_path / "absent.json").is_master is True


def test_input_data_config_reads_each_channel(tmp_path: Path) -> None:
    path = tmp_path / "inputdataconfig.json"
    path.write_text(json.dumps({"train": {"ContentType": "text/csv", "TrainingInputMode": "File"}, "validation": {}}))
    channels = read_input_data_config(path)
    assert channels["train"].content_type == "text/csv"
    assert channels["validation"].content_type is None
    assert channels["validation"].input_mode == "File"


def test_paths_default_to_opt_ml_and_honour_toolkit_overrides() -> None:
    assert Paths.from_env({}).model_dir == Path("/opt/ml/model")
    assert Paths.from_env({}).channel_dir("train") == Path("/opt/ml/input/data/train")
    paths = Paths.from_env(
        {
            "OPTML_ROOT": "/tmp/x",
            "SM_MODEL_DIR": "/models",
            "SM_CHANNEL_TRAIN": "/data/tr",
            "SM_OUTPUT_DATA_DIR": "/o",
        }
    )
    assert paths.model_dir == Path("/models")
    assert paths.channel_dir("train") == Path("/data/tr")
    assert paths.channel_dir("validation") == Path("/tmp/x/input/data/validation")
    assert paths.output_data_dir == Path("/o")
    assert paths.failure_file == Path("/tmp/x/output/failure")


def test_failure_reason_is_cut_to_1024_bytes_without_splitting_characters(tmp_path: Path) -> None:
    message = "é" * 2000
    cut = truncate_reason(message)
    assert len(cut.encode("utf-8")) <= 1024
    assert cut.endswith("[...]")
    write_failure(tmp_path / "output" / "failure", "  short reason\n")
    assert (tmp_path / "output" / "failure").read_text() == "short reason"


def test_metric_regexes_match_their_own_metric_only() -> None:
    line = format_metric_line("epoch=3", {"train:loss": 0.25, "validation:loss": 1.5e-5, "validation:accuracy": 0.9})
    assert line == "epoch=3 train:loss=0.25 validation:loss=1.5e-05 validation:accuracy=0.9;"
    found = {}
    for definition in metric_definitions(["train:loss", "validation:loss", "validation:accuracy", "loss"]):
        match = re.search(definition["Regex"], line)
        found[definition["Name"]] = float(match.group(1)) if match else None
    assert found == {"train:loss": 0.25, "validation:loss": 1.5e-5, "validation:accuracy": 0.9, "loss": None}


def test_non_finite_metrics_are_logged_but_never_matched() -> None:
    line = format_metric_line("epoch=1", {"validation:auc": float("nan")})
    assert line == "epoch=1 validation:auc=nan;"
    assert re.search(metric_definitions(["validation:auc"])[0]["Regex"], line) is None


def test_metric_definitions_respect_sagemaker_limits() -> None:
    with pytest.raises(ValueError, match="40"):
        metric_definitions([f"m{i}" for i in range(41)])


def test_no_argument_trains_with_hyperparameters_else_evaluates_in_a_processing_job_else_serves(
    tmp_path: Path,
) -> None:
    paths = Paths(root=tmp_path)
    assert resolve_command([], paths) == ("serve", [])
    paths.processing_job_config_file.parent.mkdir(parents=True)
    paths.processing_job_config_file.write_text("{}")
    assert resolve_command([], paths) == ("evaluate", [])
    paths.config_dir.mkdir(parents=True)
    paths.hyperparameters_file.write_text("{}")
    assert resolve_command([], paths) == ("train", [])
    assert resolve_command(["serve", "--x"], paths) == ("serve", ["--x"])
    assert resolve_command(["evaluate", "--test", "t"], paths) == ("evaluate", ["--test", "t"])
    assert resolve_command(["nope"], paths) == (None, [])


def test_processing_paths_follow_sagemakers_processing_layout() -> None:
    paths = Paths.from_env({"OPTML_ROOT": "/tmp/x"})
    assert Paths.from_env({}).processing_job_config_file == Path("/opt/ml/config/processingjobconfig.json")
    assert paths.processing_input_dir("model") == Path("/tmp/x/processing/input/model")
    assert paths.evaluation_dir == Path("/tmp/x/processing/evaluation")
    assert paths.exit_message_file == Path("/tmp/x/output/message")


def test_unknown_command_prints_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert entrypoint_main(["nope"]) == 2
    assert capsys.readouterr().err == (
        "unknown command 'nope'; usage: IMAGE [train | serve | evaluate | metric-definitions];"
        " IMAGE evaluate --help lists its arguments\n"
    )


def test_metric_definitions_command_prints_valid_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert entrypoint_main(["metric-definitions"]) == 0
    definitions = json.loads(capsys.readouterr().out)
    names = [d["Name"] for d in definitions]
    assert {"train:loss", "validation:loss", "validation:accuracy", "validation:auc", "validation:r2"} <= set(names)
    assert len(names) == len(set(names)) <= 40
    assert all(len(d["Regex"]) <= 500 for d in definitions)


def test_a_stop_before_the_command_takes_over_exits_at_once() -> None:
    """As PID 1 an unhandled SIGTERM is ignored: a stop during torch's import waited for SageMaker's SIGKILL.
    `python -m optml.container.entrypoint` handles it from its first line and exits 143. Here the training
    command is a stand-in that stops itself as soon as it is imported, as a SIGTERM arriving then would."""
    script = (
        "import os, runpy, signal, sys, types; sys.argv = ['entrypoint', 'train'];"
        "stand_in = types.ModuleType('optml.train.main'); sys.modules['optml.train.main'] = stand_in;"
        "stand_in.main = lambda args: os.kill(os.getpid(), signal.SIGTERM) or print('not reached');"
        "runpy.run_module('optml.container.entrypoint', run_name='__main__')"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout) == (143, "")


@pytest.mark.parametrize("command_module", ["optml.serve.wsgi", "optml.train.main", "optml.train.evaluate"])
def test_each_command_imports_only_its_own_package(command_module: str) -> None:
    """The entrypoint imports a command's package only when it runs it; the server (all that gunicorn's master
    loads) never loads the training code, nor training the server's: neither start-up pays for the other."""
    script = (
        "import importlib, sys; loaded = lambda: sorted({m.split('.')[1] for m in sys.modules if m.count('.') and"
        " m.startswith('optml.')} & {'serve', 'train'});"
        f"import optml.container.entrypoint; print(loaded()); importlib.import_module({command_module!r});"
        " print(loaded())"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["[]", str([command_module.split(".")[1]])]
