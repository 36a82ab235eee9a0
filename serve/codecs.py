"""Request bodies → feature rows, and results → response bodies, for each supported content type.

Decoders take the fast road for well-formed input (one C-level parse) and, when it fails, re-read the
body carefully to name the first bad line, field or value: errors cost time only for bad requests.
"""

from __future__ import annotations

import functools
import io
import json
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from pyarrow import csv as pa_csv

from optml.container.artifact import ModelArtifact
from optml.container.features import FeatureEncoder, FeatureError, is_number
from optml.serve.errors import RequestError, bad_request
from optml.serve.outputs import Result

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
_ARROW_READ = pa_csv.ReadOptions(autogenerate_column_names=True, use_threads=False)
_ARROW_PARSE = pa_csv.ParseOptions(quote_char=False, double_quote=False, escape_char=False)
NPZ_MAX_UNCOMPRESSED_BYTES = 256 * 1024 * 1024  # a small .npz must not inflate into all of memory


# Raw rows as decoded: numbers, or (for models with categorical columns) values of any JSON scalar type.
RawRows = np.ndarray | list[list[Any]]


@dataclass(frozen=True)
class FeatureSchema:
    """What a client sends per record, and how it becomes the network's input.

    `count` values per record (raw columns, before any one-hot encoding), named `names` when training
    saw names; `input_shape` when one record is an image or a sequence rather than a flat row; `encoder`
    when training fitted one (categorical columns arrive as text and are one-hot encoded here)."""

    count: int
    names: tuple[str, ...] = ()
    input_shape: tuple[int, ...] = ()
    encoder: FeatureEncoder | None = None

    @classmethod
    def for_model(cls, model: ModelArtifact) -> FeatureSchema:
        metadata = model.metadata
        encoder_json = getattr(metadata, "encoder", None)  # older models have none
        if encoder_json:
            encoder = FeatureEncoder.from_json(encoder_json)
            # Without a header in training the encoder's columns are named "column 2", ...: not names
            # a client would send, so such a model takes no header (feature_names is empty then).
            column_names = tuple(encoder.input_names) if metadata.feature_names else ()
            return cls(len(encoder.input_names), column_names, (), encoder)
        names = tuple(model.feature_names)
        usable = len(names) == model.feature_count and len(set(names)) == len(names)  # else ignore them
        shape = tuple(getattr(metadata.network, "input_shape", ()) or ())
        return cls(model.feature_count, names if usable else (), shape if len(shape) > 1 else ())

    @property
    def takes_text(self) -> bool:
        return self.encoder is not None and bool(self.encoder.categorical)

    def encode(self, rows: RawRows) -> np.ndarray:
        """The network's input (rows, feature_count) from decoded rows."""
        if self.encoder is None:
            assert isinstance(rows, np.ndarray)
            return rows
        try:
            with np.errstate(over="ignore", invalid="ignore"):  # float32 overflow is checked just below
                encoded = self.encoder.transform(rows)
        except FeatureError as error:
            raise bad_request(str(error)) from None
        if not np.isfinite(encoded).all():
            row = int(np.argwhere(~np.isfinite(encoded))[0][0])
            raise bad_request(f"row {row + 1}: a value is beyond the float32 range the model computes in")
        return encoded


@dataclass(frozen=True)
class Records:
    features: np.ndarray  # (rows, feature count): the network's input, finite
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
        return Records(schema.encode(_array_rows(load_npy(body), "the .npy array", schema)), False)
    if content_type == "application/x-npz":
        return Records(schema.encode(_array_rows(_load_npz(body), "the .npz array", schema)), False)
    text = decode_text(body, params.get("charset"))
    if content_type == "text/csv":
        return Records(schema.encode(decode_csv(text, schema)), True)
    # SageMaker batch transform with SplitType=Line sends many JSON records, one per line, as
    # application/json: read those as JSON Lines so each line gets its own answer line.
    if content_type == "application/jsonlines" or (batch and _several_json_documents(text)):
        return Records(schema.encode(decode_jsonlines(text, schema)), True)
    return Records(schema.encode(decode_json(text, schema)), False)


