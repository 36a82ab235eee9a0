"""Script mode through the image's entry point (`train`) on a hand-made /opt/ml tree, as SDK v2's PyTorch
estimator lays it out: the user's train.py runs with its arguments, and every way it can fail ends with a
clear failure file and the right exit code."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

# hyperparameters.json as SDK v2's PyTorch(entry_point="train.py", source_dir=...) writes it
SDK_V2 = {
    "epochs": "2",
    "lr": "0.5",
    "use-cuda": "false",
    "optimizer": '"adam"',
    "sagemaker_program": '"train.py"',
    "sagemaker_submit_directory": '"s3://sagemaker-us-west-2-111122223333/job-1/source/sourcedir.tar.gz"',
    "sagemaker_region": '"us-west-2"',
    "sagemaker_container_log_level": "20",
    "sagemaker_job_name": '"job-1"',
}

ARGPARSE_SCRIPT = """
import argparse, json, os
parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int)
parser.add_argument("--lr", type=float)
parser.add_argument("--optimizer")
parser.add_argument("--use-cuda", type=lambda value: value.lower() == "true")
parser.add_argument("--model-dir", default=os.environ["SM_MODEL_DIR"])
args = parser.parse_args()
with open(os.path.join(args.model_dir, "args.json"), "w") as handle:
    json.dump({**vars(args), "cwd": os.getcwd(), "hps": json.loads(os.environ["SM_HPS"])}, handle)
"""


def make_job(root: Path, script: str | None, hyperparameters: dict[str, str] | None = None, **files: str) -> Path:
    """/opt/ml as SDK v2 lays it out, with channel `train`; the code in /opt/ml/code (where v2 local mode mounts
    the source dir) as train.py plus `files` (`requirements__txt` for requirements.txt), or none at all."""
    config = root / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps(hyperparameters or SDK_V2))
    (config / "resourceconfig.json").write_text(
        json.dumps({"current_host": "algo-1", "hosts": ["algo-1"], "network_interface_name": "ethwe"})
    )
    (config / "inputdataconfig.json").write_text(json.dumps({"train": {"TrainingInputMode": "File"}}))
    (root / "input" / "data" / "train").mkdir(parents=True)
    (root / "model").mkdir()
    if script is not None:
        code = root / "code"
        code.mkdir()
        (code / "train.py").write_text(textwrap.dedent(script))
        for name, text in files.items():
            (code / name.replace("__", ".")).write_text(textwrap.dedent(text))
    return root


def start(root: Path, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "optml.container.entrypoint", "train"],
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), "OPTML_ROOT": str(root), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def train(root: Path, **env: str) -> tuple[int, str]:
    process = start(root, **env)
    stdout, stderr = process.communicate(timeout=120)
    return process.returncode, stdout + stderr


def failure(root: Path) -> str:
    return (root / "output" / "failure").read_text()


def test_an_sdk_v2_job_runs_the_users_script_with_its_arguments(tmp_path: Path) -> None:
    root = make_job(tmp_path / "ml", ARGPARSE_SCRIPT)
    code, logs = train(root)
    assert code == 0, logs
    args = json.loads((root / "model" / "args.json").read_text())
    assert args == {
        "epochs": 2,
        "lr": 0.5,
        "optimizer": "adam",
        "use_cuda": False,
        "model_dir": str(root / "model"),
        "cwd": str(root / "code"),
        "hps": {"epochs": 2, "lr": 0.5, "optimizer": "adam", "use-cuda": False},
    }
    assert f"running {sys.executable} train.py --epochs 2 --lr 0.5 --optimizer adam --use-cuda False" in logs
    assert not (root / "output" / "failure").exists()


def test_an_exception_is_the_first_line_of_the_failure_file(tmp_path: Path) -> None:
    root = make_job(tmp_path / "ml", "def main():\n    raise ValueError('lr must be positive')\nmain()\n")
    code, logs = train(root)
    assert code == 1
    assert failure(root) == (
        "ValueError: lr must be positive\nExitCode 1\n"
        f'Command "{sys.executable} train.py --epochs 2 --lr 0.5 --optimizer adam --use-cuda False"'
    )
    assert "Traceback (most recent call last)" in logs  # the whole traceback is still in the log


def test_the_scripts_exit_code_is_the_jobs(tmp_path: Path) -> None:
    root = make_job(tmp_path / "ml", "import sys\nsys.exit(7)\n")
    code, _ = train(root)
    assert code == 7
    assert failure(root).startswith("train.py exited with code 7\nExitCode 7\n")


def test_a_syntax_error_is_named(tmp_path: Path) -> None:
    root = make_job(tmp_path / "ml", "def main(:\n    pass\n")
    code, _ = train(root)
    assert code == 1
    assert failure(root).startswith("SyntaxError: ")


def test_a_failure_file_the_script_wrote_is_kept(tmp_path: Path) -> None:
    script = """
    import os, sys
    open(os.path.join(os.environ["SM_OUTPUT_DIR"], "failure"), "w").write("my reason: no label column")
    raise SystemExit(2)
    """
    root = make_job(tmp_path / "ml", script)
    (root / "output").mkdir()
    code, _ = train(root)
    assert (code, failure(root)) == (2, "my reason: no label column")


def test_a_missing_entry_point_fails_before_anything_runs(tmp_path: Path) -> None:
    root = make_job(tmp_path / "ml", "", {**SDK_V2, "sagemaker_program": '"trian.py"'})
    code, _ = train(root)
    assert code == 1
    assert failure(root) == f"entry point 'trian.py' not found in {root / 'code'} (it holds: train.py)"


def test_requirements_are_installed_first_and_a_failing_one_is_named(tmp_path: Path) -> None:
    root = make_job(tmp_path / "ml", "open('ran', 'w').write('yes')\n", requirements__txt="not-a-real-package-optml\n")
    code, _ = train(root, PIP_NO_INDEX="1")
    assert code == 1
    assert failure(root).startswith(
        f"{root / 'code' / 'requirements.txt'} could not be installed (package not-a-real-package-optml)"
    )
    assert not (root / "code" / "ran").exists()


@pytest.mark.slow
def test_the_built_in_trainer_runs_when_no_program_is_named(tmp_path: Path) -> None:
    root = make_job(tmp_path / "ml", "raise SystemExit('not run')\n", {"epochs": "2"})
    code, logs = train(root)
    assert code == 1
    assert "train.py" not in failure(root)  # the built-in trainer's own complaint: no training data
    assert "script mode" not in logs


CHECKPOINT_ON_SIGTERM = """
import time
from pathlib import Path
import optml_runtime as rt
stop = rt.install_stop_handler()
restored = rt.load_latest_checkpoint()
step = restored.step if restored else 0
Path("ready").write_text("yes")
while not stop:
    step += 1
    time.sleep(0.01)
