"""How the entry point runs, as the toolkits run it: `python train.py ARGS`, `python -m name ARGS` for a
package (a setup.py beside it, or a directory with __main__.py), `sh run.sh ARGS`, and for a distributed job
`torchrun --nnodes N --nproc_per_node P --master_addr FIRST_HOST --master_port 7777 --node_rank I train.py ARGS`.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from optml.container.errors import UserError
from optml.train.script.environment import MASTER_PORT, Host
from optml.train.script.job import ScriptJob

log = logging.getLogger(__name__)

# Distribution switches that start torchrun. SDK v2 sends sagemaker_pytorch_ddp_enabled for its "pytorchddp"
# distribution, which AWS's images run with mpirun on GPU hosts; torchrun does the same job everywhere.
TORCHRUN_SWITCHES = ("sagemaker_torch_distributed_enabled", "sagemaker_pytorch_ddp_enabled")
PROCESSES_PER_HOST = "sagemaker_mpi_num_of_processes_per_host"
# Launchers this image does not have (mpirun, smddprun): the script runs once per host, and says so.
UNSUPPORTED_SWITCHES = ("sagemaker_mpi_enabled", "sagemaker_distributed_dataparallel_enabled")


@dataclass(frozen=True)
class Command:
    argv: list[str]
    torchrun: bool = False  # the first process is torchrun's agent, not the user's code


def entry_point(code_dir: Path, program: str) -> Path:
    """The entry point inside code_dir; a missing one names what is there instead."""
    path = code_dir / program
    if path.exists():
        return path
    present = sorted(entry.name for entry in code_dir.iterdir()) if code_dir.is_dir() else []
    listing = ", ".join(present[:20]) if present else "nothing"
    raise UserError(f"entry point {program!r} not found in {code_dir} (it holds: {listing})")


def processes_per_host(job: ScriptJob, host: Host) -> int:
    override = job.sdk_parameters.get(PROCESSES_PER_HOST)
    if override not in (None, ""):
        try:
            return max(int(override), 1)
        except (TypeError, ValueError):
            raise UserError(f"{PROCESSES_PER_HOST} must be a whole number, got {override!r}") from None
    return max(host.num_gpus, 1)


def torchrun_command(job: ScriptJob, host: Host, args: list[str]) -> list[str]:
    if not job.program.endswith(".py"):
        raise UserError(f"distributed training runs a Python script with torchrun; {job.program!r} is not a .py file")
    return [
        "torchrun",
        "--nnodes",
        str(len(host.hosts)),
        "--nproc_per_node",
        str(processes_per_host(job, host)),
        # One host: its processes meet on loopback, whatever its name resolves to (a plain `docker run`).
        "--master_addr",
        host.master if len(host.hosts) > 1 else "127.0.0.1",
        "--master_port",
        str(MASTER_PORT),
        "--node_rank",
        str(host.hosts.index(host.current_host)),
        job.program,
        *args,
    ]


def build_command(job: ScriptJob, host: Host, code_dir: Path, args: list[str]) -> Command:
    entry = entry_point(code_dir, job.program)
    for switch in UNSUPPORTED_SWITCHES:
        if job.enabled(switch):
            log.warning("%s: this image has no MPI launcher; use torch_distributed (torchrun) instead", switch)
    if any(job.enabled(switch) for switch in TORCHRUN_SWITCHES):
        return Command(torchrun_command(job, host, args), torchrun=True)
    module = job.program[:-3] if job.program.endswith(".py") else job.program
    if (code_dir / "setup.py").exists() or (entry.is_dir() and (entry / "__main__.py").is_file()):
        return Command([sys.executable, "-m", module, *args])
    if job.program.endswith(".py"):
        return Command([sys.executable, job.program, *args])
    if job.program.endswith(".sh"):
        return Command(["/bin/sh", job.program, *args])
    if entry.is_file():
        return Command([f"./{job.program}", *args])  # an executable of the user's own
    raise UserError(f"entry point {job.program!r} is a directory without __main__.py; name a .py, .sh or package")
