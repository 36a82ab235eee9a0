"""Cost of the training rules (train/rules.py): the training loop's time with rules=none, the default set and
all rules, best of 3 (interleaved, so load from other processes hits every set alike), and the share of the
loop spent inside the rules' hooks (steadier than the difference of two noisy totals).

    .venv/bin/python -m benchmarks.rules_overhead [--quick] [--threads N] [--batch-size N]

Goal (issue 15): the default set costs ≤ 5 % of the training loop.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from optml.container.kinds import BINARY
from optml.container.networks import NetworkSpec, build_network
from optml.train.callbacks import Control
from optml.train.hyperparameters import DEFAULT_RULES, RULE_NAMES, Hyperparameters
from optml.train.losses import LossFunction, per_row_loss
from optml.train.rules import RuleContext, TrainingRules
from optml.train.trainer import Objective, Split, Step, Trainer, TrainState

SETS: dict[str, tuple[str, ...]] = {"none": (), "default": DEFAULT_RULES, "all": RULE_NAMES}


class TimedRules(TrainingRules):
    """Adds up the time spent in the rules' hooks: on a shared machine the loop's own time varies by more
    than the rules cost, so the share of the loop spent in them is the steadier number."""

    spent = 0.0

    def on_step_end(self, run: TrainState, step: Step | None, control: Control) -> None:
        started = time.perf_counter()
        super().on_step_end(run, step, control)
        self.spent += time.perf_counter() - started

    def on_epoch_end(self, run: TrainState, metrics: dict[str, float], control: Control) -> None:
        started = time.perf_counter()
        super().on_epoch_end(run, metrics, control)
        self.spent += time.perf_counter() - started


def data(rows: int, features: int, seed: int) -> Split:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, features)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] + 0.5 * rng.normal(size=rows) > 0).astype(np.int64)
    return Split.from_arrays(x, y)


def train_once(
    train: Split, validation: Split, hp: Hyperparameters, rules: tuple[str, ...]
) -> tuple[float, float, str]:
    """Seconds for one fit, seconds of it in the rules' hooks, and the rules that triggered."""
    torch.manual_seed(0)
    network = build_network(NetworkSpec("mlp", (train.features.shape[1],), 1, hidden_units=hp.hidden_units))
    objective = Objective(
        BINARY, LossFunction("bce", per_row_loss("bce", BINARY, huber_delta=1, focal_gamma=2, focal_alpha=0.25))
    )
    counts = tuple(int(c) for c in torch.bincount(train.targets).tolist())
    with tempfile.TemporaryDirectory() as directory:
        checker = (
            TimedRules(
                rules,
                context=RuleContext(BINARY, has_validation=True, class_counts=counts),
                output_file=Path(directory) / "rules.json",
            )
            if rules
            else None
        )
        started = time.perf_counter()
        try:
            callbacks = [checker] if checker else []
            Trainer(network, train, validation, hp=hp, objective=objective, callbacks=callbacks).fit()
        finally:
            if checker is not None:
                checker.close()
        seconds = time.perf_counter() - started
        report = checker.report()["rules"] if checker else []
        found = [rule["name"] for rule in report if rule["status"] == "IssuesFound"]
    return seconds, checker.spent if checker else 0.0, ", ".join(found) or "-"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke check")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 keeps a shared machine steady)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3, help="fits per rule set; the best counts")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows, repeats = (10_000, 1) if args.quick else (100_000, args.repeats)
    train, validation = data(rows, 30, seed=0), data(rows // 5, 30, seed=1)
    hp = Hyperparameters(epochs=3, batch_size=args.batch_size, hidden_units=(64, 32), early_stopping_patience=0)
    best: dict[str, float] = {}
    inside: dict[str, float] = {}
    found: dict[str, str] = {}
    train_once(data(2_000, 30, seed=2), validation, hp, RULE_NAMES)  # warm-up: first-call costs of torch
    for _ in range(repeats):
        for name, rules in SETS.items():
            seconds, spent, found[name] = train_once(train, validation, hp, rules)
            best[name] = min(best.get(name, seconds), seconds)
            inside[name] = min(inside.get(name, spent / seconds), spent / seconds)
    steps = hp.epochs * -(-rows // hp.batch_size)
    print(f"training {rows} rows × 30 features, MLP 64,32, batch {hp.batch_size}, {hp.epochs} epochs ({steps} steps), "
          f"{torch.get_num_threads()} thread(s); best of {repeats}")  # fmt: skip
    print("| rules | seconds | vs none | share of the loop in the rules | triggered |\n|---|---|---|---|---|")
    for name, seconds in best.items():
        versus = 100 * (seconds / best["none"] - 1)
        print(f"| {name} | {seconds:.2f} | {versus:+.1f} % | {100 * inside[name]:.2f} % | {found[name]} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
