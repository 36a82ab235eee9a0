"""The server in the real image: draining on SIGTERM, and a multi-model endpoint."""

from __future__ import annotations

import shutil
import socket
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import docker
import pytest
import requests
from docker.models.containers import Container

from optml.container.artifact import load_model
from tests.conftest import make_classification
from tests.docker.conftest import host_port, wait_for_exit, wait_until_healthy

pytestmark = pytest.mark.docker

RunContainer = Callable[..., Container]
ROWS = make_classification(5, 4, 2, seed=41)[:, 1:]
CSV = "\n".join(",".join(map(repr, row)) for row in ROWS.tolist())
CHILDREN_OF_PID_1 = (
    "import os; print(' '.join(p for p in os.listdir('/proc') if p.isdigit()"
    " and open(f'/proc/{p}/stat').read().rsplit(')', 1)[1].split()[1] == '1'))"
)
COUNT_SOCKETS = (
    "import os, sys; fds = f'/proc/{sys.argv[1]}/fd/'; "
    "print(sum(os.readlink(fds + fd).startswith('socket:') for fd in os.listdir(fds)))"
)


def worker_pid(container: Container) -> str:
    """The one gunicorn worker: the only child of PID 1 (gunicorn's master, exec'd by the entrypoint)."""
    code, output = container.exec_run(["python", "-c", CHILDREN_OF_PID_1])
    children = output.decode().split()
    assert code == 0 and len(children) == 1, output
    return children[0]


def socket_count(container: Container, pid: str) -> int:
    code, output = container.exec_run(["python", "-c", COUNT_SOCKETS, pid])
    assert code == 0, output
    return int(output)


def poll(condition: Callable[[], bool], deadline_s: float, what: str) -> None:
    started = time.monotonic()
    while time.monotonic() - started < deadline_s:
        if condition():
            return
        time.sleep(0.05)
    pytest.fail(f"{what} did not happen within {deadline_s}s")


def test_sigterm_lets_the_request_in_flight_finish(trained_binary_model: Path, run_container: RunContainer) -> None:
    container = run_container(
        "serve",
        volumes={str(trained_binary_model): {"bind": "/opt/ml/model", "mode": "ro"}},
        ports={"8080/tcp": ("127.0.0.1", None)},
        environment={"SAGEMAKER_MODEL_SERVER_WORKERS": "1"},
    )
    port = host_port(container)
    wait_until_healthy(container, f"http://127.0.0.1:{port}")
    worker = worker_pid(container)
    idle = socket_count(container, worker)

    body = CSV.encode()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as client:
        head = f"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\nContent-Length: {len(body)}\r\n\r\n"
        client.sendall(head.encode() + body[:10])
        # The worker has accepted the connection (one more socket) and waits for the rest of the body.
        poll(lambda: socket_count(container, worker) == idle + 1, 20, "the worker accepting the request")
        container.kill(signal="SIGTERM")
        client.sendall(body[10:])
        answer = b""
        while chunk := client.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 200 OK", answer
    expected = [str(label) for label in load_model(trained_binary_model).predict(ROWS).labels]
    assert rest.partition(b"\r\n\r\n")[2].decode().splitlines() == expected
    status, logs = wait_for_exit(container, timeout=30)
    assert status == 0, logs


def test_multi_model_endpoint_in_the_image(
    trained_binary_model: Path,
    tmp_path: Path,
    run_container: RunContainer,
    docker_client: docker.DockerClient,
    image: str,
) -> None:
    labels = docker_client.images.get(image).attrs["Config"]["Labels"]
    assert labels["com.amazonaws.sagemaker.capabilities.multi-models"] == "true"
    models = tmp_path / "models"
    shutil.copytree(trained_binary_model, models / "one" / "model")
    (models / "two").mkdir()
    with tarfile.open(models / "two" / "model.tar.gz", "w:gz") as archive:
        for path in trained_binary_model.iterdir():
            archive.add(path, arcname=path.name)

    container = run_container(
        "serve",
        volumes={str(models): {"bind": "/opt/ml/models", "mode": "ro"}},
        ports={"8080/tcp": ("127.0.0.1", None)},
        environment={"SAGEMAKER_MULTI_MODEL": "true", "SAGEMAKER_MODEL_SERVER_WORKERS": "2"},
    )
    url = f"http://127.0.0.1:{host_port(container)}"
    wait_until_healthy(container, url)
    for name, model_url in (("one", "/opt/ml/models/one/model"), ("two", "/opt/ml/models/two")):
        response = requests.post(f"{url}/models", json={"model_name": name, "url": model_url}, timeout=30)
        assert response.status_code == 200, response.text
    assert requests.post(f"{url}/models", json={"model_name": "one", "url": "one/model"}, timeout=10).status_code == 409

    expected = [str(label) for label in load_model(trained_binary_model).predict(ROWS).labels]
    for name in ("one", "two"):
        response = requests.post(
            f"{url}/models/{name}/invoke", data=CSV, headers={"Content-Type": "text/csv"}, timeout=10
        )
        assert response.text.splitlines() == expected
    assert [m["modelName"] for m in requests.get(f"{url}/models", timeout=10).json()["models"]] == [
        "one",
        "two",
    ]
    assert requests.delete(f"{url}/models/one", timeout=10).status_code == 200
    assert requests.get(f"{url}/models/one", timeout=10).status_code == 404
