"""Request bodies → feature rows, and results → response bodies, for each supported content type.

Decoders take the fast road for well-formed input (one C-level parse) and, when it fails, re-read the
body carefully to name the first bad line, field or value: errors cost time only for bad requests.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from pyarrow import csv as pa_csv

from serve.errors import RequestError, bad_request
from serve.outputs import Result

REQUEST_TYPES = (
    "text/csv",
    "application/json",
    "application/jsonlines",
    "application/x-npy",
    "application/x-npz",
)
# Charsets a text body may declare; utf-8 also strips a byte-order mark (spreadsheet exports add one).
TEXT_CHARSETS = {
    "utf-8": "utf-8-sig",
    "utf8": "utf-8-sig",
    "us-ascii": "ascii",
    "ascii": "ascii",
    "iso-8859-1": "latin-1",
    "latin-1": "latin-1",
    "latin1": "latin-1",
}
# Below this many bytes Python's own float() beats pyarrow's fixed set-up cost (measured: ~16 KiB).
PYARROW_MIN_BYTES = 16 * 1024
NPZ_ARRAY_NAMES = ("instances", "features", "x", "X")
FLOAT32_MAX = float(np.finfo(np.float32).max)
NPZ_MAX_UNCOMPRESSED_BYTES = 256 * 1024 * 1024  # a small .npz must not inflate into all of memory


@dataclass(frozen=True)
class FeatureSchema:
    """What a record must hold: `count` numbers, and the training column names when the model has them."""

    count: int
    names: tuple[str, ...] = ()

    @classmethod
    def of(cls, count: int, names: list[str]) -> FeatureSchema:
        usable = len(names) == count and len(set(names)) == count  # else ignore them, defensively
        return cls(count, tuple(names) if usable else ())


@dataclass(frozen=True)
class Records:
    features: np.ndarray  # (rows, feature count), finite float64
    one_per_line: bool  # the body held one record per line: answer one line per record


def decode_request(
    body: bytes, content_type: str, params: Mapping[str, str], schema: FeatureSchema, batch: bool = False
) -> Records:
    if content_type not in REQUEST_TYPES:
        raise RequestError(
            415,
            "unsupported_media_type",
            f"Content-Type {content_type or '(none)'!r} is not supported; send one of {', '.join(REQUEST_TYPES)}",
        )
    if not body and content_type in ("application/x-npy", "application/x-npz"):
        raise bad_request(f"empty body: expected an {content_type} array of feature rows")
    if content_type == "application/x-npy":
        return Records(_check_rows(_numeric_array(_load_npy(body), "the .npy array"), schema.count), False)
    if content_type == "application/x-npz":
        return Records(_check_rows(_numeric_array(_load_npz(body), "the .npz array"), schema.count), False)
    text = _decode_text(body, params.get("charset"))
    if content_type == "text/csv":
        return Records(decode_csv(text, schema), True)
    # SageMaker batch transform with SplitType=Line sends many JSON records, one per line, as
    # application/json: read those as JSON Lines so each line gets its own answer line.
    if content_type == "application/jsonlines" or (batch and "\n" in text.strip()):
        return Records(decode_jsonlines(text, schema), True)
    return Records(decode_json(text, schema), False)


def _decode_text(body: bytes, charset: str | None) -> str:
    codec = TEXT_CHARSETS.get((charset or "utf-8").strip().lower())
    if codec is None:
        raise RequestError(
            415,
            "unsupported_media_type",
            f"charset {charset!r} is not supported; send utf-8 (or us-ascii, iso-8859-1)",
        )
    try:
        return body.decode(codec)
    except UnicodeDecodeError as error:
        raise bad_request(f"body is not valid {charset or 'UTF-8'} (byte {error.start})") from None


# ---- CSV ---------------------------------------------------------------------------------------------


def decode_csv(text: str, schema: FeatureSchema) -> np.ndarray:
    """Feature rows, comma-separated, no label column, one row per line (blank lines skipped). The first
    line may be a header naming the training features, in any order; rows are then reordered to match."""
    rows = _parse_csv_fast(text, schema.count)  # the common case: numbers only, no header
    if rows is not None:
        return rows
    first, _, rest = text.lstrip("\r\n").partition("\n")
    if not first.strip():
        raise bad_request("empty CSV body: expected one row of features per line")
    if not _looks_like_header(first):
        return _parse_csv_carefully(text, schema.count, 1)
    order = _header_order(first, schema)
    if not rest.strip():
        raise bad_request("CSV body has a header row but no rows of features")
    rows = _parse_csv_fast(rest, schema.count)
    if rows is None:
        rows = _parse_csv_carefully(rest, schema.count, 2)
    return rows[:, order]


def _looks_like_header(line: str) -> bool:
    fields = [field.strip().strip('"').strip() for field in line.split(",")]
    return all(field and not _is_float(field) for field in fields)


def _header_order(line: str, schema: FeatureSchema) -> list[int]:
    """Column index in the body for each training feature, in training order."""
    names = [field.strip().strip('"').strip() for field in line.split(",")]
    shown = ", ".join(repr(name) for name in names[:5]) + (", ..." if len(names) > 5 else "")
    if not schema.names:
        raise bad_request(
            f"CSV line 1 looks like a header ({shown}), but this model was trained without feature names:"
            f" send rows of {schema.count} numbers without a header"
        )
    unknown = [name for name in names if name not in schema.names]
    missing = [name for name in schema.names if name not in names]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if unknown or missing or duplicated:
        problems = [
            f"{label}: {', '.join(repr(n) for n in items[:10])}"
            for label, items in (("unknown", unknown), ("missing", missing), ("repeated", duplicated))
            if items
        ]
        raise bad_request(
            f"CSV header does not match the model's features ({'; '.join(problems)});"
            f" expected the columns {', '.join(schema.names)}"
        )
    return [names.index(name) for name in schema.names]


def _parse_csv_fast(data: str, feature_count: int) -> np.ndarray | None:
    """Well-formed numeric CSV in one pass; None means "something is off, look carefully"."""
    try:
        if len(data) >= PYARROW_MIN_BYTES:
            table = pa_csv.read_csv(
                pa.py_buffer(data.encode("utf-8")),
                read_options=pa_csv.ReadOptions(autogenerate_column_names=True, use_threads=False),
                convert_options=pa_csv.ConvertOptions(
                    column_types={f"f{i}": pa.float64() for i in range(feature_count)}
                ),
            )
            if table.num_columns != feature_count:
                return None
            rows = np.column_stack([column.to_numpy() for column in table.columns])
        else:
            rows = np.array(
                [[float(field) for field in line.split(",")] for line in data.splitlines() if line.strip()],
                dtype=np.float64,
            )
    except (ValueError, pa.ArrowException):  # ragged rows, text, overflow: the careful parser names it
        return None
    if rows.ndim != 2 or rows.shape[0] == 0 or rows.shape[1] != feature_count:
        return None
    if not (np.abs(rows) <= FLOAT32_MAX).all():  # NaN, inf, overflow: the careful parser names it
        return None
    return rows


def _parse_csv_carefully(data: str, feature_count: int, first_line: int) -> np.ndarray:
    lines = [line for line in data.splitlines() if line.strip()]
    if not lines:
        raise bad_request("empty CSV body: expected one row of features per line")
    values: list[list[float]] = []
    for number, line in enumerate(lines, start=first_line):
        fields = line.split(",")
        if len(fields) != feature_count:
            raise bad_request(f"CSV line {number} has {len(fields)} values; each row needs {feature_count} features")
        row = []
        for column, field in enumerate(fields, start=1):
            if not _is_float(field):
                shown = field.strip()[:40]
                raise bad_request(f"CSV line {number}, column {column}: {shown!r} is not a number")
            row.append(float(field))
        values.append(row)
    return _check_rows(np.asarray(values, dtype=np.float64), feature_count, first_line)


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# ---- JSON and JSON Lines -----------------------------------------------------------------------------

JSON_SHAPES = (
    '{"instances": [[feature, ...], ...]} (or instances as objects keyed by feature name),'
    ' {"features": [feature, ...]}, or a list of rows'
)


def decode_json(text: str, schema: FeatureSchema) -> np.ndarray:
    """`{"instances": [...]}` (rows, or objects keyed by feature name), `{"features": [...]}` (one
    record), or a bare list (of rows, or one flat row)."""
    document = _load_json(text, "JSON body")
    if isinstance(document, dict) and "instances" in document:
        instances = document["instances"]
        if not isinstance(instances, list):
            raise bad_request(f'"instances" must be a list of records; expected {JSON_SHAPES}')
        if not instances:
            raise bad_request('no rows to predict: "instances" is empty')
        rows = [_record(instance, f"instance {n}", schema) for n, instance in enumerate(instances, 1)]
    elif isinstance(document, dict) and "features" in document:
        rows = [_record(document, "the record", schema)]
    elif isinstance(document, list):
        if not document:
            raise bad_request("no rows to predict: the list is empty")
        if all(not isinstance(item, list | dict) for item in document):
            rows = [_record(document, "the record", schema)]  # one flat row
        else:
            rows = [_record(item, f"instance {n}", schema) for n, item in enumerate(document, 1)]
    else:
        raise bad_request(f"JSON body must be {JSON_SHAPES}")
    return _check_rows(np.array(rows, dtype=np.float64), schema.count)


def decode_jsonlines(text: str, schema: FeatureSchema) -> np.ndarray:
    """One record per line: a list of numbers, `{"features": [...]}`, or an object keyed by feature name."""
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            what = f"JSON Lines line {number}"
            rows.append(_record(_load_json(line, what), what, schema))
    if not rows:
        raise bad_request("empty JSON Lines body: expected one JSON record per line")
    return _check_rows(np.array(rows, dtype=np.float64), schema.count)


def _load_json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        where = f"line {error.lineno} column {error.colno}"
        raise bad_request(f"{what}: invalid JSON at {where}: {error.msg}") from None
    except RecursionError:
        raise bad_request(f"{what}: JSON nested too deeply") from None


def _record(record: Any, what: str, schema: FeatureSchema) -> list[float]:
    """One record's features in training order."""
    if isinstance(record, dict) and set(record) == {"features"}:
        record = record["features"]
    elif isinstance(record, dict) and "features" in record and not schema.names:
        record = record["features"]
    if isinstance(record, list):
        if len(record) != schema.count:
            raise bad_request(f"{what} has {len(record)} values; each row needs {schema.count} features")
        return [_number(value, f"{what}, feature {i}", schema) for i, value in enumerate(record, 1)]
    if isinstance(record, dict):
        if not schema.names:
            raise bad_request(
                f"{what} is an object, but this model was trained without feature names:"
                f" send a list of {schema.count} numbers"
            )
        unknown = [str(key) for key in record if key not in schema.names]
        missing = [name for name in schema.names if name not in record]
        if unknown or missing:
            raise bad_request(
                f"{what} does not match the model's features"
                + (f"; unknown: {', '.join(repr(n) for n in unknown[:10])}" if unknown else "")
                + (f"; missing: {', '.join(repr(n) for n in missing[:10])}" if missing else "")
            )
        return [_number(record[name], f"{what}, feature {name!r}", schema) for name in schema.names]
    raise bad_request(f"{what} must be a list of {schema.count} numbers (or an object keyed by feature name)")


