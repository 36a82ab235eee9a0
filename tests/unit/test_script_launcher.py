"""Running the user's code: exit codes passed through, stderr streamed and kept, SIGTERM reaching every process
the script started (grandchildren in sessions of their own included) at once, and the tree killed after the
grace period. The launcher runs in a process of its own here, as it does in the container, to be signalled."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from optml.container.errors import UserError
from optml.train.script.launcher import grace_seconds
from tests.conftest import REPO

LAUNCH = """
import json, os, sys
from pathlib import Path
from optml.train.script.process_tree import become_subreaper
from optml.train.script.launcher import run_user_process
become_subreaper()
code = Path(sys.argv[1])
outcome = run_user_process([sys.executable, "script.py"], code, dict(os.environ), float(sys.argv[2]))
print("OUTCOME " + json.dumps({"exit_code": outcome.exit_code, "stderr": outcome.stderr_tail,
                              "stopped_by": outcome.stopped_by}), flush=True)
"""

# A script with a child in its process group and a grandchild in a session of its own (as torchrun starts its
# workers); each records its pid, and on SIGTERM writes a marker and exits (or ignores it, to test the kill).
TREE = """
import os, signal, subprocess, sys, time
from pathlib import Path
role = sys.argv[1] if len(sys.argv) > 1 else "script"
here = Path.cwd()
def on_term(signum, frame):
    (here / f"{role}.terminated").write_text("SIGTERM")
    sys.exit(0)
signal.signal(signal.SIGTERM, signal.SIG_IGN if os.environ.get("IGNORE_TERM") else on_term)
if role == "script":
    subprocess.Popen([sys.executable, "script.py", "child"])
elif role == "child":
    subprocess.Popen([sys.executable, "script.py", "grandchild"], start_new_session=True)
(here / f"{role}.pid").write_text(str(os.getpid()))
while True:
    time.sleep(0.05)
"""


def launch(code: Path, script: str, grace: float = 30.0, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    (code / "script.py").write_text(textwrap.dedent(script))
    return subprocess.Popen(
        [sys.executable, "-c", LAUNCH, str(code), str(grace)],
        cwd=code,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def outcome_of(launcher: subprocess.Popen[str], timeout: float = 60) -> tuple[dict, str, str]:
    stdout, stderr = launcher.communicate(timeout=timeout)
    line = next((line for line in stdout.splitlines() if line.startswith("OUTCOME ")), None)
    assert line is not None, stdout + stderr
    return json.loads(line[len("OUTCOME ") :]), stdout, stderr


def wait_for(paths: list[Path], launcher: subprocess.Popen[str], deadline_s: float = 30) -> None:
    started = time.monotonic()
    while not all(path.exists() and path.read_text() for path in paths):
        assert launcher.poll() is None, launcher.communicate()
        assert time.monotonic() - started < deadline_s, f"not all of {paths} appeared"
        time.sleep(0.02)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def test_the_exit_code_is_the_scripts_and_stderr_is_streamed_and_kept(tmp_path: Path) -> None:
    script = """
    import sys
    print("to stdout", flush=True)
    print("to stderr", file=sys.stderr)
    sys.exit(3)
    """
    outcome, stdout, stderr = outcome_of(launch(tmp_path, script))
    assert outcome == {"exit_code": 3, "stderr": "to stderr\n", "stopped_by": None}
    assert "to stdout" in stdout  # inherited, not captured
    assert "to stderr" in stderr  # teed to the launcher's own stderr


def test_a_script_killed_by_a_signal_exits_128_plus_the_signal(tmp_path: Path) -> None:
    outcome, _, _ = outcome_of(launch(tmp_path, "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n"))
    assert outcome["exit_code"] == 137


def test_sigterm_reaches_every_process_of_the_tree_at_once(tmp_path: Path) -> None:
    launcher = launch(tmp_path, TREE)
    roles = ("script", "child", "grandchild")
    wait_for([tmp_path / f"{role}.pid" for role in roles], launcher)
    launcher.send_signal(signal.SIGTERM)
    outcome, _, stderr = outcome_of(launcher)
    assert {role: (tmp_path / f"{role}.terminated").exists() for role in roles} == dict.fromkeys(roles, True)
    assert (outcome["exit_code"], outcome["stopped_by"]) == (0, "SIGTERM")
    assert "SIGTERM passed on to 3 process(es) of the script" in stderr


def test_after_the_grace_period_the_whole_tree_is_killed(tmp_path: Path) -> None:
    launcher = launch(tmp_path, TREE, grace=1.0, env={"IGNORE_TERM": "1"})
    roles = ("script", "child", "grandchild")
    wait_for([tmp_path / f"{role}.pid" for role in roles], launcher)
    pids = [int((tmp_path / f"{role}.pid").read_text()) for role in roles]
    started = time.monotonic()
    launcher.send_signal(signal.SIGTERM)
    outcome, _, stderr = outcome_of(launcher)
    assert 1.0 <= time.monotonic() - started < 20
    assert outcome["exit_code"] == 137
    assert "the grace period is over" in stderr
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [pid for pid in pids if alive(pid)] == []


def test_processes_left_running_end_with_the_script(tmp_path: Path) -> None:
    script = """
    import subprocess, sys
    from pathlib import Path
    daemon = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True)
    Path("daemon.pid").write_text(str(daemon.pid))
    """
    outcome, _, _ = outcome_of(launch(tmp_path, script))
    assert outcome["exit_code"] == 0
    pid = int((tmp_path / "daemon.pid").read_text())
    deadline = time.monotonic() + 10
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not alive(pid)


@pytest.mark.parametrize(("value", "expected"), [(None, 110.0), ("30", 30.0), ("2.5", 2.5)])
def test_the_grace_period_is_110_seconds_unless_configured(value: str | None, expected: float) -> None:
    assert grace_seconds({} if value is None else {"OPTML_STOP_GRACE_SECONDS": value}) == expected


def test_a_grace_period_that_is_not_a_number_is_the_users_to_fix() -> None:
    with pytest.raises(UserError, match="OPTML_STOP_GRACE_SECONDS must be a number of seconds, got '2m'"):
        grace_seconds({"OPTML_STOP_GRACE_SECONDS": "2m"})


def test_our_own_processes_are_not_the_scripts(tmp_path: Path) -> None:
    """Only what the script started is signalled: the launcher's earlier children are left alone."""
    from optml.train.script.process_tree import descendants

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        mine = descendants(os.getpid())
        assert sleeper.pid in mine
        assert sleeper.pid not in descendants(os.getpid(), frozenset({sleeper.pid}))
    finally:
        sleeper.kill()
        sleeper.wait()
