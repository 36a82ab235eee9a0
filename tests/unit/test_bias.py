"""Bias metrics: every metric against a hand calculation, edge cases, mergeable counts, facet resolution
and Clarify's analysis.json shape."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from optml.container.errors import UserError
from optml.container.features import CATEGORICAL, FeatureColumn, FeatureEncoder
from optml.container.kinds import BINARY, MULTICLASS, REGRESSION
from optml.train import bias, bias_metrics
from optml.train.data import DataOptions, load_channel
from optml.train.hyperparameters import Hyperparameters
from optml.train.preprocessing import LabelEncoding

ENCODER = FeatureEncoder(
    (
        FeatureColumn("sex", CATEGORICAL, ("f", "m")),
        FeatureColumn("age"),
        FeatureColumn("region", CATEGORICAL, ("n", "s")),
    )
)
CLASSES = ("no", "yes")  # binary: positive label "yes" = class index 1
# Facet sex=f is d (n_d = 4), sex=m is a (n_a = 6); region is the group column.
#          sex  age  region  y  y_hat
ROWS = [
    ("m", 30, "n", 1, 1),
    ("m", 45, "n", 1, 1),
    ("m", 50, "n", 1, 0),
    ("m", 20, "s", 1, 0),
    ("m", 61, "s", 0, 1),
    ("m", 33, "s", 0, 0),
    ("f", 41, "n", 1, 0),
    ("f", 25, "s", 0, 1),
    ("f", 63, "s", 0, 0),
    ("f", 38, "s", 0, 0),
]
FEATURES = ENCODER.transform([list(row[:3]) for row in ROWS])
LABELS = np.array([row[3] for row in ROWS])
PREDICTED = np.array([row[4] for row in ROWS])


def spec_for(**overrides: object) -> bias.BiasSpec:
    settings: dict[str, object] = {"facet_column": ("sex",), "facet_value": "f", "group_column": "region"}
    settings.update(overrides)
    spec = bias.resolve(Hyperparameters(**settings), ENCODER, CLASSES, BINARY, label_name="approved")  # type: ignore[arg-type]
    assert spec is not None
    return spec


def metrics_of(section: dict, column: str = "sex", entry: int = 0) -> dict[str, object]:
    return {m["name"]: m["value"] for m in section["facets"][column][entry]["metrics"]}


def errors_of(section: dict, column: str = "sex", entry: int = 0) -> dict[str, str]:
    return {m["name"]: m["error"] for m in section["facets"][column][entry]["metrics"] if "error" in m}


# --- every metric by hand ----------------------------------------------------------------------------


def test_pretraining_metrics_match_the_hand_calculation() -> None:
    spec = spec_for()
    values = metrics_of(bias.pre_training(spec, bias.count_block(spec, FEATURES, LABELS)))
    # n_a = 6 (4 positive labels), n_d = 4 (1 positive label)
    assert values["CI"] == pytest.approx((6 - 4) / (6 + 4))  # 0.2
    assert values["DPL"] == pytest.approx(4 / 6 - 1 / 4)  # 5/12
    p_a, p_d = np.array([2 / 6, 4 / 6]), np.array([3 / 4, 1 / 4])  # (negative, positive) shares
    assert values["KL"] == pytest.approx(2 / 6 * math.log((2 / 6) / (3 / 4)) + 4 / 6 * math.log((4 / 6) / (1 / 4)))
    middle = (p_a + p_d) / 2
    js = 0.5 * (np.sum(p_a * np.log(p_a / middle)) + np.sum(p_d * np.log(p_d / middle)))
    assert values["JS"] == pytest.approx(js)
    assert values["LP"] == pytest.approx(math.sqrt(2 * (5 / 12) ** 2))  # |2/6 - 3/4| = |4/6 - 1/4| = 5/12
    assert values["TVD"] == pytest.approx(0.5 * (5 / 12 + 5 / 12))
    assert values["KS"] == pytest.approx(5 / 12)
    # CDDL, per region: n (4 rows): 4 positive labels, 1 of them d → DD = 0 - 1/4 (no negatives: share 0)
    #                   s (6 rows): 1 positive (a), 5 negative, 3 of them d → DD = 3/5 - 0
    assert values["CDDL"] == pytest.approx((4 * (-1 / 4) + 6 * (3 / 5)) / 10)  # 0.26
    assert list(values) == sorted(values)  # Clarify lists metrics by name


def test_posttraining_metrics_match_the_hand_calculation() -> None:
    spec = spec_for()
    counts = bias.count_block(spec, FEATURES, LABELS, PREDICTED)
    values = metrics_of(bias.post_training(spec, counts))
    # a: TP 2, FN 2, FP 1, TN 1 (predicted positive 3, negative 3); d: TP 0, FN 1, FP 1, TN 2 (1 and 3)
    assert values["DPPL"] == pytest.approx(3 / 6 - 1 / 4)
    assert values["DI"] == pytest.approx((1 / 4) / (3 / 6))  # 0.5
    assert values["DCAcc"] == pytest.approx(4 / 3 - 1 / 1)  # observed / predicted positives, a - d
    assert values["DCR"] == pytest.approx(3 / 3 - 2 / 3)  # observed / predicted negatives, d - a
    assert values["DAR"] == pytest.approx(2 / 3 - 0 / 1)  # precision a - d
    assert values["DRR"] == pytest.approx(2 / 3 - 1 / 3)  # TN / predicted negatives, d - a
    assert values["RD"] == pytest.approx(2 / 4 - 0 / 1)  # recall a - d
    assert values["SD"] == pytest.approx(2 / 3 - 1 / 2)  # specificity d - a
    assert values["AD"] == pytest.approx(3 / 6 - 2 / 4)  # accuracy a - d = 0
    assert values["TE"] == pytest.approx(1 / 1 - 2 / 1)  # FN/FP d - a
    # GE: benefit b = y_hat - y + 1 over all 10 rows: 3 × 0 (FN), 5 × 1, 2 × 2 (FP); mean 9/10
    # GE = sum((b / mean)^2 - 1) / (N * 2 * 1) = (sum(b^2) / mean^2 - N) / 2N
    assert values["GE"] == pytest.approx(((5 * 1**2 + 2 * 2**2) / 0.9**2 - 10) / (2 * 10))
    # CDDPL on predictions: n: positive 2 (no d), negative 2 (1 d) → 1/2; s: positive 2 (1 d) → 1/2, negative
    # 4 (2 d) → 1/2, DD 0
    assert values["CDDPL"] == pytest.approx((4 * (1 / 2) + 6 * 0) / 10)
    assert values["FT"] is None  # no sample of rows given


def test_flip_test_by_hand_with_one_neighbour() -> None:
    # a has 3 rows (≤ 9: k = 1). d row at 0.1 is nearest a row 0 (predicted 0) but the model says 1: flips up;
    # d row at 5.2 is nearest a row 5 (predicted 1) and the model says 0: flips down; d row at 9 agrees.
    features_a, predicted_a = np.array([[0.0], [5.0], [9.0]]), np.array([False, True, False])
    features_d, predicted_d = np.array([[0.1], [5.2], [9.0]]), np.array([True, False, False])
    assert bias_metrics.flip_test(features_a, predicted_a, features_d, predicted_d) == pytest.approx((1 - 1) / 3)
    predicted_d = np.array([True, True, False])  # two flip up, none down
    assert bias_metrics.flip_test(features_a, predicted_a, features_d, predicted_d) == pytest.approx(1 / 3)


def test_flip_test_votes_among_five_neighbours_when_a_has_ten_rows() -> None:
    features_a = np.arange(10, dtype=float)[:, None]
    predicted_a = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0, 0], dtype=bool)
    # d at 1.0: neighbours 1, 0, 2, 3, 4 (ties go to the earlier row) → 3 of 5 positive → 1; model says 0 → down
    # d at 8.0: neighbours 8, 7, 9, 6, 5 → all negative; model says 1 → up; d at 2.0: 1,2,3,0,4 → 3 positive → agree
    features_d, predicted_d = np.array([[1.0], [8.0], [2.0]]), np.array([False, True, True])
    assert bias_metrics.flip_test(features_a, predicted_a, features_d, predicted_d) == pytest.approx((1 - 1) / 3)


def test_flip_test_in_the_report_leaves_the_facet_column_out() -> None:
    spec = spec_for()
    sample = bias.FlipSample()
    sample.add(spec, FEATURES, PREDICTED)
    values = metrics_of(bias.post_training(spec, bias.count_block(spec, FEATURES, LABELS, PREDICTED), sample))
    a, d = FEATURES[:6][:, 2:], FEATURES[6:][:, 2:]  # age and region one-hot; sex's two outputs left out
    expected = bias_metrics.flip_test(a, PREDICTED[:6].astype(bool), d, PREDICTED[6:].astype(bool))
    assert values["FT"] == pytest.approx(expected)
    # by hand, k = 1 (a has 6 rows), distance dominated by age: d 41 → a 45 (1) vs model 0: down;
    # d 25 → a 20 (0) vs 1: up; d 63 → a 61 (1) vs 0: down; d 38 → a 33 (0) vs 0 → (1 - 2) / 4
    assert values["FT"] == pytest.approx((1 - 2) / 4)


# --- edge cases ---------------------------------------------------------------------------------------


def test_an_empty_facet_gives_errors_not_numbers() -> None:
    spec = spec_for()
    only_men = FEATURES[:6]
    counts = bias.count_block(spec, only_men, LABELS[:6], PREDICTED[:6])
    section = bias.post_training(spec, counts)
    assert section["facets"]["sex"][0]["value_or_threshold"] == "f"
    errors = errors_of(section)
    assert errors["DI"] == errors["DPPL"] == errors["AD"] == errors["TE"] == "Facet set is empty"
    assert metrics_of(section)["DI"] is None
    pre_errors = errors_of(bias.pre_training(spec, bias.count_block(spec, only_men, LABELS[:6])))
    assert pre_errors["CI"] == "Facet set is empty"
    assert pre_errors["KL"] == "No instance of common facet found, dataset may be too small"


def test_zero_denominators_follow_clarify() -> None:
    table = np.zeros((2, 2, 2), dtype=np.int64)  # [facet, label, predicted]
    table[0, 1, 0] = 2  # a: two positives, never predicted positive → na(1)/na'(1) = 2/0 = inf
    table[1, 0, 0] = 3  # d: three negatives, predicted negative
    assert bias_metrics.disparate_impact(table) == 0.0  # 0/6 over 0/3: 0/0 = 0
    assert bias_metrics.conditional_outcomes(table)[0] == math.inf  # inf - 0/0
    table[1, 1, 0] = 1  # d also has a positive never predicted: inf - inf = 0
    assert bias_metrics.conditional_outcomes(table)[0] == 0.0
    table[0, 0, 1] = 1  # a predicted positive once; d never: DI = 0/(1/4)... and the reverse is inf
    assert bias_metrics.disparate_impact(table[::-1].copy()) == math.inf
    entry = bias.metric_json(bias_metrics.Metric("DI", math.inf))
    assert entry == {"name": "DI", "description": "Disparate Impact (DI)", "value": "Infinity"}
    assert bias.metric_json(bias_metrics.Metric("TE", -math.inf))["value"] == "-Infinity"


def test_generalized_entropy_edge_cases() -> None:
    with pytest.raises(bias_metrics.MetricUndefined, match="false negatives"):
        bias_metrics.generalized_entropy(np.array([5, 0, 0]))
    with pytest.raises(bias_metrics.MetricUndefined, match="non-empty"):
        bias_metrics.generalized_entropy(np.array([0, 0, 0]))
    assert bias_metrics.generalized_entropy(np.array([0, 7, 0])) == 0.0  # every prediction right


def test_label_distributions_use_only_values_both_facets_have() -> None:
    # As smclarify: a has both label values, d only negatives → only the negative share is compared:
    # KL = (1/3) log((1/3)/1) < 0, LP = |1/3 - 1|.
    table = np.zeros((2, 2, 2), dtype=np.int64)
    table[0, 0, 0], table[0, 1, 0], table[1, 0, 0] = 1, 2, 1
    assert bias_metrics.label_distribution_metric("KL", table) == pytest.approx(1 / 3 * math.log(1 / 3))
    assert bias_metrics.label_distribution_metric("LP", table) == pytest.approx(2 / 3)


def test_conditional_disparity_needs_a_group_column_and_both_labels() -> None:
    spec = spec_for(group_column=None)
    section = bias.pre_training(spec, bias.count_block(spec, FEATURES, LABELS))
    assert errors_of(section)["CDDL"] == "Group variable is empty or not provided"
    grouped = spec_for()
    no_positive = bias.count_block(grouped, FEATURES, np.zeros(10, dtype=np.int64))
    assert errors_of(bias.pre_training(grouped, no_positive))["CDDL"] == "No positive labels in set"


# --- counts merge -------------------------------------------------------------------------------------


def test_counts_of_blocks_merge_into_the_counts_of_the_union() -> None:
    spec = spec_for(facet_column=("sex", "age"), facet_value="f;40")
    whole = bias.count_block(spec, FEATURES, LABELS, PREDICTED)
    blocks = [bias.count_block(spec, FEATURES[s], LABELS[s], PREDICTED[s]) for s in np.array_split(np.arange(10), 3)]
    merged = bias.merge_counts(blocks)
    assert merged.rows == whole.rows == 10
    assert merged.maxima == whole.maxima == {"age": 63.0}
    for column in ("sex", "age"):
        assert merged.tables[column].keys() == whole.tables[column].keys()
        for key in whole.tables[column]:
            np.testing.assert_array_equal(merged.tables[column][key], whole.tables[column][key])
    assert bias.post_training(spec, merged) == bias.post_training(spec, whole)


def test_flip_samples_merge_and_stay_bounded() -> None:
    spec = spec_for()
    first, second = bias.FlipSample(seed=0), bias.FlipSample(seed=1)
    first.add(spec, FEATURES[:5], PREDICTED[:5])
    second.add(spec, FEATURES[5:], PREDICTED[5:])
    merged = bias.merge_samples([first, second])
    assert merged.features is not None and len(merged.features) == 10  # ≤ max_rows: every row
    assert sorted(map(tuple, merged.features.tolist())) == sorted(map(tuple, FEATURES.tolist()))
    small = bias.FlipSample(max_rows=4)
    small.add(spec, FEATURES, PREDICTED)
    small.add(spec, FEATURES, PREDICTED)
    assert small.features is not None and small.positive is not None
    assert len(small.features) == len(small.positive) == 4


# --- facets from the encoded matrix -------------------------------------------------------------------


def test_facet_codes_read_one_hot_and_thresholds() -> None:
    spec = spec_for(facet_column=("sex", "age"), facet_value=";40")
    sex, age = spec.facets
    np.testing.assert_array_equal(bias.facet_codes(FEATURES, sex), [1, 1, 1, 1, 1, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(bias.facet_codes(FEATURES, age), [0, 1, 1, 0, 1, 0, 1, 0, 1, 0])
    unseen = ENCODER.transform([["other", 1, "n"]])  # a category training never saw: all zeros → code 2
    assert bias.facet_codes(unseen, sex).tolist() == [2]


def test_numeric_threshold_and_each_category_in_turn() -> None:
    spec = spec_for(facet_column=("sex", "age"), facet_value=";40")
    section = bias.pre_training(spec, bias.count_block(spec, FEATURES, LABELS))
    assert [e["value_or_threshold"] for e in section["facets"]["sex"]] == ["f", "m"]
    assert metrics_of(section, "sex", 0)["CI"] == pytest.approx(0.2)  # d = f
    assert metrics_of(section, "sex", 1)["CI"] == pytest.approx(-0.2)  # d = m
    assert section["facets"]["age"][0]["value_or_threshold"] == "(40, 63]"
    age = metrics_of(section, "age")
    # above 40: ages 45, 50, 61, 41, 63 (labels 1, 1, 0, 1, 0); the rest: 30, 20, 33, 25, 38 (1, 1, 0, 0, 0)
    assert age["CI"] == pytest.approx(0.0)
    assert age["DPL"] == pytest.approx(2 / 5 - 3 / 5)


def test_positive_label_by_task() -> None:
    assert spec_for().positive == (1,)  # binary: classes[1]
    assert spec_for(positive_label="no").positive == (0,)
    multi = bias.resolve(
        Hyperparameters(facet_column=("sex",), positive_label="b, c"), ENCODER, ("a", "b", "c"), MULTICLASS
    )
    assert multi is not None and multi.positive == (1, 2)
    counts = bias.count_block(multi, FEATURES[:3], np.array([0, 1, 2]))
    assert bias.label_value_or_threshold(multi, counts) == "b,c"
    numbers = bias.resolve(Hyperparameters(facet_column=("sex",), positive_label="3.0"), ENCODER, (1, 3), BINARY)
    assert numbers is not None and numbers.positive == (1,)
    regression = bias.resolve(Hyperparameters(facet_column=("sex",), positive_label="2.5"), ENCODER, (), REGRESSION)
    assert regression is not None and regression.label_threshold == 2.5
    counts = bias.count_block(regression, FEATURES[:3], np.array([1.0, 3.0, 7.5]), np.array([2.0, 2.6, 4.0]))
    assert bias.positive_labels(regression, np.array([2.5, 2.6])).tolist() == [False, True]
    assert bias.label_value_or_threshold(regression, counts) == "(2.5, 7.5]"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"facet_column": ("gender",)},
            "facet_column 'gender' is not a feature column of the train data; columns: sex, age, region",
        ),
        ({"facet_value": "x"}, "facet_value 'x' never occurs in column 'sex' of channel 'train'; values seen: f, m"),
        (
            {"facet_column": ("age",), "facet_value": None},
            "facet column 'age' is numeric: facet_value needs one threshold",
        ),
        ({"facet_column": ("age",), "facet_value": "30,40"}, "facet column 'age' is numeric"),
        ({"facet_column": ("sex", "age"), "facet_value": "f"}, "facet_value has 1 part(s) separated by ';' but"),
        ({"facet_column": ("sex", "sex")}, "facet_column names sex more than once"),
        (
            {"positive_label": "maybe"},
            "positive_label 'maybe' is not a class of the train labels; classes: ['no', 'yes']",
        ),
        ({"group_column": "city"}, "group_column 'city' is not a feature column of the train data; columns: sex, age"),
        ({"model": "cnn"}, "facet_column needs tabular data and model=mlp (model=cnn)"),
        ({"facet_column": ("2",)}, "facet_column 2: refer to the column by name (columns: sex, age, region)"),
    ],
)
def test_resolution_errors_name_the_problem(settings: dict, message: str) -> None:
    with pytest.raises(UserError) as caught:
        spec_for(**settings)
    assert message in str(caught.value)


def test_resolution_errors_without_columns_or_positive_label() -> None:
    with pytest.raises(UserError, match="tabular data with columns; channel 'train' holds arrays"):
        bias.resolve(Hyperparameters(facet_column=("sex",)), None, CLASSES, BINARY)
    with pytest.raises(UserError, match=r"multiclass_classification need positive_label.*classes: \['a', 'b', 'c'\]"):
        bias.resolve(Hyperparameters(facet_column=("sex",)), ENCODER, ("a", "b", "c"), MULTICLASS)
    with pytest.raises(UserError, match="regression need positive_label: a number"):
        bias.resolve(Hyperparameters(facet_column=("sex",)), ENCODER, (), REGRESSION)
    assert bias.resolve(Hyperparameters(), ENCODER, CLASSES, BINARY) is None  # no facet_column: no analysis


def test_positions_name_columns_of_a_headerless_file_or_the_given_file_columns() -> None:
    headerless = FeatureEncoder((FeatureColumn("column 2", CATEGORICAL, ("a", "b")), FeatureColumn("column 3")))
    spec = bias.resolve(Hyperparameters(facet_column=("1",), facet_value="a"), headerless, CLASSES, BINARY)
    assert spec is not None and spec.facets[0].column.name == "column 2"
    named = bias.resolve(
        Hyperparameters(facet_column=("1",)), ENCODER, CLASSES, BINARY, file_columns=("label", "sex", "age", "region")
    )
    assert named is not None and named.facets[0].column.name == "sex"


def test_train_counts_check_catches_what_needs_the_data() -> None:
    spec = spec_for(facet_column=("age",), facet_value="70")
    with pytest.raises(UserError, match="no row of channel 'train' has column 'age' above it \\(largest value: 63\\)"):
        bias.check_train_counts(spec, bias.count_block(spec, FEATURES, LABELS))
    spec = spec_for(facet_column=("age",), facet_value="10")
    with pytest.raises(UserError, match="every row of channel 'train' has column 'age' above it"):
        bias.check_train_counts(spec, bias.count_block(spec, FEATURES, LABELS))
    spec = spec_for()
    with pytest.raises(
        UserError, match="facet_value 'f' never occurs in column 'sex' of channel 'train'; values seen: m"
    ):
        bias.check_train_counts(spec, bias.count_block(spec, FEATURES[:6], LABELS[:6]))
    bias.check_train_counts(spec, bias.count_block(spec, FEATURES, LABELS))  # both groups present: fine


# --- analysis.json, summary, warnings -----------------------------------------------------------------


def test_analysis_has_clarifys_shape_and_both_channels() -> None:
    spec = spec_for(facet_column=("sex", "age"), facet_value="f;40")
    pre = bias.pre_training(spec, bias.count_block(spec, FEATURES, LABELS))
    validation = bias.post_training(spec, bias.count_block(spec, FEATURES[:8], LABELS[:8], PREDICTED[:8]))
    test = bias.post_training(spec, bias.count_block(spec, FEATURES, LABELS, PREDICTED))
    report = json.loads(json.dumps(bias.analysis(pre, {"validation": validation, "test": test}), allow_nan=False))
    assert report["version"] == "1.0"
    assert report["post_training_bias_metrics"] == test  # test when there is one
    assert report["optml"]["post_training_channel"] == "test"
    assert report["optml"]["post_training_bias_metrics_by_channel"]["validation"] == validation
    section = report["pre_training_bias_metrics"]
    assert section["label"] == "approved" and section["label_value_or_threshold"] == "yes"
    assert list(section["facets"]) == ["sex", "age"]
    first = section["facets"]["sex"][0]
    assert first["value_or_threshold"] == "f"
    assert [m["name"] for m in first["metrics"]] == ["CDDL", "CI", "DPL", "JS", "KL", "KS", "LP", "TVD"]
    assert first["metrics"][1] == {"name": "CI", "description": "Class Imbalance (CI)", "value": pytest.approx(0.2)}
    post_names = [m["name"] for m in report["post_training_bias_metrics"]["facets"]["sex"][0]["metrics"]]
    assert post_names == ["AD", "CDDPL", "DAR", "DCAcc", "DCR", "DI", "DPPL", "DRR", "FT", "GE", "RD", "SD", "TE"]
    only_validation = bias.analysis(None, {"validation": validation})
    assert only_validation["post_training_bias_metrics"] == validation
    assert "pre_training_bias_metrics" not in only_validation


def test_summary_and_disparate_impact_warnings() -> None:
    spec = spec_for()
    pre = bias.pre_training(spec, bias.count_block(spec, FEATURES, LABELS))
    post = bias.post_training(spec, bias.count_block(spec, FEATURES, LABELS, PREDICTED))
    report = bias.analysis(pre, {"validation": post})
    text = bias.summary(report)
    assert "positive label yes" in text
    assert "sex f: train labels: CI 0.200, DPL 0.417; validation predictions: DPPL 0.250, DI 0.500, AD 0.000" in text
    assert bias.di_warnings(report) == [
        "bias: disparate impact DI=0.500 for sex f on channel validation is outside [0.8, 1.25]: the model predicts"
        " the positive label for this group at 0.50x the rate of the other rows"
    ]
    fair = bias.post_training(spec, bias.count_block(spec, FEATURES, LABELS, np.ones(10, dtype=np.int64)))
    assert bias.di_warnings(bias.analysis(pre, {"test": fair})) == []  # DI = 1


def test_a_numeric_group_column_groups_by_value() -> None:
    spec = spec_for(group_column="age")  # ten distinct ages: ten groups of one row
    section = bias.pre_training(spec, bias.count_block(spec, FEATURES, LABELS))
    # a one-row group: DD = 1 for a d row with a negative label (all of the rejections), -1 for a d row with a
    # positive label, 0 for an a row; d has 1 positive and 3 negative labels → (3 - 1) / 10
    assert metrics_of(section)["CDDL"] == pytest.approx((3 - 1) / 10)
    assert sorted(bias.count_block(spec, FEATURES, LABELS).tables["sex"]) == sorted(float(r[1]) for r in ROWS)


def test_labels_for_bias_are_class_indices_or_values_in_label_units() -> None:
    classification = LabelEncoding.of_classes(BINARY, ("no", "yes"))
    raw = np.array(["yes", "no", "yes"], dtype=object)
    assert bias.labels_for_bias(classification, raw, "train").tolist() == [1, 0, 1]
    regression = LabelEncoding(REGRESSION, target_mean=10.0, target_std=2.0)
    assert bias.labels_for_bias(regression, np.array([9.0, 14.0]), "train").tolist() == [9.0, 14.0]


def test_a_loaded_csv_channel_gives_the_same_metrics(tmp_path: Path) -> None:
    """The real path: a CSV with a header → Dataset (one-hot sex, numeric age) → spec → counts."""
    lines = ["approved,sex,age,region"] + [f"{CLASSES[y]},{s},{a},{r}" for s, a, r, y, _ in ROWS]
    (tmp_path / "rows.csv").write_text("\n".join(lines) + "\n")
    data = load_channel("train", tmp_path, DataOptions(label_column="approved"))
    encoding = LabelEncoding.fit(BINARY, data.labels)
    hp = Hyperparameters(facet_column=("sex", "age"), facet_value="f;40", group_column="region")
    spec = bias.resolve(hp, data.encoder, encoding.classes, BINARY, label_name=data.label_name)
    assert spec is not None
    counts = bias.count_block(spec, data.features, bias.labels_for_bias(encoding, data.labels, "train"))
    bias.check_train_counts(spec, counts)
    section = bias.pre_training(spec, counts)
    assert section["label"] == "approved" and section["label_value_or_threshold"] == "yes"
    assert metrics_of(section)["CDDL"] == pytest.approx(0.26)  # as the hand calculation above
    assert metrics_of(section, "age")["DPL"] == pytest.approx(-0.2)
    with pytest.raises(ValueError, match="predicted labels"):
        bias.post_training(spec, counts)
