"""Which format a channel holds, and reading one file of it into a pyarrow Table (or numpy arrays).

The channel's ContentType from inputdataconfig.json decides the format; without one, each file's name
(`.csv`, `.parquet`, `.jsonl`, `.npz`, optionally `.gz`) and failing that its first bytes do. Bulk reading
is pyarrow's (multithreaded C++ readers, memory-mapped Parquet); Python only looks at a file's first bytes.
"""

from __future__ import annotations

import csv as pycsv
import gzip
import io
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import csv, json

from optml.container.errors import UserError
from optml.container.features import is_number

CSV = "csv"
PARQUET = "parquet"
JSONLINES = "jsonlines"
NPZ = "npz"
NPY = "npy"

# ContentType (lower-cased, parameters dropped) → format. SageMaker itself does not check ContentType;
# these are the spellings its built-in algorithms and the SDK's docs use.
CONTENT_TYPES = {
    "text/csv": CSV,
    "text/x-csv": CSV,
    "application/csv": CSV,
    "application/x-parquet": PARQUET,
    "application/parquet": PARQUET,
    "application/vnd.apache.parquet": PARQUET,
    "application/jsonlines": JSONLINES,
    "application/x-jsonlines": JSONLINES,
    "application/json-lines": JSONLINES,
    "application/jsonl": JSONLINES,
    "application/x-ndjson": JSONLINES,
    "application/json": JSONLINES,
    "application/x-npz": NPZ,
    "application/npz": NPZ,
    "application/x-npy": NPY,
}
EXTENSIONS = {
    ".csv": CSV,
    ".parquet": PARQUET,
    ".pq": PARQUET,
    ".jsonl": JSONLINES,
    ".ndjson": JSONLINES,
    ".json": JSONLINES,
    ".npz": NPZ,
    ".npy": NPY,
}
FORMAT_NAMES = {CSV: "CSV", PARQUET: "Parquet", JSONLINES: "JSON lines", NPZ: ".npz", NPY: ".npy"}
GZIP_MAGIC = b"\x1f\x8b"
SNIFF_BYTES = 64 * 1024


def format_for_content_type(content_type: str) -> str:
    """`text/csv;label_size=1` → "csv"; unsupported types fail with the list of supported ones."""
    media_type, *parameters = (part.strip() for part in content_type.split(";"))
    fmt = CONTENT_TYPES.get(media_type.lower())
    if fmt is None:
        supported = "text/csv, application/x-parquet, application/jsonlines, application/x-npz"
        raise UserError(f"ContentType {content_type!r} is not supported; use one of {supported}")
    for parameter in parameters:
        key, _, value = parameter.partition("=")
        if fmt == CSV and key.strip().lower() == "label_size" and value.strip() != "1":
            raise UserError(f"ContentType {content_type!r}: only label_size=1 is supported (one label column per row)")
    return fmt


