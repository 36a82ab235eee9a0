"""The per-epoch time profile: its phases add up to the epoch, a slow input shows as data time, it survives a
resume, the GPU path adds up CUDA events (faked here: CI has no GPU), and the report carries it."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from optml.container.artifact import ModelMetadata
from optml.container.kinds import BINARY
from optml.container.networks import NetworkSpec, build_network
from optml.train import profiling, trainer
from optml.train.callbacks import Callback, Checkpointing, Control, StopOnRequest
from optml.train.checkpoints import Checkpointer, CheckpointPolicy
from optml.train.hyperparameters import Hyperparameters
from optml.train.interrupt import TrainingStopped
from optml.train.losses import LossFunction, per_row_loss
from optml.train.profiling import MB, DeviceTimer, Profiler, format_profile
from optml.train.report import TrainingReport, write_evaluation, write_plots
from optml.train.trainer import Batch, MemoryBatches, Split, Trainer, TrainState
from tests.conftest import StopAfter, make_classification

ROWS = make_classification(600, 4, 2, seed=3)  # 19 batches of 32, the last one short
TRAIN = Split.from_arrays(ROWS[:, 1:].astype(np.float32), ROWS[:, 0].astype(np.int64))
HP = Hyperparameters(epochs=3, batch_size=32, hidden_units=(8,), learning_rate=0.01)
OBJECTIVE = trainer.Objective(
    BINARY, LossFunction("bce", per_row_loss("bce", BINARY, huber_delta=1, focal_gamma=2, focal_alpha=0.25))
)
PHASES = ["data_seconds", "forward_backward_seconds", "optimizer_seconds", "other_seconds"]


def network() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_network(NetworkSpec("mlp", (4,), 1, hidden_units=(8,)))


class EpochClock(Callback):
    """Test-only: when each epoch's callbacks ran, by an independent clock."""

    def __init__(self) -> None:
        self.ends = [time.perf_counter()]

    def on_epoch_end(self, run: TrainState, metrics: dict[str, float], control: Control) -> None:
        self.ends.append(time.perf_counter())


class SlowInput:
    """Batches that cost CPU work each, like parsing a slow input format: the input is the bottleneck."""

    def __init__(self, batches: MemoryBatches) -> None:
        self.batches = batches
        self.checksum = 0.0

    @property
    def rows(self) -> int:
        return self.batches.rows

    def epoch(self, run: TrainState) -> Generator[Batch | None, None, None]:
        for batch in self.batches.epoch(run):
            values = np.random.default_rng(run.batches_done).random(600_000)
            self.checksum += float(np.sort(values)[0])  # ~30 ms of sorting per batch
            yield batch


def test_the_phases_add_up_to_each_epoch_and_samples_per_second_is_rows_over_seconds() -> None:
    profiler, clock = Profiler(), EpochClock()
    Trainer(network(), TRAIN, TRAIN, hp=HP, objective=OBJECTIVE, callbacks=[clock, profiler]).fit()

    assert [p["epoch"] for p in profiler.epochs] == [1, 2, 3]
    for profile, started, ended in zip(profiler.epochs, clock.ends[:-1], clock.ends[1:], strict=True):
        assert profile["steps"] == 19 and profile["rows"] == 600 and profile["resumed"] is False
        assert all(profile[phase] >= 0 for phase in PHASES)
        assert profile["forward_backward_seconds"] > 0 and profile["optimizer_seconds"] > 0
        assert sum(profile[phase] for phase in PHASES) == pytest.approx(profile["seconds"], rel=1e-9, abs=1e-9)
        measured = profile["data_seconds"] + profile["forward_backward_seconds"] + profile["optimizer_seconds"]
        assert measured <= profile["seconds"]  # `other` is the rest, never clamped at 0 here
        assert 0 < profile["seconds"] <= ended - started  # within the epoch, as the other clock saw it
        assert profile["samples_per_second"] == pytest.approx(600 / profile["seconds"])
        assert 0 < profile["cpu_rss_mb"] <= profile["cpu_peak_rss_mb"]
        assert "gpu_max_allocated_mb" not in profile  # CPU: no GPU keys


