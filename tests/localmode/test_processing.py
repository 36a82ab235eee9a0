"""The image's `evaluate` as a Processing job through SageMaker SDK v2 local mode's Processor, against the real image.

Local mode writes /opt/ml/config/processingjobconfig.json as SageMaker does, mounts each ProcessingInput at its
destination and copies /opt/ml/processing/evaluation back: a job without container arguments must evaluate
(not serve), and arguments must move the inputs. The files must hold the model's scores of the test set,
computed here from the same model.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as reference

from optml.container.artifact import load_model
from tests.conftest import make_classification, write_csv
from tests.unit.test_multimodel import tar_model

pytestmark = [pytest.mark.localmode, pytest.mark.docker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
PYTHON_SDK2 = REPO / ".venv-sdk2" / "bin" / "python"
TEST_ROWS = make_classification(150, 4, 2, seed=7)
EXPECTED_FILES = [
    "evaluation/confusion_matrix.png",
    "evaluation/evaluation.json",
    "evaluation/model_quality.json",
    "evaluation/roc_curve.png",
]
# SageMaker's model-quality statistics for a binary classifier (ModelMetrics' ModelStatistics).
SCALAR_STATISTICS = {
    "accuracy", "precision", "recall", "f0_5", "f1", "f2", "auc", "true_positive_rate", "true_negative_rate",
    "false_positive_rate", "false_negative_rate", "accuracy_best_constant_classifier",
    "precision_best_constant_classifier", "recall_best_constant_classifier", "f0_5_best_constant_classifier",
    "f1_best_constant_classifier", "f2_best_constant_classifier",
}  # fmt: skip
CURVES = {"receiver_operating_characteristic_curve", "precision_recall_curve"}


def run_processing(image: str, model: Path, test: Path, output: Path, *extra: str) -> tuple[int, dict, str]:
    if not PYTHON_SDK2.exists():
        pytest.fail(f"{PYTHON_SDK2} is missing: run `make venv` (make test does)")
    command = [str(PYTHON_SDK2), str(REPO / "tools" / "sagemaker_processing_v2.py"), "--image", image]
    command += ["--model", str(model), "--test", str(test), "--output", str(output), "--timeout", "600", *extra]
    result = subprocess.run(command, capture_output=True, text=True, timeout=700, cwd=REPO)
    logs = f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"
    return result.returncode, json.loads((output / "summary.json").read_text()), logs


@pytest.fixture
def inputs(trained_binary_model: Path, tmp_path: Path) -> tuple[Path, Path]:
    """The model as a training job leaves it (model.tar.gz in a directory of its own), and a test set."""
    model = tar_model(trained_binary_model, tmp_path / "model" / "model.tar.gz").parent
    return model, write_csv(tmp_path / "test" / "part-0.csv", TEST_ROWS).parent


def test_a_processing_job_without_arguments_evaluates_the_model(
    image: str, trained_binary_model: Path, inputs: tuple[Path, Path], tmp_path: Path
) -> None:
    output = tmp_path / "out"
    status, summary, logs = run_processing(image, *inputs, output)
    assert status == 0, logs
    assert (summary["arguments"], summary["files"]) == ([], EXPECTED_FILES)
    evaluation = json.loads((output / "evaluation/evaluation.json").read_text())
    assert evaluation["task"] == "binary_classification" and evaluation["history"] == []
    channel = evaluation["channels"]["test"]
    assert channel["rows"] == len(TEST_ROWS)

    predictions = load_model(trained_binary_model).predict(TEST_ROWS[:, 1:])
    truth, predicted = TEST_ROWS[:, 0].astype(int), np.asarray(predictions.labels)
    assert predictions.scores is not None
    assert channel["metrics"]["accuracy"] == pytest.approx(reference.accuracy_score(truth, predicted), abs=1e-12)
    assert channel["metrics"]["confusion_matrix"] == reference.confusion_matrix(truth, predicted).tolist()
    assert channel["metrics"]["auc"] == pytest.approx(reference.roc_auc_score(truth, predictions.scores[:, 1]))

    quality = json.loads((output / "evaluation/model_quality.json").read_text())
    assert list(quality) == ["binary_classification_metrics"]
    statistics = quality["binary_classification_metrics"]
    assert set(statistics) == SCALAR_STATISTICS | CURVES | {"confusion_matrix"}
    for name in SCALAR_STATISTICS:
        assert set(statistics[name]) == {"value", "standard_deviation"}, name
        assert math.isfinite(statistics[name]["value"]) and statistics[name]["standard_deviation"] >= 0, name
    for name in ("accuracy", "precision", "recall", "f1", "auc"):
        assert statistics[name]["value"] == channel["metrics"][name], name
    assert statistics["f2"]["value"] == pytest.approx(reference.fbeta_score(truth, predicted, beta=2), abs=1e-12)
    assert 0 < statistics["accuracy"]["standard_deviation"] < 0.1
    for plot in ("roc_curve.png", "confusion_matrix.png"):
        assert (output / "evaluation" / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", plot


def test_container_arguments_move_the_inputs_and_a_model_directory_works(
    image: str, trained_binary_model: Path, inputs: tuple[Path, Path], tmp_path: Path
) -> None:
    """ContainerArguments name other input paths; the model's files, not its tarball, are the input; the scores
    are the same as those the conventional job computes from the same rows."""
    model_files = shutil.copytree(trained_binary_model, tmp_path / "model-files")
    destinations = ["--model-destination", "/opt/ml/processing/m", "--test-destination", "/opt/ml/processing/t"]
    arguments = ["evaluate", "--model", "/opt/ml/processing/m", "--test", "/opt/ml/processing/t"]
    output = tmp_path / "out"
    status, summary, logs = run_processing(image, model_files, inputs[1], output, *destinations, "--", *arguments)
    assert status == 0, logs
    assert (summary["arguments"], summary["files"]) == (arguments, EXPECTED_FILES)
    metrics = json.loads((output / "evaluation/evaluation.json").read_text())["channels"]["test"]["metrics"]
    predicted = np.asarray(load_model(trained_binary_model).predict(TEST_ROWS[:, 1:]).labels)
    assert metrics["confusion_matrix"] == reference.confusion_matrix(TEST_ROWS[:, 0].astype(int), predicted).tolist()


def test_a_test_set_with_other_columns_fails_the_job_with_the_reason_in_its_log(
    image: str, inputs: tuple[Path, Path], tmp_path: Path
) -> None:
    test = write_csv(tmp_path / "wide" / "part-0.csv", make_classification(10, 5, 2, seed=3)).parent
    status, summary, logs = run_processing(image, inputs[0], test, tmp_path / "out")
    assert status == 1, logs
    assert summary["error"] == "processing failed (container exit code 1)"
    reason = (
        "evaluation failed: /opt/ml/processing/input/test/part-0.csv has 5 features but the model's training data"
        " has 4; every file needs the same columns in the same order"
    )
    assert any(line.endswith(reason) for line in summary["log_tail"]), summary["log_tail"]
    assert [path.name for path in (tmp_path / "out").rglob("*") if path.is_file()] == ["summary.json"]
