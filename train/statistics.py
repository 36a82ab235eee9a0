"""What preprocessing needs, gathered in one streaming pass over the train channel (data_loading=stream).

INTERFACE STUB (issue 14) — the helper that owns this file fills it in; signatures may grow, not change.

`ChannelStatistics` is built block by block (`add`), merged across processes and hosts (`merge`, plain
picklable state), and then gives exactly what the in-memory path fits on the whole channel:
the FeatureEncoder (categories: union over every block, sorted), the Standardizer (per-feature mean/std of
the *encoded* features, pooled as preprocessing._POOLED_AXES pools them; one-hot columns from category
counts), the task (infer_task's rule), the LabelEncoding (LabelEncoding.fit's rules and messages) and the
class counts balanced class weights need. Equal to the in-memory fit up to float rounding (tests pin it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from optml.container.features import FeatureEncoder
from optml.train.blocks import CheckedBlock
from optml.train.preprocessing import LabelEncoding, Standardizer


@dataclass
class ChannelStatistics:
    rows: int = 0

    def add(self, block: CheckedBlock) -> None:
        raise NotImplementedError

    def merge(self, other: ChannelStatistics) -> ChannelStatistics:
        raise NotImplementedError

    def encoder(self) -> FeatureEncoder | None:
        """None for image/sequence arrays; tabular arrays get the unnamed-columns encoder, as arrays.py does."""
        raise NotImplementedError

    def standardizer(self) -> Standardizer:
        raise NotImplementedError

    def task(self) -> str:
        """infer_task's rule, from the distinct labels seen (logged the same way)."""
        raise NotImplementedError

    def labels(self, task: str, num_classes: int | None = None) -> LabelEncoding:
        raise NotImplementedError

    def class_counts(self, labels: LabelEncoding) -> np.ndarray:
        """Rows per class index, for class_weights=balanced."""
        raise NotImplementedError
