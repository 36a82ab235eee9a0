"""Every process the user's code started, found through /proc, to signal them all at once.

A process group is not enough: torchrun starts each worker in a session of its own (so that it can signal
them itself), and a user's script may do the same. Parent links are: as a child subreaper (or PID 1, which
the launcher is in a container) the launcher inherits every orphan, so a process whose parent exited is
still found, under the launcher.
"""

from __future__ import annotations

import ctypes
import os
import signal
from pathlib import Path

PROC = Path("/proc")
PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Orphans of the user's code are re-parented to this process instead of PID 1 (Linux); False elsewhere."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def parent_links(proc: Path = PROC) -> dict[int, int]:
    """pid → parent pid for every process visible here."""
    links: dict[int, int] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # it exited while we looked
        # The command name (field 2) is in parentheses and may itself hold spaces or parentheses.
        fields = stat[stat.rindex(")") + 2 :].split()
        links[int(entry.name)] = int(fields[1])
    return links


def descendants(root: int, spare: frozenset[int] = frozenset(), proc: Path = PROC) -> list[int]:
    """Every process below `root`, parents before their children, leaving out the subtrees of `spare`."""
    children: dict[int, list[int]] = {}
    for pid, parent in parent_links(proc).items():
        children.setdefault(parent, []).append(pid)
    found: list[int] = []
    queue = [pid for pid in children.get(root, []) if pid not in spare]
    while queue:
        pid = queue.pop(0)
        found.append(pid)
        queue.extend(children.get(pid, []))
    return found


def signal_all(pids: list[int], signum: int) -> list[int]:
    """Send `signum` to each pid; the ones that were still there."""
    reached = []
    for pid in pids:
        try:
            os.kill(pid, signum)
            reached.append(pid)
        except ProcessLookupError:
            pass
    return reached


def kill_tree(root: int, spare: frozenset[int] = frozenset()) -> None:
    """SIGKILL every process below `root` but the `spare` subtrees, pass after pass until one finds none
    alive: a process forking while it is killed leaves no survivor. Zombies (already dead, not yet reaped)
    do not count."""
    for _ in range(10):
        alive = [pid for pid in descendants(root, spare) if not _zombie(pid)]
        if not signal_all(alive, signal.SIGKILL):
            return


def _zombie(pid: int, proc: Path = PROC) -> bool:
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2 :].split()[0] in ("Z", "X")
