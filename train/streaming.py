"""Training on data bigger than memory: channels read as streams of blocks (data_loading=stream).

Memory held is a window of blocks (`shuffle_buffer_rows`), not the channel. How an epoch's rows are drawn is
a pure function of the seed, the epoch and the channel's block list, so a checkpoint's (epoch, step) is the
whole stream position: a resumed job re-reads exactly the rows it was about to train (bit-exact in File and
FastFile mode; a Pipe cannot be rewound, so there the interrupted epoch is read again from the next FIFO and
the rows already trained are skipped).

1. Shares. The channel's blocks (train/blocks.py: CSV/JSON lines byte blocks, Parquet row groups, .npy
   slices) are split once into contiguous runs of about equal rows, one per process of the group that
   holds the same files: every process of the job for FullyReplicated channels, the host's processes for
   ShardedByS3Key (each host holds different files). A process trains on its share only; together the
   shares hold every row once.
2. Order, per epoch and pass. Formats with random access (Parquet, .npy) shuffle the share's blocks;
   sequential ones (CSV, JSON lines) shuffle its files and read each file's blocks in order.
3. Shuffle buffer. Consecutive blocks are gathered until they hold `shuffle_buffer_rows` rows (a window);
   each window's rows are permuted, seeded by (seed, epoch, pass, window).
4. Steps. Each process's batch is its part of the global `batch_size` (as in memory). Every process takes
   the same number of steps — the largest share's batch count — so no collective waits: a share that runs
   out starts over (the next pass, reshuffled); the largest share's rows are each trained exactly once.

Validation and test channels are scored block by block too, each process a part of the files, the
outputs gathered so that every metric (AUC included) is computed on the union, as on one host.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, cast

import numpy as np
import torch
from torch import nn

from optml.container.config import ChannelConfig, JobConfig
from optml.container.errors import UserError
from optml.container.features import FeatureEncoder
from optml.container.paths import Paths
from optml.train import distributed
from optml.train.blocks import BLOCK_BYTES, BlockRef, ChannelReader, CheckedBlock
from optml.train.callbacks import Callback
from optml.train.dataset import DataOptions
from optml.train.distributed import Topology
from optml.train.hyperparameters import Hyperparameters
from optml.train.preprocessing import LabelEncoding, Standardizer
from optml.train.statistics import ChannelStatistics
from optml.train.trainer import Batch, TrainState, predict_outputs

log = logging.getLogger(__name__)

SHARDED = "ShardedByS3Key"
TRAIN_SCORE_ROWS = 200_000  # the final model's train-channel metrics, streaming: on this many rows
BLOCK_BYTES_ENV = "OPTML_STREAM_BLOCK_BYTES"  # CSV / JSON lines bytes per block (default blocks.BLOCK_BYTES)
ROW_LOG_ENV = "OPTML_ROW_LOG"  # debugging and tests: a directory where each process logs the rows it trains


class BlockSource(Protocol):
    """Reads blocks of one channel: from files (any order), or from the next FIFO of a Pipe channel."""

    @property
    def reader(self) -> ChannelReader: ...

    @property
    def random_access(self) -> bool: ...

    def pass_blocks(self, refs: Sequence[BlockRef]) -> Iterator[CheckedBlock]:
        """The blocks `refs`, in that order (a Pipe yields them in stream order; `refs` is stream order)."""
        ...

    def score_blocks(self, part: int, parts: int) -> Iterator[CheckedBlock]:
        """Part `part` of `parts` of the channel's blocks, for scoring: every parts-th file (a Pipe: every
        parts-th block of its next FIFO, which every host reads whole)."""
        ...


@dataclass
class FileSource:
    """File and FastFile mode: blocks read from the channel's files, sequentially within a file."""

    reader: ChannelReader

    @property
    def random_access(self) -> bool:
        return self.reader.random_access

    def pass_blocks(self, refs: Sequence[BlockRef]) -> Iterator[CheckedBlock]:
        for ref in refs:
            yield self.reader.read_block(ref)

    def score_blocks(self, part: int, parts: int) -> Iterator[CheckedBlock]:
        for file in range(part, len(self.reader.files), parts):
            yield from self.reader.blocks(file)


