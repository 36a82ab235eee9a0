"""S3DistributionType=ShardedByS3Key across two real hosts (issue 14): each host trains on the files it holds.

algo-1 holds 600 rows in two files, algo-2 250 rows in one; a categorical column has different categories on
each host, and an integer id column is left out of the features with `feature_columns`. What the trainer must
do: agree on one preprocessing (the union of the categories), take as many steps per epoch as the largest
shard has batches (smaller shards wrap around), and train every row of every shard at least once per epoch —
the largest shard's exactly once.

The rows trained are read from the trainer's debug row log. Contract: with `OPTML_ROW_LOG=<dir>` set, each
training process writes `<dir>/rows-<host>-<local_rank>.txt`, one line per trained row:
`<epoch> <step> <file name relative to the channel dir> <row index in that file, 0-based, header not counted>`.
The master also logs `<n> steps per epoch`.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import write_csv
from tests.docker.conftest import StartHost, wait_for_exit

pytestmark = [pytest.mark.docker, pytest.mark.slow]

HOSTS = ["algo-1", "algo-2"]
BATCH = 50
EPOCHS = 2
HYPERPARAMETERS = {
    "epochs": str(EPOCHS),
    "batch_size": str(BATCH),
    "hidden_units": "16",
    "learning_rate": "0.01",
    "seed": "5",
    "label_column": "label",
    "feature_columns": "color,f1,f2,f3",  # row_id is not a feature
}
HEADER: list[object] = ["row_id", "color", "f1", "f2", "f3", "label"]
# Each host's shard: file name → (rows, its colors). Different keys on each host, as S3 sharding hands them out.
SHARDS = {
    "algo-1": {"part-00000.csv": (350, ("red", "green")), "part-00001.csv": (250, ("red", "green"))},
    "algo-2": {"part-00002.csv": (250, ("blue", "green"))},
}
# batch_size is the global batch, as in memory mode: each of the 2 hosts takes 25 rows a step. Steps per epoch
# on every host: the largest shard's batch count (600 rows / 25 = 24; algo-2 wraps around).
PER_HOST = BATCH // len(HOSTS)
STEPS = -(-max(sum(rows for rows, _ in shard.values()) for shard in SHARDS.values()) // PER_HOST)
ROW_LOG = "/opt/ml/output/rows"
DEADLINE_S = 300


def rows_of(count: int, colors: tuple[str, ...], first_id: int, seed: int) -> list[list[object]]:
    rng = np.random.default_rng(seed)
    x = np.round(rng.normal(size=(count, 3)), 5)
    label = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int)
    return [
        [first_id + i, colors[i % len(colors)], *x[i].tolist(), int(label[i])] for i in range(count)
    ]  # fmt: skip


def host_tree(root: Path, host: str) -> Path:
    """/opt/ml for one host: its own train shard, the same validation channel as the other host."""
    tree = root / host
    for sub in ("input/config", "model", "output/data"):
        (tree / sub).mkdir(parents=True, exist_ok=True)
    first_id = 0 if host == "algo-1" else 10_000
    for seed, (name, (count, colors)) in enumerate(SHARDS[host].items()):
        write_csv(tree / "input/data/train" / name, [HEADER, *rows_of(count, colors, first_id, seed)])
        first_id += count
    write_csv(tree / "input/data/validation/part-0.csv", [HEADER, *rows_of(60, ("red", "green", "blue"), 90_000, 9)])
    channel = {"ContentType": "text/csv", "TrainingInputMode": "File"}
    channels = {
        "train": {**channel, "S3DistributionType": "ShardedByS3Key"},
        "validation": {**channel, "S3DistributionType": "FullyReplicated"},
    }
    config = tree / "input/config"
    (config / "inputdataconfig.json").write_text(json.dumps(channels))
    (config / "hyperparameters.json").write_text(json.dumps(HYPERPARAMETERS))
    (config / "resourceconfig.json").write_text(
        json.dumps({"current_host": host, "hosts": HOSTS, "network_interface_name": "eth0"})
    )
    return tree


def trained_rows(tree: Path, host: str) -> dict[int, Counter[tuple[str, int]]]:
    """epoch → how many times each (file, row) was trained, over every process of the host; checks that each
    epoch took as many steps as the largest shard has batches."""
    logs = sorted((tree / "output/rows").glob(f"rows-{host}-*.txt"))
    assert logs, f"{host} wrote no rows-{host}-<local_rank>.txt under OPTML_ROW_LOG"
    seen: dict[int, Counter[tuple[str, int]]] = {}
    steps: dict[int, set[int]] = {}
    for log in logs:
        for line in log.read_text().splitlines():
            epoch, step, name, row = line.split()
            seen.setdefault(int(epoch), Counter())[(name, int(row))] += 1
            steps.setdefault(int(epoch), set()).add(int(step))
    assert {epoch: len(s) for epoch, s in steps.items()} == dict.fromkeys(seen, STEPS), f"{host}: steps per epoch"
    return seen


def shard_rows(host: str) -> set[tuple[str, int]]:
    return {(name, row) for name, (count, _) in SHARDS[host].items() for row in range(count)}


def test_each_host_trains_its_own_shard_with_shared_preprocessing(tmp_path: Path, start_host: StartHost) -> None:
    trees = {host: host_tree(tmp_path, host) for host in HOSTS}
    containers = {host: start_host(host, trees[host], {"OPTML_ROW_LOG": ROW_LOG}) for host in reversed(HOSTS)}
    results = {host: wait_for_exit(container, timeout=DEADLINE_S) for host, container in containers.items()}
    for host, (status, logs) in results.items():
        assert status == 0, f"{host}:\n{logs}"

    metadata = json.loads((trees["algo-1"] / "model/optml-model.json").read_text())
    columns = {column["name"]: column for column in metadata["encoder"]["columns"]}
    assert list(columns) == ["color", "f1", "f2", "f3"]
    assert columns["color"]["categories"] == ["blue", "green", "red"]  # the union of both shards' categories
    assert re.search(rf"\b{STEPS} steps per epoch\b", results["algo-1"][1]), results["algo-1"][1]

    largest = trained_rows(trees["algo-1"], "algo-1")
    assert len(largest) == EPOCHS
    for epoch, counts in largest.items():
        assert set(counts) == shard_rows("algo-1"), f"epoch {epoch}: rows of algo-1's shard missing or foreign"
        assert set(counts.values()) == {1}, f"epoch {epoch}: the largest shard's rows are each trained once"
    smaller = trained_rows(trees["algo-2"], "algo-2")
    assert len(smaller) == EPOCHS
    for epoch, counts in smaller.items():
        assert set(counts) == shard_rows("algo-2"), f"epoch {epoch}: algo-2 must train all its rows, only its own"
        assert sum(counts.values()) == STEPS * PER_HOST, f"epoch {epoch}: algo-2 wraps around its shard"
