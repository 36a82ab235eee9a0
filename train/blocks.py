"""A channel as a sequence of blocks, for training on data bigger than memory (data_loading=stream).

A block is a bounded piece of one file:

- CSV (gzip or not): a block of `block_bytes` from pyarrow's streaming reader. pyarrow's streaming reader
  fixes column types from its first block, so the reader passes explicit types, decided on the first
  block of the first file: float64 for numeric features, text for categorical columns and text labels.
  Every block of every file then converts the same way. A value that does not convert ("12x" in a
  numeric column) fails pyarrow's block; the reader then re-reads that one file with every column as
  text (the slow path, only on error) and runs the ordinary checks, whose message names the file, the row
  counted from the file's start (and the line), the column and the value, as `load_channel`'s does.
- Parquet: one block per row group, reading only the columns the layout uses; random access. A gzip'd
  Parquet file is decompressed into memory whole (Parquet needs random access): keep such files small.
- JSON lines, flat records or `{"features": [...], "label": ...}`: a block of `block_bytes` from pyarrow's
  streaming JSON reader, with an explicit schema from the first block (numbers as float64); sequential.
- .npy x/y pairs: memory-mapped; a block is a slice of `block_rows` rows (a view, no copy for float32
  data); random access. .npz: a whole file is one block, since a zip member cannot be streamed; keep
  .npz files small or use .npy pairs.

Opening a reader reads only the first block of the first file: it resolves the CSV header, the layout
(label, features, time) and which text columns are categorical. The first block decides (documented):
a column whose first block holds only text is categorical; one that holds numbers is numeric, and a
later non-number in it is reported as a typo. Validation and test readers get the train channel's
encoder, whose columns and categorical list are used instead, as `load_channel` does.

Each block is checked by the same code `load_channel` runs on a whole file (tabular.check_source,
arrays.check_part), so messages are the same and count rows from the start of the *file*. The one check
that spans files, "labels are either all numbers or all text", compares each block's labels with the
first block's. A column that is empty in every row of the channel cannot be told apart per block: a
numeric column fails at its first missing value instead.

Pipe mode (`ChannelReader.from_pipe`): the channel is a FIFO per pass, read once (optml.train.pipe); CSV
and JSON lines only. SageMaker concatenates the channel's objects, so a CSV header may appear only once,
at the start of the stream: a repeated header line further on is read as a data row (and reported as a
bad value). Pipe mode reads CSV columns as text and converts them in the checks, since a FIFO cannot be
re-read to find a bad value.
"""

from __future__ import annotations

import gzip
import io
import logging
import zlib
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyarrow import csv, json

from optml.container.errors import UserError
from optml.container.features import FeatureEncoder, FeatureError, category_text
from optml.train import formats, pipe
from optml.train.arrays import FEATURES_FIELD, ArrayPart, check_part, list_column_to_array
from optml.train.arrays import _tabular_encoder as tabular_encoder
from optml.train.data import (
    channel_format,
    csv_header,
    is_feature_records,
    npy_parts,
    present_files,
    record_labels,
    records_label,
)
from optml.train.dataset import IMAGE, DataOptions
from optml.train.tabular import (
    NUMBER_PATTERN,
    Layout,
    Source,
    check_columns,
    check_source,
    decide_categorical,
    forced_categorical,
    label_array,
    mixed_labels,
    resolve_layout,
    warn_unknown_categories,
)
from optml.train.tabular import _is_text as is_text

log = logging.getLogger(__name__)

BLOCK_BYTES = 4 << 20  # CSV / JSON lines bytes per block: rows held per block (x4 while prepared, x2 read ahead)
BLOCK_ROWS = 65_536  # .npy rows per block
PARQUET_OPEN_FILES = 4  # Parquet files kept open (gzip'd ones decompressed in memory) for random access
TABULAR = "tabular"
ARRAYS = "arrays"
JSON_WHAT = "JSON lines (one JSON object per line)"


@dataclass(frozen=True)
class BlockRef:
    """Where a block is: file index into ChannelReader.files, block index within that file, its rows and
    the rows of the file before it."""

    file: int
    block: int
    rows: int
    row_offset: int


@dataclass(frozen=True)
class CheckedBlock:
    """One block after the checks, before encoding.

    Tabular data: `table` holds the feature columns (numeric columns as float64 without nulls, categorical
    columns as text) in the layout's order; `arrays` is None. Array data (.npy, .npz, JSON lines
    {"features": [...]}): `arrays` holds the float32 features (N, ...) and `table` is None.
    `labels`: (N,) float64 or object (str), as Dataset.labels. `time`: the time column's values, if any.
    """

    ref: BlockRef
    path: Path
    labels: np.ndarray
    table: pa.Table | None = None
    arrays: np.ndarray | None = None
    time: np.ndarray | None = None

    @property
    def rows(self) -> int:
        return len(self.labels)


