"""A hyperparameter search: the ranges (what `--ranges FILE` holds), the objective and the strategy — what
`optml tune` sends to SageMaker's Automatic Model Tuning, and what `optml tune --local` runs with optuna.

One definition for both, so that the search tried on this machine is the search launched in AWS.
"""

from __future__ import annotations

import difflib
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from optml.cli.errors import CliError

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


RANGE_LIMIT = 30  # SageMaker: hyperparameters searched over, all ranges together
CATEGORICAL_VALUE_LIMIT = 30  # values of one categorical range
RANGE_KEYS = ("min", "max", "type", "scaling")
SCRIPT_PROGRAM = "sagemaker_program"  # a static hyperparameter of script mode: the hyperparameters are the user's
LOWER_BETTER_WORDS = ("loss", "error", "mse", "mae", "rmse")


def read_ranges(path: str, static_hyperparameters: dict[str, str]) -> tuple[Range, ...]:
    """--ranges FILE: JSON, or YAML for .yaml/.yml; every range checked against the image's hyperparameter table
    (in script mode, the form only), every problem in one CliError."""
    document = _parse(Path(path))
    if not isinstance(document, dict) or not document:
        raise CliError(f"--ranges {path}: expected an object of hyperparameter ranges, e.g. {EXAMPLE_RANGES}")
    if len(document) > RANGE_LIMIT:
        raise CliError(f"--ranges {path}: {len(document)} ranges, SageMaker searches at most {RANGE_LIMIT}")
    table = None if SCRIPT_PROGRAM in static_hyperparameters else _table()
    ranges, problems = [], []
    for name, spec in document.items():
        try:
            ranges.append(_range(str(name), spec, table, static_hyperparameters))
        except ValueError as problem:
            problems.append(str(problem))
    if problems:
        raise CliError(f"--ranges {path}: " + "; ".join(problems))
    return tuple(ranges)


EXAMPLE_RANGES = '{"learning_rate": {"min": 0.0001, "max": 0.1, "scaling": "log"}, "optimizer": ["adam", "sgd"]}'


def _parse(path: Path) -> Any:
    if not path.is_file():
        raise CliError(f"--ranges {path} does not exist")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(error, "problem", None) or str(error)
            raise CliError(f"--ranges {path}:{where}: not YAML ({problem})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise CliError(f"--ranges {path}: line {error.lineno}, column {error.colno}: not JSON ({error.msg})") from None


def _table() -> dict[str, Any]:
    from optml.train.hyperparameters import Hyperparameters

    return {spec.name: spec for spec in fields(Hyperparameters)}


def _range(name: str, spec: object, table: dict[str, Any] | None, static: dict[str, str]) -> Range:
    """One range, or ValueError saying what is wrong with it."""
    if name in static:
        raise ValueError(f"{name} is both a range and a static --hp: drop one")
    field_spec = None
    if table is not None:
        field_spec = table.get(name)
        if field_spec is None:
            close = difflib.get_close_matches(name, table, n=3, cutoff=0.6)
            hint = f"did you mean {' or '.join(close)}?" if close else "the README lists every hyperparameter"
            raise ValueError(f"unknown hyperparameter {name!r} ({hint})")
    if isinstance(spec, list):
        return _categorical(name, spec, field_spec)
    if isinstance(spec, dict):
        return _numeric(name, spec, field_spec)
    raise ValueError(f"{name}: a list of values or an object with min and max, not {json.dumps(spec)}")


def _text(value: object) -> str:
    """A value as the hyperparameter's text (what SageMaker passes): JSON's true is "true", 0.1 is "0.1"."""
    return json.dumps(value) if isinstance(value, bool) else str(value)


def _accepted(name: str, value: object, field_spec: Any) -> None:
    if field_spec is None:
        return
    try:
        field_spec.metadata["parse"](_text(value))
    except (ValueError, TypeError):
        raise ValueError(f"{name}={_text(value)!r} is invalid: expected {field_spec.metadata['expected']}") from None


def _categorical(name: str, values: list[Any], field_spec: Any) -> CategoricalRange:
    if not values or len(values) > CATEGORICAL_VALUE_LIMIT:
        raise ValueError(f"{name}: 1 to {CATEGORICAL_VALUE_LIMIT} values, SageMaker's limit (got {len(values)})")
    if any(isinstance(value, (dict, list)) or value is None for value in values):
        raise ValueError(f"{name}: each value a string, number or boolean")
    for value in values:
        _accepted(name, value, field_spec)
    texts = tuple(_text(value) for value in values)
    if len(set(texts)) < len(texts):
        raise ValueError(f"{name}: a value twice")
    return CategoricalRange(name, texts)


def _numeric(name: str, spec: dict[str, Any], field_spec: Any) -> IntegerRange | ContinuousRange:
    unknown = [key for key in spec if key not in RANGE_KEYS]
    if unknown:
        raise ValueError(f"{name}: unknown key {', '.join(map(repr, unknown))} (a range has {', '.join(RANGE_KEYS)})")
    low: Any = spec.get("min")
    high: Any = spec.get("max")
    if not all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in (low, high)):
        raise ValueError(f"{name}: a range needs numbers min and max")
    kind = spec.get("type") or _field_kind(field_spec, low, high)
    scaling = SCALINGS.get(str(spec.get("scaling", "auto")).lower())
    if kind not in ("integer", "continuous") or scaling is None:
        raise ValueError(f"{name}: type is integer or continuous, scaling one of {', '.join(SCALINGS)}")
    _check_numeric(name, kind, float(low), float(high), scaling, field_spec)
    for value in (low, high):
        _accepted(name, int(value) if kind == "integer" else value, field_spec)
    if kind == "integer":
        return IntegerRange(name, int(low), int(high), scaling)
    return ContinuousRange(name, float(low), float(high), scaling)