@dataclass
class PipeSource:
    """Pipe mode: each pass reads the channel's next FIFO from start to end (a writer must not be left
    blocked), keeping the blocks asked for. A FIFO that ends before them is a short pass: an error."""

    reader: ChannelReader
    next_fifo: int = 0

    @property
    def random_access(self) -> bool:
        return False

    def pass_blocks(self, refs: Sequence[BlockRef]) -> Iterator[CheckedBlock]:
        wanted = {(ref.file, ref.block) for ref in refs}
        fifo, found = self.next_fifo, 0
        self.next_fifo += 1
        stream = self.reader.pipe_blocks(fifo)
        try:
            for block in stream:
                if (block.ref.file, block.ref.block) in wanted:
                    found += 1
                    if found == len(wanted):
                        for _ in stream:  # the rest of the pass (other hosts' blocks): the writer finishes it
                            pass
                    yield block
        finally:
            stream.close()  # type: ignore[attr-defined]  # a stop mid-pass closes the FIFO without reading on
        if found < len(wanted):
            raise UserError(
                f"Pipe channel {self.reader.channel!r}: FIFO {self.reader.channel}_{fifo} ended after fewer blocks"
                f" than the first pass delivered ({found} of the {len(wanted)} this process trains on); every"
                " pass must deliver the same data"
            )

    def score_blocks(self, part: int, parts: int) -> Iterator[CheckedBlock]:
        fifo = self.next_fifo
        self.next_fifo += 1
        for block in self.reader.pipe_blocks(fifo):
            if block.ref.block % parts == part:
                yield block


