"""Writing /opt/ml/output/failure: SageMaker shows its first 1024 characters as FailureReason."""

from __future__ import annotations

import os
from pathlib import Path

FAILURE_REASON_LIMIT = 1024  # characters SageMaker keeps; we cut at bytes, which is never more


def truncate_reason(message: str, limit: int = FAILURE_REASON_LIMIT) -> str:
    """Cut `message` to at most `limit` UTF-8 bytes without splitting a character."""
    encoded = message.strip().encode("utf-8")
    if len(encoded) <= limit:
        return message.strip()
    marker = " [...]"
    cut = encoded[: limit - len(marker)].decode("utf-8", errors="ignore")
    return cut + marker


def write_failure(failure_file: Path, message: str) -> None:
    """Write the reason for a failed job, cause first. Never raises: it runs while handling an error."""
    try:
        failure_file.parent.mkdir(parents=True, exist_ok=True)
        with open(failure_file, "w", encoding="utf-8") as handle:
            handle.write(truncate_reason(message))
            handle.flush()
            os.fsync(handle.fileno())
    except OSError:
        pass