# A block as read, before the checks: a table (tabular data, JSON feature records) or arrays.
Raw = Source | ArrayPart


class ChannelReader:
    """One channel's files (or, in Pipe mode, its FIFOs) read block by block.

    Opening reads only the first block of the first file: it resolves the format, the CSV header, the
    layout (label, features, time) and which columns are categorical — the first block decides that
    (documented), as a whole channel does today. `layout`, `named` and `categorical` give what
    Dataset.feature_names needs (`feature_names(encoder)`); `label_name` as Dataset has it.
    """

    channel: str
    files: tuple[Path, ...]
    random_access: bool  # True when read_block(file, block) does not re-read the file from its start
    _parts: list[ArrayPart]  # .npy: the x/y pairs, memory-mapped
    _npy_files: list[Path]  # .npy: every file of the channel, x and y

    def __init__(
        self,
        channel: str,
        directory: Path,
        options: DataOptions,
        encoder: FeatureEncoder | None = None,
        block_bytes: int = BLOCK_BYTES,
        block_rows: int = BLOCK_ROWS,
    ):
        files = present_files(channel, directory)
        fmt = channel_format(channel, files, options.content_type)
        self._setup(channel, tuple(files), fmt, options, encoder, block_bytes, block_rows)
        if fmt == formats.NPY:
            self._npy_files = files
            self.files = tuple(part.path for part in self._npy_parts())
        for file in range(len(self.files)):  # the first file with a block (a header-only CSV file has none)
            first = next(self._raw(file, 0, first=file == 0), None)
            if first is not None:
                self._resolve(first[1])
                return
        raise UserError(f"channel {channel!r} has 0 rows in {len(self.files)} file(s)")

    def _setup(
        self,
        channel: str,
        files: tuple[Path, ...],
        fmt: str,
        options: DataOptions,
        encoder: FeatureEncoder | None,
        block_bytes: int,
        block_rows: int,
    ) -> None:
        self.channel, self.files, self.format, self.options, self.encoder = channel, files, fmt, options, encoder
        self.block_bytes, self.block_rows = block_bytes, block_rows
        self.random_access = fmt in (formats.PARQUET, formats.NPY, formats.NPZ)
        self.kind = ARRAYS if fmt in (formats.NPY, formats.NPZ) else TABULAR
        self.layout: Layout | None = None
        self.named = fmt != formats.CSV
        self.header = False
        self.categorical: tuple[str, ...] = ()
        self.label_name: str | None = None
        self.feature_shape_hint: tuple[int, ...] | None = None  # per-row shape of array data, as encoded
        self.unknown_categories: dict[str, tuple[int, str]] = {}  # per column: count, first example
        self.pipe_dir: Path | None = None
        self.pipe_timeout_s = 0.0
        self._text_columns: list[str] = []
        self._types: dict[str, pa.DataType] = {}  # CSV: every column's type, decided on the first block
        self._json_schema: pa.Schema | None = None
        self._columns: list[str] | None = None  # Parquet: the columns read
        self._first: Source | None = None  # the first block's columns (no rows), for check_columns
        self._first_part: tuple[Path, tuple[int, ...]] | None = None
        self._text_labels = False
        self._parts = []
        self._npy_files = []
        self._parquet: OrderedDict[int, pq.ParquetFile] = OrderedDict()  # the files opened last
        self._cursor: tuple[int, int, Iterator[tuple[BlockRef, Raw]]] | None = None
        self._pending: Iterator[tuple[BlockRef, Raw]] | None = None  # Pipe mode: pass 0, opened
        self._counted: set[BlockRef] = set()
        self._fifo: pipe.FifoStream | None = None
        self._time_type: pa.DataType | None = None  # Pipe mode's CSV: the time column's, from the first block
        self._empty_first: list[str] = []  # numeric features with no value in the first block

    # --- opening ----------------------------------------------------------------------------------------

    def _resolve(self, first: Raw) -> None:
        if isinstance(first, ArrayPart):
            self._resolve_arrays(first)
        elif self.format == formats.JSONLINES and is_feature_records(first.table):
            self.kind = ARRAYS
            self._json_schema = _float_schema(first.table.schema, first.table.schema.names, self.options.time_column)
            labels = self._record_labels(first)
            self._text_labels = is_text(labels.type)
            x = list_column_to_array(first.path, first.table.column(FEATURES_FIELD))
            self._resolve_arrays(ArrayPart(first.path, x, label_array([labels])))
        else:
            self._resolve_tabular(first)

    def _resolve_tabular(self, first: Source) -> None:
        if self.pipe_dir is not None and self.format == formats.CSV:
            if self.options.time_column in first.table.column_names:
                self._time_type = _time_type(first.table.column(self.options.time_column))
            first = replace(first, table=_inferred(first.table, self._text_columns))
        layout = resolve_layout(first, self.options, self.encoder)
        self.layout, self.label_name, self.named = layout, layout.label, first.named
        self._first = replace(first, table=first.table.schema.empty_table())
        self._check_columns(first)  # later blocks (Parquet: files) are checked as they are read
        if self.encoder is not None:
            categorical = list(self.encoder.categorical)
        else:
            categorical = decide_categorical([first], layout, forced_categorical(first, self.options))
        self.categorical = tuple(categorical)
        self._empty_first = [
            name
            for name in layout.features
            if name not in categorical and first.table.column(name).null_count == first.table.num_rows
        ]
        self._text_labels = is_text(first.table.column(layout.label).type)
        if self.format == formats.CSV:
            self._types = self._csv_types(first.table.schema, layout)
            if self.header:
                log.info("CSV files have a header row: %s", ", ".join(first.table.column_names))
        elif self.format == formats.PARQUET:
            self._columns = [layout.label, *layout.features, *([layout.time] if layout.time else [])]
        else:
            numeric = [name for name in layout.features if name not in categorical]
            self._json_schema = _float_schema(first.table.schema, numeric, layout.time)

    def _csv_types(self, schema: pa.Schema, layout: Layout) -> dict[str, pa.DataType]:
        types: dict[str, pa.DataType] = {name: pa.string() for name in schema.names}
        for name in layout.features:
            types[name] = pa.string() if name in self.categorical else pa.float64()
        for name in layout.features:
            if pa.types.is_boolean(schema.field(name).type):
                types[name] = pa.bool_()  # true/false: numbers to load_channel too
        label_type = schema.field(layout.label).type
        if pa.types.is_boolean(label_type):
            types[layout.label] = pa.bool_()
        elif not is_text(label_type):
            types[layout.label] = pa.float64()
        if layout.time:
            time_type = schema.field(layout.time).type
            types[layout.time] = pa.string() if pa.types.is_null(time_type) else time_type
        return types

    def _resolve_arrays(self, first: ArrayPart) -> None:
        x, y = check_part(self.channel, first)
        self._first_part = (first.path, x.shape[1:])
        self._text_labels = y.dtype == object
        shape = x.shape[1:]
        if len(shape) == 2 and self.options.array_layout == IMAGE:
            shape = (1, *shape)
        if len(shape) == 1:
            tabular_encoder(self.channel, shape[0], self.encoder)
        elif self.encoder is not None:
            raise UserError(
                f"channel {self.channel!r} holds rows of shape {shape}, but channel 'train' holds"
                f" tabular rows of {len(self.encoder.columns)} columns; every channel needs the same kind of data"
            )
        self.feature_shape_hint = tuple(int(n) for n in shape)

    def __getstate__(self) -> dict[str, Any]:
        """Picklable (DataLoader workers started by spawn): open files, memory maps and readers are left
        behind and reopened on use. A Pipe mode reader's open FIFO cannot travel: pickle it before a pass."""
        state = self.__dict__.copy()
        state.update(_parquet=OrderedDict(), _cursor=None, _fifo=None, _pending=None, _parts=[])
        return state

    def feature_names(self, encoder: FeatureEncoder) -> tuple[str, ...] | None:
        """Dataset.feature_names for data encoded with `encoder`: None without column names."""
        return encoder.output_names if self.kind == TABULAR and self.named else None

    # --- blocks -----------------------------------------------------------------------------------------

    def blocks(self, file: int, start_block: int = 0) -> Iterator[CheckedBlock]:
        """Every block of file `file` from `start_block`, in order (sequential formats skip the earlier
        blocks by reading them)."""
        for ref, raw in self._raw(file, start_block):
            yield self._check(ref, raw)

    def read_block(self, ref: BlockRef) -> CheckedBlock:
        """One block. Sequential formats keep the file open after the block read, so reading a file's
        blocks in order reads it once; any other order re-reads the file from its start."""
        if self.random_access:
            found = next(self._raw(ref.file, ref.block), None)
        else:
            cursor, self._cursor = self._cursor, None  # dropped if the read fails
            if cursor is None or cursor[:2] != (ref.file, ref.block):
                cursor = (ref.file, ref.block, self._raw(ref.file, ref.block))
            found = next(cursor[2], None)
            self._cursor = (ref.file, ref.block + 1, cursor[2])
        if found is None:
            raise IndexError(f"{self.files[ref.file]} has no block {ref.block}")
        return self._check(*found)

    def _raw(self, file: int, start: int, first: bool = False) -> Iterator[tuple[BlockRef, Raw]]:
        if self.format == formats.CSV:
            return self._csv_raw(file, start, strings=False, first=first)
        if self.format == formats.JSONLINES:
            path = self.files[file]
            return self._stream_raw(file, path, self._open_json(path, formats.input_stream(path)), start)
        if self.format == formats.PARQUET:
            return self._parquet_raw(file, start, first)
        if self.format == formats.NPY:
            return self._npy_raw(file, start)
        return self._npz_raw(file, start)

    def _stream_raw(
        self, file: int, path: Path, reader: Any, start: int, pending: pa.RecordBatch | None = None
    ) -> Iterator[tuple[BlockRef, Raw]]:
        """The blocks of a CSV or JSON lines stream; `pending`: its first batch, already read."""
        offset = index = 0
        while True:
            if pending is not None:
                batch, pending = pending, None
            else:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    return
                except (pa.ArrowException, OSError) as error:
                    self._failed(file, path, error)
            source = self._source(batch, path, offset)
            if index >= start:
                yield BlockRef(file, index, batch.num_rows, offset), source
            offset += batch.num_rows
            index += 1

    def _source(self, batch: pa.RecordBatch, path: Path, offset: int) -> Source:
        table = pa.Table.from_batches([batch])
        if self.format == formats.CSV and not self.header:
            table = table.rename_columns([f"column {i + 1}" for i in range(table.num_columns)])
        elif self.format == formats.CSV and table.column_names and table.column_names[0] == "":
            table = table.remove_column(0)  # pandas' index column
        return Source(path, table, named=self.named, header=self.header, row_offset=offset)

    def _failed(self, file: int, path: Path, error: Exception) -> NoReturn:
        """A block pyarrow could not read. For a CSV file, re-read it as text to find the value."""
        if isinstance(error, UserError):
            raise error
        if self._fifo is not None and self._fifo.error is not None:
            raise self._fifo.error  # a stalled FIFO, wrapped by pyarrow on its way here
        what = "CSV" if self.format == formats.CSV else JSON_WHAT
        if self.pipe_dir is not None:
            lines = str(error).strip().splitlines() or [type(error).__name__]
            raise UserError(
                f"channel {self.channel!r}: Pipe mode {path} is not readable {what}: {lines[0]} (a FIFO cannot be"
                " re-read to find the row: File mode names it)"
            )
        if self.format == formats.CSV and self._types:
            for ref, raw in self._csv_raw(file, 0, strings=True):
                self._check(ref, raw)
        raise formats.unreadable(path, what, error)

    # --- CSV ----------------------------------------------------------------------------------------------

    def _csv_raw(self, file: int, start: int, strings: bool, first: bool = False) -> Iterator[tuple[BlockRef, Raw]]:
        path = self.files[file]
        if first:
            self.header, self._text_columns = csv_header(formats.csv_sample(path), self.options)
            self.named = self.header
        try:
            reader = self._open_csv(formats.input_stream(path), strings)
        except (pa.ArrowException, OSError) as error:
            if strings or not self._types:
                raise formats.unreadable(path, "CSV", error) from None
            self._failed(file, path, error)
        self._check_names(path, reader.schema.names)
        return self._stream_raw(file, path, reader, start)

    def _open_csv(self, stream: Any, strings: bool) -> csv.CSVStreamingReader:
        if not self._types:  # the first block: pyarrow infers all but the forced text columns
            types = {self._reader_name(name): pa.string() for name in self._text_columns}
        else:
            types = {
                self._reader_name(name): pa.string() if strings and not pa.types.is_boolean(kind) else kind
                for name, kind in self._types.items()
            }
        return csv.open_csv(
            stream,
            read_options=csv.ReadOptions(block_size=self.block_bytes, autogenerate_column_names=not self.header),
            convert_options=csv.ConvertOptions(strings_can_be_null=True, column_types=types),
        )

    def _reader_name(self, name: str) -> str:
        """pyarrow names a headerless file's columns f0, f1, …; the reader renames them "column 1", …"""
        if self.header or not name.startswith("column "):
            return name
        return f"f{int(name.removeprefix('column ')) - 1}"

    def _check_names(self, path: Path, names: list[str]) -> None:
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if self.header and duplicates:
            raise UserError(f"{path}: the header names column(s) {duplicates} more than once")

    # --- JSON lines, Parquet, .npy, .npz --------------------------------------------------------------------

    def _open_json(self, path: Path, stream: Any) -> Any:
        try:
            return json.open_json(
                stream,
                read_options=json.ReadOptions(block_size=self.block_bytes),
                parse_options=json.ParseOptions(explicit_schema=self._json_schema, unexpected_field_behavior="infer"),
            )
        except (pa.ArrowException, OSError) as error:
            if self.pipe_dir is not None:
                self._failed(0, path, error)
            raise formats.unreadable(path, JSON_WHAT, error) from None

    def _parquet_file(self, file: int) -> pq.ParquetFile:
        """File `file`, opened (its footer read; gzip'd: decompressed) once while it is among the
        PARQUET_OPEN_FILES used last, so reading blocks in shuffled order does not reopen it per block."""
        if file in self._parquet:
            self._parquet.move_to_end(file)
        else:
            path = self.files[file]
            try:
                if formats.is_gzip(path):  # Parquet needs random access: decompress into memory first
                    with gzip.open(path, "rb") as handle:
                        opened = pq.ParquetFile(pa.BufferReader(handle.read()))
                else:
                    opened = pq.ParquetFile(str(path), memory_map=True)
            except (pa.ArrowException, OSError, EOFError, zlib.error) as error:
                raise formats.unreadable(path, "Parquet", error) from None
            if self._first is not None:  # every column is checked once per file, from its schema
                columns = Source(path, opened.schema_arrow.empty_table(), named=True)
                self._check_columns(columns)
            self._parquet[file] = opened
            while len(self._parquet) > PARQUET_OPEN_FILES:
                self._parquet.popitem(last=False)
        return self._parquet[file]

    def _parquet_raw(self, file: int, start: int, first: bool) -> Iterator[tuple[BlockRef, Raw]]:
        opened = self._parquet_file(file)
        path = self.files[file]
        metadata = opened.metadata
        offset = sum(metadata.row_group(i).num_rows for i in range(min(start, metadata.num_row_groups)))
        if first and metadata.num_row_groups == 0:
            yield BlockRef(file, 0, 0, 0), Source(path, opened.schema_arrow.empty_table(), named=True)
        for index in range(start, metadata.num_row_groups):
            try:
                table = opened.read_row_group(index, columns=self._columns)
            except (pa.ArrowException, OSError) as error:
                raise formats.unreadable(path, "Parquet", error) from None
            yield (
                BlockRef(file, index, table.num_rows, offset),
                Source(path, formats.decode_dictionaries(table), named=True, row_offset=offset),
            )
            offset += table.num_rows

    def _npy_raw(self, file: int, start: int) -> Iterator[tuple[BlockRef, Raw]]:
        part = self._npy_parts()[file]
        if part.x.ndim and part.y.ndim and len(part.x) != len(part.y):
            raise UserError(
                f"{part.path}: {part.x_name} has {len(part.x)} rows but {part.y_name} has {len(part.y)} labels"
            )
        for index, begin in enumerate(range(0, len(part.x), self.block_rows)):
            if index < start:
                continue
            end = min(begin + self.block_rows, len(part.x))
            block = replace(part, x=part.x[begin:end], y=part.y[begin:end], row_offset=begin)
            yield BlockRef(file, index, end - begin, begin), block

    def _npy_parts(self) -> list[ArrayPart]:
        if not self._parts:  # opened on first use, and again after unpickling
            self._parts = npy_parts(self._npy_files, self.options)
        return self._parts

    def _npz_raw(self, file: int, start: int) -> Iterator[tuple[BlockRef, Raw]]:
        if start > 0:
            return
        path = self.files[file]
        time_name = [self.options.time_column] if self.options.time_column else []
        arrays = formats.read_npz(path, ["x", "y", *time_name])
        part = ArrayPart(path, arrays["x"], arrays["y"], arrays.get(self.options.time_column or ""))
        yield BlockRef(file, 0, len(part.x), 0), part

    # --- checks -------------------------------------------------------------------------------------------

    def _check(self, ref: BlockRef, raw: Raw) -> CheckedBlock:
        if isinstance(raw, ArrayPart):
            return self._check_arrays(ref, raw)
        if self.kind == ARRAYS:
            return self._check_records(ref, raw)
        assert self.layout is not None
        if self.format != formats.PARQUET:  # Parquet's columns are checked once per file
            self._check_columns(raw)
        source = self._label_kind(raw)
        self._check_empty_first(source)
        features, labels, time = check_source(source, self.layout, self.categorical)
        if time is not None and self._time_type is not None and is_text(time.type):
            time = self._time(source, time)
        return CheckedBlock(
            ref,
            source.path,
            label_array([labels]),
            table=features,
            time=time.to_numpy() if time is not None else None,
        )

    def _time(self, source: Source, time: pa.ChunkedArray) -> pa.ChunkedArray:
        """Pipe mode's CSV time column, read as text, as the type the first block's values have."""
        try:
            return pc.cast(pc.utf8_trim_whitespace(time), self._time_type)
        except pa.ArrowInvalid:
            raise UserError(
                f"{source.path}: the time column {self.options.time_column!r} holds values that are not"
                f" {self._time_type} as in the first rows of the stream"
            ) from None

    def _check_empty_first(self, source: Source) -> None:
        """A missing value in a column the first block held no value of: say how its type was decided."""
        assert self._first is not None
        for name in self._empty_first:
            data = source.table.column(name)
            if data.null_count:
                row = int(pc.index(pc.is_null(data), True).as_py())
                raise UserError(
                    f"{source.where(row)}: {source.column(name)} is missing; every value must be a number"
                    f" (it is empty in the first block of {self._first.path}, which decides each column's"
                    " type, so it is numeric; list it in categorical_columns if it holds categories)"
                )

    def _check_columns(self, source: Source) -> None:
        assert self._first is not None and self.layout is not None
        check_columns(
            source,
            self._first,
            self.layout,
            from_training=self.encoder is not None,
            every_column=self.encoder is None and self.options.feature_columns is None,
        )

    def _label_kind(self, source: Source) -> Source:
        """Labels are all numbers or all text: this block's against the first block's. Text that holds
        only numbers, where the first block's labels are numbers, becomes numbers (Pipe mode's CSV)."""
        assert self._first is not None and self.layout is not None
        name = self.layout.label
        data = source.table.column(name)
        if not is_text(data.type):
            if self._text_labels and data.null_count < len(data):
                raise UserError(mixed_labels(self._first.path, source.path))
            return source
        valid = len(data) - data.null_count
        numbers = int(pc.sum(pc.match_substring_regex(data, NUMBER_PATTERN)).as_py() or 0)
        if self._text_labels:
            if valid and numbers == valid:
                raise UserError(mixed_labels(self._first.path, source.path))
            return source
        if valid and not numbers:
            raise UserError(mixed_labels(source.path, self._first.path))
        if numbers < valid:
            return source  # checked_labels names the first value that is not a number
        index = source.table.column_names.index(name)
        values = pc.cast(pc.utf8_trim_whitespace(data), pa.float64())
        return replace(source, table=source.table.set_column(index, name, values))

    def _check_arrays(self, ref: BlockRef, part: ArrayPart) -> CheckedBlock:
        x, y = check_part(self.channel, part, self._first_part)
        if self._first_part is not None and (y.dtype == object) != self._text_labels:
            if not self._text_labels:
                raise UserError(mixed_labels(part.path, self._first_part[0]))
            y = y.astype(object)
        if y.dtype == object:
            y = np.asarray([category_text(v) for v in y.tolist()], dtype=object)
        return CheckedBlock(ref, part.path, y, arrays=x, time=part.time)

    def _records_label(self) -> str:
        return records_label(self.options)

    def _record_labels(self, source: Source) -> pa.ChunkedArray:
        return record_labels(source, self.files[0] if self.files else source.path, self._records_label())

    def _check_records(self, ref: BlockRef, source: Source) -> CheckedBlock:
        labels = self._record_labels(source)
        x = list_column_to_array(source.path, source.table.column(FEATURES_FIELD), row_offset=source.row_offset)
        part = ArrayPart(
            source.path,
            x,
            label_array([labels]),
            x_name=repr(FEATURES_FIELD),
            y_name=repr(self._records_label()),
            row_offset=source.row_offset,
        )
        return self._check_arrays(ref, part)

    # --- encoding -----------------------------------------------------------------------------------------

    def encode(self, block: CheckedBlock, encoder: FeatureEncoder | None = None) -> np.ndarray:
        """The block's features as the network's float32 input (before standardization), an array of the
        block's own. `encoder`: the train channel's (default: the one this reader was opened with); arrays
        need none."""
        encoder = encoder if encoder is not None else self.encoder
        if block.arrays is not None:
            features = block.arrays
            if features.ndim == 3 and self.options.array_layout == IMAGE:
                features = features[:, np.newaxis]
            if features.ndim == 2 and encoder is not None:
                tabular_encoder(self.channel, features.shape[1], encoder)
            # A view of a memory-mapped .npy file is copied (one block), so changing it in place (standardizing)
            # cannot change what the next epoch reads.
            return features if features.flags.owndata else features.copy()
        assert block.table is not None
        if encoder is None:
            raise ValueError("tabular blocks need the train channel's encoder (ChannelStatistics.encoder())")
        try:
            if block.ref not in self._counted:
                self._counted.add(block.ref)
                self._count_unknown(encoder.unknown_categories(block.table))
            return encoder.transform(block.table)
        except FeatureError as error:
            raise UserError(f"channel {self.channel!r}: {error}") from None

    def _count_unknown(self, found: dict[str, tuple[int, str]]) -> None:
        for name, (count, example) in found.items():
            before, first = self.unknown_categories.get(name, (0, example))
            self.unknown_categories[name] = (before + count, first)

    def log_unknown_categories(self) -> None:
        """One warning per column holding categories the train channel never had, over every block encoded."""
        for name, (count, example) in self.unknown_categories.items():
            warn_unknown_categories(self.channel, name, count, example)

    # --- Pipe mode ----------------------------------------------------------------------------------------

    @classmethod
    def from_pipe(
        cls,
        channel: str,
        data_dir: Path,
        options: DataOptions,
        timeout_s: float,
        encoder: FeatureEncoder | None = None,
        block_bytes: int = BLOCK_BYTES,
    ) -> ChannelReader:
        """A Pipe mode channel: FIFOs `<data_dir>/<channel>_<n>`, one per pass (CSV or JSON lines, gzip or
        not). Opening waits (at most `timeout_s`) for FIFO 0 and reads its first block; `pipe_blocks(0)`
        still yields it."""
        reader = cls.__new__(cls)
        reader._setup(channel, (), formats.CSV, options, encoder, block_bytes, BLOCK_ROWS)
        reader.pipe_dir, reader.pipe_timeout_s = data_dir, timeout_s
        if options.content_type:  # refused before waiting for any data
            reader._pipe_format(pipe.fifo_path(data_dir, channel, 0), b"")
        reader._pending = reader._open_pass(0, first=True)
        return reader

    def pipe_blocks(self, pass_index: int) -> Iterator[CheckedBlock]:
        """The blocks of FIFO `<channel>_<pass_index>`, in order (BlockRef file 0, rows counted from the
        stream's start). Each FIFO is read once."""
        if self.pipe_dir is None:
            raise ValueError(f"channel {self.channel!r} is not read in Pipe mode")
        if pass_index == 0 and self._pending is not None:
            raws, self._pending = self._pending, None
        else:
            raws = self._open_pass(pass_index)
        try:
            for ref, raw in raws:
                yield self._check(ref, raw)
        finally:  # closed now, even when the pass is left early (a stop): a FIFO left open looks like a reader
            if self._fifo is not None:
                self._fifo.close()
                self._fifo = None

    def _open_pass(self, pass_index: int, first: bool = False) -> Iterator[tuple[BlockRef, Raw]]:
        assert self.pipe_dir is not None
        path = pipe.fifo_path(self.pipe_dir, self.channel, pass_index)
        fifo = self._fifo = pipe.open_fifo(path, self.pipe_timeout_s, self.channel)
        head = fifo.peek(formats.SNIFF_BYTES)
        if not head:  # the writer closed the FIFO without writing: an empty pass
            if first:
                raise UserError(f"channel {self.channel!r}: Pipe mode FIFO {path} delivered no data")
            return iter(())
        gzipped = head.startswith(formats.GZIP_MAGIC)
        if gzipped:
            head = zlib.decompressobj(wbits=31).decompress(head, formats.SNIFF_BYTES)
        if first:
            self._pipe_first(path, head)
        # A read of a pipe returns what the pipe holds (64 kB): buffered, pyarrow's blocks are block_bytes long.
        stream: Any = pa.PythonFile(io.BufferedReader(fifo, buffer_size=1 << 20), mode="r")
        if gzipped:
            stream = pa.CompressedInputStream(stream, "gzip")
        try:
            csv_format = self.format == formats.CSV
            # Pass 0's CSV is read as text, converted by the checks, which name a bad value's row; later
            # passes, typed by pass 0's first block, are parsed as numbers directly (4x faster).
            opened = self._open_csv(stream, strings=first) if csv_format else self._open_json(path, stream)
            batch = opened.read_next_batch()
        except StopIteration:
            raise UserError(f"channel {self.channel!r}: Pipe mode {path} delivered no rows") from None
        except (pa.ArrowException, OSError) as error:
            self._failed(0, path, error)
        if first:
            self._resolve(self._source(batch, path, 0))
        return self._stream_raw(0, path, opened, 0, pending=batch)

    def _pipe_first(self, path: Path, head: bytes) -> None:
        """The format, and for CSV the header and every column read as text (converted by the checks)."""
        self.format = self._pipe_format(path, head)
        self.named = self.format != formats.CSV
        if self.format == formats.CSV:
            sample = formats.sample_rows(head)
            self.header, self._text_columns = csv_header(sample, self.options)
            self.named = self.header
            width = len(sample[0]) if sample else 0
            names = sample[0] if self.header and sample else [f"column {i + 1}" for i in range(width)]
            self._types = {name: pa.string() for name in names}
        else:  # pass 0 is read once: its types come from the first lines, as later passes' from the first block
            self._json_schema = _head_schema(head, self.options.time_column)

    def _pipe_format(self, path: Path, head: bytes) -> str:
        if self.options.content_type:
            fmt = formats.format_for_content_type(self.options.content_type)
        elif head.startswith(b"PAR1"):
            fmt = formats.PARQUET
        elif head.startswith(b"PK\x03\x04"):
            fmt = formats.NPZ
        elif head.startswith(b"\x93NUMPY"):
            fmt = formats.NPY
        else:
            fmt = formats.JSONLINES if head.lstrip().startswith(b"{") else formats.CSV
        if fmt not in (formats.CSV, formats.JSONLINES):
            raise UserError(
                f"channel {self.channel!r}: {formats.FORMAT_NAMES[fmt]} cannot be read in Pipe mode ({path}):"
                " it needs random access or whole files; use input mode File or FastFile for this channel"
            )
        return fmt


