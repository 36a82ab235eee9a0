"""The metrics a job logs, by name: what SageMaker's metric definitions and the tuner refer to.

No numpy or torch here: the `optml` command builds a job's metric definitions on a laptop without them.

SageMaker takes at most 40 metric definitions a job, and every task's metrics on every channel are more
than that (13 names on 4 channels). So the names come in priority order — `validation:` and `cv:` first
(what a tuner's objective should be: scores on rows the model did not train on), then `train:`, then
`test:` (the one `final` line of a test channel) — and what has to make way is always from the end.
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
# The channels' prefixes by priority: a tuner's objective is one of the first two, which never make way.
OBJECTIVE_CHANNELS = ("validation", "cv")
OTHER_CHANNELS = ("train", "test")
# Metrics where smaller is better; everything else is maximized.
LOWER_IS_BETTER = {"loss", "log_loss", "mse", "rmse", "mae"}


def metric_names(task: str | None = None) -> list[str]:
    """The metric names a job of `task` logs, by priority. Without a task (inferred from the labels when the
    job runs), every task's names on validation:, cv: and train: (39): every task's test: names would not
    fit as well, so they come with a known task only, where they do (36 for classification, 20 for
    regression)."""
    per_channel = ["loss", *(TASK_METRICS[task] if task else (*CLASSIFICATION_METRICS, *REGRESSION_METRICS))]
    channels = (*OBJECTIVE_CHANNELS, *OTHER_CHANNELS) if task else (*OBJECTIVE_CHANNELS, OTHER_CHANNELS[0])
    return [f"{channel}:{name}" for channel in channels for name in per_channel]


def all_metric_names() -> list[str]:
    """Every metric name a job of any task can log on validation:, cv: and train: (SageMaker allows 40)."""
    return metric_names(None)


def is_objective_candidate(metric: str) -> bool:
    """A metric a tuner could optimize: measured on rows the model did not train on, every epoch or fold."""
    return metric.split(":", 1)[0] in OBJECTIVE_CHANNELS


def is_lower_better(metric: str) -> bool:
    return metric.rsplit(":", 1)[-1] in LOWER_IS_BETTER