def _field_kind(field_spec: Any, low: float, high: float) -> str:
    """The table's type decides (a text, a flag or a list has no range: its values go in a list); in script
    mode, the numbers' own."""
    if field_spec is None:
        return "integer" if isinstance(low, int) and isinstance(high, int) else "continuous"
    kind = {"int": "integer", "float": "continuous"}.get(str(field_spec.type).removesuffix(" | None"))
    if kind is None:
        raise ValueError(
            f"{field_spec.name} takes {field_spec.metadata['expected']}, not a numeric range: list the values instead"
        )
    return kind


def _check_numeric(name: str, kind: str, low: float, high: float, scaling: str, field_spec: Any) -> None:
    if field_spec is not None and kind != _field_kind(field_spec, low, high):
        raise ValueError(f"{name}: a {kind} range, but {name} is {_field_kind(field_spec, low, high)}")
    if kind == "integer" and not (low.is_integer() and high.is_integer()):
        raise ValueError(f"{name}: an integer range needs whole numbers min and max")
    if not low < high:
        raise ValueError(f"{name}: min {_number(low)} must be less than max {_number(high)}")
    if scaling == "Logarithmic" and low <= 0:
        raise ValueError(f"{name}: log scaling needs min > 0")
    if scaling == "ReverseLogarithmic" and (kind == "integer" or not 0 <= low < high < 1):
        raise ValueError(f"{name}: reverse_log scaling is for continuous ranges with 0 ≤ min < max < 1")


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() else str(value)


def parameter_ranges(ranges: tuple[Range, ...]) -> dict[str, list[dict[str, Any]]]:
    """SageMaker's ParameterRanges: each value as a string, as the API takes them."""
    result: dict[str, list[dict[str, Any]]] = {}
    for each in ranges:
        if isinstance(each, CategoricalRange):
            result.setdefault("CategoricalParameterRanges", []).append({"Name": each.name, "Values": list(each.values)})
            continue
        key = "IntegerParameterRanges" if isinstance(each, IntegerRange) else "ContinuousParameterRanges"
        entry = {"Name": each.name, "MinValue": str(each.low), "MaxValue": str(each.high), "ScalingType": each.scaling}
        result.setdefault(key, []).append(entry)
    return result


def objective_from(metric: str, maximize: bool, minimize: bool, definitions: list[dict[str, str]]) -> Objective:
    """--objective, one of the metrics every job defines; its direction as given, else the metric's own: the
    image's metrics by their table, a --metric's by its name (a loss or an error is minimized)."""
    from optml.train.metric_names import is_lower_better

    names = [definition["Name"] for definition in definitions]
    if metric not in names:
        close = difflib.get_close_matches(metric, names, n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise CliError(
            f"--objective {metric}: no job defines that metric; {hint}a metric of your own script needs"
            f" --metric {metric}=REGEX (the image's: `docker run IMAGE metric-definitions`)"
        )
    if maximize or minimize:
        return Objective(metric, maximize)
    from optml.container.kinds import TASKS
    from optml.train.metric_names import metric_names

    if any(metric in metric_names(task) for task in TASKS):
        return Objective(metric, not is_lower_better(metric))
    return Objective(metric, not any(word in metric.lower() for word in LOWER_BETTER_WORDS))


def hyperband_max_resource(checked: Search) -> int:
    """Hyperband's MaxResource, in AWS and locally: the epochs every job runs (static `epochs`, else the image's
    default), since `epochs` cannot be a range with Hyperband."""
    from optml.train.hyperparameters import Hyperparameters

    given = checked.static_hyperparameters.get("epochs")
    return int(given) if given is not None else Hyperparameters().epochs


def grid_size(ranges: tuple[Range, ...]) -> int:
    """The Grid strategy's combinations of the categorical ranges: the jobs SageMaker runs, the trials locally."""
    return math.prod(len(each.values) for each in ranges if isinstance(each, CategoricalRange))
