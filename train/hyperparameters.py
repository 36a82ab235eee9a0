"""Every hyperparameter the algorithm accepts: its type, default and what a valid value looks like.

The values arrive as strings (SageMaker's hyperparameters.json). `parse_hyperparameters` checks all of
them, then the combinations that cannot work together, and reports every problem at once, each naming
the key, the value and what was expected — before any data is read.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from optml.container.errors import UserError
from optml.container.kinds import ACTIVATION_NAMES, BINARY, IMAGE_MODELS, MODELS, MULTICLASS, REGRESSION, TASKS

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULERS = ("none", "step", "cosine", "plateau")
LOSSES = ("auto", "bce", "cross_entropy", "mse", "mae", "huber", "focal")
CV_STRATEGIES = ("auto", "kfold", "stratified", "timeseries")
# Which losses fit which task ("auto" picks the first).
TASK_LOSSES = {
    BINARY: ("bce", "cross_entropy", "focal"),
    MULTICLASS: ("cross_entropy", "focal"),
    REGRESSION: ("mse", "mae", "huber"),
}


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise ValueError
        return value

    return parse


def _float_range(low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = float(text)
        if (
            value != value
            or (value <= low if low_open else value < low)
            or (value >= high if high_open else value > high)
        ):
            raise ValueError
        return value

    return parse


def _choice(options: tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in options:
            raise ValueError
        return value

    return parse


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise ValueError


def _int_list(text: str) -> tuple[int, ...]:
    stripped = text.strip().strip("[]()")
    if not stripped:
        return ()
    values = tuple(int(part) for part in stripped.split(","))
    if any(value <= 0 for value in values):
        raise ValueError
    return values


def _task(text: str) -> str | None:
    value = text.strip().lower()
    if value in ("", "auto"):
        return None
    if value not in TASKS:
        raise ValueError
    return value


def _class_weights(text: str) -> tuple[float, ...] | str | None:
    value = text.strip().lower()
    if value in ("", "none"):
        return None
    if value == "balanced":
        return "balanced"
    weights = tuple(float(part) for part in value.strip("[]()").split(","))
    if any(not weight > 0 for weight in weights):
        raise ValueError
    return weights


def _patience(text: str) -> int | None:
    value = text.strip().lower()
    return None if value == "auto" else _int_at_least(0)(value)


def _optional_text(text: str) -> str | None:
    return text.strip() or None


def _column_list(text: str) -> tuple[str, ...] | None:
    parts = tuple(part.strip() for part in text.strip().strip("[]").split(",") if part.strip())
    return parts or None


# SageMaker Debugger's built-in rules that train/rules.py runs in-process, and the cheap safe set run by default.
RULE_NAMES = (
    "VanishingGradient",
    "ExplodingTensor",
    "LossNotDecreasing",
    "Overfit",
    "Overtraining",
    "ClassImbalance",
    "PoorWeightInitialization",
    "DeadRelu",
    "SaturatedActivation",
    "WeightUpdateRatio",
    "StalledTraining",
)
DEFAULT_RULES = ("ExplodingTensor", "LossNotDecreasing", "Overfit", "ClassImbalance", "StalledTraining")


def _rule_name(text: str) -> str:
    by_lower = {name.lower(): name for name in RULE_NAMES}
    name = by_lower.get(text.strip().lower())
    if name is None:
        raise ValueError
    return name


def _rules(text: str) -> tuple[str, ...]:
    """Rule names (any case); `default` and `all` expand, `none` (alone) is no rule."""
    parts = [part.strip() for part in text.strip().strip("[]").split(",") if part.strip()]
    if [part.lower() for part in parts] == ["none"]:
        return ()
    names: list[str] = []
    for part in parts:
        groups = {"default": DEFAULT_RULES, "all": RULE_NAMES}
        expanded = groups[part.lower()] if part.lower() in groups else (_rule_name(part),)
        names += [name for name in expanded if name not in names]
    return tuple(names)


def _rule_parameters(text: str) -> tuple[str, ...]:
    """`Rule.parameter=value` items; the rule name is made canonical here, the parameter checked by the rule."""
    items = []
    for part in (part.strip() for part in text.split(",")):
        if not part:
            continue
        key, equals, value = part.partition("=")
        rule, dot, parameter = key.strip().partition(".")
        if not (equals and dot and parameter.strip() and value.strip()):
            raise ValueError
        items.append(f"{_rule_name(rule)}.{parameter.strip()}={value.strip()}")
    return tuple(items)


def _hp(default: Any, parse: Callable[[str], Any], expected: str, help: str, group: str, shown: str = "") -> Any:
    """A hyperparameter; `shown` is how the docs write a default of None ("auto"), when not "none"."""
    metadata = {"parse": parse, "expected": expected, "help": help, "group": group, "shown": shown}
    return field(default=default, metadata=metadata)


POSITIVE_INT = "a positive integer"
AUTO_EARLY_STOPPING_PATIENCE = 5  # epochs, when early_stopping_patience=auto and a validation channel exists
NON_NEGATIVE = "a number ≥ 0"


@dataclass(frozen=True)
class Hyperparameters:
    # --- task and data ---
    task: str | None = _hp(
        None,
        _task,
        f"one of auto, {', '.join(TASKS)}",
        "what to predict; inferred from the labels when auto",
        "data",
        shown="auto",
    )
    num_classes: int | None = _hp(
        None,
        _int_at_least(2),
        "an integer ≥ 2",
        "declare the class count: labels must be integers 0..num_classes-1",
        "data",
    )
    label_column: str | None = _hp(
        None,
        _optional_text,
        "a column name or 0-based index",
        "label column of CSV with a header, Parquet or JSON Lines (default: first column / 'label')",
        "data",
    )
    feature_columns: tuple[str, ...] | None = _hp(
        None,
        _column_list,
        'comma-separated column names or indices such as "age,income"',
        "feature columns to use (default: all but label and time column)",
        "data",
    )
    categorical_columns: tuple[str, ...] | None = _hp(
        None,
        _column_list,
        'comma-separated column names or indices such as "zip,plan"',
        "columns to one-hot encode even when their values look numeric (text columns always are)",
        "data",
    )
    csv_header: str = _hp(
        "auto",
        _choice(("auto", "true", "false")),
        "auto, true or false",
        "does a CSV file's first row name the columns? auto detects it",
        "data",
    )
    array_layout: str = _hp(
        "auto",
        _choice(("auto", "image", "sequence")),
        "auto, image or sequence",
        "3-D arrays (npz/npy/JSON Lines): N×H×W images (model=cnn) or N×T×F sequences; auto follows the model",
        "data",
    )
    time_column: str | None = _hp(
        None,
        _optional_text,
        "a column name",
        "column giving row order in time; excluded from features; cv must then be timeseries",
        "data",
    )
    data_loading: str = _hp(
        "auto",
        _choice(("auto", "memory", "stream")),
        "auto, memory or stream",
        "memory: load each channel whole; stream: read it block by block, memory bounded by the blocks and"
        " shuffle_buffer_rows; auto streams Pipe/FastFile input, sharded channels across hosts and channels"
        " too big for the container's memory",
        "data",
    )
    shuffle_buffer_rows: int = _hp(
        50_000,
        _int_at_least(1),
        POSITIVE_INT,
        "stream: rows shuffled together (blocks are shuffled too); more shuffles better and holds more memory",
        "data",
    )
    pipe_read_timeout_seconds: float = _hp(
        600.0,
        _float_range(0.0, float("inf"), low_open=True, high_open=True),
        "a positive number of seconds",
        "Pipe mode: fail when a channel's FIFO delivers no data for this long (a stalled or missing pipe)",
        "data",
    )
    # --- model ---
    model: str = _hp(
        "mlp",
        _choice(MODELS),
        f"one of {', '.join(MODELS)}",
        "network: mlp (tabular), cnn (images), rnn/lstm/gru (sequences)",
        "model",
    )
    hidden_units: tuple[int, ...] = _hp(
        (64, 32),
        _int_list,
        'comma-separated positive integers such as "64,32"',
        "widths of the dense hidden layers (after conv/recurrent layers for cnn/rnn)",
        "model",
    )
    activation: str = _hp(
        "relu",
        _choice(ACTIVATION_NAMES),
        f"one of {', '.join(ACTIVATION_NAMES)}",
        "hidden-layer activation; the output activation follows the task",
        "model",
    )
    dropout: float = _hp(
        0.0,
        _float_range(0.0, 1.0, high_open=True),
        "a number in [0, 1)",
        "dropout probability after each hidden block",
        "model",
    )
    batch_norm: bool = _hp(False, _bool, "true or false", "batch normalization in each hidden block", "model")
    conv_channels: tuple[int, ...] = _hp(
        (16, 32),
        _int_list,
        'comma-separated positive integers such as "16,32"',
        "cnn: output channels of each conv + pooling block",
        "model",
    )
    kernel_size: int = _hp(3, _int_at_least(1), POSITIVE_INT, "cnn: convolution kernel size", "model")
    hidden_size: int = _hp(64, _int_at_least(1), POSITIVE_INT, "rnn/lstm/gru: hidden state size", "model")
    num_layers: int = _hp(1, _int_at_least(1), POSITIVE_INT, "rnn/lstm/gru: stacked recurrent layers", "model")
    bidirectional: bool = _hp(False, _bool, "true or false", "rnn/lstm/gru: read sequences both ways", "model")
    freeze_layers: int = _hp(
        0,
        _int_at_least(0),
        "an integer ≥ 0",
        "transfer learning: freeze the first N blocks (see the model channel)",
        "model",
    )
    # --- optimization ---
    epochs: int = _hp(20, _int_at_least(1), POSITIVE_INT, "passes over the training data", "optimization")
    batch_size: int = _hp(64, _int_at_least(1), POSITIVE_INT, "rows per mini-batch", "optimization")
    optimizer: str = _hp(
        "adam",
        _choice(OPTIMIZERS),
        f"one of {', '.join(OPTIMIZERS)}",
        "optimization algorithm",
        "optimization",
    )
    learning_rate: float = _hp(
        1e-3,
        _float_range(0.0, float("inf"), low_open=True, high_open=True),
        "a positive number such as 0.001",
        "initial step size",
        "optimization",
    )
    momentum: float = _hp(
        0.9, _float_range(0.0, 1.0, high_open=True), "a number in [0, 1)", "sgd momentum", "optimization"
    )
    lr_scheduler: str = _hp(
        "none",
        _choice(SCHEDULERS),
        f"one of {', '.join(SCHEDULERS)}",
        "learning-rate schedule, stepped once per epoch",
        "optimization",
    )
    lr_step_size: int = _hp(10, _int_at_least(1), POSITIVE_INT, "step: epochs between decays", "optimization")
    lr_gamma: float = _hp(
        0.1,
        _float_range(0.0, 1.0, low_open=True, high_open=True),
        "a number in (0, 1)",
        "step/plateau: decay factor",
        "optimization",
    )
    lr_patience: int = _hp(
        2,
        _int_at_least(0),
        "an integer ≥ 0",
        "plateau: epochs without improvement before decaying",
        "optimization",
    )
    grad_clip: float = _hp(
        0.0,
        _float_range(0.0, float("inf"), high_open=True),
        NON_NEGATIVE,
        "clip the gradient norm to this value; 0 = off",
        "optimization",
    )
    seed: int = _hp(
        42,
        _int_at_least(0),
        "an integer ≥ 0",
        "seed for weights, shuffling, augmentation and folds; same seed + data → same weights on CPU",
        "optimization",
    )
    # --- checkpointing (spot instances, stops) ---
    checkpoint_every_steps: int = _hp(
        0, _int_at_least(0), "an integer ≥ 0", "also checkpoint every N mini-batches; 0 = off", "checkpointing"
    )
    checkpoint_every_seconds: float = _hp(
        300.0,
        _float_range(0.0, float("inf"), high_open=True),
        "a number of seconds ≥ 0",
        "also checkpoint when this long has passed since the last one; 0 = off",
        "checkpointing",
    )
    keep_checkpoints: int = _hp(
        2, _int_at_least(1), POSITIVE_INT, "checkpoints kept per host (older ones are deleted)", "checkpointing"
    )
    # --- regularization ---
    l1: float = _hp(
        0.0,
        _float_range(0.0, float("inf"), high_open=True),
        NON_NEGATIVE,
        "L1 penalty on weights (with l2: elastic net)",
        "regularization",
    )
    l2: float = _hp(
        0.0,
        _float_range(0.0, float("inf"), high_open=True),
        NON_NEGATIVE,
        "L2 penalty on weights (weight decay; decoupled with adamw)",
        "regularization",
    )
    early_stopping_patience: int | None = _hp(
        None,
        _patience,
        "auto or an integer ≥ 0",
        f"stop after N epochs without improvement and restore the best weights; auto ="
        f" {AUTO_EARLY_STOPPING_PATIENCE} with a validation channel, else off; 0 = off",
        "regularization",
        shown="auto",
    )
    early_stopping_metric: str = _hp(
        "validation:loss",
        _optional_text,
        "a logged validation metric such as validation:loss",
        "metric early stopping (and plateau) watches",
        "regularization",
    )
    augment: bool = _hp(
        False,
        _bool,
        "true or false",
        "cnn: random horizontal flip and random crop (pad 4) on training images",
        "regularization",
    )
    # --- loss ---
    loss: str = _hp(
        "auto",
        _choice(LOSSES),
        f"one of {', '.join(LOSSES)}",
        "loss: auto = bce (binary), cross_entropy (multiclass), mse (regression)",
        "loss",
    )
    huber_delta: float = _hp(
        1.0,
        _float_range(0.0, float("inf"), low_open=True, high_open=True),
        "a positive number",
        "huber: where the loss turns from quadratic to linear (in standardized target units)",
        "loss",
    )
    focal_gamma: float = _hp(
        2.0,
        _float_range(0.0, float("inf"), high_open=True),
        NON_NEGATIVE,
        "focal: focusing parameter γ",
        "loss",
    )
    focal_alpha: float = _hp(
        0.25,
        _float_range(0.0, 1.0),
        "a number in [0, 1]",
        "focal (binary): weight α of the positive class",
        "loss",
    )
    class_weights: tuple[float, ...] | str | None = _hp(
        None,
        _class_weights,
        'balanced or one positive weight per class such as "1,5"',
        "per-class loss weights for imbalanced data",
        "loss",
    )
    # --- evaluation ---
    f_beta: float = _hp(
        1.0,
        _float_range(0.0, float("inf"), low_open=True, high_open=True),
        "a positive number",
        "β of the logged f_beta metric (β > 1 favours recall)",
        "evaluation",
    )
    k_folds: int = _hp(
        0,
        _int_at_least(0),
        "0 (off) or an integer ≥ 2",
        "cross-validation folds over the train channel before the final fit",
        "evaluation",
    )
    cv_strategy: str = _hp(
        "auto",
        _choice(CV_STRATEGIES),
        f"one of {', '.join(CV_STRATEGIES)}",
        "fold assignment: auto = stratified (classification) or kfold (regression); timeseries = walk-forward",
        "evaluation",
    )
    # --- bias (SageMaker Clarify's metrics) ---
    facet_column: tuple[str, ...] | None = _hp(
        None,
        _column_list,
        'comma-separated column names or indices such as "sex,age"',
        "sensitive column(s): bias metrics (Clarify's) before and after training, in output/data/analysis.json",
        "bias",
    )
    facet_value: str | None = _hp(
        None,
        _optional_text,
        'values per facet column, columns separated by ";" such as "female;40" (a number: values above it)',
        "the group(s) of interest of each facet column (default: each value of a categorical column in turn)",
        "bias",
    )
    positive_label: str | None = _hp(
        None,
        _optional_text,
        "label value(s), comma-separated; for regression a threshold (labels above it are positive)",
        "the favourable outcome the bias metrics count (default: the positive class of binary classification)",
        "bias",
        shown="auto",
    )
    group_column: str | None = _hp(
        None,
        _optional_text,
        "a column name or 0-based index",
        "subgroups for the conditional metrics CDDL and CDDPL",
        "bias",
    )
    # --- explanations (SHAP) ---
    explain_rows: int = _hp(
        100,
        _int_at_least(0),
        "an integer ≥ 0 (0: off)",
        "rows (of validation, else test, else train) whose SHAP values give the global feature importance",
        "explain",
    )
    explain_background: str = _hp(
        "kmeans",
        _choice(("kmeans", "rows")),
        "kmeans or rows",
        "the SHAP background saved with the model: k-means centroids of the train rows, or a raw sample (rows)",
        "explain",
    )
    explain_background_size: int = _hp(
        10,
        _int_at_least(1),
        POSITIVE_INT,
        "centroids (or rows) in the background: more is steadier and slower per explained request",
        "explain",
    )
    # --- training rules (SageMaker Debugger's built-in rules) and profiling ---
    rules: tuple[str, ...] = _hp(
        DEFAULT_RULES,
        _rules,
        f"default, all, none, or comma-separated names from {', '.join(RULE_NAMES)}",
        "rules checked during training (default: " + ", ".join(DEFAULT_RULES) + ")",
        "rules",
    )
    rule_parameters: tuple[str, ...] = _hp(
        (),
        _rule_parameters,
        'comma-separated Rule.parameter=value such as "LossNotDecreasing.num_steps=20"',
        "rule parameters other than Debugger's defaults",
        "rules",
    )
    rule_action: str = _hp(
        "log",
        _choice(("log", "stop")),
        "log or stop",
        "what a triggered rule does: log a warning, or stop the job with a failure naming the rule",
        "rules",
    )
    tensorboard: bool = _hp(
        True,
        _bool,
        "true or false",
        "write metrics, the profile (and histograms a rule watches) to /opt/ml/output/tensorboard",
        "rules",
    )

    def patience(self, has_validation: bool) -> int:
        """early_stopping_patience with auto resolved: a validation channel to watch turns it on. Small data
        overfits within a few epochs of a first run's learning rate (sklearn's diabetes table: validation R²
        -0.02 after 100 epochs, 0.33 with early stopping), and the best weights are restored at the end."""
        if self.early_stopping_patience is not None:
            return self.early_stopping_patience
        return AUTO_EARLY_STOPPING_PATIENCE if has_validation else 0

    def to_json(self) -> dict[str, Any]:
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}


def describe() -> list[dict[str, str]]:
    """Name, default, expected values, meaning and group of each hyperparameter (for docs)."""
    rows = []
    for spec in fields(Hyperparameters):
        default = spec.default if spec.default is not MISSING else ""
        if isinstance(default, tuple):
            default = ",".join(str(v) for v in default)
        if default is None:
            default = spec.metadata["shown"] or "none"
        rows.append(
            {
                "name": spec.name,
                "default": str(default).lower() if isinstance(default, bool) else str(default),
                "expected": spec.metadata["expected"],
                "help": spec.metadata["help"],
                "group": spec.metadata["group"],
            }
        )
    return rows


def combination_problems(hp: Hyperparameters) -> list[str]:
    """Settings that are each valid but cannot work together, as messages that say what to change."""
    problems = []
    if hp.k_folds == 1:
        problems.append("k_folds=1 is not cross-validation: use 0 (off) or at least 2")
    if hp.time_column and hp.k_folds and hp.cv_strategy in ("kfold", "stratified"):
        problems.append(
            f"cv_strategy={hp.cv_strategy} shuffles rows, but time_column={hp.time_column!r} says they are ordered in"
            " time: random folds would train on the future and validate on the past; use cv_strategy=timeseries"
        )
    if hp.task is not None and hp.loss != "auto" and hp.loss not in TASK_LOSSES[hp.task]:
        problems.append(f"loss={hp.loss} does not fit task={hp.task}: use one of {', '.join(TASK_LOSSES[hp.task])}")
    if hp.task == REGRESSION and hp.class_weights is not None:
        problems.append("class_weights applies to classification, but task=regression")
    if hp.task == REGRESSION and hp.cv_strategy == "stratified":
        problems.append("cv_strategy=stratified needs classes, but task=regression: use kfold or timeseries")
    if hp.task == BINARY and isinstance(hp.class_weights, tuple) and len(hp.class_weights) != 2:
        problems.append(f"class_weights has {len(hp.class_weights)} values; binary_classification needs 2")
    if hp.num_classes is not None and hp.task in (BINARY, REGRESSION):
        if not (hp.task == BINARY and hp.num_classes == 2):
            problems.append(f"num_classes={hp.num_classes} does not fit task={hp.task}")
    if isinstance(hp.class_weights, tuple) and hp.num_classes and len(hp.class_weights) != hp.num_classes:
        problems.append(f"class_weights has {len(hp.class_weights)} values but num_classes={hp.num_classes}")
    if hp.augment and hp.model not in IMAGE_MODELS:
        problems.append(f"augment=true flips and crops images, so it needs model=cnn (model={hp.model})")
    if not hp.early_stopping_metric.startswith("validation:"):
        problems.append(
            f"early_stopping_metric={hp.early_stopping_metric!r} must be a validation metric such as validation:loss"
        )
    return problems


def parse_hyperparameters(values: Mapping[str, str]) -> Hyperparameters:
    known = {spec.name: spec for spec in fields(Hyperparameters)}
    parsed: dict[str, Any] = {}
    problems: list[str] = []
    for key, text in values.items():
        spec = known.get(key)
        if spec is None:
            close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
            hint = f"did you mean {' or '.join(close)}?" if close else "the README lists every hyperparameter"
            problems.append(f"unknown hyperparameter {key!r} ({hint})")
            continue
        try:
            parsed[key] = spec.metadata["parse"](text)
        except ValueError:
            problems.append(f"{key}={text!r} is invalid: expected {spec.metadata['expected']}")
    problems += combination_problems(Hyperparameters(**parsed))
    if problems:
        raise UserError("Invalid hyperparameters: " + "; ".join(problems))
    return Hyperparameters(**parsed)
