"""Bias metrics (SageMaker Clarify's) computed by the training job itself, on tabular data.

hyperparameters → `resolve` → BiasSpec (every check that needs no data, before training)
rows of a channel → `count_block` → BiasCounts (mergeable: `merge_counts`), per block or for the whole channel
train counts → `check_train_counts` (a facet value no train row has) → `pre_training` section
validation/test counts (+ predicted labels, + a `FlipSample` of rows for FT) → `post_training` section
sections → `analysis` (Clarify's analysis.json shape) → `summary` (model card) and `di_warnings`.

Rows arrive as the ENCODED, UNSCALED feature matrix (container/features.py: numeric columns as they are,
categorical columns one-hot), so facet membership is read back from it: the one-hot output that is set
(all zeros: a category training never saw), or the numeric value compared with the threshold. Labels are
the trainer's class indices (LabelEncoding.classes order), or regression values in the label's own units.

Terms as Clarify's: facet d is the group of interest (the facet value, or the values ABOVE a numeric
threshold) and facet a is every other row; a positive label is the favourable outcome.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from optml.container.errors import UserError
from optml.container.features import CATEGORICAL, FeatureEncoder, category_text, is_number
from optml.container.kinds import BINARY, MULTICLASS, REGRESSION, TABULAR_MODELS
from optml.train import bias_metrics
from optml.train.hyperparameters import Hyperparameters
from optml.train.preprocessing import LabelEncoding
from optml.train.sampling import RowSample

ANALYSIS_VERSION = "1.0"
MAX_GROUPS = 1000  # distinct values of a numeric group_column; more is an ID, not a grouping
FT_MAX_ROWS = 2000  # rows kept per channel for FlipTest (k-NN of every d row against every a row)
DI_RANGE = (0.8, 1.25)  # the four-fifths rule, both ways


@dataclass(frozen=True)
class ColumnRef:
    """A feature column as the encoded matrix holds it: from `offset`, `width` outputs."""

    name: str
    kind: str
    offset: int
    categories: tuple[str, ...] = ()

    @property
    def width(self) -> int:
        return len(self.categories) if self.kind == CATEGORICAL else 1

    @property
    def codes(self) -> int:
        """Distinct codes `column_codes` gives: a category each plus "none" (categorical), or ≤/>."""
        return len(self.categories) + 1 if self.kind == CATEGORICAL else 2


@dataclass(frozen=True)
class FacetSpec:
    column: ColumnRef
    values: tuple[str, ...] | None = None  # categorical: the group of interest; None: each value in turn
    threshold: float | None = None  # numeric: values above it are the group of interest


@dataclass(frozen=True)
class BiasSpec:
    facets: tuple[FacetSpec, ...]
    group: ColumnRef | None
    task: str
    classes: tuple[Any, ...]
    positive: tuple[int, ...] = ()  # classification: the class indices that are the positive label
    label_threshold: float | None = None  # regression: labels above it are positive
    label_name: str = "label"


# --- hyperparameters → BiasSpec ----------------------------------------------------------------------


def column_refs(encoder: FeatureEncoder) -> dict[str, ColumnRef]:
    refs, offset = {}, 0
    for column in encoder.columns:
        refs[column.name] = ColumnRef(column.name, column.kind, offset, column.categories)
        offset += column.width
    return refs


def _column(reference: str, what: str, refs: Mapping[str, ColumnRef], file_columns: Sequence[str] | None) -> ColumnRef:
    """A column named, or given by 0-based position in the file (as label_column)."""
    name = reference
    if reference.isdigit():
        position = int(reference)
        headerless = all(n.startswith("column ") for n in refs)
        if file_columns is not None:
            if position >= len(file_columns):
                raise UserError(f"{what} {position} is out of range: the train data has {len(file_columns)} columns")
            name = file_columns[position]
        elif headerless:
            name = f"column {position + 1}"  # how a headerless CSV's columns are named
        else:
            raise UserError(f"{what} {position}: refer to the column by name (columns: {', '.join(refs)})")
    if name not in refs:
        raise UserError(f"{what} {reference!r} is not a feature column of the train data; columns: {', '.join(refs)}")
    return refs[name]


def _category(value: str, column: ColumnRef, what: str) -> str:
    if value in column.categories:
        return value
    if is_number(value) and category_text(float(value)) in column.categories:  # "3.0" names category "3"
        return category_text(float(value))
    raise UserError(
        f"{what} {value!r} never occurs in column {column.name!r} of channel 'train'; values seen:"
        f" {', '.join(column.categories[:50])}{' …' if len(column.categories) > 50 else ''}"
    )


def _facet(column: ColumnRef, text: str) -> FacetSpec:
    values = tuple(dict.fromkeys(v.strip() for v in text.split(",") if v.strip()))
    if column.kind == CATEGORICAL:
        if not values:
            return FacetSpec(column)
        return FacetSpec(column, values=tuple(_category(v, column, "facet_value") for v in values))
    if len(values) != 1 or not is_number(values[0]):
        shown = f"{text!r}" if values else "nothing"
        raise UserError(
            f"facet column {column.name!r} is numeric: facet_value needs one threshold for it (rows with a value"
            f" above it are the group of interest), got {shown}; or list the column in categorical_columns"
        )
    threshold = float(values[0])
    if not math.isfinite(threshold):
        raise UserError(f"facet_value {values[0]!r} for column {column.name!r} is not a finite number")
    return FacetSpec(column, threshold=threshold)


def _facets(hp: Hyperparameters, refs: Mapping[str, ColumnRef], file_columns: Sequence[str] | None) -> list[FacetSpec]:
    columns = [_column(ref, "facet_column", refs, file_columns) for ref in hp.facet_column or ()]
    names = [c.name for c in columns]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UserError(f"facet_column names {', '.join(repeated)} more than once")
    parts = [""] * len(columns) if hp.facet_value is None else hp.facet_value.split(";")
    if len(parts) != len(columns):
        raise UserError(
            f"facet_value has {len(parts)} part(s) separated by ';' but facet_column names {len(columns)} column(s)"
            f" ({', '.join(names)}): give one part per column (empty: each value of a categorical column in turn)"
        )
    return [_facet(column, part) for column, part in zip(columns, parts, strict=True)]


def _class_index(text: str, classes: Sequence[Any]) -> int:
    for index, value in enumerate(classes):
        if category_text(value) == text or (is_number(text) and category_text(float(text)) == category_text(value)):
            return index
    raise UserError(f"positive_label {text!r} is not a class of the train labels; classes: {list(classes)}")


def _positive(hp: Hyperparameters, task: str, classes: Sequence[Any]) -> tuple[tuple[int, ...], float | None]:
    """The positive class indices (classification) or the label threshold (regression)."""
    text = hp.positive_label
    if task == REGRESSION:
        if text is None or not is_number(text) or not math.isfinite(float(text)):
            raise UserError(
                "bias metrics for regression need positive_label: a number, labels above it are the positive"
                f" (favourable) outcome (got {text!r})"
            )
        return (), float(text)
    if text is None:
        if task == MULTICLASS:
            raise UserError(
                "bias metrics for multiclass_classification need positive_label: the favourable class(es),"
                f" comma-separated; classes: {list(classes)}"
            )
        return (1,), None  # binary: classes[1], the class the model's probability is about
    indices = tuple(sorted({_class_index(v.strip(), classes) for v in text.split(",") if v.strip()}))
    if not indices:
        raise UserError(f"positive_label {text!r} names no class; classes: {list(classes)}")
    return indices, None


def resolve(
    hp: Hyperparameters,
    encoder: FeatureEncoder | None,
    classes: Sequence[Any],
    task: str,
    label_name: str | None = None,
    file_columns: Sequence[str] | None = None,
) -> BiasSpec | None:
    """The bias analysis the hyperparameters ask for (None: no facet_column), checked before training.
    `encoder`: the train channel's (Dataset.encoder; None for array data); `classes`: LabelEncoding.classes
    (empty for regression); `file_columns`: the train file's columns in order, for 0-based positions of a
    file with a header (a headerless CSV's positions work without it)."""
    if not hp.facet_column:
        return None
    if hp.model not in TABULAR_MODELS:
        raise UserError(
            f"facet_column needs tabular data and model={TABULAR_MODELS[0]} (model={hp.model}): bias metrics"
            " compare groups of rows told apart by a column"
        )
    if encoder is None:
        raise UserError("facet_column needs tabular data with columns; channel 'train' holds arrays without them")
    if task not in (BINARY, MULTICLASS, REGRESSION):
        raise UserError(f"bias metrics: unknown task {task!r}")
    refs = column_refs(encoder)
    facets = _facets(hp, refs, file_columns)
    group = _column(hp.group_column, "group_column", refs, file_columns) if hp.group_column else None
    positive, threshold = _positive(hp, task, classes)
    return BiasSpec(tuple(facets), group, task, tuple(classes), positive, threshold, label_name or "label")


# --- rows → counts -----------------------------------------------------------------------------------


def column_codes(features: np.ndarray, column: ColumnRef, threshold: float | None = None) -> np.ndarray:
    """Per row: a categorical column's category index (len(categories) when no one-hot output is set: a
    value training never saw, or a missing one), or for a numeric column 1 above `threshold`, else 0."""
    if column.kind == CATEGORICAL:
        block = features[:, column.offset : column.offset + column.width]
        if block.shape[1] == 0:
            return np.zeros(len(features), dtype=np.int64)
        return np.where(block.max(axis=1) > 0.5, block.argmax(axis=1), column.width).astype(np.int64)
    if threshold is None:
        raise ValueError(f"numeric column {column.name!r} needs a threshold")
    return (features[:, column.offset] > threshold).astype(np.int64)


def facet_codes(features: np.ndarray, facet: FacetSpec) -> np.ndarray:
    """The facet code of each row of an encoded, unscaled (N, F) feature block: which category of the facet
    column it holds, or whether it is above the threshold. Works on any block of rows."""
    return column_codes(features, facet.column, facet.threshold)


def group_keys(features: np.ndarray, group: ColumnRef) -> np.ndarray:
    """The group of each row: a categorical column's category index, or a numeric column's value."""
    if group.kind == CATEGORICAL:
        return column_codes(features, group)
    return features[:, group.offset].astype(np.float64)


def labels_for_bias(encoding: LabelEncoding, labels: np.ndarray, channel: str) -> np.ndarray:
    """A channel's labels as `count_block` takes them: class indices (classification), or the values in the
    label's own units (regression: not the standardized targets the network trains on)."""
    if encoding.task == REGRESSION:
        return np.asarray(labels, dtype=np.float64)
    return encoding.encode(labels, channel)


def positive_labels(spec: BiasSpec, labels: np.ndarray) -> np.ndarray:
    """Whether each label (class index, or regression value) is the positive outcome."""
    values = np.asarray(labels)
    if spec.task == REGRESSION:
        assert spec.label_threshold is not None
        return values.astype(np.float64) > spec.label_threshold
    return np.isin(values.astype(np.int64), np.asarray(spec.positive, dtype=np.int64))


@dataclass
class BiasCounts:
    """The counts of one channel. Per facet column and group key, an int64 table [facet code, label
    positive, predicted positive] (predicted is always 0 without predictions). Add blocks, processes and
    hosts with `merge_counts`: the metrics of merged counts equal those of all rows counted at once."""

    tables: dict[str, dict[Any, np.ndarray]] = field(default_factory=dict)
    maxima: dict[str, float] = field(default_factory=dict)  # numeric facet column → largest value
    label_max: float = -math.inf  # regression: the largest label or predicted value (Clarify's "(t, max]")
    rows: int = 0
    predicted: bool = False

    def add(self, other: BiasCounts) -> None:
        for column, groups in other.tables.items():
            mine = self.tables.setdefault(column, {})
            for key, table in groups.items():
                mine[key] = mine[key] + table if key in mine else table.copy()
        for column, value in other.maxima.items():
            self.maxima[column] = max(self.maxima.get(column, -math.inf), value)
        self.label_max = max(self.label_max, other.label_max)
        self.rows += other.rows
        self.predicted = self.predicted or other.predicted


def merge_counts(parts: Iterable[BiasCounts]) -> BiasCounts:
    """The sum of counts (of blocks, or of every process: `merge_counts(distributed.gather_objects(c))`)."""
    total = BiasCounts()
    for part in parts:
        total.add(part)
    return total


def _group_tables(codes: np.ndarray, width: int, cells: np.ndarray, keys: np.ndarray | None) -> dict[Any, np.ndarray]:
    """Per group key, the (width, 2, 2) table of the rows: one bincount over (group, code, cell)."""
    unique, inverse = (
        (np.zeros(1), np.zeros(len(codes), dtype=np.int64)) if keys is None else np.unique(keys, return_inverse=True)
    )
    if len(unique) > MAX_GROUPS:
        raise UserError(f"group_column has more than {MAX_GROUPS} distinct values; it needs a grouping column")
    flat = (inverse.astype(np.int64) * width + codes) * 4 + cells
    tables = np.bincount(flat, minlength=len(unique) * width * 4).reshape(len(unique), width, 2, 2)
    if keys is None:
        return {0: tables[0].astype(np.int64)}
    return {key: tables[index].astype(np.int64) for index, key in enumerate(unique.tolist())}


def count_block(
    spec: BiasSpec, features: np.ndarray, labels: np.ndarray, predicted: np.ndarray | None = None
) -> BiasCounts:
    """Counts of a block of rows: encoded, unscaled (N, F) features; labels as class indices (or regression
    values); predicted labels the same way (post-training), or None (pre-training)."""
    label_positive = positive_labels(spec, labels)
    predicted_positive = positive_labels(spec, predicted) if predicted is not None else np.zeros_like(label_positive)
    cells = label_positive.astype(np.int64) * 2 + predicted_positive.astype(np.int64)
    keys = group_keys(features, spec.group) if spec.group is not None else None
    counts = BiasCounts(rows=len(features), predicted=predicted is not None)
    for facet in spec.facets:
        codes = facet_codes(features, facet)
        counts.tables[facet.column.name] = _group_tables(codes, facet.column.codes, cells, keys)
        if facet.threshold is not None and len(features):
            counts.maxima[facet.column.name] = float(features[:, facet.column.offset].max())
    if spec.task == REGRESSION and len(labels):
        both = [np.asarray(labels, np.float64)] + ([] if predicted is None else [np.asarray(predicted, np.float64)])
        counts.label_max = float(max(part.max() for part in both))
    return counts


@dataclass
class FlipSample:
    """At most `max_rows` rows of a channel (features and predicted positive) for FlipTest: a uniform
    sample kept as the rows with the smallest random keys, so samples of blocks and processes merge into a
    uniform sample of the union (exactly all rows when the channel has at most `max_rows`)."""

    max_rows: int = FT_MAX_ROWS
    seed: int = 0  # give each process its own (its rank)
    sample: RowSample = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.sample = RowSample(self.max_rows, self.seed)

    @property
    def features(self) -> np.ndarray | None:
        return self.sample.rows

    @property
    def positive(self) -> np.ndarray | None:
        return self.sample.columns[1] if self.sample.columns is not None else None

    def add(self, spec: BiasSpec, features: np.ndarray, predicted: np.ndarray) -> None:
        """A block: encoded, unscaled features and the model's predicted labels (class indices or values)."""
        self.sample.add(features, positive_labels(spec, predicted))

    def merge(self, other: FlipSample) -> None:
        self.sample.merge(other.sample)


def merge_samples(parts: Iterable[FlipSample]) -> FlipSample:
    parts = list(parts)
    total = FlipSample(max_rows=parts[0].max_rows if parts else FT_MAX_ROWS)
    for part in parts:
        total.merge(part)
    return total


# --- checks on the train counts ----------------------------------------------------------------------


def _code_totals(counts: BiasCounts, column: str, width: int) -> np.ndarray:
    groups = counts.tables.get(column, {})
    if not groups:
        return np.zeros(width, dtype=np.int64)
    return np.sum(list(groups.values()), axis=0).sum(axis=(1, 2))


def _check_facet(facet: FacetSpec, totals: np.ndarray, largest: float | None, channel: str) -> None:
    column = facet.column
    if facet.threshold is not None:
        if totals[1] == 0:
            raise UserError(
                f"facet_value {_number(facet.threshold)}: no row of channel {channel!r} has column {column.name!r}"
                f" above it (largest value: {_number(largest) if largest is not None else 'none'})"
            )
        if totals[0] == 0:
            raise UserError(
                f"facet_value {_number(facet.threshold)}: every row of channel {channel!r} has column {column.name!r}"
                " above it, which leaves no other rows to compare with; choose a higher threshold"
            )
        return
    seen = [column.categories[i] for i in np.flatnonzero(totals[: len(column.categories)])]
    wanted = facet.values or ()
    for value in wanted:
        if totals[column.categories.index(value)] == 0:
            raise UserError(
                f"facet_value {value!r} never occurs in column {column.name!r} of channel {channel!r}; values seen:"
                f" {', '.join(seen)}"
            )
    rest = totals.sum() - sum(totals[column.categories.index(v)] for v in wanted)
    if (wanted and rest == 0) or (not wanted and len(seen) + bool(totals[-1]) < 2):
        raise UserError(
            f"column {column.name!r} of channel {channel!r} holds only {', '.join(seen)}: bias metrics need rows"
            " outside the group of interest to compare with"
        )


def check_train_counts(spec: BiasSpec, counts: BiasCounts, channel: str = "train") -> None:
    """What the hyperparameters could not show before the data was counted: a facet value or threshold
    that no train row has (or that every train row has), and a group column with too many values."""
    for facet in spec.facets:
        totals = _code_totals(counts, facet.column.name, facet.column.codes)
        _check_facet(facet, totals, counts.maxima.get(facet.column.name), channel)
        if spec.group is not None and len(counts.tables.get(facet.column.name, {})) > MAX_GROUPS:
            raise UserError(f"group_column has more than {MAX_GROUPS} distinct values; it needs a grouping column")


# --- counts → Clarify's analysis.json ----------------------------------------------------------------


def _number(value: float | None) -> str:
    """A threshold as text: 40, not 40.0 (as Clarify shows an integer threshold)."""
    if value is None:
        return "none"
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _interval(threshold: float, largest: float) -> str:
    """Clarify's name for "above the threshold": the interval (threshold, largest value]."""
    return f"({_number(threshold)}, {_number(max(threshold, largest))}]"


def label_value_or_threshold(spec: BiasSpec, counts: BiasCounts) -> str:
    if spec.task == REGRESSION:
        assert spec.label_threshold is not None
        return _interval(spec.label_threshold, counts.label_max)
    return ",".join(category_text(spec.classes[index]) for index in spec.positive)


def _facet_entries(facet: FacetSpec, counts: BiasCounts) -> list[tuple[str, np.ndarray]]:
    """(value_or_threshold, which facet codes are d) for each comparison Clarify makes for this facet."""
    column = facet.column
    if facet.threshold is not None:
        largest = counts.maxima.get(column.name, facet.threshold)
        return [(_interval(facet.threshold, largest), np.array([False, True]))]
    if facet.values:
        mask = np.isin(np.arange(column.codes), [column.categories.index(v) for v in facet.values])
        return [(",".join(facet.values), mask)]
    totals = _code_totals(counts, column.name, column.codes)
    return [(column.categories[i], np.arange(column.codes) == i) for i in np.flatnonzero(totals[:-1])]


def _collapse(groups: Mapping[Any, np.ndarray], is_d: np.ndarray) -> dict[Any, np.ndarray]:
    """Per group: the (2, 2, 2) table [a or d, label positive, predicted positive]."""
    return {key: np.stack([table[~is_d].sum(axis=0), table[is_d].sum(axis=0)]) for key, table in groups.items()}


def metric_json(metric: bias_metrics.Metric) -> dict[str, Any]:
    """One metric as Clarify writes it: ±inf as "Infinity"/"-Infinity", an undefined one as null + error."""
    entry: dict[str, Any] = {"name": metric.name, "description": metric.description, "value": metric.value}
    if metric.value is not None and math.isinf(metric.value):
        entry["value"] = "Infinity" if metric.value > 0 else "-Infinity"
    elif metric.value is not None and math.isnan(metric.value):
        entry["value"], entry["error"] = None, "not a number"
    if metric.error is not None:
        entry["error"] = metric.error
    return entry


def _flip(facet: FacetSpec, is_d: np.ndarray, sample: FlipSample | None) -> Any:
    """FT for one comparison, on the sample's rows with the facet column's own outputs left out (as Clarify
    leaves the facet column out of the k-NN); None without a sample."""
    if sample is None or sample.features is None or sample.positive is None:
        return None
    features, positive = sample.features, sample.positive
    column = facet.column
    rows_d = is_d[facet_codes(features, facet)]
    kept = np.ones(features.shape[1], dtype=bool)
    kept[column.offset : column.offset + column.width] = False
    other = features[:, kept]
    return lambda: bias_metrics.flip_test(other[~rows_d], positive[~rows_d], other[rows_d], positive[rows_d])


def _section(spec: BiasSpec, counts: BiasCounts, sample: FlipSample | None, post: bool) -> dict[str, Any]:
    facets: dict[str, list[dict[str, Any]]] = {}
    grouped = spec.group is not None
    for facet in spec.facets:
        groups = counts.tables.get(facet.column.name, {})
        entries = []
        for value, is_d in _facet_entries(facet, counts):
            tables = _collapse(groups, is_d) or {0: np.zeros((2, 2, 2), dtype=np.int64)}
            if post:
                metrics = bias_metrics.posttraining_metrics(tables, grouped, _flip(facet, is_d, sample))
            else:
                metrics = bias_metrics.pretraining_metrics(tables, grouped)
            entries.append({"value_or_threshold": value, "metrics": [metric_json(m) for m in metrics]})
        facets[facet.column.name] = entries
    return {
        "label": spec.label_name,
        "label_value_or_threshold": label_value_or_threshold(spec, counts),
        "facets": facets,
    }


def pre_training(spec: BiasSpec, counts: BiasCounts) -> dict[str, Any]:
    """Clarify's "pre_training_bias_metrics" section, from the train channel's counts (labels only)."""
    return _section(spec, counts, None, post=False)


def post_training(spec: BiasSpec, counts: BiasCounts, sample: FlipSample | None = None) -> dict[str, Any]:
    """Clarify's "post_training_bias_metrics" section, from a channel's counts with predicted labels and a
    sample of its rows for FT (None: FT is reported undefined)."""
    if not counts.predicted:
        raise ValueError("post-training bias metrics need counts made with predicted labels")
    return _section(spec, counts, sample, post=True)


def analysis(pre: Mapping[str, Any] | None, post: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """analysis.json: Clarify's keys, with "post_training_bias_metrics" from channel test when there is one,
    else validation; the post-training sections of every channel are under "optml" (which Clarify readers
    ignore): {"post_training_channel": ..., "post_training_bias_metrics_by_channel": {channel: section}}."""
    report: dict[str, Any] = {"version": ANALYSIS_VERSION}
    if pre is not None:
        report["pre_training_bias_metrics"] = dict(pre)
    channel = "test" if "test" in post else next(iter(post), None)
    if channel is not None:
        report["post_training_bias_metrics"] = dict(post[channel])
    report["optml"] = {
        "pre_training_channel": "train" if pre is not None else None,
        "post_training_channel": channel,
        "post_training_bias_metrics_by_channel": {name: dict(section) for name, section in post.items()},
    }
    return report


# --- model card summary and warnings -----------------------------------------------------------------

SUMMARY_PRE = ("CI", "DPL")
SUMMARY_POST = ("DPPL", "DI", "AD")


def _value(metrics: Sequence[Mapping[str, Any]], name: str) -> str:
    for metric in metrics:
        if metric["name"] == name:
            value = metric["value"]
            if isinstance(value, (int, float)):
                return f"{name} {value:.3f}"
            return f"{name} {value}" if value is not None else f"{name} n/a"
    return f"{name} n/a"


def _entries_by_facet(section: Mapping[str, Any] | None) -> dict[tuple[str, str], list[Mapping[str, Any]]]:
    found: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for column, entries in (section or {}).get("facets", {}).items():
        for entry in entries:
            found[(column, entry["value_or_threshold"])] = entry["metrics"]
    return found


def summary(report: Mapping[str, Any]) -> str:
    """A few lines for the model card: per facet value, CI and DPL of the train labels, and DPPL, DI and AD
    of the model's predictions on the post-training channel."""
    pre = _entries_by_facet(report.get("pre_training_bias_metrics"))
    post = _entries_by_facet(report.get("post_training_bias_metrics"))
    channel = report.get("optml", {}).get("post_training_channel")
    section = report.get("pre_training_bias_metrics") or report.get("post_training_bias_metrics") or {}
    lines = [
        f"Bias (SageMaker Clarify's metrics; positive label {section.get('label_value_or_threshold', '?')};"
        " d = the group of interest, a = the other rows):"
    ]
    for column, value in list(dict.fromkeys([*pre, *post])):
        parts = []
        if (column, value) in pre:
            parts.append("train labels: " + ", ".join(_value(pre[(column, value)], n) for n in SUMMARY_PRE))
        if (column, value) in post:
            metrics = post[(column, value)]
            parts.append(f"{channel} predictions: " + ", ".join(_value(metrics, n) for n in SUMMARY_POST))
        lines.append(f"  {column} {value}: " + "; ".join(parts))
    return "\n".join(lines)


def di_warnings(report: Mapping[str, Any]) -> list[str]:
    """A line per facet value and post-training channel whose disparate impact lies outside [0.8, 1.25]:
    the model gives the positive outcome to the group of interest at under 4/5 (or over 5/4) the rate of
    the other rows."""
    by_channel = report.get("optml", {}).get("post_training_bias_metrics_by_channel") or {}
    if not by_channel and report.get("post_training_bias_metrics"):
        by_channel = {"validation": report["post_training_bias_metrics"]}
    low, high = DI_RANGE
    lines = []
    for channel, section in by_channel.items():
        for (column, value), metrics in _entries_by_facet(section).items():
            di = next((m["value"] for m in metrics if m["name"] == "DI"), None)
            number = math.inf if di == "Infinity" else di
            if isinstance(number, (int, float)) and not low <= number <= high:
                lines.append(
                    f"bias: disparate impact DI={number:.3f} for {column} {value} on channel {channel} is outside"
                    f" [{low}, {high}]: the model predicts the positive label for this group at {number:.2f}x the"
                    " rate of the other rows"
                )
    return lines
