"""Channels → arrays, for every format SageMaker delivers to a training channel.

Every file in the channel directory is read (recursively, sorted; names starting with "." or "_" are
skipped, as pyarrow and Hadoop do — Spark's `_SUCCESS` markers), gzip-compressed or not. The format is
the channel's ContentType, else each file's extension, else its first bytes; one channel holds one format.
Tabular formats (CSV with or without a header, Parquet, flat JSON lines) go through optml.train.tabular, array
formats (.npz, JSON lines `{"features": [...]}`) through optml.train.arrays.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

import pyarrow as pa

from optml.container.errors import UserError
from optml.container.features import FeatureEncoder
from optml.train import formats
from optml.train.arrays import FEATURES_FIELD, ArrayPart, assemble_arrays, list_column_to_array
from optml.train.dataset import MIN_ROWS, DataOptions, Dataset
from optml.train.tabular import DEFAULT_LABEL, Source, assemble, checked_labels, label_array

__all__ = ["DataOptions", "Dataset", "channel_files", "load_channel"]

log = logging.getLogger(__name__)


def channel_files(directory: Path) -> list[Path]:
    return sorted(
        path
        for path in directory.rglob("*")
        if path.is_file() and not any(part.startswith((".", "_")) for part in path.relative_to(directory).parts)
    )


def channel_format(channel: str, files: list[Path], content_type: str | None) -> str:
    if content_type:
        return formats.format_for_content_type(content_type)
    by_format: dict[str, list[Path]] = {}
    for path in files:
        by_format.setdefault(formats.sniff_format(path), []).append(path)
    if len(by_format) > 1:
        found = "; ".join(
            f"{formats.FORMAT_NAMES[fmt]}: {paths[0].name}" + (f" and {len(paths) - 1} more" if len(paths) > 1 else "")
            for fmt, paths in sorted(by_format.items())
        )
        raise UserError(f"channel {channel!r} mixes formats ({found}); put one format in a channel")
    return next(iter(by_format))


def csv_header(first_sample: list[list[str]], options: DataOptions) -> tuple[bool, list[str]]:
    """Whether the channel's CSV files have a header row (the first file's first rows decide), and the
    columns forced to text: categorical columns are read as text, so "02139" keeps its leading zero."""
    header = options.header
    if header is None:
        # A column named in the options implies a header, unless the first row holds numbers: then the
        # name cannot be found and the message says the file has no header row.
        header = formats.looks_like_header(first_sample) or bool(
            options.names_columns and first_sample and formats.all_text(first_sample[0])
        )
    width = len(first_sample[0]) if first_sample else 0
    names = first_sample[0] if header and first_sample else [f"column {i + 1}" for i in range(width)]
    if header and names and not names[0].strip():
        names = names[1:]  # pandas' unnamed index column, which read_csv drops
    text_columns = [
        ref if isinstance(ref, str) else names[ref]
        for ref in options.categorical_columns
        if isinstance(ref, str) or 0 <= ref < len(names)
    ]
    return header, text_columns


def _csv_sources(files: list[Path], options: DataOptions) -> list[Source]:
    header, text_columns = csv_header(formats.csv_sample(files[0]), options)
    sources = []
    for path in files:
        table = formats.read_csv(path, header, text_columns)
        sources.append(Source(path, table, named=header, header=header))
    if header:
        log.info("CSV files have a header row: %s", ", ".join(sources[0].table.column_names))
    return sources


def records_label(options: DataOptions) -> str:
    """The label field of {"features": [...], "label": ...} records."""
    return options.label_column if isinstance(options.label_column, str) else DEFAULT_LABEL


def record_labels(source: Source, first: Path, label: str) -> pa.ChunkedArray:
    """The checked labels of a file (or block) of feature records; `first` is the channel's first file."""
    if not is_feature_records(source.table):
        raise UserError(
            f"{source.path} holds flat records but {first} holds"
            f' {{"features": [...], "{label}": ...}} records; a channel holds one kind'
        )
    if label not in source.table.column_names:
        raise UserError(
            f'{source.path} has no field {label!r}; records need {{"features": [...], "{label}": ...}}'
            f" (fields: {', '.join(source.table.column_names)})"
        )
    return checked_labels(source, label)


def _json_parts(sources: list[Source], options: DataOptions) -> list[ArrayPart]:
    label = records_label(options)
    parts = []
    for source in sources:
        y = label_array([record_labels(source, sources[0].path, label)])
        x = list_column_to_array(source.path, source.table.column(FEATURES_FIELD))
        parts.append(ArrayPart(source.path, x, y, x_name=repr(FEATURES_FIELD), y_name=repr(label)))
    return parts


