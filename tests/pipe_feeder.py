"""SageMaker's Pipe input mode on one machine: a host thread that feeds a channel's files into named pipes.

In Pipe mode SageMaker's agent makes a FIFO per pass over a channel, `/opt/ml/input/data/<channel>_<n>`
(n = 0, 1, …), opens FIFO n for writing once the algorithm opens it for reading, writes the channel's
objects back to back, closes it (the reader sees end of file) and makes FIFO n+1 available. `PipeFeeder`
does the same into the host folder mounted as /opt/ml/input/data: named pipes on a bind mount work across
the container boundary, since both sides share the kernel.

Used by the Pipe-mode docker tests and benchmarks/streaming_speed.py:

    with PipeFeeder(tree / "input/data", "train", sorted(source.glob("*.csv"))) as feeder:
        ... start the container, wait for it ...
    feeder.served  # passes written in full
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

CHUNK = 1 << 20  # bytes per write


class PipeFeeder:
    """Feeds `files` into `<data_dir>/<channel>_<n>`, one full pass per FIFO, until stopped.

    `ahead` FIFOs beyond the one being written exist at any time (SageMaker creates the next one when a pass
    ends; a few ahead lets a reader that opens the next pass early find it). Opening is polled
    (O_NONBLOCK: no reader yet is ENXIO) so `stop()` ends the thread even when no reader ever comes; a reader
    that goes away mid-pass (the container exited) ends it too.
    """

    def __init__(
        self, data_dir: Path, channel: str, files: Sequence[Path], ahead: int = 2, poll_s: float = 0.01
    ) -> None:
        self.data_dir, self.channel, self.files = data_dir, channel, list(files)
        self.ahead, self.poll_s = ahead, poll_s
        self.served = 0  # passes written in full and closed
        self.bytes_written = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"pipe-feeder-{channel}", daemon=True)

    def fifo(self, n: int) -> Path:
        return self.data_dir / f"{self.channel}_{n}"

    def start(self) -> PipeFeeder:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for n in range(self.ahead + 1):
            self._make(n)
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def __enter__(self) -> PipeFeeder:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def _make(self, n: int) -> None:
        path = self.fifo(n)
        if not path.exists():
            os.mkfifo(path, 0o666)
            os.chmod(path, 0o666)  # the container's user may not be ours; umask must not narrow it

    def _run(self) -> None:
        n = 0
        try:
            while not self._stop.is_set():
                fd = self._open_when_read(self.fifo(n))
                if fd is None:
                    return
                if not self._write_pass(fd):
                    return
                self.served += 1
                n += 1
                self._make(n + self.ahead)
        except BaseException as error:  # noqa: BLE001 - kept for the caller to report; the thread must end
            self.error = error

    def _open_when_read(self, path: Path) -> int | None:
        """The FIFO opened for writing once a reader has it open; None when stopped first."""
        while not self._stop.is_set():
            try:
                return os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as error:
                if error.errno != errno.ENXIO:  # ENXIO: nobody reads it yet
                    raise
            time.sleep(self.poll_s)  # polling the FIFO, not synchronizing on time
        return None

    def _write_pass(self, fd: int) -> bool:
        """Every file back to back, then close (end of file for the reader). False if the reader went away."""
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        try:
            with os.fdopen(fd, "wb", buffering=0) as pipe:
                for path in self.files:
                    with path.open("rb") as source:
                        while chunk := source.read(CHUNK):
                            if self._stop.is_set():
                                return False
                            view = memoryview(chunk)
                            while view:  # a write to a pipe may take part of the chunk
                                view = view[pipe.write(view) or 0 :]
                            self.bytes_written += len(chunk)
        except BrokenPipeError:
            return False
        return True