def _float_schema(schema: pa.Schema, numeric: list[str], time: str | None) -> pa.Schema:
    """The first JSON block's schema with integers (and empty `numeric` columns) as float64, so later
    blocks holding 1.5 where the first held 1 still convert. The time column keeps its type."""

    def floats(kind: pa.DataType) -> pa.DataType:
        if pa.types.is_integer(kind):
            return pa.float64()
        if pa.types.is_list(kind) or pa.types.is_large_list(kind):
            return pa.list_(floats(kind.value_type))
        return kind

    fields = []
    for field in schema:
        kind = field.type if field.name == time else floats(field.type)
        if pa.types.is_null(kind):
            if field.name not in numeric:
                continue  # inferred block by block
            kind = pa.float64()
        fields.append(pa.field(field.name, kind))
    return pa.schema(fields)


def _inferred(table: pa.Table, text_columns: list[str]) -> pa.Table:
    """A block read as text with numbers where every value is a number, as pyarrow's type inference
    would give: what the first block's decisions (categorical, label kind) are made on in Pipe mode."""
    for index, name in enumerate(table.column_names):
        data = table.column(index)
        if name in text_columns or not is_text(data.type):
            continue
        if data.null_count == len(data):
            table = table.set_column(index, name, pa.nulls(len(data)))
        elif int(pc.sum(pc.match_substring_regex(data, NUMBER_PATTERN)).as_py() or 0) == len(data) - data.null_count:
            table = table.set_column(index, name, pc.cast(pc.utf8_trim_whitespace(data), pa.float64()))
    return table


def _time_type(data: pa.ChunkedArray) -> pa.DataType | None:
    """The first of int64, float64 and timestamp that every value of a text column converts to."""
    for kind in (pa.int64(), pa.float64(), pa.timestamp("ns")):
        try:
            pc.cast(pc.utf8_trim_whitespace(data), kind)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
        return kind
    return None


def _head_schema(head: bytes, time: str | None) -> pa.Schema | None:
    """A JSON lines stream's schema (integers as float64) from the complete lines of its first bytes."""
    lines = head[: head.rfind(b"\n") + 1]
    if not lines:
        return None
    try:
        sample = json.read_json(pa.BufferReader(lines))
    except pa.ArrowInvalid:
        return None  # the stream's reader reports what is wrong, with its position
    return _float_schema(sample.schema, [], time)
