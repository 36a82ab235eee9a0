"""One trial of `optml tune --local`: a container of the image on a /opt/ml tree of its own, its log read with
the job's metric definitions as SageMaker reads it.

Each trial is `docker run IMAGE train` (the Docker SDK, not SageMaker local mode: faster, and a trial can be
stopped mid-run) on `trial-NNN/` — `input/config/` (hyperparameters.json, inputdataconfig.json,
resourceconfig.json for algo-1), `model/`, `output/` — with each channel bind-mounted read-only from the
user's folder at `/opt/ml/input/data/NAME`. The log goes to `trial-NNN/log.txt`; each line is searched with
every metric definition's regex (its first group is the value, as SageMaker records it). The last value of a
metric is the one that counts, as for SageMaker's tuner: after early stopping the container repeats the best
epoch's line as `restored epoch=N ...;`, so the last value describes the model that was saved.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optml.cli.errors import CliError
from optml.cli.localmode import clean_log_line

if TYPE_CHECKING:
    import docker
    from docker.models.containers import Container

LABEL = "optml.tune-local"  # every trial container carries it, its value the search's id: found to clean up
STOP_GRACE_S = 10  # a stopped (pruned) trial checkpoints and saves its model; SIGKILL after this long
# A per-epoch metric line (container/logs.py): `epoch=3 ...;`; not `restored epoch=3 ...;`, which repeats an
# epoch already reported.
EPOCH_LINE = re.compile(r"^epoch=(\d+) ")
COMPLETED, PRUNED, FAILED = "completed", "pruned", "failed"


@dataclass(frozen=True)
class MountedChannel:
    """A channel as a trial mounts it: the user's folder (or file) and its ContentType, if given."""

    name: str
    path: Path
    content_type: str | None = None


@dataclass(frozen=True)
class TrialSpec:
    """Everything one trial's container needs."""

    image: str
    folder: Path  # trial-NNN/: the trial's /opt/ml
    channels: tuple[MountedChannel, ...]
    hyperparameters: dict[str, str]  # what hyperparameters.json holds, `_tuning_objective_metric` included
    metric_definitions: list[dict[str, str]]
    objective: str
    labels: dict[str, str] = field(default_factory=dict)
    timeout: int | None = None  # seconds; None or 0: no limit


@dataclass
class TrialResult:
    status: str  # COMPLETED, PRUNED or FAILED
    objective: float | None  # the objective's last value, None when the log never gave one
    metrics: dict[str, float]  # each metric definition's last value
    seconds: float
    failure: str | None = None  # why it failed, one line


class MetricReader:
    """Reads a log line by line, as SageMaker does with a job's metric definitions: each definition's regex is
    searched in each line, its first group the value; the last value seen is each metric's value."""

    def __init__(self, metric_definitions: Sequence[Mapping[str, str]], objective: str) -> None:
        self.regexes = {definition["Name"]: re.compile(definition["Regex"]) for definition in metric_definitions}
        if objective not in self.regexes:
            raise CliError(f"no metric definition named {objective}: the objective must be one the job sends")
        self.objective = objective
        self.metrics: dict[str, float] = {}

    def feed(self, line: str) -> tuple[int, float] | None:
        """Record the line's metrics; (epoch, objective value) when it is a per-epoch line with the objective."""
        line = clean_log_line(line)
        found: dict[str, float] = {}
        for name, regex in self.regexes.items():
            match = regex.search(line)
            if match:
                try:
                    found[name] = float(match.group(1))
                except (IndexError, ValueError):
                    continue
        self.metrics.update(found)
        epoch = EPOCH_LINE.match(line)
        if epoch and self.objective in found:
            return int(epoch.group(1)), found[self.objective]
        return None

    def feed_all(self, lines: Iterable[str]) -> list[tuple[int, float]]:
        return [step for step in map(self.feed, lines) if step is not None]

    @property
    def objective_value(self) -> float | None:
        return self.metrics.get(self.objective)


def mounted_channels(channels: Iterable[Any]) -> tuple[MountedChannel, ...]:
    """train.Channel's, each an existing local folder or file (a CliError naming the one that is not)."""
    from optml.cli.train import existing_channel_path

    return tuple(MountedChannel(c.name, existing_channel_path(c), c.content_type) for c in channels)


def write_opt_ml(spec: TrialSpec) -> None:
    """The trial's /opt/ml tree, as SageMaker lays it out for a training job on one host."""
    config = spec.folder / "input" / "config"
    config.mkdir(parents=True, exist_ok=True)
    for sub in ("model", "output/data", *(f"input/data/{channel.name}" for channel in spec.channels)):
        (spec.folder / sub).mkdir(parents=True, exist_ok=True)
    input_config = {
        channel.name: {
            "TrainingInputMode": "File",
            **({"ContentType": channel.content_type} if channel.content_type else {}),
        }
        for channel in spec.channels
    }
    resource = {"current_host": "algo-1", "hosts": ["algo-1"], "network_interface_name": "eth0"}
    (config / "hyperparameters.json").write_text(json.dumps(spec.hyperparameters, indent=2) + "\n")
    (config / "inputdataconfig.json").write_text(json.dumps(input_config, indent=2) + "\n")
    (config / "resourceconfig.json").write_text(json.dumps(resource) + "\n")


