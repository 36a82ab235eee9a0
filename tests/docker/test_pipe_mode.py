"""TrainingInputMode Pipe in a real container (issue 14): the channel arrives through FIFOs
`/opt/ml/input/data/train_<n>`, fed from the host by tests/pipe_feeder.py as SageMaker's agent feeds them.

Contract: pass 0 is read for the preprocessing statistics, then epoch e reads FIFO e, and the final model
scores the channel from one more, so a job of E epochs reads E + 2 passes; a FIFO nobody writes to fails
the job after `pipe_read_timeout_seconds`, with a failure file naming the channel and the timeout.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from docker.models.containers import Container

from tests.conftest import make_classification, make_opt_ml, write_csv
from tests.docker.conftest import wait_for_exit
from tests.pipe_feeder import PipeFeeder

pytestmark = [pytest.mark.docker, pytest.mark.slow]

RunContainer = Callable[..., Container]
EPOCHS = 2
HYPERPARAMETERS = {"epochs": str(EPOCHS), "batch_size": "32", "hidden_units": "16", "learning_rate": "0.01"}


def pipe_job(root: Path, hyperparameters: dict[str, str]) -> Path:
    """/opt/ml with channel train in Pipe mode (no train folder: FIFOs instead) and validation as files."""
    tree = make_opt_ml(root, None, make_classification(80, 4, 2, seed=2), hyperparameters)
    config = tree / "input/config/inputdataconfig.json"
    channels = json.loads(config.read_text())
    channels["train"] = {
        "ContentType": "text/csv",
        "TrainingInputMode": "Pipe",
        "S3DistributionType": "FullyReplicated",
    }
    config.write_text(json.dumps(channels))
    return tree


def mount(tree: Path) -> dict[str, dict[str, str]]:
    return {str(tree): {"bind": "/opt/ml", "mode": "rw"}}


def test_a_pipe_mode_channel_trains_a_model(tmp_path: Path, run_container: RunContainer) -> None:
    tree = pipe_job(tmp_path / "ml", HYPERPARAMETERS)
    files = [
        write_csv(tmp_path / "s3/train/part-0.csv", make_classification(200, 4, 2, seed=1)),
        write_csv(tmp_path / "s3/train/part-1.csv", make_classification(150, 4, 2, seed=3)),
    ]
    with PipeFeeder(tree / "input/data", "train", files) as feeder:
        status, logs = wait_for_exit(run_container("train", volumes=mount(tree)), timeout=300)
    assert status == 0, logs
    assert feeder.error is None
    assert (tree / "model/model.safetensors").exists()
    assert feeder.served == EPOCHS + 2, "a statistics pass, one FIFO per epoch, and the final model's scoring"


def test_a_pipe_nobody_writes_fails_the_job_naming_channel_and_timeout(
    tmp_path: Path, run_container: RunContainer
) -> None:
    tree = pipe_job(tmp_path / "ml", {**HYPERPARAMETERS, "pipe_read_timeout_seconds": "2"})
    os.mkfifo(tree / "input/data/train_0", 0o666)  # as SageMaker makes it; no writer ever opens it
    started = time.monotonic()
    status, logs = wait_for_exit(run_container("train", volumes=mount(tree)), timeout=90)
    assert time.monotonic() - started < 90
    assert status != 0, logs
    failure = (tree / "output/failure").read_text()
    assert "'train'" in failure, failure
    assert re.search(r"\b2(\.0)? ?s(econds)?\b", failure), f"the timeout is not named: {failure}"
