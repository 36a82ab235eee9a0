"""Channels → arrays. SageMaker's CSV convention: no header row, the label in the first column.

Every file in the channel directory (recursively, hidden files skipped, `.gz` decompressed) is read with
pyarrow's multithreaded CSV reader. Problems are reported with the file, row and column a user can
open and fix.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyarrow import csv

from container.errors import UserError

log = logging.getLogger(__name__)

CSV_HINT = "SageMaker CSV has no header row and the label in the first column"


@dataclass(frozen=True)
class Dataset:
    features: np.ndarray  # float32, (rows, features)
    labels: np.ndarray  # float64, (rows,)
    files: tuple[Path, ...]

    @property
    def rows(self) -> int:
        return int(self.features.shape[0])

    @property
    def feature_count(self) -> int:
        return int(self.features.shape[1])


def channel_files(directory: Path) -> list[Path]:
    return sorted(
        path
        for path in directory.rglob("*")
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(directory).parts)
    )


def _read_csv_table(path: Path) -> pa.Table:
    try:
        return csv.read_csv(
            path,
            read_options=csv.ReadOptions(autogenerate_column_names=True),
            convert_options=csv.ConvertOptions(strings_can_be_null=True),
        )
    except pa.ArrowInvalid as error:
        message = str(error)
        if "Empty CSV file" in message:
            raise UserError(f"{path} is empty; {CSV_HINT}") from None
        raise UserError(f"{path} is not a readable CSV file: {message.splitlines()[0]}") from None


def _first_non_numeric(column: pa.ChunkedArray) -> tuple[int, str]:
    for row, value in enumerate(column.to_pylist()):
        if value is None:
            continue
        try:
            float(value)
        except (TypeError, ValueError):
            return row, str(value)
    return -1, ""


def _table_to_arrays(path: Path, table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    if table.num_columns < 2:
        raise UserError(f"{path} has {table.num_columns} column; expected the label followed by features ({CSV_HINT})")
    columns = []
    for index, column in enumerate(table.columns):
        if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type) or pa.types.is_null(column.type)):
            row, value = _first_non_numeric(column)
            what = "label column (column 1)" if index == 0 else f"column {index + 1}"
            header_hint = " — is the first row a header?" if row == 0 else ""
            raise UserError(f"{path} row {row + 1}, {what}: {value!r} is not a number{header_hint} ({CSV_HINT})")
        if column.null_count:
            row = int(pc.index(pc.is_null(column), True).as_py())
            what = "the label (column 1)" if index == 0 else f"column {index + 1}"
            raise UserError(f"{path} row {row + 1}: {what} is missing; every value must be a number")
        columns.append(column.to_numpy().astype(np.float64, copy=False))
    matrix = np.column_stack(columns)
    labels = matrix[:, 0]
    if np.isnan(labels).any():
        row = int(np.flatnonzero(np.isnan(labels))[0])
        raise UserError(f"{path} row {row + 1}: the label (column 1) is NaN; every row needs a label")
    features = matrix[:, 1:]
    if not np.isfinite(features).all():
        row, col = (int(i) for i in np.argwhere(~np.isfinite(features))[0])
        raise UserError(f"{path} row {row + 1}, column {col + 2}: {features[row, col]} is not a finite number")
    return features.astype(np.float32), labels


def load_csv_channel(channel: str, directory: Path) -> Dataset:
    if not directory.is_dir():
        raise UserError(f"channel {channel!r} not found: expected CSV files in {directory}")
    files = channel_files(directory)
    if not files:
        raise UserError(f"channel {channel!r} is empty: no files in {directory}")
    started = time.perf_counter()
    features_parts: list[np.ndarray] = []
    label_parts: list[np.ndarray] = []
    for path in files:
        features, labels = _table_to_arrays(path, _read_csv_table(path))
        if features_parts and features.shape[1] != features_parts[0].shape[1]:
            raise UserError(
                f"{path} has {features.shape[1]} features but {files[0]} has {features_parts[0].shape[1]};"
                f" every file in channel {channel!r} needs the same columns"
            )
        features_parts.append(features)
        label_parts.append(labels)
    dataset = Dataset(np.concatenate(features_parts), np.concatenate(label_parts), tuple(files))
    log.info(
        "channel %s: %d rows, %d features from %d file(s) in %.2fs",
        channel,
        dataset.rows,
        dataset.feature_count,
        len(files),
        time.perf_counter() - started,
    )
    return dataset
