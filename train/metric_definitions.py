"""`docker run IMAGE metric-definitions`: the MetricDefinitions JSON to paste into an Estimator."""

from __future__ import annotations

import json
from collections.abc import Sequence

from optml.container.logs import metric_definitions
from optml.train.metric_names import all_metric_names


def main(argv: Sequence[str] | None = None) -> int:
    print(json.dumps(metric_definitions(all_metric_names()), indent=2))
    return 0
