"""Container fixtures: the Docker engine, the image under test, containers that are always removed, `train`
hosts named algo-1, algo-2, … on one network (`start_host`), and polling helpers. Local mode's tests use
`docker_client` and `image` too (tests/localmode/conftest.py)."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest
import requests
from docker.models.containers import Container

from tests.conftest import REPO


@pytest.fixture(scope="session")
def docker_client() -> docker.DockerClient:
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as error:
        pytest.fail(f"these tests need a running Docker engine ({error}); .ci/run starts one, or run make test-quick")
    return client


@pytest.fixture(scope="session")
def image(docker_client: docker.DockerClient) -> str:
    """The image under test: $OPTML_IMAGE, built with `make image` if it is not there yet."""
    name = os.environ.get("OPTML_IMAGE", "optml:latest")
    try:
        docker_client.images.get(name)
    except docker.errors.ImageNotFound:
        subprocess.run(["make", "image", f"IMAGE={name}"], cwd=REPO, check=True)
    return name


@pytest.fixture
def run_container(docker_client: docker.DockerClient, image: str) -> Iterator[Callable[..., Container]]:
    """Start containers of the image (detached); every one is force-removed after the test."""
    started: list[Container] = []

    def start(*command: str, **options: object) -> Container:
        container = docker_client.containers.run(image, list(command) or None, detach=True, **options)
        started.append(container)
        return container

    yield start
    remove_all(started)


StartHost = Callable[..., Container]


@pytest.fixture
def start_host(docker_client: docker.DockerClient, image: str) -> Iterator[StartHost]:
    """Starts `train` containers on one fresh network, each reachable by its SageMaker host name (algo-1, ...).
    Every container, exited or not, and the network are removed afterwards."""
    network = docker_client.networks.create(f"optml-test-{uuid.uuid4().hex[:8]}", driver="bridge")
    started: list[Container] = []

    def start(host: str, tree: Path, env: dict[str, str] | None = None) -> Container:
        container = docker_client.containers.create(
            image,
            ["train"],
            hostname=host,
            volumes={str(tree): {"bind": "/opt/ml", "mode": "rw"}},
            environment=env or {},
            network=network.name,
        )
        started.append(container)
        network.disconnect(container)
        network.connect(container, aliases=[host])  # resolvable as algo-1 / algo-2, as on SageMaker
        container.start()
        return container

    yield start
    remove_all(started)
    network.remove()


def remove_all(containers: list[Container]) -> None:
    """Force-remove containers, running or exited; ones already gone are fine."""
    for container in containers:
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            pass


def wait_for_exit(container: Container, timeout: float = 180) -> tuple[int, str]:
    result = container.wait(timeout=timeout)
    return int(result["StatusCode"]), container.logs().decode("utf-8", errors="replace")


def host_port(container: Container, port: str = "8080/tcp") -> int:
    container.reload()
    return int(container.ports[port][0]["HostPort"])


def wait_until_healthy(container: Container, url: str, deadline_s: float = 60) -> float:
    """Poll /ping until it answers 200; returns the seconds it took. Fails with the logs on timeout."""
    started = time.monotonic()
    while time.monotonic() - started < deadline_s:
        container.reload()
        if container.status == "exited":
            pytest.fail(f"server exited before it was healthy:\n{container.logs().decode()}")
        try:
            if requests.get(f"{url}/ping", timeout=1).status_code == 200:
                return time.monotonic() - started
        except requests.ConnectionError:
            pass
        time.sleep(0.05)
    pytest.fail(f"/ping not healthy within {deadline_s}s:\n{container.logs().decode()}")
