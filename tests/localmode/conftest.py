"""Fixtures of the local-mode tests."""

from __future__ import annotations

import socket

import pytest

# The Docker engine and the image under test, as the container tests have them.
from tests.docker.conftest import docker_client, image  # noqa: F401


@pytest.fixture
def serving_port() -> int:
    """A free host port for the local endpoint: the default 8080 may be taken by another run or server."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
