"""ChannelStatistics against the in-memory fit on the same data: whatever the split into blocks and the
merge order (and through pickle, as torch.distributed.all_gather_object sends it), the encoder, the
standardizer, the task, the label encoding and the class counts are those the whole channel gives."""

from __future__ import annotations

import logging
import pickle
from collections.abc import Sequence
from functools import reduce
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from optml.container.errors import UserError
from optml.container.features import MAX_CATEGORIES, FeatureEncoder
from optml.container.kinds import BINARY, MULTICLASS, REGRESSION
from optml.train import statistics
from optml.train.arrays import _tabular_encoder
from optml.train.blocks import BlockRef, CheckedBlock
from optml.train.losses import balanced_class_weights
from optml.train.preprocessing import LabelEncoding, Standardizer, infer_task
from optml.train.statistics import ChannelStatistics
from optml.train.tabular import encode

ROWS = 600


def _table(rows: int = ROWS, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    colour = rng.choice(["red", "green", "blue", "none"], rows).astype(object)
    colour[colour == "none"] = None  # a missing category: an all-zero one-hot row
    return pa.table(
        {
            "size": rng.normal(5.0, 2.0, rows),
            "colour": pa.array(colour.tolist(), pa.string()),
            "big": 1e4 + rng.normal(0.0, 1e-2, rows),  # large mean, small spread (still visible in float32)
            "shape": pa.array(rng.choice(["round", "square"], rows).tolist(), pa.string()),
            "constant": np.full(rows, 0.1),
        }
    )


def _split(sizes: Sequence[int], path: Path, file: int = 0) -> list[tuple[BlockRef, Path, slice]]:
    """Refs for consecutive blocks of one file, with the rows of the file before each."""
    parts, offset = [], 0
    for index, size in enumerate(sizes):
        parts.append((BlockRef(file, index, size, offset), path, slice(offset, offset + size)))
        offset += size
    return parts


def _sizes(blocks: int, rows: int = ROWS) -> list[int]:
    edges = np.linspace(0, rows, blocks + 1).astype(int)
    return np.diff(edges).tolist()


def _table_blocks(table: pa.Table, labels: np.ndarray, blocks: int, path: Path = Path("part-0.csv")) -> list:
    return [
        CheckedBlock(ref=ref, path=where, labels=labels[rows], table=table.slice(rows.start, rows.stop - rows.start))
        for ref, where, rows in _split(_sizes(blocks, table.num_rows), path)
    ]


def _array_blocks(arrays: np.ndarray, labels: np.ndarray, blocks: int, path: Path = Path("part-0_x.npy")) -> list:
    return [
        CheckedBlock(ref=ref, path=where, labels=labels[rows], arrays=arrays[rows])
        for ref, where, rows in _split(_sizes(blocks, len(arrays)), path)
    ]


def _each(blocks: Sequence[CheckedBlock]) -> list[ChannelStatistics]:
    parts = []
    for block in blocks:
        part = ChannelStatistics()
        part.add(block)
        parts.append(part)
    return parts


def _groupings(blocks: Sequence[CheckedBlock]) -> dict[str, ChannelStatistics]:
    """The same blocks added in order, merged left to right, right to left, shuffled, and through pickle."""
    parts = _each(blocks)
    shuffled = [parts[i] for i in np.random.default_rng(1).permutation(len(parts))]
    return {
        "added": ChannelStatistics.of_blocks(blocks),
        "left": reduce(lambda a, b: a.merge(b), parts),
        "right": reduce(lambda a, b: b.merge(a), reversed(parts)),
        "shuffled": reduce(lambda a, b: a.merge(b), shuffled),
        "pickled": reduce(
            lambda a, b: pickle.loads(pickle.dumps(a.merge(b))), [pickle.loads(pickle.dumps(p)) for p in parts]
        ),
    }


def _assert_same_standardizer(actual: Standardizer, expected: Standardizer) -> None:
    assert actual.mean.dtype == np.float32 and actual.std.dtype == np.float32
    assert actual.mean.shape == expected.mean.shape and actual.std.shape == expected.std.shape
    np.testing.assert_allclose(actual.mean, expected.mean, rtol=1e-6)
    np.testing.assert_allclose(actual.std, expected.std, rtol=1e-6)


# ----------------------------------------------------------------------------------------------- tabular


@pytest.mark.parametrize("blocks", [1, 3, 47])
def test_tabular_features_match_the_in_memory_fit(blocks: int) -> None:
    table = _table()
    labels = np.random.default_rng(2).choice(["yes", "no"], ROWS).astype(object)
    expected_encoder = FeatureEncoder.fit(table)
    expected = Standardizer.fit(expected_encoder.transform(table))
    for name, stats in _groupings(_table_blocks(table, labels, blocks)).items():
        assert stats.rows == ROWS, name
        encoder = stats.encoder()
        assert encoder == expected_encoder, name
        assert encoder is not None and encoder.output_names == expected_encoder.output_names, name
        _assert_same_standardizer(stats.standardizer(), expected)


def test_one_hot_statistics_come_from_category_counts() -> None:
    table = pa.table({"c": pa.array(["a", "a", "b", None], pa.string()), "x": [1.0, 1.0, 1.0, 1.0]})
    stats = ChannelStatistics.of_blocks(_table_blocks(table, np.array([0.0, 1.0, 0.0, 1.0]), 2))
    scaler = stats.standardizer()
    np.testing.assert_allclose(scaler.mean, [0.5, 0.25, 1.0])
    np.testing.assert_allclose(scaler.std, [0.5, np.sqrt(0.25 * 0.75), 1.0])  # constant x: std 1
    assert stats.encoder() == FeatureEncoder.fit(table)


def test_merge_is_associative_and_leaves_its_inputs_alone() -> None:
    table = _table()
    labels = np.random.default_rng(3).integers(0, 4, ROWS).astype(np.float64)
    a, b, c = _each(_table_blocks(table, labels, 3))
    before = pickle.dumps(a)
    left, right = (a.merge(b)).merge(c), a.merge(b.merge(c))
    assert pickle.dumps(a) == before and a.rows == ROWS // 3
    assert left.encoder() == right.encoder()
    _assert_same_standardizer(left.standardizer(), right.standardizer())
    assert left.labels(MULTICLASS) == right.labels(MULTICLASS)
    assert ChannelStatistics().merge(a).rows == a.rows == a.merge(ChannelStatistics()).rows


def test_categories_are_the_union_over_blocks_sorted() -> None:
    first = pa.table({"c": pa.array(["z", "y"], pa.string())})
    second = pa.table({"c": pa.array([None, "a"], pa.string())})
    blocks = [
        CheckedBlock(BlockRef(0, 0, 2, 0), Path("a.csv"), np.array([0.0, 1.0]), table=first),
        CheckedBlock(BlockRef(1, 0, 2, 0), Path("b.csv"), np.array([1.0, 0.0]), table=second),
    ]
    stats = ChannelStatistics.of_blocks(reversed(blocks))
    encoder = stats.encoder()
    assert encoder == FeatureEncoder.fit(pa.concat_tables([first, second]))
    assert encoder is not None and encoder.columns[0].categories == ("a", "y", "z")


def test_too_many_categories_is_refused_as_the_in_memory_path_words_it() -> None:
    names = [f"id{i}" for i in range(MAX_CATEGORIES + 5)]
    table = pa.table({"x": np.arange(len(names), dtype=np.float64), "id": pa.array(names, pa.string())})
    with pytest.raises(UserError) as expected:
        encode("train", table, [], None)
    stats = ChannelStatistics.of_blocks(_table_blocks(table, np.zeros(len(names)), 4))
    with pytest.raises(UserError) as actual:
        stats.encoder()
    assert str(actual.value) == str(expected.value)
    assert f"has {MAX_CATEGORIES + 5} distinct text values" in str(actual.value)
    with pytest.raises(UserError, match="one-hot encoding is limited"):
        stats.standardizer()


def test_a_column_beyond_the_category_cap_keeps_no_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(statistics, "CATEGORY_CAP", 1500)
    names = [f"id{i}" for i in range(2000)]
    table = pa.table({"id": pa.array(names, pa.string())})
    stats = ChannelStatistics.of_blocks(_table_blocks(table, np.zeros(2000), 10))
    features = stats.features
    assert isinstance(features, statistics.TableFeatures) and features.categories["id"] is None
    with pytest.raises(UserError, match="column 'id' has more than 1500 distinct text values; one-hot encoding"):
        stats.encoder()


# ------------------------------------------------------------------------------------------------ labels


def _label_cases() -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(4)
    return [
        ("binary text", rng.choice(["cat", "dog"], ROWS).astype(object)),
        ("binary numeric", rng.integers(0, 2, ROWS).astype(np.float64)),
        ("multiclass numeric", rng.integers(0, 7, ROWS).astype(np.float64)),
        ("multiclass text", rng.choice(["a", "b", "c", "d"], ROWS).astype(object)),
        ("regression", rng.normal(100.0, 15.0, ROWS)),
        ("regression integers", rng.integers(0, 50, ROWS).astype(np.float64)),
    ]


@pytest.mark.parametrize("case", _label_cases(), ids=lambda case: case[0])
@pytest.mark.parametrize("blocks", [1, 3, 47])
def test_task_and_labels_match_the_in_memory_fit(case: tuple[str, np.ndarray], blocks: int) -> None:
    _, labels = case
    task = infer_task(labels)
    expected = LabelEncoding.fit(task, labels)
    for name, stats in _groupings(_table_blocks(_table(), labels, blocks)).items():
        assert stats.task() == task, name
        actual = stats.labels(task)
        if task == REGRESSION:
            assert actual.task == REGRESSION and actual.classes == ()
            assert actual.target_mean == pytest.approx(expected.target_mean, rel=1e-12)
            assert actual.target_std == pytest.approx(expected.target_std, rel=1e-12)
            assert len(stats.class_counts(actual)) == 0
            continue
        assert actual == expected, name
        indices = expected.encode(labels, "train")
        counts = stats.class_counts(actual)
        assert counts.dtype == np.int64
        np.testing.assert_array_equal(counts, np.bincount(indices, minlength=len(expected.classes)))
        weights = np.ones(len(counts))
        weights[counts > 0] = counts.sum() / (len(counts) * counts[counts > 0])
        np.testing.assert_allclose(weights, balanced_class_weights(indices, len(expected.classes)))


def test_task_is_logged_as_infer_task_logs_it(caplog: pytest.LogCaptureFixture) -> None:
    labels = np.array([1.0, 2.0, 3.0, 1.0])
    stats = ChannelStatistics.of_blocks(_table_blocks(_table(4), labels, 2))
    with caplog.at_level(logging.INFO):
        infer_task(labels)
        stats.task()
    expected, actual = (record.getMessage() for record in caplog.records)
    assert actual == expected
    assert actual.startswith("task inferred from 3 distinct label values: multiclass_classification (set")


def test_declared_num_classes_allows_absent_classes_and_counts_them_as_zero() -> None:
    labels = np.array([0.0, 2.0, 2.0, 0.0, 2.0])
    stats = ChannelStatistics.of_blocks(_table_blocks(_table(5), labels, 2))
    encoding = stats.labels(MULTICLASS, num_classes=4)
    assert encoding == LabelEncoding.fit(MULTICLASS, labels, 4) == LabelEncoding(MULTICLASS, classes=(0, 1, 2, 3))
    np.testing.assert_array_equal(stats.class_counts(encoding), [2, 0, 3, 0])
    assert stats.labels(BINARY, num_classes=3).classes == (0, 1, 2)  # as LabelEncoding.fit: num_classes decides


def test_a_label_outside_num_classes_names_the_file_and_its_row() -> None:
    good = CheckedBlock(BlockRef(0, 0, 3, 0), Path("a.csv"), np.array([0.0, 1.0, 2.0]), table=_table(3))
    bad = [
        CheckedBlock(BlockRef(1, 0, 3, 0), Path("b.csv"), np.array([0.0, 1.0, 1.0]), table=_table(3)),
        CheckedBlock(BlockRef(1, 1, 3, 3), Path("b.csv"), np.array([1.0, 7.0, 3.0]), table=_table(3)),
        CheckedBlock(BlockRef(1, 2, 2, 6), Path("b.csv"), np.array([-1.0, 0.5]), table=_table(2)),
    ]
    stats = ChannelStatistics.of_blocks([bad[2], bad[1], good, bad[0]])
    with pytest.raises(UserError) as raised:
        stats.labels(MULTICLASS, num_classes=3)
    assert str(raised.value) == "b.csv row 5: label 7 is outside num_classes=3 (expected an integer 0..2)"
    with pytest.raises(UserError, match=r"^b.csv row 5: label 7 is outside num_classes=4 "):
        stats.labels(MULTICLASS, num_classes=4)
    with pytest.raises(
        UserError, match=r"^b.csv row 7: label -1 is outside num_classes=8 \(expected an integer 0..7\)"
    ):
        stats.labels(MULTICLASS, num_classes=8)
    text = CheckedBlock(BlockRef(0, 1, 2, 10), Path("t.csv"), np.array(["x", "y"], dtype=object), table=_table(2))
    with pytest.raises(UserError, match=r"^t.csv row 11: label 'x' is outside num_classes=2 "):
        ChannelStatistics.of_blocks([text]).labels(BINARY, num_classes=2)


def test_binary_needs_exactly_two_labels_with_the_in_memory_message() -> None:
    labels = np.array(["a", "b", "c", "a"], dtype=object)
    stats = ChannelStatistics.of_blocks(_table_blocks(_table(4), labels, 3))
    with pytest.raises(UserError) as expected:
        LabelEncoding.fit(BINARY, labels)
    with pytest.raises(UserError) as actual:
        stats.labels(BINARY)
    assert str(actual.value) == str(expected.value)
    assert "needs exactly 2 distinct labels in channel 'train', found 3: ['a', 'b', 'c']" in str(actual.value)


def test_classification_needs_two_labels_with_the_in_memory_message() -> None:
    labels = np.array([3.0, 3.0, 3.0])
    stats = ChannelStatistics.of_blocks(_table_blocks(_table(3), labels, 2))
    with pytest.raises(UserError) as expected:
        LabelEncoding.fit(MULTICLASS, labels)
    with pytest.raises(UserError) as actual:
        stats.labels(MULTICLASS)
    assert (
        str(actual.value)
        == str(expected.value)
        == ("classification needs at least 2 distinct labels in channel 'train', found [3]")
    )


def test_regression_with_text_labels_names_the_channels_first_label() -> None:
    labels = np.array(["low", "high", "mid", "high"], dtype=object)
    blocks = _table_blocks(_table(4), labels, 3)
    stats = ChannelStatistics.of_blocks(reversed(blocks))
    with pytest.raises(UserError) as expected:
        LabelEncoding.fit(REGRESSION, labels)
    with pytest.raises(UserError) as actual:
        stats.labels(REGRESSION)
    assert str(actual.value) == str(expected.value)
    assert str(actual.value).endswith("has text labels such as 'low'")


def test_label_moments_are_stable_where_a_sum_of_squares_would_cancel() -> None:
    labels = 1e9 + np.random.default_rng(10).normal(0.0, 1e-3, ROWS)  # variance 1e-6 next to mean² 1e18
    stats = ChannelStatistics.of_blocks(_table_blocks(_table(), labels, 13))
    encoding = stats.labels(REGRESSION)
    assert encoding.target_mean == pytest.approx(labels.mean(), rel=1e-15)
    # A sum of squares gives 0 here; Chan's combination keeps the std to the float64 rounding of the block
    # means (ulp(1e9) ≈ 1e-7 next to a spread of 1e-3).
    assert np.sqrt(max(0.0, (labels**2).mean() - labels.mean() ** 2)) == 0.0
    assert encoding.target_std == pytest.approx(labels.std(), rel=1e-4)


def test_regression_of_a_constant_target_gets_std_one() -> None:
    stats = ChannelStatistics.of_blocks(_table_blocks(_table(6), np.full(6, 2.5), 3))
    assert stats.labels(REGRESSION) == LabelEncoding(REGRESSION, target_mean=2.5, target_std=1.0)


def test_text_and_numeric_labels_in_tabular_data_are_refused() -> None:
    blocks = [
        CheckedBlock(BlockRef(0, 0, 2, 0), Path("a.csv"), np.array([0.0, 1.0]), table=_table(2)),
        CheckedBlock(BlockRef(1, 0, 2, 0), Path("b.csv"), np.array(["x", "y"], dtype=object), table=_table(2)),
    ]
    with pytest.raises(UserError) as raised:
        ChannelStatistics.of_blocks(blocks)
    assert str(raised.value) == "b.csv has text labels but a.csv has numbers; labels are either all numbers or all text"


def test_label_cap_keeps_memory_bounded_and_refuses_that_many_classes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(statistics, "LABEL_CAP", 100)
    numbers = np.random.default_rng(5).permutation(300).astype(np.float64)
    stats = ChannelStatistics.of_blocks(_table_blocks(_table(300), numbers, 7))
    assert stats.label_statistics is not None and stats.label_statistics.counts is None
    assert stats.label_statistics.first_seen is None
    assert stats.task() == REGRESSION == infer_task(numbers)
    encoding = stats.labels(REGRESSION)
    assert encoding.target_mean == pytest.approx(numbers.mean()) and encoding.target_std == pytest.approx(numbers.std())
    for call in (lambda: stats.labels(MULTICLASS), lambda: stats.labels(MULTICLASS, num_classes=5)):
        with pytest.raises(UserError, match="more than 100 distinct labels in channel 'train'.*at most 100 classes"):
            call()
    text = np.array([f"class {i}" for i in range(300)], dtype=object)
    stats = ChannelStatistics.of_blocks(_table_blocks(_table(300), text, 2))  # each block under the cap, not both
    assert stats.task() == MULTICLASS == infer_task(text)
    with pytest.raises(UserError, match="task multiclass_classification with more than 100 distinct labels"):
        stats.labels(MULTICLASS)
    with pytest.raises(UserError, match="task binary_classification with more than 100 distinct labels"):
        stats.labels(BINARY)
    pickle.loads(pickle.dumps(stats))


# ------------------------------------------------------------------------------------------------ arrays


def test_tabular_arrays_match_the_in_memory_fit() -> None:
    rng = np.random.default_rng(6)
    x = (rng.normal(0.0, 3.0, (ROWS, 5)) + [0.0, 1e4, -7.0, 0.0, 2.0]).astype(np.float32)
    x[:, 3] = 1.5
    labels = rng.integers(0, 3, ROWS).astype(np.float64)
    for name, stats in _groupings(_array_blocks(x, labels, 5)).items():
        assert stats.encoder() == _tabular_encoder("train", 5, None), name
        _assert_same_standardizer(stats.standardizer(), Standardizer.fit(x))
        assert stats.labels(stats.task()) == LabelEncoding.fit(infer_task(labels), labels)


@pytest.mark.parametrize("image", [False, True])
def test_three_dimensional_arrays_are_sequences_or_one_channel_images(image: bool) -> None:
    rng = np.random.default_rng(7)
    x = (rng.normal(0.0, 1.0, (200, 6, 4)) * [1.0, 2.0, 3.0, 0.5] + [0.0, 5.0, -2.0, 9.0]).astype(np.float32)
    labels = rng.choice(["up", "down"], 200).astype(object)
    expected = Standardizer.fit(x[:, np.newaxis] if image else x)
    for name, stats in _groupings(_array_blocks(x, labels, 9)).items():
        assert stats.encoder() is None, name
        _assert_same_standardizer(stats.standardizer(image=image), expected)


def test_images_are_standardized_per_channel() -> None:
    rng = np.random.default_rng(8)
    x = (rng.uniform(0.0, 255.0, (90, 3, 5, 4)) * np.array([1.0, 0.5, 0.1])[:, None, None]).astype(np.float32)
    labels = rng.integers(0, 10, 90).astype(np.float64)
    expected = Standardizer.fit(x)
    for name, stats in _groupings(_array_blocks(x, labels, 4)).items():
        assert stats.encoder() is None, name
        _assert_same_standardizer(stats.standardizer(), expected)
        _assert_same_standardizer(stats.standardizer(image=True), expected)


def test_large_blocks_are_summarised_in_bounded_row_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(statistics, "_CHUNK_ELEMENTS", 64)
    x = np.random.default_rng(9).normal(3.0, 2.0, (50, 2, 3, 3)).astype(np.float32)
    stats = ChannelStatistics.of_blocks(_array_blocks(x, np.zeros(50), 1))
    _assert_same_standardizer(stats.standardizer(), Standardizer.fit(x))


def test_arrays_of_another_shape_are_refused() -> None:
    blocks = [
        CheckedBlock(BlockRef(0, 0, 2, 0), Path("a.npy"), np.zeros(2), arrays=np.zeros((2, 3, 4), np.float32)),
        CheckedBlock(BlockRef(1, 0, 2, 0), Path("b.npy"), np.zeros(2), arrays=np.zeros((2, 3, 5), np.float32)),
    ]
    with pytest.raises(UserError) as raised:
        ChannelStatistics.of_blocks(blocks)
    assert str(raised.value).startswith("b.npy has rows of shape (3, 5) but a.npy has (3, 4); every file in channel")


def test_array_labels_mixing_numbers_and_text_become_text_as_assemble_arrays_makes_them() -> None:
    blocks = [
        CheckedBlock(
            BlockRef(0, 0, 3, 0), Path("a.npz"), np.array([3.0, 1.0, 3.0]), arrays=np.zeros((3, 2), np.float32)
        ),
        CheckedBlock(
            BlockRef(1, 0, 2, 0), Path("b.npz"), np.array(["3", "x"], dtype=object), arrays=np.ones((2, 2), np.float32)
        ),
    ]
    stats = ChannelStatistics.of_blocks(reversed(blocks))
    assert stats.task() == MULTICLASS
    encoding = stats.labels(MULTICLASS)
    assert encoding == LabelEncoding(MULTICLASS, classes=("1", "3", "x"))
    np.testing.assert_array_equal(stats.class_counts(encoding), [1, 3, 1])
    with pytest.raises(UserError, match="text labels such as '3'"):
        stats.labels(REGRESSION)


def test_empty_blocks_change_nothing() -> None:
    stats = ChannelStatistics()
    stats.add(CheckedBlock(BlockRef(0, 0, 0, 0), Path("a.npy"), np.zeros(0), arrays=np.zeros((0, 2), np.float32)))
    assert stats.rows == 0 and stats.features is None
    with pytest.raises(ValueError, match="no rows"):
        stats.encoder()
