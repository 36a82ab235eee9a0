"""Where an epoch's time goes: data loading, forward/backward, optimizer, the rest — enough to see an input
bottleneck without running a profiler.

The loop leaves the times where the `Profiler` callback picks them up (train/trainer.py): the loop measures how
long it waited for each batch (`TrainState.data_seconds`: in memory, indexing the rows; streaming, the
read-ahead queue), the step how long its phases took (`Step.forward_backward_seconds`: zero_grad,
augmentation, the copy to the device, forward, loss, backward; `Step.optimizer_seconds`: the gradients'
all-reduce, clipping, the optimizer step). Each is two `time.perf_counter()` calls and no synchronize.
`other` is the rest of the epoch's wall time: recording the step, the callbacks, checkpoints taken during
the epoch, the per-step collective of several processes, and at the end the train metrics and the
validation scoring. So data + forward/backward + optimizer + other is the epoch's wall time, from the start
of its first batch to the profiler's `on_epoch_end` (the epoch-end checkpoint, written after every
callback's `on_epoch_end`, falls outside).

On CUDA the host does not wait for the GPU at each phase, so those host times show where the host waits,
not where the GPU works. One step in `DeviceTimer.every` also records CUDA events at the phases' boundaries,
read without synchronizing (or once at the epoch's end); their GPU times, scaled to every step, are
`gpu_forward_backward_seconds` and `gpu_optimizer_seconds` (an estimate from the sample). With
`torch.cuda.max_memory_allocated`, reset at each epoch's start, that is the epoch's GPU memory peak.

CPU memory: `cpu_peak_rss_mb` is the process's peak resident set since it started (VmHWM), not per epoch —
resetting it would disturb other measurements of the same process; `cpu_rss_mb` is the resident set at the
epoch's end.

Checkpoints: the finished epochs' profiles travel in checkpoints (the callback's state); the epoch a job
resumes in is profiled from the resume on (its `steps` are fewer than the epoch's, `resumed` is true).
Each process profiles its own share: `rows` and `samples_per_second` are this process's.
"""

from __future__ import annotations

import logging
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from optml.train.callbacks import Callback, Control

if TYPE_CHECKING:
    from optml.train.trainer import Step, TrainState

log = logging.getLogger(__name__)

PHASES = ("data", "forward_backward", "optimizer", "other")
MB = 1024 * 1024
PENDING_EVENTS = 64  # sampled steps whose CUDA events wait to be read before a non-blocking pass over them
STATUS = Path("/proc/self/status")


class DeviceTimer:
    """GPU timestamps (CUDA events) at a step's phase boundaries, for one step in `every`: three event records
    cost a few microseconds, a noticeable share of a small network's step, so most steps go untimed."""

    def __init__(self, every: int = 16) -> None:
        self.every = every
        self.steps = 0

    def start(self) -> list[Any] | None:
        """The step's events so far (its start), or None when this step is not sampled."""
        self.steps += 1
        return [self.record()] if (self.steps - 1) % self.every == 0 else None

    def record(self) -> Any:
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event


def device_timer(device: torch.device) -> DeviceTimer | None:
    """A timer on CUDA; nothing on the CPU, where the host times are the computation's."""
    return DeviceTimer() if device.type == "cuda" else None


@dataclass
class EpochTimes:
    """The sums of one epoch (or the part of it this process ran), reset at its end."""

    steps: int = 0
    trained: int = 0  # steps that trained (not skipped)
    rows: int = 0
    data: float = 0.0
    forward_backward: float = 0.0
    optimizer: float = 0.0
    gpu_sampled: int = 0  # steps whose CUDA events were read
    gpu_forward_backward: float = 0.0
    gpu_optimizer: float = 0.0


