"""optml.container.features.FeatureEncoder: what training fits and serving applies to request rows."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from optml.container.features import FeatureEncoder, FeatureError, category_text


@pytest.fixture
def encoder() -> FeatureEncoder:
    table = pa.table({"size": [1.5, 2.5, 3.5], "colour": ["red", "blue", "red"], "grade": [3, 1, 3]})
    return FeatureEncoder.fit(table, categorical=["grade"])


def test_fit_orders_categories_and_names_outputs(encoder: FeatureEncoder) -> None:
    assert encoder.input_names == ("size", "colour", "grade")
    assert encoder.output_names == ("size", "colour=blue", "colour=red", "grade=1", "grade=3")
    assert encoder.categorical == ("colour", "grade")
    assert encoder.output_size == 5


def test_json_round_trip_is_lossless(encoder: FeatureEncoder) -> None:
    data = json.loads(json.dumps(encoder.to_json()))
    assert data["columns"][1] == {"name": "colour", "kind": "categorical", "categories": ["blue", "red"]}
    assert data["encoding"] == "one-hot"
    assert FeatureEncoder.from_json(data) == encoder


def test_request_rows_encode_like_the_training_table(encoder: FeatureEncoder) -> None:
    # A CSV request brings text ("3"), a JSON request numbers (3.0): both are grade 3.
    rows = [["1.5", "blue", "3"], [2.0, "red", 3.0], [0, "purple", 7]]
    np.testing.assert_array_equal(encoder.transform(rows), [[1.5, 1, 0, 0, 1], [2.0, 0, 1, 0, 1], [0, 0, 0, 0, 0]])
    table = pa.table({"grade": [1], "colour": ["red"], "size": [4.0], "ignored": ["x"]})
    np.testing.assert_array_equal(encoder.transform(table), [[4.0, 0, 1, 1, 0]])


def test_numeric_only_encoder_passes_arrays_through() -> None:
    encoder = FeatureEncoder.fit(pa.table({"a": [1.0], "b": [2]}))
    result = encoder.transform(np.array([[1, 2], [3, 4]]))
    assert result.dtype == np.float32
    np.testing.assert_array_equal(result, [[1, 2], [3, 4]])
    with pytest.raises(FeatureError, match="each row needs 2 values, got 3"):
        encoder.transform(np.zeros((1, 3)))


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([[1.0, "red"]], "row 1 has 2 values; each row needs 3"),
        ([["big", "red", 1]], r"row 1, column 1 \('size'\): 'big' is not a number"),
        ([[1.0, "red", 1], [None, "red", 1]], r"row 2, column 1 \('size'\): value is missing"),
        ([["inf", "red", 1]], r"row 1, column 1 \('size'\): 'inf' is not a finite number"),
        ([[True, "red", 1]], r"row 1, column 1 \('size'\): True is not a number"),
    ],
)
def test_bad_request_rows_name_row_and_column(encoder: FeatureEncoder, rows: list[list[object]], message: str) -> None:
    with pytest.raises(FeatureError, match=message):
        encoder.transform(rows)


def test_table_missing_a_column(encoder: FeatureEncoder) -> None:
    with pytest.raises(FeatureError, match=r"missing feature column\(s\) \['grade'\]"):
        encoder.transform(pa.table({"size": [1.0], "colour": ["red"]}))


def test_unknown_categories_are_counted(encoder: FeatureEncoder) -> None:
    table = pa.table({"size": [1.0, 2.0, 3.0], "colour": ["red", "teal", "teal"], "grade": [3, 3, None]})
    assert encoder.unknown_categories(table) == {"colour": (2, "teal")}


def test_category_text_treats_integral_numbers_alike() -> None:
    assert category_text(3) == category_text(3.0) == "3"
    assert category_text(2.5) == "2.5"
    assert category_text(True) == "true"


def test_unknown_kind_in_saved_encoder_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown kind 'ordinal'"):
        FeatureEncoder.from_json({"columns": [{"name": "a", "kind": "ordinal"}]})
