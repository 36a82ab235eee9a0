"""A hyperparameter search: the ranges (what `--ranges FILE` holds), the objective and the strategy — what
`optml tune` sends to SageMaker's Automatic Model Tuning, and what `optml tune --local` runs with optuna.

One definition for both, so that the search tried on this machine is the search launched in AWS.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# SageMaker's tuning strategies (HyperParameterTuningJobConfig.Strategy); --local runs each with optuna.
STRATEGIES = ("Bayesian", "Random", "Hyperband", "Grid")
# A range's "scaling" in a ranges file -> SageMaker's ScalingType.
SCALINGS = {
    "auto": "Auto",
    "linear": "Linear",
    "log": "Logarithmic",
    "logarithmic": "Logarithmic",
    "reverse_log": "ReverseLogarithmic",
    "reverselogarithmic": "ReverseLogarithmic",
}


@dataclass(frozen=True)
class IntegerRange:
    name: str
    low: int
    high: int
    scaling: str = "Auto"  # a value of SCALINGS


@dataclass(frozen=True)
class ContinuousRange:
    name: str
    low: float
    high: float
    scaling: str = "Auto"


@dataclass(frozen=True)
class CategoricalRange:
    name: str
    values: tuple[str, ...]  # as the hyperparameter's text: SageMaker passes every value as a string


Range = IntegerRange | ContinuousRange | CategoricalRange


@dataclass(frozen=True)
class Objective:
    """The metric to optimize (a MetricDefinitions name, e.g. validation:f1) and its direction."""

    metric: str
    maximize: bool

    @property
    def type(self) -> str:
        """HyperParameterTuningJobObjective's Type."""
        return "Maximize" if self.maximize else "Minimize"


@dataclass(frozen=True)
class Search:
    """Everything both `optml tune` and `optml tune --local` run, checked."""

    ranges: tuple[Range, ...]
    objective: Objective
    strategy: str  # one of STRATEGIES
    early_stopping: bool  # SageMaker's TrainingJobEarlyStoppingType Auto; --local: optuna's median pruner
    max_jobs: int  # training jobs (trials) in all; --local: trials this run adds to the study
    static_hyperparameters: dict[str, str] = field(default_factory=dict)  # --hp / --hp-file: the same in every job
    metric_definitions: list[dict[str, str]] = field(default_factory=list)  # what every job sends; has the objective
    seed: int | None = None  # SageMaker's RandomSeed; --local: the sampler's seed
