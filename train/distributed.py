"""Data-parallel training across hosts (resourceconfig.json) and processes (one per GPU on a host).

In memory mode every process reads the whole channel and draws the same row order; each trains on its share
of every global mini-batch (`batch_size` is the global batch) and gradients are summed across processes,
with the loss scaled by the global batch's weight, so N processes take exactly the steps one process would
(up to float summation order). Streaming (train/streaming.py), each process reads only its share of the
blocks and all of them take the largest share's step count. The master — rank 0, on the first of the
sorted hosts — alone logs metrics and writes /opt/ml/model and output/data; every process checkpoints its
own state under its own name.
Backend: gloo on CPU, nccl on GPU; rendezvous on the master host, port 7777 (OPTML_MASTER_PORT).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from optml.container.config import ResourceConfig
from optml.container.errors import UserError
from optml.container.hosts import PEER_WAIT_SECONDS, interface_exists, wait_for_host

log = logging.getLogger(__name__)

DEFAULT_PORT = 7777  # the port the SageMaker toolkits use
COLLECTIVE_TIMEOUT = timedelta(minutes=10)  # a dead peer fails the job instead of hanging it


@dataclass(frozen=True)
class Topology:
    """Where this process sits in the job."""

    hosts: tuple[str, ...]  # sorted
    host_index: int
    processes_per_host: int = 1
    local_rank: int = 0
    port: int = DEFAULT_PORT
    network_interface: str | None = None
    peer_wait_s: float = PEER_WAIT_SECONDS

    @property
    def world_size(self) -> int:
        return len(self.hosts) * self.processes_per_host

    @property
    def rank(self) -> int:
        return self.host_index * self.processes_per_host + self.local_rank

    @property
    def is_master(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def master_host(self) -> str:
        return self.hosts[0]

    @property
    def name(self) -> str:
        """This process in file names: the host, plus the local rank when a host runs several."""
        host = self.hosts[self.host_index]
        return host if self.processes_per_host == 1 else f"{host}-{self.local_rank}"

    def with_local_rank(self, local_rank: int) -> Topology:
        return Topology(
            self.hosts,
            self.host_index,
            self.processes_per_host,
            local_rank,
            self.port,
            self.network_interface,
            self.peer_wait_s,
        )


def processes_per_host(env: Mapping[str, str]) -> int:
    """One process per GPU; OPTML_PROCESSES_PER_HOST overrides (several CPU processes, for tests)."""
    if env.get("OPTML_PROCESSES_PER_HOST"):
        return max(int(env["OPTML_PROCESSES_PER_HOST"]), 1)
    return max(torch.cuda.device_count(), 1) if torch.cuda.is_available() else 1


def check_gpus_usable(dev_dir: Path = Path("/dev")) -> None:
    """A GPU host whose GPUs torch cannot use would train on its CPU, for hours, at a GPU's price: refuse that
    when the image is the GPU one (torch is a CUDA build); with the CPU image, say which image to use."""
    gpus = sorted(path.name for path in dev_dir.glob("nvidia[0-9]*"))
    if not gpus or torch.cuda.is_available():
        return
    if torch.version.cuda is None:
        log.warning(
            "this host has %d NVIDIA GPU(s) but the image is the CPU one: training runs on the CPU"
            " (`optml build --gpu` builds the GPU image, optml:latest-gpu)",
            len(gpus),
        )
        return
    raise UserError(
        f"this host has {len(gpus)} NVIDIA GPU(s) ({', '.join(gpus)}) but torch, built for CUDA"
        f" {torch.version.cuda}, cannot use them: the NVIDIA driver is most likely older than that CUDA needs"
        " (CUDA 13 needs driver 580 or newer, CUDA 12 driver 525). Use an instance type or AMI with a newer"
        " driver, or build the GPU image for an older CUDA (README: Building the image); refusing to train on"
        " the CPU of a GPU instance"
    )


def topology_from(resources: ResourceConfig, env: Mapping[str, str]) -> Topology:
    hosts = tuple(sorted(resources.hosts))
    if resources.current_host not in hosts:
        raise UserError(
            f"resourceconfig.json: current_host {resources.current_host!r} is not among hosts {list(hosts)}"
        )
    return Topology(
        hosts,
        hosts.index(resources.current_host),
        processes_per_host(env),
        port=int(env.get("OPTML_MASTER_PORT") or DEFAULT_PORT),
        network_interface=resources.network_interface_name,
        peer_wait_s=float(env.get("OPTML_PEER_WAIT_SECONDS") or PEER_WAIT_SECONDS),
    )


def device_for(topology: Topology) -> torch.device:
    return torch.device(f"cuda:{topology.local_rank}") if torch.cuda.is_available() else torch.device("cpu")


def process_group_backend(cuda: bool) -> str:
    """gloo on CPU. With GPUs, NCCL carries the gradients (CUDA tensors) and gloo the small CPU tensors the
    loop exchanges every step (stop and checkpoint flags): a NCCL-only group refuses CPU tensors."""
    return "cpu:gloo,cuda:nccl" if cuda else "gloo"


def init_process_group(topology: Topology) -> None:
    """Join the job's process group; a no-op for a single process."""
    if not topology.distributed:
        return
    if len(topology.hosts) > 1:
        for host in topology.hosts:
            wait_for_host(host, topology.peer_wait_s)
    interface = topology.network_interface
    if interface and interface_exists(interface):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", interface)
        os.environ.setdefault("NCCL_SOCKET_IFNAME", interface)
    elif interface:
        # SDK v3 local mode names "ethwe", which its containers lack: let gloo use the hostname's address.
        log.info("network interface %s from resourceconfig.json does not exist here; not pinning one", interface)
    backend = process_group_backend(torch.cuda.is_available())
    # One host: its processes meet on loopback, whatever its name resolves to.
    master = wait_for_host(topology.master_host, topology.peer_wait_s) if len(topology.hosts) > 1 else "127.0.0.1"
    log.info(
        "joining %d processes (%s) as rank %d via %s:%d",
        topology.world_size,
        backend,
        topology.rank,
        master,
        topology.port,
    )
    if torch.cuda.is_available():
        torch.cuda.set_device(topology.local_rank)
    dist.init_process_group(
        backend,
        init_method=f"tcp://{master}:{topology.port}",
        rank=topology.rank,
        world_size=topology.world_size,
        timeout=COLLECTIVE_TIMEOUT,
    )


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def any_rank(flag: bool) -> bool:
    """True when the flag is true on any process (e.g. a stop request reached one host)."""
    if not dist.is_initialized():
        return flag
    value = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def all_gather_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate a tensor from every process along dim 0 (shares may differ in length)."""
    if not dist.is_initialized():
        return tensor
    parts: list[torch.Tensor] = [torch.empty(0)] * dist.get_world_size()
    dist.all_gather_object(parts, tensor.cpu())
    return torch.cat(parts)


def gather_objects(value: object) -> list[object]:
    """Every process's `value`, in rank order (picklable data: statistics, block lists)."""
    if not dist.is_initialized():
        return [value]
    values: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def any_rank_each(*flags: bool) -> tuple[bool, ...]:
    """`any_rank` for several flags in one collective (the loop asks two questions every step)."""
    if not dist.is_initialized():
        return flags
    values = torch.tensor([1.0 if flag else 0.0 for flag in flags])
    dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return tuple(bool(v) for v in values.tolist())


def min_position(position: tuple[int, int]) -> tuple[int, int]:
    """The smallest (epoch, batch) across processes."""
    if not dist.is_initialized():
        return position
    positions: list[tuple[int, int]] = [(0, 0)] * dist.get_world_size()
    dist.all_gather_object(positions, position)
    return min(positions)
