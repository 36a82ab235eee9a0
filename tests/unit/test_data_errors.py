"""Bad training data in every format: each message names the file, row and column and what was expected."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from optml.container.errors import UserError
from optml.train.data import DataOptions, load_channel
from tests.conftest import write_csv
from tests.unit.test_data_formats import write_jsonl, write_parquet


def load(directory: Path, **options: object) -> None:
    load_channel("train", directory, DataOptions(**options))  # type: ignore[arg-type]


def test_typo_in_a_numeric_column_with_a_header_names_row_line_and_column(tmp_path: Path) -> None:
    write_csv(tmp_path / "a.csv", [["y", "x"], [1, 0.5], [0, 1.5], [1, "1.5x"]])
    with pytest.raises(
        UserError,
        match=r"a\.csv row 3 \(line 4\), column 'x': '1.5x' is not a number \(other values in this column are"
        r" numbers; list it in categorical_columns",
    ):
        load(tmp_path)


def test_numeric_column_that_is_text_in_another_file(tmp_path: Path) -> None:
    write_parquet(tmp_path / "a.parquet", {"label": [0, 1], "x": [1.0, 2.0]})
    write_parquet(tmp_path / "b.parquet", {"label": [0, 1], "x": ["n/a?", "oops"]})
    with pytest.raises(UserError, match=r"b\.parquet row 1, column 'x': 'n/a\?' is not a number"):
        load(tmp_path)


def test_label_column_not_found_lists_the_columns(tmp_path: Path) -> None:
    write_parquet(tmp_path / "a.parquet", {"target": [0, 1], "x": [1.0, 2.0]})
    with pytest.raises(UserError, match=r"label_column 'price' not found in .*a\.parquet; columns: target, x"):
        load(tmp_path, label_column="price")


def test_parquet_without_a_label_column_asks_for_one(tmp_path: Path) -> None:
    write_parquet(tmp_path / "a.parquet", {"target": [0, 1], "x": [1.0, 2.0]})
    with pytest.raises(UserError, match=r"has no column 'label'; set label_column .*\(columns: target, x\)"):
        load(tmp_path)


def test_label_column_index_out_of_range(tmp_path: Path) -> None:
    write_csv(tmp_path / "a.csv", [[1, 2], [0, 3]])
    with pytest.raises(UserError, match=r"label_column 5 is out of range: .*a\.csv has 2 columns \(0-based"):
        load(tmp_path, label_column=5)


def test_column_name_on_a_file_without_header(tmp_path: Path) -> None:
    write_csv(tmp_path / "a.csv", [[1, 2], [0, 3]])
    with pytest.raises(UserError, match=r"label_column 'y' is a column name, but .*a\.csv has no header row"):
        load(tmp_path, label_column="y", header=False)


def test_feature_columns_naming_unknown_columns(tmp_path: Path) -> None:
    write_csv(tmp_path / "a.csv", [["label", "a", "b"], [1, 2, 3], [0, 3, 4]])
    with pytest.raises(UserError, match=r"feature_columns entry 'c' not found in .*a\.csv; columns: label, a, b"):
        load(tmp_path, feature_columns=("a", "c"))


def test_feature_columns_naming_the_label(tmp_path: Path) -> None:
    write_csv(tmp_path / "a.csv", [["label", "a"], [1, 2], [0, 3]])
    with pytest.raises(UserError, match=r"feature_columns names 'label', which is the label or time column"):
        load(tmp_path, feature_columns=("a", "label"))


def test_all_nan_column_is_named(tmp_path: Path) -> None:
    write_parquet(tmp_path / "a.parquet", {"label": [0, 1, 0], "ok": [1.0, 2.0, 3.0], "empty": [float("nan")] * 3})
    with pytest.raises(UserError, match=r"column 'empty' is empty \(NaN or missing\) in every row of channel 'train'"):
        load(tmp_path)


def test_all_missing_column_in_headerless_csv(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("1,0.5,\n0,1.5,\n")
    with pytest.raises(UserError, match=r"column 3 is empty \(NaN or missing\) in every row"):
        load(tmp_path)


def test_missing_label_in_jsonlines(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "a.jsonl", [{"x": 1, "label": 1}, {"x": 2, "label": 0}, {"x": 3}])
    with pytest.raises(UserError, match=r"a\.jsonl row 3: the label \(column 'label'\) is missing"):
        load(tmp_path)


def test_nan_label_in_parquet(tmp_path: Path) -> None:
    write_parquet(tmp_path / "a.parquet", {"label": [0.5, float("nan")], "x": [1.0, 2.0]})
    with pytest.raises(UserError, match=r"a\.parquet row 2: the label \(column 'label'\) is NaN"):
        load(tmp_path)


def test_nan_label_in_npz(tmp_path: Path) -> None:
    np.savez(tmp_path / "a.npz", x=np.zeros((3, 2)), y=np.array([0, np.nan, 1]))
    with pytest.raises(UserError, match=r"a\.npz row 2: the label \(y\) is NaN"):
        load(tmp_path)


def test_images_of_mixed_shapes_name_both_files(tmp_path: Path) -> None:
    np.savez(tmp_path / "a.npz", x=np.zeros((2, 28, 28)), y=[0, 1])
    np.savez(tmp_path / "b.npz", x=np.zeros((2, 32, 32)), y=[0, 1])
    with pytest.raises(
        UserError,
        match=r"b\.npz has x rows of shape \(32, 32\) but .*a\.npz has \(28, 28\); every file in channel",
    ):
        load(tmp_path, array_layout="image")


def test_npz_without_y_lists_the_arrays(tmp_path: Path) -> None:
    np.savez(tmp_path / "a.npz", x=np.zeros((2, 3)), labels=[0, 1])
    with pytest.raises(UserError, match=r"a\.npz has no array 'y'; found x, labels \(save with np\.savez"):
        load(tmp_path)


def test_npz_x_and_y_of_different_lengths(tmp_path: Path) -> None:
    np.savez(tmp_path / "a.npz", x=np.zeros((3, 2)), y=[0, 1])
    with pytest.raises(UserError, match=r"a\.npz: x has 3 rows but y has 2 labels"):
        load(tmp_path)


def test_non_finite_pixel_names_row_and_index(tmp_path: Path) -> None:
    x = np.zeros((2, 1, 2, 2))
    x[1, 0, 1, 0] = np.inf
    np.savez(tmp_path / "a.npz", x=x, y=[0, 1])
    with pytest.raises(UserError, match=r"a\.npz row 2: x\[0, 1, 0\] is inf, not a finite number"):
        load(tmp_path)


def test_feature_count_differs_between_parquet_files(tmp_path: Path) -> None:
    write_parquet(tmp_path / "a.parquet", {"label": [0, 1], "x": [1.0, 2.0]})
    write_parquet(tmp_path / "b.parquet", {"label": [0, 1], "x": [1.0, 2.0], "extra": [3.0, 4.0]})
    with pytest.raises(UserError, match=r"b\.parquet has column\(s\) extra that .*a\.parquet lacks"):
        load(tmp_path)


def test_file_lacking_a_feature_column(tmp_path: Path) -> None:
    write_parquet(tmp_path / "a.parquet", {"label": [0, 1], "x": [1.0, 2.0], "z": [1.0, 2.0]})
    write_parquet(tmp_path / "b.parquet", {"label": [0, 1], "x": [1.0, 2.0]})
    with pytest.raises(UserError, match=r"b\.parquet lacks column\(s\) z that .*a\.parquet has"):
        load(tmp_path)


def test_validation_lacking_a_train_feature(tmp_path: Path) -> None:
    write_parquet(tmp_path / "train" / "a.parquet", {"label": [0, 1], "x": [1.0, 2.0], "z": [1.0, 2.0]})
    write_parquet(tmp_path / "validation" / "a.parquet", {"label": [0, 1], "x": [1.0, 2.0]})
    train = load_channel("train", tmp_path / "train", DataOptions())
    with pytest.raises(UserError, match=r"validation/a\.parquet lacks column\(s\) z"):
        load_channel("validation", tmp_path / "validation", DataOptions(), train.encoder)


def test_a_single_row_is_refused(tmp_path: Path) -> None:
    write_csv(tmp_path / "a.csv", [[1, 0.5, 2]])
    with pytest.raises(UserError, match=r"channel 'train' has 1 row\(s\) in 1 file\(s\); .* at least 2 rows"):
        load(tmp_path)


def test_corrupt_parquet(tmp_path: Path) -> None:
    (tmp_path / "a.parquet").write_bytes(b"PAR1 this is not really parquet")
    with pytest.raises(UserError, match=r"a\.parquet is not a readable Parquet file: "):
        load(tmp_path)


def test_truncated_gzip(tmp_path: Path) -> None:
    data = gzip.compress(b"1,2,3\n" * 1000)
    (tmp_path / "a.csv.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=r"a\.csv\.gz is not a readable gzip file"):
        load(tmp_path)


def test_date_column_used_as_a_feature(tmp_path: Path) -> None:
    write_csv(tmp_path / "a.csv", [["label", "day"], [1, "2024-01-01"], [0, "2024-01-02"]])
    with pytest.raises(
        UserError, match=r"column 'day' holds date32\[day\] values, expected numbers; name it in time_c"
    ):
        load(tmp_path)


def test_id_like_text_column_is_refused_with_a_hint(tmp_path: Path) -> None:
    ids = [f"user-{i}" for i in range(1001)]
    write_parquet(tmp_path / "a.parquet", {"label": [i % 2 for i in range(1001)], "user": ids})
    with pytest.raises(UserError, match=r"column 'user' has 1001 distinct text values; one-hot .* limited to 1000"):
        load(tmp_path)


def test_ragged_feature_lists_in_jsonlines(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "a.jsonl", [{"features": [1, 2], "label": 0}, {"features": [1, 2, 3], "label": 1}])
    with pytest.raises(UserError, match=r"a\.jsonl row 2: 'features' has a list of 3 values where row 1 has 2"):
        load(tmp_path)


def test_unreadable_jsonlines(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text('{"label": 1, "x": 2}\n{"label": \n')
    with pytest.raises(UserError, match=r"a\.jsonl is not a readable JSON lines \(one JSON object per line\) file"):
        load(tmp_path)


def test_text_label_among_numbers_is_a_typo(tmp_path: Path) -> None:
    write_csv(tmp_path / "a.csv", [[1, 0.5], [0, 1.5], ["1x", 2.5]])
    with pytest.raises(UserError, match=r"a\.csv row 3: the label \(column 1\) '1x' is not a number, but other"):
        load(tmp_path)


def test_text_labels_in_one_file_numbers_in_another(tmp_path: Path) -> None:
    write_parquet(tmp_path / "a.parquet", {"label": ["cat", "dog"], "x": [1.0, 2.0]})
    write_parquet(tmp_path / "b.parquet", {"label": [0, 1], "x": [1.0, 2.0]})
    with pytest.raises(UserError, match=r"a\.parquet has text labels but .*b\.parquet has numbers"):
        load(tmp_path)


def test_label_name_given_for_a_file_whose_first_row_is_data(tmp_path: Path) -> None:
    write_csv(tmp_path / "a.csv", [[1, 0.5], [0, 1.5]])
    with pytest.raises(UserError, match=r"label_column 'y' is a column name, but .*a\.csv has no header row"):
        load(tmp_path, label_column="y")


def test_flat_and_feature_records_mixed(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "a.jsonl", [{"features": [1, 2], "label": 0}, {"features": [3, 4], "label": 1}])
    write_jsonl(tmp_path / "b.jsonl", [{"x": 1, "label": 0}])
    with pytest.raises(UserError, match=r"b\.jsonl holds flat records but .*a\.jsonl holds \{\"features\""):
        load(tmp_path)
