"""Raw tabular feature columns → the float matrix the network sees. Fitted in training, saved with the
model and applied again by serving, so both sides encode a row the same way.

Numeric columns pass through as float32. Categorical (text) columns are one-hot encoded — one output per
category seen in the training channel, in sorted order — because an MLP given ordinal indices would read
an order ("red" < "green") into categories that have none. A category never seen in training, and a
missing categorical value, encode as all zeros (scikit-learn's `handle_unknown="ignore"`), so an endpoint
keeps answering when a new category shows up; training logs how many such values validation data held.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

NUMERIC = "numeric"
CATEGORICAL = "categorical"
KINDS = (NUMERIC, CATEGORICAL)

# One-hot width grows with cardinality; a column with thousands of distinct values is almost always an ID
# (which a model should not learn from) or free text, so refuse it with a hint instead of exhausting memory.
MAX_CATEGORIES = 1000


class FeatureError(ValueError):
    """A row that cannot be encoded; the message names the row and column (1-based)."""


def is_number(text: str) -> bool:
    """Whether a CSV field reads as a number: the test both training's header detection and serving's
    CSV decoding use."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def category_text(value: object) -> str:
    """The text a category is stored as. 3 and 3.0 are the same category, so a CSV request's "3" matches
    a JSON request's 3 and the training column's integer 3."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def as_text(column: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """A column as strings spelled the way `category_text` spells single values."""
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return column
    if pa.types.is_floating(column.type):
        # 3.0 → "3": integral floats are cast through int64 so the text matches category_text.
        integral = pc.equal(pc.floor(column), column)
        as_int = pc.cast(pc.if_else(integral, column, None), pa.int64(), safe=False)
        return pc.if_else(integral, pc.cast(as_int, pa.string()), pc.cast(column, pa.string()))
    return pc.cast(column, pa.string())


@dataclass(frozen=True)
class FeatureColumn:
    name: str
    kind: str = NUMERIC
    categories: tuple[str, ...] = ()

    @property
    def width(self) -> int:
        return len(self.categories) if self.kind == CATEGORICAL else 1

    def output_names(self) -> list[str]:
        if self.kind == CATEGORICAL:
            return [f"{self.name}={category}" for category in self.categories]
        return [self.name]

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "kind": self.kind}
        if self.kind == CATEGORICAL:
            data["categories"] = list(self.categories)
        return data


@dataclass(frozen=True)
class FeatureEncoder:
    """The feature columns of the training data, in order, and how each is encoded."""

    columns: tuple[FeatureColumn, ...]
    _offsets: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        offsets = np.cumsum([0] + [column.width for column in self.columns]).tolist()
        object.__setattr__(self, "_offsets", tuple(int(o) for o in offsets))

    @classmethod
    def fit(cls, table: pa.Table, categorical: Sequence[str] = ()) -> FeatureEncoder:
        """Every column of `table` is a feature; those named in `categorical` (and every text column) are
        one-hot encoded with the categories found here."""
        columns = []
        for name, data in zip(table.column_names, table.columns, strict=True):
            if name in categorical or pa.types.is_string(data.type) or pa.types.is_large_string(data.type):
                values = pc.unique(as_text(data).drop_null()).to_pylist()
                if len(values) > MAX_CATEGORIES:
                    raise FeatureError(
                        f"column {name!r} has {len(values)} distinct text values; one-hot encoding is limited"
                        f" to {MAX_CATEGORIES} categories (an ID or free-text column?) — leave it out with"
                        " feature_columns"
                    )
                columns.append(FeatureColumn(name, CATEGORICAL, tuple(sorted(str(v) for v in values))))
            else:
                columns.append(FeatureColumn(name, NUMERIC))
        return cls(tuple(columns))

    @property
    def input_names(self) -> tuple[str, ...]:
        """The raw columns a row must hold, in order."""
        return tuple(column.name for column in self.columns)

    @property
    def output_names(self) -> tuple[str, ...]:
        """One name per encoded feature: the column name, or `column=category` for one-hot outputs."""
        return tuple(name for column in self.columns for name in column.output_names())

    @property
    def output_size(self) -> int:
        return self._offsets[-1]

    @property
    def categorical(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns if column.kind == CATEGORICAL)

    def to_json(self) -> dict[str, Any]:
        return {
            "encoding": "one-hot",
            "unknown_category": "zeros",
            "columns": [column.to_json() for column in self.columns],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FeatureEncoder:
        columns = []
        for entry in data["columns"]:
            kind = entry.get("kind", NUMERIC)
            if kind not in KINDS:
                raise ValueError(f"feature column {entry.get('name')!r}: unknown kind {kind!r}")
            columns.append(FeatureColumn(str(entry["name"]), kind, tuple(str(c) for c in entry.get("categories", ()))))
        return cls(tuple(columns))

    def unknown_categories(self, table: pa.Table) -> dict[str, tuple[int, str]]:
        """Per categorical column of `table` (named as in training): how many values were never seen in
        training, and the first of them."""
        found = {}
        for column in self.columns:
            if column.kind != CATEGORICAL:
                continue
            text = as_text(table.column(column.name))
            unseen = pc.and_(
                pc.invert(pc.is_in(text, value_set=pa.array(column.categories, pa.string()))),
                pc.is_valid(text),
            )
            count = int(pc.sum(unseen).as_py() or 0)
            if count:
                first = int(pc.index(unseen, True).as_py())
                found[column.name] = (count, str(text[first].as_py()))
        return found

    def transform(self, rows: pa.Table | np.ndarray | Sequence[Sequence[object]]) -> np.ndarray:
        """Encode rows: a pyarrow Table (columns matched by name) or rows of values in training column
        order (a 2-D array or a list of lists, as a CSV or JSON request holds them). Float32 (N, F)."""
        if isinstance(rows, pa.Table):
            return self._transform_table(rows)
        if isinstance(rows, np.ndarray) and rows.dtype.kind in "fiub" and not self.categorical:
            self._check_width(rows.shape[1] if rows.ndim == 2 else -1, rows.ndim == 2)
            return rows.astype(np.float32)
        return self._transform_table(self._rows_to_table(rows))

    def _check_width(self, width: int, two_dimensional: bool = True) -> None:
        if not two_dimensional:
            raise FeatureError(f"expected rows of {len(self.columns)} values")
        if width != len(self.columns):
            raise FeatureError(f"each row needs {len(self.columns)} values, got {width}")

    def _rows_to_table(self, rows: np.ndarray | Sequence[Sequence[object]]) -> pa.Table:
        rows = rows.tolist() if isinstance(rows, np.ndarray) else rows
        for number, row in enumerate(rows, start=1):
            if len(row) != len(self.columns):
                raise FeatureError(f"row {number} has {len(row)} values; each row needs {len(self.columns)}")
        arrays = []
        for index, column in enumerate(self.columns):
            values = [row[index] for row in rows]
            if column.kind == CATEGORICAL:
                arrays.append(pa.array([None if v is None else category_text(v) for v in values], pa.string()))
            else:
                arrays.append(pa.array(self._numbers(values, index), pa.float64()))
        return pa.table(arrays, names=[f"c{i}" for i in range(len(self.columns))]).rename_columns(
            list(self.input_names)
        )

    def _numbers(self, values: list[object], index: int) -> list[float]:
        numbers = []
        for number, value in enumerate(values, start=1):
            where = f"row {number}, {self._describe(index)}"
            if value is None or value == "":
                raise FeatureError(f"{where}: value is missing")
            try:
                if isinstance(value, bool):  # float(True) works, but a JSON true is no measurement
                    raise TypeError
                numbers.append(float(value))  # type: ignore[arg-type]
            except (TypeError, ValueError):
                raise FeatureError(f"{where}: {value!r} is not a number") from None
            if not math.isfinite(numbers[-1]):
                raise FeatureError(f"{where}: {value!r} is not a finite number")
        return numbers

    def _describe(self, index: int) -> str:
        return f"column {index + 1} ({self.columns[index].name!r})"

    def _transform_table(self, table: pa.Table) -> np.ndarray:
        missing = [name for name in self.input_names if name not in table.column_names]
        if missing:
            raise FeatureError(
                f"missing feature column(s) {missing}; the model was trained on {list(self.input_names)}"
            )
        out = np.zeros((table.num_rows, self.output_size), dtype=np.float32)
        for index, column in enumerate(self.columns):
            data = table.column(column.name)
            offset = self._offsets[index]
            if column.kind == NUMERIC:
                out[:, offset] = self._numeric(data, index)
                continue
            codes = pc.index_in(as_text(data), value_set=pa.array(column.categories, pa.string()))
            codes_np = codes.to_numpy(zero_copy_only=False)
            known = ~np.isnan(codes_np.astype(np.float64))
            out[np.flatnonzero(known), offset + codes_np[known].astype(np.int64)] = 1.0
        return out

    def _numeric(self, data: pa.ChunkedArray, index: int) -> np.ndarray:
        if not (pa.types.is_integer(data.type) or pa.types.is_floating(data.type) or pa.types.is_boolean(data.type)):
            values = self._numbers(data.to_pylist(), index)
            return np.asarray(values, dtype=np.float64)
        if data.null_count:
            row = int(pc.index(pc.is_null(data), True).as_py())
            raise FeatureError(f"row {row + 1}, {self._describe(index)}: value is missing")
        values = data.to_numpy().astype(np.float64)
        if not np.isfinite(values).all():
            row = int(np.flatnonzero(~np.isfinite(values))[0])
            raise FeatureError(f"row {row + 1}, {self._describe(index)}: {values[row]} is not a finite number")
        return values
