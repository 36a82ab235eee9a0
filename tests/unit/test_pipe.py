"""Pipe mode: a harness does what SageMaker's agent does — a FIFO `<channel>_<n>` per pass and a writer that
pours the channel's objects into it back to back — and the reader reads each pass once, with deadlines."""

from __future__ import annotations

import gzip
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from optml.container.errors import UserError
from optml.train.blocks import ChannelReader
from optml.train.data import DataOptions, load_channel
from optml.train.pipe import open_fifo
from tests.conftest import write_csv
from tests.unit.test_data_formats import write_jsonl

CHANNEL = "train"


class Agent:
    """SageMaker's side of Pipe mode: creates the FIFOs and writes into them from threads."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.release = threading.Event()  # a stalled writer waits for this
        self.threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []

    def fifo(self, pass_index: int) -> Path:
        path = self.data_dir / f"{CHANNEL}_{pass_index}"
        os.mkfifo(path)
        return path

    def serve(
        self, pass_index: int, objects: list[bytes], pause_s: float = 0.0, stall_after: int | None = None
    ) -> None:
        """Write `objects` into FIFO `pass_index` in small pieces; `pause_s` between pieces; with
        `stall_after` bytes written, wait for `release`, then close (a stalled, then vanished, writer)."""
        path = self.fifo(pass_index)
        data = b"".join(objects)

        def write() -> None:
            try:
                with open(path, "wb") as fifo:  # blocks until the reader opens: as the agent's does
                    for start in range(0, len(data), 97):
                        if stall_after is not None and start >= stall_after:
                            self.release.wait(30)
                            return
                        fifo.write(data[start : start + 97])
                        fifo.flush()
                        if pause_s:
                            time.sleep(pause_s)  # a slow writer, not synchronization
            except BrokenPipeError:
                pass  # the reader gave up: what the test wanted
            except BaseException as error:  # noqa: BLE001 - reported by the test
                self.errors.append(error)

        thread = threading.Thread(target=write, daemon=True)
        thread.start()
        self.threads.append(thread)

    def close(self) -> None:
        self.release.set()
        for path in self.data_dir.glob(f"{CHANNEL}_*"):
            try:  # a writer still blocked in open() is let go by a reader that opens and closes at once
                os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
            except OSError:
                pass
        for thread in self.threads:
            thread.join(5)


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    harness = Agent(data_dir)
    yield harness
    harness.close()
    assert not harness.errors


def _csv_files(directory: Path, files: int = 3, rows: int = 80) -> list[bytes]:
    rng = np.random.default_rng(0)
    objects = []
    for f in range(files):
        table: list[list[object]] = [
            [int(rng.integers(0, 2)), round(float(rng.normal()), 3), "abc"[int(rng.integers(0, 3))]]
            for _ in range(rows)
        ]
        objects.append(write_csv(directory / f"part-{f}.csv", table).read_bytes())
    return objects


def _stream(reader: ChannelReader, pass_index: int, encoder: object) -> tuple[np.ndarray, np.ndarray, list[int]]:
    blocks = list(reader.pipe_blocks(pass_index))
    features = np.concatenate([reader.encode(block, encoder) for block in blocks])  # type: ignore[arg-type]
    offsets = [block.ref.row_offset for block in blocks]
    assert offsets == np.cumsum([0] + [block.rows for block in blocks[:-1]]).tolist()
    assert all(block.ref.file == 0 for block in blocks)
    assert [block.ref.block for block in blocks] == list(range(len(blocks)))
    return features, np.concatenate([block.labels for block in blocks]), offsets


@pytest.mark.parametrize("compress", [False, True])
def test_passes_over_a_csv_pipe_equal_load_channel(agent: Agent, tmp_path: Path, compress: bool) -> None:
    objects = _csv_files(tmp_path / "files")
    if compress:  # each S3 object gzip'd on its own: the stream is a multi-member gzip
        objects = [gzip.compress(data) for data in objects]
    expected = load_channel(CHANNEL, tmp_path / "files", DataOptions())
    agent.serve(0, objects)
    reader = ChannelReader.from_pipe(CHANNEL, agent.data_dir, DataOptions(), timeout_s=10, block_bytes=256)
    assert reader.format == "csv" and reader.categorical == ("column 3",)
    agent.serve(1, objects)
    for pass_index in (0, 1):
        features, labels, offsets = _stream(reader, pass_index, expected.encoder)
        np.testing.assert_array_equal(features, expected.features)
        np.testing.assert_array_equal(labels, expected.labels)
        assert len(offsets) > 5


def test_a_jsonlines_pipe_with_a_header_free_stream(agent: Agent, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    for f in range(2):
        records: list[dict[str, object]] = [
            {"label": int(rng.integers(0, 2)), "x": i if f == 0 else float(rng.normal()), "c": "uv"[f]}
            for i in range(50)
        ]  # x: integers in the first lines, then fractions
        write_jsonl(tmp_path / "files" / f"p{f}.jsonl", records)
    expected = load_channel(CHANNEL, tmp_path / "files", DataOptions())
    agent.serve(0, [path.read_bytes() for path in sorted((tmp_path / "files").iterdir())])
    reader = ChannelReader.from_pipe(CHANNEL, agent.data_dir, DataOptions(), timeout_s=10, block_bytes=300)
    features, labels, _ = _stream(reader, 0, expected.encoder)
    np.testing.assert_array_equal(features, expected.features)
    np.testing.assert_array_equal(labels, expected.labels)


def test_a_csv_header_at_the_start_of_the_stream(agent: Agent, tmp_path: Path) -> None:
    rows = [["y", "x", "c"]] + [[i % 2, i * 0.5, "pq"[i % 2]] for i in range(60)]
    data = write_csv(tmp_path / "files" / "a.csv", rows).read_bytes()  # type: ignore[arg-type]
    expected = load_channel(CHANNEL, tmp_path / "files", DataOptions())
    agent.serve(0, [data])
    reader = ChannelReader.from_pipe(CHANNEL, agent.data_dir, DataOptions(), timeout_s=10, block_bytes=128)
    assert reader.header and reader.label_name == "y"
    features, labels, _ = _stream(reader, 0, expected.encoder)
    np.testing.assert_array_equal(features, expected.features)
    np.testing.assert_array_equal(labels, expected.labels)


def test_a_slow_writer_within_the_timeout_is_read_whole(agent: Agent, tmp_path: Path) -> None:
    objects = _csv_files(tmp_path / "files", files=1, rows=30)
    expected = load_channel(CHANNEL, tmp_path / "files", DataOptions())
    agent.serve(0, objects, pause_s=0.05)
    reader = ChannelReader.from_pipe(CHANNEL, agent.data_dir, DataOptions(), timeout_s=3, block_bytes=256)
    _, labels, _ = _stream(reader, 0, expected.encoder)
    np.testing.assert_array_equal(labels, expected.labels)


def test_a_fifo_no_writer_opens_fails_within_the_timeout(agent: Agent) -> None:
    agent.fifo(0)
    started = time.monotonic()
    with pytest.raises(
        UserError,
        match=r"channel 'train': Pipe mode FIFO .*train_0 delivered no data within 0\.5 seconds.*"
        r"pipe_read_timeout_seconds",
    ):
        ChannelReader.from_pipe(CHANNEL, agent.data_dir, DataOptions(), timeout_s=0.5)
    assert time.monotonic() - started < 3


def test_a_fifo_that_never_appears(agent: Agent) -> None:
    with pytest.raises(UserError, match=r"channel 'train': Pipe mode FIFO .*train_0 did not appear within 0\.3 s"):
        open_fifo(agent.data_dir / "train_0", 0.3, CHANNEL)


def test_a_writer_that_stalls_mid_stream_fails(agent: Agent, tmp_path: Path) -> None:
    objects = _csv_files(tmp_path / "files", files=2, rows=5000)  # more than opening reads (64 KiB)
    agent.serve(0, objects, stall_after=100_000)
    reader = ChannelReader.from_pipe(CHANNEL, agent.data_dir, DataOptions(), timeout_s=0.5, block_bytes=4096)
    blocks = []
    started = time.monotonic()
    with pytest.raises(UserError, match=r"train_0 stopped delivering data after \d+ bytes: nothing for 0\.5 seconds"):
        for block in reader.pipe_blocks(0):
            blocks.append(block)
    assert time.monotonic() - started < 5
    assert sum(block.rows for block in blocks) > 1000


def test_a_writer_that_stops_early_gives_fewer_rows(agent: Agent, tmp_path: Path) -> None:
    objects = _csv_files(tmp_path / "files", files=2, rows=200)
    whole = b"".join(objects)
    cut = whole[: whole.index(b"\n", len(whole) // 2) + 1]  # a clean end of line, half-way
    agent.serve(0, [cut])
    reader = ChannelReader.from_pipe(CHANNEL, agent.data_dir, DataOptions(), timeout_s=5, block_bytes=256)
    rows = sum(block.rows for block in reader.pipe_blocks(0))
    assert rows == cut.count(b"\n") < 400


def test_parquet_in_pipe_mode_is_refused(agent: Agent, tmp_path: Path) -> None:
    pq.write_table(pa.table({"label": [0, 1], "x": [1.0, 2.0]}), tmp_path / "a.parquet")
    agent.serve(0, [(tmp_path / "a.parquet").read_bytes()])
    with pytest.raises(UserError, match=r"Parquet cannot be read in Pipe mode .*use input mode File or FastFile"):
        ChannelReader.from_pipe(CHANNEL, agent.data_dir, DataOptions(), timeout_s=5)


def test_a_bad_value_in_a_pipe_names_the_row_from_the_stream_start(agent: Agent, tmp_path: Path) -> None:
    rows = [[i % 2, i * 0.5] for i in range(100)]
    rows[70][1] = "4x"  # type: ignore[call-overload]
    agent.serve(0, [write_csv(tmp_path / "a.csv", rows).read_bytes()])  # type: ignore[arg-type]
    reader = ChannelReader.from_pipe(CHANNEL, agent.data_dir, DataOptions(), timeout_s=5, block_bytes=128)
    with pytest.raises(UserError, match=r"train_0 row 71, column 2: '4x' is not a number"):
        list(reader.pipe_blocks(0))


def test_a_bad_value_in_a_later_pass_names_the_fifo_column_and_value(agent: Agent, tmp_path: Path) -> None:
    """Passes after the first are parsed as numbers directly: the row of a bad value cannot be found again."""
    rows = [[i % 2, i * 0.5] for i in range(100)]
    agent.serve(0, [write_csv(tmp_path / "a.csv", rows).read_bytes()])  # type: ignore[arg-type]
    rows[70][1] = "4x"  # type: ignore[call-overload]
    agent.serve(1, [write_csv(tmp_path / "b.csv", rows).read_bytes()])  # type: ignore[arg-type]
    reader = ChannelReader.from_pipe(CHANNEL, agent.data_dir, DataOptions(), timeout_s=5, block_bytes=128)
    list(reader.pipe_blocks(0))
    with pytest.raises(UserError) as caught:
        list(reader.pipe_blocks(1))
    assert str(caught.value) == (
        f"channel 'train': Pipe mode {agent.data_dir / 'train_1'} is not readable CSV: In CSV column #1: CSV"
        " conversion error to double: invalid value '4x' (a FIFO cannot be re-read to find the row: File mode"
        " names it)"
    )


def test_a_time_column_in_a_pipe_keeps_its_numbers(agent: Agent, tmp_path: Path) -> None:
    rows: list[list[object]] = [["t", "label", "x"]]
    rows += [[1000 + i, i % 2, i * 0.25] for i in range(50)]
    data = write_csv(tmp_path / "files" / "a.csv", rows).read_bytes()
    expected = load_channel(CHANNEL, tmp_path / "files", DataOptions(time_column="t"))
    agent.serve(0, [data])
    reader = ChannelReader.from_pipe(
        CHANNEL, agent.data_dir, DataOptions(time_column="t"), timeout_s=5, block_bytes=128
    )
    blocks = list(reader.pipe_blocks(0))
    np.testing.assert_array_equal(np.concatenate([block.time for block in blocks]), expected.time_values)
    assert np.concatenate([block.time for block in blocks]).dtype == np.int64


def test_an_empty_first_pass_is_an_error(agent: Agent) -> None:
    agent.serve(0, [])
    with pytest.raises(UserError, match=r"channel 'train': Pipe mode FIFO .*train_0 delivered no data"):
        ChannelReader.from_pipe(CHANNEL, agent.data_dir, DataOptions(), timeout_s=5)


def test_an_empty_later_pass_has_no_rows(agent: Agent, tmp_path: Path) -> None:
    agent.serve(0, _csv_files(tmp_path / "files", files=1))
    reader = ChannelReader.from_pipe(CHANNEL, agent.data_dir, DataOptions(), timeout_s=5, block_bytes=256)
    assert sum(block.rows for block in reader.pipe_blocks(0)) == 80
    agent.serve(1, [])
    assert list(reader.pipe_blocks(1)) == []


@pytest.mark.parametrize("content_type", ["application/x-parquet", "application/x-npy", "application/x-npz"])
def test_a_content_type_pipe_mode_cannot_read_is_refused_at_once(agent: Agent, content_type: str) -> None:
    with pytest.raises(UserError, match=r"cannot be read in Pipe mode .*use input mode File or FastFile"):
        ChannelReader.from_pipe(CHANNEL, agent.data_dir, DataOptions(content_type=content_type), timeout_s=30)
