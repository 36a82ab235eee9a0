"""Serving soak: optml's server at a share of its measured maximum for a long run of mixed traffic.

    .venv/bin/python -m benchmarks.serve_soak --image optml:latest           # 30 minutes at 80 %
    .venv/bin/python -m benchmarks.serve_soak --image optml:latest --quick   # a ~2-minute smoke run
    .venv/bin/python -m benchmarks.serve_soak                                # the working tree's server

The server is the image serving a model trained here (mounted at /opt/ml/model, as serve_benchmark
does it) or, without --image, gunicorn from the working tree configured as the image configures it;
one worker per core unless --workers says otherwise. wrk (`apt-get install -y wrk`) first measures the
server's maximum requests/s for the traffic, then offers `--load` times that rate for `--minutes`, one
wrk run per interval (a minute), so that each interval has its own requests, errors and p99. The traffic
rotates four requests: 1 row and 1000 rows, each as text/csv and as application/json (answered in the
same type). After each interval the script reads each worker's RSS, PSS and USS from /proc: Docker must
run on this machine (the container's processes are then this machine's) and the script as a user who
may read their /proc entries (root). A third of the way in it SIGKILLs one worker and records the failed
requests and when gunicorn's replacement appeared.

It prints a Markdown table per interval and a verdict: requests, errors, p99 and each worker's memory
slope over the last 10 minutes (least squares). Record it in benchmarks/RESULTS.md with the machine,
the date and the load average. A script, not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from string import Template

import numpy as np
import requests

from benchmarks.serve_benchmark import (
    answers_ping,
    container_logs,
    feature_rows,
    feature_table,
    free_port,
    local_env,
    memory_kib,
    optml_command,
    process_tree,
    run_container,
    server,
    train_model,
)

ROW_COUNTS = (1, 1000)
CONTENT_TYPES = ("text/csv", "application/json")
SLOPE_WINDOW_MINUTES = 10

# One wrk thread: its Lua state holds the rotation and the pacing schedule for every connection.
WRK_SCRIPT = Template("""\
-- Written by benchmarks/serve_soak.py: sends the prebuilt requests in turn.
local bodies = { $bodies }
local prebuilt = {}
local turn = 0

function init(args)
  for i, body in ipairs(bodies) do
    local file = assert(io.open(body[1], "rb"))
    local headers = {["Content-Type"] = body[2], ["Accept"] = body[2]}
    prebuilt[i] = wrk.format("POST", "/invocations", headers, file:read("*a"))
    file:close()
  end
end

function request()
  turn = turn % #prebuilt + 1
  return prebuilt[turn]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "soak requests=%d duration_us=%d connect=%d read=%d write=%d status=%d timeout=%d p99_us=%d\\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(99)))
end
$pacing""")

# wrk asks delay() before each request. Each request takes the next slot of a fixed schedule, so the
# offered rate holds whatever the latency; more than a second behind (the server cannot keep up), the
# schedule restarts rather than bursting to catch up. wrk's Lua has no clock finer than a second, hence
# clock_gettime through LuaJIT's ffi.
WRK_PACING = Template("""
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } soak_timespec;
int clock_gettime(int clock, soak_timespec *now);
]]
local now = ffi.new("soak_timespec")
local interval_ms = 1000 / $rate
local due = nil

function delay()
  ffi.C.clock_gettime(1, now)  -- CLOCK_MONOTONIC
  local now_ms = tonumber(now.tv_sec) * 1000 + tonumber(now.tv_nsec) / 1e6
  if due == nil or due < now_ms - 1000 then
    due = now_ms
  end
  local wait = due - now_ms
  due = due + interval_ms
  return math.floor(wait + 0.5)
end
""")

ERROR_KINDS = {"connect": "connect", "read": "read", "write": "write", "status": "non-2xx", "timeout": "over 2 s"}


@dataclass
class WrkRun:
    requests: int
    seconds: float
    errors: dict[str, int]  # wrk's kinds (ERROR_KINDS); "status" counts answers of 400 and above
    p99_ms: float


@dataclass
class Sample:
    """One interval of paced load, and the server's memory right after it."""

    minute: float  # at the end of the interval, since the paced load began
    load: WrkRun | None  # None for the reading before the paced load
    workers: dict[int, dict[str, int]]  # pid -> memory_kib
    master: dict[str, int]
    load_average: float
    note: str = ""


@dataclass
class Kill:
    minute: float
    victim: int
    replacement: int | None
    seconds: float  # from the kill to the replacement's fork
    errors: int = 0  # in the interval of the kill


