"""The image's health check: /ping when a model server runs in the container, healthy otherwise."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from optml.container import healthcheck
from optml.serve.main import gunicorn_command


def fake_proc(root: Path, *commands: list[str]) -> Path:
    """A /proc with one numbered directory per process, each with its NUL-separated cmdline."""
    (root / "self").mkdir(parents=True)
    for pid, command in enumerate(commands, start=1):
        (root / str(pid)).mkdir()
        (root / str(pid) / "cmdline").write_bytes(b"\0".join(part.encode() for part in command) + b"\0")
    return root


@pytest.fixture
def ping_server() -> Iterator[tuple[int, list[int]]]:
    """A stand-in for the model server on a free port: /ping answers the first status in `statuses`."""
    statuses = [200]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self.send_response(statuses[0] if self.path == "/ping" else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], statuses
    server.shutdown()
    server.server_close()


def test_the_server_is_recognised_by_the_command_serve_runs(tmp_path: Path) -> None:
    serving = fake_proc(tmp_path / "a", ["/bin/bash", "-c", "sleep 1"], gunicorn_command())
    assert healthcheck.server_running(serving)
    training = fake_proc(tmp_path / "b", ["python", "-m", "optml.container.entrypoint", "train"])
    assert not healthcheck.server_running(training)


@pytest.mark.parametrize(
    "command",
    [
        ["python", "-m", "optml.container.entrypoint", "train"],
        ["python", "-m", "optml.container.entrypoint"],  # no argument, hyperparameters.json present: training
        ["/bin/bash", "-c", "chmod +x /opt/ml/input/data/sm_drivers/sm_train.sh && ..."],  # SDK v3 script mode
    ],
)
def test_a_container_without_a_model_server_is_healthy(tmp_path: Path, command: list[str]) -> None:
    assert healthcheck.check({}, fake_proc(tmp_path, command)) == (
        0,
        "no model server in this container (training or another command): nothing to check",
    )


def test_a_server_is_healthy_only_while_ping_answers_200(tmp_path: Path, ping_server: tuple[int, list[int]]) -> None:
    port, statuses = ping_server
    proc = fake_proc(tmp_path, gunicorn_command())
    environment = {"SAGEMAKER_BIND_TO_PORT": str(port)}
    assert healthcheck.check(environment, proc) == (0, f"model server on port {port}: /ping answered 200")
    statuses[0] = 503
    assert healthcheck.check(environment, proc) == (1, f"http://127.0.0.1:{port}/ping answered HTTP 503")


def test_a_server_that_does_not_answer_is_unhealthy(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, gunicorn_command())
    status, message = healthcheck.check({"SAGEMAKER_BIND_TO_PORT": "1"}, proc)  # nothing listens on port 1
    assert status == 1
    assert message.startswith("http://127.0.0.1:1/ping did not answer: ")
