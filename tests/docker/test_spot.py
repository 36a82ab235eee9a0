"""Spot interruptions and stops against real containers: `docker kill` (SIGKILL) and `docker stop`
(SIGTERM) at several points, then a restart on the same /opt/ml — the final model must be bit-identical
to an uninterrupted run's, with the channels loaded into memory and streamed (data_loading=stream)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import docker
import pytest
from docker.models.containers import Container

from tests.conftest import make_classification, make_opt_ml
from tests.docker.conftest import wait_for_exit

pytestmark = [pytest.mark.docker, pytest.mark.slow]

RunContainer = Callable[..., Container]
HYPERPARAMETERS = {
    "epochs": "3",
    "batch_size": "16",
    "hidden_units": "64,32",
    "dropout": "0.1",
    "checkpoint_every_steps": "10",
    "keep_checkpoints": "3",
}
CHECKPOINT = re.compile(r"checkpoint-algo-1-e(\d{5})-b(\d{7})\.pt$")


@pytest.fixture(scope="module", params=["memory", "stream"])
def loading(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def new_job(root: Path, loading: str) -> Path:
    return make_opt_ml(
        root,
        make_classification(3000, 8, 2, seed=1),
        make_classification(300, 8, 2, seed=2),
        HYPERPARAMETERS | {"data_loading": loading, "shuffle_buffer_rows": "500"},
    )


def progress(root: Path) -> tuple[int, int]:
    """(epoch, batch) of the newest checkpoint, (0, 0) when there is none."""
    found = (
        [CHECKPOINT.search(p.name) for p in (root / "checkpoints").glob("*.pt")]
        if (root / "checkpoints").exists()
        else []
    )
    return max(((int(m[1]), int(m[2])) for m in found if m), default=(0, 0))


def wait_for_progress(container: Container, root: Path, target: tuple[int, int], deadline_s: float = 120) -> None:
    started = time.monotonic()
    while progress(root) < target:
        container.reload()
        if container.status == "exited":
            pytest.fail(f"training ended before reaching {target}:\n{container.logs().decode()[-3000:]}")
        if time.monotonic() - started > deadline_s:
            pytest.fail(f"no checkpoint at {target} within {deadline_s}s")
        time.sleep(0.02)


def mount(root: Path) -> dict[str, dict[str, str]]:
    return {str(root): {"bind": "/opt/ml", "mode": "rw"}}


@pytest.fixture(scope="module")
def uninterrupted_weights(
    tmp_path_factory: pytest.TempPathFactory, docker_client: docker.DockerClient, image: str, loading: str
) -> bytes:
    root = new_job(tmp_path_factory.mktemp("spot-reference") / "ml", loading)
    container = docker_client.containers.run(image, ["train"], detach=True, volumes=mount(root))
    try:
        status, logs = wait_for_exit(container)
    finally:
        container.remove(force=True)
    assert status == 0, logs
    return (root / "model" / "model.safetensors").read_bytes()


def test_killed_twice_mid_epoch_then_resumed_ends_with_identical_weights(
    tmp_path: Path, run_container: RunContainer, uninterrupted_weights: bytes, loading: str
) -> None:
    root = new_job(tmp_path, loading)
    for target in [(1, 40), (2, 100)]:  # mid-epoch 1, then late in epoch 2
        container = run_container("train", volumes=mount(root))
        wait_for_progress(container, root, target)
        container.kill()  # SIGKILL: no handler runs
        wait_for_exit(container)
    status, logs = wait_for_exit(run_container("train", volumes=mount(root)))
    assert status == 0, logs
    assert re.search(r"resuming from checkpoint-algo-1-e00002-b\d{7}\.pt: epoch 2, batch \d+ of that epoch", logs)
    assert (root / "model" / "model.safetensors").read_bytes() == uninterrupted_weights


def test_docker_stop_checkpoints_saves_a_model_and_resumes_exactly(
    tmp_path: Path, run_container: RunContainer, uninterrupted_weights: bytes, loading: str
) -> None:
    root = new_job(tmp_path, loading)
    container = run_container("train", volumes=mount(root))
    wait_for_progress(container, root, (1, 60))
    started = time.monotonic()
    container.stop(timeout=60)  # SIGTERM, SIGKILL only if it were still running after 60 s
    stopped_in = time.monotonic() - started
    status, logs = wait_for_exit(container)
    assert status == 0, logs
    assert stopped_in < 10, f"took {stopped_in:.1f}s to stop"
    assert "SIGTERM received: finishing the current step" in logs
    assert "saved the model as of the stop to /opt/ml/model" in logs
    assert (root / "model" / "model.safetensors").exists()
    status, logs = wait_for_exit(run_container("train", volumes=mount(root)))
    assert status == 0, logs
    assert (root / "model" / "model.safetensors").read_bytes() == uninterrupted_weights
