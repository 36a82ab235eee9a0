"""What the user's script receives: the SM_* variables and the `--key value` command line, in exactly the
formats AWS's training toolkit uses (`mapping.to_env_vars`, `mapping.to_cmd_args`, `Environment.to_env_vars`),
so a train.py written for AWS's PyTorch images reads them unchanged.

Value formats: a string as it is, None as an empty string, anything else as JSON with sorted keys and no
spaces. Command line: sorted keys, `--key` (`-k` for a one-letter key) and `str(value)`, so a boolean arrives
as `True` / `False` and a dict as `k1=v1,k2=v2`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optml.container.paths import Paths
from optml.train.script.job import ScriptJob

MASTER_PORT = 7777  # the toolkits' rendezvous port
# What makes a job distributed for the toolkit (SM_TRAINING_ENV's distribution_instance_groups).
DISTRIBUTION_SWITCHES = (
    "sagemaker_mpi_enabled",
    "sagemaker_pytorch_ddp_enabled",
    "sagemaker_torch_distributed_enabled",
    "sagemaker_distributed_dataparallel_enabled",
)


def env_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def to_env_vars(mapping: Mapping[str, Any]) -> dict[str, str]:
    """{"model_dir": "/opt/ml/model", "hps": {...}} → {"SM_MODEL_DIR": "/opt/ml/model", "SM_HPS": "{...}"}."""
    return {f"SM_{str(key).upper()}": env_value(value) for key, value in mapping.items() if key}


def _arg_value(value: Any) -> str:
    if isinstance(value, Mapping):
        return ",".join(f"{key}={item}" for key, item in sorted(value.items()))
    return "" if value is None else str(value)


def to_cmd_args(hyperparameters: Mapping[str, Any]) -> list[str]:
    """{"epochs": 10, "augment": True} → ["--augment", "True", "--epochs", "10"]."""
    args: list[str] = []
    for key in sorted(hyperparameters):
        name = str(key)
        args += [f"--{name}" if len(name) > 1 else f"-{name}", _arg_value(hyperparameters[key])]
    return args


@dataclass(frozen=True)
class Host:
    """This container among the job's: from resourceconfig.json, plus what the machine itself has."""

    resource_config: dict[str, Any]
    network_interface: str  # one that exists here (container/hosts.usable_interface)
    num_gpus: int
    num_cpus: int

    @property
    def hosts(self) -> list[str]:
        hosts = self.resource_config.get("hosts") or [self.current_host]
        return sorted(str(host) for host in hosts)

    @property
    def current_host(self) -> str:
        return str(self.resource_config.get("current_host") or "algo-1")

    @property
    def master(self) -> str:
        return self.hosts[0]

    @property
    def instance_type(self) -> str:
        return str(self.resource_config.get("current_instance_type") or "local")

    @property
    def instance_group(self) -> str:
        return str(self.resource_config.get("current_group_name") or "homogeneousCluster")


@dataclass(frozen=True)
class Context:
    """Everything the script's environment is made from, read once in main()."""

    job: ScriptJob
    host: Host
    paths: Paths
    input_data_config: dict[str, Any]
    job_name: str | None = None  # TRAINING_JOB_NAME, which SageMaker sets


def count_gpus(dev_dir: Path = Path("/dev")) -> int:
    """The NVIDIA GPUs this container was given (the toolkit asks nvidia-smi; the device files say the same)."""
    return sum(1 for path in dev_dir.glob("nvidia[0-9]*") if path.name[len("nvidia") :].isdigit())