def split_shares(blocks: Sequence[BlockRef], parts: int) -> list[list[BlockRef]]:
    """Contiguous runs of `blocks` (in file and block order) holding about equal rows, one per part."""
    total = sum(ref.rows for ref in blocks)
    shares: list[list[BlockRef]] = [[] for _ in range(parts)]
    seen = 0
    for ref in blocks:
        # The share a block's first row falls in: a block is never split, so shares differ by < a block.
        shares[min(parts - 1, seen * parts // max(total, 1))].append(ref)
        seen += ref.rows
    return shares


def pass_order(share: Sequence[BlockRef], random_access: bool, rng: np.random.Generator) -> list[BlockRef]:
    if random_access:
        return [share[i] for i in rng.permutation(len(share))]
    files: dict[int, list[BlockRef]] = {}
    for ref in share:
        files.setdefault(ref.file, []).append(ref)
    keys = list(files)
    return [ref for i in rng.permutation(len(keys)) for ref in files[keys[i]]]


def windows(order: Sequence[BlockRef], buffer_rows: int) -> list[list[BlockRef]]:
    """Consecutive blocks gathered until they hold `buffer_rows` rows (the last window may hold fewer)."""
    result: list[list[BlockRef]] = [[]]
    rows = 0
    for ref in order:
        if rows >= buffer_rows:
            result.append([])
            rows = 0
        result[-1].append(ref)
        rows += ref.rows
    return [window for window in result if window]


def local_batch(batch_size: int, rank: int, world: int) -> int:
    """This process's part of a global batch, as the in-memory path splits one (every world-th row)."""
    return len(range(rank, batch_size, world))


def step_sizes(shares: Sequence[int], batches: Sequence[int], min_rows: int) -> list[list[int]]:
    """Rows per step for each process (one list per process): the largest share's batch count of full
    batches, the last one cut to the share's end for a share that ends there. A last step where some
    process would get fewer than `min_rows` rows (batch norm) is dropped on every process."""
    steps = max(-(-rows // batch) for rows, batch in zip(shares, batches, strict=True))
    sizes = []
    for rows, batch in zip(shares, batches, strict=True):
        last = rows - (steps - 1) * batch
        sizes.append([batch] * (steps - 1) + [last if 0 < last <= batch else batch])
    if steps > 1 and any(0 < size[-1] < min_rows for size in sizes):
        sizes = [size[:-1] for size in sizes]
    return sizes


@dataclass
class Prepare:
    """A block → standardized float32 features and encoded targets."""

    reader: ChannelReader
    encoder: FeatureEncoder | None
    scaler: Standardizer
    labels: LabelEncoding

    def __call__(self, block: CheckedBlock) -> tuple[np.ndarray, np.ndarray]:
        features, targets = self.encoded(block)
        return self.scaler.transform(features), targets

    def encoded(self, block: CheckedBlock) -> tuple[np.ndarray, np.ndarray]:
        """The block's features as the encoder writes them (not standardized) and its encoded targets."""
        features = self.reader.encode(block, self.encoder)
        targets = self.labels.encode(block.labels, self.reader.channel, str(block.path), block.ref.row_offset)
        return features, targets


Rows = tuple[np.ndarray, np.ndarray, np.ndarray]  # standardized features, encoded targets, (file, row) ids
# Sees a scored block: its features as encoded (not standardized), its labels as read and the network's outputs.
Observer = Callable[[np.ndarray, np.ndarray, torch.Tensor], None]


@dataclass
class StreamBatches:
    """The `Batches` of trainer.Trainer for a streamed train channel: this process's share and its steps."""

    source: BlockSource
    prepare: Prepare
    share: list[BlockRef]
    sizes: list[int]  # rows per step of this process
    rows: int  # rows an epoch trains on, over every process
    feature_shape: tuple[int, ...]
    seed: int
    part: int
    buffer_rows: int
    loss_targets: Callable[[torch.Tensor], torch.Tensor]
    channel_dir: Path | None = None
    row_log: Path | None = None

    def epoch(self, run: TrainState) -> Generator[Batch | None, None, None]:
        start = run.batches_done
        if start >= len(self.sizes):
            return
        rows = self._rows(run.epoch, skip=sum(self.sizes[:start])) if self.share else _no_rows()
        chunks = prefetched(rows, needed=sum(self.sizes[start:]))
        try:
            for step, (features, targets, ids) in enumerate(self._cut(chunks, self.sizes[start:]), start=start):
                if self.row_log is not None:
                    self._log_rows(run.epoch, step, ids)
                metric_targets = torch.from_numpy(targets)
                yield Batch(torch.from_numpy(features), self.loss_targets(metric_targets), metric_targets)
        finally:
            chunks.close()  # now, not when garbage collected: it holds files open

    def position(self, epoch: int, step: int) -> dict[str, object]:
        """Where step `step` of `epoch` starts in this process's stream — the pass, the window, its first
        block and the row within it, and the seed of the window's permutation — worked out from the plan
        without reading data. Checkpoints record it; a resume re-reads from exactly there."""
        skip, pass_index = sum(self.sizes[:step]), 0
        while self.share:
            rng = np.random.default_rng([self.seed, epoch, pass_index, self.part])
            plan = windows(pass_order(self.share, self.source.random_access, rng), self.buffer_rows)
            for number, window in enumerate(plan):
                rows = sum(ref.rows for ref in window)
                if skip < rows:
                    first = window[0]
                    return {
                        "epoch": epoch, "step": step, "pass": pass_index, "window": number,
                        "file": self._name(first.file), "block": first.block, "row_in_window": skip,
                        "window_seed": [self.seed, epoch, pass_index, self.part, number],
                    }  # fmt: skip
                skip -= rows
            pass_index += 1
        return {"epoch": epoch, "step": step}

    def fingerprint(self) -> str:
        """The share's files and blocks: a resume on other data would not continue the same stream."""
        files = sorted({self._name(ref.file) for ref in self.share})
        blocks = [(self._name(ref.file), ref.block, ref.rows) for ref in self.share]
        return hashlib.sha256(json.dumps([files, blocks, self.sizes]).encode()).hexdigest()[:16]

    def _name(self, file: int) -> str:
        if isinstance(self.source, PipeSource):
            return f"{self.prepare.reader.channel} (Pipe)"  # one stream: rows count from its start
        path = self.prepare.reader.files[file]
        return str(path.relative_to(self.channel_dir)) if self.channel_dir else path.name

    def _cut(self, chunks: Iterator[Rows], sizes: Sequence[int]) -> Iterator[Rows]:
        """Steps of `sizes` rows from the chunks; a process without rows gets empty steps (its collectives
        still run)."""
        if not self.share:
            empty = np.empty((0, *self.feature_shape), np.float32)
            for _ in sizes:
                yield empty, np.empty(0, np.float32), np.empty((0, 2), np.int64)
            return
        pending: Rows | None = None
        for size in sizes:
            while pending is None or len(pending[0]) < size:
                chunk = next(chunks)
                pending = chunk if pending is None else _joined(pending, chunk)
            yield tuple(part[:size] for part in pending)  # type: ignore[misc]
            pending = tuple(part[size:] for part in pending)  # type: ignore[assignment]

    def _rows(self, epoch: int, skip: int) -> Generator[Rows, None, None]:
        """This process's rows for an epoch from row `skip` on: windows permuted, passes repeating."""
        pass_index = 0
        while True:
            rng = np.random.default_rng([self.seed, epoch, pass_index, self.part])
            plan = windows(pass_order(self.share, self.source.random_access, rng), self.buffer_rows)
            sizes = [sum(ref.rows for ref in window) for window in plan]
            first = 0
            while first < len(plan) and skip >= sizes[first]:  # whole windows skipped are not read
                skip, first = skip - sizes[first], first + 1
            if first < len(plan):
                blocks = self.source.pass_blocks([ref for window in plan[first:] for ref in window])
                try:
                    for number in range(first, len(plan)):
                        seeded = np.random.default_rng([self.seed, epoch, pass_index, self.part, number])
                        window = self._window(blocks, plan[number], seeded)
                        yield tuple(part[skip:] for part in window) if skip else window  # type: ignore[misc]
                        skip = 0
                finally:
                    blocks.close()  # type: ignore[attr-defined]  # files and FIFOs closed when a run stops
            pass_index += 1

    def _window(self, blocks: Iterator[CheckedBlock], refs: Sequence[BlockRef], rng: np.random.Generator) -> Rows:
        features, targets, ids = [], [], []
        for _ in refs:
            block = next(blocks)
            x, y = self.prepare(block)
            features.append(x)
            targets.append(y)
            if self.row_log is not None:  # (file, row) of each row, for the row log only: 16 bytes a row
                rows = np.arange(block.rows, dtype=np.int64)
                ids.append(np.stack([np.full(block.rows, block.ref.file), block.ref.row_offset + rows], 1))
        order = rng.permutation(sum(len(y) for y in targets))
        joined = features[0] if len(features) == 1 else np.concatenate(features)
        row_ids = np.concatenate(ids)[order] if ids else np.empty((len(order), 0), np.int64)
        return joined[order], (targets[0] if len(targets) == 1 else np.concatenate(targets))[order], row_ids

    def _log_rows(self, epoch: int, step: int, ids: np.ndarray) -> None:
        assert self.row_log is not None
        self.row_log.parent.mkdir(parents=True, exist_ok=True)
        with self.row_log.open("a") as handle:
            handle.writelines(f"{epoch} {step} {self._name(file)} {row}\n" for file, row in ids.tolist())


class StreamPosition(Callback):
    """Checkpoints record the stream position (train/callbacks.py's extension point); on resume the
    recorded stream must be this one — the same files, blocks and steps — or the job stops with why."""

    name = "stream"

    def __init__(self, batches: StreamBatches) -> None:
        self.batches = batches
        self.run: TrainState | None = None

    def on_fit_start(self, run: TrainState) -> None:
        self.run = run

    def state_dict(self) -> dict[str, object]:
        position = self.batches.position(self.run.epoch, self.run.batches_done) if self.run else {}
        return {"fingerprint": self.batches.fingerprint(), "position": position}

    def load_state_dict(self, state: dict[str, object]) -> None:
        if state["fingerprint"] != self.batches.fingerprint():
            raise UserError(
                "the checkpoint was written while streaming other data: channel 'train' (its files, their blocks or"
                " the steps per epoch) changed since, so the run cannot continue where it stopped; restore the data,"
                " or remove the checkpoints to start over"
            )
        log.info("resuming the stream at %s", state["position"])


_END = object()


def prefetched(chunks: Generator[Rows, None, None], needed: int) -> Generator[Rows, None, None]:
    """The chunks, read one ahead in a thread while the network trains on the current one (pyarrow's parsing,
    numpy and torch release the GIL): the next window is ready when the steps need it. Stops after `needed`
    rows, never reading past them — for a Pipe, the next FIFO belongs to the next epoch. The same chunks in
    the same order as without the thread; closing this closes `chunks` (their files and FIFOs)."""
    ready: queue.Queue[object] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def offer(item: object) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)  # wakes up to notice `stop` when nobody takes
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        produced = 0
        try:
            while produced < needed:
                chunk = next(chunks)
                produced += len(chunk[0])
                if not offer(chunk):
                    return
            offer(_END)
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, raised there
            offer(error)
        finally:
            chunks.close()

    thread = threading.Thread(target=produce, name="optml-stream-reader", daemon=True)
    thread.start()
    try:
        while (item := ready.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        thread.join()


def _no_rows() -> Generator[Rows, None, None]:
    yield from ()


def _joined(first: Rows, second: Rows) -> Rows:
    return (
        np.concatenate([first[0], second[0]]),
        np.concatenate([first[1], second[1]]),
        np.concatenate([first[2], second[2]]),
    )


@dataclass
class StreamedChannel:
    """A channel scored block by block (trainer.Scored): each process scores its part, and the outputs are
    gathered so every metric is computed on the whole channel, as on one host. Scoring keeps one output and
    one target per row: `limit` bounds that for the train channel, whose final scores are diagnostics."""

    source: BlockSource
    prepare: Prepare
    part: int
    parts: int
    outputs: int  # the network's output width, for a process with nothing to score
    file_count: int
    limit: int | None = None  # rows over every process; None: all of them

    def predict(self, network: nn.Module, observe: Observer | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Outputs and targets of every row, gathered; `observe` sees each block's rows of this process as
        they are scored (the bias metrics count them), with the features as encoded, not standardized."""
        outputs, targets = [torch.empty(0, self.outputs)], [torch.empty(0)]
        room = -(-self.limit // self.parts) if self.limit is not None else None
        for block in self.source.score_blocks(self.part, self.parts):
            if room is not None and room <= 0:
                if isinstance(self.source, PipeSource):
                    continue  # the rest of the FIFO is read (the writer finishes its pass), not scored
                break
            raw, encoded = self.prepare.encoded(block)
            if room is not None:
                raw, encoded, room = raw[:room], encoded[:room], room - len(encoded)
            block_outputs = predict_outputs(network, torch.from_numpy(self.prepare.scaler.transform(raw)))
            if observe is not None:
                observe(raw, block.labels[: len(raw)], block_outputs)
            outputs.append(block_outputs)
            targets.append(torch.from_numpy(encoded))
        own_targets = torch.cat(targets[1:]) if len(targets) > 1 else torch.empty(0, dtype=torch.int64)
        return distributed.all_gather_tensor(torch.cat(outputs)), distributed.all_gather_tensor(own_targets)

    def encoded_blocks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """This process's part of the whole channel, block by block: features as encoded (not standardized)
        and labels as read. One more pass over the channel (in Pipe mode, one more FIFO)."""
        for block in self.source.score_blocks(self.part, self.parts):
            yield self.prepare.reader.encode(block, self.prepare.encoder), block.labels


@dataclass(frozen=True)
class Group:
    """The processes that hold the same files, and this process's part among them: every process of the job
    for a FullyReplicated channel, the host's processes for a ShardedByS3Key one across hosts."""

    part: int
    parts: int
    host: int  # this process's host, or -1 when the group is the whole job


def group_for(config: ChannelConfig | None, topology: Topology) -> Group:
    if config is not None and config.distribution == SHARDED and len(topology.hosts) > 1:
        return Group(topology.local_rank, topology.processes_per_host, topology.host_index)
    return Group(topology.rank, topology.world_size, -1)


def open_source(
    channel: str,
    paths: Paths,
    config: ChannelConfig | None,
    options: DataOptions,
    timeout_s: float,
    encoder: FeatureEncoder | None = None,
) -> BlockSource:
    block_bytes = int(os.environ.get(BLOCK_BYTES_ENV) or BLOCK_BYTES)
    if config is not None and config.input_mode.lower() == "pipe":
        reader = ChannelReader.from_pipe(channel, paths.data_dir, options, timeout_s, encoder, block_bytes=block_bytes)
        return PipeSource(reader)
    return FileSource(ChannelReader(channel, paths.channel_dir(channel), options, encoder, block_bytes=block_bytes))


@dataclass
class Scan:
    """One pass over the train channel: the statistics of every process merged, the group's blocks."""

    statistics: ChannelStatistics
    blocks: list[BlockRef]
    array_shape: tuple[int, ...] | None  # per-row shape of array data (None: tabular)


def scan(source: BlockSource, group: Group, statistics: ChannelStatistics) -> Scan:
    """Each process reads its part (whole files; a Pipe's FIFO 0 is read whole by every host, each adding
    its part of the blocks), then the statistics are merged across every process and the block lists
    across the group."""
    refs: list[BlockRef] = []
    shapes: set[tuple[int, ...] | None] = set()
    if isinstance(source, PipeSource):
        blocks: Iterator[CheckedBlock] = source.reader.pipe_blocks(source.next_fifo)
        source.next_fifo += 1
    else:
        blocks = source.score_blocks(group.part, group.parts)
    for block in blocks:
        shapes.add(None if block.arrays is None else tuple(block.arrays.shape[1:]))
        refs.append(block.ref)
        if not isinstance(source, PipeSource) or block.ref.block % group.parts == group.part:
            statistics.add(block)
    gathered = cast(
        list[tuple[int, list[BlockRef], ChannelStatistics, set[tuple[int, ...] | None]]],
        distributed.gather_objects((group.host, refs, statistics, shapes)),
    )
    merged: ChannelStatistics | None = None
    group_refs: dict[tuple[int, int], BlockRef] = {}
    for host, their_refs, their_statistics, their_shapes in gathered:
        merged = their_statistics if merged is None else merged.merge(their_statistics)
        shapes |= their_shapes
        if host == group.host:
            group_refs.update({(ref.file, ref.block): ref for ref in their_refs})
    assert merged is not None
    if len(shapes) > 1:
        found = ", ".join(str(list(shape)) if shape else "tabular rows" for shape in shapes)
        raise UserError(f"channel 'train' holds rows of different shapes ({found}); every file needs one shape")
    return Scan(merged, [group_refs[key] for key in sorted(group_refs)], next(iter(shapes), None))


def train_batches(
    source: BlockSource,
    scanned: Scan,
    group: Group,
    topology: Topology,
    hp: Hyperparameters,
    prepare: Prepare,
    loss_targets: Callable[[torch.Tensor], torch.Tensor],
    feature_shape: tuple[int, ...],
    min_rows: int,
    channel_dir: Path | None = None,
) -> StreamBatches:
    """This process's share of the group's blocks and the steps every process agrees on."""
    share = split_shares(scanned.blocks, group.parts)[group.part]
    batch = local_batch(hp.batch_size, topology.rank, topology.world_size)
    rows = sum(ref.rows for ref in share)
    everyone = cast(list[tuple[int, int]], distributed.gather_objects((rows, batch)))
    sizes = step_sizes([r for r, _ in everyone], [b for _, b in everyone], min_rows)
    log.info(
        "streaming channel 'train': this process trains on %d rows in %d blocks (part %d of %d%s), %d steps"
        " per epoch (the largest share's batch count), shuffle buffer %d rows",
        rows, len(share), group.part + 1, group.parts, f" on host {group.host + 1}" if group.host >= 0 else "",
        len(sizes[topology.rank]), hp.shuffle_buffer_rows,
    )  # fmt: skip
    row_log = os.environ.get(ROW_LOG_ENV)
    log_name = f"rows-{topology.hosts[topology.host_index]}-{topology.local_rank}.txt"
    return StreamBatches(
        source, prepare, share, sizes[topology.rank], sum(sum(s) for s in sizes), feature_shape, hp.seed, group.part,
        hp.shuffle_buffer_rows, loss_targets, channel_dir=channel_dir,
        row_log=Path(row_log) / log_name if row_log else None,
    )  # fmt: skip


@dataclass
class StreamedChannels:
    """The channels of a streaming job after the statistics pass: what main's set-up builds on."""

    scan: Scan
    sources: dict[str, BlockSource]
    groups: dict[str, Group]
    encoder: FeatureEncoder | None
    feature_names: tuple[str, ...] | None
    feature_shape: tuple[int, ...]
    topology: Topology
    image: bool  # 3-D arrays read as images (one channel), standardized per channel
    train_dir: Path | None  # None in Pipe mode

    def file_count(self, name: str) -> int:
        return len(self.sources[name].reader.files)

    def scored(self, name: str, prepare: Prepare, outputs: int) -> StreamedChannel:
        """Validation and test are scored whole; the train channel's final scores on its first
        TRAIN_SCORE_ROWS rows (each process a part), so scoring it holds no more than that."""
        group = self.groups[name]
        limit = TRAIN_SCORE_ROWS if name == "train" else None
        return StreamedChannel(
            self.sources[name], prepare, group.part, group.parts, outputs, self.file_count(name), limit
        )

    def train_batches(
        self, hp: Hyperparameters, prepare: Prepare, loss_targets: Callable[[torch.Tensor], torch.Tensor], min_rows: int
    ) -> StreamBatches:
        return train_batches(
            self.sources["train"], self.scan, self.groups["train"], self.topology, hp, prepare, loss_targets,
            self.feature_shape, min_rows, self.train_dir,
        )  # fmt: skip


def open_channels(
    paths: Paths,
    job: JobConfig,
    hp: Hyperparameters,
    topology: Topology,
    options: Callable[[str], DataOptions],
    encoder: FeatureEncoder | None,
) -> StreamedChannels:
    """Open train (required), validation and test (optional) and scan train once for its statistics."""
    names = [name for name in ("train", "validation", "test") if name == "train" or channel_present(paths, job, name)]
    groups = {name: group_for(job.channels.get(name), topology) for name in names}
    train = open_source(
        "train", paths, job.channels.get("train"), options("train"), hp.pipe_read_timeout_seconds, encoder
    )
    reader: ChannelReader = train.reader
    scanned = scan(train, groups["train"], ChannelStatistics())
    if encoder is None:
        encoder = scanned.statistics.encoder()
    image = scanned.array_shape is not None and len(scanned.array_shape) == 2
    image = image and options("train").array_layout == "image"
    if scanned.array_shape is None:
        assert encoder is not None
        shape: tuple[int, ...] = (encoder.output_size,)
    else:
        shape = (1, *scanned.array_shape) if image else scanned.array_shape
    sources: dict[str, BlockSource] = {"train": train}
    for name in names[1:]:
        config = job.channels.get(name)
        sources[name] = open_source(name, paths, config, options(name), hp.pipe_read_timeout_seconds, encoder)
    feature_names = reader.feature_names(encoder) if encoder is not None else None
    total = sum(ref.rows for ref in scanned.blocks)
    log.info(
        "channel train: %d rows in %d blocks of %d file(s), read as a stream",
        total,
        len(scanned.blocks),
        len(reader.files),
    )
    return StreamedChannels(
        scanned, sources, groups, encoder, feature_names, shape, topology, image,
        None if isinstance(train, PipeSource) else paths.channel_dir("train"),
    )  # fmt: skip


def channel_present(paths: Paths, job: JobConfig, name: str) -> bool:
    config = job.channels.get(name)
    if config is not None and config.input_mode.lower() == "pipe":
        return True
    return paths.channel_dir(name).is_dir()
