"""The local-mode drivers' end of run: the human summary on stdout and the JSON summary file.

`run_driver` runs here with stand-ins for the SDK's train and deploy steps and for the Docker checks, so
the whole path from the training log to what the user reads (and what programs read) is covered without
Docker or an SDK.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from optml.cli import localmode as common
from tools import sagemaker_transform_v2

EPOCH_1 = (
    "epoch=1 train:loss=0.41 train:accuracy=0.88 validation:loss=0.31 validation:accuracy=0.93 "
    "validation:f1=0.94 validation:auc=0.97 validation:log_loss=0.31;"
)
EPOCH_2 = (
    "epoch=2 train:loss=0.2 train:accuracy=0.95 validation:loss=0.0612 validation:accuracy=0.982456 "
    "validation:precision=0.98 validation:recall=0.99 validation:f1=0.98591 validation:auc=0.99771 "
    "validation:log_loss=0.0612;"
)
ROWS = ["17.99,10.38,122.8,1001,0.1184,0.2776,0.3001,0.1471,0.2419,0.07871,1.095,0.9053", "13.54,14.36,87.46"]


class FakeJanitor:
    def __init__(self, run_name: str) -> None:
        self.run_name = run_name

    def remove_phase(self, phase: str) -> int:
        return 0

    def cleanup(self) -> None:
        pass


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """`run_driver` without Docker, the SDK or changes to this process's environment and logging."""
    monkeypatch.setattr(common, "preflight", lambda image: None)
    monkeypatch.setattr(common, "require_free_port", lambda port: None)
    monkeypatch.setattr(common, "DockerJanitor", FakeJanitor)
    monkeypatch.setattr(common, "sdk_version", lambda: "3.0.0")
    monkeypatch.setattr(common, "new_run_name", lambda prefix: f"{prefix}-run")
    monkeypatch.setattr(common, "prepare_sdk_environment", lambda scratch, allow_telemetry: None)
    monkeypatch.setattr(common, "configure_logging", lambda verbose: None)
    monkeypatch.chdir(tmp_path)
    for channel, lines in (("train", ["1,1.0,2.0", "0,3.0,4.0"]), ("validation", [f"1,{ROWS[0]}", f"0,{ROWS[1]}"])):
        (tmp_path / channel).mkdir()
        (tmp_path / channel / "part-0.csv").write_text("\n".join(lines) + "\n")
    return tmp_path


def fake_train(log_lines: Sequence[str], error: str | None = None) -> common.TrainFn:
    """A train step that writes the container's log to stdout, as both SDKs do, then succeeds or fails."""

    def train(image: str, train_dir: Path, output_dir: Path, *args: Any, **kwargs: Any) -> Path:
        for line in log_lines:
            print(f"algo-1-x7k2q  | {line}")
        if error is not None:
            raise common.LocalModeError(error)
        model_data = output_dir / "job" / "model.tar.gz"
        model_data.parent.mkdir(parents=True)
        model_data.write_bytes(b"")
        return model_data

    return train


def fake_deploy(image: str, model_data: Path, rows: Sequence[str], *args: Any, **kwargs: Any) -> list[str]:
    return ["1", "0"][: len(rows)]


def drive(train: common.TrainFn, *extra: str) -> int:
    argv = ["--image", "optml:test", "--train", "train", "--validation", "validation", "--output", "out", *extra]
    return common.run_driver(argv, "test driver", "optml-test", train, fake_deploy)


def read_summary(path: Path) -> dict[str, Any]:
    summary: dict[str, Any] = json.loads(path.read_text())
    assert set(summary.pop("timings")) >= {"cleanup_s"}  # durations vary; their presence is what counts
    return summary


