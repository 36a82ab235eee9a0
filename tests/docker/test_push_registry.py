"""`optml push --image-uri` to a real registry: Debian's docker-registry on loopback with htpasswd basic auth,
one instance started for this module on a free port. The push is refused before `docker login`, and after it
uses the credentials that login stored in the user's docker config; the tag and the printed digest are
checked through the registry's HTTP API, then the image is pulled back.

The image pushed is a tiny one made here (one small file), not optml:latest: what is under test is the push,
and gzipping 1.4 GB of layers on two cores would take minutes."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest
import requests

from tests.conftest import REPO

pytestmark = pytest.mark.docker

USER, PASSWORD = "optml", "push-test-password"
REPOSITORY = "optml-test"
MANIFEST_TYPES = ", ".join(
    (
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
    )
)


def require(binary: str, package: str) -> str:
    """The binary's path; where it is missing, a skip with the reason, but in CI (.ci/run installs it) a failure."""
    path = shutil.which(binary)
    if path is None:
        reason = f"{binary} is not installed (apt-get install {package}; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(frozen=True)
class Registry:
    host: str  # 127.0.0.1:PORT

    def url(self, path: str) -> str:
        return f"http://{self.host}{path}"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    registry_binary = require("docker-registry", "docker-registry")
    htpasswd = require("htpasswd", "apache2-utils")
    root = tmp_path_factory.mktemp("registry")
    # The registry reads bcrypt entries only.
    users = subprocess.run([htpasswd, "-Bbn", USER, PASSWORD], capture_output=True, text=True, check=True).stdout
    (root / "htpasswd").write_text(users)
    host = f"127.0.0.1:{free_port()}"
    (root / "config.yml").write_text(
        f"""version: 0.1
log: {{level: warn}}
storage:
  filesystem: {{rootdirectory: {root / "storage"}}}
http:
  addr: {host}
auth:
  htpasswd: {{realm: optml-test, path: {root / "htpasswd"}}}
"""
    )
    log = (root / "registry.log").open("wb")
    server = subprocess.Popen([registry_binary, "serve", str(root / "config.yml")], stdout=log, stderr=log)
    try:
        wait_until_serving(Registry(host), server, root / "registry.log")
        yield Registry(host)
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def wait_until_serving(registry: Registry, server: subprocess.Popen[bytes], log: Path, deadline_s: float = 30) -> None:
    """Until /v2/ answers 401 (auth is on); fails with the registry's log when it exits or the deadline passes."""
    started = time.monotonic()
    while time.monotonic() - started < deadline_s:
        if server.poll() is not None:
            pytest.fail(f"docker-registry exited with {server.returncode}:\n{log.read_text()}")
        try:
            if requests.get(registry.url("/v2/"), timeout=1).status_code == 401:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.05)
    pytest.fail(f"docker-registry did not answer on {registry.host} within {deadline_s} s:\n{log.read_text()}")


@pytest.fixture
def tiny_image(docker_client: docker.DockerClient) -> Iterator[str]:
    """A one-file image with content of its own, so each run pushes a new layer; removed afterwards."""
    content = f"optml push test {uuid.uuid4()}\n".encode()
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        info = tarfile.TarInfo("optml-push-test.txt")
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    name = f"optml-push-test:{uuid.uuid4().hex[:12]}"
    repository, tag = name.split(":")
    docker_client.api.import_image_from_data(layer.getvalue(), repository=repository, tag=tag)
    image_id = docker_client.images.get(name).id
    yield name
    try:  # every tag and digest reference to it: the source's, the pushed one's, the pulled one's
        docker_client.images.remove(image_id, force=True)
    except docker.errors.NotFound:
        pass


@pytest.fixture
def docker_config(tmp_path: Path) -> dict[str, str]:
    """The environment of a user whose docker config (~/.docker/config.json) is empty so far."""
    config = tmp_path / "docker-config"
    config.mkdir()
    return {**os.environ, "DOCKER_CONFIG": str(config)}


def optml(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "optml.cli", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )


def docker_login(registry: Registry, env: dict[str, str]) -> None:
    login = subprocess.run(
        ["docker", "login", registry.host, "--username", USER, "--password-stdin"],
        input=PASSWORD, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert login.returncode == 0, login.stderr


def test_a_push_before_docker_login_is_refused_with_what_to_do(
    registry: Registry, tiny_image: str, docker_config: dict[str, str]
) -> None:
    uri = f"{registry.host}/{REPOSITORY}:refused"
    pushed = optml("push", "--image", tiny_image, "--image-uri", uri, env=docker_config)
    assert pushed.returncode == 2
    assert pushed.stdout == ""
    assert pushed.stderr.splitlines()[-1].startswith(f"optml: error: push to {registry.host} failed: ")
    assert pushed.stderr.rstrip().endswith(f"; log in first: docker login {registry.host}")
    tags = requests.get(registry.url(f"/v2/{REPOSITORY}/tags/list"), auth=(USER, PASSWORD), timeout=10)
    assert tags.status_code == 404 or "refused" not in (tags.json().get("tags") or [])


def test_push_after_docker_login_is_in_the_registry_with_the_printed_digest(
    registry: Registry, tiny_image: str, docker_config: dict[str, str], docker_client: docker.DockerClient
) -> None:
    docker_login(registry, docker_config)
    tag = tiny_image.split(":")[1]
    uri = f"{registry.host}/{REPOSITORY}:{tag}"
    pushed = optml("push", "--image", tiny_image, "--image-uri", uri, env=docker_config)
    assert pushed.returncode == 0, pushed.stderr
    image_line, digest_line = pushed.stdout.splitlines()
    assert image_line == f"image   {uri}"
    assert digest_line.startswith("digest  sha256:")
    digest = digest_line.split()[1]
    # Progress on stderr: the layer's states, then the registry's own digest line.
    assert f"The push refers to repository [{registry.host}/{REPOSITORY}]" in pushed.stderr
    assert ": Pushed" in pushed.stderr
    assert f"{tag}: digest: {digest}" in pushed.stderr

    # The registry, asked directly: the tag names a manifest with exactly that digest.
    manifest_url = registry.url(f"/v2/{REPOSITORY}/manifests/{tag}")
    assert requests.get(manifest_url, headers={"Accept": MANIFEST_TYPES}, timeout=10).status_code == 401
    manifest = requests.get(manifest_url, headers={"Accept": MANIFEST_TYPES}, auth=(USER, PASSWORD), timeout=10)
    assert manifest.status_code == 200
    assert manifest.headers["Docker-Content-Digest"] == digest
    assert "sha256:" + hashlib.sha256(manifest.content).hexdigest() == digest
    tags = requests.get(registry.url(f"/v2/{REPOSITORY}/tags/list"), auth=(USER, PASSWORD), timeout=10).json()
    assert tag in tags["tags"]

    # Pulled back, by digest, into an engine that no longer has the image: the same image comes back.
    source_id = docker_client.images.get(tiny_image).id
    docker_client.images.remove(source_id, force=True)
    pulled = subprocess.run(
        ["docker", "pull", f"{registry.host}/{REPOSITORY}@{digest}"],
        env=docker_config, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert pulled.returncode == 0, pulled.stderr
    image = docker_client.images.get(f"{registry.host}/{REPOSITORY}@{digest}")
    assert image.id == source_id
    assert f"{registry.host}/{REPOSITORY}@{digest}" in image.attrs["RepoDigests"]
