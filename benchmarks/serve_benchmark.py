"""Serving benchmark: optml's server against a canonical-BYOC-style baseline, same model, same workers.

Both servers run here under gunicorn with the same number of sync workers, bound to 127.0.0.1 only,
and are loaded by wrk (`apt-get install -y wrk`) on loopback, interleaved, in the same run:

    .venv/bin/python -m benchmarks.serve_benchmark                      # throughput, latency, RSS
    .venv/bin/python -m benchmarks.serve_benchmark --image optml:latest  # + container cold start
    .venv/bin/python -m benchmarks.serve_benchmark --nginx               # the baseline behind nginx

The example itself serves gunicorn on a unix socket behind nginx; `--nginx` does that too
(`apt-get install -y nginx`). Without it the baseline is gunicorn alone, which is kinder to it.

Scenarios: one CSV row per request, and 1000 CSV rows per request (30 features, the bundled
breast-cancer table, a 64-32 MLP trained here for a few epochs). It prints a markdown table; record it
in benchmarks/RESULTS.md with the machine and date. A script, not a test: timings depend on the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import requests

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data" / "breast_cancer"


@dataclass
class Load:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_ms_per_request: float  # the server's processes (master + workers), user + system time


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def train_model(directory: Path) -> Path:
    """A model like a user's: the bundled table, the default 64-32 network, a few epochs."""
    sys.path.insert(0, str(REPO))
    from optml.container.paths import Paths
    from optml.train.main import run

    root = directory / "ml"
    config = root / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text('{"epochs": "3"}')
    (config / "inputdataconfig.json").write_text('{"train": {"TrainingInputMode": "File"}}')
    (config / "resourceconfig.json").write_text(
        '{"current_host": "algo-1", "hosts": ["algo-1"], "network_interface_name": "eth0"}'
    )
    shutil.copytree(DATA / "train", root / "input" / "data" / "train")
    with contextlib.redirect_stdout(open(os.devnull, "w")):  # noqa: SIM115 - the epoch lines
        run(Paths(root=root))
    return root / "model"


def feature_table(count: int) -> np.ndarray:
    """`count` rows of the bundled validation features (repeated as needed), without the label."""
    table = np.loadtxt(sorted((DATA / "validation").iterdir())[0], delimiter=",")[:, 1:]
    return table[np.arange(count) % len(table)]


def feature_rows(count: int) -> str:
    return "\n".join(",".join(repr(float(v)) for v in row) for row in feature_table(count)) + "\n"


def local_env() -> dict[str, str]:
    """This process's environment for a server run from the working tree, without the settings of any
    SageMaker job or optml server this shell may have exported."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAGEMAKER_", "SM_", "OPTML_"))}
    env["PYTHONPATH"] = str(REPO)
    return env


def optml_command(port: int, extra: list[str]) -> list[str]:
    """optml's server from the working tree, configured as the image's `serve` configures it."""
    return [sys.executable, "-m", "gunicorn", "--config", "python:optml.serve.gunicorn_conf", *extra,
            "--bind", f"127.0.0.1:{port}", "optml.serve.wsgi:create_app_from_environment()"]  # fmt: skip


def answers_ping(port: int, seconds: float, running: Callable[[], bool] = lambda: True) -> bool:
    """Polls /ping until it answers 200 (True), or until `seconds` pass or `running()` is False (False)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and running():
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"http://127.0.0.1:{port}/ping", timeout=5).status_code == 200:
                return True
        time.sleep(0.01)
    return False


