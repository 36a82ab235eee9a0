"""`optml build` through the real engine: `make image` and `optml build` give the same image, for linux/amd64;
the CPU image does not ask for GPUs."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import docker
import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.docker

TAGS = ("optml:build-check", "optml:build-check-make")  # removed afterwards (the tags: the layers stay cached)


@pytest.fixture
def tags(docker_client: docker.DockerClient) -> Iterator[tuple[str, str]]:
    yield TAGS
    for tag in TAGS:
        try:
            docker_client.images.remove(tag, noprune=True)
        except docker.errors.ImageNotFound:
            pass


def test_optml_build_and_make_image_give_the_same_image(
    docker_client: docker.DockerClient, image: str, tags: tuple[str, str]
) -> None:
    """`image` first: the session's image build fills the layer cache, so both builds here take seconds."""
    tag, make_tag = tags
    built = subprocess.run(
        [sys.executable, "-m", "optml.cli", "build", "--image", tag],
        cwd=REPO, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    image_id = docker_client.images.get(tag).id
    assert built.stdout.splitlines() == [f"image     {tag}", "platform  linux/amd64", f"id        {image_id}"]
    assert f"optml build: docker build of {tag} for linux/amd64 from " in built.stderr
    assert f"Successfully tagged {tag}" in built.stderr
    # -o: the venv is `make test`'s business (and already there); what is compared is the image recipe.
    made = subprocess.run(
        ["make", "-o", ".venv/.installed", "image", f"IMAGE={make_tag}"],
        cwd=REPO, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert docker_client.images.get(make_tag).id == image_id


def test_the_image_is_linux_amd64_and_the_cpu_variant(docker_client: docker.DockerClient, image: str) -> None:
    attributes = docker_client.images.get(image).attrs
    assert (attributes["Os"], attributes["Architecture"]) == ("linux", "amd64")
    assert not [variable for variable in attributes["Config"]["Env"] if variable.startswith("NVIDIA_")]
