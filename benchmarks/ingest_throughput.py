"""Ingestion throughput: `optml.train.data.load_channel` against pyarrow alone, on the same files.

Synthetic data (label + 30 float features, optionally one categorical text column) is written into a
temporary directory as several files per channel: headerless CSV (SageMaker's convention), CSV with a
header and a categorical column, the headerless CSV gzip-compressed, and Parquet. "pyarrow alone" reads
each file with pyarrow.csv.read_csv / pyarrow.parquet.read_table and turns the columns into numpy arrays
(dictionary-encoding the categorical column); optml does everything a training job does (format
detection, header sniffing, per-value checks, one-hot encoding). MB/s is on-disk size over wall-clock
seconds, median of `--repeats`.

    .venv/bin/python -m benchmarks.ingest_throughput            # ~100 MB of CSV per format
    .venv/bin/python -m benchmarks.ingest_throughput --quick    # smoke check, seconds
"""

from __future__ import annotations

import argparse
import gzip
import logging
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyarrow import csv

from optml.train.data import DataOptions, load_channel

FEATURES = 30
CATEGORIES = np.array([f"city_{i}" for i in range(12)])


@dataclass(frozen=True)
class Case:
    name: str
    directory: Path
    baseline: Callable[[Path], np.ndarray]  # pyarrow alone, one file: its features
    options: DataOptions

    @property
    def files(self) -> list[Path]:
        return sorted(self.directory.iterdir())

    @property
    def megabytes(self) -> float:
        return sum(path.stat().st_size for path in self.files) / 1e6


def _columns_to_numpy(table: pa.Table, skip: Sequence[str] = ()) -> np.ndarray:
    return np.column_stack([table.column(n).to_numpy() for n in table.column_names if n not in skip])


def pyarrow_csv(path: Path, header: bool, gzipped: bool = False) -> np.ndarray:
    source = pa.input_stream(str(path), compression="gzip" if gzipped else None)
    read_options = csv.ReadOptions(autogenerate_column_names=not header, block_size=16 << 20)
    table = csv.read_csv(source, read_options=read_options)
    if header:
        pc.dictionary_encode(table.column("city")).combine_chunks().indices.to_numpy()
        return _columns_to_numpy(table, skip=("city",)).astype(np.float32)
    return _columns_to_numpy(table).astype(np.float32)


def pyarrow_parquet(path: Path) -> np.ndarray:
    return _columns_to_numpy(pq.read_table(path, memory_map=True)).astype(np.float32)


def write_data(root: Path, rows: int, files: int, seed: int = 0) -> list[Case]:
    rng = np.random.default_rng(seed)
    directories = {name: root / name for name in ("csv", "csv_header", "csv_gzip", "parquet")}
    for directory in directories.values():
        directory.mkdir()
    per_file = rows // files
    names = ["label", *(f"f{i}" for i in range(FEATURES))]
    for part in range(files):
        x = rng.standard_normal((per_file, FEATURES)).round(6)
        label = (x[:, 0] + rng.standard_normal(per_file) > 0).astype(np.int64)
        table = pa.table([pa.array(label), *(pa.array(x[:, i]) for i in range(FEATURES))], names=names)
        stem = f"part-{part:05d}"
        headerless = directories["csv"] / f"{stem}.csv"
        csv.write_csv(table, headerless, csv.WriteOptions(include_header=False))
        with headerless.open("rb") as raw, gzip.open(directories["csv_gzip"] / f"{stem}.csv.gz", "wb", 6) as out:
            shutil.copyfileobj(raw, out)
        city = pa.array(CATEGORIES[rng.integers(0, len(CATEGORIES), per_file)])
        csv.write_csv(table.add_column(1, "city", city), directories["csv_header"] / f"{stem}.csv")
        pq.write_table(table, directories["parquet"] / f"{stem}.parquet")
    return [
        Case("CSV, headerless", directories["csv"], lambda p: pyarrow_csv(p, header=False), DataOptions()),
        Case(
            "CSV, header + 1 categorical",
            directories["csv_header"],
            lambda p: pyarrow_csv(p, header=True),
            DataOptions(label_column="label"),
        ),
        Case(
            "CSV, headerless, gzip",
            directories["csv_gzip"],
            lambda p: pyarrow_csv(p, header=False, gzipped=True),
            DataOptions(),
        ),
        Case("Parquet (snappy)", directories["parquet"], pyarrow_parquet, DataOptions(label_column="label")),
    ]


def _seconds(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


@dataclass(frozen=True)
class Row:
    case: str
    files: int
    megabytes: float
    baseline: float  # MB/s, median
    optml: float

    @property
    def ratio(self) -> float:
        return self.optml / self.baseline


def measure(case: Case, repeats: int) -> Row:
    """Runs alternate between the two readers so background load hits both alike."""
    baseline, optml = [], []
    files = case.files
    for _ in range(repeats):
        baseline.append(_seconds(lambda: [case.baseline(path) for path in files]))
        optml.append(_seconds(lambda: load_channel("train", case.directory, case.options)))
    size = case.megabytes
    return Row(case.name, len(files), size, size / statistics.median(baseline), size / statistics.median(optml))


def table(rows: Sequence[Row]) -> str:
    lines = [
        "| format | files | size MB | pyarrow alone MB/s | optml MB/s | ratio |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row.case} | {row.files} | {row.megabytes:.1f} | {row.baseline:.1f} | {row.optml:.1f}"
            f" | {row.ratio:.2f}× |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=400_000, help="rows per format (400k ≈ 100 MB of CSV)")
    parser.add_argument("--files", type=int, default=4, help="files per channel")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="20k rows, 1 repeat: a smoke check")
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.repeats = 20_000, 1
    logging.disable(logging.WARNING)  # load_channel's per-channel info lines
    print(f"{args.rows:,} rows (label + {FEATURES} features), {args.files} files per format, median of {args.repeats}")
    with tempfile.TemporaryDirectory(prefix="optml-ingest-") as tmp:
        cases = write_data(Path(tmp), args.rows, args.files)
        rows = []
        for case in cases:
            rows.append(measure(case, args.repeats))
            print(f"  {case.name}: {rows[-1].optml:.1f} MB/s ({rows[-1].ratio:.2f}× pyarrow alone)", flush=True)
    print()
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