@pytest.fixture
def one_thread() -> Generator[None, None, None]:
    """One torch thread: on a busy machine, intra-op threads waiting for each other slow each step down
    many times over (measured: 47 ms instead of 3 ms per step on 2 shared cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("one_thread")
def test_a_slow_input_shows_as_data_time() -> None:
    slow = SlowInput(MemoryBatches(TRAIN, OBJECTIVE.loss_targets(TRAIN.targets), HP.batch_size))
    profiler = Profiler()
    hp = Hyperparameters(epochs=2, batch_size=32, hidden_units=(8,), learning_rate=0.01)
    Trainer(network(), slow, None, hp=hp, objective=OBJECTIVE, callbacks=[profiler]).fit()

    for profile in profiler.epochs:
        compute = profile["forward_backward_seconds"] + profile["optimizer_seconds"] + profile["other_seconds"]
        assert profile["data_seconds"] > compute, profile
        assert profile["data_seconds"] / profile["seconds"] > 0.5


def test_one_log_line_per_epoch(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="optml.train.profiling"):
        Trainer(network(), TRAIN, None, hp=HP, objective=OBJECTIVE, callbacks=[Profiler()]).fit()
    lines = [r.getMessage() for r in caplog.records if r.name == "optml.train.profiling"]
    assert [line.split(":")[0] for line in lines] == ["epoch 1 profile", "epoch 2 profile", "epoch 3 profile"]
    assert all("data " in line and "samples/s" in line and "since start" in line for line in lines)
    assert not any("=" in line.split(" = ", 1)[1] for line in lines)  # no name=value: no metric regex matches


def test_the_finished_epochs_survive_a_resume_and_the_resumed_epoch_covers_its_part(tmp_path: Path) -> None:
    checkpointer = Checkpointer(tmp_path, "algo-1", CheckpointPolicy(every_seconds=0))
    first = Profiler()
    with pytest.raises(TrainingStopped):  # 19 steps per epoch: stopped after step 5 of epoch 2
        Trainer(network(), TRAIN, None, hp=HP, objective=OBJECTIVE,
                callbacks=[Checkpointing(checkpointer), first, StopOnRequest(StopAfter(24))]).fit()  # fmt: skip
    assert [p["epoch"] for p in first.epochs] == [1]

    resumed = Profiler()
    Trainer(network(), TRAIN, None, hp=HP, objective=OBJECTIVE,
            callbacks=[Checkpointing(checkpointer), resumed]).fit()  # fmt: skip
    assert [p["epoch"] for p in resumed.epochs] == [1, 2, 3]
    assert resumed.epochs[0] == first.epochs[0]  # restored from the checkpoint as it was
    assert (resumed.epochs[1]["steps"], resumed.epochs[1]["resumed"]) == (14, True)
    assert resumed.epochs[1]["rows"] == 600 - 5 * 32
    assert (resumed.epochs[2]["steps"], resumed.epochs[2]["resumed"]) == (19, False)


class FakeEvent:
    """A CUDA event on the CPU: a timestamp in milliseconds, done or not yet."""

    def __init__(self, milliseconds: float, done: bool = True) -> None:
        self.milliseconds, self.done, self.synchronized = milliseconds, done, False

    def query(self) -> bool:
        return self.done

    def synchronize(self) -> None:
        self.synchronized = self.done = True

    def elapsed_time(self, end: FakeEvent) -> float:
        assert self.done and end.done, "reading an unfinished event raises on CUDA"
        return end.milliseconds - self.milliseconds


class FakeTimer(DeviceTimer):
    """Every sampled step's forward/backward takes 3 ms of GPU time and its optimizer step 1 ms."""

    def __init__(self) -> None:
        super().__init__(every=4)
        self.records = 0

    def record(self) -> FakeEvent:
        self.records += 1
        return FakeEvent(10.0 * ((self.records - 1) // 3) + (0.0, 3.0, 4.0)[(self.records - 1) % 3])


def test_on_cuda_the_sampled_gpu_times_are_scaled_to_every_step_and_memory_peaks_reset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    timers: list[FakeTimer] = []
    resets: list[torch.device] = []

    def fake_timer(device: torch.device) -> FakeTimer:
        timers.append(FakeTimer())
        return timers[-1]

    monkeypatch.setattr(trainer, "device_timer", fake_timer)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", resets.append)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device: 300 * MB)
    profiler = Profiler(device=torch.device("cuda"))
    Trainer(network(), TRAIN, None, hp=HP, objective=OBJECTIVE, callbacks=[profiler]).fit()

    assert timers[0].records == 3 * len(range(0, 3 * 19, 4))  # one step in 4 sampled, 3 events each
    for profile in profiler.epochs:
        assert profile["gpu_forward_backward_seconds"] == pytest.approx(19 * 0.003)
        assert profile["gpu_optimizer_seconds"] == pytest.approx(19 * 0.001)
        assert profile["gpu_max_allocated_mb"] == 300
    assert len(resets) == 4  # at the start, then after each epoch
    assert "GPU forward/backward 0.057 s, optimizer 0.019 s (sampled), max allocated 300 MB" in format_profile(
        profiler.epochs[0]
    )


def test_unfinished_events_wait_for_a_later_pass_and_the_epoch_end_reads_all() -> None:
    profiler = Profiler(device=torch.device("cpu"))
    done = [FakeEvent(0), FakeEvent(2), FakeEvent(5)]
    running = [FakeEvent(10), FakeEvent(11), FakeEvent(20, done=False)]  # the step not done yet
    profiler.pending = [done, running]
    profiler._read_events(wait=False)
    assert (profiler.times.gpu_sampled, profiler.pending) == (1, [running])
    assert (profiler.times.gpu_forward_backward, profiler.times.gpu_optimizer) == (0.002, 0.003)
    profiler._read_events(wait=True)
    assert running[2].synchronized and profiler.pending == []
    assert profiler.times.gpu_sampled == 2
    assert profiler.times.gpu_forward_backward == pytest.approx(0.003)


def test_the_device_timer_samples_one_step_in_every(monkeypatch: pytest.MonkeyPatch) -> None:
    timer = DeviceTimer(every=3)
    monkeypatch.setattr(timer, "record", lambda: "event")
    assert [timer.start() for _ in range(7)] == [["event"], None, None, ["event"], None, None, ["event"]]
    assert profiling.device_timer(torch.device("cpu")) is None
    assert isinstance(profiling.device_timer(torch.device("cuda")), DeviceTimer)


def test_peak_rss_falls_back_to_getrusage_without_proc(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(profiling, "STATUS", tmp_path / "missing")
    assert profiling.peak_rss_mb() > 10  # the interpreter and torch alone hold more
    assert profiling.current_rss_mb() == profiling.peak_rss_mb()


def report(profile: list[dict[str, Any]]) -> TrainingReport:
    metadata = ModelMetadata(BINARY, NetworkSpec("mlp", (4,), 1, hidden_units=(8,)), 4, [0.0] * 4, [1.0] * 4, [0, 1])
    history = [{"train:loss": 0.7 - 0.1 * epoch, "train:accuracy": 0.5 + 0.1 * epoch} for epoch in range(3)]
    return TrainingReport(metadata, {}, history, profile=profile)


def test_evaluation_json_carries_the_profile_and_the_timeline_is_drawn(tmp_path: Path) -> None:
    profiler = Profiler(log_lines=False)
    Trainer(network(), TRAIN, None, hp=HP, objective=OBJECTIVE, callbacks=[profiler]).fit()
    training_report = report(profiler.epochs)
    document = json.loads(write_evaluation(tmp_path, training_report).read_text())
    assert [p["epoch"] for p in document["profile"]] == [1, 2, 3]
    assert document["profile"][0]["rows"] == 600
    assert document["profile"][0]["data_seconds"] == round(profiler.epochs[0]["data_seconds"], 4)
    written = write_plots(tmp_path, training_report)
    timeline = tmp_path / "profile_timeline.png"
    assert timeline in written and timeline.read_bytes().startswith(b"\x89PNG")


def test_no_profile_no_timeline(tmp_path: Path) -> None:
    training_report = report([])
    assert json.loads(write_evaluation(tmp_path, training_report).read_text())["profile"] == []
    assert tmp_path / "profile_timeline.png" not in write_plots(tmp_path, training_report)
    assert not (tmp_path / "profile_timeline.png").exists()