def _several_json_documents(text: str) -> bool:
    """True for JSON Lines; False for one document, even a pretty-printed one spanning many lines."""
    try:
        json.loads(text)
    except json.JSONDecodeError as error:
        return error.msg == "Extra data"  # raised right after the first document: cheap
    except RecursionError:
        return False
    return False


def decode_text(body: bytes, charset: str | None) -> str:
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


def decode_csv(text: str, schema: FeatureSchema) -> RawRows:
    """Feature rows, comma-separated, no label column, one row per line (blank lines skipped). The first
    line may be a header naming the training features, in any order; rows are then reordered to match."""
    rows = _parse_csv_fast(text, schema.count)  # the common case: numbers only, no header
    if rows is not None:
        return rows
    first, _, rest = text.lstrip("\r\n").partition("\n")
    if not first.strip():
        raise bad_request("empty CSV body: expected one row of features per line")
    if not _looks_like_header(first, schema):
        return _parse_csv_carefully(text, schema, 1)
    order = _header_order(first, schema)
    if not rest.strip():
        raise bad_request("CSV body has a header row but no rows of features")
    rows = _parse_csv_fast(rest, schema.count)
    raw = rows if rows is not None else _parse_csv_carefully(rest, schema, 2)
    return raw[:, order] if isinstance(raw, np.ndarray) else [[row[i] for i in order] for row in raw]


