"""gunicorn configuration; every setting comes from the environment (see serve/settings.py).

`gunicorn --config python:optml.serve.gunicorn_conf --print-config ...` prints the resolved values.
"""

import gc
import os

from optml.serve.body import drain_or_close
from optml.serve.settings import ServerSettings

_settings = ServerSettings.from_env(os.environ)

bind = [f"0.0.0.0:{_settings.port}"]
if _settings.multi_model:
    # Models are loaded at run time by POST /models: one process holds the registry, so that every
    # request sees every model; threads give the concurrency (torch releases the GIL while it computes).
    workers = 1
    worker_class = "gthread"
    threads = _settings.workers
else:
    # sync: one request at a time per worker, a new connection per request. gthread with one thread
    # (keep-alive) measured no consistent gain on the dev VM (benchmarks/RESULTS.md), so the simpler one.
    workers = _settings.workers
    worker_class = "sync"
# gthread (multi-model) only: an idle connection stays open longer than a typical proxy's 60 s idle
# timeout, so the proxy never reuses a connection the server is just closing.
keepalive = 75
timeout = _settings.timeout
# SageMaker sends SIGKILL 30 s after SIGTERM: finish in-flight requests well before that.
graceful_timeout = 25
# Load the model once in the master, before any worker accepts traffic; workers share its pages.
preload_app = True
# Off by default: formatting and writing a line per request took ~12% of a worker's time on one-row
# requests, SageMaker already counts invocations, latency and errors in CloudWatch metrics, and failed
# requests are logged by the app with their reason. OPTML_ACCESS_LOG=true turns it on.
accesslog = "-" if _settings.access_log else None
errorlog = "-"
loglevel = "info"
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms'


def when_ready(server: object) -> None:
    # Runs in the master after the model is loaded, before the workers fork: moving every object to the
    # permanent generation keeps the garbage collector from touching (and so copying) the shared pages
    # in each worker, and from scanning them on every collection.
    gc.freeze()


def post_request(worker: object, req: object, environ: object, resp: object) -> None:
    drain_or_close(req)  # the unread rest of a refused body, so that the client reads the answer


def post_fork(server: object, worker: object) -> None:
    import torch

    torch.set_num_threads(_settings.threads_per_worker)


def post_worker_init(worker: object) -> None:
    # Script mode: the user's model_fn runs here, in each worker after the fork (serve/readiness.py).
    app = getattr(worker, "wsgi", None)
    start = getattr(app, "extensions", {}).get("optml.worker_start")
    if start is not None:
        start(worker.notify, worker.age)  # type: ignore[attr-defined]
