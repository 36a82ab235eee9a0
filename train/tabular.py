"""Tables (one per file) → a tabular Dataset: pick the label, feature and time columns, check every value,
encode categorical columns. Messages name the file, row and column, and what was expected.

Rows are counted from 1 as data rows; for a CSV file with a header the line number is added, since that
is what an editor shows.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from optml.container.errors import UserError
from optml.container.features import FeatureEncoder, FeatureError, as_text
from optml.train.dataset import DataOptions, Dataset

log = logging.getLogger(__name__)

DEFAULT_LABEL = "label"
NUMBER_PATTERN = r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$"


@dataclass(frozen=True)
class Source:
    """One file's table. `named`: its column names come from the data (header, Parquet, JSON), not from
    position ("column 1", …, for a headerless CSV). `header`: a CSV header line precedes the rows."""

    path: Path
    table: pa.Table
    named: bool
    header: bool = False
    row_offset: int = 0  # rows of the file before this table (a block of a file read block by block)

    def where(self, row: int) -> str:
        """`row` of the table, counted from the start of the file as a person counts (and, with a header,
        the line an editor shows)."""
        row += self.row_offset
        line = f" (line {row + 2})" if self.header else ""
        return f"{self.path} row {row + 1}{line}"

    def column(self, name: str) -> str:
        return f"column {name!r}" if self.named else name

    def label(self, name: str) -> str:
        return f"the label ({self.column(name)})"


@dataclass(frozen=True)
class Layout:
    label: str
    features: tuple[str, ...]
    time: str | None


def _is_text(data_type: pa.DataType) -> bool:
    return bool(pa.types.is_string(data_type) or pa.types.is_large_string(data_type))


def _is_number(data_type: pa.DataType) -> bool:
    return bool(
        pa.types.is_integer(data_type)
        or pa.types.is_decimal(data_type)
        or pa.types.is_floating(data_type)
        or pa.types.is_boolean(data_type)
        or pa.types.is_null(data_type)
    )


def _resolve(reference: str | int, what: str, source: Source) -> str:
    columns = source.table.column_names
    if isinstance(reference, int):
        if not 0 <= reference < len(columns):
            raise UserError(
                f"{what} {reference} is out of range: {source.path} has {len(columns)} columns"
                f" (0-based positions 0–{len(columns) - 1})"
            )
        return columns[reference]
    if reference in columns:
        return reference
    if not source.named:
        raise UserError(
            f"{what} {reference!r} is a column name, but {source.path} has no header row; add one, or refer"
            " to columns by 0-based position"
        )
    raise UserError(f"{what} {reference!r} not found in {source.path}; columns: {', '.join(columns)}")


def resolve_layout(first: Source, options: DataOptions, encoder: FeatureEncoder | None) -> Layout:
    if options.label_column is not None:
        label = _resolve(options.label_column, "label_column", first)
    elif not first.named or DEFAULT_LABEL in first.table.column_names or first.header:
        label = DEFAULT_LABEL if DEFAULT_LABEL in first.table.column_names else first.table.column_names[0]
    else:
        raise UserError(
            f"{first.path} has no column {DEFAULT_LABEL!r}; set label_column to the column to predict"
            f" (columns: {', '.join(first.table.column_names)})"
        )
    time = _resolve(options.time_column, "time_column", first) if options.time_column else None
    if encoder is not None:
        features = encoder.input_names
    elif options.feature_columns is not None:
        features = tuple(_resolve(ref, "feature_columns entry", first) for ref in options.feature_columns)
        clash = [name for name in features if name in (label, time)]
        if clash:
            raise UserError(f"feature_columns names {clash[0]!r}, which is the label or time column")
        repeated = sorted({name for name in features if features.count(name) > 1})
        if repeated:
            raise UserError(f"feature_columns names {', '.join(repeated)} more than once")
    else:
        features = tuple(name for name in first.table.column_names if name not in (label, time))
    if not features:
        raise UserError(
            f"{first.path} has {first.table.num_columns} column; expected the label followed by features"
            " (SageMaker CSV has no header row and the label in the first column)"
        )
    return Layout(label, features, time)


def check_columns(source: Source, first: Source, layout: Layout, *, from_training: bool, every_column: bool) -> None:
    """Every file must hold the columns the first one gave (or, for validation and test, the columns the
    train channel gave); with no explicit feature list, exactly them."""
    present = source.table.column_names
    reference = "the model's training data" if from_training else str(first.path)
    expected = len(layout.features) + 1 + (1 if layout.time else 0) if from_training else len(first.table.column_names)
    if not source.named and len(present) != expected:
        raise UserError(
            f"{source.path} has {len(present) - 1} features but {reference} has {expected - 1};"
            " every file needs the same columns in the same order"
        )
    needed = [layout.label, *layout.features, *([layout.time] if layout.time else [])]
    missing = [name for name in needed if name not in present]
    if missing:
        raise UserError(
            f"{source.path} lacks column(s) {', '.join(missing)} that {reference} has"
            f" (columns here: {', '.join(present)})"
        )
    if every_column:
        extra = [name for name in present if name not in needed]
        if extra:
            raise UserError(
                f"{source.path} has column(s) {', '.join(extra)} that {reference} lacks; every file in a"
                " channel needs the same columns (or list the ones to use in feature_columns)"
            )


def _missing(data: pa.ChunkedArray) -> pa.ChunkedArray:
    return pc.is_null(data, nan_is_null=True)


def check_not_all_missing(channel: str, sources: Sequence[Source], layout: Layout) -> None:
    for name in layout.features:
        if all(int(pc.sum(_missing(s.table.column(name))).as_py() or 0) == s.table.num_rows for s in sources):
            raise UserError(
                f"{sources[0].column(name)} is empty (NaN or missing) in every row of channel {channel!r};"
                " leave it out with feature_columns or fill it in"
            )


def _non_numbers(data: pa.ChunkedArray) -> pa.ChunkedArray:
    """True where a text value is present and is not a number."""
    return pc.and_(pc.is_valid(data), pc.invert(pc.match_substring_regex(data, NUMBER_PATTERN)))


def decide_categorical(sources: Sequence[Source], layout: Layout, forced: Sequence[str]) -> list[str]:
    """Text columns are categorical, unless some of their values are numbers: then the column is numeric
    with a typo in it, reported as such rather than silently one-hot encoding "12.5" as a category."""
    categorical = []
    for name in layout.features:
        if name in forced:
            categorical.append(name)
            continue
        columns = [s.table.column(name) for s in sources]
        if not any(_is_text(c.type) for c in columns):
            continue
        numeric_elsewhere = any(_is_number(c.type) and c.null_count < len(c) for c in columns)
        numbers_in_text = any(
            _is_text(c.type) and int(pc.sum(pc.match_substring_regex(c, NUMBER_PATTERN)).as_py() or 0) for c in columns
        )
        if not (numeric_elsewhere or numbers_in_text):
            categorical.append(name)
    return categorical


def _all_finite_numbers(data: pa.ChunkedArray) -> pa.ChunkedArray | None:
    """Text that is all finite numbers, as float64; None when any value is not (missing, a typo, nan, inf,
    spaces): then the checks find the first one and say what it is."""
    try:
        values = pc.cast(data, pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if values.null_count or not pc.all(pc.is_finite(values)).as_py():
        return None
    return values


def _numeric_column(source: Source, name: str) -> pa.ChunkedArray:
    data = source.table.column(name)
    where_column = source.column(name)
    if _is_text(data.type):
        fast = _all_finite_numbers(data)  # the common case, 10× faster than the checks below
        if fast is not None:
            return fast
        bad = _non_numbers(data)
        if pc.any(bad).as_py():
            row = int(pc.index(bad, True).as_py())
            raise UserError(
                f"{source.where(row)}, {where_column}: {data[row].as_py()!r} is not a number (other values"
                " in this column are numbers; list it in categorical_columns if it holds categories)"
            )
        data = pc.cast(pc.utf8_trim_whitespace(data), pa.float64())
    elif not _is_number(data.type):
        hint = (
            "; name it in time_column, or leave it out with feature_columns" if pa.types.is_temporal(data.type) else ""
        )
        raise UserError(f"{source.path}: {where_column} holds {data.type} values, expected numbers{hint}")
    if data.null_count:
        row = int(pc.index(pc.is_null(data), True).as_py())
        raise UserError(f"{source.where(row)}: {where_column} is missing; every value must be a number")
    values = pc.cast(data, pa.float64())
    finite = pc.is_finite(values)
    if not pc.all(finite).as_py():
        row = int(pc.index(finite, False).as_py())
        raise UserError(f"{source.where(row)}, {where_column}: {values[row].as_py()} is not a finite number")
    return values


def checked_labels(source: Source, name: str) -> pa.ChunkedArray:
    data = source.table.column(name)
    if not (_is_number(data.type) or _is_text(data.type)):
        raise UserError(f"{source.path}: {source.label(name)} holds {data.type} values, expected numbers or text")
    if data.null_count:
        row = int(pc.index(pc.is_null(data), True).as_py())
        raise UserError(f"{source.where(row)}: {source.label(name)} is missing; every row needs a label")
    if pa.types.is_floating(data.type) and pc.any(pc.is_nan(data)).as_py():
        row = int(pc.index(pc.is_nan(data), True).as_py())
        raise UserError(f"{source.where(row)}: {source.label(name)} is NaN; every row needs a label")
    if _is_text(data.type) and pc.any(pc.match_substring_regex(data, NUMBER_PATTERN)).as_py():
        # Text labels that are mostly numbers hide a typo ("1x") that would silently become a class.
        row = int(pc.index(_non_numbers(data), True).as_py())
        raise UserError(
            f"{source.where(row)}: {source.label(name)} {data[row].as_py()!r} is not a number, but other"
            " labels are; labels are either all numbers or all text"
        )
    return data


def label_array(parts: Sequence[pa.ChunkedArray]) -> np.ndarray:
    """Numbers as float64, text as str objects."""
    if any(_is_text(part.type) for part in parts):
        return np.concatenate([as_text(part).to_numpy(zero_copy_only=False) for part in parts]).astype(object)
    return np.concatenate([pc.cast(part, pa.float64()).to_numpy() for part in parts])


def _time_array(parts: Sequence[pa.ChunkedArray]) -> np.ndarray:
    return np.concatenate([part.to_numpy() for part in parts])


def warn_unknown_categories(channel: str, name: str, count: int, example: str) -> None:
    log.warning(
        "channel %s: %d value(s) of column %r never occur in channel 'train' (e.g. %r); they are encoded as all zeros",
        channel,
        count,
        name,
        example,
    )


def encode(
    channel: str, table: pa.Table, categorical: list[str], encoder: FeatureEncoder | None
) -> tuple[np.ndarray, FeatureEncoder]:
    """The feature columns as the network's input: with a new encoder (train) or the train channel's."""
    try:
        if encoder is None:
            encoder = FeatureEncoder.fit(table, categorical)
        else:
            for name, (count, example) in encoder.unknown_categories(table).items():
                warn_unknown_categories(channel, name, count, example)
        features = encoder.transform(table)
    except FeatureError as error:
        raise UserError(f"channel {channel!r}: {error}") from None
    if encoder.categorical:
        log.info("channel %s: one-hot encoded %s", channel, ", ".join(encoder.categorical))
    return features, encoder


def forced_categorical(first: Source, options: DataOptions) -> list[str]:
    return [_resolve(ref, "categorical_columns entry", first) for ref in options.categorical_columns]


def mixed_labels(text: Path, numeric: Path) -> str:
    return f"{text} has text labels but {numeric} has numbers; labels are either all numbers or all text"


def check_source(
    source: Source, layout: Layout, categorical: Sequence[str]
) -> tuple[pa.Table, pa.ChunkedArray, pa.ChunkedArray | None]:
    """One table's checked feature columns (numeric as float64, categorical as text, in the layout's
    order), labels and time values: the per-file checks of `assemble`, shared with the block reader."""
    columns = [
        as_text(source.table.column(name)) if name in categorical else _numeric_column(source, name)
        for name in layout.features
    ]
    features = pa.table(columns, names=list(layout.features))
    labels = checked_labels(source, layout.label)
    return features, labels, source.table.column(layout.time) if layout.time else None


def assemble(channel: str, sources: Sequence[Source], options: DataOptions, encoder: FeatureEncoder | None) -> Dataset:
    first = sources[0]
    layout = resolve_layout(first, options, encoder)
    for source in sources:
        check_columns(
            source,
            first,
            layout,
            from_training=encoder is not None,
            every_column=encoder is None and options.feature_columns is None,
        )
    check_not_all_missing(channel, sources, layout)
    if encoder is not None:
        categorical = list(encoder.categorical)
    else:
        categorical = decide_categorical(sources, layout, forced_categorical(first, options))

    checked = [check_source(source, layout, categorical) for source in sources]
    label_parts = [labels for _, labels, _ in checked]
    text_labels = [s for s, part in zip(sources, label_parts, strict=True) if _is_text(part.type)]
    if text_labels and len(text_labels) < len(sources):
        numeric = next(s for s in sources if s not in text_labels)
        raise UserError(mixed_labels(text_labels[0].path, numeric.path))
    feature_parts = [features for features, _, _ in checked]
    time_parts = [time for _, _, time in checked if time is not None]
    table = pa.concat_tables(feature_parts, promote_options="permissive")
    features, encoder = encode(channel, table, categorical, encoder)
    return Dataset(
        features=features,
        labels=label_array(label_parts),
        files=tuple(source.path for source in sources),
        feature_names=encoder.output_names if first.named else None,
        time_values=_time_array(time_parts) if layout.time else None,
        encoder=encoder,
        label_name=layout.label,
    )
