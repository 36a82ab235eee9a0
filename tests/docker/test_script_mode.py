"""Script mode in the real image: a user's train.py on hand-made /opt/ml trees laid out as SDK v2's PyTorch
estimator lays them out (its hyperparameters JSON-encoded), and each way it can go wrong."""

from __future__ import annotations

import io
import json
import tarfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from docker.models.containers import Container

from tests.docker.conftest import wait_for_exit
from tests.unit.test_script_main import make_job

pytestmark = pytest.mark.docker

RunContainer = Callable[..., Container]

ARGS = "--epochs 2 --lr 0.5 --optimizer adam --use-cuda False"  # SDK_V2's hyperparameters as the script sees them
TRAIN_PY = """
import argparse, json, os, sys
import numpy                      # from requirements.txt (already installed: PIP_NO_INDEX proves no download)
import optml_runtime as rt
from model import Net             # the user's own module beside train.py
parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int)
parser.add_argument("--lr", type=float)
parser.add_argument("--optimizer")
parser.add_argument("--use-cuda", type=lambda value: value.lower() == "true")
args = parser.parse_args()
for epoch in range(args.epochs):
    rt.log_metrics({"train:loss": 1.0 / (epoch + 1)}, epoch=epoch)
env = {name: os.environ[name] for name in ("SM_HPS", "SM_CHANNELS", "SM_CHANNEL_TRAIN", "SM_NETWORK_INTERFACE_NAME",
                                          "SM_USER_ARGS", "MASTER_ADDR", "MASTER_PORT", "PYTHONUNBUFFERED")}
with open(os.path.join(os.environ["SM_MODEL_DIR"], "result.json"), "w") as handle:
    json.dump({"args": vars(args), "net": Net.NAME, "cwd": os.getcwd(), "env": env, "python": sys.executable}, handle)
"""


