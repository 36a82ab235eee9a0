"""Server settings from the environment variables SageMaker and its toolkits define."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


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


@dataclass(frozen=True)
class ServerSettings:
    port: int = 8080
    workers: int = 1
    timeout: int = 60
    max_payload_mb: int = 6
    default_accept: str | None = None

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
            max_payload_mb=_int(env, "SAGEMAKER_MAX_PAYLOAD_IN_MB", 6, 1, 100),
            default_accept=env.get("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT") or None,
        )
