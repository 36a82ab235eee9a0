"""Log format, and the metric lines SageMaker's regexes (and its tuner) read from stdout.

A metric line looks like:

    epoch=3 train:loss=0.2511 validation:loss=0.2803 validation:accuracy=0.9386;

Every metric is preceded by a space and followed by a space or `;`, so one regex per name matches
exactly that metric and never a longer name that ends the same way.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Iterable, Mapping

METRIC_DEFINITIONS_LIMIT = 40  # SageMaker's maximum number of metric definitions per job
METRIC_REGEX_LIMIT = 500
NUMBER_PATTERN = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: int = logging.INFO) -> None:
    """Send logs to stdout, where SageMaker (CloudWatch) and docker logs pick them up."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def format_metric_line(prefix: str, metrics: Mapping[str, float]) -> str:
    """`prefix` (`epoch=3`, `cv folds=5`, `final`) then the metrics in the order given (objective last)."""
    parts = [prefix]
    for name, value in metrics.items():
        parts.append(f"{name}={value:.6g}" if math.isfinite(value) else f"{name}=nan")
    return " ".join(parts) + ";"


def metric_regex(name: str) -> str:
    return f" {name}={NUMBER_PATTERN}[ ;]"


def metric_definitions(names: Iterable[str]) -> list[dict[str, str]]:
    """The MetricDefinitions list for an Estimator / ModelTrainer / tuner, one entry per metric."""
    definitions = [{"Name": name, "Regex": metric_regex(name)} for name in names]
    if len(definitions) > METRIC_DEFINITIONS_LIMIT:
        raise ValueError(f"{len(definitions)} metric definitions; SageMaker accepts {METRIC_DEFINITIONS_LIMIT}")
    for definition in definitions:
        if len(definition["Regex"]) > METRIC_REGEX_LIMIT:
            raise ValueError(f"regex for {definition['Name']} is longer than {METRIC_REGEX_LIMIT} characters")
    return definitions
