"""TensorBoard event files, read back: each epoch's metrics, learning rate and profile as scalars, weight and
gradient histograms when asked, nothing when switched off or on a worker, flushed when a job fails."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from optml.container.paths import Paths
from optml.train.callbacks import Callback, Checkpointing, Control, StopOnRequest
from optml.train.checkpoints import Checkpointer, CheckpointPolicy
from optml.train.hyperparameters import Hyperparameters
from optml.train.interrupt import TrainingStopped
from optml.train.profiling import Profiler
from optml.train.tensorboard import EventFile, TensorBoard, read_events, read_scalars
from optml.train.trainer import Trainer, TrainState
from tests.conftest import REPO, StopAfter
from tests.unit.test_callbacks import HP, OBJECTIVE, TRAIN, network


def histograms(directory: Path) -> dict[str, list[int]]:
    """Each histogram tag's steps."""
    found: dict[str, list[int]] = {}
    for event in read_events(directory):
        for value in event.summary.value:
            if value.WhichOneof("value") == "histo":
                found.setdefault(value.tag, []).append(event.step)
    return found


def test_each_epochs_metrics_learning_rate_and_profile_are_scalars(tmp_path: Path) -> None:
    profiler = Profiler(log_lines=False)
    board = TensorBoard(tmp_path, profiler=profiler)
    history = Trainer(network(), TRAIN, TRAIN, hp=HP, objective=OBJECTIVE, callbacks=[profiler, board]).fit()

    scalars = read_scalars(tmp_path)
    for key in ("train:loss", "train:accuracy", "validation:auc", "validation:loss"):
        expected = [(epoch, row[key]) for epoch, row in enumerate(history.epochs, start=1)]
        assert [step for step, _ in scalars[key.replace(":", "/")]] == [1, 2, 3]
        np.testing.assert_allclose([v for _, v in scalars[key.replace(":", "/")]], [v for _, v in expected], rtol=1e-6)
    assert scalars["optimizer/learning_rate"] == [
        (1, pytest.approx(0.01)),
        (2, pytest.approx(0.01)),
        (3, pytest.approx(0.01)),
    ]
    for key in ("data_seconds", "forward_backward_seconds", "optimizer_seconds", "other_seconds", "samples_per_second"):
        values = [(p["epoch"], pytest.approx(p[key], rel=1e-6)) for p in profiler.epochs]
        assert scalars[f"profile/{key}"] == values
    assert "profile/gpu_max_allocated_mb" not in scalars  # CPU
    assert histograms(tmp_path) == {}  # not asked for
    assert board.writer is None  # closed at the fit's end


def test_the_profile_is_written_whichever_callback_comes_first(tmp_path: Path) -> None:
    profiler = Profiler(log_lines=False)
    board = TensorBoard(tmp_path, profiler=profiler)
    Trainer(network(), TRAIN, None, hp=HP, objective=OBJECTIVE, callbacks=[board, profiler]).fit()
    assert [step for step, _ in read_scalars(tmp_path)["profile/samples_per_second"]] == [1, 2, 3]


def test_weight_and_gradient_histograms_every_n_steps_when_asked(tmp_path: Path) -> None:
    board = TensorBoard(tmp_path, histograms=True, histogram_steps=5)
    net = network()
    Trainer(net, TRAIN, None, hp=HP, objective=OBJECTIVE, callbacks=[board]).fit()

    names = [name for name, _ in net.named_parameters()]
    found = histograms(tmp_path)
    assert set(found) == {f"{kind}/{name}" for kind in ("weights", "gradients") for name in names}
    assert all(steps == [5, 10, 15, 20] for steps in found.values())  # 21 steps trained in 3 epochs
    last = next(
        e for e in read_events(tmp_path) for v in e.summary.value if v.tag == f"weights/{names[0]}" and e.step == 20
    )
    histo = next(v.histo for v in last.summary.value if v.tag == f"weights/{names[0]}")
    assert histo.num == net.state_dict()[names[0]].numel()  # every weight counted once


class FailAtEpoch(Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, run: TrainState, metrics: dict[str, float], control: Control) -> None:
        if run.epoch == self.epoch:
            control.fail = RuntimeError("a rule stopped the job")


