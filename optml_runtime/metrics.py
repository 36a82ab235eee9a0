"""Metric lines in the format the built-in trainer prints and SageMaker's regexes (and its tuner) read:

    epoch=3 train:loss=0.2511 validation:accuracy=0.9386;

`optml_runtime.metric_definitions(["validation:accuracy", ...])` gives the MetricDefinitions that match them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from optml.container.logs import format_metric_line


def is_master() -> bool:
    """Rank 0 of the job (torchrun's RANK), or the only process: the one that should log the objective."""
    return os.environ.get("RANK", "0") == "0"


def log_metrics(
    metrics: Mapping[str, float], epoch: int | None = None, prefix: str | None = None, all_ranks: bool = False
) -> str:
    """Print one metric line to stdout (flushed) and return it. The prefix is `epoch=N` when an epoch is given;
    only rank 0 prints unless `all_ranks`: the tuner takes the last value it sees, from any process."""
    line = format_metric_line(prefix or (f"epoch={epoch}" if epoch is not None else "metrics"), metrics)
    if all_ranks or is_master():
        print(line, flush=True)
    return line
