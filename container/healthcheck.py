"""The image's Docker HEALTHCHECK, right for every way the image is started.

- A model server is running (`serve`, or no argument without hyperparameters.json): healthy while
  GET /ping on SAGEMAKER_BIND_TO_PORT answers 200 within 2 s (the contract's /ping deadline).
- Anything else — `train`, `metric-definitions`, or an entrypoint the caller replaced (SDK v3 script mode
  runs `/bin/bash -c .../sm_train.sh`): there is no server to ask, so the container is healthy while it
  runs; its exit code says how the job went.

Whether a server runs is read from the processes themselves, not from a marker that optml's own
entrypoint would write: a replaced entrypoint never runs that code. The check runs as
`python -I container/healthcheck.py` every few seconds, so it imports nothing beyond the standard library.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

# What the model server's command line holds: serve/main.py builds gunicorn's command with it.
SERVER_APP = "optml.serve.wsgi:create_app_from_environment()"
PING_TIMEOUT_S = 2.0


def server_running(proc: Path = Path("/proc")) -> bool:
    """True when a process of this container (its own PID namespace) is the model server."""
    marker = SERVER_APP.encode()
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker in (entry / "cmdline").read_bytes():
                return True
        except OSError:  # the process ended while we looked
            continue
    return False


def ping(port: str, timeout: float = PING_TIMEOUT_S) -> str | None:
    """None when /ping answers 200, else what went wrong."""
    url = f"http://127.0.0.1:{port}/ping"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status = response.status
    except urllib.error.HTTPError as error:
        return f"{url} answered HTTP {error.code}"
    except (OSError, ValueError) as error:  # refused, timed out, or a port that is not a number
        return f"{url} did not answer: {error}"
    return None if status == 200 else f"{url} answered HTTP {status}"


def check(environ: Mapping[str, str] = os.environ, proc: Path = Path("/proc")) -> tuple[int, str]:
    """Docker's verdict (0 healthy, 1 unhealthy) and the line it keeps in the container's health log."""
    if not server_running(proc):
        return 0, "no model server in this container (training or another command): nothing to check"
    port = environ.get("SAGEMAKER_BIND_TO_PORT") or "8080"
    problem = ping(port)
    return (0, f"model server on port {port}: /ping answered 200") if problem is None else (1, problem)


def main() -> int:
    status, message = check()
    print(message)
    return status


if __name__ == "__main__":
    sys.exit(main())