class Profiler(Callback):
    """Adds up the step and loop times into one profile per epoch (`epochs`), logged in one line each.

    Cheap enough to be always on: a few additions per step. `device` overrides the network's (tests)."""

    name = "profile"

    def __init__(self, *, log_lines: bool = True, device: torch.device | None = None) -> None:
        self.epochs: list[dict[str, Any]] = []
        self.log_lines = log_lines
        self.device = device
        self.times = EpochTimes()
        self.pending: list[list[Any]] = []  # sampled steps' CUDA events, not yet read

    @property
    def cuda(self) -> bool:
        return self.device is not None and self.device.type == "cuda"

    def on_fit_start(self, run: TrainState) -> None:
        if self.device is None:
            self.device = next(run.network.parameters()).device
        self._new_epoch()

    def on_step_end(self, run: TrainState, step: Step | None, control: Control) -> None:
        times = self.times
        times.steps += 1
        times.data += run.data_seconds
        if step is None:
            return
        times.trained += 1
        times.rows += len(step.outputs)
        times.forward_backward += step.forward_backward_seconds
        times.optimizer += step.optimizer_seconds
        if step.device_events is not None:
            self.pending.append(step.device_events)
            if len(self.pending) >= PENDING_EVENTS:
                self._read_events(wait=False)

    def on_epoch_end(self, run: TrainState, metrics: dict[str, float], control: Control) -> None:
        seconds = time.perf_counter() - run.epoch_started
        self._read_events(wait=True)
        profile = self._profile(run.epoch, seconds, resumed=self.times.steps < run.batches_done)
        self.epochs.append(profile)
        if self.log_lines:
            log.info("%s", format_profile(profile))
        self._new_epoch()

    def state_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epochs = list(state["epochs"])

    def _new_epoch(self) -> None:
        self.times, self.pending = EpochTimes(), []
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)

    def _read_events(self, wait: bool) -> None:
        """Add up the GPU times of the sampled steps whose events have completed — all of them when `wait`
        (the epoch's end: one synchronize). Events complete in order, so the first unfinished one stops it."""
        done = 0
        for start, backward_done, step_done in self.pending:
            if wait:
                step_done.synchronize()
            elif not step_done.query():
                break
            self.times.gpu_forward_backward += start.elapsed_time(backward_done) / 1000  # milliseconds
            self.times.gpu_optimizer += backward_done.elapsed_time(step_done) / 1000
            self.times.gpu_sampled += 1
            done += 1
        del self.pending[:done]

    def _profile(self, epoch: int, seconds: float, resumed: bool) -> dict[str, Any]:
        times = self.times
        measured = times.data + times.forward_backward + times.optimizer
        profile: dict[str, Any] = {
            "epoch": epoch,
            "steps": times.steps,
            "rows": times.rows,
            "seconds": seconds,
            "data_seconds": times.data,
            "forward_backward_seconds": times.forward_backward,
            "optimizer_seconds": times.optimizer,
            "other_seconds": max(0.0, seconds - measured),
            "samples_per_second": times.rows / seconds if seconds > 0 else 0.0,
            "cpu_rss_mb": current_rss_mb(),
            "cpu_peak_rss_mb": peak_rss_mb(),
            "resumed": resumed,
        }
        if self.cuda:
            scale = times.trained / times.gpu_sampled if times.gpu_sampled else 0.0
            profile["gpu_forward_backward_seconds"] = times.gpu_forward_backward * scale
            profile["gpu_optimizer_seconds"] = times.gpu_optimizer * scale
            profile["gpu_max_allocated_mb"] = torch.cuda.max_memory_allocated(self.device) / MB
        return profile


def format_profile(profile: dict[str, Any]) -> str:
    """One concise log line; no `name=value` pairs, so that no metric regex matches it."""
    seconds = profile["seconds"]
    shares = ", ".join(
        f"{phase.replace('_', '/')} {profile[f'{phase}_seconds']:.3g} s"
        f" ({100 * profile[f'{phase}_seconds'] / seconds if seconds > 0 else 0:.0f}%)"
        for phase in PHASES
    )
    line = (
        f"epoch {profile['epoch']} profile: {seconds:.3g} s{' (resumed part)' if profile['resumed'] else ''}"
        f" = {shares}; {profile['samples_per_second']:,.0f} samples/s;"
        f" RSS {profile['cpu_rss_mb']:,.0f} MB, peak {profile['cpu_peak_rss_mb']:,.0f} MB since start"
    )
    if "gpu_max_allocated_mb" in profile:
        line += (
            f"; GPU forward/backward {profile['gpu_forward_backward_seconds']:.3g} s,"
            f" optimizer {profile['gpu_optimizer_seconds']:.3g} s (sampled), max allocated"
            f" {profile['gpu_max_allocated_mb']:,.0f} MB"
        )
    return line


def _status_mb(field: str) -> float | None:
    """A `kB` field of /proc/self/status (Linux), in MB."""
    try:
        for line in STATUS.read_text(encoding="ascii").splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    """The process's peak resident memory since it started (a lifetime peak, like ru_maxrss)."""
    peak = _status_mb("VmHWM")
    if peak is not None:
        return peak
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / MB if sys.platform == "darwin" else maxrss / 1024  # bytes on macOS, kB on Linux


def current_rss_mb() -> float:
    rss = _status_mb("VmRSS")
    return rss if rss is not None else peak_rss_mb()
