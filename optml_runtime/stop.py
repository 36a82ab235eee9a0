"""A flag a training loop polls, raised by SIGTERM (StopTrainingJob, MaxRuntime, spot interruption) or SIGINT
instead of the default of dying on the spot. In the optml image every process of the script gets the signal
at once; it has OPTML_STOP_GRACE_SECONDS (110 s by default) to checkpoint and exit before it is killed."""

from __future__ import annotations

import signal
import sys
from types import FrameType


class StopFlag:
    """True once a stop signal arrived."""

    def __init__(self) -> None:
        self.requested = False
        self.signal_name: str | None = None

    def __bool__(self) -> bool:
        return self.requested

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
        self.signal_name = signal.Signals(signum).name
        print(f"optml_runtime: {self.signal_name} received; stopping at the next check", file=sys.stderr, flush=True)


_flag = StopFlag()


def install_stop_handler(signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> StopFlag:
    """Handle the stop signals by raising the flag (from the main thread); returns the flag. Idempotent."""
    for signum in signals:
        signal.signal(signum, _flag._handle)
    return _flag


def stop_requested() -> bool:
    return _flag.requested
