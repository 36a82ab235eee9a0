"""The training loop: shuffled mini-batches, loss + penalties, optimizer and schedule, early stopping.

`fit` trains a network in place and returns its per-epoch history. Everything random (shuffling,
augmentation) draws from one seeded generator, so a run is reproducible on CPU.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim.lr_scheduler import ReduceLROnPlateau

from container.artifact import MULTICLASS, REGRESSION, class_probabilities
from train import distributed
from train.checkpoints import Checkpointer, restore_rng_states, rng_states
from train.distributed import Topology
from train.hyperparameters import Hyperparameters
from train.interrupt import TrainingStopped
from train.losses import LossFunction
from train.metrics import classification_metrics, is_lower_better, regression_metrics
from train.optim import Scheduler, build_optimizer, build_scheduler, l1_penalty

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


def evaluate(network: nn.Module, split: Split, objective: Objective) -> dict[str, float]:
    return objective.score(predict_outputs(network, split.features), split.targets)


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


class EarlyStopping:
    def __init__(self, metric: str, patience: int) -> None:
        self.metric = metric
        self.patience = patience
        self.lower_is_better = is_lower_better(metric)
        self.best: float | None = None
        self.best_epoch = 0
        self.best_state: dict[str, torch.Tensor] | None = None
        self.waited = 0

    def update(self, epoch: int, metrics: dict[str, float], network: nn.Module) -> bool:
        """Record this epoch; True when training should stop."""
        value = metrics[self.metric]
        improved = self.best is None or (value < self.best if self.lower_is_better else value > self.best)
        if improved and np.isfinite(value):
            self.best, self.best_epoch, self.waited = value, epoch, 0
            self.best_state = copy.deepcopy(network.state_dict())
            return False
        self.waited += 1
        return self.patience > 0 and self.waited >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "best_state": self.best_state, "waited": self.waited}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch = state["best"], state["best_epoch"]
        self.best_state, self.waited = state["best_state"], state["waited"]


@dataclass
class LoopState:
    """Where the loop is. With the network, optimizer, scheduler and early-stopping states this is all a
    checkpoint needs to continue exactly: same batches, same augmentation draws, same metrics."""

    generator: torch.Generator
    history: History = field(default_factory=History)
    epoch: int = 1  # the epoch in progress, 1-based
    batches_done: int = 0  # batches of that epoch already trained
    order: torch.Tensor | None = None  # that epoch's row order, once drawn
    # For the epoch's train metrics: every batch's loss and weight so far, and the outputs and targets of
    # the sampled batches. Appending is all a step costs; the sums wait for the epoch's end.
    losses_seen: list[torch.Tensor] = field(default_factory=list)
    weights_seen: list[torch.Tensor | int] = field(default_factory=list)
    outputs_seen: list[torch.Tensor] = field(default_factory=list)
    targets_seen: list[torch.Tensor] = field(default_factory=list)

    def epoch_loss(self) -> float:
        """The weighted mean loss over every row the epoch trained on, on every process together."""
        losses = torch.stack(self.losses_seen).double()
        if all(isinstance(weight, int) for weight in self.weights_seen):
            weights = torch.tensor(self.weights_seen, dtype=torch.float64, device=losses.device)
        else:
            weights = torch.stack([torch.as_tensor(weight) for weight in self.weights_seen]).double()
        total, weight = distributed.all_reduce_sum(torch.stack([(losses * weights).sum(), weights.sum()])).tolist()
        return float(total / weight)

    def next_epoch(self) -> None:
        self.epoch, self.batches_done, self.order = self.epoch + 1, 0, None
        self.losses_seen, self.weights_seen, self.outputs_seen, self.targets_seen = [], [], [], []


@dataclass
class Loop:
    """The objects one training run updates, bundled so they can be checkpointed and restored together."""

    network: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Scheduler | None
    stopping: EarlyStopping | None
    state: LoopState

    def checkpoint_state(self) -> dict[str, Any]:
        state = self.state
        return {
            "network": self.network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "early_stopping": self.stopping.state_dict() if self.stopping else None,
            "history": {"epochs": state.history.epochs, "stopped_early": state.history.stopped_early},
            "order": state.order,
            "generator": state.generator.get_state(),
            # One tensor and plain numbers: hundreds of small tensors would make every save slow.
            "losses_seen": torch.stack(state.losses_seen).cpu() if state.losses_seen else None,
            "weights_seen": [w if isinstance(w, int) else float(w) for w in state.weights_seen],
            "outputs_seen": torch.cat(state.outputs_seen) if state.outputs_seen else None,
            "targets_seen": torch.cat(state.targets_seen) if state.targets_seen else None,
            "rng": rng_states(),
        }

    def restore(self, saved: dict[str, Any]) -> None:
        self.network.load_state_dict(saved["network"])
        self.optimizer.load_state_dict(saved["optimizer"])
        # The optimizer has stepped, in the process that wrote the checkpoint. torch's schedulers look for a
        # step in this process: resumed after the first epoch's last batch, the scheduler would warn that it
        # steps first (and the test suite turns warnings into errors).
        self.optimizer._opt_called = True  # type: ignore[attr-defined]
        if self.scheduler and saved["scheduler"] is not None:
            self.scheduler.load_state_dict(saved["scheduler"])
        if self.stopping and saved["early_stopping"] is not None:
            self.stopping.load_state_dict(saved["early_stopping"])
        state = self.state
        state.history = History(
            epochs=list(saved["history"]["epochs"]), stopped_early=saved["history"]["stopped_early"]
        )
        state.epoch, state.batches_done, state.order = saved["epoch"], saved["batches_done"], saved["order"]
        state.generator.set_state(saved["generator"])
        device = next(self.network.parameters()).device  # checkpoints load onto the CPU
        losses = saved.get("losses_seen")  # absent in checkpoints of earlier versions: see fit()
        state.losses_seen = list(losses.to(device).unbind()) if losses is not None else []
        state.weights_seen = [
            w if isinstance(w, int) else torch.tensor(w, device=device) for w in saved.get("weights_seen", [])
        ]
        state.outputs_seen = [saved["outputs_seen"]] if saved["outputs_seen"] is not None else []
        state.targets_seen = [saved["targets_seen"]] if saved["targets_seen"] is not None else []
        restore_rng_states(saved["rng"])


def fit(
    network: nn.Module,
    train: Split,
    validation: Split | None,
    *,
    hp: Hyperparameters,
    objective: Objective,
    frozen_blocks: list[nn.Module] | None = None,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
    checkpointer: Checkpointer | None = None,
    stop_requested: Callable[[], bool] | None = None,
    topology: Topology | None = None,
) -> History:
    """Train `network` in place on `train`, scoring `validation` after each epoch.

    With a `checkpointer`, training resumes from its newest checkpoint and saves new ones as its policy
    says and at each epoch end. When `stop_requested()` turns true, the loop checkpoints after the current
    step and raises TrainingStopped.
    """
    optimizer = build_optimizer(network, hp)
    patience = hp.patience(has_validation=validation is not None)
    watch = patience > 0 or hp.lr_scheduler == "plateau"
    loop = Loop(
        network=network,
        optimizer=optimizer,
        scheduler=build_scheduler(optimizer, hp),
        stopping=EarlyStopping(hp.early_stopping_metric, patience) if validation and watch else None,
        state=LoopState(generator=torch.Generator().manual_seed(hp.seed)),
    )
    device = next(network.parameters()).device
    saved = checkpointer.load_latest() if checkpointer else None
    if checkpointer is not None and topology is not None and topology.distributed:
        saved = agree_on_resume_point(checkpointer, saved)
    if saved is not None:
        loop.restore(saved)
        if "losses_seen" not in saved and loop.state.outputs_seen:
            # Written by an earlier version, which kept every output of the epoch so far instead of the batch
            # losses: those outputs give the loss of the batches already trained.
            outputs, targets = torch.cat(loop.state.outputs_seen), torch.cat(loop.state.targets_seen)
            loss_sum, weight = objective.loss.parts(outputs, objective.loss_targets(targets))
            loop.state.losses_seen = [_mean(loss_sum, weight).to(device)]
            loop.state.weights_seen = [weight.to(device)]
    state, stopping, scheduler = loop.state, loop.stopping, loop.scheduler
    has_batch_norm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in network.modules())
    rank, world = (topology.rank, topology.world_size) if topology else (0, 1)
    keep_every = sampled_batches(len(train))
    loss_targets = objective.loss_targets(train.targets)

    def checkpoint() -> None:
        if checkpointer is not None:
            checkpointer.save(loop.checkpoint_state(), state.epoch, state.batches_done)

    while state.epoch <= hp.epochs and not state.history.stopped_early:
        network.train()
        for block in frozen_blocks or []:
            block.eval()  # frozen batch-norm statistics stay frozen too
        if state.order is None:
            state.order = torch.randperm(len(train), generator=state.generator)
        starts = range(state.batches_done * hp.batch_size, len(train), hp.batch_size)
        for start in starts:
            batch = state.order[start : start + hp.batch_size]
            # Batch norm cannot normalize one row: such a short last batch trains in another epoch's order.
            if not (has_batch_norm and len(batch) // world < 2):
                rows = batch if world == 1 else batch[rank::world]
                step = _train_step(
                    network, optimizer, train.features, loss_targets, rows, hp, objective, state, world, device
                )
                state.losses_seen.append(step.loss)
                state.weights_seen.append(step.weight)
                if state.batches_done % keep_every == 0:
                    state.outputs_seen.append(step.outputs.cpu())
                    state.targets_seen.append(train.targets[rows])
            state.batches_done += 1
            stop, due = distributed.any_rank_each(
                stop_requested is not None and stop_requested(), checkpointer is not None and checkpointer.due()
            )
            if stop:
                checkpoint()
                raise TrainingStopped(state.epoch, state.batches_done, state.history.last)
            if due:
                checkpoint()
        scores = train_scores(
            objective,
            distributed.all_gather_tensor(torch.cat(state.outputs_seen)),
            distributed.all_gather_tensor(torch.cat(state.targets_seen)),
            state.epoch_loss(),
        )
        metrics = {f"train:{k}": v for k, v in scores.items()}
        if validation is not None:
            metrics |= {f"validation:{k}": v for k, v in evaluate(network, validation, objective).items()}
        state.history.epochs.append(metrics)
        if on_epoch_end is not None:
            on_epoch_end(state.epoch, metrics)
        should_stop = stopping.update(state.epoch, metrics, network) if stopping else False
        if isinstance(scheduler, ReduceLROnPlateau):
            scheduler.step(metrics.get(hp.early_stopping_metric, metrics["train:loss"]))
        elif scheduler is not None:
            scheduler.step()
        if should_stop and stopping is not None and patience > 0:
            log.info(
                "early stopping after epoch %d: %s has not improved for %d epochs (best %.6g at epoch %d)",
                state.epoch, stopping.metric, stopping.patience, stopping.best, stopping.best_epoch,
            )  # fmt: skip
            state.history.stopped_early = True
        state.next_epoch()
        checkpoint()
        if distributed.any_rank(stop_requested is not None and stop_requested()):
            raise TrainingStopped(state.epoch, 0, state.history.last)
    history = state.history
    if stopping and patience > 0 and stopping.best_state is not None:
        network.load_state_dict(stopping.best_state)
        history.best_epoch = stopping.best_epoch
        log.info("restored the weights of epoch %d (best %s)", stopping.best_epoch, stopping.metric)
    return history


def _mean(loss_sum: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The weighted mean, 0 for no rows: a process can get none of a short last batch (sum 0, weight 0)."""
    return loss_sum / weight.clamp(min=torch.finfo(weight.dtype).tiny)


