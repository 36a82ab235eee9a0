"""k-fold cross-validation: fold assignment and the summary of per-fold scores.

- kfold: rows shuffled (seeded), then cut into k folds.
- stratified: each class's rows shuffled and dealt round-robin, so every fold keeps the class mix.
- timeseries: walk-forward on time order (the time column, else row order): the rows are cut into k+1
  consecutive blocks and fold i trains on blocks 1..i and validates on block i+1 — never on the past.
"""

from __future__ import annotations

import numpy as np

from optml.container.errors import UserError
from optml.container.kinds import REGRESSION

Fold = tuple[np.ndarray, np.ndarray]  # (train row indices, validation row indices)


def resolve_strategy(strategy: str, task: str) -> str:
    if strategy == "auto":
        return "kfold" if task == REGRESSION else "stratified"
    return strategy


def fold_indices(
    rows: int,
    k: int,
    strategy: str,
    seed: int,
    classes: np.ndarray | None = None,
    order: np.ndarray | None = None,
) -> list[Fold]:
    minimum = k + 1 if strategy == "timeseries" else k
    if rows < minimum:
        raise UserError(
            f"k_folds={k} with cv_strategy={strategy} needs at least {minimum} rows in channel 'train'; it has {rows}"
        )
    rng = np.random.default_rng(seed)
    if strategy == "timeseries":
        by_time = np.argsort(order, kind="stable") if order is not None else np.arange(rows)
        blocks = np.array_split(by_time, k + 1)
        return [(np.concatenate(blocks[: i + 1]), blocks[i + 1]) for i in range(k)]
    if strategy == "stratified":
        assert classes is not None
        counts = np.bincount(classes)
        too_small = [c for c, n in enumerate(counts) if 0 < n < k]
        if too_small:
            raise UserError(
                f"cv_strategy=stratified with k_folds={k} needs at least {k} rows of every class; class index"
                f" {too_small[0]} has {counts[too_small[0]]}: lower k_folds or use cv_strategy=kfold"
            )
        assignment = np.empty(rows, dtype=np.int64)
        offset = 0
        for label in np.unique(classes):
            members = rng.permutation(np.flatnonzero(classes == label))
            assignment[members] = (np.arange(len(members)) + offset) % k
            offset += len(members)  # continue dealing where the previous class stopped: folds stay even
    else:
        assignment = np.empty(rows, dtype=np.int64)
        assignment[rng.permutation(rows)] = np.arange(rows) % k
    return [(np.flatnonzero(assignment != fold), np.flatnonzero(assignment == fold)) for fold in range(k)]


def summarize(per_fold: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """mean and std (population) of each metric across folds."""
    summary = {}
    for name in per_fold[0]:
        values = np.array([fold[name] for fold in per_fold], dtype=np.float64)
        finite = values[np.isfinite(values)]  # a fold with one class has no AUC
        summary[name] = {
            "mean": float(finite.mean()) if len(finite) else float("nan"),
            "std": float(finite.std()) if len(finite) else float("nan"),
        }
    return summary
