"""Array data → a Dataset: `.npz` files with arrays `x` and `y`, and JSON lines records
`{"features": [...], "label": ...}` whose features may be nested lists (sequences, images).

Per-row shapes decide the kind of data: (F,) tabular, (T, F) a sequence (or an H×W image, given
array_layout "image", which then gets one channel), (C, H, W) an image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from optml.container.errors import UserError
from optml.container.features import FeatureColumn, FeatureEncoder, category_text
from optml.train.dataset import IMAGE, DataOptions, Dataset

FEATURES_FIELD = "features"
SHAPES = "(N, F), (N, T, F), (N, H, W) or (N, C, H, W)"


@dataclass(frozen=True)
class ArrayPart:
    """One file's arrays; `x_name`/`y_name` say how the file calls them, for messages."""

    path: Path
    x: np.ndarray
    y: np.ndarray
    time: np.ndarray | None = None
    x_name: str = "x"
    y_name: str = "y"
    row_offset: int = 0  # rows of the file before these (a block of a file read block by block)


def _check_part(part: ArrayPart) -> tuple[np.ndarray, np.ndarray]:
    x, y = part.x, part.y
    if x.dtype.kind not in "fiub":
        raise UserError(f"{part.path}: {part.x_name} holds {x.dtype} values, expected numbers")
    if not 2 <= x.ndim <= 4:
        raise UserError(f"{part.path}: {part.x_name} has shape {x.shape}; expected one row per sample: {SHAPES}")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise UserError(f"{part.path}: {part.y_name} has shape {y.shape}; expected one label per row, shape (N,)")
    if len(y) != len(x):
        raise UserError(f"{part.path}: {part.x_name} has {len(x)} rows but {part.y_name} has {len(y)} labels")
    if y.dtype.kind == "S":
        y = np.char.decode(y, "utf-8")
    if y.dtype.kind in "UO":  # O: text labels of JSON lines records, as tabular.label_array gives them
        y = y.astype(object)
    elif y.dtype.kind in "fiub":
        y = y.astype(np.float64)
        if np.isnan(y).any():
            row = int(np.flatnonzero(np.isnan(y))[0])
            raise UserError(
                f"{part.path} row {row + 1 + part.row_offset}: the label ({part.y_name}) is NaN;"
                " every row needs a label"
            )
    else:
        raise UserError(f"{part.path}: {part.y_name} holds {y.dtype} values, expected numbers or text")
    x = x.astype(np.float32, copy=False)
    finite = np.isfinite(x)
    if not finite.all():
        where = tuple(int(i) for i in np.argwhere(~finite)[0])
        raise UserError(
            f"{part.path} row {where[0] + 1 + part.row_offset}: {part.x_name}{list(where[1:])} is {x[where]},"
            " not a finite number"
        )
    return x, y


def check_part(
    channel: str, part: ArrayPart, first: tuple[Path, tuple[int, ...]] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One file's (or block's) checked float32 features and labels (float64, or object for text); `first`:
    the first file's path and row shape, which every other part must match. Shared with the block reader."""
    x, y = _check_part(part)
    if first is not None and x.shape[1:] != first[1]:
        raise UserError(
            f"{part.path} has {part.x_name} rows of shape {x.shape[1:]} but {first[0]} has"
            f" {first[1]}; every file in channel {channel!r} needs one shape (resize images to"
            " one size, pad sequences to one length)"
        )
    return x, y


def assemble_arrays(
    channel: str, parts: Sequence[ArrayPart], options: DataOptions, encoder: FeatureEncoder | None
) -> Dataset:
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    for part in parts:
        x, y = check_part(channel, part, (parts[0].path, xs[0].shape[1:]) if xs else None)
        xs.append(x)
        ys.append(y)
    features = np.concatenate(xs) if len(xs) > 1 else xs[0]
    if features.ndim == 3 and options.array_layout == IMAGE:
        features = features[:, np.newaxis]
    if features.ndim == 2:
        encoder = _tabular_encoder(channel, features.shape[1], encoder)
    elif encoder is not None:
        raise UserError(
            f"channel {channel!r} holds rows of shape {features.shape[1:]}, but channel 'train' holds"
            f" tabular rows of {len(encoder.columns)} columns; every channel needs the same kind of data"
        )
    if any(y.dtype == object for y in ys):
        labels = np.asarray([category_text(v) for y in ys for v in y.tolist()], dtype=object)
    else:
        labels = np.concatenate(ys)
    times = [part.time for part in parts]
    return Dataset(
        features=features,
        labels=labels,
        files=tuple(part.path for part in parts),
        time_values=np.concatenate(times) if all(t is not None for t in times) else None,  # type: ignore[arg-type]
        encoder=encoder,
    )


def _tabular_encoder(channel: str, width: int, encoder: FeatureEncoder | None) -> FeatureEncoder:
    """Unnamed numeric columns: the encoder only records how many values a row holds, for serving."""
    if encoder is None:
        return FeatureEncoder(tuple(FeatureColumn(f"feature {i + 1}") for i in range(width)))
    if encoder.categorical or len(encoder.columns) != width:
        raise UserError(
            f"channel {channel!r} has {width} features per row but the model's training data has"
            f" {len(encoder.columns)} columns ({', '.join(encoder.input_names[:10])})"
        )
    return encoder


def list_column_to_array(
    path: Path, column: pa.ChunkedArray, name: str = FEATURES_FIELD, row_offset: int = 0
) -> np.ndarray:
    """A column of (nested) equal-length lists → an array of shape (rows, d1, d2, …), no Python loop."""
    data = column.combine_chunks()
    shape = [len(data)]
    while pa.types.is_list(data.type) or pa.types.is_large_list(data.type) or pa.types.is_fixed_size_list(data.type):
        if data.null_count:
            row = int(pc.index(pc.is_null(data), True).as_py()) // int(np.prod(shape[1:]))
            raise UserError(f"{path} row {row + 1 + row_offset}: {name!r} is missing; every record needs its features")
        lengths = pc.list_value_length(data).to_numpy()
        if len(lengths) and (lengths != lengths[0]).any():
            index = int(np.flatnonzero(lengths != lengths[0])[0])
            row = index // int(np.prod(shape[1:]))
            raise UserError(
                f"{path} row {row + 1 + row_offset}: {name!r} has a list of {lengths[index]} values where row 1 has"
                f" {lengths[0]}; every record needs the same shape"
            )
        shape.append(int(lengths[0]) if len(lengths) else 0)
        data = data.flatten()
    if not (pa.types.is_integer(data.type) or pa.types.is_floating(data.type) or pa.types.is_null(data.type)):
        raise UserError(f"{path}: {name!r} holds {data.type} values, expected lists of numbers")
    values = pc.cast(data, pa.float64()).to_numpy(zero_copy_only=False)
    return values.reshape(shape)
