"""The training loop: shuffled mini-batches, loss + penalties, backward, optimizer step; metrics per epoch.

`Trainer(...).fit()` trains a network in place and returns its per-epoch history, in four phases: set up
(the constructor), resume, run the epochs, finish — over one state object, `TrainState`. Everything around
the loop (early stopping, the learning-rate schedule, metric lines, checkpoints, the stop signal) is a
callback (train/callbacks.py). Everything random (shuffling, augmentation) draws from one seeded generator,
so a run is reproducible on CPU.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from optml.container.artifact import class_probabilities
from optml.container.kinds import MULTICLASS, REGRESSION
from optml.train import distributed
from optml.train.callbacks import Callback, Control, EarlyStopping, LearningRateSchedule, defines
from optml.train.checkpoints import restore_rng_states, rng_states
from optml.train.distributed import Topology
from optml.train.hyperparameters import Hyperparameters
from optml.train.interrupt import TrainingFailed, TrainingStopped
from optml.train.losses import LossFunction
from optml.train.metrics import classification_metrics, regression_metrics
from optml.train.optim import build_optimizer, build_scheduler, l1_penalty
from optml.train.profiling import DeviceTimer, device_timer

log = logging.getLogger(__name__)

EVAL_BATCH = 4096  # rows per forward pass when evaluating: bounds memory on large channels
# How many rows of an epoch's outputs feed the train metrics (not the loss, which covers every row): a tenth
# of the epoch, at least TRAIN_METRICS_MIN (every row of a smaller channel) and at most TRAIN_METRICS_SAMPLE.
TRAIN_METRICS_SAMPLE = 50_000
TRAIN_METRICS_MIN = 10_000
TRAIN_METRICS_SHARE = 10


@dataclass(frozen=True)
class Split:
    """Standardized features and encoded labels of one channel, as tensors."""

    features: torch.Tensor
    targets: torch.Tensor

    @classmethod
    def from_arrays(cls, features: np.ndarray, targets: np.ndarray) -> Split:
        return cls(torch.from_numpy(np.ascontiguousarray(features)), torch.from_numpy(np.ascontiguousarray(targets)))

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def subset(self, rows: np.ndarray) -> Split:
        index = torch.from_numpy(rows)
        return Split(self.features[index], self.targets[index])

    def predict(self, network: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw outputs and targets of every row (the interface a streamed channel shares)."""
        return predict_outputs(network, self.features), self.targets


@dataclass
class Batch:
    """One process's share of a global mini-batch: the inputs, the targets as the loss reads them, and the
    channel's targets for the epoch's train metrics."""

    inputs: torch.Tensor
    targets: torch.Tensor
    metric_targets: torch.Tensor


class Batches(Protocol):
    """Where an epoch's mini-batches come from: the in-memory channel (`MemoryBatches`) or a stream
    (train/streaming.py). `epoch` yields, from `run.batches_done` on, each step's batch for this process,
    or None for a step every process skips; every process yields the same number of steps."""

    @property
    def rows(self) -> int:
        """Rows an epoch trains on, over every process: sizes the sample of the train metrics."""
        ...

    def epoch(self, run: TrainState) -> Generator[Batch | None, None, None]: ...


class Scored(Protocol):
    """A channel to score: a Split, or a streamed channel."""

    def predict(self, network: nn.Module) -> tuple[torch.Tensor, torch.Tensor]: ...