def is_gzip(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(2) == GZIP_MAGIC


def head_bytes(path: Path, size: int = SNIFF_BYTES) -> bytes:
    """The first `size` bytes of the file's content, decompressed if it is gzip."""
    try:
        if is_gzip(path):
            with gzip.open(path, "rb") as handle:
                return handle.read(size)
        with path.open("rb") as handle:
            return handle.read(size)
    except (OSError, EOFError, zlib.error) as error:
        raise UserError(f"{path} is not a readable gzip file: {error}") from None


def sniff_format(path: Path) -> str:
    """A file's format from its name (`.gz` stripped), else from its first bytes."""
    suffixes = [suffix.lower() for suffix in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    if suffixes and suffixes[-1] in EXTENSIONS:
        return EXTENSIONS[suffixes[-1]]
    head = head_bytes(path, 512)
    if head.startswith(b"PAR1"):
        return PARQUET
    if head.startswith(b"PK\x03\x04"):
        return NPZ
    if head.startswith(b"\x93NUMPY"):
        return NPY
    if head.lstrip().startswith(b"{"):
        return JSONLINES
    return CSV


def input_stream(path: Path) -> pa.NativeFile:
    """pyarrow detects gzip only from a `.gz` name; SageMaker files often have no extension at all."""
    return pa.input_stream(str(path), compression="gzip" if is_gzip(path) else None)


def unreadable(path: Path, what: str, error: Exception) -> UserError:
    lines = str(error).strip().splitlines() or [type(error).__name__]
    if is_gzip(path) and ("gzip" in lines[0].lower() or "compress" in lines[0].lower()):
        what = "gzip"
    return UserError(f"{path} is not a readable {what} file: {lines[0]}")


# --- CSV -------------------------------------------------------------------------------------------------


def csv_sample(path: Path, max_rows: int = 200) -> list[list[str]]:
    """The first rows of a CSV file, for header detection and counting columns. Python's csv module
    reads only these few rows; the file itself is read by pyarrow."""
    return sample_rows(head_bytes(path), max_rows)


def sample_rows(head: bytes, max_rows: int = 200) -> list[list[str]]:
    """The first rows of CSV text that starts with `head` (up to SNIFF_BYTES of it, maybe cut mid-line)."""
    text = head.decode("utf-8-sig", errors="replace")
    lines = text.splitlines()
    if len(text) >= SNIFF_BYTES and len(lines) > 1:
        lines = lines[:-1]  # the last line may be cut off mid-value
    rows = [row for row in pycsv.reader(lines[: max_rows + 1]) if row]
    return rows[:max_rows]


def looks_like_header(sample: Sequence[Sequence[str]]) -> bool:
    """True when the first row names the columns rather than holding data.

    A header's cells are all non-empty text (but for a first cell left empty by pandas' `to_csv` above its
    index). That alone also describes a row of categorical data, so one more sign is needed: some column
    that is numeric in the rows below, or (all-text data) no first-row value recurring in its own column —
    category values recur, column names do not.
    """
    if not sample:
        return False
    first, rest = sample[0], sample[1:]
    pandas_index = not first[0].strip()
    names = first[1:] if pandas_index else first
    if not names or not all_text(names):
        return False
    if not rest:
        return not pandas_index
    for index in range(len(first)):
        below = [row[index] for row in rest if index < len(row) and row[index].strip()]
        if below and all(is_number(cell) for cell in below):
            return True
    return all(
        all(index >= len(row) or row[index] != cell for row in rest) for index, cell in enumerate(first) if cell.strip()
    )


def all_text(cells: Sequence[str]) -> bool:
    """Every cell holds something that is not a number, as in a header row."""
    return all(cell.strip() and not is_number(cell) for cell in cells)


def read_csv(path: Path, header: bool, text_columns: Sequence[str] = ()) -> pa.Table:
    """One CSV file. Headerless files get columns named "column 1", "column 2", … (1-based, as a person
    counts them in error messages). `text_columns` are read as text so "02139" keeps its zero."""
    sample = csv_sample(path, 1)
    if not sample:
        raise UserError(f"{path} is empty; SageMaker CSV has no header row and the label in the first column")
    names = None if header else [f"column {i + 1}" for i in range(len(sample[0]))]
    try:
        table = csv.read_csv(
            input_stream(path),
            read_options=csv.ReadOptions(column_names=names, block_size=16 << 20),
            convert_options=csv.ConvertOptions(
                strings_can_be_null=True, column_types={name: pa.string() for name in text_columns}
            ),
        )
    except (pa.ArrowInvalid, OSError) as error:
        raise unreadable(path, "CSV", error) from None
    if header and table.column_names[0] == "":
        # pandas' to_csv writes its index as an unnamed first column: row numbers, not a feature.
        table = table.remove_column(0)
    duplicates = sorted({name for name in table.column_names if table.column_names.count(name) > 1})
    if duplicates:
        raise UserError(f"{path}: the header names column(s) {duplicates} more than once")
    return table


# --- Parquet and JSON lines ------------------------------------------------------------------------------


def read_parquet(path: Path) -> pa.Table:
    try:
        if is_gzip(path):  # Parquet needs random access: decompress into memory first
            with gzip.open(path, "rb") as handle:
                return decode_dictionaries(pq.read_table(pa.BufferReader(handle.read())))
        return decode_dictionaries(pq.read_table(path, memory_map=True))
    except (pa.ArrowException, OSError, EOFError, zlib.error) as error:
        raise unreadable(path, "Parquet", error) from None


def decode_dictionaries(table: pa.Table) -> pa.Table:
    """pandas' `category` columns arrive dictionary-encoded; the rest of the loader wants plain values."""
    for index, field in enumerate(table.schema):
        if pa.types.is_dictionary(field.type):
            column = table.column(index)
            table = table.set_column(index, field.name, column.cast(field.type.value_type))
    return table


def read_jsonlines(path: Path) -> pa.Table:
    try:
        return json.read_json(input_stream(path), read_options=json.ReadOptions(block_size=16 << 20))
    except (pa.ArrowInvalid, OSError) as error:
        raise unreadable(path, "JSON lines (one JSON object per line)", error) from None


# --- .npz ------------------------------------------------------------------------------------------------


def read_npz(path: Path, required: Sequence[str], optional: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """The named arrays of an .npz file (np.savez / np.savez_compressed). Pickled object arrays are
    refused: loading them would run code from the data."""
    if not head_bytes(path, 4).startswith(b"PK\x03\x04"):
        raise UserError(f"{path} is not a readable .npz file: not a zip archive (write it with np.savez)")
    try:
        source: Path | io.BytesIO = path
        if is_gzip(path):
            with gzip.open(path, "rb") as handle:
                source = io.BytesIO(handle.read())
        with np.load(source, allow_pickle=False) as archive:
            present = list(archive.files)
            missing = [name for name in required if name not in present]
            if missing:
                raise UserError(
                    f"{path} has no array {' or '.join(repr(m) for m in missing)}; found"
                    f" {', '.join(present) or 'no arrays'} (save with np.savez(path, x=features, y=labels))"
                )
            return {name: archive[name] for name in [*required, *optional] if name in present}
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as error:
        raise unreadable(path, ".npz", error) from None


def read_npy(path: Path) -> np.ndarray:
    """One .npy array, memory-mapped: pages are read as training touches them. Copy-on-write ("c") keeps
    the array writable (torch warns on read-only arrays) without ever changing the file."""
    try:
        if is_gzip(path):
            with gzip.open(path, "rb") as handle:
                return np.load(io.BytesIO(handle.read()), allow_pickle=False)
        return np.load(path, mmap_mode="c", allow_pickle=False)
    except (OSError, EOFError, ValueError, zlib.error) as error:
        raise unreadable(path, ".npy", error) from None
