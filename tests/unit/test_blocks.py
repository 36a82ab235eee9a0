"""ChannelReader: a channel read block by block gives exactly what load_channel gives, with the same checks
and messages (rows counted from each file's start), reading only what a block needs."""

from __future__ import annotations

import gzip
import logging
import pickle
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from optml.container.errors import UserError
from optml.train.blocks import BlockRef, ChannelReader, CheckedBlock
from optml.train.data import DataOptions, load_channel
from tests.conftest import write_csv
from tests.unit.test_data_formats import write_jsonl


def table_rows(header: list[str], rows: Iterable[Sequence[object]]) -> list[list[object]]:
    return [list(header), *(list(row) for row in rows)]


FILES = 3
ROWS = 60  # per file


def _table_rows(seed: int) -> list[dict[str, object]]:
    rng = np.random.default_rng(seed)
    return [
        {
            "label": int(rng.integers(0, 3)),
            "x": round(float(rng.normal()), 4),
            "color": ["red", "green", "blue"][int(rng.integers(0, 3))],
            "n": int(rng.integers(-5, 50)),
        }
        for _ in range(ROWS)
    ]


def _write_csv_files(directory: Path, header: bool = True, compress: bool = False) -> None:
    for f in range(FILES):
        records = _table_rows(f)
        rows: list[list[object]] = [list(r.values()) for r in records]
        if header:
            rows.insert(0, list(records[0]))
        path = write_csv(directory / f"part-{f}.csv", rows)
        if compress:
            path.rename(directory / f"part-{f}")  # no extension: gzip found by its magic bytes
            (directory / f"part-{f}").write_bytes(gzip.compress((directory / f"part-{f}").read_bytes()))