@dataclass
class Step:
    """What one mini-batch leaves for the epoch's train metrics, on the training device."""

    outputs: torch.Tensor  # detached
    loss: torch.Tensor  # this process's rows: the weighted mean of their losses (detached, no L1) ...
    weight: torch.Tensor | int  # ... and the sum of their weights (the row count without class weights)


def _train_step(
    network: nn.Module,
    optimizer: torch.optim.Optimizer,
    features: torch.Tensor,
    targets: torch.Tensor,
    rows: torch.Tensor,
    hp: Hyperparameters,
    objective: Objective,
    state: LoopState,
    world: int,
    device: torch.device,
) -> Step:
    """One mini-batch (this process's share `rows` of it): forward, loss (+ L1), backward, gradients summed
    across processes, clip, step. `targets` are the channel's, as the loss reads them (loss_targets)."""
    optimizer.zero_grad(set_to_none=True)  # first, as in the textbook loop: the freed memory is reused below
    inputs, targets = features[rows], targets[rows]
    if hp.augment:
        inputs = augment_images(inputs, state.generator)
    if device.type != "cpu":
        inputs, targets = inputs.to(device), targets.to(device)
    outputs = network(inputs)
    weight: torch.Tensor | int
    if world > 1 or objective.loss.class_weights is not None:
        loss_sum, weight = objective.loss.parts(outputs, targets)
        # Several processes: the global batch's weighted mean, its weight added up across processes.
        loss = loss_sum / (distributed.all_reduce_sum(weight.detach().clone()) if world > 1 else weight)
        own_loss, weight = _mean(loss_sum, weight).detach(), weight.detach()
    else:  # the common case: one mean-loss kernel
        loss, weight = objective.loss(outputs, targets), len(rows)
        own_loss = loss.detach()
    if hp.l1 > 0:
        loss = loss + hp.l1 * l1_penalty(network) / world  # summed over processes: counted once
    loss.backward()
    if world > 1:
        for parameter in network.parameters():
            if parameter.requires_grad:
                if parameter.grad is None:
                    parameter.grad = torch.zeros_like(parameter)
                distributed.all_reduce_sum(parameter.grad)
    if hp.grad_clip > 0:
        nn.utils.clip_grad_norm_(network.parameters(), hp.grad_clip)
    optimizer.step()
    return Step(outputs.detach(), own_loss, weight)


def agree_on_resume_point(checkpointer: Checkpointer, saved: dict[str, Any] | None) -> dict[str, Any] | None:
    """Every process must resume from the same step: the oldest newest-checkpoint among them."""
    mine = (saved["epoch"], saved["batches_done"]) if saved else (0, 0)
    agreed = distributed.min_position(mine)
    if agreed == mine:
        return saved
    if agreed == (0, 0):
        log.warning("another process has no checkpoint: starting over on every process")
        return None
    return checkpointer.load_at(*agreed)
