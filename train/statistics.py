"""What preprocessing needs, gathered in one streaming pass over the train channel (data_loading=stream).

`ChannelStatistics` is built block by block (`add`), merged across processes and hosts (`merge`, plain
picklable state), and then gives exactly what the in-memory path fits on the whole channel:
the FeatureEncoder (categories: union over every block, sorted), the Standardizer (per-feature mean/std of
the *encoded* features, pooled as preprocessing._POOLED_AXES pools them; one-hot columns from category
counts), the task (infer_task's rule), the LabelEncoding (LabelEncoding.fit's rules and messages) and the
class counts balanced class weights need. Equal to the in-memory fit up to float rounding (tests pin it).

Design:

* Everything is a commutative, associative combination of per-block summaries, so any split into blocks
  and any merge order give the same answer (up to float rounding). `add(block)` summarises the block and
  combines it in; `merge` combines two summaries into a new one and leaves both inputs alone.
* Numeric moments are (count, mean, M2) in float64, combined with Chan et al.'s parallel formula, never
  sum / sum of squares (which cancels catastrophically for large means). They are taken of the values as
  the network sees them: tabular numbers rounded to float32 first, as FeatureEncoder.transform does.
* One-hot columns need no moments: a category with c of n rows has mean p = c/n and population std
  sqrt(p(1-p)); a missing or unknown category is an all-zero row, so it only counts towards n.
* Arrays keep moments per last axis pooled over rows (and time) for (N, F) and (N, T, F), per channel for
  (N, C, H, W). A 3-D array is a sequence unless the trainer says otherwise: `standardizer(image=True)`
  pools the per-column moments further into one (the N×H×W image gets one channel, C=1), which is what
  Standardizer.fit gives on the (N, 1, H, W) array. So the choice is made when asking, not when adding.
* Memory is bounded whatever the rows: distinct label values are counted (with where each first occurs,
  for num_classes messages) only up to LABEL_CAP, then just "more than LABEL_CAP" plus the numeric
  moments remain (enough for regression; classification with that many classes is refused). A
  categorical column keeps counts up to CATEGORY_CAP distinct values (far above MAX_CATEGORIES, which the
  encoder refuses anyway), then only "more than CATEGORY_CAP".
* "First" (a regression's text label, a label outside num_classes) means smallest (file index, row in the
  file), so the answer does not depend on the order blocks were added or merged.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from optml.container.errors import UserError
from optml.container.features import (
    CATEGORICAL,
    MAX_CATEGORIES,
    NUMERIC,
    FeatureColumn,
    FeatureEncoder,
    as_text,
    category_text,
)
from optml.container.kinds import BINARY, MULTICLASS, REGRESSION
from optml.train.blocks import CheckedBlock
from optml.train.preprocessing import MAX_INFERRED_CLASSES, LabelEncoding, Standardizer, as_label

log = logging.getLogger(__name__)

LABEL_CAP = 10_000  # distinct label values tracked one by one; beyond it only "more than LABEL_CAP"
CATEGORY_CAP = 10_000  # distinct values counted per categorical column; beyond it only "more than"
_CHUNK_ELEMENTS = 1 << 22  # float64 temporaries of moments stay under 32 MiB whatever the block

Position = tuple[int, int, str]  # (file index, 0-based row in the file, file path): where a label is


def _is_text(values: np.ndarray) -> bool:
    return values.dtype.kind in ("O", "U", "S")


# --------------------------------------------------------------------------------------------- moments


@dataclass(frozen=True)
class Moments:
    """Count, mean and M2 (sum of squared deviations) of groups of values, float64, one per group."""

    count: int
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def of(cls, values: np.ndarray, axes: tuple[int, ...]) -> Moments:
        """Moments over `axes` (which include 0, the rows); row chunks bound the float64 temporaries."""
        per_row = max(1, int(np.prod(values.shape[1:], dtype=np.int64)))
        step = max(1, _CHUNK_ELEMENTS // per_row)
        result: Moments | None = None
        for start in range(0, len(values), step):
            chunk = values[start : start + step]
            mean = chunk.mean(axis=axes, dtype=np.float64, keepdims=True)
            m2 = np.square(chunk - mean, dtype=np.float64).sum(axis=axes)
            count = chunk.size // max(1, mean.size)
            part = cls(count, mean.reshape(m2.shape), m2)
            result = part if result is None else result.combine(part)
        assert result is not None, "moments of no rows"
        return result

    def combine(self, other: Moments) -> Moments:
        """Chan et al.: the moments of the union of both groups' values."""
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        count = self.count + other.count
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.count / count)
        m2 = self.m2 + other.m2 + np.square(delta) * (self.count * other.count / count)
        return Moments(count, mean, m2)

    def pooled(self) -> Moments:
        """All groups as one (shape ()): the groups hold equally many values each."""
        result = Moments(0, np.zeros(()), np.zeros(()))
        for mean, m2 in zip(self.mean.ravel(), self.m2.ravel(), strict=True):
            result = result.combine(Moments(self.count, np.asarray(mean), np.asarray(m2)))
        return result

    def std(self) -> np.ndarray:
        """Population std (numpy's default), 1 where it is 0: constant features pass through centred."""
        std = np.sqrt(self.m2 / self.count) if self.count else np.zeros_like(self.m2)
        return np.where(std > 0, std, 1.0)