def _number(value: Any, what: str, schema: FeatureSchema) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        shown = json.dumps(value)[:40] if isinstance(value, str | None) else type(value).__name__
        raise bad_request(f"{what}: {shown} is not a number; each row needs {schema.count} numbers")
    try:
        return float(value)
    except OverflowError:
        raise bad_request(f"{what}: {str(value)[:20]}... is too large for a float") from None


# ---- NumPy -------------------------------------------------------------------------------------------


def _load_npy(body: bytes) -> np.ndarray:
    try:
        return np.lib.format.read_array(io.BytesIO(body), allow_pickle=False)
    except Exception as error:  # numpy raises several types for corrupt files; all mean "not a .npy"
        message = f"body is not a readable .npy array (allow_pickle is off): {error}"
        raise bad_request(message[:300]) from None


def _load_npz(body: bytes) -> np.ndarray:
    try:
        with zipfile.ZipFile(io.BytesIO(body)) as archive:
            members = {info.filename.removesuffix(".npy"): info for info in archive.infolist()}
            if sum(info.file_size for info in members.values()) > NPZ_MAX_UNCOMPRESSED_BYTES:
                raise bad_request(f".npz arrays are larger than {NPZ_MAX_UNCOMPRESSED_BYTES >> 20} MiB")
            name = next((n for n in NPZ_ARRAY_NAMES if n in members), None)
            if name is None and len(members) == 1:
                name = next(iter(members))
            if name is None:
                raise bad_request(
                    f".npz holds {', '.join(sorted(members)) or 'no arrays'}; send one array, or name it"
                    f" {' or '.join(NPZ_ARRAY_NAMES)}"
                )
            with archive.open(members[name]) as member:
                return np.lib.format.read_array(member, allow_pickle=False)
    except RequestError:
        raise
    except Exception as error:  # zipfile and numpy raise many types for corrupt input
        message = f"body is not a readable .npz archive (allow_pickle is off): {error}"
        raise bad_request(message[:300]) from None


