"""Stop signals before a command has its own handling.

SageMaker stops a job or an endpoint with SIGTERM, then SIGKILL (120 s later for training, 30 s for
serving). The process is PID 1 of its container, and the kernel sends PID 1 no signal it has no handler
for: without one, a stop during the seconds torch takes to import (or a model takes to load) was ignored
until the SIGKILL. Until training installs its own handler (checkpoint first) or gunicorn its own (drain
the requests in flight), a stop means exit now.
"""

from __future__ import annotations

import signal
from types import FrameType


def _exit_now(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def exit_on_stop_until_handled() -> None:
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _exit_now)
