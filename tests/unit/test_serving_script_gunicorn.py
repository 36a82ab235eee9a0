"""Script mode under real gunicorn: model_fn runs in each worker after the fork, /ping waits for all of them,
and a script that cannot be served stops the server with its reason."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from tests.conftest import ENV_PREFIXES, REPO, model_with_script
from tests.unit.test_serving_gunicorn import _free_port

DEADLINE_S = 60

SLOW_MODEL_FN = """
    import json, os, time, warnings
    from pathlib import Path

    import torch

    def model_fn(model_dir):
        time.sleep(2)  # a slow load: the server must not say it is ready before this returns, in every worker
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            model = torch.jit.load(os.path.join(model_dir, "model.pt"))
        (Path(os.environ["MARKERS"]) / str(os.getpid())).write_text("loaded")
        return {"pid": os.getpid(), "model": model}

    def predict_fn(data, model):
        return [model["pid"], os.getpid(), model["model"](data).tolist()]

    def output_fn(prediction, accept):
        return json.dumps(prediction)
"""


@contextmanager
def gunicorn(model_dir: Path, log: Path, **env: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = _free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIXES)}
    environment |= {"SM_MODEL_DIR": str(model_dir), "PYTHONPATH": str(REPO), "SAGEMAKER_MODEL_SERVER_WORKERS": "2"}
    command = [sys.executable, "-m", "gunicorn", "--config", "python:optml.serve.gunicorn_conf",
               "--bind", f"127.0.0.1:{port}", "optml.serve.wsgi:create_app_from_environment()"]  # fmt: skip
    with open(log, "wb") as output:
        process = subprocess.Popen(command, env=environment | env, cwd=REPO, stdout=output, stderr=output)
        try:
            yield process, f"http://127.0.0.1:{port}"
        finally:
            process.terminate()
            process.wait(timeout=30)


def test_ping_is_503_until_model_fn_has_returned_in_every_worker(tmp_path: Path, torchscript_dir: Path) -> None:
    model_dir = model_with_script(tmp_path, torchscript_dir, SLOW_MODEL_FN)
    markers = tmp_path / "markers"
    markers.mkdir()
    log = tmp_path / "server.log"
    with gunicorn(model_dir, log, MARKERS=str(markers)) as (server, url):
        answers: list[int] = []
        deadline = time.monotonic() + DEADLINE_S
        while not answers or answers[-1] != 200:
            assert time.monotonic() < deadline and server.poll() is None, log.read_text()[-3000:]
            try:
                ping = requests.get(f"{url}/ping", timeout=5)
            except requests.ConnectionError:
                time.sleep(0.05)  # polling interval: nothing listens yet
                continue
            answers.append(ping.status_code)
            if ping.status_code == 503:
                assert ping.json()["error"] == "loading"
                time.sleep(0.05)  # polling interval
        loaded_when_ready = sorted(p.name for p in markers.iterdir())
        replies = [
            requests.post(f"{url}/invocations", data="1,2,3\n", headers={"Content-Type": "text/csv"}, timeout=10).json()
            for _ in range(8)
        ]

    assert answers[0] == 503, answers  # the workers answer while model_fn runs: loading, not ready
    assert len(loaded_when_ready) == 2, log.read_text()[-3000:]  # 200 only after both workers' model_fn
    for model_pid, request_pid, scores in replies:
        assert model_pid == request_pid != server.pid  # model_fn ran in the worker that serves, not the master
        assert str(model_pid) in loaded_when_ready
        assert scores == [[1.0, 5.5]]


@pytest.mark.parametrize(
    ("script", "logged"),
    [
        (
            "def model_fn(model_dir):\n    return 1 / 0\n",
            "model_fn raised ZeroDivisionError: division by zero",
        ),
        (
            "def transform_fn(model, body, content_type, accept): ...\ndef model_fn(model_dir): ...\n",
            "defines transform_fn together with model_fn",
        ),
    ],
)
def test_a_script_that_cannot_be_served_stops_the_server_with_its_reason(
    tmp_path: Path,
    torchscript_dir: Path,
    script: str,
    logged: str,
) -> None:
    model_dir = model_with_script(tmp_path, torchscript_dir, textwrap.dedent(script))
    log = tmp_path / "server.log"
    with gunicorn(model_dir, log) as (server, _):
        exit_code = server.wait(timeout=DEADLINE_S)

    output = log.read_text()
    assert exit_code == 3, output[-3000:]
    assert logged in output, output[-3000:]
