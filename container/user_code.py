"""The user's own code (SageMaker script mode), as training and serving both receive it: its requirements.txt
installed before it runs.

pip reads PIP_INDEX_URL, PIP_EXTRA_INDEX_URL and PIP_FIND_LINKS (and every other PIP_* setting) from the
environment itself, so a job points it at a mirror or at a wheelhouse in a channel with those variables alone
and works air-gapped. A failed install is a UserError naming the package and quoting pip's last lines.
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from collections import deque
from pathlib import Path

from optml.container.errors import UserError

log = logging.getLogger(__name__)

REQUIREMENTS_FILE = "requirements.txt"
PIP_TAIL_LINES = 6  # pip's last lines kept for the failure reason
# How pip names the requirement it could not satisfy.
UNSATISFIED = (
    re.compile(r"No matching distribution found for (\S+)"),
    re.compile(r"Could not find a version that satisfies the requirement (\S+)"),
    re.compile(r"Failed to build (\S+)"),
)


def install_requirements(code_dir: Path) -> bool:
    """pip install -r `code_dir`/requirements.txt into the image's Python, its output streamed to the log as it
    comes; False when there is none. Raises UserError when pip fails."""
    requirements = code_dir / REQUIREMENTS_FILE
    if not requirements.is_file():
        return False
    log.info("installing %s", requirements)
    command = [sys.executable, "-m", "pip", "install", "--no-cache-dir", "--disable-pip-version-check", "-r"]
    tail: deque[str] = deque(maxlen=PIP_TAIL_LINES)
    with subprocess.Popen(
        [*command, str(requirements)],
        cwd=code_dir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        errors="replace",
    ) as pip:
        assert pip.stdout is not None
        for line in pip.stdout:
            print(line, end="", flush=True)
            if line.strip():
                tail.append(line.strip())
    if pip.returncode != 0:
        raise UserError(failure_reason(requirements, list(tail), pip.returncode))
    return True


def failure_reason(requirements: Path, tail: list[str], exit_code: int) -> str:
    """What the failure file says: the package pip could not install (when pip names it), then its last lines."""
    found = (match.group(1) for line in tail for pattern in UNSATISFIED if (match := pattern.search(line)))
    package = next(found, None)
    what = f"package {package}" if package else f"pip exited with {exit_code}"
    return f"{requirements} could not be installed ({what}); pip said: " + " | ".join(tail)
