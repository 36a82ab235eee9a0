"""Shared by the streaming benchmarks (issue 14): synthetic CSV channels, /opt/ml trees, and one training job
in a container with its peak memory, wall time and outcome.

Peak memory is the container's cgroup high-water mark: cgroup v2 `memory.peak`, or v1
`memory.max_usage_in_bytes`, read from the host while the container runs (the engine removes the cgroup when
it exits, so the last reading is kept). Both count page cache the container's reads charged to it, which the
kernel reclaims before it kills anything; the anonymous memory (v2 `anon`, v1 `total_rss`, sampled every
0.5 s) is what an out-of-memory kill is about, so the table shows both. Without a readable cgroup the peak
falls back to `container.stats()` usage, sampled on the same schedule.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import docker
import numpy as np
import pyarrow as pa
from docker.models.containers import Container
from pyarrow import csv

MIB = 1 << 20
SAMPLE_S = 0.5
KILLED = 137
# Where the engine puts a container's memory cgroup: v2 with systemd, v2 with cgroupfs, v1 likewise.
CGROUP_DIRS = (
    ("/sys/fs/cgroup/system.slice/docker-{id}.scope", "memory.peak", "memory.stat", "anon"),
    ("/sys/fs/cgroup/docker/{id}", "memory.peak", "memory.stat", "anon"),
    ("/sys/fs/cgroup/memory/docker/{id}", "memory.max_usage_in_bytes", "memory.stat", "total_rss"),
    ("/sys/fs/cgroup/memory/system.slice/docker-{id}.scope", "memory.max_usage_in_bytes", "memory.stat", "total_rss"),
)


def write_base_csv(path: Path, rows: int, features: int, seed: int = 0) -> Path:
    """Headerless, label first (SageMaker's CSV convention): a noisy linear rule on standard-normal features
    decides the binary label. Values rounded to 4 decimals keep a row near 8 bytes per column."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, features), dtype=np.float32)
    label = ((x @ rng.standard_normal(features).astype(np.float32)) + rng.standard_normal(rows) > 0).astype(np.int8)
    columns = [pa.array(label)] + [pa.array(np.round(x[:, i].astype(np.float64), 4)) for i in range(features)]
    table = pa.Table.from_arrays(columns, names=["label"] + [f"f{i}" for i in range(features)])
    path.parent.mkdir(parents=True, exist_ok=True)
    csv.write_csv(table, path, csv.WriteOptions(include_header=False))
    return path


def linked_channel(base: Path, channel_dir: Path, copies: int) -> list[Path]:
    """`copies` hard links to `base` named part-00000.csv, …: N× the rows for 1× the disk."""
    channel_dir.mkdir(parents=True, exist_ok=True)
    parts = []
    for index in range(copies):
        part = channel_dir / f"part-{index:05d}.csv"
        if not part.exists():
            os.link(base, part)
        parts.append(part)
    return parts


def count_lines(path: Path) -> int:
    with path.open("rb") as file:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: file.read(1 << 24), b""))


def write_tree(root: Path, hyperparameters: dict[str, str], input_mode: str = "File") -> Path:
    """An /opt/ml tree with one `train` channel (its files are mounted, or fed as Pipe FIFOs, separately)."""
    config = root / "input/config"
    config.mkdir(parents=True, exist_ok=True)
    (root / "input/data").mkdir(parents=True, exist_ok=True)
    for sub in ("model", "output/data"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    channel = {"ContentType": "text/csv", "TrainingInputMode": input_mode, "S3DistributionType": "FullyReplicated"}
    (config / "inputdataconfig.json").write_text(json.dumps({"train": channel}))
    (config / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    (config / "resourceconfig.json").write_text(
        json.dumps({"current_host": "algo-1", "hosts": ["algo-1"], "network_interface_name": "eth0"})
    )
    return root


@dataclass
class MemoryWatch:
    """The container's peak memory, from its cgroup while it runs, else from `stats()` samples."""

    container: Container
    peak: int = 0  # bytes: the cgroup's high-water mark (page cache included)
    peak_anon: int = 0  # bytes: the largest sample of anonymous memory
    source: str = "none"

    def sample(self) -> None:
        for pattern, peak_file, stat_file, anon_key in CGROUP_DIRS:
            folder = Path(pattern.format(id=self.container.id))
            try:
                self.peak = max(self.peak, int((folder / peak_file).read_text()))
                self.peak_anon = max(self.peak_anon, stat_value(folder / stat_file, anon_key))
            except (OSError, ValueError):
                continue
            self.source = f"cgroup {peak_file}"
            return
        if self.source.startswith("cgroup"):
            return  # the cgroup went with the container: keep its last reading
        try:
            usage = int(self.container.stats(stream=False).get("memory_stats", {}).get("usage", 0))
        except (docker.errors.APIError, ValueError):
            return
        self.peak, self.source = max(self.peak, usage), "docker stats (sampled)"


def stat_value(path: Path, key: str) -> int:
    for line in path.read_text().splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return int(value)
    return 0


@dataclass(frozen=True)
class JobResult:
    exit_code: int
    oom_killed: bool
    wall_s: float
    peak_mib: float
    peak_anon_mib: float
    memory_source: str
    failure: str  # the first line of /opt/ml/output/failure, "" when there is none
    timings: dict[str, float]  # evaluation.json's timings_seconds (load_data, training, total), when written
    logs: str  # the container's output, each line prefixed by the engine's RFC 3339 timestamp

    @property
    def outcome(self) -> str:
        if self.exit_code == KILLED:
            return "137 killed for memory" if self.oom_killed or not self.failure else "137 killed"
        return str(self.exit_code)


def run_job(
    client: docker.DockerClient,
    image: str,
    tree: Path,
    mounts: dict[str, dict[str, str]] | None = None,
    mem_limit: str | None = None,
    deadline_s: float = 3600,
    environment: dict[str, str] | None = None,
) -> JobResult:
    """`train` in a container on `tree` (mounted as /opt/ml, plus `mounts`), polled every 0.5 s until it exits."""
    volumes = {str(tree): {"bind": "/opt/ml", "mode": "rw"}, **(mounts or {})}
    limits = {"mem_limit": mem_limit, "memswap_limit": mem_limit} if mem_limit else {}
    started = time.monotonic()
    options = {"volumes": volumes, "environment": environment or {}, **limits}
    container = client.containers.run(image, ["train"], detach=True, **options)
    try:
        watch = MemoryWatch(container)
        while time.monotonic() - started < deadline_s:
            watch.sample()
            container.reload()
            if container.status in ("exited", "dead"):
                break
            time.sleep(SAMPLE_S)  # the sampling interval, not a synchronization
        wall = time.monotonic() - started
        if container.status not in ("exited", "dead"):
            container.kill()  # past the deadline: its exit code is then 137, and the wall time says why
        code = int(container.wait(timeout=60)["StatusCode"])
        state = container.attrs.get("State", {})
        return JobResult(
            code, bool(state.get("OOMKilled")), wall, watch.peak / MIB, watch.peak_anon / MIB, watch.source,
            first_line(tree / "output/failure"), read_timings(tree),
            container.logs(timestamps=True).decode("utf-8", errors="replace"),
        )  # fmt: skip
    finally:
        container.remove(force=True)


def first_line(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[0]
    except (OSError, IndexError):
        return ""


def read_timings(tree: Path) -> dict[str, float]:
    try:
        report = json.loads((tree / "output/data/evaluation.json").read_text())
    except (OSError, ValueError):
        return {}
    timings = report.get("timings_seconds", {})
    return {str(k): float(v) for k, v in timings.items()} if isinstance(timings, dict) else {}