def write_bodies(scratch: Path) -> list[tuple[Path, str, int]]:
    """The rotated requests as files: (path, content type, rows)."""
    bodies = []
    for rows in ROW_COUNTS:
        for content_type in CONTENT_TYPES:
            if content_type == "text/csv":
                text = feature_rows(rows)
            else:
                text = json.dumps({"instances": feature_table(rows).tolist()})
            path = scratch / f"body-{rows}.{content_type.split('/')[1]}"
            path.write_text(text)
            bodies.append((path, content_type, rows))
    return bodies


def check_answers(port: int, bodies: list[tuple[Path, str, int]]) -> None:
    """Each request once: a 200 with one prediction per row, so that the load measures real answers."""
    for path, content_type, rows in bodies:
        answer = requests.post(
            f"http://127.0.0.1:{port}/invocations",
            data=path.read_bytes(),
            headers={"Content-Type": content_type, "Accept": content_type},
            timeout=30,
        )
        if answer.status_code != 200:
            raise SystemExit(f"{path.name}: {answer.status_code} {answer.text[:500]}")
        count = len(answer.json()["predictions"]) if content_type == "application/json" else len(answer.text.split())
        if count != rows:
            raise SystemExit(f"{path.name}: {count} predictions for {rows} rows")


def wrk_script(scratch: Path, bodies: list[tuple[Path, str, int]], rate: float | None) -> Path:
    """The Lua script for wrk: the requests in turn, paced to `rate` requests/s unless it is None."""
    listed = ", ".join(f'{{"{path}", "{content_type}"}}' for path, content_type, _ in bodies)
    pacing = WRK_PACING.substitute(rate=f"{rate:.3f}") if rate else ""
    script = scratch / ("paced.lua" if rate else "unpaced.lua")
    script.write_text(WRK_SCRIPT.substitute(bodies=listed, pacing=pacing))
    return script


def start_wrk(script: Path, port: int, seconds: int, connections: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(script), f"http://127.0.0.1:{port}/invocations"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish_wrk(process: subprocess.Popen[str]) -> WrkRun:
    stdout, stderr = process.communicate()
    found = re.search(r"^soak (.*)$", stdout, re.M)
    if process.returncode != 0 or found is None:
        raise SystemExit(f"wrk failed ({process.returncode}):\n{stdout}\n{stderr}")
    values = {key: int(value) for key, value in (pair.split("=") for pair in found.group(1).split())}
    return WrkRun(
        requests=values["requests"],
        seconds=values["duration_us"] / 1e6,
        errors={kind: values[kind] for kind in ERROR_KINDS},
        p99_ms=values["p99_us"] / 1000,
    )


def workers_of(master: int) -> list[int]:
    """The master's live children (a killed worker stays its child, a zombie, until the master reaps it)."""
    live = []
    for pid in process_tree(master)[1:]:
        with contextlib.suppress(FileNotFoundError):  # reaped meanwhile
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                live.append(pid)
    return live


def sample(master: int, minute: float, load: WrkRun | None, note: str = "") -> Sample:
    workers = {}
    for pid in workers_of(master):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, KeyError):  # exited meanwhile
            workers[pid] = memory_kib(pid)
    load_average = float(Path("/proc/loadavg").read_text().split()[0])
    return Sample(minute, load, workers, memory_kib(master), load_average, note)


def kill_one_worker(master: int, minute: float) -> Kill:
    """SIGKILL the oldest worker and wait (up to 30 s) for the master to fork its replacement."""
    before = workers_of(master)
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    started = time.monotonic()
    while time.monotonic() - started < 30:
        new = [pid for pid in workers_of(master) if pid not in before]
        if new:
            return Kill(minute, victim, new[0], time.monotonic() - started)
        time.sleep(0.02)
    return Kill(minute, victim, None, time.monotonic() - started)


@contextlib.contextmanager
def soak_server(image: str | None, model_dir: Path, workers: int) -> Iterator[tuple[int, int]]:
    """The server, answering /ping: (port, the gunicorn master's pid on this machine)."""
    port = free_port()
    settings = {"SAGEMAKER_MODEL_SERVER_WORKERS": str(workers)}
    if image is None:
        env = local_env() | settings | {"SM_MODEL_DIR": str(model_dir)}
        with server("optml", optml_command(port, []), env, port) as process:
            yield port, process.pid
        return
    container = run_container(image, model_dir, port, settings)
    try:
        if not answers_ping(port, 60):
            raise SystemExit(f"{image} was not healthy within 60 s:\n{container_logs(container)}")
        # serve execs gunicorn, so the container's first process is the master.
        inspected = subprocess.run(
            ["docker", "inspect", "--format", "{{.State.Pid}}", container], capture_output=True, text=True, check=True
        )
        master = int(inspected.stdout)
        if b"gunicorn" not in Path(f"/proc/{master}/cmdline").read_bytes():
            raise SystemExit(f"process {master} is not the container's gunicorn: does Docker run on this machine?")
        yield port, master
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True, check=False)


