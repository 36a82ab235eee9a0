"""What the per-epoch profile and TensorBoard cost: the trainer alone, with the `Profiler` callback, and with
the Profiler and `TensorBoard` (scalars per epoch; with histograms every 500 steps), on the synthetic data
and network of benchmarks/train_throughput.py. Runs alternate; the table shows the best of `--repeats`
(the run least disturbed by other work) and the slowdown against the trainer alone.

On a busy machine the end-to-end runs differ by more than the callbacks cost, so a second table times each
per-step addition alone (best of 5) against a training step of the same network: the loop's own timing
(`time.perf_counter()` around the wait for a batch and in the step: always on, it cannot be switched off),
the callbacks' `on_step_end`, and one histogram write amortized over the 500 steps between writes.

    .venv/bin/python benchmarks/profile_overhead.py            # 200k rows × 30 features, batch 256
    .venv/bin/python benchmarks/profile_overhead.py --quick    # smoke check, seconds
"""

from __future__ import annotations

import argparse
import tempfile
import time
import timeit
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from benchmarks.train_throughput import Data, synthetic_data
from optml.container.kinds import BINARY
from optml.container.networks import build_network
from optml.train.callbacks import Callback, Control
from optml.train.hyperparameters import Hyperparameters, parse_hyperparameters
from optml.train.main import build_objective, network_spec
from optml.train.preprocessing import LabelEncoding
from optml.train.profiling import Profiler
from optml.train.tensorboard import HISTOGRAM_STEPS, TensorBoard
from optml.train.trainer import Split, Trainer


def fit_seconds(hp: Hyperparameters, data: Data, callbacks: Callable[[Path], list[Callback]]) -> float:
    labels = LabelEncoding.fit(BINARY, data.labels)
    split = Split.from_arrays(data.features, labels.encode(data.labels, "train"))
    objective = build_objective(hp, labels, split.targets.numpy())
    torch.manual_seed(hp.seed)
    network = build_network(network_spec(hp, data.features, labels.output_size))
    with tempfile.TemporaryDirectory() as directory:
        extra = callbacks(Path(directory))
        started = time.perf_counter()
        Trainer(network, split, None, hp=hp, objective=objective, callbacks=extra).fit()
        return time.perf_counter() - started


def with_profiler(directory: Path) -> list[Callback]:
    return [Profiler(log_lines=False)]


def with_tensorboard(directory: Path) -> list[Callback]:
    profiler = Profiler(log_lines=False)
    return [profiler, TensorBoard(directory, profiler=profiler)]


def with_histograms(directory: Path) -> list[Callback]:
    profiler = Profiler(log_lines=False)
    return [profiler, TensorBoard(directory, profiler=profiler, histograms=True)]


CONFIGS: dict[str, Callable[[Path], list[Callback]]] = {
    "trainer alone": lambda directory: [],
    "+ Profiler": with_profiler,
    "+ Profiler + TensorBoard": with_tensorboard,
    "+ TensorBoard histograms / 500 steps": with_histograms,
}


def best_seconds(call: Callable[[], object], number: int) -> float:
    """Seconds per call, the best of 5 repeats: on a busy machine the end-to-end runs above differ by more than
    the callbacks cost, and this measures them alone."""
    return min(timeit.repeat(call, number=number, repeat=5)) / number


def per_step_costs(hp: Hyperparameters, data: Data, directory: Path) -> dict[str, float]:
    """Seconds per call of a training step and of each per-step addition, on a real step of the same network."""
    labels = LabelEncoding.fit(BINARY, data.labels)
    split = Split.from_arrays(data.features, labels.encode(data.labels, "train"))
    network = build_network(network_spec(hp, data.features, labels.output_size))
    trainer = Trainer(network, split, None, hp=hp, objective=build_objective(hp, labels, split.targets.numpy()))
    run, control = trainer.run, Control()
    batch = next(batch for batch in trainer.batches.epoch(run) if batch is not None)
    step = trainer.step(batch)  # gradients in place, as on_step_end sees them
    profiler = Profiler(log_lines=False)
    profiler.on_fit_start(run)
    board = TensorBoard(directory, profiler=profiler, histograms=True, histogram_steps=10**9)
    board.on_fit_start(run)
    costs = {
        "training step": best_seconds(lambda: trainer.step(batch), 200),
        "loop timing (4 perf_counter calls)": loop_timing_seconds(),
        "Profiler.on_step_end": best_seconds(lambda: profiler.on_step_end(run, step, control), 20_000),
        "TensorBoard.on_step_end": best_seconds(lambda: board.on_step_end(run, step, control), 20_000),
    }
    costs[f"histograms, one write / {HISTOGRAM_STEPS} steps"] = (
        best_seconds(lambda: board.write_histograms(run), 20) / HISTOGRAM_STEPS
    )
    board.close()
    return costs


def loop_timing_seconds() -> float:
    """Per step: what train_epoch and TrainingStep add, four perf_counter calls and their arithmetic."""
    number = 200_000
    code = "a = perf_counter(); b = perf_counter() - a; c = perf_counter(); d = perf_counter() - c; e = c - a"
    return min(timeit.repeat(code, "from time import perf_counter", number=number, repeat=5)) / number


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--features", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--quick", action="store_true", help="20k rows, 1 epoch, 1 repeat: a smoke check")
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.epochs, args.repeats = 20_000, 1, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    hp = parse_hyperparameters({"epochs": str(args.epochs), "batch_size": str(args.batch_size)})
    data = synthetic_data(args.rows, args.features)
    fit_seconds(hp, synthetic_data(2_000, args.features), with_histograms)  # warm-up: lazy imports, allocations
    runs: dict[str, list[float]] = {name: [] for name in CONFIGS}
    for _ in range(args.repeats):
        for name, callbacks in CONFIGS.items():
            runs[name].append(fit_seconds(hp, data, callbacks))
    steps = args.epochs * -(-args.rows // args.batch_size)
    base = min(runs["trainer alone"])
    print(f"{args.rows:,} rows × {args.features} features, batch {args.batch_size}, {args.epochs} epochs,"
          f" best of {args.repeats}; torch {torch.__version__}, {torch.get_num_threads()} threads")  # fmt: skip
    print("| configuration | seconds | samples/s | µs per step | overhead |\n|---|---:|---:|---:|---:|")
    for name, seconds in runs.items():
        best = min(seconds)
        per_step = 1e6 * best / steps
        print(
            f"| {name} | {best:.3f} | {args.rows * args.epochs / best:,.0f} | {per_step:.1f} | {best / base - 1:+.1%} |"
        )
    with tempfile.TemporaryDirectory() as directory:
        costs = per_step_costs(hp, data, Path(directory))
    step_seconds = costs["training step"]
    print("\n| per step | µs | share of a step |\n|---|---:|---:|")
    for name, cost in costs.items():
        print(f"| {name} | {1e6 * cost:.2f} | {cost / step_seconds:.2%} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
