"""The training loop's one extension point: callbacks, as in Keras and Lightning.

The loop (train/trainer.py) runs set up → resume → epochs → finish and calls, on every callback:

    on_fit_start(run)                      after set-up: resume from a checkpoint, for instance
    on_step_end(run, step, control)        after each mini-batch (step: None for a batch that was skipped)
    on_epoch_end(run, metrics, control)    after each epoch, with its train and validation metrics
    on_checkpoint(run, state)              a checkpoint is due: `state` holds everything to resume from
    on_fit_end(run)                        after the last epoch: restore the best weights, for instance

A callback asks things of the loop through `control`; every process acts on what any of them asked (one
collective per step). A callback with a `name` has its `state_dict()` saved in checkpoints under that
name and handed back to `load_state_dict` on resume, so its state continues exactly.

Every feature around the loop is a callback: early stopping, the learning-rate schedule, metric lines,
checkpoints and the stop signal. A new one plugs in through `fit(..., callbacks=[...])`.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.optim.lr_scheduler import ReduceLROnPlateau

from optml.container.logs import format_metric_line
from optml.train import distributed
from optml.train.checkpoints import Checkpointer
from optml.train.metric_names import is_lower_better
from optml.train.optim import Scheduler

if TYPE_CHECKING:
    from optml.train.trainer import Step, TrainState

log = logging.getLogger(__name__)


@dataclass
class Control:
    """What the callbacks ask of the loop after a step or an epoch."""

    checkpoint: bool = False  # save a checkpoint now
    stop: bool = False  # a stop request (SIGTERM): checkpoint, then raise TrainingStopped
    end_training: bool = False  # no more epochs (early stopping); the run finishes normally
    # The job must fail now (a training rule with rule_action=stop): no checkpoint, no model; every process
    # raises, the one that asked with this error (its message goes to the failure file).
    fail: Exception | None = None


class Callback:
    """Base class: every hook does nothing. Override the ones you need."""

    name: str | None = None  # set it to have the state saved in checkpoints

    def on_fit_start(self, run: TrainState) -> None:
        pass

    def on_step_end(self, run: TrainState, step: Step | None, control: Control) -> None:
        pass

    def on_epoch_end(self, run: TrainState, metrics: dict[str, float], control: Control) -> None:
        pass

    def on_checkpoint(self, run: TrainState, state: dict[str, Any]) -> None:
        pass

    def on_fit_end(self, run: TrainState) -> None:
        pass

    def state_dict(self) -> Any:
        return None

    def load_state_dict(self, state: Any) -> None:
        pass


def defines(callback: Callback, hook: str) -> bool:
    """True when the callback overrides `hook`: the loop calls per-step hooks only on those that do."""
    return getattr(type(callback), hook) is not getattr(Callback, hook)


class EarlyStopping(Callback):
    """Stop when `metric` has not improved for `patience` epochs, then restore the best epoch's weights."""

    name = "early_stopping"

    def __init__(self, metric: str, patience: int) -> None:
        self.metric = metric
        self.patience = patience
        self.lower_is_better = is_lower_better(metric)
        self.best: float | None = None
        self.best_epoch = 0
        self.best_state: dict[str, torch.Tensor] | None = None
        self.waited = 0

    def on_epoch_end(self, run: TrainState, metrics: dict[str, float], control: Control) -> None:
        value = metrics[self.metric]
        improved = self.best is None or (value < self.best if self.lower_is_better else value > self.best)
        if improved and np.isfinite(value):
            self.best, self.best_epoch, self.waited = value, run.epoch, 0
            self.best_state = copy.deepcopy(run.network.state_dict())
            return
        self.waited += 1
        if self.waited >= self.patience:
            log.info(
                "early stopping after epoch %d: %s has not improved for %d epochs (best %.6g at epoch %d)",
                run.epoch, self.metric, self.patience, self.best, self.best_epoch,
            )  # fmt: skip
            control.end_training = True

    def on_fit_end(self, run: TrainState) -> None:
        if self.best_state is not None:
            run.network.load_state_dict(self.best_state)
            run.history.best_epoch = self.best_epoch
            log.info("restored the weights of epoch %d (best %s)", self.best_epoch, self.metric)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "best_state": self.best_state, "waited": self.waited}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch = state["best"], state["best_epoch"]
        self.best_state, self.waited = state["best_state"], state["waited"]


