"""`docker run IMAGE metric-definitions [--task TASK]`: the MetricDefinitions JSON to paste into an Estimator
or a tuner. With --task, that task's metrics only, `test:` ones included; without, every task's `validation:`,
`cv:` and `train:` metrics (train/metric_names.py says why)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from optml.container.kinds import TASKS
from optml.container.logs import metric_definitions
from optml.train.metric_names import metric_names


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="metric-definitions", description=__doc__)
    parser.add_argument("--task", choices=TASKS, help="the job's task hyperparameter: its metrics, test: included")
    args = parser.parse_args(list(argv or ()))
    print(json.dumps(metric_definitions(metric_names(args.task)), indent=2))
    return 0