def _write_parquet_files(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for f in range(FILES):
        records = _table_rows(f)
        table = pa.table({name: [r[name] for r in records] for name in records[0]})
        pq.write_table(table, directory / f"part-{f}.parquet", row_group_size=7)


def _write_jsonl_files(directory: Path, compress: bool = False) -> None:
    for f in range(FILES):
        write_jsonl(directory / f"part-{f}.jsonl", _table_rows(f), compress=compress)


def _write_feature_records(directory: Path) -> None:
    rng = np.random.default_rng(1)
    for f in range(FILES):
        records: list[dict[str, object]] = [
            {"features": rng.integers(0, 9, 4).tolist(), "label": int(rng.integers(0, 2))} for _ in range(ROWS)
        ]
        write_jsonl(directory / f"part-{f}.jsonl", records)


def _write_npy_pairs(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2)
    for f in range(FILES):
        np.save(directory / f"p{f}_x.npy", rng.normal(size=(ROWS, 3, 4)).astype(np.float32))
        np.save(directory / f"p{f}_y.npy", rng.integers(0, 3, ROWS))


def _write_npz_files(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    for f in range(FILES):
        np.savez(directory / f"p{f}.npz", x=rng.normal(size=(ROWS, 5)), y=rng.integers(0, 2, ROWS))


def _write_gzip_parquet_files(directory: Path) -> None:
    _write_parquet_files(directory)
    for path in directory.iterdir():
        path.write_bytes(gzip.compress(path.read_bytes()))


def _write_text_label_records(directory: Path) -> None:
    rng = np.random.default_rng(4)
    for f in range(FILES):
        records: list[dict[str, object]] = [
            {"features": rng.normal(size=(2, 3)).round(3).tolist(), "label": "abc"[int(rng.integers(0, 3))]}
            for _ in range(ROWS)
        ]
        write_jsonl(directory / f"part-{f}.jsonl", records)


WRITERS: dict[str, Callable[[Path], None]] = {
    "csv-header": _write_csv_files,
    "csv-headerless": lambda d: _write_csv_files(d, header=False),
    "csv-gzip": lambda d: _write_csv_files(d, compress=True),
    "parquet": _write_parquet_files,
    "parquet-gzip": _write_gzip_parquet_files,
    "jsonl-flat": _write_jsonl_files,
    "jsonl-gzip": lambda d: _write_jsonl_files(d, compress=True),
    "jsonl-features": _write_feature_records,
    "jsonl-sequences-text-labels": _write_text_label_records,
    "npy": _write_npy_pairs,
    "npz": _write_npz_files,
}


def all_blocks(reader: ChannelReader) -> list[CheckedBlock]:
    return [block for file in range(len(reader.files)) for block in reader.blocks(file)]


def assert_same_as_load_channel(reader: ChannelReader, blocks: list[CheckedBlock], directory: Path, options) -> None:
    dataset = load_channel(reader.channel, directory, options)
    features = np.concatenate([reader.encode(block, dataset.encoder) for block in blocks])
    np.testing.assert_array_equal(features, dataset.features)
    assert features.dtype == np.float32
    np.testing.assert_array_equal(np.concatenate([block.labels for block in blocks]), dataset.labels)
    assert reader.label_name == dataset.label_name
    if dataset.encoder is not None and reader.kind == "tabular":
        assert reader.feature_names(dataset.encoder) == dataset.feature_names


@pytest.mark.parametrize("kind", list(WRITERS))
def test_blocks_in_order_are_load_channel(tmp_path: Path, kind: str) -> None:
    WRITERS[kind](tmp_path)
    options = DataOptions(array_layout="image" if kind == "npy" else None)
    reader = ChannelReader("train", tmp_path, options, block_bytes=200, block_rows=8)
    blocks = all_blocks(reader)
    if kind != "npz":
        assert len(blocks) >= 3 * FILES  # many blocks per file
    assert_same_as_load_channel(reader, blocks, tmp_path, options)
    for file in range(FILES):
        refs = [block.ref for block in blocks if block.ref.file == file]
        assert [ref.block for ref in refs] == list(range(len(refs)))
        assert [ref.row_offset for ref in refs] == np.cumsum([0] + [ref.rows for ref in refs[:-1]]).tolist()
        assert sum(ref.rows for ref in refs) == ROWS
    assert all(block.rows == block.ref.rows for block in blocks)
    assert reader.random_access == (kind in ("parquet", "parquet-gzip", "npy", "npz"))


@pytest.mark.parametrize("kind", ["csv-header", "parquet", "npy", "jsonl-flat"])
def test_read_block_gives_the_block_blocks_gave(tmp_path: Path, kind: str) -> None:
    WRITERS[kind](tmp_path)
    reader = ChannelReader("train", tmp_path, DataOptions(), block_bytes=200, block_rows=8)
    blocks = all_blocks(reader)
    for block in [*blocks[3:9], blocks[-1], blocks[0], blocks[5]]:
        again = reader.read_block(block.ref)
        assert again.ref == block.ref
        np.testing.assert_array_equal(again.labels, block.labels)
    later = list(reader.blocks(1, start_block=2))
    assert [b.ref for b in later] == [b.ref for b in blocks if b.ref.file == 1 and b.ref.block >= 2]


def test_sequential_read_block_in_order_reads_the_file_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_csv_files(tmp_path)
    reader = ChannelReader("train", tmp_path, DataOptions(), block_bytes=200)
    refs = [block.ref for block in reader.blocks(2)]
    opened = []
    original = reader._open_csv

    def counting(*args: object, **kwargs: object) -> object:
        opened.append(1)
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(reader, "_open_csv", counting)
    for ref in refs:
        reader.read_block(ref)
    assert len(opened) == 1
    reader.read_block(refs[0])  # back to the start: the file is opened again
    assert len(opened) == 2


def test_parquet_reads_only_the_columns_the_layout_uses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_parquet_files(tmp_path)
    options = DataOptions(feature_columns=("x",))
    reader = ChannelReader("train", tmp_path, options)
    asked: list[object] = []
    original = pq.ParquetFile.read_row_group

    def spy(self: pq.ParquetFile, index: int, columns: list[str] | None = None, **kwargs: object) -> pa.Table:
        asked.append(columns)
        return original(self, index, columns=columns, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", spy)
    blocks = all_blocks(reader)
    assert asked and all(columns == ["label", "x"] for columns in asked)
    assert all(block.table is not None and block.table.column_names == ["x"] for block in blocks)
    assert_same_as_load_channel(reader, blocks, tmp_path, options)


def test_npy_blocks_are_views_of_the_memory_map(tmp_path: Path) -> None:
    _write_npy_pairs(tmp_path)
    reader = ChannelReader("train", tmp_path, DataOptions(), block_rows=16)
    block = next(reader.blocks(1, start_block=1))
    assert block.arrays is not None and not block.arrays.flags.owndata
    base = block.arrays
    while not isinstance(base, np.memmap) and base.base is not None:
        base = base.base
    assert isinstance(base, np.memmap)
    assert block.ref == BlockRef(file=1, block=1, rows=16, row_offset=16)
    encoded = reader.encode(block)
    encoded -= 1000.0  # standardizing in place changes the block's copy, never what the next epoch reads
    again = next(reader.blocks(1, start_block=1))
    assert again.arrays is not None and np.abs(again.arrays).max() < 100


def _csv_with_typo(directory: Path, file: int, row: int, compress: bool = False) -> None:
    for f in range(FILES):
        rows: list[list[object]] = table_rows(["label", "x", "n"], [[i % 2, i * 0.5, i] for i in range(200)])
        if f == file:
            rows[row + 1][1] = "12x"
        path = write_csv(directory / f"part-{f}.csv", rows)
        if compress:
            path.write_bytes(gzip.compress(path.read_bytes()))


@pytest.mark.parametrize("compress", [False, True])
def test_a_typo_in_block_7_of_file_3_names_the_file_row_column_and_value(tmp_path: Path, compress: bool) -> None:
    _csv_with_typo(tmp_path, file=2, row=150, compress=compress)
    reader = ChannelReader("train", tmp_path, DataOptions(), block_bytes=200)
    assert reader.categorical == ()
    where = r"part-2\.csv row 151 \(line 152\), column 'x': '12x' is not a number"
    with pytest.raises(UserError, match=where):
        all_blocks(reader)
    refs = []
    with pytest.raises(UserError, match=where):
        for block in reader.blocks(2):
            refs.append(block.ref)
    assert len(refs) == 7  # the bad row is in block 7 (0-based) of file 3: blocks before it were fine
    with pytest.raises(UserError, match=where):
        load_channel("train", tmp_path, DataOptions())


def test_a_typo_in_a_headerless_file_names_its_row(tmp_path: Path) -> None:
    for f in range(2):
        rows: list[list[object]] = [[i % 2, i * 0.5, i] for i in range(100)]
        if f == 1:
            rows[80][2] = "7o"
        write_csv(tmp_path / f"p{f}", rows)
    reader = ChannelReader("train", tmp_path, DataOptions(), block_bytes=128)
    with pytest.raises(UserError, match=r"p1 row 81, column 3: '7o' is not a number"):
        all_blocks(reader)


def test_a_numeric_column_empty_in_the_first_block_then_numbers(tmp_path: Path) -> None:
    rows: list[list[object]] = table_rows(["label", "x", "z"], [[i % 2, "" if i < 30 else i, i] for i in range(100)])
    write_csv(tmp_path / "a.csv", rows)
    reader = ChannelReader("train", tmp_path, DataOptions(), block_bytes=128)
    with pytest.raises(UserError, match=r"a\.csv row 1 \(line 2\): column 'x' is missing; every value must be"):
        all_blocks(reader)
    with pytest.raises(UserError, match=r"a\.csv row 1 \(line 2\): column 'x' is missing"):
        load_channel("train", tmp_path, DataOptions())


def test_a_column_empty_in_the_first_block_then_text_says_how_its_type_was_decided(tmp_path: Path) -> None:
    rows = table_rows(["label", "x", "c"], [[i % 2, i, "" if i < 30 else "abc"[i % 3]] for i in range(100)])
    write_csv(tmp_path / "a.csv", rows)
    load_channel("train", tmp_path, DataOptions())  # the whole channel: a categorical column, with gaps
    reader = ChannelReader("train", tmp_path, DataOptions(), block_bytes=128)
    with pytest.raises(
        UserError,
        match=r"a\.csv row 1 \(line 2\): column 'c' is missing; every value must be a number \(it is empty in the"
        r" first block of .*a\.csv, which decides each column's type, so it is numeric; list it in categorical_columns",
    ):
        all_blocks(reader)
    options = DataOptions(categorical_columns=("c",))
    reader = ChannelReader("train", tmp_path, options, block_bytes=128)
    assert_same_as_load_channel(reader, all_blocks(reader), tmp_path, options)


def test_a_numeric_column_empty_in_the_first_block_of_one_file_only(tmp_path: Path) -> None:
    write_csv(tmp_path / "a.csv", table_rows(["label", "x", "c"], [[i % 2, i, "u"] for i in range(50)]))
    write_csv(
        tmp_path / "b.csv", table_rows(["label", "x", "c"], [[i % 2, i * 2, "" if i < 30 else "v"] for i in range(50)])
    )
    options = DataOptions(categorical_columns=("c",))
    reader = ChannelReader("train", tmp_path, options, block_bytes=100)
    assert_same_as_load_channel(reader, all_blocks(reader), tmp_path, options)


def test_labels_text_in_one_file_and_numbers_in_another(tmp_path: Path) -> None:
    write_csv(tmp_path / "a.csv", table_rows(["label", "x"], [["cat" if i % 2 else "dog", i] for i in range(40)]))
    write_csv(tmp_path / "b.csv", table_rows(["label", "x"], [[i % 2, i] for i in range(40)]))
    reader = ChannelReader("train", tmp_path, DataOptions(), block_bytes=100)
    with pytest.raises(UserError, match=r"a\.csv has text labels but .*b\.csv has numbers; labels are either all"):
        all_blocks(reader)


def test_a_text_label_among_numbers_deep_in_a_file(tmp_path: Path) -> None:
    rows: list[list[object]] = table_rows(["label", "x"], [[i % 2, i] for i in range(120)])
    rows[100][0] = "1x"
    write_csv(tmp_path / "a.csv", rows)
    reader = ChannelReader("train", tmp_path, DataOptions(), block_bytes=100)
    with pytest.raises(UserError, match=r"a\.csv row 100 \(line 101\): the label \(column 'label'\) '1x' is not a"):
        all_blocks(reader)


def test_validation_reader_counts_unknown_categories_across_blocks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_csv(
        tmp_path / "train" / "a.csv", table_rows(["label", "x", "c"], [[i % 2, i, "ab"[i % 2]] for i in range(40)])
    )
    rows = table_rows(["label", "x", "c"], [[i % 2, i, "abz"[i % 3]] for i in range(90)])
    write_csv(tmp_path / "validation" / "a.csv", rows)
    train = load_channel("train", tmp_path / "train", DataOptions())
    assert train.encoder is not None
    reader = ChannelReader("validation", tmp_path / "validation", DataOptions(), encoder=train.encoder, block_bytes=64)
    caplog.set_level(logging.WARNING)
    blocks = all_blocks(reader)
    assert len(blocks) > 5
    for block in blocks + blocks[:3]:  # a block encoded twice (two epochs) is counted once
        reader.encode(block)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert reader.unknown_categories == {"c": (30, "z")}
    reader.log_unknown_categories()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        "channel validation: 30 value(s) of column 'c' never occur in channel 'train' (e.g. 'z'); they are"
        " encoded as all zeros"
    ]
    expected = load_channel("validation", tmp_path / "validation", DataOptions(), encoder=train.encoder)
    np.testing.assert_array_equal(np.concatenate([reader.encode(b) for b in blocks]), expected.features)


def test_missing_and_empty_channels_are_named(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"channel 'train' not found"):
        ChannelReader("train", tmp_path / "nope", DataOptions())
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"channel 'train' is empty"):
        ChannelReader("train", tmp_path / "empty", DataOptions())


def test_validation_channel_missing_a_training_column(tmp_path: Path) -> None:
    _write_parquet_files(tmp_path / "train")
    (tmp_path / "validation").mkdir()
    pq.write_table(pa.table({"label": [0, 1], "x": [1.0, 2.0]}), tmp_path / "validation" / "a.parquet")
    train = load_channel("train", tmp_path / "train", DataOptions())
    with pytest.raises(UserError, match=r"a\.parquet lacks column\(s\) color, n that the model's training data has"):
        ChannelReader("validation", tmp_path / "validation", DataOptions(), encoder=train.encoder)


def test_a_forced_categorical_column_of_a_headerless_file_keeps_its_leading_zeros(tmp_path: Path) -> None:
    for f in range(2):
        write_csv(tmp_path / f"p{f}", [[i % 2, f"0{i % 3}1", i] for i in range(40)])
    options = DataOptions(categorical_columns=(1,))
    reader = ChannelReader("train", tmp_path, options, block_bytes=64)
    blocks = all_blocks(reader)
    assert reader.categorical == ("column 2",)
    assert blocks[0].table is not None and blocks[0].table.column("column 2")[0].as_py() == "001"
    assert_same_as_load_channel(reader, blocks, tmp_path, options)


def test_a_header_only_first_file_has_no_blocks(tmp_path: Path) -> None:
    rows = table_rows(["label", "x", "c"], [[i % 2, i, "uv"[i % 2]] for i in range(30)])
    write_csv(tmp_path / "one" / "b.csv", rows)
    write_csv(tmp_path / "both" / "a.csv", [["label", "x", "c"]])
    write_csv(tmp_path / "both" / "b.csv", rows)
    reader = ChannelReader("train", tmp_path / "both", DataOptions(), block_bytes=64)
    assert list(reader.blocks(0)) == []
    assert_same_as_load_channel(reader, all_blocks(reader), tmp_path / "one", DataOptions())


@pytest.mark.parametrize("kind", ["csv-header", "parquet", "npy"])
def test_a_reader_pickles_without_its_open_files(tmp_path: Path, kind: str) -> None:
    WRITERS[kind](tmp_path)
    reader = ChannelReader("train", tmp_path, DataOptions(), block_bytes=200, block_rows=8)
    blocks = all_blocks(reader)
    reader.read_block(blocks[1].ref)
    copy = pickle.loads(pickle.dumps(reader))
    assert len(pickle.dumps(reader)) < 20_000  # no memory-mapped arrays copied in
    again = [block for file in range(len(copy.files)) for block in copy.blocks(file)]
    np.testing.assert_array_equal(np.concatenate([b.labels for b in again]), np.concatenate([b.labels for b in blocks]))
