"""Writing /opt/ml/output/failure: SageMaker shows its first 1024 characters as FailureReason (a Processing
job's /opt/ml/output/message, as ExitMessage, the same way)."""

from __future__ import annotations

import logging
import os
import traceback
from collections.abc import Callable
from pathlib import Path

from optml.container.errors import UserError

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


def run_reporting_failure(job: Callable[[], object], failure_file: Path, what: str, log: logging.Logger) -> int:
    """Run a job's work; its exit code: 0, or 1 for a problem the user can fix (a UserError: its message goes
    to `failure_file`), or 2 for anything else, our bug (the reason goes there, its traceback to the log only).
    `what` names the work in the log: "training failed: ..."."""
    try:
        job()
    except UserError as error:
        log.error("%s failed: %s", what, error)
        write_failure(failure_file, str(error))
        return 1
    except Exception as error:
        log.error("%s failed with an internal error:\n%s", what, traceback.format_exc())
        write_failure(failure_file, f"Internal error: {type(error).__name__}: {error}")
        return 2
    return 0