def test_success_prints_model_metrics_and_predictions_and_writes_the_summary(
    offline: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = [
        "INFO optml.train.main: training mlp on 2 rows",
        EPOCH_1,
        EPOCH_2,
        "INFO optml.train: model saved to /opt/ml/model",
    ]

    assert drive(fake_train(log)) == 0

    out = capsys.readouterr().out
    assert out.splitlines() == [
        "",
        "done",
        "  model    out/job/model.tar.gz",
        "  summary  out/summary.json",
        "",
        "validation metrics of the final model (epoch 2)",
        "  loss      0.0612",
        "  accuracy  0.9825",
        "  f1        0.9859",
        "  auc       0.9977",
        "",
        "predictions",
        "  row  prediction  features",
        "  1    1           17.99,10.38,122.8,1001,0.1184,0.2776,0.3001,0.1471,0.2419...",
        "  2    0           13.54,14.36,87.46",
    ]
    assert read_summary(offline / "out" / "summary.json") == {
        "sdk": "3.0.0",
        "run": "optml-test-run",
        "model_data": str(offline / "out" / "job" / "model.tar.gz"),
        "metrics": {
            "epoch": 2.0,
            "train:loss": 0.2,
            "train:accuracy": 0.95,
            "validation:loss": 0.0612,
            "validation:accuracy": 0.982456,
            "validation:precision": 0.98,
            "validation:recall": 0.99,
            "validation:f1": 0.98591,
            "validation:auc": 0.99771,
            "validation:log_loss": 0.0612,
        },
        "predictions": ["1", "0"],
        "training_log_tail": log,
    }


def test_failure_prints_the_reason_on_one_line_and_writes_it_to_the_summary_option(
    offline: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    error = "training failed (container exit code 1): train/part-0.csv row 2, column 1: 'x' is not a number\n(see log)"

    assert drive(fake_train([EPOCH_1], error=error), "--summary", "reports/run.json") == 1

    assert capsys.readouterr().out.splitlines() == [
        "failed: training failed (container exit code 1): train/part-0.csv row 2, column 1: 'x' is not a number "
        "(see log)",
        "summary: reports/run.json",
    ]
    assert read_summary(offline / "reports" / "run.json") == {
        "sdk": "3.0.0",
        "run": "optml-test-run",
        "error": error,
        "log_tail": [EPOCH_1],
    }
    assert not (offline / "out" / "summary.json").exists()


def test_a_summary_file_that_cannot_be_written_fails_the_run(offline: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (offline / "blocker").write_text("a file where the summary's folder should be")

    assert drive(fake_train([EPOCH_2]), "--summary", "blocker/summary.json") == 1

    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1
    assert out[0].startswith(f"failed: cannot write the summary file {offline / 'blocker' / 'summary.json'}: ")


def test_the_summary_defaults_to_the_output_folder_and_follows_the_summary_option(offline: Path) -> None:
    assert common.parse_args(["--image", "i", "--train", "t", "--output", "file://runs"], "d").summary == (
        offline / "runs" / "summary.json"
    )
    assert common.parse_args(["--image", "i", "--train", "t", "--output", "o", "--summary", "s.json"], "d").summary == (
        offline / "s.json"
    )


def test_an_s3_output_is_refused_on_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        common.parse_args(["--image", "i", "--train", "t", "--output", "s3://bucket/run"], "d")
    assert exited.value.code == 2
    assert "s3://bucket/run: only local paths and file:// URIs work offline" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ([EPOCH_1, EPOCH_2], 2.0),
        # Early stopping put epoch 1's weights back: the saved model is epoch 1's, though epoch 2 ran.
        ([EPOCH_1, EPOCH_2, f"restored {EPOCH_1}"], 1.0),
        (['INFO optml.train.main: hyperparameters: {"epochs": 2}'], None),
    ],
    ids=["last-epoch", "restored-epoch", "no-epoch-line"],
)
def test_final_metrics_are_those_of_the_saved_model(lines: list[str], expected: float | None) -> None:
    assert common.final_metrics(lines).get("epoch") == expected


def test_the_metric_lines_are_kept_after_the_tail_has_moved_on() -> None:
    with common.capture_stdout(keep=2) as tee:
        print(f"algo-1-1  | {EPOCH_2}")
        print(f"algo-1-1  | restored {EPOCH_1}")
        for number in range(5):
            print(f"algo-1-1  | INFO something else {number}")
    assert list(tee.lines) == ["INFO something else 3", "INFO something else 4"]
    assert common.final_metrics(tee.metric_lines)["validation:accuracy"] == 0.93


@pytest.mark.parametrize(
    ("metrics", "expected"),
    [
        (
            {"epoch": 5, "train:rmse": 9.0, "validation:loss": 1.5, "validation:mse": 4.0, "validation:rmse": 2.0,
             "validation:mae": 1.25, "validation:r2": 0.875},
            ["validation metrics of the final model (epoch 5)", "  loss  1.5000", "  rmse  2.0000", "  mae   1.2500",
             "  r2    0.8750"],
        ),
        (
            {"train:loss": 0.5, "train:accuracy": 0.75, "train:specificity": 0.5},
            ["train metrics of the final model", "  loss      0.5000", "  accuracy  0.7500"],
        ),
        ({}, []),
    ],
    ids=["regression", "no-validation-channel", "no-metrics"],
)  # fmt: skip
def test_metrics_table(metrics: Mapping[str, float], expected: list[str]) -> None:
    assert common.metrics_table(metrics) == expected


def test_transform_summary_lists_the_output_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    summary = {"output_dir": str(tmp_path / "out"), "outputs": {"big.csv.out": 60000, "small.csv.out": 7}}
    assert sagemaker_transform_v2.summary_text(summary, "out/summary.json") == [
        "",
        "done",
        "  output   out",
        "  summary  out/summary.json",
        "",
        "output files",
        "  big.csv.out    60000 line(s)",
        "  small.csv.out  7 line(s)",
    ]
