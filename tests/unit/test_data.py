"""Reading channels: every file, gzip, and a message naming file/row/column for each kind of bad data."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from optml.container.errors import UserError
from optml.train.data import DataOptions, load_channel
from tests.conftest import write_csv


def test_reads_every_file_in_the_channel_including_gzip_and_subfolders(tmp_path: Path) -> None:
    write_csv(tmp_path / "a.csv", [[1, 0.5, 2], [0, 1.5, 3]])
    write_csv(tmp_path / "sub" / "b.csv", [[1, 2.5, 4]])
    (tmp_path / "c.csv.gz").write_bytes(gzip.compress(b"0,3.5,5\n"))
    write_csv(tmp_path / ".hidden" / "x.csv", [["not", "data", "here"]])
    dataset = load_channel("train", tmp_path, DataOptions())
    assert dataset.rows == 4
    assert dataset.feature_count == 2
    assert dataset.features.dtype == np.float32
    np.testing.assert_array_equal(dataset.labels, [1, 0, 0, 1])  # a.csv, c.csv.gz, sub/b.csv
    np.testing.assert_allclose(dataset.features[:, 0], [0.5, 1.5, 3.5, 2.5])


def test_missing_channel_directory(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"channel 'validation' not found: expected data files \(CSV, .*\) in .*nope"):
        load_channel("validation", tmp_path / "nope", DataOptions())


def test_channel_without_files(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="channel 'train' is empty: no files in"):
        load_channel("train", tmp_path, DataOptions())


def test_empty_csv_file(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(UserError, match=r"empty\.csv is empty; SageMaker CSV has no header row"):
        load_channel("train", tmp_path, DataOptions())


def test_non_numeric_value_names_file_row_and_column(tmp_path: Path) -> None:
    write_csv(tmp_path / "data.csv", [[1, 0.5, 2], [0, "abc", 3]])
    with pytest.raises(UserError, match=r"data\.csv row 2, column 2: 'abc' is not a number"):
        load_channel("train", tmp_path, DataOptions())


def test_a_header_row_is_detected_and_names_the_features(tmp_path: Path) -> None:
    # Before the data formats work a header row was refused; it is now read as column names.
    write_csv(tmp_path / "data.csv", [["label", "f1", "f2"], [0, 1, 2], [1, 3, 4]])
    dataset = load_channel("train", tmp_path, DataOptions())
    assert dataset.feature_names == ("f1", "f2")
    np.testing.assert_array_equal(dataset.labels, [0, 1])
    np.testing.assert_array_equal(dataset.features, [[1, 2], [3, 4]])


@pytest.mark.parametrize("label", ["nan", ""])
def test_missing_or_nan_label_names_the_row(tmp_path: Path, label: str) -> None:
    write_csv(tmp_path / "data.csv", [[1, 0.5, 2], [0, 1.5, 3], [label, 2.5, 4]])
    with pytest.raises(UserError, match=r"data\.csv row 3: the label \(column 1\) is (NaN|missing)"):
        load_channel("train", tmp_path, DataOptions())


def test_missing_feature_value_names_row_and_column(tmp_path: Path) -> None:
    write_csv(tmp_path / "data.csv", [[1, 0.5, 2], [0, 1.5, ""]])
    with pytest.raises(UserError, match=r"row 2: column 3 is missing"):
        load_channel("train", tmp_path, DataOptions())


def test_files_with_different_column_counts(tmp_path: Path) -> None:
    write_csv(tmp_path / "a.csv", [[1, 0.5, 2]])
    write_csv(tmp_path / "b.csv", [[1, 0.5]])
    with pytest.raises(UserError, match=r"b\.csv has 1 features but .*a\.csv has 2"):
        load_channel("train", tmp_path, DataOptions())


def test_ragged_rows_inside_a_file(tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_text("1,2,3\n0,1\n")
    with pytest.raises(UserError, match=r"data\.csv is not a readable CSV file: .*Expected 3 columns, got 2"):
        load_channel("train", tmp_path, DataOptions())


def test_label_only_file_is_refused(tmp_path: Path) -> None:
    write_csv(tmp_path / "data.csv", [[1], [0]])
    with pytest.raises(UserError, match="has 1 column; expected the label followed by features"):
        load_channel("train", tmp_path, DataOptions())
