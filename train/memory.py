"""Will a channel fit in memory? Load it whole if so (data_loading=auto), stream it if not; and when a job
loads a channel anyway, say so before loading one that will not fit.

A container that runs out of memory is killed by the kernel (exit 137) with no chance to write
/opt/ml/output/failure, so the job ends with a generic reason. Before each channel is loaded its size is
compared with the memory the container has left (its cgroup limit, else the machine's); when loading would
not fit, a warning names the channel and the numbers, and the same text is left in the failure file until
the channel has loaded — so a job killed while loading it still tells the user why.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from optml.container.config import JobConfig
from optml.container.errors import UserError
from optml.container.failure import truncate_reason, write_failure
from optml.container.paths import Paths
from optml.train.data import channel_files
from optml.train.distributed import Topology
from optml.train.hyperparameters import Hyperparameters

log = logging.getLogger(__name__)

# Peak memory while loading a channel ÷ its uncompressed size, measured for a 100 MB numeric CSV
# (400,000 rows × 31 columns): 3.8× (pyarrow's table, the float arrays, the standardized copy).
LOAD_FACTOR = 4
# Limit, usage, and the memory.stat entry for page cache the kernel drops before it kills (usage counts it,
# as `docker stats` subtracts it). cgroup v1 reports "no limit" as a huge number (PAGE_COUNTER_MAX pages);
# anything above the machine's memory is no limit either.
CGROUP_FILES = (
    ("sys/fs/cgroup/memory.max", "sys/fs/cgroup/memory.current", "sys/fs/cgroup/memory.stat", "inactive_file"),
    (
        "sys/fs/cgroup/memory/memory.limit_in_bytes",
        "sys/fs/cgroup/memory/memory.usage_in_bytes",
        "sys/fs/cgroup/memory/memory.stat",
        "total_inactive_file",
    ),
)


@dataclass(frozen=True)
class Memory:
    """What this container may still allocate, and the limit it comes from."""

    available: int
    limit: int
    source: str  # "the container's memory limit" or "the machine's memory"


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # cgroup v2 writes "max" for no limit


def _stat(path: Path, name: str) -> int:
    try:
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == name and value.strip().isdigit():
                return int(value)
    except OSError:
        pass
    return 0


def _meminfo(root: Path) -> dict[str, int]:
    values = {}
    try:
        for line in (root / "proc/meminfo").read_text().splitlines():
            name, _, rest = line.partition(":")
            if rest.strip().endswith("kB"):
                values[name] = int(rest.split()[0]) * 1024
    except (OSError, ValueError):
        return {}
    return values


def available_memory(root: Path = Path("/")) -> Memory | None:
    """The container's cgroup limit minus its usage, or the machine's available memory when that is less
    (or no limit is set); None when neither can be read."""
    meminfo = _meminfo(root)
    machine = Memory(meminfo["MemAvailable"], meminfo["MemTotal"], "the machine's memory") if meminfo else None
    for limit_file, usage_file, stat_file, reclaimable in CGROUP_FILES:
        limit, usage = _read_int(root / limit_file), _read_int(root / usage_file)
        if limit is None or usage is None or (machine is not None and limit >= machine.limit):
            continue
        used = usage - _stat(root / stat_file, reclaimable)
        container = Memory(max(0, limit - used), limit, "the container's memory limit")
        return container if machine is None or container.available <= machine.available else machine
    return machine


def uncompressed_size(path: Path) -> int:
    """A file's size once read: gzip files store it (mod 4 GiB) in their last four bytes."""
    size = path.stat().st_size
    try:
        with path.open("rb") as handle:
            if handle.read(2) != b"\x1f\x8b" or size < 18:
                return size
            handle.seek(-4, 2)
            stored = int.from_bytes(handle.read(4), "little")
    except OSError:
        return size
    return max(stored, size)  # beyond 4 GiB the stored size wraps: then at least the compressed size


def _size(size: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6)):
        if size >= scale:
            return f"{size / scale:,.1f} {unit}"
    return f"{size / 1e3:,.0f} kB"


def fit_warning(channel: str, files: list[Path], memory: Memory | None, processes: int = 1) -> str | None:
    """The warning for a channel that would not fit in `memory`, or None. Every training process on the host
    loads every channel."""
    if memory is None or not files:
        return None
    size = sum(uncompressed_size(path) for path in files)
    needed = LOAD_FACTOR * size * processes
    if needed <= memory.available:
        return None
    each = f" in each of the {processes} training processes on this host" if processes > 1 else ""
    return (
        f"channel {channel!r} is {_size(size)} of data, and loading it takes about {LOAD_FACTOR}x that{each}"
        f" ({_size(needed)}), but only {_size(memory.available)} of {memory.source}"
        f" ({_size(memory.limit)}) is free: the job will probably be killed for memory (exit code 137)."
        " Use an instance type with more memory, or less data in the channel"
    )