def test_a_failed_job_leaves_the_epochs_written_and_close_is_safe_twice(tmp_path: Path) -> None:
    board = TensorBoard(tmp_path)
    try:
        with pytest.raises(RuntimeError, match="a rule stopped the job"):
            Trainer(network(), TRAIN, None, hp=HP, objective=OBJECTIVE, callbacks=[board, FailAtEpoch(2)]).fit()
        assert [step for step, _ in read_scalars(tmp_path)["train/loss"]] == [1, 2]  # flushed at each epoch
    finally:
        board.close()
        board.close()
    assert board.writer is None


def test_the_histogram_step_continues_after_a_resume(tmp_path: Path) -> None:
    checkpointer = Checkpointer(tmp_path / "checkpoints", "algo-1", CheckpointPolicy(every_seconds=0))
    first = TensorBoard(tmp_path / "board", histograms=True, histogram_steps=4)
    with pytest.raises(TrainingStopped):  # 7 steps per epoch: stopped after step 3 of epoch 2
        Trainer(network(), TRAIN, None, hp=HP, objective=OBJECTIVE,
                callbacks=[Checkpointing(checkpointer), first, StopOnRequest(StopAfter(10))]).fit()  # fmt: skip
    first.close()
    resumed = TensorBoard(tmp_path / "board", histograms=True, histogram_steps=4)
    Trainer(network(), TRAIN, None, hp=HP, objective=OBJECTIVE, callbacks=[Checkpointing(checkpointer), resumed]).fit()
    assert resumed.steps == 21
    steps = histograms(tmp_path / "board")["weights/head.bias"]
    assert steps == [4, 8, 12, 16, 20]  # 4 and 8 before the stop, the rest after the resume
    assert [step for step, _ in read_scalars(tmp_path / "board")["train/loss"]] == [1, 2, 3]


@pytest.mark.parametrize(("switch", "is_master"), [(False, True), (True, False)], ids=["off", "worker"])
def test_nothing_is_written_when_switched_off_or_on_a_worker(tmp_path: Path, switch: bool, is_master: bool) -> None:
    hp = Hyperparameters(epochs=1, batch_size=16, hidden_units=(8,), tensorboard=switch)
    board = TensorBoard.for_job(hp, tmp_path / "board", is_master=is_master, profiler=None, histograms=True)
    callbacks: list[Callback] = [board] if board is not None else []  # as main.py adds it
    assert callbacks == []
    Trainer(network(), TRAIN, None, hp=hp, objective=OBJECTIVE, callbacks=callbacks).fit()
    assert not (tmp_path / "board").exists()


def test_for_job_writes_to_the_directory_given(tmp_path: Path) -> None:
    hp = Hyperparameters(epochs=1, batch_size=16, hidden_units=(8,), tensorboard=True)
    directory = Paths(root=tmp_path).tensorboard_dir
    assert directory == tmp_path / "output" / "tensorboard"
    board = TensorBoard.for_job(hp, directory, is_master=True, profiler=None, histograms=False)
    assert board is not None and not directory.exists()  # nothing until the fit starts
    Trainer(network(), TRAIN, None, hp=hp, objective=OBJECTIVE, callbacks=[board]).fit()
    assert [step for step, _ in read_scalars(directory)["train/loss"]] == [1]


def test_a_histogram_counts_the_finite_values_and_skips_a_tensor_with_none(tmp_path: Path) -> None:
    events = EventFile(tmp_path)
    exploded = torch.tensor([1.0, float("nan"), 2.0, float("inf"), 3.0])
    events.histograms(
        {"weights/a": exploded, "weights/b": torch.full((3,), float("nan")), "weights/c": torch.zeros(0)}, 7
    )
    events.close()
    (histogram,) = [(e.step, v.tag, v.histo) for e in read_events(tmp_path) for v in e.summary.value]
    assert histogram[:2] == (7, "weights/a")
    assert (histogram[2].num, histogram[2].min, histogram[2].max, histogram[2].sum) == (3, 1.0, 3.0, 6.0)


def test_tensorboardx_is_imported_only_when_a_file_is_opened() -> None:
    script = "import sys, optml.train.main, optml.train.tensorboard; print('tensorboardX' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stdout.strip()) == (0, "False"), result.stderr[-1000:]
