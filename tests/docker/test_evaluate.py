"""The real image's `evaluate` on hand-made Processing-job trees mounted at /opt/ml: what a Processing job sees.

With processingjobconfig.json and no command the image evaluates; arguments name other directories; an input it
cannot use exits 1 with the reason in /opt/ml/output/message, SageMaker's ExitMessage.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from docker.models.containers import Container
from sklearn import metrics as reference

from optml.container.artifact import load_model
from tests.conftest import make_classification, write_csv
from tests.docker.conftest import wait_for_exit
from tests.docker.test_image import mount
from tests.unit.test_evaluate import BAD_INPUTS, processing_tree

pytestmark = pytest.mark.docker

RunContainer = Callable[..., Container]
TEST_ROWS = make_classification(120, 4, 2, seed=11)
FILES = {"evaluation.json", "model_quality.json", "roc_curve.png", "confusion_matrix.png"}


def test_a_processing_job_with_no_command_evaluates_the_model_tarball(
    trained_binary_model: Path, tmp_path: Path, run_container: RunContainer
) -> None:
    root = processing_tree(tmp_path / "ml", trained_binary_model, TEST_ROWS)
    (root / "config").mkdir()
    job = {"ProcessingJobName": "evaluate-1", "AppSpecification": {"ImageUri": "optml"}}
    (root / "config" / "processingjobconfig.json").write_text(json.dumps(job))
    status, logs = wait_for_exit(run_container(volumes=mount(root)))
    assert status == 0, logs

    output = root / "processing" / "evaluation"
    assert {path.name for path in output.iterdir()} == FILES
    metrics = json.loads((output / "evaluation.json").read_text())["channels"]["test"]["metrics"]
    truth = TEST_ROWS[:, 0].astype(int)
    predicted = np.asarray(load_model(trained_binary_model).predict(TEST_ROWS[:, 1:]).labels)
    assert metrics["confusion_matrix"] == reference.confusion_matrix(truth, predicted).tolist()
    statistics = json.loads((output / "model_quality.json").read_text())["binary_classification_metrics"]
    assert statistics["accuracy"]["value"] == pytest.approx(reference.accuracy_score(truth, predicted), abs=1e-12)
    assert not (root / "output" / "message").exists()


def test_arguments_name_other_directories_and_the_model_may_be_its_files(
    trained_binary_model: Path, tmp_path: Path, run_container: RunContainer
) -> None:
    root = tmp_path / "ml"
    shutil.copytree(trained_binary_model, root / "processing" / "model-files")
    write_csv(root / "processing" / "rows" / "test.csv", TEST_ROWS)
    arguments = ["--model", "/opt/ml/processing/model-files", "--test", "/opt/ml/processing/rows"]
    arguments += ["--output", "/opt/ml/processing/report"]
    status, logs = wait_for_exit(run_container("evaluate", *arguments, volumes=mount(root)))
    assert status == 0, logs
    assert {path.name for path in (root / "processing" / "report").iterdir()} == FILES
    assert not (root / "processing" / "evaluation").exists()
    evaluation = json.loads((root / "processing" / "report" / "evaluation.json").read_text())
    assert evaluation["channels"]["test"]["rows"] == len(TEST_ROWS)


@pytest.mark.parametrize("case", ["no model", "corrupt tarball", "a test set with other columns"])
def test_unusable_input_exits_1_with_the_reason_in_the_exit_message(
    case: str, trained_binary_model: Path, tmp_path: Path, run_container: RunContainer
) -> None:
    set_up, _, message = BAD_INPUTS[case]
    root = tmp_path / "ml"
    set_up(root, trained_binary_model)
    root.mkdir(exist_ok=True)
    status, logs = wait_for_exit(run_container("evaluate", volumes=mount(root)))
    assert status == 1, logs
    assert (root / "output" / "message").read_text() == message.format(root="/opt/ml")
    assert "Traceback" not in logs
    assert not (root / "processing" / "evaluation").exists()
