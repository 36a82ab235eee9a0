"""examples/digits without Docker: its train.py as SageMaker starts it (SM_* variables, hyperparameters as
arguments, booleans as text), alone and as two DDP workers, and its inference.py's handlers on the saved model.

The example runs in subprocesses with examples/digits as the working directory, as the container runs it:
``from train import Net`` in inference.py must find the example's train.py, not the repository's ``train``
package that the test process has on its path.
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "digits"
TEST_ROWS = np.loadtxt(EXAMPLE / "data" / "test" / "digits_test.csv", delimiter=",", dtype=np.int64)
# torch 2.13 deprecates TorchScript; model.pt is still what serving stacks load without Python code.
pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.load` is deprecated:DeprecationWarning")
EPOCH_LINE = re.compile(r"^epoch=(\d+) train_loss=([\d.]+) test_loss=([\d.]+) test_accuracy=([\d.]+);$", re.M)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sagemaker_env(model_dir: Path, hosts: list[str], current_host: str, **extra: str) -> dict[str, str]:
    """The variables SageMaker's training toolkit gives the script (those it reads), and no others of ours."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(("SM_", "PYTHONPATH"))}
    env.update(
        SM_MODEL_DIR=str(model_dir),
        SM_CHANNEL_TRAINING=str(EXAMPLE / "data" / "train"),
        SM_CHANNEL_TESTING=str(EXAMPLE / "data" / "test"),
        SM_HOSTS=json.dumps(hosts),
        SM_CURRENT_HOST=current_host,
        OMP_NUM_THREADS="1",
        **extra,
    )
    return env


def run_train(env: dict[str, str], *args: str, launcher: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, *launcher, "train.py", *args]
    return subprocess.run(command, cwd=EXAMPLE, env=env, capture_output=True, text=True, timeout=300)


def epochs_of(output: str) -> list[tuple[int, float]]:
    return [(int(m.group(1)), float(m.group(4))) for m in EPOCH_LINE.finditer(output)]


def predict_with_handlers(model_dir: Path, content_type: str, body: bytes) -> list[int]:
    """inference.py's model_fn, input_fn and predict_fn, called as the model server calls them."""
    script = (
        "import sys, inference\n"
        "model = inference.model_fn(sys.argv[1])\n"
        "data = inference.input_fn(sys.stdin.buffer.read(), sys.argv[2])\n"
        "print(inference.predict_fn(data, model).tolist())\n"
    )
    env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", script, str(model_dir), content_type],
        cwd=EXAMPLE,
        env=env,
        input=body,
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr.decode()
    predictions: list[int] = json.loads(result.stdout.decode().strip().splitlines()[-1])
    return predictions


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One epoch on one host, the boolean hyperparameter as SDK v2 renders it."""
    model_dir = tmp_path_factory.mktemp("model")
    env = sagemaker_env(model_dir, ["algo-1"], "algo-1")
    result = run_train(env, "--batch-size", "64", "--epochs", "1", "--lr", "0.01", "--use-cuda", "False")
    assert result.returncode == 0, result.stderr
    return model_dir, result.stdout


def test_train_saves_the_weights_and_a_torchscript_model_and_prints_its_accuracy(trained: tuple[Path, str]) -> None:
    model_dir, output = trained
    assert sorted(p.name for p in model_dir.iterdir()) == ["model.pt", "model.pth"]
    [(epoch, accuracy)] = epochs_of(output)
    assert epoch == 1 and accuracy >= 0.7
    correct = round(accuracy * len(TEST_ROWS))
    assert f"Accuracy: {correct}/{len(TEST_ROWS)} (" in output

    # model.pt loads without the example's code and agrees with the accuracy train.py printed.
    scripted = torch.jit.load(str(model_dir / "model.pt"))
    images = torch.tensor(TEST_ROWS[:, 1:], dtype=torch.float32).reshape(-1, 1, 8, 8) / 16
    with torch.no_grad():
        predicted = scripted(images).argmax(dim=1).numpy()
    assert (predicted == TEST_ROWS[:, 0]).mean() == pytest.approx(accuracy, abs=1e-4)


@pytest.mark.parametrize("content_type", ["application/json", "application/x-npy", "text/csv"])
def test_inference_handlers_predict_what_the_torchscript_model_predicts(
    trained: tuple[Path, str], content_type: str
) -> None:
    model_dir, _ = trained
    rows = TEST_ROWS[:6, 1:]
    if content_type == "application/json":
        body = json.dumps(rows.tolist()).encode()
    elif content_type == "application/x-npy":
        buffer = io.BytesIO()
        np.save(buffer, rows.astype(np.float32))
        body = buffer.getvalue()
    else:
        body = "\n".join(",".join(map(str, row)) for row in rows).encode()
    scripted = torch.jit.load(str(model_dir / "model.pt"))
    with torch.no_grad():
        expected = scripted(torch.tensor(rows, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16).argmax(dim=1)
    assert predict_with_handlers(model_dir, content_type, body) == expected.tolist()


def test_inference_refuses_images_that_are_not_8x8(trained: tuple[Path, str]) -> None:
    with pytest.raises(AssertionError, match="expected images of 64 pixels"):
        predict_with_handlers(trained[0], "application/json", b"[[1, 2, 3]]")


def test_a_boolean_that_is_not_one_is_refused(tmp_path: Path) -> None:
    result = run_train(sagemaker_env(tmp_path, ["algo-1"], "algo-1"), "--epochs", "1", "--use-cuda", "maybe")
    assert result.returncode == 2
    assert "argument --use-cuda: expected a boolean (True/False), got 'maybe'" in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["torchrun", "one-process-per-host"])
def test_two_workers_train_one_model_over_gloo(tmp_path: Path, launcher: str) -> None:
    """Under torchrun (the torch_distributed distribution) and as the toolkit starts one process per host
    without a launcher: rank 0 alone logs and saves, and the rank it learned matches the group's."""
    port = str(free_port())
    hosts = ["algo-1", "algo-2"]
    args = ("--epochs", "2", "--use-cuda", "false")
    if launcher == "torchrun":
        env = sagemaker_env(tmp_path / "model", hosts, "algo-1")
        torchrun = ("-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2")
        results = [run_train(env, *args, launcher=(*torchrun, "--master_addr", "127.0.0.1", "--master_port", port))]
    else:
        procs = []
        for host in hosts:
            env = sagemaker_env(tmp_path / host, hosts, host, MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
            command = [sys.executable, "train.py", *args]
            procs.append(subprocess.Popen(command, cwd=EXAMPLE, env=env, stdout=subprocess.PIPE, text=True))
        results = []
        for proc in procs:
            stdout, _ = proc.communicate(timeout=300)
            results.append(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, ""))
    assert [r.returncode for r in results] == [0] * len(results), [r.stderr for r in results]
    output = "".join(r.stdout for r in results)
    assert output.count("distributed training: backend gloo, rank 0 of 2") == 1
    assert output.count("distributed training: backend gloo, rank 1 of 2") == 1
    assert output.count("(719 on this worker)") == 2  # 1437 images, split in two (one padded)
    assert [epoch for epoch, _ in epochs_of(output)] == [1, 2]
    saved = tmp_path / ("model" if launcher == "torchrun" else "algo-1")
    assert sorted(p.name for p in saved.iterdir()) == ["model.pt", "model.pth"]
    if launcher != "torchrun":
        assert not (tmp_path / "algo-2").exists()
