"""Script mode through SageMaker SDK local mode, v2 and v3, with the user's own code: examples/digits.

examples/digits is written as AWS's PyTorch examples are — argparse hyperparameters with a boolean, SM_*
paths, DDP over gloo, and an inference.py that does ``from train import Net`` — so each run here is also the
proof that such a directory trains and serves in the image. SDK v2 (tools/sagemaker_script_v2.py, in
.venv-sdk2) trains with the PyTorch estimator on two containers through torchrun and deploys with
PyTorchModel; SDK v3 (tools/sagemaker_script_v3.py) trains with ModelTrainer + SourceCode, which runs
SageMaker's own sm_train.sh in the image, and serves the model with its code packed as code/. The predictions
must be those of the model.pt in the model.tar.gz, loaded here.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tarfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.localmode, pytest.mark.docker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "digits"
PYTHONS = {"v2": REPO / ".venv-sdk2" / "bin" / "python", "v3": REPO / ".venv" / "bin" / "python"}
DRIVERS = {sdk: REPO / "tools" / f"sagemaker_script_{sdk}.py" for sdk in PYTHONS}
PREDICT_ROWS = 5
TEST_ROWS = np.loadtxt(EXAMPLE / "data" / "test" / "digits_test.csv", delimiter=",", dtype=np.int64)


def run_driver(sdk: str, image: str, output: Path, *options: str) -> tuple[int, dict[str, Any], str]:
    """The driver's exit code, its summary file and its whole output (the containers' log is on stderr)."""
    if not PYTHONS[sdk].exists():
        pytest.fail(f"{PYTHONS[sdk]} is missing: run `make venv` (make test does)")
    command = [str(PYTHONS[sdk]), str(DRIVERS[sdk]), "--image", image, "--output", str(output), "--timeout", "840"]
    result = subprocess.run([*command, *options], capture_output=True, text=True, timeout=900, cwd=REPO)
    return result.returncode, json.loads((output / "summary.json").read_text()), result.stderr + result.stdout


def members(model_data: Path) -> list[str]:
    with tarfile.open(model_data) as archive:
        return sorted(name.removeprefix("./") for name in archive.getnames() if name not in (".", "./", "/"))


def torchscript_predictions(model_data: Path, tmp_path: Path) -> list[int]:
    """What the model.pt that train.py saved predicts for the images the driver sent."""
    with tarfile.open(model_data) as archive:
        archive.extract("model.pt", tmp_path, filter="data")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"`torch\.jit\.load` is deprecated", DeprecationWarning)
        model = torch.jit.load(str(tmp_path / "model.pt"))
    images = torch.tensor(TEST_ROWS[:PREDICT_ROWS, 1:], dtype=torch.float32).reshape(-1, 1, 8, 8) / 16
    with torch.no_grad():
        predicted: list[int] = model(images).argmax(dim=1).tolist()
    return predicted


def assert_served_like_torchscript(report: dict[str, Any], model_data: Path, tmp_path: Path) -> None:
    expected = torchscript_predictions(model_data, tmp_path)
    assert report["labels"] == TEST_ROWS[:PREDICT_ROWS, 0].tolist()
    assert report["predictions"] == {"application/json": expected, "application/x-npy": expected}
    assert sum(p == label for p, label in zip(expected, report["labels"], strict=True)) >= PREDICT_ROWS - 1


def test_sdk_v2_trains_on_two_containers_with_ddp_then_deploys_inference_py(
    image: str, tmp_path: Path, serving_port: int
) -> None:
    status, report, logs = run_driver(
        "v2", image, tmp_path / "out", "--instance-count", "2", "--serving-port", str(serving_port),
        "--hyperparameters", "epochs=3", "use-cuda=false",
    )  # fmt: skip
    assert status == 0, logs[-6000:]
    assert report["sdk"].startswith("2.")
    assert report["hyperparameters"] == {"epochs": 3, "batch-size": 64, "lr": 0.01, "use-cuda": False}
    # Both containers joined one process group through torchrun; rank 0 alone logged the epochs.
    assert "distributed training: backend gloo, rank 1 of 2" in logs, logs[-6000:]
    assert len(re.findall(r"^.*\bepoch=3 ", logs, re.M)) == 1, logs[-6000:]
    training_log = "\n".join(report["training_log_tail"])
    assert "saved model.pth and model.pt to /opt/ml/model" in training_log
    assert report["metrics"]["epoch"] == 3 and report["metrics"]["test_accuracy"] >= 0.85

    model_data = Path(report["model_data"])
    names = members(model_data)
    # SDK v2 repacks the local model.tar.gz in place with the source directory as code/ before deploying.
    assert {"model.pt", "model.pth", "code/train.py", "code/inference.py", "code/requirements.txt"} <= set(names)
    assert_served_like_torchscript(report, model_data, tmp_path)


def test_sdk_v2_two_containers_both_join_the_process_group(image: str, tmp_path: Path) -> None:
    """The training log of a 2-container job holds both ranks' lines (each container's output is prefixed)."""
    status, report, logs = run_driver(
        "v2", image, tmp_path / "out", "--instance-count", "2", "--train-only", "--hyperparameters", "epochs=1"
    )
    assert status == 0, logs[-6000:]
    ranks = sorted(set(re.findall(r"distributed training: backend gloo, rank (\d) of 2", logs)))
    assert ranks == ["0", "1"], logs[-6000:]
    assert sorted(set(re.findall(r"\((\d+) on this worker\)", logs))) == ["719"]
    assert members(Path(report["model_data"])) == ["model.pt", "model.pth"]


def test_sdk_v3_model_trainer_with_source_code_trains_then_the_code_in_the_model_serves(
    image: str, tmp_path: Path, serving_port: int
) -> None:
    status, report, logs = run_driver(
        "v3", image, tmp_path / "out", "--serving-port", str(serving_port), "--hyperparameters", "epochs=3"
    )
    assert status == 0, logs[-6000:]
    assert report["sdk"].startswith("3.")
    assert report["metrics"]["epoch"] == 3 and report["metrics"]["test_accuracy"] >= 0.85

    model_data = Path(report["model_data"])
    assert model_data.name == "model.tar.gz" and model_data.parent.name == "compressed_artifacts"
    assert members(model_data) == ["model.pt", "model.pth"]
    serving = Path(report["serving_model_data"])
    assert members(serving) == sorted(
        ["model.pt", "model.pth"]
        + [f"code/{p.relative_to(EXAMPLE)}" for p in EXAMPLE.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    )
    assert_served_like_torchscript(report, model_data, tmp_path)


def broken_copy(tmp_path: Path, train_py: str) -> Path:
    source = tmp_path / "src"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("__pycache__", "data"))
    (source / "train.py").write_text(train_py)
    return source


def test_a_syntax_error_in_train_py_fails_the_job_naming_it(image: str, tmp_path: Path) -> None:
    source = broken_copy(tmp_path, "import torch\n\ndef main(:\n    pass\n")
    status, report, logs = run_driver(
        "v2", image, tmp_path / "out", "--source-dir", str(source), "--instance-count", "1", "--train-only"
    )
    assert status == 1, logs[-6000:]
    assert "SyntaxError" in report["error"], report
    assert "model_data" not in report
    # v2 local mode packs /opt/ml/model even for a failed job: the archive must hold nothing.
    assert [members(archive) for archive in (tmp_path / "out").rglob("model.tar.gz")] in ([], [[]])


def test_a_missing_entry_point_fails_the_job_naming_it(image: str, tmp_path: Path) -> None:
    """sagemaker_program names a script that the code directory lacks. The PyTorch estimator refuses that
    before any container starts, so this is a plain Estimator sending the keys itself, as a tuner does:
    sagemaker_program plain, sagemaker_submit_directory JSON-encoded (v2 local mode then mounts it)."""
    command = [
        str(PYTHONS["v2"]), str(REPO / "tools" / "sagemaker_local_v2.py"), "--image", image,
        "--train", str(EXAMPLE / "data" / "train"), "--output", str(tmp_path / "out"), "--timeout", "600",
        "--hyperparameters", "sagemaker_program=missing.py", "epochs=1",
        f"sagemaker_submit_directory={json.dumps(f'file://{EXAMPLE}')}",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=700, cwd=REPO)
    assert result.returncode == 1, result.stderr[-4000:]
    report = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert "missing.py" in report["error"] and "train.py" in report["error"], report  # and what there is
    assert "model_data" not in report
