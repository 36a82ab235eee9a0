"""data_loading=stream through the real entry point: the same statistics as in memory, every row once per
epoch, determinism, bit-exact resume, several processes, Pipe mode and the refusals."""

from __future__ import annotations

import json
import logging
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load_file

from optml.container.paths import Paths
from optml.train.interrupt import TrainingStopped
from optml.train.main import main, run
from tests.conftest import StopAfter, make_classification, make_opt_ml, make_regression, write_csv
from tests.pipe_feeder import PipeFeeder
from tests.unit.test_checkpoints import tarball

HYPERPARAMETERS = {
    "epochs": "3",
    "batch_size": "16",
    "hidden_units": "16,8",
    "dropout": "0.2",  # draws from torch's global RNG: resume must restore it
    "learning_rate": "0.01",
    "seed": "5",
    "checkpoint_every_steps": "1",
    "keep_checkpoints": "1000",
    "shuffle_buffer_rows": "40",
}
BLOCK_BYTES = "2000"  # about 40 rows: many blocks in every file


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPTML_STREAM_BLOCK_BYTES", BLOCK_BYTES)


def job(root: Path, files: int = 3, rows: int = 150, **overrides: str) -> Path:
    """A train channel in `files` CSV files of `rows` rows each, and a validation channel."""
    data = make_classification(files * rows, 4, 2, seed=1)
    root = make_opt_ml(root, data[:rows], make_classification(60, 4, 2, seed=2), HYPERPARAMETERS | overrides)
    for number in range(1, files):
        write_csv(root / f"input/data/train/part-{number}.csv", data[number * rows : (number + 1) * rows])
    return root


def weights(root: Path) -> dict[str, np.ndarray]:
    return load_file(str(root / "model" / "model.safetensors"))


def metadata(root: Path) -> dict[str, Any]:
    return json.loads((root / "model" / "optml-model.json").read_text())