def soak(
    port: int,
    master: int,
    scratch: Path,
    bodies: list[tuple[Path, str, int]],
    args: argparse.Namespace,
) -> tuple[WrkRun, list[Sample], Kill | None]:
    connections = args.connections or 2 * args.workers
    check_answers(port, bodies)
    maximum = finish_wrk(start_wrk(wrk_script(scratch, bodies, None), port, args.max_seconds, connections))
    rate = args.load * maximum.requests / maximum.seconds
    paced = wrk_script(scratch, bodies, rate)
    intervals = max(1, round(args.minutes * 60 / args.interval))
    kill_at = intervals // 3 if args.kill else -1
    samples = [sample(master, 0.0, None, "before the paced load")]
    kill = None
    print(f"maximum {maximum.requests / maximum.seconds:.1f} requests/s; offering {rate:.1f}", file=sys.stderr)
    for index in range(intervals):
        minute = (index + 1) * args.interval / 60
        process = start_wrk(paced, port, args.interval, connections)
        note = ""
        if index == kill_at:
            try:
                time.sleep(args.interval / 2)
                kill = kill_one_worker(master, minute - args.interval / 120)
            finally:
                load = finish_wrk(process)
            kill.errors = sum(load.errors.values())
            note = f"worker {kill.victim} killed"
        else:
            load = finish_wrk(process)
        samples.append(sample(master, minute, load, note))
        print(f"{minute:6.1f} min  {format_sample(samples[-1])}", file=sys.stderr)
    return maximum, samples, kill


def slope_mib_per_minute(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (minute, KiB) points, in MiB per minute."""
    minutes, kib = np.array(points).T
    return float(np.polyfit(minutes, kib, 1)[0]) / 1024


def format_sample(s: Sample) -> str:
    """A table row's cells after the minute."""

    def each(key: str) -> str:
        return ", ".join(f"{m[key] / 1024:.1f} ({pid})" for pid, m in sorted(s.workers.items()))

    pss = (s.master["pss"] + sum(m["pss"] for m in s.workers.values())) / 1024
    memory = f"{each('rss')} | {each('uss')} | {s.master['rss'] / 1024:.1f} | {pss:.1f}"
    if s.load is None:
        return f"| | | | {memory} | {s.load_average:.2f} | {s.note} |"
    errors = sum(s.load.errors.values())
    detail = ", ".join(f"{ERROR_KINDS[k]} {n}" for k, n in s.load.errors.items() if n)
    return (
        f"| {s.load.requests:,} | {s.load.requests / s.load.seconds:.1f} | {errors}{f' ({detail})' if detail else ''}"
        f" | {s.load.p99_ms:.1f} | {memory} | {s.load_average:.2f} | {s.note} |"
    )


def machine() -> str:
    """The CPU model, the CPUs and the memory: what RESULTS.md records with each run."""
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.*)$", cpuinfo, re.M)
    memory_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return f"{model.group(1) if model else 'unknown CPU'}, {os.cpu_count()} CPUs, {memory_kb / 2**20:.0f} GiB"