class LoadingGuard:
    """Around loading the channels and preparing them (the standardized copy is part of the peak): `check`
    warns about a channel that will not fit, and the first such warning waits in the failure file until the
    data is ready — a kill for memory leaves no other trace. Only one process per host (`writes`) keeps the
    file, which all of them share."""

    def __init__(self, failure_file: Path, processes: int = 1, writes: bool = True, root: Path = Path("/")) -> None:
        self.failure_file, self.processes, self.writes, self.root = failure_file, processes, writes, root
        self.reason: str | None = None

    def check(self, channel: str, files: list[Path]) -> None:
        warning = fit_warning(channel, files, available_memory(self.root), self.processes)
        if warning is None:
            return
        log.warning(warning)
        if self.writes and self.reason is None:
            self.reason = truncate_reason(f"Probably out of memory while loading the data: {warning}")
            write_failure(self.failure_file, self.reason)

    def __enter__(self) -> LoadingGuard:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, traceback: object) -> None:
        if kind is not None or self.reason is None:
            return  # a failure writes its own reason over this one
        try:  # the data is ready: the job goes on, and the failure file must not outlive the risk
            if self.failure_file.read_text(encoding="utf-8") == self.reason:
                self.failure_file.unlink()
        except OSError:
            pass


MEMORY, STREAM = "memory", "stream"
# data_loading=auto streams when loading the channels would take more than this share of the free memory.
STREAM_ABOVE_SHARE = 0.5


def choose_loading(hp: Hyperparameters, job: JobConfig, paths: Paths, topology: Topology) -> str:
    """data_loading resolved: "memory" or "stream", with the reason in the log. Pipe input and sharded
    channels across hosts can only stream; auto also streams FastFile input (each read goes to S3) and
    channels whose loading would take more than half the memory left (the cgroup limit, not the host's)."""
    modes = {name: channel.input_mode.lower() for name, channel in job.channels.items()}
    pipe = sorted(name for name, mode in modes.items() if mode == "pipe")
    sharded = sorted(
        name for name, channel in job.channels.items() if channel.distribution == "ShardedByS3Key"
    ) if len(topology.hosts) > 1 else []  # fmt: skip
    if hp.data_loading == MEMORY:
        _refuse_memory(pipe, sharded, len(topology.hosts))
        log.info("data_loading=memory: each channel is loaded whole")
        return MEMORY
    reason = _stream_reason(hp, job, paths, topology.processes_per_host, pipe, sharded)
    if reason is None:
        log.info("data_loading=auto: loading each channel whole (it fits in memory; data_loading=stream streams it)")
        return MEMORY
    if hp.k_folds >= 2:
        raise UserError(
            f"k_folds={hp.k_folds}: cross-validation holds the train channel in memory, but it is read as a stream"
            f" ({reason}); set k_folds=0, or data_loading=memory on an instance with enough memory"
        )
    if pipe and topology.processes_per_host > 1:
        raise UserError(
            f"channel {', '.join(map(repr, pipe))} uses Pipe mode, whose FIFOs one process per host reads, but this"
            f" host runs {topology.processes_per_host} training processes; use FastFile or File mode"
        )
    log.info("data_loading=%s: reading the channels as streams (%s)", hp.data_loading, reason)
    return STREAM


def _refuse_memory(pipe: list[str], sharded: list[str], hosts: int) -> None:
    if pipe:
        raise UserError(
            f"data_loading=memory cannot load channel {', '.join(map(repr, pipe))}: Pipe mode delivers it as a"
            " FIFO to read once, as a stream; use data_loading=auto (or stream), or TrainingInputMode File"
        )
    if sharded:
        raise UserError(
            f"data_loading=memory cannot train on channel {', '.join(map(repr, sharded))}, ShardedByS3Key across"
            f" {hosts} hosts: each host holds different files, which only the streaming path combines (statistics"
            " merged across hosts, steps agreed); use data_loading=auto (or stream), or FullyReplicated"
        )


def _stream_reason(
    hp: Hyperparameters, job: JobConfig, paths: Paths, processes: int, pipe: list[str], sharded: list[str]
) -> str | None:
    if hp.data_loading == STREAM:
        return "data_loading=stream"
    if pipe:
        return f"channel {', '.join(map(repr, pipe))} uses Pipe mode"
    fastfile = sorted(name for name, channel in job.channels.items() if channel.input_mode.lower() == "fastfile")
    if fastfile:
        return f"channel {', '.join(map(repr, fastfile))} uses FastFile mode, which reads from S3 as training reads"
    if sharded:
        return f"channel {', '.join(map(repr, sharded))} is ShardedByS3Key across hosts"
    directories = [paths.channel_dir(name) for name in ("train", "validation", "test")]
    files = [path for directory in directories if directory.is_dir() for path in channel_files(directory)]
    memory = available_memory()
    size = sum(uncompressed_size(path) for path in files)
    needed = LOAD_FACTOR * size * processes
    if memory is not None and needed > STREAM_ABOVE_SHARE * memory.available:
        return (
            f"loading {_size(size)} of data takes about {_size(needed)}, more than half of the"
            f" {_size(memory.available)} free of {memory.source} ({_size(memory.limit)}); data_loading=memory loads"
            " it anyway, and the result"
            " can differ on an instance with more memory"
        )
    return None