def _combine_counts(first: dict[str, int] | None, second: dict[str, int] | None) -> dict[str, int] | None:
    """Category counts of both; None (more than CATEGORY_CAP distinct values) absorbs everything."""
    if first is None or second is None:
        return None
    small, large = sorted((first, second), key=len)
    merged = dict(large)
    for key, count in small.items():
        merged[key] = merged.get(key, 0) + count
    return merged if len(merged) <= CATEGORY_CAP else None


def _value_counts(column: pa.ChunkedArray) -> dict[str, int] | None:
    """A text column's counts per distinct value, nulls (missing categories) left out."""
    counted = pc.value_counts(as_text(column).drop_null())
    if len(counted) > CATEGORY_CAP:
        return None
    counts = counted.field("counts").to_numpy(zero_copy_only=False).tolist()
    return dict(zip(counted.field("values").to_pylist(), counts, strict=True))


# -------------------------------------------------------------------------------------------- features


@dataclass(frozen=True)
class TableFeatures:
    """Tabular feature columns: (name, kind) in the table's order, the moments of the numeric columns (in
    that order) and the category counts of each categorical column (None: more than CATEGORY_CAP)."""

    columns: tuple[tuple[str, str], ...]
    numeric: Moments
    categories: dict[str, dict[str, int] | None]

    @classmethod
    def of(cls, table: pa.Table) -> TableFeatures:
        columns = tuple(
            (name, CATEGORICAL if _is_categorical(data.type) else NUMERIC)
            for name, data in zip(table.column_names, table.columns, strict=True)
        )
        numeric = [table.column(name) for name, kind in columns if kind == NUMERIC]
        if numeric:
            # float32 first: FeatureEncoder.transform hands the network float32, and Standardizer.fit sees that.
            matrix = np.empty((table.num_rows, len(numeric)), dtype=np.float32, order="F")  # columns contiguous
            for index, data in enumerate(numeric):
                matrix[:, index] = data.to_numpy()
            moments = Moments.of(matrix, (0,))
        else:
            moments = Moments(table.num_rows, np.zeros(0), np.zeros(0))
        categories = {name: _value_counts(table.column(name)) for name, kind in columns if kind == CATEGORICAL}
        return cls(columns, moments, categories)

    def combine(self, other: TableFeatures) -> TableFeatures:
        if other.columns != self.columns:
            raise ValueError(f"blocks with different feature columns: {self.columns} and {other.columns}")
        categories = {name: _combine_counts(counts, other.categories[name]) for name, counts in self.categories.items()}
        return TableFeatures(self.columns, self.numeric.combine(other.numeric), categories)

    def encoder(self) -> FeatureEncoder:
        """FeatureEncoder.fit's encoder, and its refusal of too many categories as tabular.encode words it."""
        columns = []
        for name, kind in self.columns:
            if kind == NUMERIC:
                columns.append(FeatureColumn(name, NUMERIC))
                continue
            counts = self.categories[name]
            found = f"more than {CATEGORY_CAP}" if counts is None else str(len(counts))
            if counts is None or len(counts) > MAX_CATEGORIES:
                raise UserError(
                    f"channel 'train': column {name!r} has {found} distinct text values; one-hot encoding is"
                    f" limited to {MAX_CATEGORIES} categories (an ID or free-text column?) — leave it out with"
                    " feature_columns"
                )
            columns.append(FeatureColumn(name, CATEGORICAL, tuple(sorted(counts))))
        return FeatureEncoder(tuple(columns))

    def standardizer(self, rows: int) -> Standardizer:
        """Per encoded feature: numeric columns from their moments, one-hot outputs from category counts."""
        encoder = self.encoder()
        means: list[float] = []
        stds: list[float] = []
        numeric_mean, numeric_std = self.numeric.mean.tolist(), self.numeric.std().tolist()
        for column in encoder.columns:
            if column.kind == NUMERIC:
                means.append(numeric_mean.pop(0))
                stds.append(numeric_std.pop(0))
                continue
            counts = self.categories[column.name] or {}
            for category in column.categories:
                p = counts[category] / rows
                std = math.sqrt(p * (1.0 - p))
                means.append(p)
                stds.append(std if std > 0 else 1.0)
        return Standardizer(np.asarray(means, dtype=np.float32), np.asarray(stds, dtype=np.float32))