@dataclass(frozen=True)
class Objective:
    """How a model is scored: the task's loss, metric options and the scale of regression targets."""

    task: str
    loss: LossFunction
    target_std: float = 1.0
    f_beta: float = 1.0

    def loss_targets(self, targets: torch.Tensor) -> torch.Tensor:
        """Targets as the loss reads them — class indices for multiclass, float32 for binary (0/1) and
        regression — converted once for the channel rather than once per batch."""
        return targets if self.task == MULTICLASS else targets.to(torch.float32)

    def probabilities(self, outputs: torch.Tensor) -> np.ndarray:
        return class_probabilities(self.task, outputs).numpy()

    def score(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        """Loss and the task's metrics (regression metrics in the original label units)."""
        metrics = {"loss": float(self.loss(outputs, targets))}
        if self.task == REGRESSION:
            scale = self.target_std
            metrics |= regression_metrics(targets.double().numpy() * scale, outputs[:, 0].double().numpy() * scale)
        else:
            metrics |= classification_metrics(targets.numpy(), self.probabilities(outputs), self.f_beta)
        return metrics


@torch.inference_mode()
def predict_outputs(network: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """Raw outputs for every row, computed in chunks on the network's device, returned on the CPU."""
    network.eval()
    if len(features) == 0:
        return torch.empty(0)
    device = next(network.parameters()).device
    chunks = range(0, len(features), EVAL_BATCH)
    return torch.cat([network(features[start : start + EVAL_BATCH].to(device)).cpu() for start in chunks])


def train_scores(
    objective: Objective, sampled_outputs: torch.Tensor, sampled_targets: torch.Tensor, loss: float
) -> dict[str, float]:
    """Train metrics of an epoch, from its own forward passes (weights moving, dropout on), as Keras reports
    them. `loss` is the weighted mean over every row, summed up as the batches trained; the other metrics
    use the outputs of an evenly spaced sample of the epoch's batches (see `sampled_batches`), so that
    their cost stays around 1% of the epoch's training (measured: benchmarks/RESULTS.md) and neither cost
    nor memory grows beyond 50,000 rows. They are diagnostics — the train/validation gap —
    and 10,000–50,000 rows pin accuracy-like metrics to within 0.5–0.2 percentage points (one standard
    error); validation and test metrics always use every row.
    """
    return objective.score(sampled_outputs, sampled_targets) | {"loss": loss}


def sampled_batches(rows: int) -> int:
    """Keep the outputs of every n-th batch for the train metrics: n such that about a tenth of the epoch's
    rows are kept (between 1 and 2 times the target), within TRAIN_METRICS_MIN and TRAIN_METRICS_SAMPLE."""
    target = min(TRAIN_METRICS_SAMPLE, max(TRAIN_METRICS_MIN, rows // TRAIN_METRICS_SHARE))
    return max(1, rows // target)


def evaluate(network: nn.Module, split: Scored, objective: Objective) -> dict[str, float]:
    return objective.score(*split.predict(network))


def augment_images(images: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Random horizontal flip and random crop after zero-padding, each image drawn independently."""
    flip = torch.rand(len(images), generator=generator) < 0.5
    images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    height, width = images.shape[-2:]
    padded = nn.functional.pad(images, (padding, padding, padding, padding))
    offsets = torch.randint(0, 2 * padding + 1, (len(images), 2), generator=generator).tolist()
    return torch.stack([padded[i, :, dy : dy + height, dx : dx + width] for i, (dy, dx) in enumerate(offsets)])


@dataclass
class History:
    """Per-epoch metrics keyed like the log lines (`train:loss`, `validation:accuracy`, ...)."""

    epochs: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int | None = None  # set when early stopping watched a metric
    stopped_early: bool = False

    @property
    def last(self) -> dict[str, float]:
        return self.epochs[-1] if self.epochs else {}

    @property
    def final(self) -> dict[str, float]:
        """Metrics of the weights the model ends with (the best epoch's, after early stopping)."""
        return self.epochs[self.best_epoch - 1] if self.best_epoch else self.last


@dataclass
class Step:
    """What one mini-batch leaves for the epoch's train metrics, on the training device, and where its time
    went for the profile (train/profiling.py): host seconds of each phase and, on CUDA for a sampled step,
    GPU events at the phases' boundaries."""

    outputs: torch.Tensor  # detached
    loss: torch.Tensor  # this process's rows: the weighted mean of their losses (detached, no L1) ...
    weight: torch.Tensor | int  # ... and the sum of their weights (the row count without class weights)
    forward_backward_seconds: float = 0.0  # zero_grad, augmentation, copy to the device, forward, loss, backward
    optimizer_seconds: float = 0.0  # gradients summed across processes, clip, optimizer step
    device_events: list[Any] | None = None  # start, backward done, step done (DeviceTimer), or None


def _mean(loss_sum: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The weighted mean, 0 for no rows: a process can get none of a short last batch (sum 0, weight 0)."""
    return loss_sum / weight.clamp(min=torch.finfo(weight.dtype).tiny)


@dataclass
class TrainingStep:
    """One mini-batch of this process (its share `rows` of the global batch): forward, loss (+ L1), backward,
    gradients summed across processes, clip, step."""

    network: nn.Module
    optimizer: torch.optim.Optimizer
    objective: Objective
    hp: Hyperparameters
    generator: torch.Generator  # augmentation draws, shared with the row order
    world: int
    device: torch.device
    timer: DeviceTimer | None = None  # CUDA: GPU time of a sample of the steps, for the profile

    def __call__(self, batch: Batch) -> Step:
        started = time.perf_counter()  # perf_counter and no synchronize: the profile costs ~nothing
        events = self.timer.start() if self.timer else None
        self.optimizer.zero_grad(set_to_none=True)  # first, as in the textbook loop: the memory is reused below
        inputs, targets = batch.inputs, batch.targets
        if self.hp.augment:
            inputs = augment_images(inputs, self.generator)
        if self.device.type != "cpu":
            inputs, targets = inputs.to(self.device), targets.to(self.device)
        outputs = self.network(inputs)
        loss, own_loss, weight = self._loss(outputs, targets, len(inputs))
        if self.hp.l1 > 0:
            loss = loss + self.hp.l1 * l1_penalty(self.network) / self.world  # summed over processes: once
        loss.backward()
        backward_done = time.perf_counter()
        if events is not None and self.timer:
            events.append(self.timer.record())
        if self.world > 1:
            for parameter in self.network.parameters():
                if parameter.requires_grad:
                    if parameter.grad is None:
                        parameter.grad = torch.zeros_like(parameter)
                    distributed.all_reduce_sum(parameter.grad)
        if self.hp.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.network.parameters(), self.hp.grad_clip)
        self.optimizer.step()
        if events is not None and self.timer:
            events.append(self.timer.record())
        return Step(
            outputs.detach(), own_loss, weight, backward_done - started, time.perf_counter() - backward_done, events
        )

    def _loss(
        self, outputs: torch.Tensor, targets: torch.Tensor, rows: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | int]:
        """The loss to minimize, and this process's own weighted mean loss and weight for the metrics."""
        if self.world == 1 and self.objective.loss.class_weights is None:  # the common case: one mean kernel
            loss = self.objective.loss(outputs, targets)
            return loss, loss.detach(), rows
        loss_sum, weight = self.objective.loss.parts(outputs, targets)
        # Several processes: the global batch's weighted mean, its weight added up across processes.
        total = distributed.all_reduce_sum(weight.detach().clone()) if self.world > 1 else weight
        return loss_sum / total, _mean(loss_sum, weight).detach(), weight.detach()


class StepValues:
    """One number per step of an epoch (its loss, its weight), kept in preallocated chunks on the device that
    computes them. A list of 0-d tensors costs about half a kilobyte per step: 230 MB for a 28.8M-row
    streamed epoch. The values, and so the sums, are the same."""

    CHUNK = 4096

    def __init__(self, dtype: torch.dtype | None = None) -> None:
        self.dtype = dtype  # None: the first value's
        self.chunks: list[torch.Tensor] = []
        self.count = 0

    def append(self, value: torch.Tensor | float, device: torch.device | None = None) -> None:
        if self.count % self.CHUNK == 0:
            where = value.device if isinstance(value, torch.Tensor) else device
            if self.dtype is None:
                self.dtype = value.dtype if isinstance(value, torch.Tensor) else torch.float64
            self.chunks.append(torch.empty(self.CHUNK, dtype=self.dtype, device=where))
        self.chunks[-1][self.count % self.CHUNK] = value
        self.count += 1

    def tensor(self) -> torch.Tensor:
        return (
            torch.cat(self.chunks)[: self.count] if self.chunks else torch.empty(0, dtype=self.dtype or torch.float64)
        )

    def __len__(self) -> int:
        return self.count


@dataclass
class TrainState:
    """One training run: what the loop updates and the callbacks read. With the callbacks' own states this is
    all a checkpoint needs to continue exactly: same batches, same augmentation draws, same metrics."""

    network: nn.Module
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    callbacks: list[Callback]
    world_size: int = 1
    history: History = field(default_factory=History)
    epoch: int = 1  # the epoch in progress, 1-based
    batches_done: int = 0  # batches of that epoch already trained
    order: torch.Tensor | None = None  # that epoch's row order, once drawn
    # For the epoch's train metrics: every batch's loss and weight so far, and the outputs and targets of
    # the sampled batches. Appending is all a step costs; the sums wait for the epoch's end.
    losses_seen: StepValues = field(default_factory=StepValues)
    weights_seen: StepValues = field(default_factory=lambda: StepValues(torch.float64))
    outputs_seen: list[torch.Tensor] = field(default_factory=list)
    targets_seen: list[torch.Tensor] = field(default_factory=list)
    # For the profile (train/profiling.py), not checkpointed: when this process began the epoch (or its
    # resumed part), by time.perf_counter, and how long the loop waited for the latest batch.
    epoch_started: float = 0.0
    data_seconds: float = 0.0

    def record(self, step: Step, targets: torch.Tensor | None) -> None:
        """Keep a step's loss and weight, and its outputs when `targets` are given (a sampled batch)."""
        self.losses_seen.append(step.loss)
        self.weights_seen.append(step.weight, step.loss.device)
        if targets is not None:
            self.outputs_seen.append(step.outputs.cpu())
            self.targets_seen.append(targets)

    def epoch_loss(self) -> float:
        """The weighted mean loss over every row the epoch trained on, on every process together."""
        losses, weights = self.losses_seen.tensor().double(), self.weights_seen.tensor()
        total, weight = distributed.all_reduce_sum(torch.stack([(losses * weights).sum(), weights.sum()])).tolist()
        return float(total / weight)

    def next_epoch(self) -> None:
        self.epoch, self.batches_done, self.order = self.epoch + 1, 0, None
        self.losses_seen, self.weights_seen = StepValues(), StepValues(torch.float64)
        self.outputs_seen, self.targets_seen = [], []

    def checkpoint_state(self) -> dict[str, Any]:
        return {
            "network": self.network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "history": {"epochs": self.history.epochs, "stopped_early": self.history.stopped_early},
            "order": self.order,
            "generator": self.generator.get_state(),
            # One tensor and plain numbers: hundreds of small tensors would make every save slow.
            "losses_seen": self.losses_seen.tensor().cpu() if len(self.losses_seen) else None,
            "weights_seen": [int(w) if w.is_integer() else w for w in self.weights_seen.tensor().tolist()],
            "outputs_seen": torch.cat(self.outputs_seen) if self.outputs_seen else None,
            "targets_seen": torch.cat(self.targets_seen) if self.targets_seen else None,
            "rng": rng_states(),
        } | {callback.name: callback.state_dict() for callback in self.callbacks if callback.name}

    def restore(self, saved: dict[str, Any]) -> None:
        self.network.load_state_dict(saved["network"])
        self.optimizer.load_state_dict(saved["optimizer"])
        for callback in self.callbacks:
            if callback.name and saved.get(callback.name) is not None:
                callback.load_state_dict(saved[callback.name])
        self.history = History(epochs=list(saved["history"]["epochs"]), stopped_early=saved["history"]["stopped_early"])
        self.epoch, self.batches_done, self.order = saved["epoch"], saved["batches_done"], saved["order"]
        self.generator.set_state(saved["generator"])
        device = next(self.network.parameters()).device  # checkpoints load onto the CPU
        self.losses_seen, self.weights_seen = StepValues(), StepValues(torch.float64)
        for loss in saved["losses_seen"].to(device).unbind() if saved["losses_seen"] is not None else ():
            self.losses_seen.append(loss)
        for weight in saved["weights_seen"]:
            self.weights_seen.append(weight, device)
        self.outputs_seen = [saved["outputs_seen"]] if saved["outputs_seen"] is not None else []
        self.targets_seen = [saved["targets_seen"]] if saved["targets_seen"] is not None else []
        restore_rng_states(saved["rng"])


def min_batch_rows(network: nn.Module) -> int:
    """Rows each process needs for a batch to train. Batch norm cannot normalize one row: such a short last
    batch is skipped (in memory, its rows train in another epoch's order). Otherwise a process may have
    none (its collectives still run)."""
    return 2 if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in network.modules()) else 0


@dataclass
class MemoryBatches:
    """The in-memory channel: each epoch one seeded permutation of every row (drawn from the run's generator
    and checkpointed with it), cut into global batches of `batch_size`; each process takes every
    world-th row of a batch, so N processes take exactly the steps one would."""

    split: Split
    loss_targets: torch.Tensor
    batch_size: int
    rank: int = 0
    world: int = 1
    min_rows: int = 0

    @property
    def rows(self) -> int:
        return len(self.split)

    def epoch(self, run: TrainState) -> Generator[Batch | None, None, None]:
        if run.order is None:
            run.order = torch.randperm(len(self.split), generator=run.generator)
        for start in range(run.batches_done * self.batch_size, len(self.split), self.batch_size):
            batch = run.order[start : start + self.batch_size]
            if len(batch) // self.world < self.min_rows:
                yield None
                continue
            rows = batch if self.world == 1 else batch[self.rank :: self.world]
            yield Batch(self.split.features[rows], self.loss_targets[rows], self.split.targets[rows])


class Trainer:
    """Trains `network` in place on `train`, scoring `validation` after each epoch.

    `callbacks` extend the loop (train/callbacks.py): metric lines, checkpoints and resume, stop requests;
    early stopping and the learning-rate schedule come from `hp`. `fit()` returns the per-epoch history."""

    def __init__(
        self,
        network: nn.Module,
        train: Split | Batches,
        validation: Scored | None,
        *,
        hp: Hyperparameters,
        objective: Objective,
        callbacks: Sequence[Callback] = (),
        frozen_blocks: Sequence[nn.Module] = (),
        topology: Topology | None = None,
    ) -> None:
        self.validation, self.hp, self.objective = validation, hp, objective
        self.frozen_blocks = list(frozen_blocks)
        self.rank, self.world = (topology.rank, topology.world_size) if topology else (0, 1)
        optimizer = build_optimizer(network, hp)
        generator = torch.Generator().manual_seed(hp.seed)
        # Callbacks passed in come first: the epoch's metric line is logged before early stopping says why.
        everything = [*callbacks, *training_callbacks(optimizer, hp, has_validation=validation is not None)]
        self.run = TrainState(network, optimizer, generator, everything, world_size=self.world)
        self.step_callbacks = [callback for callback in everything if defines(callback, "on_step_end")]
        self.checkpoint_callbacks = [callback for callback in everything if defines(callback, "on_checkpoint")]
        device = next(network.parameters()).device
        self.step = TrainingStep(network, optimizer, objective, hp, generator, self.world, device, device_timer(device))
        self.batches: Batches = (
            MemoryBatches(
                train,
                objective.loss_targets(train.targets),
                hp.batch_size,
                self.rank,
                self.world,
                min_batch_rows(network),
            )  # fmt: skip
            if isinstance(train, Split)
            else train
        )
        self.keep_every = sampled_batches(self.batches.rows)

    def fit(self) -> History:
        self.resume()
        self.run_epochs()
        return self.finish()

    def resume(self) -> None:
        for callback in self.run.callbacks:
            callback.on_fit_start(self.run)

    def run_epochs(self) -> None:
        run = self.run
        while run.epoch <= self.hp.epochs and not run.history.stopped_early:
            self.train_epoch()
            metrics = self.epoch_metrics()
            run.history.epochs.append(metrics)
            control = Control()
            for callback in run.callbacks:
                callback.on_epoch_end(run, metrics, control)
            run.history.stopped_early = control.end_training
            run.next_epoch()
            self.act_on(control)

    def train_epoch(self) -> None:
        run = self.run
        run.network.train()
        for block in self.frozen_blocks:
            block.eval()  # frozen batch-norm statistics stay frozen too
        control = Control()
        run.epoch_started = waiting = time.perf_counter()
        with contextlib.closing(self.batches.epoch(run)) as batches:  # a stop closes a stream's files at once
            for batch in batches:
                run.data_seconds = time.perf_counter() - waiting  # in memory indexing; streaming the read-ahead
                step = None
                if batch is not None:
                    step = self.step(batch)
                    run.record(step, batch.metric_targets if run.batches_done % self.keep_every == 0 else None)
                run.batches_done += 1
                control.checkpoint = control.stop = False
                control.fail = None
                for callback in self.step_callbacks:
                    callback.on_step_end(run, step, control)
                self.act_on(control)
                waiting = time.perf_counter()

    def epoch_metrics(self) -> dict[str, float]:
        run = self.run
        scores = train_scores(
            self.objective,
            distributed.all_gather_tensor(torch.cat(run.outputs_seen)),
            distributed.all_gather_tensor(torch.cat(run.targets_seen)),
            run.epoch_loss(),
        )
        metrics = {f"train:{k}": v for k, v in scores.items()}
        if self.validation is not None:
            metrics |= {f"validation:{k}": v for k, v in evaluate(run.network, self.validation, self.objective).items()}
        return metrics

    def act_on(self, control: Control) -> None:
        """Checkpoint and stop as asked by a callback of any process (one collective); fail as asked."""
        stop, checkpoint, fail = distributed.any_rank_each(control.stop, control.checkpoint, control.fail is not None)
        if fail:
            raise control.fail or TrainingFailed("another training process stopped the job (its log says why)")
        if (checkpoint or stop) and self.checkpoint_callbacks:  # gathering the state is not free
            state = self.run.checkpoint_state()
            for callback in self.checkpoint_callbacks:
                callback.on_checkpoint(self.run, state)
        if stop:
            raise TrainingStopped(self.run.epoch, self.run.batches_done, self.run.history.last)

    def finish(self) -> History:
        for callback in self.run.callbacks:
            callback.on_fit_end(self.run)
        return self.run.history


def training_callbacks(optimizer: torch.optim.Optimizer, hp: Hyperparameters, has_validation: bool) -> list[Callback]:
    """What the hyperparameters switch on: early stopping (it needs a validation channel) and the schedule."""
    callbacks: list[Callback] = []
    patience = hp.patience(has_validation)
    if has_validation and patience > 0:
        callbacks.append(EarlyStopping(hp.early_stopping_metric, patience))
    scheduler = build_scheduler(optimizer, hp)
    if scheduler is not None:
        callbacks.append(LearningRateSchedule(scheduler, hp.early_stopping_metric))
    return callbacks
