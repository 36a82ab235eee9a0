"""The streaming plan (train/streaming.py): shares, steps, windows, and the rows each step trains on."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from optml.container.errors import UserError
from optml.container.kinds import BINARY
from optml.train.blocks import BlockRef, CheckedBlock
from optml.train.preprocessing import LabelEncoding, Standardizer
from optml.train.streaming import (
    FileSource,
    PipeSource,
    Prepare,
    StreamBatches,
    local_batch,
    pass_order,
    split_shares,
    step_sizes,
    windows,
)


@dataclass
class FakeReader:
    """Blocks of (file, block) whose one feature is the row's global id: the rows a step trains are visible."""

    sizes: dict[int, list[int]]  # file → rows per block
    random_access: bool = True
    channel: str = "train"
    reads: int = 0

    @property
    def files(self) -> tuple[Path, ...]:
        return tuple(Path(f"part-{file}.csv") for file in sorted(self.sizes))

    def refs(self) -> list[BlockRef]:
        refs = []
        for file, blocks in sorted(self.sizes.items()):
            offset = 0
            for block, rows in enumerate(blocks):
                refs.append(BlockRef(file, block, rows, offset))
                offset += rows
        return refs

    def read_block(self, ref: BlockRef) -> CheckedBlock:
        self.reads += 1
        ids = 1000 * ref.file + ref.row_offset + np.arange(ref.rows)
        return CheckedBlock(ref, self.files[ref.file], np.zeros(ref.rows), arrays=ids[:, None].astype(np.float32))

    def blocks(self, file: int, start_block: int = 0) -> Iterator[CheckedBlock]:
        for ref in self.refs():
            if ref.file == file and ref.block >= start_block:
                yield self.read_block(ref)

    def encode(self, block: CheckedBlock, encoder: object = None) -> np.ndarray:
        assert block.arrays is not None
        return block.arrays


def batches(reader: FakeReader, share: list[BlockRef], sizes: list[int], buffer_rows: int = 7) -> StreamBatches:
    identity = Standardizer(np.zeros(1, np.float32), np.ones(1, np.float32))
    prepare = Prepare(reader, None, identity, LabelEncoding(BINARY, (0, 1)))  # type: ignore[arg-type]
    return StreamBatches(
        FileSource(reader), prepare, share, sizes, sum(sizes), (1,), seed=3, part=0, buffer_rows=buffer_rows,  # type: ignore[arg-type]
        loss_targets=lambda targets: targets.float(),
    )  # fmt: skip


def trained(stream: StreamBatches, epoch: int, start: int = 0) -> list[list[int]]:
    run = SimpleNamespace(epoch=epoch, batches_done=start)
    return [batch.inputs[:, 0].long().tolist() for batch in stream.epoch(run)]  # type: ignore[arg-type,union-attr]


def test_shares_are_contiguous_runs_of_about_equal_rows() -> None:
    refs = FakeReader({0: [10, 10, 10], 1: [5, 5], 2: [20]}).refs()
    shares = split_shares(refs, 3)
    assert [ref for share in shares for ref in share] == refs  # every block once, in order
    assert [sum(ref.rows for ref in share) for share in shares] == [20, 20, 20]
    assert split_shares(refs, 1) == [refs]
    assert split_shares(refs[:1], 2) == [refs[:1], []]  # more processes than blocks: one share is empty


def test_steps_are_the_largest_shares_batch_count_and_its_last_batch_ends_it() -> None:
    assert step_sizes([100], [32], 0) == [[32, 32, 32, 4]]
    assert step_sizes([100, 40], [16, 16], 0) == [[16] * 6 + [4], [16] * 7]  # the smaller share wraps
    assert step_sizes([65], [32], 2) == [[32, 32]]  # one row left: batch norm cannot train it, skipped
    assert [local_batch(33, rank, 2) for rank in (0, 1)] == [17, 16]


def test_windows_gather_blocks_until_the_buffer_is_full() -> None:
    refs = FakeReader({0: [4, 4, 4, 4, 4]}).refs()
    assert [[ref.block for ref in window] for window in windows(refs, 8)] == [[0, 1], [2, 3], [4]]
    assert [[ref.block for ref in window] for window in windows(refs, 1)] == [[0], [1], [2], [3], [4]]