def _is_categorical(data_type: pa.DataType) -> bool:
    """Text columns are categorical (a wholly missing one may arrive as type null); numbers are numeric."""
    return bool(pa.types.is_string(data_type) or pa.types.is_large_string(data_type) or pa.types.is_null(data_type))


# Groups moments are kept per, by rank of the data: per feature; per feature over time; per channel.
_KEPT_AXES = {2: (0,), 3: (0, 1), 4: (0, 2, 3)}


@dataclass(frozen=True)
class ArrayFeatures:
    """Array features (N, ...): the row shape, a file holding it (for messages) and the moments pooled
    over rows (and time) per last axis for 2-D and 3-D data, per channel (axis 1) for 4-D data."""

    row_shape: tuple[int, ...]
    path: str
    moments: Moments

    @classmethod
    def of(cls, arrays: np.ndarray, path: str) -> ArrayFeatures:
        if arrays.ndim not in _KEPT_AXES:
            raise ValueError(f"{path}: arrays of shape {arrays.shape}; expected 2 to 4 dimensions")
        values = arrays.astype(np.float32, copy=False)
        return cls(tuple(arrays.shape[1:]), path, Moments.of(values, _KEPT_AXES[arrays.ndim]))

    def combine(self, other: ArrayFeatures) -> ArrayFeatures:
        if other.row_shape != self.row_shape:
            raise UserError(
                f"{other.path} has rows of shape {other.row_shape} but {self.path} has {self.row_shape}; every"
                " file in channel 'train' needs one shape (resize images to one size, pad sequences to one"
                " length)"
            )
        return ArrayFeatures(self.row_shape, self.path, self.moments.combine(other.moments))

    def encoder(self) -> FeatureEncoder | None:
        """arrays._tabular_encoder's unnamed columns for (N, F); None for sequences and images."""
        if len(self.row_shape) != 1:
            return None
        return FeatureEncoder(tuple(FeatureColumn(f"feature {i + 1}") for i in range(self.row_shape[0])))

    def standardizer(self, image: bool) -> Standardizer:
        moments, shape = self.moments, self.row_shape
        if len(shape) == 2 and image:
            moments, shape = moments.pooled(), (1, *shape)  # N×H×W becomes N×1×H×W: one channel
        mean, std = moments.mean, moments.std()
        if len(shape) == 3:
            mean, std = mean.reshape(-1, 1, 1), std.reshape(-1, 1, 1)
        return Standardizer(
            np.broadcast_to(mean, shape).astype(np.float32), np.broadcast_to(std, shape).astype(np.float32)
        )


# ---------------------------------------------------------------------------------------------- labels

LabelValue = str | float  # a distinct label: text, or a number as float64 holds it


