"""Uniform samples of a channel's rows that merge: every block, process and host draws its own, and together
they are a uniform sample of the union. Each row gets a random key and the rows with the smallest keys are
kept (bottom-k sampling), so merging two samples is keeping the smallest keys of both — exactly every row
while there are no more than the sample's size.

The bias metrics' FlipTest (train/bias.py) and the SHAP background and explained rows (train/analysis.py)
read streamed channels this way, in a bounded amount of memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class RowSample:
    """At most `size` rows: float32 feature rows, and per-row arrays kept with them (`add`'s `extra`).
    `max_bytes` lowers `size` when the first rows are large (images), so a sample stays small."""

    size: int
    seed: int = 0  # give each process its own (its rank)
    max_bytes: int | None = None
    columns: tuple[np.ndarray, ...] | None = None  # the kept rows, then each extra array
    keys: np.ndarray | None = None
    _rng: np.random.Generator | None = field(default=None, init=False, repr=False)

    @property
    def rows(self) -> np.ndarray | None:
        return self.columns[0] if self.columns is not None else None

    def add(self, rows: np.ndarray, *extra: np.ndarray) -> None:
        if self._rng is None:
            self._rng = np.random.default_rng(self.seed)
            if self.max_bytes is not None:
                row_bytes = 4 * int(np.prod(rows.shape[1:]))
                self.size = min(self.size, max(100, self.max_bytes // max(row_bytes, 1)))
        self._keep((np.asarray(rows, np.float32), *extra), self._rng.random(len(rows)))

    def merge(self, other: RowSample) -> None:
        if other.columns is not None and other.keys is not None:
            self._keep(other.columns, other.keys)

    def _keep(self, columns: tuple[np.ndarray, ...], keys: np.ndarray) -> None:
        if self.columns is not None and self.keys is not None:
            columns = tuple(np.concatenate([mine, theirs]) for mine, theirs in zip(self.columns, columns, strict=True))
            keys = np.concatenate([self.keys, keys])
        order = np.argsort(keys, kind="stable")[: self.size]
        self.columns, self.keys = tuple(column[order] for column in columns), keys[order]
