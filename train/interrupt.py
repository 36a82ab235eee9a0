"""SIGTERM handling: SageMaker's StopTrainingJob, MaxRuntime and spot interruptions all send SIGTERM and
SIGKILL 120 s later. The handler only raises a flag; the training loop finishes its current step,
checkpoints, saves a usable model and exits — well inside the 120 s."""

from __future__ import annotations

import logging
import signal
from types import FrameType

from optml.container.errors import UserError

log = logging.getLogger(__name__)


class TrainingStopped(Exception):
    """Raised by the training loop after it checkpointed in response to a stop request."""

    def __init__(self, epoch: int, batches_done: int, metrics: dict[str, float]) -> None:
        super().__init__(f"stopped in epoch {epoch} after {batches_done} batch(es)")
        self.epoch = epoch
        self.batches_done = batches_done
        self.metrics = metrics  # the last completed epoch's


class StopRequest:
    def __init__(self) -> None:
        self.requested = False
        self.signal_name: str | None = None

    def __call__(self) -> bool:
        return self.requested

    def install(self) -> None:
        """Handle SIGTERM and SIGINT. Works as PID 1 too, where the kernel ignores unhandled SIGTERM."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
        self.signal_name = signal.Signals(signum).name
        log.warning(
            "%s received: finishing the current step, then checkpointing and saving the model", self.signal_name
        )


class TrainingFailed(UserError):
    """A callback decided the run must fail (a training rule with rule_action=stop): no model is saved."""