@dataclass(frozen=True)
class LabelStatistics:
    """The labels: text or numbers; a file holding such labels (for the mixed-kinds message); the channel's
    first label and where it is; per distinct value its count and first position (None: more than
    LABEL_CAP distinct values); numeric labels' moments (shape ())."""

    text: bool
    path: str
    first: tuple[Position, LabelValue]
    counts: dict[LabelValue, int] | None
    first_seen: dict[LabelValue, Position] | None
    moments: Moments

    @classmethod
    def of(cls, block: CheckedBlock) -> LabelStatistics:
        labels = block.labels
        text = _is_text(labels)
        values = labels.astype(str).astype(object) if labels.dtype.kind == "S" else labels
        array = pa.array(values, pa.string()) if text else pa.array(values.astype(np.float64) + 0.0)  # -0.0 is 0.0
        encoded = array.dictionary_encode()
        indices = encoded.indices.to_numpy()
        distinct = encoded.dictionary.to_pylist()
        file, offset, path = block.ref.file, block.ref.row_offset, str(block.path)
        counts = first_seen = None
        if len(distinct) <= LABEL_CAP:
            # Dictionary codes are given in order of first appearance: a code first occurs where the
            # running maximum of the codes grows.
            rows = np.flatnonzero(np.diff(np.maximum.accumulate(indices), prepend=-1) > 0).tolist()
            counts = dict(zip(distinct, np.bincount(indices, minlength=len(distinct)).tolist(), strict=True))
            first_seen = {value: (file, offset + row, path) for value, row in zip(distinct, rows, strict=True)}
        moments = Moments(0, np.zeros(()), np.zeros(())) if text else Moments.of(array.to_numpy(), (0,))
        return cls(text, path, ((file, offset, path), distinct[0]), counts, first_seen, moments)

    def combine(self, other: LabelStatistics, arrays: bool) -> LabelStatistics:
        """Both blocks' labels. Text and numbers mixed: array data turns the numbers to text (as
        arrays.assemble_arrays does), tabular data is refused (as tabular.assemble does)."""
        first, second = self, other
        if first.text != second.text:
            if not arrays:
                text, numeric = (first, second) if first.text else (second, first)
                raise UserError(
                    f"{text.path} has text labels but {numeric.path} has numbers; labels are either all"
                    " numbers or all text"
                )
            first, second = first.as_text(), second.as_text()
        counts: dict[LabelValue, int] | None = None
        first_seen: dict[LabelValue, Position] | None = None
        if first.counts is not None and second.counts is not None:
            counts = dict(first.counts)
            first_seen = dict(first.first_seen or {})
            for value, count in second.counts.items():
                counts[value] = counts.get(value, 0) + count
                seen = (second.first_seen or {})[value]
                first_seen[value] = min(first_seen.get(value, seen), seen)
            if len(counts) > LABEL_CAP:
                counts = first_seen = None
        return LabelStatistics(
            first.text,
            first.path,
            min(first.first, second.first, key=lambda item: item[0]),
            counts,
            first_seen,
            first.moments.combine(second.moments),
        )

    def as_text(self) -> LabelStatistics:
        """Numeric labels as the text arrays.assemble_arrays makes of them (3.0 → "3")."""
        if self.text:
            return self
        (position, value) = self.first
        return LabelStatistics(
            True,
            self.path,
            (position, category_text(value)),
            None if self.counts is None else {category_text(v): c for v, c in self.counts.items()},
            None if self.first_seen is None else {category_text(v): p for v, p in self.first_seen.items()},
            Moments(0, np.zeros(()), np.zeros(())),
        )


# ------------------------------------------------------------------------------------------ statistics


