"""Serving with explanations: what `explain=true` costs a request, and what the feature costs requests that
do not ask for it.

    .venv/bin/python -m benchmarks.explain_serving                  # 2 workers, against main's server
    .venv/bin/python -m benchmarks.explain_serving --before 7c4463c  # against another revision
    .venv/bin/python -m benchmarks.explain_serving --before ''       # this tree only

Same model as benchmarks/serve_benchmark.py (the bundled breast-cancer table, 30 features, the default 64-32
MLP, a few epochs), with a k-means background of its train rows (10 centroids, the default
explain_background_size). Two servers run side by side under gunicorn, `--workers` sync workers each, as the
image runs them: "before" serves the model from `git archive <revision>` (a server without the feature), "this
tree" from the working tree. wrk loads them on loopback, interleaved, `--repeats` x `--seconds` per cell
(medians), with one CSV row per request: plain, on both; with `explain=true`, on this tree. The first explain
request of each worker builds its explainer; a warm-up takes that out of the measured runs, and its cost is
shown on its own. Server CPU per request (user + system time of master and workers) does not depend on what
else the machine runs; requests/s does: the load average is printed with the table. Last, the plain path is
timed in one process per tree (no HTTP, best of several rounds, the trees alternating): on a shared machine the
best round is the steadiest measure of what the code itself costs.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import requests

from benchmarks.serve_benchmark import (
    DATA,
    REPO,
    Load,
    cpu_seconds,
    feature_rows,
    free_port,
    local_env,
    optml_command,
    server,
    train_model,
    wrk,
)

EXPLAIN = {"X-Amzn-SageMaker-Custom-Attributes": "explain=true"}
BACKGROUND_SIZE = 10  # explain_background_size's default


def add_background(model_dir: Path) -> None:
    """A k-means background of the train rows, as training saves it, unless training already saved one."""
    from optml.container.artifact import load_model
    from optml.container.explain import load_background, save_background, summarize_background
    from optml.container.features import FeatureEncoder

    if load_background(model_dir) is not None:
        return
    rows = np.loadtxt(sorted((DATA / "train").iterdir())[0], delimiter=",")[:, 1:]  # the label first
    encoder = load_model(model_dir).metadata.encoder
    encoded = FeatureEncoder.from_json(encoder).transform(rows.tolist()) if encoder else rows
    background = summarize_background(np.asarray(encoded, dtype=np.float64), BACKGROUND_SIZE, "kmeans", 0)
    save_background(model_dir, background)


def export_revision(revision: str, directory: Path) -> Path:
    """The tree of `revision` (git archive), to serve the code as it was."""
    archive = subprocess.run(["git", "archive", revision], cwd=REPO, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(directory, filter="tar")
    return directory


def post(port: int, body: str, headers: dict[str, str] | None = None) -> requests.Response:
    response = requests.post(
        f"http://127.0.0.1:{port}/invocations",
        data=body,
        headers={"Content-Type": "text/csv", "Accept": "application/json", **(headers or {})},
        timeout=60,
    )
    response.raise_for_status()
    return response


def check_answers(ports: dict[str, int], body: str) -> float:
    """Both servers answer the plain request alike; the explanation sums to the positive class's probability.
    Returns the first explain request's time in ms (one worker builds its explainer)."""
    answers = {name: post(port, body).json() for name, port in ports.items()}
    assert len({json.dumps(answer) for answer in answers.values()}) == 1, f"the servers disagree: {answers}"
    started = time.perf_counter()
    record = post(ports["this tree"], body, EXPLAIN).json()["predictions"][0]
    first_ms = 1000 * (time.perf_counter() - started)
    explanation = record["explanation"]
    total = explanation["base_value"] + sum(explanation["attributions"].values())
    assert abs(total - record["scores"][1]) < 1e-4, f"{total} != {record['scores'][1]}"
    return first_ms


def wait_until_idle(pids: list[int], timeout: float = 60.0) -> None:
    """Until the server has stopped computing: requests wrk sent just before it stopped are still answered
    (to nobody), and a long one (1000 explained rows) would otherwise eat into the next cell's time."""
    deadline = time.monotonic() + timeout
    used = cpu_seconds(pids)
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = cpu_seconds(pids)
        if now - used < 0.01:  # under 5% of a core over the last 0.2 s
            return
        used = now


# Times the plain path in one process, without HTTP: the WSGI test client, one CSV row, best of `rounds`.
# The best of several rounds is what the code costs; a loaded machine only ever adds to it.
IN_PROCESS = """
import sys, time
from pathlib import Path
import torch
torch.set_num_threads(1)
from optml.serve.app import create_app
from optml.serve.builtin import BuiltinModel
client = create_app(BuiltinModel.load(Path(sys.argv[1]))).test_client()
body, headers = sys.argv[2], {"Content-Type": "text/csv"}
best = float("inf")
for _ in range(int(sys.argv[3])):
    started = time.perf_counter()
    for _ in range(500):
        client.post("/invocations", data=body, headers=headers)
    best = min(best, (time.perf_counter() - started) / 500)
print(best * 1e6)
"""


