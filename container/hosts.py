"""The job's hosts as the container sees them: names from resourceconfig.json that may take a while to
resolve, and a network interface name that may not exist here (SDK v3 local mode writes `ethwe`, and its
containers have only eth0).

Torch-free, so that script mode's launcher, which only starts the user's code, does not pay for importing it.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

from optml.container.errors import UserError

PEER_WAIT_SECONDS = 300.0  # hostnames of other instances can take a while to resolve
NET_CLASS_DIR = Path("/sys/class/net")
DEFAULT_INTERFACE = "eth0"  # SageMaker's and local mode's usual interface


def wait_for_host(host: str, deadline_s: float = PEER_WAIT_SECONDS) -> str:
    """The host's address; SageMaker's hostnames may not resolve at first, so retry until the deadline."""
    started = time.monotonic()
    while True:
        try:
            return socket.gethostbyname(host)
        except OSError:
            if time.monotonic() - started > deadline_s:
                raise UserError(
                    f"host {host!r} from resourceconfig.json never became reachable by name within"
                    f" {deadline_s:.0f} s; check that every instance of the job started"
                ) from None
            time.sleep(1.0)


def interface_exists(name: str, net_dir: Path = NET_CLASS_DIR) -> bool:
    return (net_dir / name).exists()


def usable_interface(name: str | None, net_dir: Path = NET_CLASS_DIR) -> str:
    """`name` when this container has it; else eth0 when it exists, else the first other interface, loopback
    last (a container without a network has only lo); `name` (or eth0) when none can be listed."""
    if name and interface_exists(name, net_dir):
        return name
    if interface_exists(DEFAULT_INTERFACE, net_dir):
        return DEFAULT_INTERFACE
    present = sorted((path.name == "lo", path.name) for path in net_dir.iterdir()) if net_dir.is_dir() else []
    return present[0][1] if present else name or DEFAULT_INTERFACE