def volumes(spec: TrialSpec) -> dict[str, dict[str, str]]:
    """The trial folder as /opt/ml, each channel read-only at its place in it (a file: inside its folder)."""
    mounts = {str(spec.folder): {"bind": "/opt/ml", "mode": "rw"}}
    for channel in spec.channels:
        target = f"/opt/ml/input/data/{channel.name}"
        if channel.path.is_file():
            target = f"{target}/{channel.path.name}"
        mounts[str(channel.path)] = {"bind": target, "mode": "ro"}
    return mounts


def container_user() -> str | None:
    """This user's uid:gid, so the trial's files (the model) are the user's, not root's; None off POSIX."""
    if not hasattr(os, "getuid"):
        return None
    return f"{os.getuid()}:{os.getgid()}"


def run_trial(
    client: docker.DockerClient, spec: TrialSpec, on_epoch: Callable[[int, float], bool] | None = None
) -> TrialResult:
    """Run the trial's container to its end; `on_epoch(epoch, objective)` answering True stops it (pruned).

    The container is removed whatever happens. A container that exits non-zero, or ends without the
    objective in its log, is a failed trial; the first line of its /opt/ml/output/failure says why.
    """
    write_opt_ml(spec)
    started = time.monotonic()
    container = client.containers.run(
        spec.image,
        ["train"],
        detach=True,
        volumes=volumes(spec),
        labels=spec.labels,
        user=container_user(),
        network_mode="none",
    )
    try:
        reader = MetricReader(spec.metric_definitions, spec.objective)
        stopped, timed_out = follow(container, spec, reader, on_epoch)
        exit_code = int(container.wait(timeout=STOP_GRACE_S * 6)["StatusCode"])
    finally:
        remove_container(container)
    seconds = round(time.monotonic() - started, 1)
    objective = reader.objective_value
    if stopped and not timed_out:  # whatever its exit code: it was told to stop
        return TrialResult(PRUNED, objective, reader.metrics, seconds)
    failure = trial_failure(spec.folder, exit_code, timed_out, spec.timeout)
    if failure is None and (objective is None or not math.isfinite(objective)):
        failure = f"{spec.objective} was {objective}" if objective is not None else f"no {spec.objective} in the log"
    status = FAILED if failure else COMPLETED
    return TrialResult(status, objective, reader.metrics, seconds, failure)


def follow(
    container: Container,
    spec: TrialSpec,
    reader: MetricReader,
    on_epoch: Callable[[int, float], bool] | None,
) -> tuple[bool, bool]:
    """Copy the log to log.txt and read it until the container ends; (stopped by on_epoch, timed out)."""
    timed_out = threading.Event()
    timer = None
    if spec.timeout:

        def give_up() -> None:
            timed_out.set()
            stop_container(container)

        timer = threading.Timer(spec.timeout, give_up)
        timer.daemon = True
        timer.start()
    stopped = False
    try:
        with (spec.folder / "log.txt").open("w", encoding="utf-8") as log:
            for line in log_lines(container.logs(stream=True, follow=True)):
                log.write(line + "\n")
                step = reader.feed(line)
                if step is not None and on_epoch is not None and not stopped and on_epoch(*step):
                    stopped = True
                    stop_container(container)
    finally:
        if timer is not None:
            timer.cancel()
    return stopped, timed_out.is_set()


def log_lines(chunks: Iterable[bytes]) -> Iterable[str]:
    """Whole lines from the stream of log chunks (a chunk may end mid-line)."""
    partial = ""
    for chunk in chunks:
        partial += chunk.decode("utf-8", errors="replace")
        *complete, partial = partial.split("\n")
        yield from (line.rstrip("\r") for line in complete)
    if partial:
        yield partial.rstrip("\r")


def stop_container(container: Container) -> None:
    """SIGTERM: the image checkpoints, saves the model it has and exits; SIGKILL after STOP_GRACE_S."""
    import docker

    try:
        container.stop(timeout=STOP_GRACE_S)
    except docker.errors.NotFound:
        pass


def remove_container(container: Container) -> None:
    import docker

    try:
        container.remove(force=True)
    except docker.errors.NotFound:
        pass


def remove_labelled(client: docker.DockerClient, value: str) -> int:
    """Force-remove every container of one search (its LABEL value), running or not; how many there were."""
    containers = client.containers.list(all=True, filters={"label": f"{LABEL}={value}"})
    for container in containers:
        remove_container(container)
    return len(containers)


def trial_failure(folder: Path, exit_code: int, timed_out: bool, timeout: int | None) -> str | None:
    """Why the trial failed, on one line; None when it did not."""
    if timed_out:
        return f"gave up after {timeout} s (--timeout)"
    if exit_code == 0:
        return None
    failure = folder / "output" / "failure"
    first = ""
    if failure.is_file():
        first = next((line.strip() for line in failure.read_text(errors="replace").splitlines() if line.strip()), "")
    return f"exit code {exit_code}: {first}" if first else f"exit code {exit_code}"