rt.save_checkpoint({"step": step}, step=step)
"""


@pytest.mark.slow
def test_a_script_checkpointing_on_sigterm_leaves_its_checkpoint(tmp_path: Path) -> None:
    root = make_job(tmp_path / "ml", CHECKPOINT_ON_SIGTERM)
    process = start(root)
    deadline = time.monotonic() + 60
    while not (root / "code" / "ready").exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the script never started"
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stdout + stderr
    checkpoints = sorted(path.name for path in (root / "checkpoints").iterdir())
    assert len(checkpoints) == 1 and checkpoints[0].startswith("checkpoint-algo-1-"), checkpoints
    assert "SIGTERM passed on to 1 process(es)" in stderr


DDP_SCRIPT = """
import os, time
from pathlib import Path
import torch, torch.distributed as dist
import optml_runtime as rt
stop = rt.install_stop_handler()
dist.init_process_group("gloo")
total = torch.tensor([float(dist.get_rank() + 1)])
dist.all_reduce(total)
rank = dist.get_rank()
Path(f"rank{rank}.sum").write_text(f"{total.item():g} of {dist.get_world_size()}")
if os.environ.get("WAIT_FOR_STOP"):
    while not stop:
        time.sleep(0.02)
    rt.save_checkpoint({"rank": rank}, step=1)
"""


@pytest.mark.slow
def test_torch_distributed_runs_torchrun_and_a_stop_reaches_its_workers(tmp_path: Path) -> None:
    hyperparameters = {
        "sagemaker_program": '"train.py"',
        "sagemaker_torch_distributed_enabled": "true",
        "sagemaker_mpi_num_of_processes_per_host": "2",
    }
    root = make_job(tmp_path / "ml", DDP_SCRIPT, hyperparameters)
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"  # torchrun, as on the image's PATH
    process = start(root, PATH=path, WAIT_FOR_STOP="1")
    sums = [root / "code" / f"rank{rank}.sum" for rank in (0, 1)]
    deadline = time.monotonic() + 120
    while not all(file.exists() for file in sums):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the workers never met"
        time.sleep(0.05)
    assert [file.read_text() for file in sums] == ["3 of 2", "3 of 2"]
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=90)
    assert process.returncode == 0, stdout + stderr
    assert "torchrun --nnodes 1 --nproc_per_node 2 --master_addr 127.0.0.1 --master_port 7777" in stdout + stderr
    assert sorted(file.name for file in (root / "checkpoints").iterdir()) == [
        "checkpoint-algo-1-rank0-000000001.pt",
        "checkpoint-algo-1-rank1-000000001.pt",
    ]


@pytest.mark.slow  # name lookups of an unknown host take seconds
def test_a_peer_that_never_comes_up_is_named(tmp_path: Path) -> None:
    hyperparameters = {"sagemaker_program": "train.py", "sagemaker_torch_distributed_enabled": "true"}
    root = make_job(tmp_path / "ml", "raise SystemExit('never run')\n", hyperparameters)
    (root / "input" / "config" / "resourceconfig.json").write_text(
        json.dumps({"current_host": "localhost", "hosts": ["localhost", "zz-peer.invalid"]})
    )
    code, _ = train(root, OPTML_PEER_WAIT_SECONDS="1")
    assert code == 1
    assert failure(root) == (
        "host 'zz-peer.invalid' from resourceconfig.json never became reachable by name within 1 s;"
        " check that every instance of the job started"
    )