def training_env(context: Context) -> dict[str, Any]:
    """The toolkit's Environment as one mapping: SM_TRAINING_ENV is its JSON, and the SM_* variables its fields."""
    job, host, paths, input_data_config = context.job, context.host, context.paths, context.input_data_config
    input_dir = paths.config_dir.parent
    groups = host.resource_config.get("instance_groups") or []
    return {
        "additional_framework_parameters": job.framework_parameters,
        "channel_input_dirs": {name: str(paths.channel_dir(name)) for name in input_data_config},
        "current_host": host.current_host,
        "current_instance_group": host.instance_group,
        "current_instance_group_hosts": next(
            (group.get("hosts", []) for group in groups if group.get("instance_group_name") == host.instance_group),
            [],
        ),
        "current_instance_type": host.instance_type,
        "distribution_hosts": host.hosts,
        "distribution_instance_groups": [host.instance_group] if distributed(job) else [],
        "framework_module": None,
        "hosts": host.hosts,
        "hyperparameters": job.hyperparameters,
        "input_config_dir": str(paths.config_dir),
        "input_data_config": input_data_config,
        "input_dir": str(input_dir),
        "instance_groups": [group.get("instance_group_name") for group in groups],
        "instance_groups_dict": {group.get("instance_group_name"): group for group in groups},
        "is_hetero": len(groups) > 1,
        "is_master": host.current_host == host.master,
        "job_name": context.job_name,
        "log_level": job.log_level,
        "master_hostname": host.master,
        "model_dir": str(paths.model_dir),
        "module_dir": job.submit_directory or str(paths.code_dir),
        "module_name": job.program[:-3] if job.program.endswith(".py") else job.program,
        "network_interface_name": host.network_interface,
        "num_cpus": host.num_cpus,
        "num_gpus": host.num_gpus,
        "output_data_dir": str(paths.output_data_dir),
        "output_dir": str(paths.output_dir),
        "output_intermediate_dir": str(paths.output_dir / "intermediate"),
        "resource_config": host.resource_config,
        "user_entry_point": job.program,
    }


# The Environment fields the toolkit exports under their own names (SM_HOSTS, SM_MODEL_DIR, ...).
ENV_FIELDS = (
    "hosts", "network_interface_name", "user_entry_point", "output_data_dir", "current_host", "current_instance_type",
    "current_instance_group", "current_instance_group_hosts", "instance_groups", "instance_groups_dict",
    "distribution_instance_groups", "is_hetero", "module_name", "log_level", "framework_module", "input_dir",
    "input_config_dir", "output_dir", "num_cpus", "num_gpus", "model_dir", "module_dir", "output_intermediate_dir",
)  # fmt: skip


def sm_variables(context: Context) -> dict[str, str]:
    """Every SM_* variable the toolkit sets (`Environment.to_env_vars`), same names, same value formats."""
    env = training_env(context)
    job = context.job
    fields = {name: env[name] for name in ENV_FIELDS}
    fields.update(
        hps=job.hyperparameters,
        framework_params=job.framework_parameters,
        resource_config=env["resource_config"],
        input_data_config=env["input_data_config"],
        channels=sorted(env["input_data_config"]),
        training_env=env,
        user_args=to_cmd_args(job.hyperparameters),
    )
    fields.update({f"channel_{name}": path for name, path in env["channel_input_dirs"].items()})
    fields.update({f"hp_{key}": value for key, value in job.hyperparameters.items()})
    return to_env_vars(fields)


def distributed(job: ScriptJob) -> bool:
    return any(job.enabled(key) for key in DISTRIBUTION_SWITCHES)


def process_environment(context: Context, base: Mapping[str, str]) -> dict[str, str]:
    """The child's whole environment: `base` (ours), the SM_* variables, the PyTorch toolkit's MASTER_ADDR /
    MASTER_PORT, unbuffered output, and /opt/ml/code first on PYTHONPATH."""
    job, host = context.job, context.host
    env = dict(base)
    env.update(sm_variables(context))
    python_path = [str(context.paths.code_dir)] + ([base["PYTHONPATH"]] if base.get("PYTHONPATH") else [])
    env.update(
        MASTER_ADDR=host.master,
        MASTER_PORT=str(MASTER_PORT),
        PYTHONUNBUFFERED="1",
        PYTHONPATH=os.pathsep.join(python_path),
        CURRENT_HOST=host.current_host,
        SAGEMAKER_JOB_NAME=env_value(job.sdk_parameters.get("sagemaker_job_name")),
        SAGEMAKER_REGION=job.region or "",
    )
    # The toolkit pins NCCL to the job's interface; with gloo too, to one that exists here (see Host).
    env.setdefault("NCCL_SOCKET_IFNAME", host.network_interface)
    env.setdefault("GLOO_SOCKET_IFNAME", host.network_interface)
    return env
