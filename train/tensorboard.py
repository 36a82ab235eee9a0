"""TensorBoard event files of a training run (hyperparameter `tensorboard`), in /opt/ml/output/tensorboard.

Per epoch (the step axis is the epoch): every metric of the epoch's line as a scalar, `train:loss` tagged
`train/loss`; the learning rate (`optimizer/learning_rate`); the epoch's profile (train/profiling.py) as
`profile/data_seconds`, `profile/samples_per_second`, ... When `histograms` is on (a rule watches weights or
gradients), every `histogram_steps` steps a histogram of each parameter (`weights/<name>`) and of its
gradient (`gradients/<name>`), on the step axis counted over the whole run.

Only the master process writes. Files are flushed at each epoch's end and closed at the fit's end; `close()`
is safe to call again (in a `finally`, for a failed or stopped job). A resumed job writes a new event file
in the same directory; TensorBoard reads them together, the later value of a repeated step winning.
tensorboardX is imported when the first file is opened: it is slow to import.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optml.train.callbacks import Callback, Control
from optml.train.hyperparameters import Hyperparameters
from optml.train.profiling import Profiler

if TYPE_CHECKING:
    from optml.train.trainer import Step, TrainState

HISTOGRAM_STEPS = 100
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
        self.writer: Any = None

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
        writer = self._open()
        for key, value in metrics.items():
            writer.add_scalar(key.replace(":", "/", 1), value, run.epoch)
        for index, group in enumerate(run.optimizer.param_groups):
            tag = "optimizer/learning_rate" + (f"/group{index}" if index else "")
            writer.add_scalar(tag, float(group["lr"]), run.epoch)
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
        writer = self._open()
        for name, parameter in run.network.named_parameters():
            if parameter.numel() == 0:
                continue
            writer.add_histogram(f"weights/{name}", parameter.detach().cpu().numpy(), self.steps)
            if parameter.grad is not None:
                writer.add_histogram(f"gradients/{name}", parameter.grad.detach().cpu().numpy(), self.steps)

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = state["steps"]

    def _open(self) -> Any:
        if self.writer is None:
            from tensorboardX import SummaryWriter  # slow to import: only when a job writes

            self.directory.mkdir(parents=True, exist_ok=True)
            self.writer = SummaryWriter(logdir=str(self.directory))
        return self.writer

    def _write_profiles(self) -> None:
        """Epoch profiles not written yet: whichever of the two callbacks runs first at an epoch's end."""
        profiles = self.profiler.epochs if self.profiler else []
        for profile in profiles[self.profiles_written :]:
            for key in PROFILE_SCALARS:
                if key in profile:
                    self.writer.add_scalar(f"profile/{key}", float(profile[key]), profile["epoch"])
        self.profiles_written = len(profiles)


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
