"""Optimizer, learning-rate schedule and the L1/L2 penalties.

L2 is the optimizer's weight decay (coupled for sgd/adam, decoupled for adamw) and, like L1, applies
to weight matrices and kernels only: penalizing biases and normalization scales does not regularize.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingLR, LRScheduler, ReduceLROnPlateau, StepLR

from optml.train.hyperparameters import Hyperparameters
from optml.train.metric_names import is_lower_better

Scheduler = LRScheduler | ReduceLROnPlateau


def _is_weight(parameter: nn.Parameter) -> bool:
    return parameter.ndim >= 2


def build_optimizer(network: nn.Module, hp: Hyperparameters) -> torch.optim.Optimizer:
    trainable = [p for p in network.parameters() if p.requires_grad]
    groups: list[dict[str, object]] = [{"params": trainable, "weight_decay": 0.0}]
    if hp.l2 > 0:  # one group when there is no decay: a second group costs every step
        groups = [
            {"params": [p for p in trainable if _is_weight(p)], "weight_decay": hp.l2},
            {"params": [p for p in trainable if not _is_weight(p)], "weight_decay": 0.0},
        ]
    if hp.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=hp.learning_rate, momentum=hp.momentum)
    if hp.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=hp.learning_rate)
    return torch.optim.Adam(groups, lr=hp.learning_rate)


def build_scheduler(optimizer: torch.optim.Optimizer, hp: Hyperparameters) -> Scheduler | None:
    if hp.lr_scheduler == "step":
        return StepLR(optimizer, step_size=hp.lr_step_size, gamma=hp.lr_gamma)
    if hp.lr_scheduler == "cosine":
        return CosineAnnealingLR(optimizer, T_max=hp.epochs)
    if hp.lr_scheduler == "plateau":
        if is_lower_better(hp.early_stopping_metric):
            return ReduceLROnPlateau(optimizer, mode="min", factor=hp.lr_gamma, patience=hp.lr_patience)
        return ReduceLROnPlateau(optimizer, mode="max", factor=hp.lr_gamma, patience=hp.lr_patience)
    return None


def l1_penalty(network: nn.Module) -> torch.Tensor:
    weights = [p.abs().sum() for p in network.parameters() if p.requires_grad and _is_weight(p)]
    return torch.stack(weights).sum() if weights else torch.zeros(())