NPY_NAME = re.compile(r"(?P<prefix>.*?[_.-])?(?P<role>[xy])", re.IGNORECASE)


def npy_parts(files: list[Path], options: DataOptions) -> list[ArrayPart]:
    """.npy files pair up by name: x.npy with y.npy, or <prefix>_x.npy with <prefix>_y.npy."""
    if options.time_column:
        raise UserError("time_column needs .npz files (arrays x, y and the time array) or tabular data")
    pairs: dict[tuple[Path, str], dict[str, Path]] = {}
    for path in files:
        stem = path.name.split(".npy")[0]
        match = NPY_NAME.fullmatch(stem)
        if match is None:
            raise UserError(
                f"{path}: .npy files come in pairs named x.npy and y.npy (or <prefix>_x.npy and <prefix>_y.npy)"
            )
        pairs.setdefault((path.parent, match["prefix"] or ""), {})[match["role"].lower()] = path
    parts = []
    for (_, prefix), pair in sorted(pairs.items()):
        if len(pair) < 2:
            path = next(iter(pair.values()))
            other = "y" if "x" in pair else "x"
            raise UserError(f"{path} has no matching {prefix}{other}.npy; .npy files come in x/y pairs")
        parts.append(ArrayPart(pair["x"], formats.read_npy(pair["x"]), formats.read_npy(pair["y"]), y_name="y.npy"))
    return parts


def is_feature_records(table: pa.Table) -> bool:
    if FEATURES_FIELD not in table.column_names:
        return False
    data_type = table.schema.field(FEATURES_FIELD).type
    return bool(pa.types.is_list(data_type) or pa.types.is_large_list(data_type))


def _load(channel: str, files: list[Path], fmt: str, options: DataOptions, encoder: FeatureEncoder | None) -> Dataset:
    if fmt == formats.NPZ:
        time_name = [options.time_column] if options.time_column else []
        parts = []
        for path in files:
            arrays = formats.read_npz(path, ["x", "y", *time_name])
            parts.append(ArrayPart(path, arrays["x"], arrays["y"], arrays.get(options.time_column or "")))
        return assemble_arrays(channel, parts, options, encoder)
    if fmt == formats.NPY:
        return assemble_arrays(channel, npy_parts(files, options), options, encoder)
    if fmt == formats.CSV:
        sources = _csv_sources(files, options)
    else:
        read = formats.read_parquet if fmt == formats.PARQUET else formats.read_jsonlines
        sources = [Source(path, read(path), named=True) for path in files]
        if fmt == formats.JSONLINES and is_feature_records(sources[0].table):
            return assemble_arrays(channel, _json_parts(sources, options), options, encoder)
    return assemble(channel, sources, options, encoder)


def present_files(channel: str, directory: Path) -> list[Path]:
    """The channel's files, less empty ones (unless all are empty); UserError when there are none."""
    if not directory.is_dir():
        raise UserError(
            f"channel {channel!r} not found: expected data files (CSV, Parquet, JSON lines or .npz) in {directory}"
        )
    files = channel_files(directory)
    if not files:
        raise UserError(f"channel {channel!r} is empty: no files in {directory}")
    empty = [path for path in files if path.stat().st_size == 0]
    if empty and len(empty) < len(files):
        # Spark and Hive write empty part files for empty partitions: nothing to read, nothing wrong.
        log.warning("channel %s: skipping %d empty file(s), e.g. %s", channel, len(empty), empty[0])
        files = [path for path in files if path not in empty]
    return files


def load_channel(channel: str, directory: Path, options: DataOptions, encoder: FeatureEncoder | None = None) -> Dataset:
    """Load every file of a channel.

    `encoder` is None for the train channel (a new one is fitted on it) and the train channel's encoder
    for validation and test, which are encoded the same way. Categories never seen in training encode as
    all zeros (a warning says how many), as they will when serving.
    """
    files = present_files(channel, directory)
    started = time.perf_counter()
    fmt = channel_format(channel, files, options.content_type)
    dataset = _load(channel, files, fmt, options, encoder)
    if dataset.rows < MIN_ROWS:
        raise UserError(
            f"channel {channel!r} has {dataset.rows} row(s) in {len(files)} file(s); training and evaluation"
            f" need at least {MIN_ROWS} rows"
        )
    log.info(
        "channel %s: %d rows, features %s from %d %s file(s) in %.2fs",
        channel,
        dataset.rows,
        "×".join(str(n) for n in dataset.feature_shape),
        len(files),
        formats.FORMAT_NAMES[fmt],
        time.perf_counter() - started,
    )
    return dataset
