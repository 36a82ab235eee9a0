"""Data-parallel training on one machine: two processes (gloo on CPU) through the real entry point."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from safetensors.numpy import load_file
from torch.distributed.distributed_c10d import BackendConfig

from optml.container.config import ResourceConfig
from optml.container.errors import UserError
from optml.container.hosts import wait_for_host
from optml.train import distributed
from optml.train.distributed import Topology, process_group_backend, topology_from
from optml.train.main import main
from tests.conftest import make_classification, make_opt_ml

HYPERPARAMETERS = {"epochs": "3", "batch_size": "32", "hidden_units": "16", "learning_rate": "0.01", "seed": "5"}


def train_with(root: Path, processes: int, monkeypatch: pytest.MonkeyPatch, rows: int = 250) -> dict[str, np.ndarray]:
    make_opt_ml(root, make_classification(rows, 4, 2, seed=1), make_classification(50, 4, 2, seed=2), HYPERPARAMETERS)
    monkeypatch.setenv("OPTML_ROOT", str(root))
    monkeypatch.setenv("OPTML_PROCESSES_PER_HOST", str(processes))
    monkeypatch.setenv("OPTML_MASTER_PORT", "29517")
    assert main([]) == 0
    return load_file(str(root / "model" / "model.safetensors"))


@pytest.mark.slow
def test_two_processes_reach_the_weights_of_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    single = train_with(tmp_path / "one", 1, monkeypatch)
    capfd.readouterr()
    parallel = train_with(tmp_path / "two", 2, monkeypatch)
    output = capfd.readouterr().out
    for key in single:
        np.testing.assert_allclose(parallel[key], single[key], atol=1e-4, err_msg=key)
    assert sum(line.startswith("epoch=3 ") for line in output.splitlines()) == 1  # only the master logs metrics
    assert sorted(p.name for p in (tmp_path / "two" / "checkpoints").iterdir()) == [
        "checkpoint-algo-1-0-e00003-b0000000.pt",
        "checkpoint-algo-1-0-e00004-b0000000.pt",
        "checkpoint-algo-1-1-e00003-b0000000.pt",
        "checkpoint-algo-1-1-e00004-b0000000.pt",
    ]


@pytest.mark.slow
def test_a_process_with_no_rows_in_the_last_batch_leaves_the_train_loss_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """225 rows in batches of 32: the last batch has one row, so the second process gets none of it."""
    train_with(tmp_path / "one", 1, monkeypatch, rows=225)
    train_with(tmp_path / "two", 2, monkeypatch, rows=225)
    histories = [
        json.loads((tmp_path / run / "output/data/evaluation.json").read_text())["history"] for run in ("one", "two")
    ]
    single, parallel = ([epoch["train:loss"] for epoch in history] for history in histories)
    assert all(np.isfinite(parallel))
    np.testing.assert_allclose(parallel, single, rtol=1e-4)


def test_gpu_jobs_send_the_per_step_cpu_flags_over_gloo_and_gradients_over_nccl() -> None:
    """A NCCL-only group refuses the CPU tensors the loop all-reduces every step (stop and checkpoint flags)."""
    assert process_group_backend(cuda=False) == "gloo"
    config = BackendConfig(dist.Backend(process_group_backend(cuda=True)))  # what init_process_group parses
    assert config.get_device_backend_map() == {"cpu": "gloo", "cuda": "nccl"}


def test_topology_from_resource_config() -> None:
    resources = ResourceConfig(current_host="algo-2", hosts=("algo-2", "algo-1"), network_interface_name="eth0")
    topology = topology_from(resources, {"OPTML_PROCESSES_PER_HOST": "2"}).with_local_rank(1)
    assert topology.master_host == "algo-1"
    assert (topology.rank, topology.world_size, topology.is_master) == (3, 4, False)
    assert topology.name == "algo-2-1"
    assert topology.port == 7777
    single = topology_from(ResourceConfig(), {})
    assert (single.distributed, single.is_master, single.name) == (False, True, "algo-1")


def test_current_host_must_be_listed() -> None:
    with pytest.raises(UserError, match="current_host 'algo-3' is not among hosts"):
        topology_from(ResourceConfig(current_host="algo-3", hosts=("algo-1", "algo-2")), {})


def test_a_host_that_never_resolves_is_named() -> None:
    with pytest.raises(UserError, match=r"host 'algo-9.invalid' from resourceconfig.json never became reachable"):
        wait_for_host("algo-9.invalid", deadline_s=0.5)


def test_topology_dataclass_defaults() -> None:
    topology = Topology(hosts=("algo-1",), host_index=0)
    assert (topology.world_size, topology.rank, topology.distributed) == (1, 0, False)


def fake_gpu_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, torch_cuda: str | None) -> Path:
    """A /dev with two NVIDIA GPUs (and the control devices beside them) that torch cannot use."""
    for name in ("nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm"):
        (tmp_path / name).touch()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", torch_cuda)
    return tmp_path


def test_the_gpu_image_refuses_a_gpu_host_whose_gpus_torch_cannot_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dev = fake_gpu_host(tmp_path, monkeypatch, torch_cuda="13.0")

    with pytest.raises(UserError) as refused:
        distributed.check_gpus_usable(dev)

    message = str(refused.value)
    assert message.startswith("this host has 2 NVIDIA GPU(s) (nvidia0, nvidia1) but torch, built for CUDA 13.0,")
    assert "refusing to train on the CPU of a GPU instance" in message


def test_the_cpu_image_on_a_gpu_host_trains_on_the_cpu_and_says_which_image_to_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    dev = fake_gpu_host(tmp_path, monkeypatch, torch_cuda=None)

    distributed.check_gpus_usable(dev)

    assert "2 NVIDIA GPU(s) but the image is the CPU one" in caplog.text
    assert "optml build --gpu" in caplog.text


def test_a_host_without_gpus_or_with_usable_ones_is_not_checked_further(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    distributed.check_gpus_usable(tmp_path)  # no /dev/nvidia*: a CPU host

    (tmp_path / "nvidia0").touch()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    distributed.check_gpus_usable(tmp_path)  # GPUs torch can use

    assert caplog.text == ""