def report(
    maximum: WrkRun,
    samples: list[Sample],
    kill: Kill | None,
    args: argparse.Namespace,
    started: datetime,
) -> tuple[str, bool]:
    """The Markdown table and verdict, and whether the soak passed."""
    loads = [s.load for s in samples if s.load is not None]
    max_rate = maximum.requests / maximum.seconds
    rotated = ", ".join(f"{rows}-row {kind}" for rows in ROW_COUNTS for kind in CONTENT_TYPES)
    load_averages = [s.load_average for s in samples]
    lines = [
        f"{started:%Y-%m-%d %H:%M}-{datetime.now(UTC):%H:%M} UTC on {machine()};"
        f" 1-minute load average {min(load_averages):.2f}-{max(load_averages):.2f} while it ran",
        f"server: {args.image or 'the working tree'}, {args.workers} workers;"
        f" wrk -t1 -c{args.connections or 2 * args.workers}, requests in turn: {rotated}",
        f"maximum: {max_rate:.1f} requests/s over {maximum.seconds:.0f} s (p99 {maximum.p99_ms:.1f} ms, errors"
        f" {sum(maximum.errors.values())}); offered {args.load:.0%} of it: {args.load * max_rate:.1f} requests/s"
        f" for {len(loads)} x {args.interval} s",
        "",
        "| minute | requests | requests/s | errors | p99 ms | RSS MiB per worker (pid) | USS MiB per worker (pid)"
        " | master RSS MiB | PSS MiB, all | load average | note |",
        "|---:|---:|---:|---|---:|---|---|---:|---:|---:|---|",
    ]
    lines += [f"| {s.minute:.1f} {format_sample(s)}" for s in samples]

    errors = {kind: sum(load.errors[kind] for load in loads) for kind in ERROR_KINDS}
    total_errors = sum(errors.values())
    p99s = [load.p99_ms for load in loads]
    worst = max(range(len(loads)), key=lambda i: p99s[i])
    end = samples[-1].minute
    window = [s for s in samples if s.minute >= end - SLOPE_WINDOW_MINUTES - 1e-9]
    verdict_lines = [
        "",
        "| verdict | |",
        "|---|---|",
        f"| requests | {sum(load.requests for load in loads):,} |",
        f"| errors | {total_errors} ({', '.join(f'{ERROR_KINDS[k]} {n}' for k, n in errors.items())}) |",
        f"| p99 per interval | median {statistics.median(p99s):.1f} ms, worst {p99s[worst]:.1f} ms"
        f" (minute {samples[worst + 1].minute:.1f}) |",
    ]
    if kill is not None:
        outcome = (
            f"replacement {kill.replacement} forked {kill.seconds:.2f} s later"
            if kill.replacement
            else f"no replacement within {kill.seconds:.0f} s"
        )
        verdict_lines.append(
            f"| worker {kill.victim} SIGKILLed at minute {kill.minute:.1f} | {outcome};"
            f" failed requests in that interval: {kill.errors} |"
        )
    all_flat = True
    span = f"minutes {window[0].minute:.1f}-{end:.1f}"
    for pid in sorted(window[-1].workers):
        points = [s for s in window if pid in s.workers]
        if len(points) < 3:
            verdict_lines.append(f"| worker {pid} memory, {span} | only {len(points)} readings: no slope |")
            all_flat = False
            continue
        cells = []
        for key in ("rss", "uss"):
            slope = slope_mib_per_minute([(s.minute, s.workers[pid][key]) for s in points])
            flat = abs(slope) <= args.flat
            all_flat &= flat
            first, last = points[0].workers[pid][key] / 1024, points[-1].workers[pid][key] / 1024
            cells.append(
                f"{key.upper()} {slope:+.3f} MiB/min ({first:.1f} -> {last:.1f} MiB): {'flat' if flat else 'GROWING'}"
            )
        verdict_lines.append(f"| worker {pid}, {span} | {'; '.join(cells)} |")
    # A sync worker serves one request at a time; SIGKILLed, the request it was serving (if any) gets no
    # answer, whatever the server does. Any other failure counts.
    kill_errors = 0 if kill is None else kill.errors
    kill_ok = kill is None or (kill.replacement is not None and kill.errors <= 1)
    passed = total_errors - kill_errors == 0 and all_flat and kill_ok
    verdict_lines.append(
        f"| **{'PASS' if passed else 'FAIL'}** | no errors but the killed worker's in-flight request:"
        f" {'yes' if total_errors - kill_errors == 0 and kill_errors <= 1 else 'no'};"
        f" memory flat (|slope| <= {args.flat} MiB/min): {'yes' if all_flat else 'no'}"
        + ("" if kill is None else f"; killed worker replaced: {'yes' if kill.replacement else 'no'}")
        + " |"
    )
    return "\n".join(lines + verdict_lines), passed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--image", help="serve this image (docker run, model mounted); default: the working tree")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--minutes", type=float, default=30, help="length of the paced load")
    parser.add_argument("--load", type=float, default=0.8, help="share of the measured maximum to offer")
    parser.add_argument("--interval", type=int, default=60, help="seconds per wrk run and memory reading")
    parser.add_argument("--max-seconds", type=int, default=30, help="length of the maximum-throughput run")
    parser.add_argument("--connections", type=int, default=0, help="wrk connections (default 2 x workers)")
    parser.add_argument("--flat", type=float, default=0.1, help="largest |MiB/min| memory slope called flat")
    parser.add_argument("--no-kill", dest="kill", action="store_false", help="do not kill a worker mid-run")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2 minutes, 20 s intervals")
    args = parser.parse_args(argv)
    if args.quick:
        args.minutes, args.interval, args.max_seconds = 2, 20, 10
    if not 0 < args.load <= 1:
        parser.error("--load must be in (0, 1]")
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")

    started = datetime.now(UTC)
    scratch = Path(tempfile.mkdtemp(prefix="optml-soak-"))
    try:
        model_dir = train_model(scratch)
        bodies = write_bodies(scratch)
        with soak_server(args.image, model_dir, args.workers) as (port, master):
            maximum, samples, kill = soak(port, master, scratch, bodies, args)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    text, passed = report(maximum, samples, kill, args, started)
    print(text)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