class LearningRateSchedule(Callback):
    """Steps the scheduler once per epoch; plateau watches `metric` (the train loss without validation)."""

    name = "scheduler"

    def __init__(self, scheduler: Scheduler, metric: str) -> None:
        self.scheduler = scheduler
        self.metric = metric
        self.stepped = False  # has the optimizer stepped in this process?

    def on_step_end(self, run: TrainState, step: Step | None, control: Control) -> None:
        self.stepped = self.stepped or step is not None

    def on_epoch_end(self, run: TrainState, metrics: dict[str, float], control: Control) -> None:
        if isinstance(self.scheduler, ReduceLROnPlateau):
            self.scheduler.step(metrics.get(self.metric, metrics["train:loss"]))
            return
        with warnings.catch_warnings():
            if not self.stepped:
                # Resumed from a checkpoint taken after an epoch's last batch: the optimizer stepped in the
                # process that wrote it, not in this one, and torch warns that the schedule steps first.
                warnings.filterwarnings("ignore", r"Detected call of `lr_scheduler\.step\(\)` before", UserWarning)
            self.scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scheduler.load_state_dict(state)


class MetricLogging(Callback):
    """Prints each epoch's metric line on stdout, where SageMaker's regexes read it, with the tuning objective
    (`_tuning_objective_metric`) last: the tuner and its early stopping read the last value of a line."""

    def __init__(self, objective_metric: str | None) -> None:
        self.objective_metric = objective_metric

    def on_epoch_end(self, run: TrainState, metrics: dict[str, float], control: Control) -> None:
        self.print(f"epoch={run.epoch}", metrics)

    def print(self, prefix: str, metrics: dict[str, float]) -> None:
        objective = self.objective_metric
        if objective in metrics:
            metrics = {k: v for k, v in metrics.items() if k != objective} | {objective: metrics[objective]}
        print(format_metric_line(prefix, metrics), flush=True)


class StopOnRequest(Callback):
    """Turns a stop request (SIGTERM: spot interruption, StopTrainingJob) into a checkpoint and a stop."""

    def __init__(self, stop_requested: Callable[[], bool]) -> None:
        self.stop_requested = stop_requested

    def on_step_end(self, run: TrainState, step: Step | None, control: Control) -> None:
        control.stop = control.stop or self.stop_requested()

    def on_epoch_end(self, run: TrainState, metrics: dict[str, float], control: Control) -> None:
        control.stop = control.stop or self.stop_requested()


class Checkpointing(Callback):
    """Resumes from the newest checkpoint, and writes one at each epoch end and as the policy says."""

    def __init__(self, checkpointer: Checkpointer) -> None:
        self.checkpointer = checkpointer

    def on_fit_start(self, run: TrainState) -> None:
        saved = self.checkpointer.load_latest()
        if run.world_size > 1:
            saved = self._agree_on_resume_point(saved)
        if saved is not None:
            run.restore(saved)

    def on_step_end(self, run: TrainState, step: Step | None, control: Control) -> None:
        control.checkpoint = control.checkpoint or self.checkpointer.due()

    def on_epoch_end(self, run: TrainState, metrics: dict[str, float], control: Control) -> None:
        control.checkpoint = True

    def on_checkpoint(self, run: TrainState, state: dict[str, Any]) -> None:
        self.checkpointer.save(state, run.epoch, run.batches_done)

    def _agree_on_resume_point(self, saved: dict[str, Any] | None) -> dict[str, Any] | None:
        """Every process must resume from the same step: the oldest newest-checkpoint among them."""
        mine = (saved["epoch"], saved["batches_done"]) if saved else (0, 0)
        agreed = distributed.min_position(mine)
        if agreed == mine:
            return saved
        if agreed == (0, 0):
            log.warning("another process has no checkpoint: starting over on every process")
            return None
        return self.checkpointer.load_at(*agreed)
