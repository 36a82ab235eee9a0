"""The server under real gunicorn (not the flask test client): bodies arrive through gunicorn's readers,
which serve/body.py reads in one piece when the request has a Content-Length."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests
from gunicorn.http.body import Body, ChunkedReader, LengthReader
from gunicorn.http.unreader import Unreader

from optml.container.artifact import load_model
from optml.serve.app import create_app
from optml.serve.body import read_body
from optml.serve.builtin import BuiltinModel
from optml.serve.errors import RequestError
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


@contextmanager
def gunicorn_server(log: Path, **settings: str) -> Iterator[Server]:
    """The real server (gunicorn with serve/gunicorn_conf.py) on a free port; `settings` are environment
    variables (SM_MODEL_DIR, SAGEMAKER_BATCH, ...)."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SM_", "SAGEMAKER_", "OPTML_ROOT"))}
    env |= {"SAGEMAKER_MODEL_SERVER_WORKERS": "1", "PYTHONPATH": str(REPO)} | settings
    command = [sys.executable, "-m", "gunicorn", "--config", "python:optml.serve.gunicorn_conf",
               "--bind", f"127.0.0.1:{port}", "optml.serve.wsgi:create_app_from_environment()"]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
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


@pytest.fixture(scope="module")
def server(trained_binary_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("gunicorn") / "server.log"
    with gunicorn_server(log, SM_MODEL_DIR=str(trained_binary_model)) as running:
        yield running


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
    app = create_app(BuiltinModel.load(trained_binary_model))
    stream = Body(LengthReader(ResetAfter(BODY[:20000]), len(BODY)))
    environ = {"wsgi.input": stream, "CONTENT_LENGTH": str(len(BODY))}
    with app.test_request_context("/invocations", method="POST", content_type="text/csv", environ_overrides=environ):
        with pytest.raises(RequestError) as raised:
            read_body(LIMIT)
    assert raised.value.status == 400
    assert raised.value.message == (
        f"the request body could not be read ([Errno 104] Connection reset by peer); Content-Length said {len(BODY)}"
    )


def test_a_chunked_body_cut_by_a_reset_or_broken_framing_is_a_400(trained_binary_model: Path) -> None:
    app = create_app(BuiltinModel.load(trained_binary_model))
    framed = b"4e20\r\n" + BODY[:20000] + b"\r\n"  # one 20000-byte chunk, then the client resets
    for source, reason in (
        (ResetAfter(framed), "([Errno 104] Connection reset by peer)"),
        (ResetAfter(b"zz\r\n"), "(Invalid chunk size: b'zz')"),
    ):
        environ = {"wsgi.input": Body(ChunkedReader(None, source)), "wsgi.input_terminated": True}
        headers = {"Transfer-Encoding": "chunked"}
        with app.test_request_context(
            "/invocations", method="POST", content_type="text/csv", headers=headers, environ_overrides=environ
        ):
            with pytest.raises(RequestError) as raised:
                read_body(LIMIT)
        assert (raised.value.status, raised.value.message) == (
            400,
            f"the chunked request body could not be read {reason}",
        )


# ---- the payload limit, for bodies with and without a Content-Length --------------------------------------

LIMIT = 6 * 1024 * 1024  # SAGEMAKER_MAX_PAYLOAD_IN_MB's default
TOO_LARGE = {
    "error": "request_entity_too_large",
    "message": f"request body is larger than the {LIMIT} bytes this endpoint accepts",
}
LINE = b"0.12345,-1.5,0.25,2.0\n"


def csv_body(size: int) -> tuple[bytes, int]:
    """Numeric CSV rows for the 4-feature model, exactly `size` bytes, ending on a newline; and its row count.
    The last row's first number is padded with zeros (same value) to reach the size."""
    count, extra = divmod(size, len(LINE))
    return LINE * (count - 1) + LINE.replace(b"0.12345", b"0.12345" + b"0" * extra, 1), count


def chunked(body: bytes, piece: int = 256 * 1024) -> Iterator[bytes]:
    """A generator: requests sends it with Transfer-Encoding: chunked and no Content-Length."""
    return (body[i : i + piece] for i in range(0, len(body), piece))


def post_chunked(url: str, body: bytes, content_type: str) -> requests.Response:
    return requests.post(url, data=chunked(body), headers={"Content-Type": content_type}, timeout=120)


AT_LIMIT, AT_LIMIT_ROWS = csv_body(LIMIT)
OVER_LIMIT = {
    "one byte over": AT_LIMIT + b"\n",
    # The case that lost data: 7 MiB whose first 6 MiB end on a newline got 200 and the first 6 MiB's rows.
    "7 MiB, the first 6 MiB ending on a newline": AT_LIMIT + csv_body(1024 * 1024)[0],
    "far over (24 MiB)": AT_LIMIT * 4,
}


def test_a_chunked_body_exactly_at_the_limit_gets_every_row_answered(server: Server) -> None:
    response = post_chunked(f"{server.url}/invocations", AT_LIMIT, "text/csv")
    assert response.status_code == 200, response.text[:500]
    assert len(response.text.splitlines()) == AT_LIMIT_ROWS


@pytest.mark.parametrize("body", OVER_LIMIT.values(), ids=OVER_LIMIT.keys())
def test_a_chunked_body_over_the_limit_is_a_413_never_a_cut_body(server: Server, body: bytes) -> None:
    response = post_chunked(f"{server.url}/invocations", body, "text/csv")
    assert (response.status_code, response.json()) == (413, TOO_LARGE)


def _rows_over_limit() -> np.ndarray:
    return np.full((LIMIT // 32 + 1, 4), 0.123456789)  # float64: more than LIMIT bytes however written


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _npz(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, instances=array)
    return buffer.getvalue()


OVER_LIMIT_BY_TYPE = {
    "application/json": lambda rows: json.dumps({"instances": rows.tolist()}).encode(),
    "application/jsonlines": lambda rows: "".join(json.dumps(row) + "\n" for row in rows.tolist()).encode(),
    "application/x-npy": _npy,
    "application/x-npz": _npz,
}


@pytest.mark.parametrize("content_type", OVER_LIMIT_BY_TYPE)
def test_a_chunked_body_over_the_limit_is_a_413_in_every_content_type(server: Server, content_type: str) -> None:
    body = OVER_LIMIT_BY_TYPE[content_type](_rows_over_limit())
    assert len(body) > LIMIT
    response = post_chunked(f"{server.url}/invocations", body, content_type)
    assert (response.status_code, response.json()) == (413, TOO_LARGE)


def send_then_read(port: int, head: bytes, body: bytes) -> tuple[int, dict[str, object]]:
    """A client that sends its whole request before reading the answer (as most do): it only sees the answer
    if the server takes the whole body off the wire, also when it refused it without reading."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(head + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest.partition(b"\r\n\r\n")[2])


def test_a_content_length_far_over_the_limit_is_a_413_the_client_can_read(server: Server) -> None:
    """Refused from the header; the body is drained after the answer, so that the client reads the 413
    instead of a connection reset (gunicorn alone lingers over 64 KiB only)."""
    body = AT_LIMIT * 2
    head = f"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\nContent-Length: {len(body)}\r\n\r\n"
    assert send_then_read(server.port, head.encode(), body) == (413, TOO_LARGE)


def test_a_chunked_body_far_over_the_limit_is_a_413_the_client_can_read(server: Server) -> None:
    body = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in chunked(AT_LIMIT * 2)) + b"0\r\n\r\n"
    head = b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert send_then_read(server.port, head, body) == (413, TOO_LARGE)
    assert "Traceback" not in server.log.read_text()


@pytest.mark.parametrize("framing", ["chunked", "content-length"])
def test_a_body_beyond_the_drain_limit_gets_its_connection_shut(server: Server, framing: str) -> None:
    """The server drains at most 100 MiB of a refused body, then shuts the connection: a chunked body's
    sending fails after about that much (not at once, not never); one whose Content-Length already says it
    is longer is shut at once. Either way the worker is free again (it answers /ping)."""
    headers = "Transfer-Encoding: chunked" if framing == "chunked" else "Content-Length: 10000000000"
    piece = b"%x\r\n%s\r\n" % (len(AT_LIMIT), AT_LIMIT) if framing == "chunked" else AT_LIMIT
    sent = 0
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        sock.sendall(f"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n{headers}\r\n\r\n".encode())
        try:
            while sent < 400 * 2**20:
                sock.sendall(piece)  # whole pieces: a partial send would break the chunk framing
                sent += len(piece)
        except OSError:  # the server shut the connection
            pass
    if framing == "chunked":
        assert 100 * 2**20 <= sent < 200 * 2**20
    else:
        assert sent < 100 * 2**20
    assert requests.get(f"{server.url}/ping", timeout=10).status_code == 200


@pytest.fixture(scope="module")
def models_root(trained_binary_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An /opt/ml for a multi-model endpoint: the model under models/alpha."""
    root = tmp_path_factory.mktemp("mme") / "ml"
    shutil.copytree(trained_binary_model, root / "models" / "alpha")
    return root


@pytest.mark.parametrize("mode", ["batch", "multi-model"])
def test_the_limit_holds_for_chunked_bodies_in_batch_and_multi_model_endpoints(
    mode: str, trained_binary_model: Path, models_root: Path, tmp_path: Path
) -> None:
    settings = (
        {"SM_MODEL_DIR": str(trained_binary_model), "SAGEMAKER_BATCH": "true"}
        if mode == "batch"
        else {"OPTML_ROOT": str(models_root), "SAGEMAKER_MULTI_MODEL": "true"}
    )
    with gunicorn_server(tmp_path / "server.log", **settings) as running:
        url = f"{running.url}/invocations"
        if mode == "multi-model":
            load = requests.post(f"{running.url}/models", json={"model_name": "alpha", "url": "alpha"}, timeout=30)
            assert load.status_code == 200, load.text
            url = f"{running.url}/models/alpha/invoke"
            # POST /models reads its JSON body under the same limit
            oversized = json.dumps({"model_name": "beta", "url": "x" * LIMIT}).encode()
            response = post_chunked(f"{running.url}/models", oversized, "application/json")
            assert (response.status_code, response.json()) == (413, TOO_LARGE)
        response = post_chunked(url, AT_LIMIT, "text/csv")
        assert response.status_code == 200, response.text[:500]
        assert len(response.text.splitlines()) == AT_LIMIT_ROWS
        for body in OVER_LIMIT.values():
            response = post_chunked(url, body, "text/csv")
            assert (response.status_code, response.json()) == (413, TOO_LARGE)
