"""tests/pipe_feeder.py, the host side of Pipe mode the docker tests and benchmarks use: one full pass of the
channel's files per FIFO, in order, and a clean stop when nobody ever reads."""

from __future__ import annotations

import time
from pathlib import Path

from tests.pipe_feeder import PipeFeeder


def test_each_fifo_carries_every_file_back_to_back(tmp_path: Path) -> None:
    first = tmp_path / "s3/part-0.csv"
    first.parent.mkdir()
    first.write_bytes(b"1,0.5\n" * 300_000)  # bigger than a pipe's buffer: the writer blocks on the reader
    second = tmp_path / "s3/part-1.csv"
    second.write_bytes(b"0,-0.5\n")
    with PipeFeeder(tmp_path / "data", "train", [first, second]) as feeder:
        passes = [(tmp_path / f"data/train_{n}").read_bytes() for n in range(3)]
        deadline = time.monotonic() + 10
        while feeder.served < 3 and time.monotonic() < deadline:  # the third close follows the reader's EOF
            time.sleep(0.01)
    assert passes == [first.read_bytes() + second.read_bytes()] * 3
    assert feeder.served == 3 and feeder.error is None
    assert (tmp_path / "data/train_5").exists()  # the next FIFOs are made ahead, as the agent makes them


def test_stop_ends_the_feeder_when_no_reader_ever_comes(tmp_path: Path) -> None:
    feeder = PipeFeeder(tmp_path / "data", "train", []).start()
    assert (tmp_path / "data/train_0").is_fifo()
    feeder.stop(timeout=5)
    assert feeder.served == 0 and feeder.error is None
    assert not feeder.running
