"""SageMaker Clarify's bias metrics, computed from count tables instead of rows.

Every metric but FlipTest depends on the rows only through how many fall in each cell of
[facet (0 = a, the rest; 1 = d, the group of interest), label positive, predicted positive] — per group of
the group column for the conditional metrics CDDL and CDDPL. Counts add up across blocks, processes and
hosts, so a streamed channel gets exactly the numbers one process would get on all of its rows.

The formulas, signs and edge cases follow the open-source smclarify library (src/smclarify/bias/metrics/
pretraining.py, posttraining.py, common.py) that the Clarify processing container is built on:

* a fraction x/0 is 0 when x = 0 and +inf otherwise (`divide`); a difference of two +inf is 0;
* a metric that cannot be computed (an empty facet, no positive labels for CDD, …) raises
  `MetricUndefined`, and the report writes it as Clarify does: value null and the message under "error";
* KL, JS, LP, TVD and KS compare the label distributions of a and d over the label values that have a
  non-zero share in BOTH facets (smclarify's `pdfs_aligned_nonzero`), so KL can come out negative when one
  facet lacks a label value; no common value at all is an error.

The metric Clarify's documentation calls DCAcc is named DCA in smclarify's source; the report uses DCAcc.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

DESCRIPTIONS = {
    "AD": "Accuracy Difference (AD)",
    "CDDL": "Conditional Demographic Disparity in Labels (CDDL)",
    "CDDPL": "Conditional Demographic Disparity in Predicted Labels (CDDPL)",
    "CI": "Class Imbalance (CI)",
    "DAR": "Difference in Acceptance Rates (DAR)",
    "DCAcc": "Difference in Conditional Acceptance (DCAcc)",
    "DCR": "Difference in Conditional Rejection (DCR)",
    "DI": "Disparate Impact (DI)",
    "DPL": "Difference in Positive Proportions in Labels (DPL)",
    "DPPL": "Difference in Positive Proportions in Predicted Labels (DPPL)",
    "DRR": "Difference in Rejection Rates (DRR)",
    "FT": "Flip Test (FT)",
    "GE": "Generalized Entropy (GE)",
    "JS": "Jensen-Shannon Divergence (JS)",
    "KL": "Kullback-Liebler Divergence (KL)",  # sic: Clarify's spelling, kept so reports match
    "KS": "Kolmogorov-Smirnov Distance (KS)",
    "LP": "L-p Norm (LP)",
    "RD": "Recall Difference (RD)",
    "SD": "Specificity Difference (SD)",
    "TE": "Treatment Equality (TE)",
    "TVD": "Total Variation Distance (TVD)",
}
PRETRAINING = ("CDDL", "CI", "DPL", "JS", "KL", "KS", "LP", "TVD")
POSTTRAINING = ("AD", "CDDPL", "DAR", "DCAcc", "DCR", "DI", "DPPL", "DRR", "FT", "GE", "RD", "SD", "TE")

# FlipTest's k-nearest-neighbour vote, as smclarify: 5 neighbours, 1 when facet a has at most 9 rows.
FT_NEIGHBORS = 5
FT_MIN_NEIGHBORS = 1
FT_SMALL_FACET = 9

A, D = 0, 1
NO, YES = 0, 1


class MetricUndefined(ValueError):
    """A metric that the counts cannot give (the message says why); reported as value null + error."""


@dataclass(frozen=True)
class Metric:
    name: str
    value: float | None
    error: str | None = None

    @property
    def description(self) -> str:
        return DESCRIPTIONS[self.name]


def divide(numerator: float, denominator: float) -> float:
    """smclarify's division: 0/0 = 0, x/0 = ±inf."""
    if denominator == 0:
        if numerator == 0:
            return 0.0
        return -math.inf if numerator < 0 else math.inf
    return numerator / denominator


def _difference(first: float, second: float) -> float:
    """first - second, except that two +inf give 0 (smclarify's rule for DCAcc, DCR, DAR, DRR, RD, SD, TE, AD)."""
    if first == second == math.inf:
        return 0.0
    return first - second


def _n(table: np.ndarray, facet: int | None = None, label: int | None = None, predicted: int | None = None) -> int:
    """Rows in the cells of a (2, 2, 2) table that match; None matches both values."""
    index = tuple(slice(None) if value is None else value for value in (facet, label, predicted))
    return int(table[index].sum())


