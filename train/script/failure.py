"""The failure file for a script that exited non-zero: what broke first, in the user's words — the exception
type and message from the last Python traceback in its stderr — then the exit code and the command, within
SageMaker's 1024 characters. The toolkit writes `ExecuteUserScriptError` with an empty message instead.

A failure file the script wrote itself says more than we can and is never overwritten.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from optml.container.failure import FAILURE_REASON_LIMIT, truncate_reason, write_failure

TRACEBACK_START = "Traceback (most recent call last):"
FRAME = '  File "'  # also how a SyntaxError in the entry point itself starts: no "Traceback" line above it
EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*)(?::(?: (.*))?)?$")
# Lines that end an exception's multi-line message: another traceback, or the launcher's log lines
# (torchrun's glog-style `E1201 12:00:00.123 ...`).
MESSAGE_END = re.compile(r"^(Traceback |During handling|The above exception|[EWIF]\d{4} |\[)")
# torchrun's own exception when a worker fails: the worker's traceback above it is the one that matters.
LAUNCHER_EXCEPTIONS = ("torch.distributed.elastic.",)
MESSAGE_LINES = 5
EXCEPTION_BUDGET = 700  # bytes for the exception, so the exit code and command still fit
OOM_EXIT_CODE = 137  # 128 + SIGKILL: what the kernel's out-of-memory killer leaves


def last_exception(stderr: str) -> str | None:
    """`Type: message` of the last traceback in `stderr` (a launcher's own excepted), or None."""
    lines = stderr.splitlines()
    found: str | None = None
    in_frames = False
    for index, line in enumerate(lines):
        if line.startswith(TRACEBACK_START) or line.startswith(FRAME):
            in_frames = True
        elif in_frames and line and not line[0].isspace():
            in_frames = False
            match = EXCEPTION_LINE.match(line)
            if match and not match.group(1).startswith(LAUNCHER_EXCEPTIONS):
                found = _with_continuation(line, lines[index + 1 : index + 1 + MESSAGE_LINES])
    return found


def _with_continuation(first: str, following: list[str]) -> str:
    message = [first]
    for line in following:
        if not line.strip() or MESSAGE_END.match(line) or line.startswith(FRAME):
            break
        message.append(line)
    return "\n".join(message)


def exit_description(program: str, exit_code: int) -> str:
    if exit_code == OOM_EXIT_CODE:
        return f"{program} was killed (out of memory?): exit code {exit_code}"
    return f"{program} exited with code {exit_code}"


def failure_reason(program: str, exit_code: int, command: list[str], stderr_tail: str) -> str:
    """Exception first (or what the exit code says), then `ExitCode N` and `Command "..."`, ≤ 1024 bytes."""
    exception = last_exception(stderr_tail)
    head = truncate_reason(exception, EXCEPTION_BUDGET) if exception else exit_description(program, exit_code)
    lines = [head]
    if exception and exit_code == OOM_EXIT_CODE:
        lines.append("killed (out of memory?)")
    lines += [f"ExitCode {exit_code}", f'Command "{shlex.join(command)}"']
    return truncate_reason("\n".join(lines), FAILURE_REASON_LIMIT)


def file_state(path: Path) -> tuple[int, int] | None:
    """(size, mtime in ns) of a file, None when there is none: taken before the script runs, to tell a failure
    file it wrote from one that was there already."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


def report_failure(failure_file: Path, reason: str, before: tuple[int, int] | None) -> bool:
    """Write `reason` unless the script wrote a failure file of its own; whether it was written."""
    after = file_state(failure_file)
    if after is not None and after != before and after[0] > 0:
        return False
    write_failure(failure_file, reason)
    return True
