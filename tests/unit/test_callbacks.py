"""The training loop's extension point: a callback plugs in without editing the loop, sees every step, and
its state travels through checkpoints like the loop's own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from optml.container.kinds import BINARY
from optml.container.networks import NetworkSpec, build_network
from optml.train.callbacks import Callback, Checkpointing, Control, StopOnRequest
from optml.train.checkpoints import Checkpointer, CheckpointPolicy
from optml.train.hyperparameters import Hyperparameters
from optml.train.interrupt import TrainingStopped
from optml.train.losses import LossFunction, per_row_loss
from optml.train.trainer import History, Objective, Split, Step, Trainer, TrainState
from tests.conftest import StopAfter, make_classification

ROWS = make_classification(100, 4, 2, seed=1)  # 7 batches of 16, the last one short
TRAIN = Split.from_arrays(ROWS[:, 1:].astype(np.float32), ROWS[:, 0].astype(np.int64))
HP = Hyperparameters(epochs=3, batch_size=16, hidden_units=(8,), learning_rate=0.01)
OBJECTIVE = Objective(
    BINARY, LossFunction("bce", per_row_loss("bce", BINARY, huber_delta=1, focal_gamma=2, focal_alpha=0.25))
)


def network() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_network(NetworkSpec("mlp", (4,), 1, hidden_units=(8,)))


class RecordSteps(Callback):
    """Test-only: every step the loop takes, as (epoch, batches done, the step's loss, its row count)."""

    def __init__(self) -> None:
        self.steps: list[tuple[int, int, float, int]] = []

    def on_step_end(self, run: TrainState, step: Step | None, control: Control) -> None:
        assert step is not None
        self.steps.append((run.epoch, run.batches_done, float(step.loss), int(step.weight)))


class CountEpochs(Callback):
    """Test-only: a callback with state, which a checkpoint must carry."""

    name = "count_epochs"

    def __init__(self) -> None:
        self.epochs_seen = 0

    def on_epoch_end(self, run: TrainState, metrics: dict[str, float], control: Control) -> None:
        self.epochs_seen += 1

    def state_dict(self) -> dict[str, Any]:
        return {"epochs_seen": self.epochs_seen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epochs_seen = state["epochs_seen"]


def test_a_callback_sees_every_step_and_changes_nothing() -> None:
    plain, recorded = network(), network()
    Trainer(plain, TRAIN, None, hp=HP, objective=OBJECTIVE).fit()
    recorder = RecordSteps()
    history = Trainer(recorded, TRAIN, None, hp=HP, objective=OBJECTIVE, callbacks=[recorder]).fit()

    assert [(epoch, batch) for epoch, batch, _, _ in recorder.steps] == [(e, b) for e in (1, 2, 3) for b in range(1, 8)]
    assert [rows for *_, rows in recorder.steps] == [16] * 6 + [4] + [16] * 6 + [4] + [16] * 6 + [4]
    for epoch, metrics in enumerate(history.epochs, start=1):  # the epoch's loss is its steps' weighted mean
        steps = [(loss, rows) for e, _, loss, rows in recorder.steps if e == epoch]
        expected = sum(loss * rows for loss, rows in steps) / sum(rows for _, rows in steps)
        assert metrics["train:loss"] == pytest.approx(expected, rel=1e-6)
    for key, value in plain.state_dict().items():
        torch.testing.assert_close(recorded.state_dict()[key], value, rtol=0, atol=0)


def test_a_named_callback_state_is_checkpointed_and_restored(tmp_path: Path) -> None:
    checkpointer = Checkpointer(tmp_path, "algo-1", CheckpointPolicy(every_seconds=0))
    counter = CountEpochs()
    with pytest.raises(TrainingStopped):  # stopped in epoch 3: two epochs seen, checkpointed
        Trainer(network(), TRAIN, None, hp=HP, objective=OBJECTIVE, callbacks=[Checkpointing(checkpointer), counter,
            StopOnRequest(StopAfter(16))]).fit()  # fmt: skip
    assert counter.epochs_seen == 2
    resumed = CountEpochs()
    history: History = Trainer(
        network(), TRAIN, None, hp=HP, objective=OBJECTIVE, callbacks=[Checkpointing(checkpointer), resumed]
    ).fit()
    assert resumed.epochs_seen == 3  # 2 restored from the checkpoint, 1 seen after the resume
    assert len(history.epochs) == 3
