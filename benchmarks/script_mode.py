"""Script mode's costs, in the image: the launcher's overhead, a user inference.py's throughput, cold start.

    .venv/bin/python -m benchmarks.script_mode --image optml:latest [--quick]

- **Launcher overhead**: ``docker run IMAGE train`` of a trivial script named by ``sagemaker_program`` (code
  mounted at /opt/ml/code, as SDK v2 local mode mounts it) against the same script run directly,
  ``docker run --entrypoint python IMAGE trivial.py``; interleaved, medians. Goal: ≤ 1 s more.
- **Serving**: requests/s (one CSV row per request, wrk on loopback, the same workers) of one model served
  two ways: the built-in path, and a user ``code/inference.py`` (``model_fn`` loads the model's TorchScript
  model.pt, ``predict_fn`` returns the class, the image's default ``input_fn`` / ``output_fn``). The model is
  optml's default MLP on the bundled breast-cancer table, trained here. Goal: user ≥ 0.8× built-in. Also
  examples/digits' own inference.py (a CNN, 64-pixel JSON rows; another model, for information).
- **Cold start**: ``docker run IMAGE serve`` → first ``/ping`` 200 for the user-code model and the
  built-in one (no requirements.txt: nothing to install), and for examples/digits with its requirements.txt
  (numpy, already satisfied: pip runs but installs nothing). Goal: ≤ 3 s without requirements.

Needs Docker with the image, and wrk (``apt-get install -y wrk``). Prints Markdown tables; record them in
benchmarks/RESULTS.md with the machine and date. A script, not a test: timings depend on the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import requests

from benchmarks.serve_benchmark import Load, answers_ping, container_logs, feature_rows, free_port, train_model, wrk

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "digits"

TRIVIAL_SCRIPT = 'import sys\nprint("trivial script ran with", sys.argv[1:], flush=True)\n'

# A user's inference.py for a model this image trained: what AWS's PyTorch examples write for a TorchScript
# model, relying on the image's default input_fn (CSV -> float32 tensor) and output_fn.
USER_INFERENCE = """\
import os

import torch


def model_fn(model_dir):
    return torch.jit.load(os.path.join(model_dir, "model.pt")).eval()


def predict_fn(data, model):
    with torch.inference_mode():
        return model(data).argmax(dim=1)