def _require_both_facets(table: np.ndarray) -> None:
    if _n(table, D) == 0:
        raise MetricUndefined("Facet set is empty")
    if _n(table, A) == 0:
        raise MetricUndefined("Negated facet set is empty")


# --- pre-training ------------------------------------------------------------------------------------


def class_imbalance(table: np.ndarray) -> float:
    """CI = (na - nd) / (na + nd)."""
    _require_both_facets(table)
    na, nd = _n(table, A), _n(table, D)
    return (na - nd) / (na + nd)


def positive_proportion_difference(table: np.ndarray, predicted: bool = False) -> float:
    """DPL = na(1)/na - nd(1)/nd on labels; DPPL the same on predicted labels."""
    _require_both_facets(table)
    positive = {"predicted": YES} if predicted else {"label": YES}
    return _n(table, A, **positive) / _n(table, A) - _n(table, D, **positive) / _n(table, D)


def _aligned_label_distributions(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pa and Pd over (negative, positive) labels, restricted to the values non-zero in both."""
    counts_a = np.array([_n(table, A, NO), _n(table, A, YES)], dtype=np.float64)
    counts_d = np.array([_n(table, D, NO), _n(table, D, YES)], dtype=np.float64)
    p_a = counts_a / counts_a.sum() if counts_a.sum() else counts_a
    p_d = counts_d / counts_d.sum() if counts_d.sum() else counts_d
    common = (p_a > 0) & (p_d > 0)
    if not common.any():
        raise MetricUndefined("No instance of common facet found, dataset may be too small")
    return p_a[common], p_d[common]


def label_distribution_metric(name: str, table: np.ndarray) -> float:
    """KL, JS, LP (p = 2), TVD or KS between the label distributions Pa and Pd."""
    p_a, p_d = _aligned_label_distributions(table)
    if name == "KL":
        return float(np.sum(p_a * np.log(p_a / p_d)))
    if name == "JS":
        middle = 0.5 * (p_a + p_d)
        return float(0.5 * (np.sum(p_a * np.log(p_a / middle)) + np.sum(p_d * np.log(p_d / middle))))
    if name == "LP":
        return float(np.linalg.norm(p_a - p_d, 2))
    if name == "TVD":
        return float(0.5 * np.linalg.norm(p_a - p_d, 1))
    if name == "KS":
        return float(np.linalg.norm(p_a - p_d, np.inf))
    raise ValueError(f"unknown label distribution metric {name!r}")


def conditional_demographic_disparity(groups: Mapping[object, np.ndarray], predicted: bool = False) -> float:
    """CDDL (labels) or CDDPL (predicted labels): the mean over groups, weighted by group size, of
    DD = nd(0)/n(0) - nd(1)/n(1) — d's share of the rejections minus its share of the acceptances."""
    if not groups:
        raise MetricUndefined("Group variable is empty or not provided")
    axis = "predicted" if predicted else "label"
    total = np.sum(list(groups.values()), axis=0)
    if _n(total, **{axis: YES}) == 0:
        raise MetricUndefined("No positive labels in set")
    if _n(total, **{axis: NO}) == 0:
        raise MetricUndefined("No negative labels in set")
    weighted, rows = 0.0, 0
    for table in groups.values():
        accepted, rejected = _n(table, **{axis: YES}), _n(table, **{axis: NO})
        share_accepted = _n(table, D, **{axis: YES}) / accepted if accepted else 0.0
        share_rejected = _n(table, D, **{axis: NO}) / rejected if rejected else 0.0
        weighted += _n(table) * (share_rejected - share_accepted)
        rows += _n(table)
    return divide(weighted, rows)


# --- post-training -----------------------------------------------------------------------------------


def disparate_impact(table: np.ndarray) -> float:
    """DI = (nd'(1)/nd) / (na'(1)/na): the rate of positive predictions in d relative to a."""
    _require_both_facets(table)
    rate_a = _n(table, A, predicted=YES) / _n(table, A)
    rate_d = _n(table, D, predicted=YES) / _n(table, D)
    return divide(rate_d, rate_a)


def _confusion(table: np.ndarray, facet: int) -> tuple[int, int, int, int]:
    """TP, FP, FN, TN of one facet."""
    return (
        _n(table, facet, YES, YES),
        _n(table, facet, NO, YES),
        _n(table, facet, YES, NO),
        _n(table, facet, NO, NO),
    )


def conditional_outcomes(table: np.ndarray) -> tuple[float, float]:
    """DCAcc = na(1)/na'(1) - nd(1)/nd'(1) (observed over predicted acceptances, a minus d) and
    DCR = nd(0)/nd'(0) - na(0)/na'(0) (observed over predicted rejections, d minus a)."""
    _require_both_facets(table)
    acceptance = [divide(_n(table, f, label=YES), _n(table, f, predicted=YES)) for f in (A, D)]
    rejection = [divide(_n(table, f, label=NO), _n(table, f, predicted=NO)) for f in (A, D)]
    return _difference(acceptance[A], acceptance[D]), _difference(rejection[D], rejection[A])


def label_rates(table: np.ndarray) -> tuple[float, float]:
    """DAR = TPa/na'(1) - TPd/nd'(1) (precision, a minus d) and DRR = TNd/nd'(0) - TNa/na'(0) (d minus a)."""
    _require_both_facets(table)
    (tp_a, fp_a, fn_a, tn_a), (tp_d, fp_d, fn_d, tn_d) = _confusion(table, A), _confusion(table, D)
    accept_a, accept_d = divide(tp_a, tp_a + fp_a), divide(tp_d, tp_d + fp_d)
    reject_a, reject_d = divide(tn_a, tn_a + fn_a), divide(tn_d, tn_d + fn_d)
    return _difference(accept_a, accept_d), _difference(reject_d, reject_a)


def label_accuracy(table: np.ndarray) -> tuple[float, float]:
    """RD = recall(a) - recall(d) and SD = specificity(d) - specificity(a)."""
    _require_both_facets(table)
    (tp_a, fp_a, fn_a, tn_a), (tp_d, fp_d, fn_d, tn_d) = _confusion(table, A), _confusion(table, D)
    recall_a, recall_d = divide(tp_a, tp_a + fn_a), divide(tp_d, tp_d + fn_d)
    specificity_a, specificity_d = divide(tn_a, tn_a + fp_a), divide(tn_d, tn_d + fp_d)
    return _difference(recall_a, recall_d), _difference(specificity_d, specificity_a)


def accuracy_difference(table: np.ndarray) -> float:
    """AD = accuracy(a) - accuracy(d)."""
    _require_both_facets(table)
    (tp_a, _, _, tn_a), (tp_d, _, _, tn_d) = _confusion(table, A), _confusion(table, D)
    return _difference(divide(tp_a + tn_a, _n(table, A)), divide(tp_d + tn_d, _n(table, D)))


def treatment_equality(table: np.ndarray) -> float:
    """TE = FNd/FPd - FNa/FPa."""
    _require_both_facets(table)
    (_, fp_a, fn_a, _), (_, fp_d, fn_d, _) = _confusion(table, A), _confusion(table, D)
    return _difference(divide(fn_d, fp_d), divide(fn_a, fp_a))


def benefit_counts(table: np.ndarray) -> np.ndarray:
    """How many rows have benefit b = predicted - label + 1 equal to 0 (false negative), 1 (correct) and
    2 (false positive), over both facets."""
    return np.array(
        [_n(table, None, YES, NO), _n(table, None, YES, YES) + _n(table, None, NO, NO), _n(table, None, NO, YES)],
        dtype=np.int64,
    )


def generalized_entropy(benefits: np.ndarray, alpha: float = 2.0) -> float:
    """GE = sum((b/mean(b))^alpha - 1) / (N alpha (alpha - 1)) from the counts of b = 0, 1, 2 (Clarify: alpha 2).
    The same for every facet: it measures the whole dataset."""
    rows = int(benefits.sum())
    if rows == 0:
        raise MetricUndefined("dataset must be non-empty")
    mean = float(benefits[1] + 2 * benefits[2]) / rows
    if mean == 0:
        raise MetricUndefined(
            "All predicted labels are false negatives. There should be at least one prediction that is not false"
            " negative."
        )
    powered = sum(float(benefits[b]) * (b / mean) ** alpha for b in (1, 2))
    return (powered - rows) / (rows * alpha * (alpha - 1))


def flip_test(
    features_a: np.ndarray, predicted_a: np.ndarray, features_d: np.ndarray, predicted_d: np.ndarray
) -> float:
    """FT = (FTp - FTn) / nd: each row of d gets the majority predicted label of its nearest rows of a
    (Euclidean, k = 5, or 1 when a has at most 9 rows; ties between equally near rows go to the earlier
    row); FTp counts d rows the model calls positive where their a neighbours are negative, FTn the reverse.
    """
    if len(features_d) == 0:
        raise MetricUndefined("Facet set is empty")
    if len(features_a) == 0:
        raise MetricUndefined("Negated facet set is empty")
    k = FT_NEIGHBORS if len(features_a) > FT_SMALL_FACET else FT_MIN_NEIGHBORS
    neighbours_say = _knn_vote(
        features_a.astype(np.float64), predicted_a.astype(bool), features_d.astype(np.float64), k
    )
    model_says = predicted_d.astype(bool)
    flipped_up = int(np.sum(model_says & ~neighbours_say))
    flipped_down = int(np.sum(~model_says & neighbours_say))
    return divide(flipped_up - flipped_down, len(features_d))


def _knn_vote(reference: np.ndarray, votes: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Majority vote of the k nearest reference rows for each query row (k odd: no tied vote). Distances
    are summed squared differences, not the |x|² - 2x·y + |y|² shortcut, so equally near rows (one-hot
    columns make many) tie exactly and the earlier one wins; chunks hold ≤ 4M differences."""
    result = np.empty(len(queries), dtype=bool)
    chunk = max(1, (1 << 22) // max(1, reference.size))
    for start in range(0, len(queries), chunk):
        block = queries[start : start + chunk]
        distances = np.square(block[:, None, :] - reference[None, :, :]).sum(axis=2)
        nearest = np.argsort(distances, axis=1, kind="stable")[:, :k]
        result[start : start + chunk] = votes[nearest].sum(axis=1) * 2 > k
    return result


# --- all metrics of a stage --------------------------------------------------------------------------


def _measure(name: str, compute: Callable[[], float]) -> Metric:
    try:
        return Metric(name, float(compute()))
    except MetricUndefined as error:
        return Metric(name, None, str(error))


def pretraining_metrics(groups: Mapping[object, np.ndarray], grouped: bool) -> list[Metric]:
    """Clarify's pre-training metrics, sorted by name as Clarify lists them. `groups`: a (2, 2, 2) table per
    group of the group column (one entry when there is none: then `grouped` is False and CDDL is undefined)."""
    table = np.sum(list(groups.values()), axis=0)
    computations: dict[str, Callable[[], float]] = {
        "CDDL": lambda: conditional_demographic_disparity(groups if grouped else {}),
        "CI": lambda: class_imbalance(table),
        "DPL": lambda: positive_proportion_difference(table),
    }
    for name in ("JS", "KL", "KS", "LP", "TVD"):
        computations[name] = lambda name=name: label_distribution_metric(name, table)  # type: ignore[misc]
    return [_measure(name, computations[name]) for name in PRETRAINING]


def posttraining_metrics(
    groups: Mapping[object, np.ndarray], grouped: bool, flip: Callable[[], float] | None
) -> list[Metric]:
    """Clarify's post-training metrics (and SD), sorted by name. `flip` computes FT on a sample of rows; None
    when no rows were kept."""
    table = np.sum(list(groups.values()), axis=0)

    def no_rows() -> float:
        raise MetricUndefined("FlipTest needs rows of features: none were sampled")

    computations: dict[str, Callable[[], float]] = {
        "AD": lambda: accuracy_difference(table),
        "CDDPL": lambda: conditional_demographic_disparity(groups if grouped else {}, predicted=True),
        "DAR": lambda: label_rates(table)[0],
        "DCAcc": lambda: conditional_outcomes(table)[0],
        "DCR": lambda: conditional_outcomes(table)[1],
        "DI": lambda: disparate_impact(table),
        "DPPL": lambda: positive_proportion_difference(table, predicted=True),
        "DRR": lambda: label_rates(table)[1],
        "FT": flip or no_rows,
        "GE": lambda: generalized_entropy(benefit_counts(table)),
        "RD": lambda: label_accuracy(table)[0],
        "SD": lambda: label_accuracy(table)[1],
        "TE": lambda: treatment_equality(table),
    }
    return [_measure(name, computations[name]) for name in POSTTRAINING]
