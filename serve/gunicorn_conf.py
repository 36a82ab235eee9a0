"""gunicorn configuration; every setting comes from the environment (see serve/settings.py).

`gunicorn --config python:serve.gunicorn_conf --print-config ...` prints the resolved values.
"""

import os

from serve.settings import ServerSettings

_settings = ServerSettings.from_env(os.environ)

bind = [f"0.0.0.0:{_settings.port}"]
if _settings.multi_model:
    # Models are loaded at run time by POST /models: one process holds the registry, so that every
    # request sees every model; threads give the concurrency (torch releases the GIL while it computes).
    workers = 1
    worker_class = "gthread"
    threads = _settings.workers
else:
    # One request at a time per worker, as with sync workers, but gthread keeps client connections
    # alive: measured 1.5x the single-row throughput of sync workers (benchmarks/RESULTS.md).
    workers = _settings.workers
    worker_class = "gthread"
    threads = 1
# An idle connection stays open longer than a typical proxy's 60 s idle timeout, so the proxy never
# reuses a connection that the server is just closing.
keepalive = 75
timeout = _settings.timeout
# SageMaker sends SIGKILL 30 s after SIGTERM: finish in-flight requests well before that.
graceful_timeout = 25
# Load the model once in the master, before any worker accepts traffic; workers share its pages.
preload_app = True
accesslog = "-"
errorlog = "-"
loglevel = "info"
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms'


def post_fork(server: object, worker: object) -> None:
    import torch

    torch.set_num_threads(_settings.threads_per_worker)
