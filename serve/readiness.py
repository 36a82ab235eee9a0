"""Script mode's start in each gunicorn worker: model_fn runs after the fork (a CUDA model cannot be forked),
and /ping answers 200 only once it has returned in every worker — the toolkits report ready too early.

The count of loaded workers lives in shared memory created in the master before the fork. At start-up a
worker runs model_fn in a thread and meanwhile answers /ping (503 "loading") and /invocations (503). A
worker that replaces one later (after a crash or a timeout) runs model_fn before it accepts any request,
so the others keep serving, with gunicorn's heartbeat kept up meanwhile. A model_fn that fails ends its
worker with gunicorn's boot-error code, which stops the whole server: the endpoint fails to start, with
the reason in its log, rather than restarting the worker forever.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from optml.container.artifact import ModelLoadError
from optml.serve.script import ScriptModel
from optml.serve.user_module import UserCodeError

log = logging.getLogger("optml.serve")

WORKER_START = "optml.worker_start"  # the Flask app's extension gunicorn_conf.post_worker_init calls
WORKER_BOOT_ERROR = 3  # gunicorn's arbiter halts the server when a worker exits with it


class WorkerReadiness:
    """How many workers have finished model_fn, shared by every process forked after it is made."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._loaded = multiprocessing.get_context("fork").Value("i", 0)
        self._failed = multiprocessing.get_context("fork").Value("i", 0)

    @property
    def loaded(self) -> int:
        return int(self._loaded.value)

    def all_loaded(self) -> bool:
        return self.loaded >= self.workers

    def mark_loaded(self) -> None:
        with self._loaded.get_lock():
            self._loaded.value += 1

    def first_failure(self) -> bool:
        """True for the first worker whose model_fn fails, only. gunicorn halts on a worker's boot-error exit,
        but a second one reaped while it halts crashes its shutdown: the others wait for its SIGTERM instead."""
        with self._failed.get_lock():
            first = not self._failed.value
            self._failed.value = 1
        return first


def start_worker(
    model: ScriptModel, readiness: WorkerReadiness, heartbeat_s: float, notify: Callable[[], None], number: int
) -> None:
    """gunicorn's post_worker_init, in worker `number` (1, 2, ...: gunicorn's age of the worker)."""
    if readiness.all_loaded():
        with heartbeat(notify, heartbeat_s):
            load_or_exit(model, readiness, number)
    else:
        threading.Thread(target=load_or_exit, args=(model, readiness, number), name="model_fn", daemon=True).start()


def load_or_exit(model: ScriptModel, readiness: WorkerReadiness, number: int) -> None:
    started = time.monotonic()
    try:
        model.load(gpu_id(number))
    except BaseException as error:
        if isinstance(error, ModelLoadError | UserCodeError):
            log.error("cannot serve: %s", error, exc_info=error.__cause__)
        else:
            log.exception("cannot serve: model_fn failed")
        if readiness.first_failure():
            _exit(WORKER_BOOT_ERROR)
        return  # not loaded: this worker answers 503 until the halting server stops it
    readiness.mark_loaded()
    log.info(
        "model_fn returned in worker %d (pid %d) after %.2f s: %d of %d workers loaded",
        number, os.getpid(), time.monotonic() - started, readiness.loaded, readiness.workers,
    )  # fmt: skip


def gpu_id(number: int) -> int | None:
    """The GPU worker `number` uses, round robin; None without one. Asked in the worker, after the fork."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return (number - 1) % count if count else None


@contextmanager
def heartbeat(notify: Callable[[], None], interval_s: float) -> Iterator[None]:
    """Tells gunicorn's arbiter the worker is alive while it is busy outside its request loop."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval_s):
            notify()

    thread = threading.Thread(target=beat, name="heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _exit(code: int) -> None:
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # from a thread too: the process ends, and the arbiter reads the code