def _numeric_array(array: np.ndarray, what: str) -> np.ndarray:
    if array.dtype.kind not in "iuf":
        raise bad_request(f"{what} has dtype {array.dtype}; expected integers or floats")
    if array.ndim == 1:
        array = array.reshape(1, -1)
    if array.ndim != 2:
        raise bad_request(f"{what} has shape {array.shape}; expected (rows, features) or (features,)")
    return array.astype(np.float64, copy=False)


# ---- shared checks -----------------------------------------------------------------------------------


def _check_rows(rows: np.ndarray, feature_count: int, first_row: int = 1) -> np.ndarray:
    if rows.ndim != 2 or rows.shape[0] == 0:
        raise bad_request("no rows to predict: the body holds no data")
    if rows.shape[1] != feature_count:
        raise bad_request(f"each row needs {feature_count} features, got {rows.shape[1]}")
    # The network computes in float32: larger magnitudes would silently become inf (and NaN scores).
    in_range = np.abs(rows) <= FLOAT32_MAX  # False for NaN and inf too
    if not in_range.all():
        row, column = (int(i) for i in np.argwhere(~in_range)[0])
        value = rows[row, column]
        problem = "is not a finite number" if not np.isfinite(value) else "is beyond the float32 range"
        raise bad_request(f"row {row + first_row}, column {column + 1}: {value} {problem}")
    return rows


