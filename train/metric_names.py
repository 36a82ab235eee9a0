"""The metrics a job logs, by name: what SageMaker's metric definitions and the tuner refer to.

No numpy or torch here: the `optml` command builds a job's metric definitions on a laptop without them.
"""

from __future__ import annotations

from optml.container.kinds import BINARY, MULTICLASS, REGRESSION

CLASSIFICATION_METRICS = ("accuracy", "precision", "recall", "f1", "f_beta", "specificity", "auc", "log_loss")
REGRESSION_METRICS = ("mse", "rmse", "mae", "r2")
# The metrics logged per channel for each task, in log order (after the loss).
TASK_METRICS = {
    BINARY: CLASSIFICATION_METRICS,
    MULTICLASS: CLASSIFICATION_METRICS,
    REGRESSION: REGRESSION_METRICS,
}
LOGGED_CHANNELS = ("train", "validation")
# Metrics where smaller is better; everything else is maximized.
LOWER_IS_BETTER = {"loss", "log_loss", "mse", "rmse", "mae"}


def all_metric_names() -> list[str]:
    """Every metric name a job can log, for `metric-definitions` (SageMaker allows 40)."""
    per_channel = ["loss", *CLASSIFICATION_METRICS, *REGRESSION_METRICS]
    names = [f"{channel}:{name}" for channel in LOGGED_CHANNELS for name in per_channel]
    names += [f"cv:{name}" for name in per_channel]
    return names


def is_lower_better(metric: str) -> bool:
    return metric.rsplit(":", 1)[-1] in LOWER_IS_BETTER
