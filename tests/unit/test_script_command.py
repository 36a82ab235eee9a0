"""How the entry point runs: python, python -m, sh, an executable, or torchrun for a distributed job."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from optml.container.errors import UserError
from optml.train.script.command import build_command
from optml.train.script.environment import Host
from optml.train.script.job import script_job

ARGS = ["--epochs", "3"]


def host(hosts: list[str], current: str, gpus: int = 0) -> Host:
    return Host({"current_host": current, "hosts": hosts}, "eth0", num_gpus=gpus, num_cpus=4)


def command(code: Path, hyperparameters: dict[str, str], single: Host | None = None) -> list[str]:
    job = script_job(hyperparameters, {})
    assert job is not None
    return build_command(job, single or host(["algo-1"], "algo-1"), code, ARGS).argv


@pytest.fixture
def code(tmp_path: Path) -> Path:
    (tmp_path / "train.py").write_text("")
    (tmp_path / "run.sh").write_text("echo hi\n")
    return tmp_path


def test_a_script_runs_with_this_python(code: Path) -> None:
    assert command(code, {"sagemaker_program": '"train.py"'}) == [sys.executable, "train.py", *ARGS]


def test_a_shell_script_runs_with_sh(code: Path) -> None:
    assert command(code, {"sagemaker_program": "run.sh"}) == ["/bin/sh", "run.sh", *ARGS]


def test_a_package_runs_with_python_m(code: Path) -> None:
    (code / "trainer").mkdir()
    (code / "trainer" / "__main__.py").write_text("")
    assert command(code, {"sagemaker_program": "trainer"}) == [sys.executable, "-m", "trainer", *ARGS]
    (code / "setup.py").write_text("")  # the toolkit's rule: a setup.py makes the entry point a module
    assert command(code, {"sagemaker_program": "train.py"}) == [sys.executable, "-m", "train", *ARGS]


def test_a_missing_entry_point_names_what_is_there(code: Path) -> None:
    with pytest.raises(UserError, match=r"entry point 'trian.py' not found in .* \(it holds: run.sh, train.py\)"):
        command(code, {"sagemaker_program": "trian.py"})


def test_torch_distributed_runs_torchrun_on_every_host(code: Path) -> None:
    hyperparameters = {"sagemaker_program": '"train.py"', "sagemaker_torch_distributed_enabled": "true"}
    second = command(code, hyperparameters, host(["algo-2", "algo-1"], "algo-2"))
    assert second == [
        "torchrun", "--nnodes", "2", "--nproc_per_node", "1", "--master_addr", "algo-1", "--master_port", "7777",
        "--node_rank", "1", "train.py", *ARGS,
    ]  # fmt: skip
    gpus = command(code, hyperparameters, host(["algo-1"], "algo-1", gpus=8))
    assert gpus[:11] == [
        "torchrun", "--nnodes", "1", "--nproc_per_node", "8", "--master_addr", "127.0.0.1", "--master_port", "7777",
        "--node_rank", "0",
    ]  # fmt: skip


def test_pytorch_ddp_uses_the_same_launcher_and_processes_per_host_overrides(code: Path) -> None:
    hyperparameters = {
        "sagemaker_program": '"train.py"',
        "sagemaker_pytorch_ddp_enabled": "true",
        "sagemaker_mpi_num_of_processes_per_host": "3",
    }
    argv = command(code, hyperparameters, host(["algo-1", "algo-2"], "algo-1", gpus=8))
    assert argv[:5] == ["torchrun", "--nnodes", "2", "--nproc_per_node", "3"]


def test_torchrun_needs_a_python_script(code: Path) -> None:
    with pytest.raises(UserError, match="'run.sh' is not a .py file"):
        command(code, {"sagemaker_program": "run.sh", "sagemaker_torch_distributed_enabled": "true"})


def test_mpi_runs_once_per_host_and_says_torchrun_is_the_way(code: Path, caplog: pytest.LogCaptureFixture) -> None:
    argv = command(code, {"sagemaker_program": "train.py", "sagemaker_mpi_enabled": "true"})
    assert argv == [sys.executable, "train.py", *ARGS]
    assert "sagemaker_mpi_enabled: this image has no MPI launcher; use torch_distributed (torchrun)" in caplog.text
