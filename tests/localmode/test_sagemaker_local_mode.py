"""SageMaker SDK local mode, v3 and v2, driving the real image exactly as a user's script does.

Each SDK lives in its own venv (both are the `sagemaker` package), so each driver runs as a subprocess
with that venv's Python and writes its summary file; the assertions compare the endpoint's predictions
and the logged metrics with the model from the produced model.tar.gz, loaded in-process.
"""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest

from optml.container.artifact import load_model

pytestmark = [pytest.mark.localmode, pytest.mark.docker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "data" / "breast_cancer"
DRIVERS = {
    "v3": (REPO / ".venv" / "bin" / "python", REPO / "tools" / "sagemaker_local_v3.py", "3."),
    "v2": (REPO / ".venv-sdk2" / "bin" / "python", REPO / "tools" / "sagemaker_local_v2.py", "2."),
}


@pytest.mark.parametrize("instances", [1, 2], ids=["1-instance", "2-instances"])
@pytest.mark.parametrize("sdk", sorted(DRIVERS))
def test_train_deploy_predict(sdk: str, instances: int, image: str, tmp_path: Path, serving_port: int) -> None:
    python, driver, version_prefix = DRIVERS[sdk]
    if not python.exists():
        pytest.fail(f"{python} is missing: run `make venv` (make test does)")
    rows = np.loadtxt(DATA / "validation" / "validation.csv", delimiter=",")[:5]
    predict_csv = tmp_path / "predict.csv"
    predict_csv.write_text("\n".join(",".join(repr(float(v)) for v in row[1:]) for row in rows) + "\n")

    summary_path = tmp_path / "out" / "summary.json"
    result = subprocess.run(
        [
            str(python), str(driver), "--image", image,
            "--train", str(DATA / "train"), "--validation", str(DATA / "validation"),
            "--output", str(tmp_path / "out"), "--predict-csv", str(predict_csv), "--instance-count", str(instances),
            "--serving-port", str(serving_port),
            "--hyperparameters", "epochs=10", "learning_rate=0.01", "hidden_units=16",
        ],
        capture_output=True, text=True, timeout=900, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"
    report = json.loads(summary_path.read_text())
    assert report["sdk"].startswith(version_prefix)
    assert f"summary  {summary_path}" in result.stdout

    model_data = Path(report["model_data"])
    assert model_data.name == "model.tar.gz" and model_data.is_file()
    with tarfile.open(model_data) as archive:
        assert sorted(archive.getnames()) == [
            "MODEL_CARD.md",
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
