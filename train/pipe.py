"""SageMaker Pipe mode: a channel's data as FIFOs, read once each, with a deadline on every wait.

In Pipe mode the channel directory does not exist. SageMaker's agent creates one FIFO per pass over the
data, `/opt/ml/input/data/<channel>_0`, `<channel>_1`, …, and writes the channel's S3 objects into it back
to back. A FIFO is read once, front to back: it cannot be rewound, so every epoch reads the next one.

Opening a FIFO with a plain blocking `open()` waits, without a bound, for a writer; reading then waits,
without a bound, for data. A pipe the agent never writes (a wrong channel name, a failed download) would
hang training until SageMaker's own job timeout. So `open_fifo`:

- polls for the FIFO to appear, until the deadline;
- opens it O_RDONLY | O_NONBLOCK, which succeeds at once without a writer, and then waits for data with
  poll() and a timeout. On Linux a reader that has never seen a writer gets no POLLHUP (the kernel only
  reports a hang-up after a writer has come and gone), so "no writer yet" waits for POLLIN instead of
  reading as end-of-file; once a writer has connected, POLLHUP with nothing left is end-of-file;
- fails with a UserError naming the channel, the FIFO, the seconds waited and the hyperparameter
  `pipe_read_timeout_seconds` when no data arrives in time: the FIFO never appears, no writer ever
  writes, or a writer stalls mid-stream. A writer that closes early is an ordinary end-of-file (the
  trainer compares a pass's rows with the first pass's and reports a short pass).

`FifoStream` is a raw binary stream (io.RawIOBase), so pyarrow reads it through pa.PythonFile; `peek`
returns the first bytes without consuming them, for sniffing the format.
"""

from __future__ import annotations

import errno
import io
import math
import os
import select
import time
from pathlib import Path

from optml.container.errors import UserError

HYPERPARAMETER = "pipe_read_timeout_seconds"
APPEAR_POLL_S = 0.02  # how often to look for a FIFO that does not exist yet


def fifo_path(data_dir: Path, channel: str, pass_index: int) -> Path:
    """The FIFO SageMaker creates for pass `pass_index` over `channel`."""
    return data_dir / f"{channel}_{pass_index}"


class FifoStream(io.RawIOBase):
    """A FIFO opened for reading; every wait for data is bounded by `timeout_s`."""

    def __init__(self, path: Path, fd: int, timeout_s: float, channel: str) -> None:
        super().__init__()
        self.path = path
        self.channel = channel
        self.timeout_s = timeout_s
        self.bytes_read = 0
        self.error: UserError | None = None  # kept: pyarrow may wrap the exception a read raises
        self.first_deadline: float | None = None  # time.monotonic() by which the first data must arrive
        self._fd = fd
        self._pending = b""
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)

    def readable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def peek(self, size: int) -> bytes:
        """Up to `size` bytes from the start of what is not read yet (fewer only at end-of-file), left
        to be read again."""
        while len(self._pending) < size:
            chunk = self._read_raw(size - len(self._pending))
            if not chunk:
                break
            self._pending += chunk
        return self._pending[:size]

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        if self._pending:
            count = min(len(view), len(self._pending))
            view[:count] = self._pending[:count]
            self._pending = self._pending[count:]
            return count
        chunk = self._read_raw(len(view))
        view[: len(chunk)] = chunk
        return len(chunk)

    def _read_raw(self, size: int) -> bytes:
        deadline = time.monotonic() + self.timeout_s
        if not self.bytes_read and self.first_deadline is not None:
            deadline = self.first_deadline  # the wait for a writer counts from open_fifo's call
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._stalled()
            if not self._poll.poll(math.ceil(remaining * 1000)):
                continue
            try:
                chunk = os.read(self._fd, max(1, size))
            except BlockingIOError:
                continue  # woken without data (a spurious wake-up): wait again
            self.bytes_read += len(chunk)
            return chunk  # b"": the writer has closed, end-of-file

    def _stalled(self) -> UserError:
        if self.bytes_read:
            what = f"stopped delivering data after {self.bytes_read} bytes: nothing for {self.timeout_s:g} seconds"
        else:
            what = f"delivered no data within {self.timeout_s:g} seconds (no writer opened it, or it wrote nothing)"
        self.error = UserError(
            f"channel {self.channel!r}: Pipe mode FIFO {self.path} {what}; raise the hyperparameter"
            f" {HYPERPARAMETER} if the data is slow to arrive"
        )
        return self.error

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


def open_fifo(path: Path, timeout_s: float, channel: str) -> FifoStream:
    """Open the FIFO at `path` for reading, waiting at most `timeout_s` seconds for it to appear.

    Reads of the returned stream raise UserError when no data arrives for `timeout_s` seconds."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
            break
        except FileNotFoundError:
            if time.monotonic() >= deadline:
                raise UserError(
                    f"channel {channel!r}: Pipe mode FIFO {path} did not appear within {timeout_s:g} seconds;"
                    f" is the channel configured with input mode Pipe? (hyperparameter {HYPERPARAMETER})"
                ) from None
            time.sleep(min(APPEAR_POLL_S, max(0.0, deadline - time.monotonic())))
        except OSError as error:
            if error.errno == errno.EINTR:
                continue
            raise UserError(f"channel {channel!r}: cannot open Pipe mode FIFO {path}: {error.strerror}") from None
    stream = FifoStream(path, fd, timeout_s, channel)
    stream.first_deadline = deadline
    return stream
