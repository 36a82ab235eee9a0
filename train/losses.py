"""Loss functions: the task's default, robust regression losses, focal loss and class weights.

Every loss here maps (raw network outputs, encoded targets) to one value per row; `LossFunction`
turns that into the batch loss, a class-weighted mean when class weights are set (the same weighted
mean `nn.CrossEntropyLoss(weight=...)` computes).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch.nn import functional as F

from optml.container.kinds import BINARY, MULTICLASS

# (outputs, targets, reduction) → loss; reduction "none" gives one value per row, "mean" their mean in one
# kernel (the common, unweighted case on every training step).
PerRowLoss = Callable[[torch.Tensor, torch.Tensor, str], torch.Tensor]
DEFAULT_LOSS = {BINARY: "bce", MULTICLASS: "cross_entropy"}


def resolve_loss_name(name: str, task: str) -> str:
    if name == "auto":
        return DEFAULT_LOSS.get(task, "mse")
    if name == "cross_entropy" and task == BINARY:
        return "bce"  # binary cross-entropy on the single logit is cross-entropy for two classes
    return name


def focal_loss(task: str, gamma: float, alpha: float) -> PerRowLoss:
    """Lin et al. 2017: cross-entropy scaled by (1 - p_t)^γ, so easy, well-classified rows count less."""

    def binary(outputs: torch.Tensor, targets: torch.Tensor, reduction: str) -> torch.Tensor:
        logits, labels = outputs[:, 0], targets.to(outputs.dtype)
        ce = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
        p_t = torch.exp(-ce)
        alpha_t = alpha * labels + (1 - alpha) * (1 - labels)
        losses = alpha_t * (1 - p_t) ** gamma * ce
        return losses.mean() if reduction == "mean" else losses

    def multiclass(outputs: torch.Tensor, targets: torch.Tensor, reduction: str) -> torch.Tensor:
        ce = F.cross_entropy(outputs, targets, reduction="none")
        losses = (1 - torch.exp(-ce)) ** gamma * ce
        return losses.mean() if reduction == "mean" else losses

    return binary if task == BINARY else multiclass


def per_row_loss(name: str, task: str, *, huber_delta: float, focal_gamma: float, focal_alpha: float) -> PerRowLoss:
    if name == "bce":
        return lambda out, y, r: F.binary_cross_entropy_with_logits(out[:, 0], y.to(out.dtype), reduction=r)
    if name == "cross_entropy":
        return lambda out, y, r: F.cross_entropy(out, y, reduction=r)
    if name == "focal":
        return focal_loss(task, focal_gamma, focal_alpha)
    if name == "mse":
        return lambda out, y, r: F.mse_loss(out[:, 0], y.to(out.dtype), reduction=r)
    if name == "mae":
        return lambda out, y, r: F.l1_loss(out[:, 0], y.to(out.dtype), reduction=r)
    if name == "huber":
        return lambda out, y, r: F.huber_loss(out[:, 0], y.to(out.dtype), reduction=r, delta=huber_delta)
    raise ValueError(f"unknown loss {name!r}")


def balanced_class_weights(class_indices: np.ndarray, classes: int) -> np.ndarray:
    """scikit-learn's "balanced": rows / (classes × rows of that class); absent classes get weight 1."""
    return balanced_weights(np.bincount(class_indices, minlength=classes))


def balanced_weights(counts: np.ndarray) -> np.ndarray:
    """`balanced_class_weights` from the rows per class (a streamed channel's statistics)."""
    counts = counts.astype(np.float64)
    weights = np.ones(len(counts))
    present = counts > 0
    weights[present] = counts.sum() / (len(counts) * counts[present])
    return weights


class LossFunction:
    """The batch loss: per-row loss, optionally weighted by the row's class."""

    def __init__(self, name: str, row_loss: PerRowLoss, class_weights: torch.Tensor | None = None) -> None:
        self.name = name
        self.row_loss = row_loss
        self.class_weights = class_weights

    def parts(self, outputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(sum of weighted row losses, sum of weights): data-parallel training adds both up across
        processes before dividing, so the loss is the global batch's weighted mean."""
        losses = self.row_loss(outputs, targets, "none")
        if self.class_weights is None:
            return losses.sum(), torch.tensor(float(len(losses)), device=losses.device)
        weights = self.class_weights.to(losses.device)[targets.long()]
        return (losses * weights).sum(), weights.sum()

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.class_weights is None:
            return self.row_loss(outputs, targets, "mean")
        total, weight = self.parts(outputs, targets)
        return total / weight