def assert_same_weights(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def trained_rows(log_dir: Path) -> dict[int, Counter[tuple[str, int]]]:
    """Epoch → how often each (file, row) was trained, from every process's row log."""
    seen: dict[int, Counter[tuple[str, int]]] = {}
    for path in log_dir.glob("rows-*.txt"):
        for line in path.read_text().splitlines():
            epoch, _, name, row = line.split()
            seen.setdefault(int(epoch), Counter())[(name, int(row))] += 1
    return seen


@pytest.fixture(scope="module")
def streamed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = job(tmp_path_factory.mktemp("streamed") / "ml", data_loading="stream")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OPTML_STREAM_BLOCK_BYTES", BLOCK_BYTES)
        run(Paths(root=root))
    return root


def test_streaming_fits_the_statistics_loading_fits_and_learns(tmp_path: Path, streamed: Path) -> None:
    loaded = job(tmp_path / "memory", data_loading="memory")
    run(Paths(root=loaded))
    stream_meta, memory_meta = metadata(streamed), metadata(loaded)
    np.testing.assert_allclose(stream_meta["feature_mean"], memory_meta["feature_mean"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stream_meta["feature_std"], memory_meta["feature_std"], rtol=1e-5)
    assert stream_meta["classes"] == memory_meta["classes"] == [0, 1]
    assert stream_meta["hyperparameters"]["data_loading"] == "stream"
    evaluation = json.loads((streamed / "output/data/evaluation.json").read_text())
    assert evaluation["channels"]["validation"]["metrics"]["accuracy"] >= 0.85
    assert evaluation["channels"]["train"]["rows"] == 450


def test_one_process_trains_every_row_exactly_once_per_epoch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = job(tmp_path / "ml", data_loading="stream")
    monkeypatch.setenv("OPTML_ROW_LOG", str(tmp_path))
    run(Paths(root=root))
    seen = trained_rows(tmp_path)
    expected = {(f"part-{file}.csv", row) for file in range(3) for row in range(150)}
    assert sorted(seen) == [1, 2, 3]
    for counts in seen.values():
        assert set(counts) == expected and set(counts.values()) == {1}


def test_the_same_seed_and_data_give_the_same_weights(tmp_path: Path, streamed: Path) -> None:
    again = job(tmp_path / "again", data_loading="stream")
    run(Paths(root=again))
    assert_same_weights(weights(again), weights(streamed))
    other = job(tmp_path / "other", data_loading="stream", seed="6")
    run(Paths(root=other))
    assert any(not np.array_equal(weights(other)[key], weights(streamed)[key]) for key in weights(streamed))


@pytest.mark.parametrize("stops", [[4], [1, 13, 20]], ids=["mid-epoch", "three-stops"])
def test_a_stopped_stream_resumes_bit_exactly(tmp_path: Path, streamed: Path, stops: list[int]) -> None:
    root = job(tmp_path / "ml", data_loading="stream")
    for steps in stops:
        with pytest.raises(TrainingStopped):
            run(Paths(root=root), StopAfter(steps))
    run(Paths(root=root))
    assert_same_weights(weights(root), weights(streamed))


def test_a_killed_stream_resumes_bit_exactly_from_a_mid_epoch_checkpoint(
    tmp_path: Path, streamed: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A SIGKILL leaves the checkpoints written so far: keep those up to a step of epoch 2, resume."""
    caplog.set_level(logging.INFO)
    root = job(tmp_path / "ml", data_loading="stream")
    run(Paths(root=root))
    checkpoints = sorted((root / "checkpoints").glob("checkpoint-algo-1-*.pt"))
    for later in checkpoints[checkpoints.index(root / "checkpoints/checkpoint-algo-1-e00002-b0000011.pt") + 1 :]:
        later.unlink()
    shutil.rmtree(root / "model")
    run(Paths(root=root))
    assert "resuming the stream at {'epoch': 2, 'step': 11, 'pass': 0" in caplog.text
    assert_same_weights(weights(root), weights(streamed))


def test_resuming_on_changed_data_is_refused(tmp_path: Path) -> None:
    root = job(tmp_path / "ml", data_loading="stream")
    with pytest.raises(TrainingStopped):
        run(Paths(root=root), StopAfter(5))
    write_csv(root / "input/data/train/part-3.csv", make_classification(50, 4, 2, seed=9))
    with pytest.raises(Exception, match="the checkpoint was written while streaming other data"):
        run(Paths(root=root))


@pytest.mark.slow
def test_two_processes_split_the_rows_and_merge_the_statistics(
    tmp_path: Path, streamed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = job(tmp_path / "ml", data_loading="stream")
    monkeypatch.setenv("OPTML_ROOT", str(root))
    monkeypatch.setenv("OPTML_PROCESSES_PER_HOST", "2")
    monkeypatch.setenv("OPTML_MASTER_PORT", "29531")
    monkeypatch.setenv("OPTML_ROW_LOG", str(tmp_path))
    assert main([]) == 0
    np.testing.assert_allclose(metadata(root)["feature_mean"], metadata(streamed)["feature_mean"], rtol=1e-5)
    seen = trained_rows(tmp_path)
    assert sorted(path.name for path in tmp_path.glob("rows-*.txt")) == ["rows-algo-1-0.txt", "rows-algo-1-1.txt"]
    shares = {
        name: {(line.split()[2], int(line.split()[3])) for line in (tmp_path / name).read_text().splitlines()}
        for name in ("rows-algo-1-0.txt", "rows-algo-1-1.txt")
    }
    assert not shares["rows-algo-1-0.txt"] & shares["rows-algo-1-1.txt"]  # disjoint shares, whole blocks
    larger = max(shares.values(), key=len)
    for counts in seen.values():  # every row at least once; the larger share's exactly once
        assert len(counts) == 450 and min(counts.values()) == 1
        assert {counts[row] for row in larger} == {1}


def test_regression_streams_in_label_units(tmp_path: Path) -> None:
    train, validation = make_regression(400, 3, seed=5), make_regression(100, 3, seed=6)
    root = make_opt_ml(
        tmp_path,
        train,
        validation,
        {"epochs": "40", "hidden_units": "32", "learning_rate": "0.01", "data_loading": "stream"},
    )
    final = run(Paths(root=root))
    assert final["validation:r2"] >= 0.9
    assert metadata(root)["target_mean"] == pytest.approx(float(train[:, 0].mean()), rel=1e-9)
    assert metadata(root)["target_std"] == pytest.approx(float(train[:, 0].std()), rel=1e-9)


def test_a_corrupt_value_deep_in_a_file_names_the_file_row_and_column(tmp_path: Path) -> None:
    root = job(tmp_path / "ml", data_loading="stream")
    path = root / "input/data/train/part-2.csv"
    lines = path.read_text().splitlines()
    cells = lines[120].split(",")
    cells[4] = "12x"  # the fourth feature: "column 5" of a headerless file, the label being column 1
    lines[120] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(Exception, match=rf"{path} row 121, column 5: '12x' is not a number"):
        run(Paths(root=root))


def test_cross_validation_needs_the_channel_in_memory(tmp_path: Path) -> None:
    root = job(tmp_path / "ml", data_loading="stream", k_folds="3")
    with pytest.raises(Exception, match="k_folds=3: cross-validation holds the train channel in memory"):
        run(Paths(root=root))


def test_auto_streams_when_the_channels_would_not_fit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from optml.train import memory

    caplog.set_level(logging.INFO)
    monkeypatch.setattr(
        memory,
        "available_memory",
        lambda root=Path("/"): memory.Memory(100_000, 400_000, "the container's memory limit"),
    )
    root = job(tmp_path / "ml", epochs="1")
    run(Paths(root=root))
    assert "data_loading=auto: reading the channels as streams (loading" in caplog.text
    assert "free of the container's memory limit" in caplog.text


def pipe_job(root: Path, files: list[Path], **overrides: str) -> Path:
    """Train through Pipe mode (FIFOs train_<n>), validation from files."""
    root = make_opt_ml(root, None, make_classification(60, 4, 2, seed=2), HYPERPARAMETERS | overrides)
    config = root / "input/config/inputdataconfig.json"
    channels = json.loads(config.read_text())
    channels["train"] = {"ContentType": "text/csv", "TrainingInputMode": "Pipe"}
    config.write_text(json.dumps(channels))
    return root


@pytest.fixture
def s3_files(tmp_path: Path) -> list[Path]:
    data = make_classification(300, 4, 2, seed=1)
    return [write_csv(tmp_path / f"s3/part-{i}.csv", data[i * 150 : (i + 1) * 150]) for i in range(2)]


def test_pipe_mode_trains_from_a_fifo_per_pass_and_resumes_at_the_step_it_stopped(
    tmp_path: Path, s3_files: list[Path], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    whole = pipe_job(tmp_path / "whole", s3_files)
    with PipeFeeder(whole / "input/data", "train", s3_files) as feeder:
        run(Paths(root=whole))
    assert feeder.error is None
    assert feeder.served == 3 + 2  # statistics, one FIFO per epoch, the final model's scoring
    evaluation = json.loads((whole / "output/data/evaluation.json").read_text())
    assert evaluation["channels"]["train"]["rows"] == 300
    assert evaluation["channels"]["validation"]["metrics"]["accuracy"] >= 0.8

    root = pipe_job(tmp_path / "resumed", s3_files)
    with PipeFeeder(root / "input/data", "train", s3_files), pytest.raises(TrainingStopped):
        run(Paths(root=root), StopAfter(25))  # mid-way through epoch 2
    with PipeFeeder(root / "input/data", "train", s3_files) as feeder:  # a restarted job gets new FIFOs
        run(Paths(root=root))
    assert "resuming the stream at {'epoch': 2, 'step': 6" in caplog.text
    assert feeder.served == 1 + 2 + 1  # statistics, epoch 2 read again (its first 6 steps skipped), 3, scoring
    # This writer sends the same bytes every pass, so here even Pipe mode resumes bit-exactly.
    assert_same_weights(weights(root), weights(whole))


def test_the_final_train_scores_stream_a_bounded_number_of_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from optml.train import streaming

    monkeypatch.setattr(streaming, "TRAIN_SCORE_ROWS", 100)
    root = job(tmp_path / "ml", data_loading="stream", epochs="1")
    run(Paths(root=root))
    channels = json.loads((root / "output/data/evaluation.json").read_text())["channels"]
    assert channels["train"]["rows"] == 100  # the first 100 rows of the 450: memory stays bounded
    assert channels["validation"]["rows"] == 60  # validation is scored whole


def test_a_warm_start_streams_with_the_previous_models_scaling(tmp_path: Path, streamed: Path) -> None:
    root = job(tmp_path / "warm", data_loading="stream", epochs="1", learning_rate="0.000001")
    tarball(streamed / "model", root / "input/data/model")
    run(Paths(root=root))
    previous, updated = weights(streamed), weights(root)
    for key in previous:  # a tiny learning rate: the weights barely move from the previous model's
        np.testing.assert_allclose(updated[key], previous[key], atol=1e-4)
    assert metadata(root)["feature_mean"] == metadata(streamed)["feature_mean"]  # not refitted
    assert metadata(root)["encoder"] == metadata(streamed)["encoder"]
