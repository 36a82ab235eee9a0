"""SageMaker SDK local mode, v3 and v2, driving the real image exactly as a user's script does.

SDK v3 is `optml train --local` then `optml deploy --local` (what `make demo` runs); SDK v2 is its test driver,
tools/sagemaker_local_v2.py. Each SDK lives in its own venv (both are the `sagemaker` package), so each runs
as subprocesses with that venv's Python and writes its summary file; the assertions compare the endpoint's
predictions and the logged metrics with the model from the produced model.tar.gz, loaded in-process.
"""

from __future__ import annotations

import json
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from optml.container.artifact import load_model

pytestmark = [pytest.mark.localmode, pytest.mark.docker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "data" / "breast_cancer"
PYTHONS = {"v3": REPO / ".venv" / "bin" / "python", "v2": REPO / ".venv-sdk2" / "bin" / "python"}
HYPERPARAMETERS = {"epochs": "10", "learning_rate": "0.01", "hidden_units": "16"}


def commands(
    sdk: str, image: str, output: Path, predict_csv: Path, instances: int, serving_port: int
) -> Iterator[list[str]]:
    """The run's command lines, each made once the one before has run: the same data, hyperparameters, rows
    to predict and summary file for both SDKs."""
    python = str(PYTHONS[sdk])
    if sdk == "v2":
        yield [
            python, str(REPO / "tools" / "sagemaker_local_v2.py"), "--image", image,
            "--train", str(DATA / "train"), "--validation", str(DATA / "validation"), "--output", str(output),
            "--predict-csv", str(predict_csv), "--instance-count", str(instances),
            "--serving-port", str(serving_port),
            "--hyperparameters", *(f"{key}={value}" for key, value in HYPERPARAMETERS.items()),
        ]  # fmt: skip
        return
    optml = [python, "-m", "optml.cli"]
    yield [
        *optml, "train", "--local", "--image-uri", image, "--output-path", str(output),
        "--channel", f"train={DATA / 'train'}", "--channel", f"validation=file://{DATA / 'validation'}",
        "--instance-count", str(instances),
        *(item for key, value in HYPERPARAMETERS.items() for item in ("--hp", f"{key}={value}")),
    ]  # fmt: skip
    # Where training put the model, as `make demo` finds it: in the summary the training run wrote.
    model_data = json.loads((output / "summary.json").read_text())["model_data"]
    yield [
        *optml, "deploy", "--local", "--image-uri", image, "--summary", str(output / "summary.json"),
        "--model-data", model_data, "--predict-csv", str(predict_csv), "--serving-port", str(serving_port),
    ]  # fmt: skip


@pytest.mark.parametrize("instances", [1, 2], ids=["1-instance", "2-instances"])
@pytest.mark.parametrize("sdk", sorted(PYTHONS))
def test_train_deploy_predict(sdk: str, instances: int, image: str, tmp_path: Path, serving_port: int) -> None:
    if not PYTHONS[sdk].exists():
        pytest.fail(f"{PYTHONS[sdk]} is missing: run `make venv` (make test does)")
    rows = np.loadtxt(DATA / "validation" / "validation.csv", delimiter=",")[:5]
    predict_csv = tmp_path / "predict.csv"
    predict_csv.write_text("\n".join(",".join(repr(float(v)) for v in row[1:]) for row in rows) + "\n")

    summary_path = tmp_path / "out" / "summary.json"
    for command in commands(sdk, image, tmp_path / "out", predict_csv, instances, serving_port):
        result = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=REPO)
        assert result.returncode == 0, f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"
    report = json.loads(summary_path.read_text())
    assert report["sdk"].startswith(sdk[1:] + ".")
    assert f"summary  {summary_path}" in result.stdout

    model_data = Path(report["model_data"])
    assert model_data.name == "model.tar.gz" and model_data.is_file()
    with tarfile.open(model_data) as archive:
        assert sorted(archive.getnames()) == [
            "MODEL_CARD.md",
            "background.safetensors",
            "model.pt",
            "model.safetensors",
            "model_card.json",
            "optml-model.json",
        ]
        archive.extractall(tmp_path / "model", filter="data")
    model = load_model(tmp_path / "model")
    assert model.metadata.hyperparameters["epochs"] == 10
    assert model.metadata.metrics["validation:accuracy"] >= 0.9
    # The summary's metrics come from the saved model's epoch line of the log (6 significant digits): the
    # last, or the one whose weights early stopping restored.
    assert 1 <= report["metrics"]["epoch"] <= 10
    for name in ("validation:loss", "validation:accuracy", "validation:auc"):
        assert report["metrics"][name] == pytest.approx(model.metadata.metrics[name], rel=1e-5), name

    expected = [str(label) for label in model.predict(rows[:, 1:]).labels]
    assert [str(p).split(",")[0] for p in report["predictions"]] == expected
