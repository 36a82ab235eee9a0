"""The server under real gunicorn (not the flask test client): bodies arrive through gunicorn's readers,
which serve/body.py reads in one piece when the request has a Content-Length."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from gunicorn.http.body import Body, LengthReader
from gunicorn.http.unreader import Unreader

from container.artifact import load_model
from serve.app import create_app
from serve.body import read_body
from serve.errors import RequestError
from tests.conftest import REPO, make_classification

ROWS = make_classification(3000, 4, 2, seed=21)[:, 1:]  # ~100 KB of CSV: many socket reads, the pyarrow path
BODY = ("\n".join(",".join(str(v) for v in row) for row in ROWS) + "\n").encode()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Server:
    url: str
    port: int
    log: Path  # the server's stdout and stderr


@pytest.fixture(scope="module")
def server(trained_binary_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SM_", "SAGEMAKER_"))}
    env |= {"SM_MODEL_DIR": str(trained_binary_model), "SAGEMAKER_MODEL_SERVER_WORKERS": "1", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "gunicorn", "--config", "python:serve.gunicorn_conf",
               "--bind", f"127.0.0.1:{port}", "serve.wsgi:create_app_from_environment()"]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("gunicorn") / "server.log"
    with (
        open(log, "wb") as output,
        subprocess.Popen(command, env=env, cwd=REPO, stdout=output, stderr=output) as process,
    ):
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and process.poll() is None:
                try:
                    if requests.get(f"{url}/ping", timeout=5).status_code == 200:
                        break
                except requests.ConnectionError:
                    time.sleep(0.05)
            else:
                process.kill()
                pytest.fail(f"gunicorn did not answer /ping within 60 s: {log.read_text()[-2000:]}")
            yield Server(url, port, log)
        finally:
            process.terminate()
            process.wait(timeout=30)


def expected_labels(model_dir: Path) -> list[str]:
    return [str(label) for label in load_model(model_dir).predict(ROWS).labels]


def test_a_large_body_with_content_length_is_read_whole(server: Server, trained_binary_model: Path) -> None:
    response = requests.post(f"{server.url}/invocations", data=BODY, headers={"Content-Type": "text/csv"}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.text.splitlines() == expected_labels(trained_binary_model)


def test_a_chunked_body_is_read_whole(server: Server, trained_binary_model: Path) -> None:
    pieces = (BODY[i : i + 5000] for i in range(0, len(BODY), 5000))  # a generator: requests sends it chunked
    response = requests.post(f"{server.url}/invocations", data=pieces, headers={"Content-Type": "text/csv"}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.text.splitlines() == expected_labels(trained_binary_model)


def test_a_body_shorter_than_its_content_length_is_a_400(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        head = f"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\nContent-Length: {len(BODY)}\r\n\r\n"
        sock.sendall(head.encode() + BODY[:20000])
        sock.shutdown(socket.SHUT_WR)  # the client gives up mid-body
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.split()[1] == b"400", answer[:500]
    assert f"ended after 20000 bytes; Content-Length said {len(BODY)}".encode() in rest


class ResetAfter(Unreader):
    """A socket that gives `data`, then fails as a client reset does."""

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self.pieces = [data]

    def chunk(self) -> bytes:
        if self.pieces:
            return self.pieces.pop()
        raise ConnectionResetError(104, "Connection reset by peer")


def test_a_client_that_resets_mid_body_is_a_400_not_a_server_error(trained_binary_model: Path) -> None:
    """Seen from gunicorn's reader, deterministically: the reset surfaces as OSError while the body is read.
    SageMaker must not count it as a 5XX, and the message says what happened."""
    app = create_app(load_model(trained_binary_model))
    stream = Body(LengthReader(ResetAfter(BODY[:20000]), len(BODY)))
    environ = {"wsgi.input": stream, "CONTENT_LENGTH": str(len(BODY))}
    with app.test_request_context("/invocations", method="POST", content_type="text/csv", environ_overrides=environ):
        with pytest.raises(RequestError) as raised:
            read_body()
    assert raised.value.status == 400
    assert raised.value.message == (
        f"the request body could not be read ([Errno 104] Connection reset by peer); Content-Length said {len(BODY)}"
    )
