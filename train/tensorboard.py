"""TensorBoard event files of a training run (hyperparameter `tensorboard`), in /opt/ml/output/tensorboard.

Per epoch (the step axis is the epoch): every metric of the epoch's line as a scalar, `train:loss` tagged
`train/loss`; the learning rate (`optimizer/learning_rate`); the epoch's profile (train/profiling.py) as
`profile/data_seconds`, `profile/samples_per_second`, ... When `histograms` is on (a rule watches weights or
gradients), every `histogram_steps` steps a histogram of each parameter (`weights/<name>`) and of its
gradient (`gradients/<name>`), on the step axis counted over the whole run.

Only the master process writes. Files are flushed at each epoch's end and closed at the fit's end; `close()`
is safe to call again (in a `finally`, for a failed or stopped job). A resumed job writes a new event file
in the same directory; TensorBoard reads them together, the later value of a repeated step winning.

Events are written synchronously with tensorboardX's record writer and summary protos: its SummaryWriter
hands events to a thread through a multiprocessing queue, and its flush() writes only what that thread has
taken, so a job that fails can lose its last epoch (seen in tests). tensorboardX is imported when the first
file is opened: it is slow to import.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from optml.train.callbacks import Callback, Control
from optml.train.hyperparameters import Hyperparameters
from optml.train.profiling import Profiler

if TYPE_CHECKING:
    from optml.train.trainer import Step, TrainState

# Histograms every 500 steps, as SageMaker Debugger saves tensors by default: one write costs about 20 ms for
# the default MLP (half of it tensorboardX's pure-Python CRC of the record), 4 µs a step at this interval.
HISTOGRAM_STEPS = 500
HISTOGRAM_BINS = 30  # fixed: numpy's automatic bins grow without bound when a few values are far out
PROFILE_SCALARS = (
    "seconds",
    "data_seconds",
    "forward_backward_seconds",
    "optimizer_seconds",
    "other_seconds",
    "samples_per_second",
    "cpu_rss_mb",
    "cpu_peak_rss_mb",
    "gpu_forward_backward_seconds",
    "gpu_optimizer_seconds",
    "gpu_max_allocated_mb",
)


class TensorBoard(Callback):
    """Writes the run's scalars (and histograms when asked) to `directory`; `profiler` supplies the profile."""

    name = "tensorboard"  # the histogram step count continues after a resume

    def __init__(
        self,
        directory: Path,
        *,
        profiler: Profiler | None = None,
        histograms: bool = False,
        histogram_steps: int = HISTOGRAM_STEPS,
    ) -> None:
        self.directory = directory
        self.profiler = profiler
        self.histograms = histograms
        self.histogram_steps = histogram_steps
        self.steps = 0  # steps trained over the run: the histograms' step axis
        self.profiles_written = 0
        self.writer: EventFile | None = None

    @classmethod
    def for_job(
        cls, hp: Hyperparameters, directory: Path, *, is_master: bool, profiler: Profiler | None, histograms: bool
    ) -> TensorBoard | None:
        """The callback when `hp.tensorboard` is on, on the master process; None otherwise."""
        if not hp.tensorboard or not is_master:
            return None
        return cls(directory, profiler=profiler, histograms=histograms)

    def on_fit_start(self, run: TrainState) -> None:
        self._open()

    def on_step_end(self, run: TrainState, step: Step | None, control: Control) -> None:
        if step is None:
            return
        self.steps += 1
        if self.histograms and self.steps % self.histogram_steps == 0:
            self.write_histograms(run)

    def on_epoch_end(self, run: TrainState, metrics: dict[str, float], control: Control) -> None:
        scalars = {key.replace(":", "/", 1): value for key, value in metrics.items()}
        for index, group in enumerate(run.optimizer.param_groups):
            scalars["optimizer/learning_rate" + (f"/group{index}" if index else "")] = float(group["lr"])
        writer = self._open()
        writer.scalars(scalars, run.epoch)
        self._write_profiles()
        writer.flush()

    def on_fit_end(self, run: TrainState) -> None:
        self.close()

    def close(self) -> None:
        """Write what is left of the profile, flush and close the files; again: nothing."""
        if self.writer is not None:
            self._write_profiles()
            self.writer.close()
            self.writer = None

    def write_histograms(self, run: TrainState) -> None:
        tensors = {}
        for name, parameter in run.network.named_parameters():
            tensors[f"weights/{name}"] = parameter.detach()
            if parameter.grad is not None:
                tensors[f"gradients/{name}"] = parameter.grad.detach()
        self._open().histograms(tensors, self.steps)

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = state["steps"]

    def _open(self) -> EventFile:
        if self.writer is None:
            self.writer = EventFile(self.directory)
        return self.writer

    def _write_profiles(self) -> None:
        """Epoch profiles not written yet: whichever of the two callbacks runs first at an epoch's end."""
        profiles = self.profiler.epochs if self.profiler else []
        for profile in profiles[self.profiles_written :]:
            scalars = {f"profile/{key}": float(profile[key]) for key in PROFILE_SCALARS if key in profile}
            self._open().scalars(scalars, profile["epoch"])
        self.profiles_written = len(profiles)