def run_container(image: str, model_dir: Path, port: int, env: dict[str, str] | None = None) -> str:
    """`docker run -d` of the image serving the model on 127.0.0.1:`port`; the container's id."""
    settings = [f"--env={name}={value}" for name, value in (env or {}).items()]
    return subprocess.run(
        ["docker", "run", "-d", "-p", f"127.0.0.1:{port}:8080", "-v", f"{model_dir}:/opt/ml/model:ro",
         *settings, image, "serve"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip


def container_logs(container: str) -> str:
    logs = subprocess.run(["docker", "logs", container], capture_output=True, text=True)
    return (logs.stdout + logs.stderr)[-2000:]


@contextlib.contextmanager
def spawned(command: list[str], env: dict[str, str], cwd: Path = REPO) -> Iterator[subprocess.Popen[bytes]]:
    """A process in its own session, stopped with SIGTERM (and waited for) on the way out."""
    process = subprocess.Popen(
        command,
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


@contextlib.contextmanager
def server(
    name: str, command: list[str], env: dict[str, str], port: int, cwd: Path = REPO
) -> Iterator[subprocess.Popen[bytes]]:
    """`cwd`: the tree whose code it runs (`python -m` puts it first on sys.path)."""
    with spawned(command, env, cwd) as process:
        if not answers_ping(port, 60, lambda: process.poll() is None):
            if process.poll() is not None:
                raise SystemExit(f"{name} exited with {process.returncode} before answering /ping")
            raise SystemExit(f"{name} did not answer /ping within 60 s")
        yield process


NGINX_CONF = """\
# The canonical BYOC example's nginx.conf (scikit_bring_your_own/container/decision_trees), with its
# paths moved into a scratch directory so that it runs unprivileged next to other servers.
worker_processes 1;
daemon off;
pid {scratch}/nginx.pid;
error_log {scratch}/nginx-error.log;
events {{}}
http {{
  include /etc/nginx/mime.types;
  default_type application/octet-stream;
  access_log {scratch}/nginx-access.log combined;
  client_body_temp_path {scratch}/nginx-body;
  proxy_temp_path {scratch}/nginx-proxy;
  upstream gunicorn {{
    server unix:{socket};
  }}
  server {{
    listen 127.0.0.1:{port} deferred;
    client_max_body_size 5m;
    keepalive_timeout 5;
    proxy_read_timeout 1200s;
    location ~ ^/(ping|invocations) {{
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header Host $http_host;
      proxy_redirect off;
      proxy_pass http://gunicorn;
    }}
    location / {{
      return 404 "{{}}";
    }}
  }}
}}
"""


@contextlib.contextmanager
def baseline_server(
    gunicorn: list[str], env: dict[str, str], port: int, scratch: Path, nginx: bool
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """The baseline's processes: gunicorn on the port, or (`nginx`) as the example serves it, gunicorn on
    a unix socket behind nginx on the port."""
    if not nginx:
        with server("baseline", [*gunicorn, "--bind", f"127.0.0.1:{port}"], env, port) as process:
            yield [process]
        return
    scratch.chmod(0o755)  # nginx's workers run as another user when started by root: let them reach the socket
    socket_path = scratch / "gunicorn.sock"
    conf = scratch / "nginx.conf"
    conf.write_text(NGINX_CONF.format(scratch=scratch, socket=socket_path, port=port))
    with spawned([*gunicorn, "--bind", f"unix:{socket_path}"], env) as app:
        with server("baseline nginx", ["nginx", "-c", str(conf)], env, port) as proxy:
            yield [app, proxy]


def wrk(
    port: int,
    body: str,
    seconds: int,
    connections: int,
    scratch: Path,
    server_pids: list[int],
    headers: dict[str, str] | None = None,
) -> Load:
    """`headers`: sent besides Content-Type: text/csv (custom attributes, say)."""
    script = scratch / "post.lua"
    lines = [
        f'wrk.headers["{name}"] = "{value}"' for name, value in {"Content-Type": "text/csv", **(headers or {})}.items()
    ]
    script.write_text('wrk.method = "POST"\n' + "\n".join(lines) + f"\nwrk.body = [==[{body}]==]\n")
    cpu_before = cpu_seconds(server_pids)
    output = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script),
         f"http://127.0.0.1:{port}/invocations"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    cpu = cpu_seconds(server_pids) - cpu_before
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    count = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return Load(
        rate,
        _percentile(output, "50%"),
        _percentile(output, "99%"),
        int(errors.group(1)) if errors else 0,
        1000 * cpu / max(count, 1),
    )


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of a server: its masters and workers (and nginx). Unlike requests/s on a
    shared machine, the CPU a request costs does not depend on what else the machine is doing."""
    ticks = 0
    for process in (child for pid in pids for child in process_tree(pid)):
        fields = Path(f"/proc/{process}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def _percentile(output: str, label: str) -> float:
    value, unit = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)\s*$", output, re.M).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def memory_kib(pid: int) -> dict[str, int]:
    """Rss, Pss (shared pages divided among the processes sharing them) and Uss (the pages this process
    alone maps: what a leak grows; Rss also grows as a worker first touches its master's pages) from
    smaps_rollup."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":", 1)
        fields[key] = int(value.split()[0])
    return {"rss": fields["Rss"], "pss": fields["Pss"], "uss": fields["Private_Clean"] + fields["Private_Dirty"]}


def process_tree(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [pid, *(int(child) for child in children)]


def cold_start(image: str, model_dir: Path, runs: int) -> list[float]:
    """docker run → first /ping 200, in seconds, for each of `runs` fresh containers."""
    times = []
    for _ in range(runs):
        port = free_port()
        started = time.monotonic()
        container = run_container(image, model_dir, port)
        try:
            if not answers_ping(port, 60 - (time.monotonic() - started)):
                raise SystemExit(f"{image} was not healthy within 60 s:\n{container_logs(container)}")
            times.append(time.monotonic() - started)
        finally:
            subprocess.run(["docker", "rm", "-f", container], capture_output=True, check=False)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seconds", type=int, default=8, help="per wrk run")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs per server; medians shown")
    parser.add_argument("--connections", type=int, default=0, help="wrk connections (default 2 x workers)")
    parser.add_argument(
        "--optml-args",
        default="",
        help="extra gunicorn arguments for optml, to try a tuning (e.g. '-k gthread')",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke check: 1 x 1 s per cell")
    parser.add_argument(
        "--nginx",
        action="store_true",
        help="serve the baseline as the example does: gunicorn on a unix socket behind nginx (apt-get install nginx)",
    )
    parser.add_argument("--image", help="also measure the image's cold start (docker run → /ping 200)")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.repeats = 1, 1
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    if args.nginx and shutil.which("nginx") is None:
        raise SystemExit("nginx is not installed: apt-get install -y nginx")
    connections = args.connections or 2 * args.workers

    scratch = Path(tempfile.mkdtemp(prefix="optml-bench-"))
    try:
        model_dir = train_model(scratch)
        python = sys.executable
        env = local_env()
        ports = {"baseline": free_port(), "optml": free_port()}
        commands = {
            "baseline": [python, "-m", "gunicorn", "--timeout", "60", "--workers", str(args.workers),
                         "--worker-class", "sync", "benchmarks.byoc_baseline:app"],
            "optml": optml_command(ports["optml"], args.optml_args.split()),
        }  # fmt: skip
        envs = {
            "baseline": env | {"BASELINE_MODEL_DIR": str(model_dir)},
            "optml": env | {"SM_MODEL_DIR": str(model_dir), "SAGEMAKER_MODEL_SERVER_WORKERS": str(args.workers)},
        }
        bodies = {"1 row": feature_rows(1), "1000 rows": feature_rows(1000)}
        results: dict[tuple[str, str], list[Load]] = {}
        memory: dict[str, list[dict[str, int]]] = {}
        with baseline_server(
            commands["baseline"], envs["baseline"], ports["baseline"], scratch, args.nginx
        ) as baseline_processes:
            with server("optml", commands["optml"], envs["optml"], ports["optml"]) as optml_process:
                pids = {"baseline": [process.pid for process in baseline_processes], "optml": [optml_process.pid]}
                for body in bodies.values():  # same answers from both, and a warm-up
                    answers = [
                        requests.post(f"http://127.0.0.1:{ports[name]}/invocations", data=body,
                                      headers={"Content-Type": "text/csv"}, timeout=30).text.split()
                        for name in ("baseline", "optml")
                    ]  # fmt: skip
                    assert answers[0] == answers[1], "the two servers disagree"
                for _ in range(args.repeats):
                    for scenario, body in bodies.items():
                        for name in ("baseline", "optml"):
                            load = wrk(ports[name], body, args.seconds, connections, scratch, pids[name])
                            results.setdefault((name, scenario), []).append(load)
                for name, roots in pids.items():
                    memory[name] = [memory_kib(pid) for root in roots for pid in process_tree(root)]
        cold = cold_start(args.image, model_dir, 3) if args.image else []
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    print(report(results, memory, cold, bodies, args.workers, connections, args.seconds, args.repeats, args.nginx))
    return 0


def report(
    results: dict[tuple[str, str], list[Load]],
    memory: dict[str, list[dict[str, int]]],
    cold: list[float],
    bodies: dict[str, str],
    workers: int,
    connections: int,
    seconds: int,
    repeats: int,
    nginx: bool = False,
) -> str:
    def median(name: str, scenario: str, field: str) -> float:
        return statistics.median(getattr(load, field) for load in results[(name, scenario)])

    lines = [
        f"{workers} workers each, wrk -c{connections}, {repeats} x {seconds} s interleaved runs per cell"
        " (medians), loopback; baseline " + ("behind nginx, as the example serves it" if nginx else "gunicorn only"),
        "",
        "| scenario | metric | baseline (BYOC style) | optml | optml / baseline |",
        "|---|---|---|---|---|",
    ]
    for scenario, body in bodies.items():
        rows = body.count("\n")
        for metric, field, scale in (
            ("rows/s" if rows > 1 else "requests/s", "requests_per_s", rows),
            ("p50 latency ms", "p50_ms", 1),
            ("p99 latency ms", "p99_ms", 1),
            ("server CPU ms per request", "cpu_ms_per_request", 1),
        ):
            base, ours = median("baseline", scenario, field) * scale, median("optml", scenario, field) * scale
            digits = 2 if field == "cpu_ms_per_request" else 1
            lines.append(f"| {scenario} | {metric} | {base:,.{digits}f} | {ours:,.{digits}f} | {ours / base:.2f}x |")
        errors = sum(load.errors for name in ("baseline", "optml") for load in results[(name, scenario)])
        if errors:
            lines.append(f"| {scenario} | non-2xx answers | | | {errors} |")
    lines += [
        "",
        "| memory after the load | processes | RSS MiB each | sum of RSS MiB | sum of PSS MiB |",
        "|---|---|---|---|---|",
    ]
    for name, processes in memory.items():
        each = ", ".join(f"{m['rss'] / 1024:.0f}" for m in processes)
        rss = sum(m["rss"] for m in processes) / 1024
        pss = sum(m["pss"] for m in processes) / 1024
        lines.append(f"| {name} | {len(processes)} processes | {each} | {rss:.0f} | {pss:.0f} |")
    if cold:
        lines += ["", f"cold start (docker run → first /ping 200): {', '.join(f'{t:.2f} s' for t in cold)}"]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
