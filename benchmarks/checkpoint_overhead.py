"""Checkpoint cost: training time with the default checkpoint policy (and a frequent one) against no
checkpoints at all, and how long resuming takes (find + load + restore the newest checkpoint).

    .venv/bin/python -m benchmarks.checkpoint_overhead [--quick]

Goals (issue 4): overhead at the default frequency ≤ 3 % of training time; resume start-up ≤ 2 s.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from optml.container.kinds import BINARY
from optml.container.networks import NetworkSpec, build_network
from optml.train.callbacks import Checkpointing
from optml.train.checkpoints import Checkpointer, CheckpointPolicy
from optml.train.hyperparameters import Hyperparameters
from optml.train.losses import LossFunction, per_row_loss
from optml.train.trainer import Objective, Split, Trainer


def data(rows: int, features: int) -> Split:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, features)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    return Split.from_arrays(x, y)


class TimedCheckpointer(Checkpointer):
    """Adds up the time spent saving (state gathering + write + fsync + rename + pruning)."""

    spent: float = 0.0
    saves: int = 0

    def save(self, state: dict[str, object], epoch: int, batches_done: int) -> Path:
        started = time.perf_counter()
        try:
            return super().save(state, epoch, batches_done)
        finally:
            self.spent += time.perf_counter() - started
            self.saves += 1


def train_once(split: Split, hp: Hyperparameters, checkpointer: Checkpointer | None) -> float:
    torch.manual_seed(0)
    network = build_network(NetworkSpec("mlp", (split.features.shape[1],), 1, hidden_units=(64, 32)))
    objective = Objective(
        BINARY, LossFunction("bce", per_row_loss("bce", BINARY, huber_delta=1, focal_gamma=2, focal_alpha=0.25))
    )
    started = time.perf_counter()
    callbacks = [Checkpointing(checkpointer)] if checkpointer is not None else []
    Trainer(network, split, None, hp=hp, objective=objective, callbacks=callbacks).fit()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke check")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 keeps a shared machine steady)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows, repeats = (20_000, 1) if args.quick else (200_000, 7)
    split = data(rows, 30)
    hp = Hyperparameters(epochs=3, batch_size=256)
    policies = {
        "none": None,
        "default (epoch end + every 300 s)": CheckpointPolicy(),
        "every 100 steps": CheckpointPolicy(every_steps=100, every_seconds=0),
    }
    runs: dict[str, list[float]] = {name: [] for name in policies}
    in_saves: dict[str, list[float]] = {name: [] for name in policies}
    saves: dict[str, int] = {name: 0 for name in policies}
    for _ in range(repeats):  # interleaved, so load from other processes hits every policy alike
        for name, policy in policies.items():
            with tempfile.TemporaryDirectory() as directory:
                checkpointer = TimedCheckpointer(Path(directory), "algo-1", policy) if policy else None
                seconds = train_once(split, hp, checkpointer)
                runs[name].append(seconds)
                in_saves[name].append(checkpointer.spent / seconds if checkpointer else 0.0)
                saves[name] = checkpointer.saves if checkpointer else 0
    timings = {name: statistics.median(values) for name, values in runs.items()}
    print(f"training {rows} rows × 30 features, MLP 64,32, batch 256, 3 epochs; median of {repeats}")
    print("| checkpoints | saves | seconds | vs none | share of the run spent saving |\n|---|---|---|---|---|")
    for name, seconds in timings.items():
        share = 100 * statistics.median(in_saves[name])
        versus = 100 * (seconds / timings["none"] - 1)
        print(f"| {name} | {saves[name]} | {seconds:.2f} | {versus:+.1f} % | {share:.2f} % |")

    with tempfile.TemporaryDirectory() as directory:
        resumable = Checkpointer(Path(directory), "algo-1", CheckpointPolicy(every_steps=50, every_seconds=0))
        train_once(split, Hyperparameters(epochs=1, batch_size=256), resumable)
        network = build_network(NetworkSpec("mlp", (30,), 1, hidden_units=(64, 32)))
        started = time.perf_counter()
        saved = Checkpointer(Path(directory), "algo-1").load_latest()
        assert saved is not None
        network.load_state_dict(saved["network"])
        resume = time.perf_counter() - started
        size = max(p.stat().st_size for p in Path(directory).glob("*.pt"))
    print(f"\nresume (find, load, restore the newest checkpoint, {size / 1e6:.1f} MB): {resume * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