@dataclass
class ChannelStatistics:
    """The train channel's statistics. Picklable plain data (numbers, strings, tuples, dicts, numpy
    arrays in frozen dataclasses), for torch.distributed.all_gather_object."""

    rows: int = 0
    features: TableFeatures | ArrayFeatures | None = None
    label_statistics: LabelStatistics | None = field(default=None, repr=False)

    @classmethod
    def of(cls, block: CheckedBlock) -> ChannelStatistics:
        """One block's statistics."""
        if block.table is not None:
            features: TableFeatures | ArrayFeatures = TableFeatures.of(block.table)
        elif block.arrays is not None:
            features = ArrayFeatures.of(block.arrays, str(block.path))
        else:
            raise ValueError(f"{block.path}: a block with neither a table nor arrays")
        return cls(block.rows, features, LabelStatistics.of(block))

    @classmethod
    def of_blocks(cls, blocks: Iterable[CheckedBlock]) -> ChannelStatistics:
        statistics = cls()
        for block in blocks:
            statistics.add(block)
        return statistics

    def add(self, block: CheckedBlock) -> None:
        if block.rows == 0:
            return
        combined = self.merge(ChannelStatistics.of(block))
        self.rows, self.features, self.label_statistics = combined.rows, combined.features, combined.label_statistics

    def merge(self, other: ChannelStatistics) -> ChannelStatistics:
        """Both statistics combined, in a new object (neither is changed)."""
        if other.rows == 0 or other.features is None or other.label_statistics is None:
            return replace(self)
        if self.rows == 0 or self.features is None or self.label_statistics is None:
            return replace(other)
        arrays = isinstance(self.features, ArrayFeatures)
        if isinstance(self.features, ArrayFeatures) and isinstance(other.features, ArrayFeatures):
            features: TableFeatures | ArrayFeatures = self.features.combine(other.features)
        elif isinstance(self.features, TableFeatures) and isinstance(other.features, TableFeatures):
            features = self.features.combine(other.features)
        else:
            raise ValueError("tabular blocks and array blocks in one channel")
        labels = self.label_statistics.combine(other.label_statistics, arrays)
        return ChannelStatistics(self.rows + other.rows, features, labels)

    def _features(self) -> TableFeatures | ArrayFeatures:
        if self.features is None:
            raise ValueError("statistics of no rows")
        return self.features

    def _labels(self) -> LabelStatistics:
        if self.label_statistics is None:
            raise ValueError("statistics of no rows")
        return self.label_statistics

    def encoder(self) -> FeatureEncoder | None:
        """None for image/sequence arrays; tabular arrays get the unnamed-columns encoder, as arrays.py does."""
        return self._features().encoder()

    def standardizer(self, image: bool = False) -> Standardizer:
        """Standardizer.fit on the encoded train features. `image`: a 3-D array (N, H, W) is an image (the
        trainer's array_layout "image", which gives it one channel: mean/std of shape (1, H, W), pooled
        over everything) rather than a sequence (N, T, F); other data ignores it."""
        features = self._features()
        if isinstance(features, TableFeatures):
            return features.standardizer(self.rows)
        return features.standardizer(image)

    def task(self) -> str:
        """infer_task's rule, from the distinct labels seen (logged the same way)."""
        labels = self._labels()
        counts = labels.counts
        if labels.text:
            task = BINARY if counts is not None and len(counts) <= 2 else MULTICLASS
        elif counts is not None and len(counts) <= MAX_INFERRED_CLASSES and all(float(v).is_integer() for v in counts):
            task = BINARY if len(counts) <= 2 else MULTICLASS
        else:
            task = REGRESSION
        log.info(
            "task inferred from %s distinct label values: %s (set hyperparameter task to override)",
            f"more than {LABEL_CAP}" if counts is None else len(counts),
            task,
        )
        return task

    def labels(self, task: str, num_classes: int | None = None) -> LabelEncoding:
        """LabelEncoding.fit(task, every train label, num_classes), with its refusals."""
        labels = self._labels()
        if task == REGRESSION:
            if labels.text:
                raise UserError(
                    f"task regression needs numeric labels; channel 'train' has text labels such as {labels.first[1]!r}"
                )
            std = float(np.sqrt(labels.moments.m2 / labels.moments.count))
            return LabelEncoding(task, target_mean=float(labels.moments.mean), target_std=std if std > 0 else 1.0)
        if num_classes is not None:
            return _declared_classes(task, labels, num_classes)
        if labels.counts is None:
            raise UserError(_too_many_classes(task))
        return LabelEncoding.of_classes(task, tuple(as_label(value) for value in sorted(labels.counts)))

    def class_counts(self, labels: LabelEncoding) -> np.ndarray:
        """Rows per class index, for class_weights=balanced."""
        counts = self._labels().counts
        if labels.task == REGRESSION:
            return np.zeros(0, dtype=np.int64)
        if counts is None:
            raise UserError(_too_many_classes(labels.task))
        keys: Sequence[LabelValue] = [c if isinstance(c, str) else float(c) for c in labels.classes]
        return np.asarray([counts.get(key, 0) for key in keys], dtype=np.int64)


def _too_many_classes(task: str) -> str:
    return (
        f"task {task} with more than {LABEL_CAP} distinct labels in channel 'train': streamed data"
        f" (data_loading=stream) supports at most {LABEL_CAP} classes; is the label column a regression target"
        " (set task=regression)?"
    )


def _declared_classes(task: str, labels: LabelStatistics, num_classes: int) -> LabelEncoding:
    """With num_classes, labels are class indices 0..num_classes-1; the first label outside is named."""
    if labels.text:
        bad: list[tuple[Position, LabelValue]] = [labels.first]
    elif labels.counts is None or labels.first_seen is None:
        raise UserError(_too_many_classes(task))
    else:
        seen = labels.first_seen
        bad = [
            (seen[value], value)
            for value in labels.counts
            if not (float(value).is_integer() and 0 <= float(value) < num_classes)
        ]
    if bad:
        (_, row, path), value = min(bad, key=lambda item: item[0])
        raise UserError(
            f"{path} row {row + 1}: label {as_label(value)!r} is outside num_classes={num_classes}"
            f" (expected an integer 0..{num_classes - 1})"
        )
    return LabelEncoding(task, classes=tuple(range(num_classes)))