def warm_up_csv(schema: FeatureSchema) -> None:
    """Parse a large CSV body once, as a request would. pyarrow imports pandas the first time it converts a
    column (~0.3 s): done in gunicorn's master before the fork, every worker shares the loaded modules
    instead of each worker's first large request paying for them."""
    if not schema.takes_text:
        row = ",".join(["0"] * schema.count) + "\n"
        decode_csv(row * (PYARROW_MIN_BYTES // len(row) + 1), schema)


def _looks_like_header(line: str, schema: FeatureSchema) -> bool:
    """All fields are text — or, for a model with text columns, the fields are exactly its column names."""
    fields = [field.strip().strip('"').strip() for field in line.split(",")]
    if schema.takes_text:
        return sorted(fields) == sorted(schema.names)
    return all(field and not is_number(field) for field in fields)


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


@functools.cache
def _arrow_convert_options(feature_count: int) -> pa_csv.ConvertOptions:
    """Every column a float64, no null markers; built once per feature count, not per request."""
    return pa_csv.ConvertOptions(
        column_types={f"f{i}": pa.float64() for i in range(feature_count)}, null_values=[], strings_can_be_null=False
    )


def _parse_csv_fast(data: str, feature_count: int) -> np.ndarray | None:
    """Well-formed numeric CSV in one pass; None means "something is off, look carefully"."""
    try:
        if len(data) >= PYARROW_MIN_BYTES:
            table = pa_csv.read_csv(
                pa.py_buffer(data.encode("utf-8")),
                read_options=_ARROW_READ,
                # Plain numbers only: no quoting and no null markers lets arrow take its fastest path
                # (~10% on 1000 rows); a quoted or empty field fails here and the careful parser names it.
                parse_options=_ARROW_PARSE,
                convert_options=_arrow_convert_options(feature_count),
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


def _parse_csv_carefully(data: str, schema: FeatureSchema, first_line: int) -> RawRows:
    lines = [line for line in data.splitlines() if line.strip()]
    if not lines:
        raise bad_request("empty CSV body: expected one row of features per line")
    count = schema.count
    text_rows: list[list[Any]] = []
    values: list[list[float]] = []
    for number, line in enumerate(lines, start=first_line):
        fields = line.split(",")
        if len(fields) != count:
            raise bad_request(f"CSV line {number} has {len(fields)} values; each row needs {count} features")
        if schema.takes_text:  # the encoder converts and checks each column by its kind
            text_rows.append([field.strip() or None for field in fields])
            continue
        row = []
        for column, field in enumerate(fields, start=1):
            if not is_number(field):
                shown = field.strip()[:40]
                raise bad_request(f"CSV line {number}, column {column}: {shown!r} is not a number")
            row.append(float(field))
        values.append(row)
    if schema.takes_text:
        return text_rows
    return _check_rows(np.asarray(values, dtype=np.float64), count, first_line)


# ---- JSON and JSON Lines -----------------------------------------------------------------------------

JSON_SHAPES = (
    '{"instances": [[feature, ...], ...]} (or instances as objects keyed by feature name),'
    ' {"features": [feature, ...]}, or a list of rows'
)


def decode_json(text: str, schema: FeatureSchema) -> RawRows:
    """`{"instances": [...]}` (rows, or objects keyed by feature name), `{"features": [...]}` (one
    record), or a bare list (of rows, or one flat row)."""
    document = load_json(text, "JSON body")
    if isinstance(document, dict) and "instances" in document:
        instances = document["instances"]
        if not isinstance(instances, list):
            raise bad_request(f'"instances" must be a list of records; expected {JSON_SHAPES}')
        if not instances:
            raise bad_request('no rows to predict: "instances" is empty')
        fast = _numeric_rows_fast(instances, text, schema)
        if fast is not None:
            return fast
        rows = [_record(instance, f"instance {n}", schema) for n, instance in enumerate(instances, 1)]
    elif isinstance(document, dict) and "features" in document:
        rows = [_record(document, "the record", schema)]
    elif isinstance(document, list):
        if not document:
            raise bad_request("no rows to predict: the list is empty")
        if all(not isinstance(item, list | dict) for item in document):
            rows = [_record(document, "the record", schema)]  # one flat row
        else:
            fast = _numeric_rows_fast(document, text, schema)
            if fast is not None:
                return fast
            rows = [_record(item, f"instance {n}", schema) for n, item in enumerate(document, 1)]
    else:
        raise bad_request(f"JSON body must be {JSON_SHAPES}")
    return _numeric_rows(rows, schema)


def decode_jsonlines(text: str, schema: FeatureSchema) -> RawRows:
    """One record per line: a list of numbers, `{"features": [...]}`, or an object keyed by feature name."""
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            what = f"JSON Lines line {number}"
            rows.append(_record(load_json(line, what), what, schema))
    if not rows:
        raise bad_request("empty JSON Lines body: expected one JSON record per line")
    return _numeric_rows(rows, schema)


def _numeric_rows_fast(records: list[Any], text: str, schema: FeatureSchema) -> np.ndarray | None:
    """Rows of plain numbers in one numpy conversion (a 1000-row body: 13 instead of 28 ms, measured by the
    soak benchmark); None when anything needs the per-value checks and their messages. numpy would take
    true/false as 1/0 — the body is searched for them first — and strings or nulls turn the array's dtype
    into text or object, which sends the body the careful way."""
    if schema.takes_text or "true" in text or "false" in text:
        return None
    try:
        rows = np.array(records)
    except (ValueError, OverflowError):  # ragged rows, integers beyond int64
        return None
    if rows.dtype.kind not in "iuf" or rows.ndim != 2 or rows.shape[1] != schema.count:
        return None
    return _check_rows(rows.astype(np.float64, copy=False), schema.count)


def _numeric_rows(rows: list[list[Any]], schema: FeatureSchema) -> RawRows:
    return rows if schema.takes_text else _check_rows(np.array(rows, dtype=np.float64), schema.count)


def load_json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        where = f"line {error.lineno} column {error.colno}"
        raise bad_request(f"{what}: invalid JSON at {where}: {error.msg}") from None
    except RecursionError:
        raise bad_request(f"{what}: JSON nested too deeply") from None


def _record(record: Any, what: str, schema: FeatureSchema) -> list[Any]:
    """One record's features in training order (numbers; any JSON scalar for a model with text columns)."""
    if isinstance(record, dict) and set(record) == {"features"}:
        record = record["features"]
    elif isinstance(record, dict) and "features" in record and not schema.names:
        record = record["features"]
    if isinstance(record, list) and schema.input_shape and record and isinstance(record[0], list):
        return _shaped_record(record, what, schema)
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


def _shaped_record(record: list[Any], what: str, schema: FeatureSchema) -> list[Any]:
    """An image or sequence given as nested lists, shaped like one training record."""
    try:
        array = np.array(record, dtype=np.float64)
    except (ValueError, TypeError, OverflowError):
        raise bad_request(f"{what} must be nested lists of numbers shaped {schema.input_shape}") from None
    if array.size != schema.count:
        raise bad_request(f"{what} has shape {array.shape}; one record is shaped {schema.input_shape}")
    return array.ravel().tolist()


def _number(value: Any, what: str, schema: FeatureSchema) -> Any:
    if schema.takes_text:  # text columns: the encoder checks each value against its column's kind
        if value is not None and not isinstance(value, str | int | float | bool):
            raise bad_request(f"{what}: expected a number or a text value, got a {type(value).__name__}")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        shown = json.dumps(value)[:40] if isinstance(value, str | None) else type(value).__name__
        raise bad_request(f"{what}: {shown} is not a number; each row needs {schema.count} numbers")
    try:
        return float(value)
    except OverflowError:
        raise bad_request(f"{what}: {str(value)[:20]}... is too large for a float") from None


# ---- NumPy -------------------------------------------------------------------------------------------


def load_npy(body: bytes) -> np.ndarray:
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


def _array_rows(array: np.ndarray, what: str, schema: FeatureSchema) -> np.ndarray:
    """(rows, count) from an array of records — flat rows, or images/sequences shaped like a training
    record — or from a single record."""
    if array.dtype.kind not in "iuf":
        raise bad_request(f"{what} has dtype {array.dtype}; expected integers or floats")
    record = schema.input_shape or (schema.count,)
    shaped = bool(schema.input_shape)
    if (array.ndim == 2 or (shaped and array.ndim > 2)) and int(np.prod(array.shape[1:])) == schema.count:
        rows = array.reshape(array.shape[0], schema.count)
    elif (array.ndim == 1 or shaped) and array.size == schema.count:
        rows = array.reshape(1, schema.count)  # one record
    else:
        expected = ", ".join(map(str, record))
        raise bad_request(f"{what} has shape {array.shape}; expected (rows, {expected}) or one record ({expected})")
    return _check_rows(rows.astype(np.float64, copy=False), schema.count)


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


def _score_text(value: float) -> str:
    """A probability with 9 significant digits: every float32 reads back exactly, 3e-9 stays 3e-09 (a
    ranking or a log-loss computed from the answer needs the small ones) and 1 - 6e-8 stays below 1."""
    return f"{value:.9g}"


def _score(value: float) -> float:
    return float(_score_text(value))


def encode_csv(result: Result, output: str | None) -> bytes:
    """One line per record: the label (or the top-k labels), or with output=probabilities the class
    probabilities (or top-k `label,probability` pairs); with explain=true then the base value and one
    attribution per column, in the model's column order."""
    if output == "probabilities" and result.top is not None:
        lines = [",".join(f"{lbl},{_score_text(p)}" for lbl, p in top) for top in result.top]
    elif output == "probabilities" and result.scores is not None:
        lines = [",".join(map(_score_text, scores)) for scores in result.scores.tolist()]
    elif result.top is not None:
        lines = [",".join(str(label) for label, _ in top) for top in result.top]
    else:
        lines = list(map(str, result.labels))  # str(float) is its shortest round-trip repr
    if result.explanations is not None:
        explained = result.explanations
        lines = [
            ",".join([line, _score_text(base), *map(_score_text, values)])
            for line, base, values in zip(lines, explained.base_values.tolist(), explained.values.tolist(), strict=True)
        ]
    return ("\n".join(lines) + "\n").encode("utf-8")


def _json_records(result: Result, output: str | None) -> list[dict[str, Any]]:
    records = _prediction_records(result, output)
    if result.explanations is not None:
        for record, explanation in zip(records, result.explanations.as_dicts(), strict=True):
            record["explanation"] = explanation
    return records


def _prediction_records(result: Result, output: str | None) -> list[dict[str, Any]]:
    if result.scores is None:
        return [{"value": label} for label in result.labels]
    records: list[dict[str, Any]] = []
    for index, (label, scores) in enumerate(zip(result.labels, result.scores.tolist(), strict=True)):
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
