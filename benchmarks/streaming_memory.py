"""Training on data bigger than memory (issue 14): the same job on 1×, 4× and 16× a base CSV channel, each in a
container limited to 2 GiB (`--memory 2g --memory-swap 2g`), with peak memory, wall time and rows/s.

The base file (label + 20 numeric features, binary, headerless) is generated once; the channel of size N× is
N hard links to it (part-00000.csv, …), so 16× — over 4 GB of CSV as the container sees it — costs 1× of
disk. One epoch of the default MLP. `--data-loading stream` (the default) is what issue 14 adds;
`--data-loading memory` is the baseline, which must be killed for memory (exit 137) once a channel no longer
fits. rows/s is rows ÷ the job's wall time (start of the container to its exit: loading, training, scoring
and saving); "train rows/s" is rows ÷ the training phase from evaluation.json, when the job got that far.
torch runs one intra-op thread (`--threads`): two on a busy 2-core machine make the times swing several-fold.

    .venv/bin/python -m benchmarks.streaming_memory --image optml:latest                        # stream
    .venv/bin/python -m benchmarks.streaming_memory --image optml:latest --data-loading memory  # baseline
    .venv/bin/python -m benchmarks.streaming_memory --quick                                     # smoke check

Data goes under `--workdir` (default: a folder in /tmp), removed at the end unless `--keep-data`.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import docker

from benchmarks.streaming_jobs import JobResult, count_lines, linked_channel, run_job, write_base_csv, write_tree

FEATURES = 20


@dataclass(frozen=True)
class Row:
    copies: int
    size_bytes: int
    rows: int
    result: JobResult

    def cells(self) -> str:
        r = self.result
        training = r.timings.get("training")
        speed = f"{self.rows / r.wall_s:,.0f}" if r.exit_code == 0 else "–"
        train_speed = f"{self.rows / training:,.0f}" if training and r.exit_code == 0 else "–"
        return (
            f"| {self.copies}× | {self.size_bytes / 1e9:.2f} GB | {self.rows:,} | {r.outcome}"
            f" | {r.peak_mib:,.0f} | {r.peak_anon_mib:,.0f} | {r.wall_s:.1f} | {speed} | {train_speed} |"
        )


def table(rows: Sequence[Row], data_loading: str, memory: str) -> str:
    lines = [
        f"data_loading={data_loading}, container memory {memory} (swap off), 1 epoch",
        "",
        "| size | on disk (as the container sees it) | rows | exit | peak memory MiB | peak anon MiB | wall s"
        " | rows/s | train rows/s |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    lines += [row.cells() for row in rows]
    failures = [f"- {row.copies}×: {row.result.failure[:300]}" for row in rows if row.result.failure]
    return "\n".join(lines + (["", "/opt/ml/output/failure:", *failures] if failures else []))


def measure(client: docker.DockerClient, args: argparse.Namespace, base: Path, base_rows: int, copies: int) -> Row:
    work = Path(args.workdir)
    channel = work / f"channel-{copies}x"
    parts = linked_channel(base, channel, copies)
    tree = work / f"job-{copies}x-{args.data_loading}"
    shutil.rmtree(tree, ignore_errors=True)
    hyperparameters = {"epochs": "1", "batch_size": str(args.batch_size), "data_loading": args.data_loading}
    write_tree(tree, hyperparameters)
    mounts = {str(channel): {"bind": "/opt/ml/input/data/train", "mode": "ro"}}
    environment = {"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}
    result = run_job(client, args.image, tree, mounts, args.memory, args.deadline, environment)
    return Row(copies, sum(p.stat().st_size for p in parts), base_rows * copies, result)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", default="optml:latest")
    parser.add_argument("--sizes", type=lambda s: [int(v) for v in s.split(",")], default=[1, 4, 16])
    parser.add_argument("--base-rows", type=int, default=1_800_000, help="rows of the 1× file (~270 MB: 16× is 4.3 GB)")
    parser.add_argument("--data-loading", choices=("auto", "memory", "stream"), default="stream")
    parser.add_argument("--memory", default="2g", help="the container's memory limit, swap included")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS in the container (0: torch's)")
    parser.add_argument("--deadline", type=float, default=3600, help="seconds before a job is killed")
    parser.add_argument("--workdir", default=None, help="default: a new folder in /tmp")
    parser.add_argument("--keep-data", action="store_true", help="leave the generated data in --workdir")
    parser.add_argument("--quick", action="store_true", help="20k-row base, sizes 1,4: a smoke check")
    args = parser.parse_args(argv)
    if args.quick:
        args.base_rows, args.sizes = 20_000, [1, 4]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.workdir = args.workdir or tempfile.mkdtemp(prefix="optml-streaming-memory-")
    client = docker.from_env()
    try:
        base = Path(args.workdir) / f"base-{args.base_rows}.csv"
        if not base.exists():
            write_base_csv(base, args.base_rows, FEATURES)
        base_rows = count_lines(base)
        print(
            f"base file {base}: {base_rows:,} rows, {base.stat().st_size / 1e6:,.0f} MB; image {args.image},"
            f" OMP_NUM_THREADS {args.threads or 'unset'}"
        )
        rows = []
        for copies in args.sizes:
            row = measure(client, args, base, base_rows, copies)
            rows.append(row)
            print(f"  {copies}×: exit {row.result.outcome}, {row.result.wall_s:.1f} s"
                  f" (peak from {row.result.memory_source})", flush=True)  # fmt: skip
        print()
        print(table(rows, args.data_loading, args.memory))
    finally:
        if not args.keep_data:
            shutil.rmtree(args.workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