# ---- responses ---------------------------------------------------------------------------------------


def _label_text(label: object) -> str:
    return repr(label) if isinstance(label, float) else str(label)


def _score(value: float) -> float:
    return round(float(value), 6)


def encode_csv(result: Result, output: str | None) -> bytes:
    """One line per record: the label (or the top-k labels), or with output=probabilities the class
    probabilities (or top-k `label,probability` pairs)."""
    if output == "probabilities" and result.top is not None:
        lines = [",".join(f"{_label_text(lbl)},{_score(p)!r}" for lbl, p in top) for top in result.top]
    elif output == "probabilities" and result.scores is not None:
        lines = [",".join(repr(_score(p)) for p in scores) for scores in result.scores]
    elif result.top is not None:
        lines = [",".join(_label_text(label) for label, _ in top) for top in result.top]
    else:
        lines = [_label_text(label) for label in result.labels]
    return ("\n".join(lines) + "\n").encode("utf-8")


def _json_records(result: Result, output: str | None) -> list[dict[str, Any]]:
    if result.scores is None:
        return [{"value": label} for label in result.labels]
    records: list[dict[str, Any]] = []
    for index, (label, scores) in enumerate(zip(result.labels, result.scores, strict=True)):
        record: dict[str, Any] = {}
        if output != "probabilities":
            record["label"] = label
        if output != "label":
            record["scores"] = [_score(p) for p in scores]
        if result.top is not None:
            record["top_k"] = [{"label": lbl, "score": _score(p)} for lbl, p in result.top[index]]
        records.append(record)
    return records


def encode_json(result: Result, output: str | None) -> bytes:
    return json.dumps({"predictions": _json_records(result, output)}).encode("utf-8")


def encode_jsonlines(result: Result, output: str | None) -> bytes:
    return "".join(json.dumps(record) + "\n" for record in _json_records(result, output)).encode("utf-8")


def encode_npy(result: Result, output: str | None) -> bytes:
    """Labels (rows,), top-k labels (rows, k), or with output=probabilities the scores (rows, classes)."""
    if output == "probabilities" and result.scores is not None:
        array = np.asarray(result.scores)
    elif result.top is not None:
        array = np.array([[label for label, _ in top] for top in result.top])
    else:
        array = np.array(result.labels)
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=False)
    return buffer.getvalue()


ENCODERS: dict[str, Callable[[Result, str | None], bytes]] = {
    "text/csv": encode_csv,
    "application/json": encode_json,
    "application/jsonlines": encode_jsonlines,
    "application/x-npy": encode_npy,
}


def encode_response(result: Result, response_type: str, output: str | None, batch_lines: bool) -> bytes:
    """`batch_lines`: a batch transform request of one record per line. The answer is then one line per
    record *without* a final newline: with AssembleWith=Line SageMaker appends one after each response,
    so the joined output file keeps exactly one line per input line."""
    if not batch_lines:
        return ENCODERS[response_type](result, output)
    encode = encode_jsonlines if response_type == "application/json" else ENCODERS[response_type]
    body = encode(result, output)
    return body.removesuffix(b"\n") if response_type != "application/x-npy" else body
