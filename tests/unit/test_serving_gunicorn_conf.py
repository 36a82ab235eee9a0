"""gunicorn's configuration as the image resolves it from the environment."""

from __future__ import annotations

import gc
import importlib
import subprocess
import sys
from types import ModuleType

import pytest

from tests.conftest import REPO


def load_conf(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> ModuleType:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    from optml.serve import gunicorn_conf

    return importlib.reload(gunicorn_conf)


def test_a_stop_before_gunicorn_takes_over_exits_at_once() -> None:
    """`serve` execs `python -m optml.serve.run`: a stop before gunicorn has its own handlers (it loads the model
    first) exits 143 instead of waiting, as PID 1, for SageMaker's SIGKILL."""
    script = (
        "import os, signal, gunicorn.app.wsgiapp as wsgiapp;"
        "wsgiapp.run = lambda prog: os.kill(os.getpid(), signal.SIGTERM);"  # a stop while gunicorn starts
        "from optml.serve import run; run.main(); print('not reached')"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout) == (143, "")


def test_single_model_uses_sync_workers_sharing_a_preloaded_model(monkeypatch: pytest.MonkeyPatch) -> None:
    conf = load_conf(monkeypatch, {"SAGEMAKER_MODEL_SERVER_WORKERS": "3", "SAGEMAKER_BIND_TO_PORT": "9000"})
    assert (conf.workers, conf.worker_class, conf.preload_app, conf.bind) == (3, "sync", True, ["0.0.0.0:9000"])
    assert conf.graceful_timeout < 30  # SageMaker's SIGKILL follows SIGTERM after 30 s


def test_the_access_log_is_off_unless_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_conf(monkeypatch, {}).accesslog is None
    assert load_conf(monkeypatch, {"OPTML_ACCESS_LOG": "true"}).accesslog == "-"


def test_multi_model_runs_one_process_with_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    conf = load_conf(monkeypatch, {"SAGEMAKER_MULTI_MODEL": "true", "SAGEMAKER_MODEL_SERVER_WORKERS": "4"})
    assert (conf.workers, conf.worker_class, conf.threads) == (1, "gthread", 4)


def test_the_master_freezes_the_garbage_collector_before_forking(monkeypatch: pytest.MonkeyPatch) -> None:
    conf = load_conf(monkeypatch, {})
    try:
        conf.when_ready(None)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