"""


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check)


# --------------------------------------------------------------------------------------------------
# Launcher overhead


def training_tree(root: Path) -> Path:
    """An /opt/ml for a script-mode job of trivial.py: its config (no channels) and the code."""
    config = root / "input" / "config"
    config.mkdir(parents=True)
    hyperparameters = {"sagemaker_program": json.dumps("trivial.py"), "epochs": "1"}
    (config / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    (config / "inputdataconfig.json").write_text("{}")
    (config / "resourceconfig.json").write_text(
        '{"current_host": "algo-1", "hosts": ["algo-1"], "network_interface_name": "eth0"}'
    )
    (root / "code").mkdir()
    (root / "code" / "trivial.py").write_text(TRIVIAL_SCRIPT)
    return root


def timed(command: list[str], expect: str) -> float:
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True)
    elapsed = time.monotonic() - started
    if result.returncode != 0 or expect not in result.stdout + result.stderr:
        raise SystemExit(
            f"{' '.join(command)} failed ({result.returncode}):\n{(result.stdout + result.stderr)[-3000:]}"
        )
    return elapsed


def launcher_overhead(image: str, scratch: Path, runs: int) -> dict[str, list[float]]:
    """Seconds per `docker run` of the trivial script, through the launcher and directly, interleaved."""
    times: dict[str, list[float]] = {"sagemaker_program (train)": [], "python trivial.py (direct)": []}
    for run in range(runs + 1):  # the first round warms the page cache and is dropped
        root = training_tree(scratch / f"job-{run}")
        through = ["docker", "run", "--rm", "-v", f"{root}:/opt/ml", image, "train"]
        code = f"{root / 'code'}:/opt/ml/code:ro"
        direct = ["docker", "run", "--rm", "--entrypoint", "python", "-v", code, "-w", "/opt/ml/code", image]
        for name, command in zip(times, (through, [*direct, "trivial.py", "--epochs", "1"]), strict=True):
            seconds = timed(command, "trivial script ran with")
            if run:
                times[name].append(seconds)
    return times


# --------------------------------------------------------------------------------------------------
# Serving


def user_code_model(model_dir: Path, destination: Path, inference: str, requirements: bool) -> Path:
    """A copy of `model_dir` with code/inference.py (and code/requirements.txt when asked)."""
    shutil.copytree(model_dir, destination)
    (destination / "code").mkdir()
    (destination / "code" / "inference.py").write_text(inference)
    if requirements:
        shutil.copy(EXAMPLE / "requirements.txt", destination / "code" / "requirements.txt")
    return destination


def digits_model(scratch: Path, requirements: bool) -> Path:
    """examples/digits trained for 2 epochs on this machine, with its code as SDK v3 packs it (code/)."""
    model_dir = scratch / ("digits-req" if requirements else "digits")
    trained = scratch / "digits-trained"
    if not trained.exists():
        command = [sys.executable, "train.py", "--epochs", "2", "--model-dir", str(trained), "--test-dir", "data/test"]
        subprocess.run(command, cwd=EXAMPLE, check=True, capture_output=True)
    shutil.copytree(trained, model_dir)
    code = model_dir / "code"
    code.mkdir()
    for name in ("train.py", "inference.py", *(["requirements.txt"] if requirements else [])):
        shutil.copy(EXAMPLE / name, code / name)
    return model_dir


USER_CODE_ENV = {"SAGEMAKER_PROGRAM": "inference.py", "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code"}


@contextlib.contextmanager
def serving(image: str, model_dir: Path, workers: int, user_code: bool) -> Iterator[tuple[int, list[int], float]]:
    """The image serving `model_dir` on a free port: (port, the container's host pid, seconds to /ping 200)."""
    port = free_port()
    env = {"SAGEMAKER_MODEL_SERVER_WORKERS": str(workers), **(USER_CODE_ENV if user_code else {})}
    settings = [f"--env={name}={value}" for name, value in env.items()]
    started = time.monotonic()
    container = docker(
        "run", "-d", "-p", f"127.0.0.1:{port}:8080", "-v", f"{model_dir}:/opt/ml/model", *settings, image, "serve"
    ).stdout.strip()
    try:
        if not answers_ping(port, 120):
            raise SystemExit(
                f"{image} serving {model_dir.name} was not healthy within 120 s:\n{container_logs(container)}"
            )
        ready = time.monotonic() - started
        pid = int(docker("inspect", "--format", "{{.State.Pid}}", container).stdout.strip() or 0)
        yield port, ([pid] if pid and Path(f"/proc/{pid}").exists() else []), ready
    finally:
        docker("rm", "-f", container, check=False)


def cold_starts(image: str, model_dir: Path, user_code: bool, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        with serving(image, model_dir, 1, user_code) as (_, _, ready):
            times.append(ready)
    return times


def check_answer(port: int, body: str, content_type: str) -> str:
    answer = requests.post(
        f"http://127.0.0.1:{port}/invocations", data=body, headers={"Content-Type": content_type}, timeout=30
    )
    if answer.status_code != 200:
        raise SystemExit(f"/invocations answered {answer.status_code}: {answer.text[:500]}")
    return answer.text


def wrk_json(port: int, body: str, seconds: int, connections: int, scratch: Path, pids: list[int]) -> Load:
    """serve_benchmark's wrk run, with a JSON body (examples/digits reads JSON, not CSV)."""
    script = scratch / "post.lua"
    script.write_text(
        f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = [==[{body}]==]\n'
    )
    output = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(script), f"http://127.0.0.1:{port}/invocations"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rate = float(output.split("Requests/sec:")[1].split()[0])
    errors = int(output.split("Non-2xx or 3xx responses:")[1].split()[0]) if "Non-2xx" in output else 0
    return Load(rate, 0.0, 0.0, errors, 0.0)


# --------------------------------------------------------------------------------------------------


def median(values: list[float]) -> float:
    return statistics.median(values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--image", default="optml:latest")
    parser.add_argument("--runs", type=int, default=5, help="docker runs per launcher / cold-start cell")
    parser.add_argument("--workers", type=int, default=2, help="model server workers, both paths")
    parser.add_argument("--seconds", type=int, default=5, help="per wrk run")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved wrk runs per server; medians shown")
    parser.add_argument("--quick", action="store_true", help="a smoke check: 2 runs, 1 x 1 s per cell")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.seconds, args.repeats = 2, 1, 1
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    if docker("image", "inspect", args.image, check=False).returncode != 0:
        raise SystemExit(f"image {args.image} is not present: make image IMAGE={args.image}")
    connections = 2 * args.workers

    scratch = Path(tempfile.mkdtemp(prefix="optml-script-bench-"))
    try:
        launcher = launcher_overhead(args.image, scratch, args.runs)

        builtin = train_model(scratch)  # optml's MLP on the breast-cancer table: model.pt among its files
        user = user_code_model(builtin, scratch / "user-model", USER_INFERENCE, requirements=False)
        digits = digits_model(scratch, requirements=False)
        digits_req = digits_model(scratch, requirements=True)
        csv_row = feature_rows(1)
        digits_row = json.dumps([[float(v) for v in range(64)]])

        rates: dict[str, list[float]] = {"built-in": [], "user inference.py": [], "examples/digits": []}
        answers: dict[str, str] = {}
        with (
            serving(args.image, builtin, args.workers, False) as (builtin_port, builtin_pids, _),
            serving(args.image, user, args.workers, True) as (user_port, user_pids, _),
            serving(args.image, digits, args.workers, True) as (digits_port, digits_pids, _),
        ):
            answers["built-in"] = check_answer(builtin_port, csv_row, "text/csv")
            answers["user inference.py"] = check_answer(user_port, csv_row, "text/csv")
            answers["examples/digits"] = check_answer(digits_port, digits_row, "application/json")
            for _ in range(args.repeats):
                rates["built-in"].append(
                    wrk(builtin_port, csv_row, args.seconds, connections, scratch, builtin_pids).requests_per_s
                )
                rates["user inference.py"].append(
                    wrk(user_port, csv_row, args.seconds, connections, scratch, user_pids).requests_per_s
                )
                rates["examples/digits"].append(
                    wrk_json(digits_port, digits_row, args.seconds, connections, scratch, digits_pids).requests_per_s
                )

        cold = {
            "built-in (breast-cancer MLP)": cold_starts(args.image, builtin, False, args.runs),
            "user inference.py (same model)": cold_starts(args.image, user, True, args.runs),
            "examples/digits, no requirements.txt": cold_starts(args.image, digits, True, args.runs),
            "examples/digits + requirements.txt (satisfied)": cold_starts(args.image, digits_req, True, args.runs),
        }
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    print(report(launcher, rates, answers, cold, args))
    return 0


def report(
    launcher: dict[str, list[float]],
    rates: dict[str, list[float]],
    answers: dict[str, str],
    cold: dict[str, list[float]],
    args: argparse.Namespace,
) -> str:
    through, direct = (median(times) for times in launcher.values())
    lines = [
        f"image {args.image}; launcher and cold start: {args.runs} docker runs each (medians, min-max); serving: "
        f"{args.workers} workers, wrk -c{2 * args.workers}, {args.repeats} x {args.seconds} s interleaved, one "
        "request per row",
        "",
        "| launcher: a trivial script | docker run → exit, s | range, s |",
        "|---|---:|---:|",
    ]
    for name, times in launcher.items():
        lines.append(f"| {name} | {median(times):.2f} | {min(times):.2f}–{max(times):.2f} |")
    verdict = "meets" if through - direct <= 1.0 else "misses"
    lines += [f"| **overhead** | **{through - direct:+.2f}** | goal ≤ 1 s: {verdict} |", ""]

    lines += ["| serving, 1 row per request | requests/s | × built-in | first answer |", "|---|---:|---:|---|"]
    base = median(rates["built-in"])
    for name, values in rates.items():
        answer = " ".join(answers[name].split())[:40]
        lines.append(f"| {name} | {median(values):,.0f} | {median(values) / base:.2f}× | `{answer}` |")
    ratio = median(rates["user inference.py"]) / base
    lines += [f"user inference.py / built-in on the same model: {ratio:.2f}× (goal ≥ 0.8×: "
              f"{'meets' if ratio >= 0.8 else 'misses'})", ""]  # fmt: skip

    lines += ["| cold start: docker run → first /ping 200 | median s | range, s |", "|---|---:|---:|"]
    for name, times in cold.items():
        lines.append(f"| {name} | {median(times):.2f} | {min(times):.2f}–{max(times):.2f} |")
    worst = max(median(times) for name, times in cold.items() if "requirements.txt (" not in name)
    lines.append(f"slowest without requirements: {worst:.2f} s (goal ≤ 3 s: {'meets' if worst <= 3 else 'misses'})")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
