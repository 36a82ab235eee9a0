"""The Docker engine for the commands that build and push images: one place that connects, and says what to do
when there is no engine to connect to."""

from __future__ import annotations

from typing import TYPE_CHECKING

from optml.cli.errors import CliError

if TYPE_CHECKING:
    import docker

# Seconds the engine may stay silent before a request fails. A push waits on the registry (a large layer's
# last bytes, ECR finishing an upload), so the SDK's 60 s default is too short for it.
TIMEOUT_S = 600


def connect(timeout: int = TIMEOUT_S) -> docker.DockerClient:
    """A client for the engine that DOCKER_HOST (or the default socket) names, with the registry credentials
    of the user's ~/.docker/config.json (DOCKER_CONFIG), as the docker command would use them."""
    import docker

    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except docker.errors.DockerException as error:
        raise CliError(f"cannot reach the Docker engine ({error}): start Docker, or set DOCKER_HOST") from None
    return client
