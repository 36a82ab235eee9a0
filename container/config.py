"""The JSON files SageMaker writes to /opt/ml/input/config/, read into plain typed objects."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optml.container.errors import UserError

# Keys the platform and the SDKs add to hyperparameters.json; they are not the algorithm's to validate.
TUNING_OBJECTIVE_KEY = "_tuning_objective_metric"
SDK_KEY_PREFIX = "sagemaker_"


@dataclass(frozen=True)
class HyperparameterFile:
    """hyperparameters.json as the algorithm should see it: user keys only, values as plain strings."""

    values: dict[str, str]
    tuning_objective_metric: str | None = None
    ignored_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class ChannelConfig:
    name: str
    content_type: str | None = None
    input_mode: str = "File"
    distribution: str = "FullyReplicated"
    compression: str | None = None


@dataclass(frozen=True)
class ResourceConfig:
    current_host: str = "algo-1"
    hosts: tuple[str, ...] = ("algo-1",)
    network_interface_name: str | None = None
    instance_type: str | None = None

    @property
    def master_host(self) -> str:
        return sorted(self.hosts)[0]

    @property
    def is_master(self) -> bool:
        return self.current_host == self.master_host


def read_json_object(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise UserError(f"{path} is not valid JSON: {error.msg} at line {error.lineno}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a JSON object, found {type(data).__name__}")
    return data


def decode_hyperparameter_value(value: Any) -> str:
    """One hyperparameter value as a plain string.

    SageMaker passes strings (`"10"`); SDK v2 framework estimators JSON-encode them (`"\\"adam\\""`);
    hand-written files hold numbers and booleans. All three mean the same thing.
    """
    if isinstance(value, str):
        if len(value) >= 2 and value[0] == value[-1] == '"':
            try:
                decoded = json.loads(value)
            except json.JSONDecodeError:
                return value
            return decoded if isinstance(decoded, str) else value
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(decode_hyperparameter_value(item) for item in value)
    return json.dumps(value)


def read_hyperparameters(path: Path) -> HyperparameterFile:
    """Read hyperparameters.json; a missing file means "all defaults"."""
    if not path.exists():
        return HyperparameterFile(values={})
    raw = read_json_object(path)
    values: dict[str, str] = {}
    ignored: list[str] = []
    objective: str | None = None
    for key, value in raw.items():
        if key == TUNING_OBJECTIVE_KEY:
            objective = decode_hyperparameter_value(value)
        elif key.startswith(SDK_KEY_PREFIX):
            ignored.append(key)
        else:
            values[key] = decode_hyperparameter_value(value)
    return HyperparameterFile(values=values, tuning_objective_metric=objective, ignored_keys=tuple(ignored))


def read_input_data_config(path: Path) -> dict[str, ChannelConfig]:
    """inputdataconfig.json: one entry per channel SageMaker mounted. Missing file: no declared channels."""
    if not path.exists():
        return {}
    raw = read_json_object(path)
    channels = {}
    for name, entry in raw.items():
        entry = entry if isinstance(entry, dict) else {}
        channels[name] = ChannelConfig(
            name=name,
            content_type=entry.get("ContentType"),
            input_mode=entry.get("TrainingInputMode", "File"),
            distribution=entry.get("S3DistributionType", "FullyReplicated"),
            compression=entry.get("CompressionType"),
        )
    return channels


def read_resource_config(path: Path) -> ResourceConfig:
    """resourceconfig.json; a missing file (a plain `docker run`) means one host, algo-1."""
    if not path.exists():
        return ResourceConfig()
    raw = read_json_object(path)
    hosts = tuple(str(host) for host in raw.get("hosts") or ())
    current = str(raw.get("current_host") or (hosts[0] if hosts else "algo-1"))
    return ResourceConfig(
        current_host=current,
        hosts=hosts or (current,),
        network_interface_name=raw.get("network_interface_name"),
        instance_type=raw.get("current_instance_type"),
    )


def read_checkpoint_dir(path: Path) -> Path | None:
    """checkpointconfig.json's LocalPath (present when the job sets CheckpointConfig), else None."""
    if not path.exists():
        return None
    local = read_json_object(path).get("LocalPath")
    return Path(local) if local else None


@dataclass(frozen=True)
class JobConfig:
    """Everything under input/config/ for one training run."""

    hyperparameters: HyperparameterFile
    channels: dict[str, ChannelConfig] = field(default_factory=dict)
    resources: ResourceConfig = field(default_factory=ResourceConfig)
    checkpoint_dir: Path | None = None  # LocalPath from checkpointconfig.json