class EventFile:
    """One event file, written synchronously: what `flush()` returns from is on disk."""

    def __init__(self, directory: Path) -> None:
        from tensorboardX.event_file_writer import EventsWriter  # slow to import: only when a job writes

        directory.mkdir(parents=True, exist_ok=True)
        # The name holds the second it was opened: a unique suffix keeps a quick resume from overwriting it.
        self.events = EventsWriter(str(directory / "events"), filename_suffix=f".{time.time_ns()}")

    def scalars(self, values: dict[str, float], step: int) -> None:
        from tensorboardX.proto.summary_pb2 import Summary

        self._write(Summary(value=[Summary.Value(tag=tag, simple_value=v) for tag, v in values.items()]), step)

    def histograms(self, tensors: dict[str, Any], step: int) -> None:
        """A histogram of each tensor's finite values (NaN and inf are what a rule looks for, not a crash)."""
        from tensorboardX.proto.summary_pb2 import Summary
        from tensorboardX.summary import histogram

        summaries = []
        for tag, tensor in tensors.items():
            values = tensor.float().cpu().numpy().reshape(-1)
            values = values[np.isfinite(values)]
            if len(values):
                summaries.extend(histogram(tag, values, bins=HISTOGRAM_BINS).value)
        if summaries:
            self._write(Summary(value=summaries), step)

    def flush(self) -> None:
        self.events.flush()

    def close(self) -> None:
        self.events.close()

    def _write(self, summary: Any, step: int) -> None:
        from tensorboardX.proto.event_pb2 import Event

        self.events.write_event(Event(wall_time=time.time(), step=step, summary=summary))


def read_events(directory: Path) -> Iterator[Any]:
    """Every event (tensorboardX's `Event` proto) of the event files in `directory`, file by file: a reader for
    tests and notebooks (the tensorboard package, which has one, is not installed). Checksums are not checked."""
    from tensorboardX.proto.event_pb2 import Event

    for path in sorted(directory.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        offset = 0
        while offset + 12 <= len(data):  # TFRecord: length (u64), its crc (u32), the record, its crc (u32)
            (length,) = struct.unpack_from("<Q", data, offset)
            record = data[offset + 12 : offset + 12 + length]
            offset += 12 + length + 4
            yield Event.FromString(record)


def read_scalars(directory: Path) -> dict[str, list[tuple[int, float]]]:
    """Each scalar tag's (step, value) pairs, in the order written."""
    scalars: dict[str, list[tuple[int, float]]] = {}
    for event in read_events(directory):
        for value in event.summary.value:
            if value.WhichOneof("value") == "simple_value":
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars
