"""Task inference, label encoding and feature standardization, fitted on the training channel only."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from optml.container.artifact import Label
from optml.container.errors import UserError
from optml.container.kinds import BINARY, MULTICLASS, REGRESSION

log = logging.getLogger(__name__)

MAX_INFERRED_CLASSES = 20  # integer labels with more distinct values than this look like a regression target


def _is_text(labels: np.ndarray) -> bool:
    return labels.dtype.kind in ("O", "U", "S")


def infer_task(labels: np.ndarray) -> str:
    distinct = np.unique(labels)
    if _is_text(labels):
        task = BINARY if len(distinct) <= 2 else MULTICLASS
    elif np.all(distinct == np.round(distinct)) and len(distinct) <= MAX_INFERRED_CLASSES:
        task = BINARY if len(distinct) <= 2 else MULTICLASS
    else:
        task = REGRESSION
    log.info(
        "task inferred from %d distinct label values: %s (set hyperparameter task to override)",
        len(distinct),
        task,
    )
    return task


def as_label(value: object) -> Label:
    """A label as classes keep it: text, or an int when the number is whole (3.0 is class 3)."""
    if isinstance(value, str):
        return value
    number = float(value)  # type: ignore[arg-type]
    return int(number) if number.is_integer() else number


@dataclass(frozen=True)
class LabelEncoding:
    """Maps original labels to class indices 0..K-1 (classification) or standardizes targets (regression)."""

    task: str
    classes: tuple[Label, ...] = ()
    target_mean: float = 0.0
    target_std: float = 1.0

    @classmethod
    def fit(cls, task: str, labels: np.ndarray, num_classes: int | None = None) -> LabelEncoding:
        if task == REGRESSION:
            if _is_text(labels):
                raise UserError(
                    f"task regression needs numeric labels; channel 'train' has text labels such as {labels[0]!r}"
                )
            std = float(labels.std())
            return cls(task, target_mean=float(labels.mean()), target_std=std if std > 0 else 1.0)
        if num_classes is not None:
            return cls._declared_classes(task, labels, num_classes)
        return cls.of_classes(task, tuple(as_label(value) for value in np.unique(labels)))

    @classmethod
    def of_classes(cls, task: str, classes: tuple[Label, ...]) -> LabelEncoding:
        """The classes found in channel 'train' (sorted), checked against the task."""
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

    @classmethod
    def _declared_classes(cls, task: str, labels: np.ndarray, num_classes: int) -> LabelEncoding:
        """With num_classes, labels are class indices 0..num_classes-1; classes absent from train are fine."""
        numeric = labels if not _is_text(labels) else None
        bad = (
            np.ones(len(labels), dtype=bool)
            if numeric is None
            else (numeric != np.round(numeric)) | (numeric < 0) | (numeric >= num_classes)
        )
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise UserError(
                f"channel 'train' row {row + 1}: label {as_label(labels[row])!r} is outside num_classes={num_classes}"
                f" (expected an integer 0..{num_classes - 1})"
            )
        return cls(task, classes=tuple(range(num_classes)))

    @property
    def output_size(self) -> int:
        return len(self.classes) if self.task == MULTICLASS else 1

    def encode(self, labels: np.ndarray, channel: str, where: str | None = None, first_row: int = 0) -> np.ndarray:
        """Class indices (or standardized regression targets). A label training never saw fails naming its
        row: in the channel, or in file `where` counting from `first_row` (a streamed block)."""
        if self.task == REGRESSION:
            return ((labels.astype(np.float64) - self.target_mean) / self.target_std).astype(np.float32)
        encoded = self._class_indices(labels)
        unknown = np.flatnonzero(encoded < 0)
        if len(unknown):
            row = int(unknown[0])
            place = f"{where} row {first_row + row + 1}" if where else f"channel {channel!r} row {row + 1}"
            raise UserError(
                f"{place}: label {as_label(labels[row])!r} never occurs in channel 'train' (classes:"
                f" {list(self.classes)})"
            )
        return encoded

    def _class_indices(self, labels: np.ndarray) -> np.ndarray:
        """Each label's class index, -1 for none; vectorized (a stream encodes every epoch's labels again).
        A label matches a class when both read the same as text (3 and 3.0 are class 3)."""
        if not _is_text(labels) and all(isinstance(c, (int, float)) for c in self.classes):
            values = np.asarray(self.classes, dtype=np.float64)
            order = np.argsort(values, kind="stable")
            ordered = values[order]
            found = np.searchsorted(ordered, labels.astype(np.float64)).clip(0, max(len(ordered) - 1, 0))
            matches = ordered[found] == labels if len(ordered) else np.zeros(len(labels), dtype=bool)
            return np.where(matches, order[found], -1).astype(np.int64)
        keys = labels.astype(str) if _is_text(labels) else [str(as_label(v)) for v in labels]
        classes = pa.array([str(label) for label in self.classes], pa.string())
        indices = pc.index_in(pa.array(keys, pa.string()), value_set=classes)
        return indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


# Axes statistics are pooled over, by rank of the data: rows; rows+time; rows+height+width.
_POOLED_AXES = {2: (0,), 3: (0, 1), 4: (0, 2, 3)}


@dataclass(frozen=True)
class Standardizer:
    """z-scoring per feature (tabular), per feature over time (sequences) or per channel (images).

    mean/std have the shape of one row, so applying them is elementwise whatever the data's rank.
    Constant features get std 1: they pass through centred instead of becoming NaN.
    """

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, features: np.ndarray) -> Standardizer:
        axes = _POOLED_AXES[features.ndim]
        mean = features.mean(axis=axes, dtype=np.float64, keepdims=True)
        std = features.std(axis=axes, dtype=np.float64, keepdims=True)
        std[std == 0] = 1.0
        row_shape = features.shape[1:]
        return cls(
            np.broadcast_to(mean[0], row_shape).astype(np.float32),
            np.broadcast_to(std[0], row_shape).astype(np.float32),
        )

    def transform(self, features: np.ndarray) -> np.ndarray:
        return ((features - self.mean) / self.std).astype(np.float32)