def test_sequential_formats_keep_each_files_blocks_in_order() -> None:
    refs = FakeReader({0: [3, 3, 3], 1: [3, 3], 2: [3]}).refs()
    order = pass_order(refs, False, np.random.default_rng(0))
    for file in (0, 1, 2):
        assert [ref.block for ref in order if ref.file == file] == sorted(ref.block for ref in refs if ref.file == file)
    shuffled = [pass_order(refs, True, np.random.default_rng(seed)) for seed in range(5)]
    assert any([ref.block for ref in order] != [ref.block for ref in refs] for order in shuffled)


def test_one_process_trains_every_row_exactly_once_per_epoch_in_a_new_order() -> None:
    reader = FakeReader({0: [5, 5, 5], 1: [4, 6], 2: [3]})
    refs = reader.refs()
    stream = batches(reader, refs, step_sizes([28], [8], 0)[0])
    first, second = trained(stream, 1), trained(stream, 2)
    assert [len(batch) for batch in first] == [8, 8, 8, 4]
    everything = sorted(1000 * ref.file + ref.row_offset + i for ref in refs for i in range(ref.rows))
    assert sorted(row for batch in first for row in batch) == everything
    assert sorted(row for batch in second for row in batch) == everything
    assert first != second
    assert trained(batches(reader, refs, [8, 8, 8, 4]), 1) == first  # same seed and data: same batches


def test_a_resumed_epoch_trains_exactly_the_rows_it_was_about_to() -> None:
    reader = FakeReader({0: [5, 5, 5], 1: [4, 6], 2: [3]}, random_access=False)
    refs = reader.refs()
    whole = trained(batches(reader, refs, [3] * 9 + [1]), 1)
    for start in (1, 4, 5, 9):
        reader.reads = 0
        assert trained(batches(reader, refs, [3] * 9 + [1]), 1, start) == whole[start:]
    reader.reads = 0
    trained(batches(reader, refs, [3] * 9 + [1], buffer_rows=7), 1, 9)
    assert reader.reads < len(refs)  # whole windows before the resume point are not read


def test_a_smaller_share_wraps_around_so_every_row_is_seen_at_least_once() -> None:
    reader = FakeReader({0: [5, 5]})
    stream = batches(reader, reader.refs(), [4, 4, 4, 4])  # 16 rows from a share of 10
    rows = Counter(row for batch in trained(stream, 1) for row in batch)
    assert set(rows) == set(range(10))
    assert sum(rows.values()) == 16 and max(rows.values()) == 2


def test_a_process_without_rows_takes_empty_steps() -> None:
    stream = batches(FakeReader({0: [5]}), [], [0, 0, 0])
    steps = list(stream.epoch(SimpleNamespace(epoch=1, batches_done=0)))  # type: ignore[arg-type]
    assert [tuple(step.inputs.shape) for step in steps if step is not None] == [(0, 1)] * 3


@pytest.mark.parametrize("buffer_rows", [1, 6, 100])
def test_the_shuffle_buffer_bounds_how_far_rows_travel(buffer_rows: int) -> None:
    reader = FakeReader({0: [6] * 10})
    order = [row for batch in trained(batches(reader, reader.refs(), [6] * 10, buffer_rows), 1) for row in batch]
    block_of = [row // 6 for row in order]
    # each window's blocks are trained together: a block's rows never mix with blocks of another window
    per_step = [set(block_of[i : i + 6]) for i in range(0, 60, 6)]
    assert max(len(blocks) for blocks in per_step) <= max(1, -(-buffer_rows // 6)) + 1


@dataclass
class ShortPipe(FakeReader):
    """A Pipe whose FIFO n delivers only the first `delivered[n]` blocks (a writer that stopped early)."""

    delivered: tuple[int, ...] = ()

    def pipe_blocks(self, pass_index: int) -> Iterator[CheckedBlock]:
        for ref in self.refs()[: self.delivered[pass_index]]:
            yield self.read_block(ref)


def test_a_pipe_pass_that_ends_early_fails_naming_the_fifo_and_the_blocks() -> None:
    reader = ShortPipe({0: [5, 5, 5]}, random_access=False, delivered=(3, 2))
    source = PipeSource(reader, next_fifo=1)  # type: ignore[arg-type]
    with pytest.raises(UserError) as caught:
        list(source.pass_blocks(reader.refs()))
    assert str(caught.value) == (
        "Pipe channel 'train': FIFO train_1 ended after fewer blocks than the first pass delivered (2 of the 3"
        " this process trains on); every pass must deliver the same data"
    )
    assert source.next_fifo == 2
