"""Request bodies → feature arrays, predictions → response bodies, for each supported content type."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import numpy as np

from container.artifact import Predictions


class RequestError(Exception):
    """A client mistake: answered with `status` and a JSON body naming what was wrong."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message


def bad_request(message: str) -> RequestError:
    return RequestError(400, "bad_request", message)


def _check_rows(rows: np.ndarray, feature_count: int) -> np.ndarray:
    if rows.ndim != 2 or rows.shape[0] == 0:
        raise bad_request("no rows to predict: the body holds no data")
    if rows.shape[1] != feature_count:
        raise bad_request(f"each row needs {feature_count} features, got {rows.shape[1]}")
    if not np.isfinite(rows).all():
        row, column = (int(i) for i in np.argwhere(~np.isfinite(rows))[0])
        raise bad_request(f"row {row + 1}, column {column + 1}: {rows[row, column]} is not a finite number")
    return rows


def decode_csv(text: str, feature_count: int) -> np.ndarray:
    """Feature rows, comma-separated, no label column, one row per line (blank lines skipped)."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise bad_request("empty CSV body: expected one row of features per line")
    values: list[list[float]] = []
    for number, line in enumerate(lines, start=1):
        fields = line.split(",")
        if len(fields) != feature_count:
            raise bad_request(f"CSV line {number} has {len(fields)} values; each row needs {feature_count} features")
        try:
            values.append([float(field) for field in fields])
        except ValueError:
            bad = next(f for f in fields if not _is_float(f))
            raise bad_request(f"CSV line {number}: {bad.strip()!r} is not a number") from None
    return _check_rows(np.asarray(values, dtype=np.float64), feature_count)


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def decode_json(text: str, feature_count: int) -> np.ndarray:
    """`{"instances": [[...], ...]}` or a bare list of rows."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise bad_request(f"invalid JSON at line {error.lineno} column {error.colno}: {error.msg}") from None
    rows: Any = document.get("instances") if isinstance(document, dict) else document
    if not isinstance(rows, list):
        raise bad_request('JSON body must be {"instances": [[feature, ...], ...]} or a list of rows')
    if not rows:
        raise bad_request('no rows to predict: "instances" is empty')
    if not isinstance(rows[0], list):
        rows = [rows]  # a single flat row
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, list) or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in row):
            raise bad_request(f"instance {number} must be a list of {feature_count} numbers")
        if len(row) != feature_count:
            raise bad_request(f"instance {number} has {len(row)} values; each row needs {feature_count} features")
    return _check_rows(np.asarray(rows, dtype=np.float64), feature_count)


DECODERS: dict[str, Callable[[str, int], np.ndarray]] = {
    "text/csv": decode_csv,
    "application/json": decode_json,
}


def decode_request(body: bytes, content_type: str, feature_count: int) -> np.ndarray:
    decoder = DECODERS.get(content_type)
    if decoder is None:
        raise RequestError(
            415,
            "unsupported_media_type",
            f"Content-Type {content_type or '(none)'!r} is not supported; send one of {', '.join(DECODERS)}",
        )
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise bad_request(f"body is not valid UTF-8 (byte {error.start})") from None
    return decoder(text, feature_count)


def _label_text(label: object) -> str:
    return repr(label) if isinstance(label, float) else str(label)


def encode_csv(predictions: Predictions) -> str:
    """One line per input row; the first (here the only) field is the predicted label or value."""
    out = io.StringIO()
    for label in predictions.labels:
        out.write(_label_text(label))
        out.write("\n")
    return out.getvalue()


def encode_json(predictions: Predictions) -> str:
    if predictions.scores is None:
        records: list[dict[str, Any]] = [{"value": label} for label in predictions.labels]
    else:
        records = [
            {"label": label, "scores": [round(float(s), 6) for s in scores]}
            for label, scores in zip(predictions.labels, predictions.scores, strict=True)
        ]
    return json.dumps({"predictions": records})


ENCODERS: dict[str, Callable[[Predictions], str]] = {
    "application/json": encode_json,
    "text/csv": encode_csv,
}
