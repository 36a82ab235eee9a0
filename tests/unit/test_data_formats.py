"""Every format a training channel can hold: values read, shapes, names, encoding, sniffing."""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from optml.container.errors import UserError
from optml.train.data import DataOptions, load_channel
from tests.conftest import write_csv


def write_parquet(path: Path, columns: Mapping[str, Sequence[object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)
    return path


def write_jsonl(path: Path, records: list[dict[str, object]], compress: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(record) + "\n" for record in records).encode()
    path.write_bytes(gzip.compress(text) if compress else text)
    return path


# --- CSV -------------------------------------------------------------------------------------------------


def test_headerless_csv_without_extension_and_gzip_without_extension(tmp_path: Path) -> None:
    # SageMaker objects often have no extension; gzip is recognised by its magic bytes.
    (tmp_path / "part-00000").write_text("1,0.5,2\n0,1.5,3\n")
    (tmp_path / "part-00001").write_bytes(gzip.compress(b"1,2.5,4\n"))
    (tmp_path / "_SUCCESS").write_text("")  # Spark's marker file is skipped
    dataset = load_channel("train", tmp_path, DataOptions(content_type="text/csv;label_size=1"))
    np.testing.assert_array_equal(dataset.labels, [1, 0, 1])
    np.testing.assert_array_equal(dataset.features, [[0.5, 2], [1.5, 3], [2.5, 4]])
    assert dataset.feature_names is None
    assert dataset.encoder is not None and dataset.encoder.input_names == ("column 2", "column 3")


def test_csv_with_header_label_by_name_feature_subset_and_time_column(tmp_path: Path) -> None:
    write_csv(
        tmp_path / "a.csv",
        [["day", "x1", "price", "x2"], ["2024-01-01", 1, 10.5, 7], ["2024-01-02", 2, 11.5, 8]],
    )
    write_csv(tmp_path / "b.csv", [["day", "x1", "price", "x2"], ["2024-01-03", 3, 12.5, 9]])
    options = DataOptions(label_column="price", feature_columns=("x2", "x1"), time_column="day")
    dataset = load_channel("train", tmp_path, options)
    assert dataset.feature_names == ("x2", "x1")
    assert dataset.label_name == "price"
    np.testing.assert_array_equal(dataset.features, [[7, 1], [8, 2], [9, 3]])
    np.testing.assert_array_equal(dataset.labels, [10.5, 11.5, 12.5])
    assert dataset.time_values is not None
    assert [str(t) for t in dataset.time_values] == ["2024-01-01", "2024-01-02", "2024-01-03"]


def test_header_with_label_named_label_is_used_wherever_it_is(tmp_path: Path) -> None:
    write_csv(tmp_path / "a.csv", [["f1", "label"], [1.5, 0], [2.5, 1]])
    dataset = load_channel("train", tmp_path, DataOptions())
    np.testing.assert_array_equal(dataset.labels, [0, 1])
    assert dataset.feature_names == ("f1",)


def test_categorical_columns_are_one_hot_encoded_and_text_labels_stay_text(tmp_path: Path) -> None:
    write_csv(
        tmp_path / "a.csv",
        [["species", "colour", "size"], ["cat", "red", 1], ["dog", "blue", 2], ["cat", "green", 3]],
    )
    dataset = load_channel("train", tmp_path, DataOptions())
    assert dataset.feature_names == ("colour=blue", "colour=green", "colour=red", "size")
    np.testing.assert_array_equal(dataset.features, [[0, 0, 1, 1], [1, 0, 0, 2], [0, 1, 0, 3]])
    assert dataset.labels.dtype == object
    assert list(dataset.labels) == ["cat", "dog", "cat"]


def test_headerless_all_text_rows_are_data_not_a_header(tmp_path: Path) -> None:
    # "yes" and "red" recur below the first row: categories, not column names.
    write_csv(tmp_path / "a.csv", [["yes", "red"], ["no", "blue"], ["yes", "red"]])
    dataset = load_channel("train", tmp_path, DataOptions())
    assert list(dataset.labels) == ["yes", "no", "yes"]
    np.testing.assert_array_equal(dataset.features, [[0, 1], [1, 0], [0, 1]])


def test_forced_categorical_column_keeps_leading_zeros(tmp_path: Path) -> None:
    write_csv(tmp_path / "a.csv", [["y", "zip"], [1, "02139"], [0, "10001"], [1, "02139"]])
    dataset = load_channel("train", tmp_path, DataOptions(categorical_columns=("zip",)))
    assert dataset.feature_names == ("zip=02139", "zip=10001")
    np.testing.assert_array_equal(dataset.features, [[1, 0], [0, 1], [1, 0]])


def test_header_can_be_forced_off(tmp_path: Path) -> None:
    write_csv(tmp_path / "a.csv", [["a", "b"], ["c", "d"]])
    dataset = load_channel("train", tmp_path, DataOptions(header=False))
    assert list(dataset.labels) == ["a", "c"]


def test_validation_uses_the_train_encoder_and_unknown_categories_encode_as_zeros(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_csv(tmp_path / "train" / "a.csv", [["y", "colour"], [1, "red"], [0, "blue"]])
    write_csv(tmp_path / "validation" / "a.csv", [["colour", "y"], ["red", 1], ["purple", 0]])
    train = load_channel("train", tmp_path / "train", DataOptions(label_column="y"))
    with caplog.at_level(logging.WARNING):
        validation = load_channel("validation", tmp_path / "validation", DataOptions(label_column="y"), train.encoder)
    np.testing.assert_array_equal(validation.features, [[0, 1], [0, 0]])
    assert "1 value(s) of column 'colour' never occur in channel 'train' (e.g. 'purple')" in caplog.text


# --- Parquet ---------------------------------------------------------------------------------------------


def test_parquet_files_default_label_column_and_categories(tmp_path: Path) -> None:
    write_parquet(tmp_path / "part-0.parquet", {"a": [1.0, 2.0], "city": ["x", "y"], "label": [0, 1]})
    write_parquet(tmp_path / "sub" / "part-1.parquet", {"a": [3.0], "city": ["x"], "label": [1]})
    dataset = load_channel("train", tmp_path, DataOptions())
    assert dataset.feature_names == ("a", "city=x", "city=y")
    np.testing.assert_array_equal(dataset.features, [[1, 1, 0], [2, 0, 1], [3, 1, 0]])
    np.testing.assert_array_equal(dataset.labels, [0, 1, 1])
    assert dataset.labels.dtype == np.float64


def test_parquet_without_extension_is_sniffed_and_content_type_is_honoured(tmp_path: Path) -> None:
    write_parquet(tmp_path / "data", {"target": [0.5, 1.5], "x": [1, 2]})
    for content_type in (None, "application/x-parquet"):
        dataset = load_channel("train", tmp_path, DataOptions(label_column="target", content_type=content_type))
        np.testing.assert_array_equal(dataset.labels, [0.5, 1.5])
        np.testing.assert_array_equal(dataset.features, [[1], [2]])


def test_gzipped_parquet(tmp_path: Path) -> None:
    write_parquet(tmp_path / "raw.parquet", {"label": [0, 1], "x": [1, 2]})
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "data.parquet.gz").write_bytes(gzip.compress((tmp_path / "raw.parquet").read_bytes()))
    dataset = load_channel("train", tmp_path / "train", DataOptions())
    np.testing.assert_array_equal(dataset.features, [[1], [2]])


# --- JSON lines ------------------------------------------------------------------------------------------


def test_jsonlines_flat_records(tmp_path: Path) -> None:
    write_jsonl(
        tmp_path / "a.jsonl",
        [{"x": 1.5, "kind": "a", "label": "yes"}, {"x": 2.5, "kind": "b", "label": "no"}],
    )
    dataset = load_channel("train", tmp_path, DataOptions())
    assert dataset.feature_names == ("x", "kind=a", "kind=b")
    np.testing.assert_array_equal(dataset.features, [[1.5, 1, 0], [2.5, 0, 1]])
    assert list(dataset.labels) == ["yes", "no"]


def test_jsonlines_feature_records_gzipped(tmp_path: Path) -> None:
    records = [{"features": [1, 2, 3], "label": 0}, {"features": [4, 5, 6], "label": 1}]
    write_jsonl(tmp_path / "a.jsonl.gz", records, compress=True)
    dataset = load_channel("train", tmp_path, DataOptions(content_type="application/jsonlines"))
    np.testing.assert_array_equal(dataset.features, [[1, 2, 3], [4, 5, 6]])
    np.testing.assert_array_equal(dataset.labels, [0, 1])
    assert dataset.encoder is not None and len(dataset.encoder.columns) == 3


def test_jsonlines_nested_features_are_sequences(tmp_path: Path) -> None:
    records = [
        {"features": [[1, 2], [3, 4], [5, 6]], "label": 1.5},
        {"features": [[7, 8], [9, 0], [1, 2]], "label": 2},
    ]
    write_jsonl(tmp_path / "seq.json", records)
    dataset = load_channel("train", tmp_path, DataOptions())
    assert dataset.features.shape == (2, 3, 2)
    assert dataset.features[1, 1, 0] == 9
    assert dataset.encoder is None


# --- .npz ------------------------------------------------------------------------------------------------


def test_npz_images_without_channel_axis_get_one(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "a.npz", x=rng.integers(0, 255, (3, 4, 5), dtype=np.uint8), y=np.array([0, 1, 2]))
    np.savez_compressed(tmp_path / "b.npz", x=np.ones((2, 4, 5), dtype=np.uint8), y=np.array([1, 0]))
    dataset = load_channel("train", tmp_path, DataOptions(array_layout="image"))
    assert dataset.features.shape == (5, 1, 4, 5)
    assert dataset.features.dtype == np.float32
    assert dataset.feature_count == 20
    np.testing.assert_array_equal(dataset.labels, [0, 1, 2, 1, 0])
    assert dataset.features[4, 0, 3, 4] == 1


def test_npz_color_images_and_sequences_keep_their_shape(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    np.savez(tmp_path / "img" / "a.npz", x=np.zeros((2, 3, 4, 4)), y=[0, 1])
    assert load_channel("train", tmp_path / "img", DataOptions()).features.shape == (2, 3, 4, 4)
    (tmp_path / "seq").mkdir()
    np.savez(tmp_path / "seq" / "a", x=np.zeros((2, 7, 3)), y=np.array([["a"], ["b"]]))
    sequences = load_channel("train", tmp_path / "seq", DataOptions(content_type="application/x-npz"))
    assert sequences.features.shape == (2, 7, 3)
    assert list(sequences.labels) == ["a", "b"]


def test_npz_time_array(tmp_path: Path) -> None:
    np.savez(tmp_path / "a.npz", x=np.zeros((2, 3)), y=[0, 1], when=np.array([10, 20]))
    dataset = load_channel("train", tmp_path, DataOptions(time_column="when"))
    np.testing.assert_array_equal(dataset.time_values, [10, 20])


# --- Formats in general ----------------------------------------------------------------------------------


def test_mixed_formats_in_one_channel_are_refused(tmp_path: Path) -> None:
    write_csv(tmp_path / "a.csv", [[1, 2], [0, 3]])
    write_parquet(tmp_path / "b.parquet", {"label": [1], "x": [2]})
    with pytest.raises(UserError, match=r"channel 'train' mixes formats \(CSV: a\.csv; Parquet: b\.parquet\)"):
        load_channel("train", tmp_path, DataOptions())


@pytest.mark.parametrize(
    ("content_type", "message"),
    [
        (
            "application/x-recordio-protobuf",
            "ContentType 'application/x-recordio-protobuf' is not supported; use one of text/csv",
        ),
        ("text/csv;label_size=0", r"only label_size=1 is supported"),
    ],
)
def test_unsupported_content_types(tmp_path: Path, content_type: str, message: str) -> None:
    write_csv(tmp_path / "a.csv", [[1, 2], [0, 3]])
    with pytest.raises(UserError, match=message):
        load_channel("train", tmp_path, DataOptions(content_type=content_type))


def test_pandas_to_csv_with_its_index_column(tmp_path: Path) -> None:
    # pandas writes its index as a first column with an empty header cell: row numbers, not a feature.
    (tmp_path / "a.csv").write_text(",label,f1\n0,1,0.5\n1,0,1.5\n")
    dataset = load_channel("train", tmp_path, DataOptions())
    assert dataset.feature_names == ("f1",)
    np.testing.assert_array_equal(dataset.labels, [1, 0])


def test_parquet_dictionary_encoded_category_column(tmp_path: Path) -> None:
    colour = pa.array(["red", "blue", "red"]).dictionary_encode()
    pq.write_table(pa.table({"label": [0, 1, 0], "colour": colour}), tmp_path / "a.parquet")
    dataset = load_channel("train", tmp_path, DataOptions())
    assert dataset.feature_names == ("colour=blue", "colour=red")


def test_npy_pairs_are_memory_mapped_and_paired_by_name(tmp_path: Path) -> None:
    np.save(tmp_path / "part1_x.npy", np.arange(12, dtype=np.float32).reshape(2, 2, 3))
    np.save(tmp_path / "part1_y.npy", np.array([0, 1]))
    np.save(tmp_path / "part2_x.npy", np.ones((1, 2, 3), dtype=np.float32))
    np.save(tmp_path / "part2_y.npy", np.array([2]))
    dataset = load_channel("train", tmp_path, DataOptions())
    assert dataset.features.shape == (3, 2, 3)
    np.testing.assert_array_equal(dataset.labels, [0, 1, 2])
    assert dataset.features[1, 1, 2] == 11
    (tmp_path / "part2_y.npy").unlink()
    with pytest.raises(UserError, match=r"part2_x\.npy has no matching part2_y\.npy"):
        load_channel("train", tmp_path, DataOptions())


def test_single_npy_pair_stays_a_writable_memory_map(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.zeros((4, 3), dtype=np.float32))
    np.save(tmp_path / "y.npy", np.array([0.5, 1, 2, 3]))
    dataset = load_channel("train", tmp_path, DataOptions())
    assert isinstance(dataset.features, np.memmap)
    assert dataset.features.flags.writeable  # copy-on-write: torch.from_numpy must not warn


def test_empty_part_files_are_skipped_when_others_hold_data(tmp_path: Path) -> None:
    write_csv(tmp_path / "part-0.csv", [[1, 2], [0, 3]])
    (tmp_path / "part-1.csv").write_text("")
    dataset = load_channel("train", tmp_path, DataOptions())
    assert [path.name for path in dataset.files] == ["part-0.csv"]


def test_categorical_by_position_counts_after_the_pandas_index(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text(",label,zip\n0,1,02139\n1,0,10001\n")
    dataset = load_channel("train", tmp_path, DataOptions(categorical_columns=(1,)))
    assert dataset.feature_names == ("zip=02139", "zip=10001")