def code_tarball(files: dict[str, str], extra: dict[str, bytes] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in [*((n, t.encode()) for n, t in files.items()), *(extra or {}).items()]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def mount(root: Path) -> dict[str, dict[str, str]]:
    return {str(root): {"bind": "/opt/ml", "mode": "rw"}}


def failure(root: Path) -> str:
    return (root / "output" / "failure").read_text()


def test_a_network_isolated_sdk_v2_job_runs_the_users_script(tmp_path: Path, run_container: RunContainer) -> None:
    """No command (as SDK v3 local mode starts it), the code only as the `code` channel's tarball, an s3://
    submit directory that must not be fetched, and a requirement satisfied without an index."""
    root = make_job(tmp_path / "ml", None)
    files = {"train.py": textwrap.dedent(TRAIN_PY), "model.py": "class Net:\n    NAME = 'user net'\n"}
    channel = root / "input" / "data" / "code"
    channel.mkdir(parents=True)
    (channel / "sourcedir.tar.gz").write_bytes(code_tarball({**files, "requirements.txt": "numpy\n"}))
    container = run_container(volumes=mount(root), environment={"PIP_NO_INDEX": "1"}, network_disabled=True)
    status, logs = wait_for_exit(container)
    assert status == 0, logs
    result = json.loads((root / "model" / "result.json").read_text())
    assert result["args"] == {"epochs": 2, "lr": 0.5, "optimizer": "adam", "use_cuda": False}
    assert (result["net"], result["cwd"], result["python"]) == ("user net", "/opt/ml/code", "/opt/venv/bin/python")
    # ethwe (as SDK v3 local mode writes) is not in this container, which has no network: one it has instead
    assert result["env"].pop("SM_NETWORK_INTERFACE_NAME") == "lo"
    assert result["env"] == {
        "SM_HPS": '{"epochs":2,"lr":0.5,"optimizer":"adam","use-cuda":false}',
        "SM_CHANNELS": '["train"]',
        "SM_CHANNEL_TRAIN": "/opt/ml/input/data/train",
        "SM_USER_ARGS": '["--epochs","2","--lr","0.5","--optimizer","adam","--use-cuda","False"]',
        "MASTER_ADDR": "algo-1",
        "MASTER_PORT": "7777",
        "PYTHONUNBUFFERED": "1",
    }
    assert "Requirement already satisfied: numpy" in logs
    assert "epoch=1 train:loss=0.5;" in logs
    assert not (root / "output" / "failure").exists()


def test_a_syntax_error_fails_with_it_in_the_failure_file(tmp_path: Path, run_container: RunContainer) -> None:
    root = make_job(tmp_path / "ml", "def main(:\n    pass\n")
    status, logs = wait_for_exit(run_container("train", volumes=mount(root)))
    assert status == 1, logs
    reason = failure(root)
    assert reason.startswith("SyntaxError: ")
    assert reason.endswith('\nExitCode 1\nCommand "/opt/venv/bin/python train.py ' + ARGS + '"')


def test_a_failing_requirement_is_named(tmp_path: Path, run_container: RunContainer) -> None:
    root = make_job(tmp_path / "ml", "print('never')\n", requirements__txt="no-such-pkg-optml==9\n")
    container = run_container("train", volumes=mount(root), environment={"PIP_NO_INDEX": "1"})
    status, logs = wait_for_exit(container)
    assert status == 1, logs
    assert failure(root).startswith(
        "/opt/ml/code/requirements.txt could not be installed (package no-such-pkg-optml==9)"
    )
    assert "never" not in logs


def test_a_missing_entry_point_lists_what_is_there(tmp_path: Path, run_container: RunContainer) -> None:
    root = make_job(tmp_path / "ml", None)
    (root / "code").mkdir()
    (root / "code" / "main.py").write_text("")
    status, _ = wait_for_exit(run_container("train", volumes=mount(root)))
    assert status == 1
    assert failure(root) == "entry point 'train.py' not found in /opt/ml/code (it holds: main.py)"


def test_a_tarball_reaching_outside_is_refused(tmp_path: Path, run_container: RunContainer) -> None:
    root = make_job(tmp_path / "ml", None)
    channel = root / "input" / "data" / "code"
    channel.mkdir(parents=True)
    tarball = code_tarball({"train.py": "print('never')\n"}, {"../../escape.py": b"x"})
    (channel / "sourcedir.tar.gz").write_bytes(tarball)
    status, _ = wait_for_exit(run_container("train", volumes=mount(root), network_disabled=True))
    assert status == 1
    assert "'../../escape.py' would be written outside" in failure(root)
    assert not (root / "code").exists() or list((root / "code").iterdir()) == []
    assert not (tmp_path / "escape.py").exists()


CHECKPOINT_ON_SIGTERM = """
import time
from pathlib import Path
import optml_runtime as rt
stop = rt.install_stop_handler()
step = 0
Path("/opt/ml/output/ready").write_text("yes")
while not stop:
    step += 1
    time.sleep(0.01)
rt.save_checkpoint({"step": step}, step=step)
print("checkpointed at step", step, flush=True)
"""


def test_a_stopped_script_checkpoints_into_opt_ml_checkpoints(tmp_path: Path, run_container: RunContainer) -> None:
    root = make_job(tmp_path / "ml", CHECKPOINT_ON_SIGTERM)
    (root / "output").mkdir()
    container = run_container("train", volumes=mount(root))
    deadline = time.monotonic() + 120
    while not (root / "output" / "ready").exists():
        container.reload()
        assert container.status != "exited", container.logs().decode()
        assert time.monotonic() < deadline, "the script never started"
        time.sleep(0.05)
    container.stop(timeout=60)  # SIGTERM to PID 1, SIGKILL 60 s later
    status, logs = wait_for_exit(container)
    assert status == 0, logs
    assert "SIGTERM passed on to 1 process(es) of the script" in logs
    checkpoints = [path.name for path in (root / "checkpoints").iterdir()]
    assert len(checkpoints) == 1 and checkpoints[0].startswith("checkpoint-algo-1-"), checkpoints
