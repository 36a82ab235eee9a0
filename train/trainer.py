"""The training loop: shuffled mini-batches, loss + penalties, optimizer and schedule, early stopping.

`fit` trains a network in place and returns its per-epoch history. Everything random (shuffling,
augmentation) draws from one seeded generator, so a run is reproducible on CPU.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.optim.lr_scheduler import ReduceLROnPlateau

from container.artifact import BINARY, REGRESSION
from train.hyperparameters import Hyperparameters
from train.losses import LossFunction
from train.metrics import TASK_METRICS, classification_metrics, is_lower_better, regression_metrics
from train.optim import build_optimizer, build_scheduler, l1_penalty

log = logging.getLogger(__name__)

EVAL_BATCH = 4096  # rows per forward pass when evaluating: bounds memory on large channels


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

    def probabilities(self, outputs: torch.Tensor) -> np.ndarray:
        if self.task == BINARY:
            positive = torch.sigmoid(outputs[:, 0])
            return torch.stack([1 - positive, positive], dim=1).numpy()
        return torch.softmax(outputs, dim=1).numpy()

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
    network.eval()
    if len(features) == 0:
        return torch.empty(0)
    return torch.cat([network(features[start : start + EVAL_BATCH]) for start in range(0, len(features), EVAL_BATCH)])


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


def fit(
    network: nn.Module,
    train: Split,
    validation: Split | None,
    *,
    hp: Hyperparameters,
    objective: Objective,
    frozen_blocks: list[nn.Module] | None = None,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
) -> History:
    """Train `network` in place on `train`, scoring `validation` after each epoch."""
    optimizer = build_optimizer(network, hp)
    scheduler = build_scheduler(optimizer, hp)
    generator = torch.Generator().manual_seed(hp.seed)
    watch = hp.early_stopping_patience > 0 or hp.lr_scheduler == "plateau"
    stopping = EarlyStopping(hp.early_stopping_metric, hp.early_stopping_patience) if validation and watch else None
    has_batch_norm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in network.modules())
    history = History()
    for epoch in range(1, hp.epochs + 1):
        network.train()
        for block in frozen_blocks or []:
            block.eval()  # frozen batch-norm statistics stay frozen too
        order = torch.randperm(len(train), generator=generator)
        outputs_seen, targets_seen = [], []
        for start in range(0, len(train), hp.batch_size):
            batch = order[start : start + hp.batch_size]
            if has_batch_norm and len(batch) == 1:
                continue  # batch norm cannot normalize a single row; it trains in another epoch's order
            features, targets = train.features[batch], train.targets[batch]
            if hp.augment:
                features = augment_images(features, generator)
            outputs = network(features)
            loss = objective.loss(outputs, targets)
            if hp.l1 > 0:
                loss = loss + hp.l1 * l1_penalty(network)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if hp.grad_clip > 0:
                nn.utils.clip_grad_norm_(network.parameters(), hp.grad_clip)
            optimizer.step()
            outputs_seen.append(outputs.detach())
            targets_seen.append(targets)
        # Train metrics over the epoch's own forward passes (weights moving, dropout on), as Keras reports them.
        metrics = {
            f"train:{k}": v for k, v in objective.score(torch.cat(outputs_seen), torch.cat(targets_seen)).items()
        }
        if validation is not None:
            metrics |= {f"validation:{k}": v for k, v in evaluate(network, validation, objective).items()}
        history.epochs.append(metrics)
        if on_epoch_end is not None:
            on_epoch_end(epoch, metrics)
        should_stop = stopping.update(epoch, metrics, network) if stopping else False
        if isinstance(scheduler, ReduceLROnPlateau):
            scheduler.step(metrics.get(hp.early_stopping_metric, metrics["train:loss"]))
        elif scheduler is not None:
            scheduler.step()
        if should_stop and stopping is not None and hp.early_stopping_patience > 0:
            log.info(
                "early stopping after epoch %d: %s has not improved for %d epochs (best %.6g at epoch %d)",
                epoch, stopping.metric, stopping.patience, stopping.best, stopping.best_epoch,
            )  # fmt: skip
            history.stopped_early = True
            break
    if stopping and hp.early_stopping_patience > 0 and stopping.best_state is not None:
        network.load_state_dict(stopping.best_state)
        history.best_epoch = stopping.best_epoch
        log.info("restored the weights of epoch %d (best %s)", stopping.best_epoch, stopping.metric)
    return history


def metric_names(task: str) -> tuple[str, ...]:
    return ("loss", *TASK_METRICS[task])
