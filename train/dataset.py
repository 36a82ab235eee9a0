"""What loading a channel takes (DataOptions) and gives (Dataset). Re-exported by optml.train.data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from optml.container.errors import UserError
from optml.container.features import FeatureEncoder

IMAGE = "image"
SEQUENCE = "sequence"
ARRAY_LAYOUTS = (IMAGE, SEQUENCE)
MIN_ROWS = 2


@dataclass(frozen=True)
class DataOptions:
    """How to read a channel. Column references are names, or 0-based positions in the file."""

    # None: the first column of a headerless CSV (SageMaker's convention); a column named "label"
    # elsewhere (for a CSV with a header, the first column when none is named "label").
    label_column: str | int | None = None
    feature_columns: tuple[str | int, ...] | None = None  # None: every column but the label and time
    time_column: str | None = None  # kept aside, not a feature: returned as Dataset.time_values
    content_type: str | None = None  # inputdataconfig.json ContentType; None: sniff each file
    categorical_columns: tuple[str | int, ...] = ()  # one-hot even if the values look like numbers
    header: bool | None = None  # CSV: does the first row name the columns? None: detect it
    array_layout: str | None = None  # 3-D arrays: "image" (N×H×W, gets C=1) or "sequence" (N×T×F, default)

    def __post_init__(self) -> None:
        if self.array_layout is not None and self.array_layout not in ARRAY_LAYOUTS:
            raise UserError(f"array_layout must be one of {', '.join(ARRAY_LAYOUTS)}, not {self.array_layout!r}")

    @property
    def names_columns(self) -> bool:
        """Whether a column is referred to by name, which only a CSV file with a header can satisfy."""
        references = [
            self.label_column,
            self.time_column,
            *(self.feature_columns or ()),
            *self.categorical_columns,
        ]
        return any(isinstance(reference, str) for reference in references)


@dataclass(frozen=True)
class Dataset:
    features: np.ndarray  # float32: (N, F) tabular, (N, C, H, W) images, (N, T, F) sequences
    labels: np.ndarray  # (N,): float64 for numeric labels, object (str) for text labels
    files: tuple[Path, ...]
    feature_names: tuple[str, ...] | None = None  # one per encoded tabular feature; None without a header
    time_values: np.ndarray | None = None
    encoder: FeatureEncoder | None = None  # the tabular encoder used (fitted on the train channel)
    label_name: str | None = None

    @property
    def rows(self) -> int:
        return int(self.features.shape[0])

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return tuple(int(n) for n in self.features.shape[1:])

    @property
    def feature_count(self) -> int:
        """F for tabular data; the product of the per-row shape (C·H·W, T·F) otherwise."""
        return int(np.prod(self.feature_shape))
