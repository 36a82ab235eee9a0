"""Training throughput: optml's trainer (`optml.train.trainer.Trainer`) against a minimal hand-written PyTorch loop.

Both train the same MLP (built by optml.container.networks from default hyperparameters) on the same synthetic
binary-classification tensors with Adam and binary cross-entropy on the logit, shuffling with `randperm`
each epoch. The trainer does what a job does (objective and loss built as train/main.py builds them,
train metrics every epoch); the minimal loop does only zero_grad/forward/backward/step. Each
configuration runs `--repeats` times, alternating the two. The table shows the best run of each (as
`timeit` does: the run least disturbed by other work on the machine, the number to compare), and for
transparency the ratio of the medians of wall-clock and of process CPU time.

    .venv/bin/python benchmarks/train_throughput.py            # 200k rows × 30 features
    .venv/bin/python benchmarks/train_throughput.py --quick    # smoke check, seconds
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from optml.container.kinds import BINARY
from optml.container.networks import build_network
from optml.train.hyperparameters import Hyperparameters, parse_hyperparameters
from optml.train.main import build_objective, network_spec
from optml.train.preprocessing import LabelEncoding
from optml.train.trainer import Split, Trainer

GOAL = 0.95


@dataclass(frozen=True)
class Data:
    features: np.ndarray
    labels: np.ndarray  # 0/1 as float64, as a loaded channel holds numeric labels


def synthetic_data(rows: int, features: int, seed: int = 0) -> Data:
    """Standard-normal features; a noisy linear rule on them decides the label (learnable, not separable)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, features), dtype=np.float32)
    weights = rng.standard_normal(features)
    logits = x @ weights + rng.standard_normal(rows) * 2.0
    return Data(x, (logits > 0).astype(np.float64))


@dataclass(frozen=True)
class Timing:
    wall: float  # seconds
    cpu: float  # process CPU seconds, all threads


class Stopwatch:
    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def stop(self) -> Timing:
        return Timing(time.perf_counter() - self.wall, time.process_time() - self.cpu)


def trainer_run(hp: Hyperparameters, data: Data) -> Timing:
    """`fit` on the train split, no validation channel."""
    labels = LabelEncoding.fit(BINARY, data.labels)
    split = Split.from_arrays(data.features, labels.encode(data.labels, "train"))
    objective = build_objective(hp, labels, split.targets.numpy())
    torch.manual_seed(hp.seed)
    network = build_network(network_spec(hp, data.features, labels.output_size))
    watch = Stopwatch()
    Trainer(network, split, None, hp=hp, objective=objective).fit()
    return watch.stop()


def minimal_run(hp: Hyperparameters, data: Data) -> Timing:
    """The textbook loop on the same network, tensors and hyperparameters."""
    labels = LabelEncoding.fit(BINARY, data.labels)
    features = torch.from_numpy(data.features)
    targets = torch.from_numpy(labels.encode(data.labels, "train")).float()
    torch.manual_seed(hp.seed)
    network = build_network(network_spec(hp, data.features, labels.output_size))
    optimizer = torch.optim.Adam(network.parameters(), lr=hp.learning_rate)
    loss_fn = nn.BCEWithLogitsLoss()
    generator = torch.Generator().manual_seed(hp.seed)
    watch = Stopwatch()
    network.train()
    for _ in range(hp.epochs):
        order = torch.randperm(len(features), generator=generator)
        for start in range(0, len(features), hp.batch_size):
            batch = order[start : start + hp.batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(network(features[batch])[:, 0], targets[batch])
            loss.backward()
            optimizer.step()
    return watch.stop()


@dataclass(frozen=True)
class Row:
    config: str
    minimal: float  # samples/s, best run
    trainer: float
    median_ratio: float  # trainer / minimal samples/s, medians of wall-clock time
    cpu_ratio: float  # the same from median process CPU time

    @property
    def ratio(self) -> float:
        return self.trainer / self.minimal


def measure(hp: Hyperparameters, data: Data, repeats: int, config: str) -> Row:
    """Runs alternate between the two loops so background load hits both alike."""
    samples = len(data.features) * hp.epochs
    minimal, trainer = [], []
    for _ in range(repeats):
        minimal.append(minimal_run(hp, data))
        trainer.append(trainer_run(hp, data))
    return Row(
        config,
        samples / min(t.wall for t in minimal),
        samples / min(t.wall for t in trainer),
        statistics.median(t.wall for t in minimal) / statistics.median(t.wall for t in trainer),
        statistics.median(t.cpu for t in minimal) / statistics.median(t.cpu for t in trainer),
    )


def table(rows: Sequence[Row]) -> str:
    lines = [
        "| config | minimal loop samples/s | optml trainer samples/s | ratio | ratio (medians) | ratio (CPU time) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        flag = "" if row.ratio >= GOAL else " (below goal)"
        speeds = f"{row.minimal:,.0f} | {row.trainer:,.0f}"
        ratios = f"{row.ratio:.2f}×{flag} | {row.median_ratio:.2f}× | {row.cpu_ratio:.2f}×"
        lines.append(f"| {row.config} | {speeds} | {ratios} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--features", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-sizes", type=lambda s: [int(v) for v in s.split(",")], default=[256, 1024])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--quick", action="store_true", help="20k rows, 1 epoch, 1 repeat: a smoke check")
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.epochs, args.repeats = 20_000, 1, 1
    if args.threads:
        torch.set_num_threads(args.threads)

    data = synthetic_data(args.rows, args.features)
    print(
        f"{args.rows:,} rows × {args.features} features, {args.epochs} epochs, best of {args.repeats};"
        f" torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}"
    )
    rows = []
    for batch_size in args.batch_sizes:
        hp = parse_hyperparameters({"epochs": str(args.epochs), "batch_size": str(batch_size)})
        minimal_run(hp, synthetic_data(2_000, args.features))  # warm-up: first-call allocations, lazy imports
        hidden = "-".join(str(u) for u in hp.hidden_units)
        row = measure(hp, data, args.repeats, f"mlp {args.features}-{hidden}-1, batch {batch_size}")
        rows.append(row)
        print(f"  {row.config}: minimal {row.minimal:,.0f}/s, trainer {row.trainer:,.0f}/s", flush=True)
    print()
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
