"""Server settings from the environment variables SageMaker and its toolkits define."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from optml.serve.batch import ExecutionParameters

DEFAULT_MAX_PAYLOAD_MB = 6  # SageMaker's limit for a real-time request body


class SettingsError(ValueError):
    """An environment variable holds a value the server cannot use."""


def _int(env: Mapping[str, str], name: str, default: int, minimum: int, maximum: int | None = None) -> int:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise SettingsError(f"{name}={text!r} is not an integer") from None
    if value < minimum or (maximum is not None and value > maximum):
        upper = f" and at most {maximum}" if maximum is not None else ""
        raise SettingsError(f"{name}={value} is out of range: expected at least {minimum}{upper}")
    return value


def _bool(env: Mapping[str, str], name: str) -> bool:
    text = env.get(name, "").strip().lower()
    if text in ("", "false", "0", "no"):
        return False
    if text in ("true", "1", "yes"):
        return True
    raise SettingsError(f"{name}={env[name]!r} is not a boolean: expected true or false")


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    text = env.get(name, "").strip().upper() or default
    if text not in choices:
        raise SettingsError(f"{name}={env[name]!r} is not one of {', '.join(choices)}")
    return text


def _port_range(env: Mapping[str, str], name: str) -> tuple[int, int] | None:
    text = env.get(name, "").strip()
    if not text:
        return None
    low, sep, high = text.partition("-")
    if not (sep and low.strip().isdigit() and high.strip().isdigit()) or int(low) > int(high):
        raise SettingsError(f"{name}={text!r} is not a port range like 9000-9999")
    return int(low), int(high)


@dataclass(frozen=True)
class ServerSettings:
    """The server's every setting, resolved once: gunicorn_conf.py sizes the processes with it and
    create_app answers requests with it."""

    port: int = 8080
    workers: int = 1
    timeout: int = 60
    # SAGEMAKER_MAX_PAYLOAD_IN_MB, in bytes: the unit the body checks compare with (tests use small limits)
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_MB << 20
    default_accept: str | None = None
    batch: bool = False  # SAGEMAKER_BATCH: a batch transform job, not a real-time endpoint
    batch_strategy: str = "MULTI_RECORD"
    max_concurrent_transforms: int | None = None  # None: one per worker
    multi_model: bool = False  # SAGEMAKER_MULTI_MODEL: models are loaded through /models at run time
    model_memory_mb: int = 2048  # multi-model: the budget for loaded models' weights (507 beyond it)
    # SAGEMAKER_SAFE_PORT_RANGE: where auxiliary ports would have to live. The server opens none (only
    # SAGEMAKER_BIND_TO_PORT), so this is validated and logged, nothing more.
    safe_port_range: tuple[int, int] | None = None
    access_log: bool = False  # OPTML_ACCESS_LOG: a line per request (failed requests are always logged)

    @property
    def max_payload_mb(self) -> int:
        return self.max_payload_bytes >> 20

    @property
    def execution_parameters(self) -> ExecutionParameters:
        """What GET /execution-parameters tells batch transform, derived from the same settings."""
        return ExecutionParameters.for_server(
            self.workers, self.max_payload_mb, self.batch_strategy, self.max_concurrent_transforms
        )

    @property
    def threads_per_worker(self) -> int:
        """torch intra-op threads per worker, so workers together use each core once."""
        return max(1, (os.cpu_count() or 1) // self.workers)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ServerSettings:
        return cls(
            port=_int(env, "SAGEMAKER_BIND_TO_PORT", 8080, 1, 65535),
            workers=_int(env, "SAGEMAKER_MODEL_SERVER_WORKERS", os.cpu_count() or 1, 1),
            timeout=_int(env, "SAGEMAKER_MODEL_SERVER_TIMEOUT", 60, 1),
            max_payload_bytes=_int(env, "SAGEMAKER_MAX_PAYLOAD_IN_MB", DEFAULT_MAX_PAYLOAD_MB, 1, 100) << 20,
            default_accept=env.get("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT") or None,
            batch=_bool(env, "SAGEMAKER_BATCH"),
            batch_strategy=_choice(env, "SAGEMAKER_BATCH_STRATEGY", "MULTI_RECORD", ("MULTI_RECORD", "SINGLE_RECORD")),
            max_concurrent_transforms=(
                _int(env, "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS", 0, 1, 100)
                if env.get("SAGEMAKER_MAX_CONCURRENT_TRANSFORMS", "").strip()
                else None
            ),
            multi_model=_bool(env, "SAGEMAKER_MULTI_MODEL"),
            model_memory_mb=_int(env, "OPTML_MODEL_MEMORY_MB", 2048, 1),
            safe_port_range=_port_range(env, "SAGEMAKER_SAFE_PORT_RANGE"),
            access_log=_bool(env, "OPTML_ACCESS_LOG"),
        )
