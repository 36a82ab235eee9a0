"""Task inference, label encoding and feature standardization, fitted on the training channel only."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from container.artifact import BINARY, MULTICLASS, REGRESSION, Label
from container.errors import UserError

log = logging.getLogger(__name__)

MAX_INFERRED_CLASSES = 20  # integer labels with more distinct values than this look like a regression target


def infer_task(labels: np.ndarray) -> str:
    distinct = np.unique(labels)
    if np.all(distinct == np.round(distinct)) and len(distinct) <= MAX_INFERRED_CLASSES:
        task = BINARY if len(distinct) <= 2 else MULTICLASS
    else:
        task = REGRESSION
    log.info(
        "task inferred from %d distinct label values: %s (set hyperparameter task to override)",
        len(distinct),
        task,
    )
    return task


def _as_label(value: float) -> Label:
    return int(value) if float(value).is_integer() else float(value)


@dataclass(frozen=True)
class LabelEncoding:
    """Maps original labels to class indices 0..K-1 (classification) or standardizes targets (regression)."""

    task: str
    classes: tuple[Label, ...] = ()
    target_mean: float = 0.0
    target_std: float = 1.0

    @classmethod
    def fit(cls, task: str, labels: np.ndarray) -> LabelEncoding:
        if task == REGRESSION:
            std = float(labels.std())
            return cls(task, target_mean=float(labels.mean()), target_std=std if std > 0 else 1.0)
        classes = tuple(_as_label(value) for value in np.unique(labels))
        if task == BINARY and len(classes) != 2:
            raise UserError(
                f"task binary_classification needs exactly 2 distinct labels in channel 'train', found"
                f" {len(classes)}: {list(classes)[:10]}"
            )
        if task == MULTICLASS and len(classes) < 2:
            raise UserError(
                f"classification needs at least 2 distinct labels in channel 'train', found {list(classes)}"
            )
        return cls(task, classes=classes)

    @property
    def output_size(self) -> int:
        return len(self.classes) if self.task == MULTICLASS else 1

    def encode(self, labels: np.ndarray, channel: str) -> np.ndarray:
        if self.task == REGRESSION:
            return ((labels - self.target_mean) / self.target_std).astype(np.float32)
        lookup = np.asarray([float(c) for c in self.classes])
        indices = np.searchsorted(lookup, labels)
        indices = np.clip(indices, 0, len(lookup) - 1)
        unknown = lookup[indices] != labels
        if unknown.any():
            row = int(np.flatnonzero(unknown)[0])
            raise UserError(
                f"channel {channel!r} row {row + 1}: label {_as_label(labels[row])!r} never occurs in channel"
                f" 'train' (classes: {list(self.classes)})"
            )
        return indices.astype(np.int64)


@dataclass(frozen=True)
class Standardizer:
    """Per-feature z-scoring; constant features get std 1 so they pass through centred, not as NaN."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, features: np.ndarray) -> Standardizer:
        mean = features.mean(axis=0, dtype=np.float64)
        std = features.std(axis=0, dtype=np.float64)
        std[std == 0] = 1.0
        return cls(mean.astype(np.float32), std.astype(np.float32))

    def transform(self, features: np.ndarray) -> np.ndarray:
        return ((features - self.mean) / self.std).astype(np.float32)
