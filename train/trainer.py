"""The training loop: shuffled mini-batches, the task's loss, Adam, and per-epoch evaluation."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from container.artifact import BINARY, MULTICLASS, REGRESSION
from train.metrics import classification_metrics, regression_metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Split:
    """Standardized features and encoded labels of one channel, as tensors."""

    features: torch.Tensor
    targets: torch.Tensor

    @classmethod
    def from_arrays(cls, features: np.ndarray, targets: np.ndarray) -> Split:
        return cls(
            torch.from_numpy(np.ascontiguousarray(features)), torch.from_numpy(np.ascontiguousarray(targets))
        )

    def __len__(self) -> int:
        return int(self.features.shape[0])


def loss_function(task: str) -> nn.Module:
    """The loss that matches the task and the network's raw-logit output."""
    if task == BINARY:
        return nn.BCEWithLogitsLoss()
    if task == MULTICLASS:
        return nn.CrossEntropyLoss()
    return nn.MSELoss()


def _loss_inputs(
    task: str, outputs: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    if task == MULTICLASS:
        return outputs, targets
    return outputs[:, 0], targets.to(outputs.dtype)


@torch.inference_mode()
def evaluate(network: nn.Module, split: Split, task: str, target_std: float = 1.0) -> dict[str, float]:
    """Loss and task metrics of `network` on a whole split (metrics in original label units)."""
    network.eval()
    outputs = network(split.features)
    loss = float(loss_function(task)(*_loss_inputs(task, outputs, split.targets)))
    metrics = {"loss": loss}
    if task == REGRESSION:
        scale = target_std
        metrics |= regression_metrics(split.targets.numpy() * scale, outputs[:, 0].numpy() * scale)
    else:
        if task == BINARY:
            positive = torch.sigmoid(outputs[:, 0])
            probabilities = torch.stack([1 - positive, positive], dim=1)
        else:
            probabilities = torch.softmax(outputs, dim=1)
        metrics |= classification_metrics(split.targets.numpy(), probabilities.numpy())
    return metrics


@dataclass
class History:
    """Per-epoch metrics, keyed like the log lines (`train:loss`, `validation:accuracy`, ...)."""

    epochs: list[dict[str, float]] = field(default_factory=list)

    @property
    def last(self) -> dict[str, float]:
        return self.epochs[-1] if self.epochs else {}


def fit(
    network: nn.Module,
    train: Split,
    validation: Split | None,
    *,
    task: str,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    target_std: float = 1.0,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
) -> History:
    """Train `network` in place. The shuffling generator is seeded, so a run is reproducible on CPU."""
    optimizer = torch.optim.Adam(network.parameters(), lr=learning_rate)
    criterion = loss_function(task)
    generator = torch.Generator().manual_seed(seed)
    history = History()
    for epoch in range(1, epochs + 1):
        network.train()
        order = torch.randperm(len(train), generator=generator)
        total_loss, seen = 0.0, 0
        for start in range(0, len(train), batch_size):
            batch = order[start : start + batch_size]
            outputs = network(train.features[batch])
            loss = criterion(*_loss_inputs(task, outputs, train.targets[batch]))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * len(batch)
            seen += len(batch)
        metrics = {"train:loss": total_loss / seen}
        if validation is not None:
            metrics |= {
                f"validation:{k}": v for k, v in evaluate(network, validation, task, target_std).items()
            }
        history.epochs.append(metrics)
        if on_epoch_end is not None:
            on_epoch_end(epoch, metrics)
    return history