def in_process_us(trees: dict[str, Path], model_dir: Path, body: str, rounds: int) -> dict[str, float]:
    """Per tree, the best per-request time of the plain path in µs, the trees alternating `rounds` times."""
    best = {name: float("inf") for name in trees}
    for _ in range(rounds):
        for name, tree in trees.items():
            output = subprocess.run(
                [sys.executable, "-c", IN_PROCESS, str(model_dir), body, "5"],
                cwd=tree, env=local_env() | {"PYTHONPATH": str(tree)}, capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
            best[name] = min(best[name], float(output))
    return best


PLAIN = "1 row, plain"
EXPLAINED = "1 row, explain=true"
BATCH = "1000 rows, explain=true"


Results = dict[tuple[str, str], list[Load]]  # (scenario, server) → its wrk runs


def measure(args: argparse.Namespace, scratch: Path) -> tuple[Results, float, dict[str, float]]:
    model_dir = train_model(scratch)
    add_background(model_dir)
    trees = {"this tree": REPO}
    if args.before:
        trees = {"before": export_revision(args.before, scratch / "before"), **trees}
    env = local_env() | {"SM_MODEL_DIR": str(model_dir), "SAGEMAKER_MODEL_SERVER_WORKERS": str(args.workers)}
    ports = {name: free_port() for name in trees}
    row, rows = feature_rows(1), feature_rows(1000)
    cells: list[tuple[str, str, str, dict[str, str] | None]] = [(PLAIN, name, row, None) for name in trees]
    cells += [(EXPLAINED, "this tree", row, EXPLAIN), (BATCH, "this tree", rows, EXPLAIN)]
    results: Results = {}
    with contextlib.ExitStack() as stack:
        pids = {}
        for name, tree in trees.items():
            command = optml_command(ports[name], [])
            process = stack.enter_context(server(name, command, env | {"PYTHONPATH": str(tree)}, ports[name], tree))
            pids[name] = [process.pid]
        first_ms = check_answers(ports, row)
        for _, name, body, headers in cells:  # warm-up: every worker builds its explainer here
            wrk(ports[name], body, 1, args.connections, scratch, pids[name], headers)
            wait_until_idle(pids[name])
        for _ in range(args.repeats):
            for scenario, name, body, headers in cells:
                load = wrk(ports[name], body, args.seconds, args.connections, scratch, pids[name], headers)
                results.setdefault((scenario, name), []).append(load)
                wait_until_idle(pids[name])
    return results, first_ms, in_process_us(trees, model_dir, row, args.repeats)


def report(results: Results, first_ms: float, plain_us: dict[str, float], args: argparse.Namespace) -> str:
    def median(key: tuple[str, str], field: str) -> float:
        return statistics.median(getattr(load, field) for load in results[key])

    lines = [
        f"{args.workers} sync workers per server, wrk -c{args.connections}, CSV rows of 30 features,"
        f" {args.repeats} x {args.seconds} s interleaved runs per cell (medians); load average {args.load}",
        "",
        "| requests | server | requests/s | rows/s | p50 ms | p99 ms | server CPU ms per request"
        f" | CPU-bound requests/s ({args.workers} x 1000 / CPU ms) | non-2xx |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, loads in results.items():
        cpu, rate = median(key, "cpu_ms_per_request"), median(key, "requests_per_s")
        rows = 1000 if key[0] == BATCH else 1
        lines.append(
            f"| {key[0]} | {key[1]} | {rate:,.1f} | {rate * rows:,.0f} | {median(key, 'p50_ms'):.2f} |"
            f" {median(key, 'p99_ms'):.2f} | {cpu:.2f} | {args.workers * 1000 / cpu:,.0f} |"
            f" {sum(load.errors for load in loads)} |"
        )
    if (PLAIN, "before") in results:
        ratios = [
            f"{field} {median((PLAIN, 'this tree'), field) / median((PLAIN, 'before'), field):.3f}x"
            for field in ("requests_per_s", "cpu_ms_per_request")
        ]
        lines += ["", f"plain, this tree / before ({args.before}): {', '.join(ratios)}"]
    lines += [
        "",
        "plain path in one process (WSGI test client, best of 5 x 500 requests per round, rounds alternating):",
    ]
    lines += [f"- {name}: {us:.0f} µs per request" for name, us in plain_us.items()]
    if "before" in plain_us:
        lines += [f"- before / this tree (speed ratio): {plain_us['before'] / plain_us['this tree']:.3f}x"]
    lines += ["", f"first explain request (its worker loads the background, builds the explainer): {first_ms:.0f} ms"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=5, help="per wrk run")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs per cell; medians shown")
    parser.add_argument("--connections", type=int, default=0, help="wrk connections (default 2 x workers)")
    parser.add_argument("--before", default="main", help="revision served as 'before' ('' for none)")
    parser.add_argument("--quick", action="store_true", help="a smoke check: 1 x 1 s per cell")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.repeats = 1, 1
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    args.connections = args.connections or 2 * args.workers
    sys.path.insert(0, str(REPO))
    before = os.getloadavg()[0]
    scratch = Path(tempfile.mkdtemp(prefix="optml-explain-bench-"))
    try:
        results, first_ms, plain_us = measure(args, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    args.load = f"{before:.1f} before, {os.getloadavg()[0]:.1f} after (1 min; {os.cpu_count()} CPUs)"
    print(report(results, first_ms, plain_us, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
