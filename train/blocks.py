"""A channel as a sequence of blocks, for training on data bigger than memory (data_loading=stream).

INTERFACE STUB (issue 14) — the helper that owns this file fills it in; signatures may grow, not change.

A block is a bounded piece of one file: a CSV or JSON lines block of `block_bytes` (pyarrow's streaming
readers), a Parquet row group (only the columns used), a slice of `block_rows` rows of a memory-mapped
.npy pair, or a whole .npz file (documented limit: an .npz file is read whole). Each block is checked exactly
as `load_channel` checks a whole channel (same messages, rows counted from the start of the *file*), and
encoded with the encoder fitted on the train channel's statistics.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from optml.container.features import FeatureEncoder
from optml.train.dataset import DataOptions

BLOCK_BYTES = 16 << 20  # CSV / JSON lines bytes per block
BLOCK_ROWS = 65_536  # .npy rows per block


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


class ChannelReader:
    """One channel's files (or, in Pipe mode, its FIFOs) read block by block.

    Opening reads only the first block of the first file: it resolves the format, the CSV header, the
    layout (label, features, time) and which columns are categorical — the first block decides that
    (documented), as a whole channel does today. `feature_names`, `label_name` as Dataset has them.
    """

    channel: str
    files: tuple[Path, ...]
    random_access: bool  # True when read_block(file, block) does not re-read the file from its start

    def __init__(self, channel: str, directory: Path, options: DataOptions, encoder: FeatureEncoder | None = None):
        raise NotImplementedError

    def blocks(self, file: int, start_block: int = 0) -> Iterator[CheckedBlock]:
        """Every block of file `file` from `start_block`, in order (sequential formats skip the earlier
        blocks by reading them)."""
        raise NotImplementedError

    def read_block(self, ref: BlockRef) -> CheckedBlock:
        raise NotImplementedError

    def encode(self, block: CheckedBlock, encoder: FeatureEncoder) -> np.ndarray:
        """The block's features as the network's float32 input (before standardization)."""
        raise NotImplementedError
