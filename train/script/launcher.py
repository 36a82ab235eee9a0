"""Running the user's code: its output streamed as it comes, its stderr also kept for the failure file, a stop
passed on to every process it started, and the whole tree killed when the grace period is over.

stdout is inherited (nothing between the script and the log); stderr goes through a pipe whose bytes are
written to our stderr as they arrive and the last STDERR_TAIL_BYTES kept, so the last traceback can be read.

SIGTERM (StopTrainingJob, MaxRuntime, a spot interruption; SIGKILL follows 120 s later) and SIGINT are sent
at once to every process below the launcher — the script, its DataLoader workers, torchrun's workers — except
torchrun's agent itself: its own shutdown would SIGKILL the workers 30 s later, and it ends by itself once
they have. After the grace period (OPTML_STOP_GRACE_SECONDS, default 110 s) everything left is killed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from optml.container.errors import UserError
from optml.train.script.process_tree import descendants, kill_tree, signal_all

GRACE_ENV = "OPTML_STOP_GRACE_SECONDS"
DEFAULT_GRACE_SECONDS = 110.0  # SageMaker sends SIGKILL 120 s after SIGTERM
STDERR_TAIL_BYTES = 64 * 1024
POLL_SECONDS = 0.05
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def grace_seconds(env: Mapping[str, str]) -> float:
    value = env.get(GRACE_ENV)
    try:
        return float(value) if value else DEFAULT_GRACE_SECONDS
    except ValueError:
        raise UserError(f"{GRACE_ENV} must be a number of seconds, got {value!r}") from None


@dataclass
class Outcome:
    exit_code: int  # the script's; 128 + N when signal N ended it, as a shell reports it
    stderr_tail: str
    stopped_by: str | None = None  # the stop signal that was passed on, if any


@dataclass
class _Stop:
    """Installed before the child starts, so that a stop in between is not lost: the child, once there, is
    found like every other process below the launcher."""

    launcher: int
    spare: frozenset[int]  # the launcher's own processes from before the script
    grace: float = DEFAULT_GRACE_SECONDS
    agent: int | None = None  # torchrun's agent, not signalled (see the module docstring)
    signal_name: str | None = None
    deadline: float | None = None
    killed: bool = False

    def handle(self, signum: int, frame: FrameType | None) -> None:
        targets = [pid for pid in descendants(self.launcher, self.spare) if pid != self.agent]
        reached = signal_all(targets, signum)
        if self.deadline is None:
            self.signal_name = signal.Signals(signum).name
            self.deadline = time.monotonic() + self.grace
        print(
            f"optml: {signal.Signals(signum).name} passed on to {len(reached)} process(es) of the script;"
            f" whatever is left in {max(self.deadline - time.monotonic(), 0):.0f} s is killed",
            file=sys.stderr,
            flush=True,
        )


def _tee(source: int, keep: bytearray) -> None:
    """Copy the child's stderr to ours as it arrives, keeping the tail."""
    while chunk := os.read(source, 65536):
        try:
            view = memoryview(chunk)
            while view:
                view = view[os.write(sys.stderr.fileno(), view) :]
        except OSError:
            pass  # our stderr is gone: keep draining the pipe, or the script would block on a full one
        keep.extend(chunk)
        del keep[:-STDERR_TAIL_BYTES]
    os.close(source)


def run_user_process(
    argv: list[str], cwd: Path, env: Mapping[str, str], grace_s: float, torchrun: bool = False
) -> Outcome:
    """Run `argv` to its end (or the stop's); the launcher's own processes started before it are spared."""
    launcher = os.getpid()
    stop = _Stop(launcher, frozenset(descendants(launcher)), grace_s)
    previous = {signum: signal.signal(signum, stop.handle) for signum in STOP_SIGNALS}
    tail = bytearray()
    try:
        sys.stderr.flush()
        sys.stdout.flush()
        child = subprocess.Popen(argv, cwd=cwd, env=dict(env), stderr=subprocess.PIPE, start_new_session=True)
        stop.agent = child.pid if torchrun else None
        assert child.stderr is not None
        reader = threading.Thread(target=_tee, args=(os.dup(child.stderr.fileno()), tail), daemon=True)
        child.stderr.close()
        reader.start()
        if stop.deadline is not None:  # stopped while it started: it gets the signal too
            stop.handle(signal.Signals[stop.signal_name or "SIGTERM"], None)
        exit_code = _supervise(child, stop)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    kill_tree(launcher, stop.spare)  # what the script left running ends with it
    reader.join(timeout=5)
    return Outcome(exit_code, bytes(tail).decode("utf-8", errors="replace"), stop.signal_name)


def _supervise(child: subprocess.Popen[bytes], stop: _Stop) -> int:
    """Poll until the child exits, reaping orphans that were re-parented to us on the way."""
    while True:
        code = _reap(child)
        if code is not None:
            return code
        if stop.deadline is not None and not stop.killed and time.monotonic() >= stop.deadline:
            print(
                f"optml: the grace period is over: killing the script's {stop.signal_name} survivors", file=sys.stderr
            )
            kill_tree(stop.launcher, stop.spare)
            stop.killed = True
        time.sleep(POLL_SECONDS)


def _reap(child: subprocess.Popen[bytes]) -> int | None:
    """The child's exit code once it has exited (128 + N for signal N); reaps any other dead process of ours."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere already
            return child.poll()
        if pid == 0:
            return None
        if pid == child.pid:
            code = os.waitstatus_to_exitcode(status)
            child.returncode = 128 - code if code < 0 else code
            return child.returncode
