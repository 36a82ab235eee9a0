"""What the client asked for besides the features: the response type (Accept) and the output options
(X-Amzn-SageMaker-Custom-Attributes)."""

from __future__ import annotations

from dataclasses import dataclass

from werkzeug.datastructures import MIMEAccept
from werkzeug.http import parse_accept_header

from optml.serve.errors import RequestError, bad_request

RESPONSE_TYPES = ("text/csv", "application/json", "application/jsonlines", "application/x-npy")
CUSTOM_ATTRIBUTES_HEADER = "X-Amzn-SageMaker-Custom-Attributes"
CUSTOM_ATTRIBUTES_LIMIT = 1024  # SageMaker forwards at most 1024 visible ASCII characters
OUTPUTS = ("label", "probabilities")
FLAGS = {"true": True, "false": False}  # explain=true|false, as SageMaker's own attributes spell booleans


def choose_response_type(accept: str | None, default_accept: str | None, request_type: str) -> str:
    """The best supported type for `accept` (q-values, lists and wildcards honoured). Without a
    preference (no header, or only */*): the configured default, else the request's own type, else JSON."""
    preferences = parse_accept_header(accept or "", MIMEAccept)
    if not preferences or all(value == "*/*" for value, _ in preferences):
        for candidate in (default_accept, request_type):
            if candidate in RESPONSE_TYPES:
                return candidate
        return "application/json"
    # Among equally preferred types, the request's own type wins, then the configured default.
    ordered = sorted(RESPONSE_TYPES, key=lambda t: (t != request_type, t != default_accept, RESPONSE_TYPES.index(t)))
    best = preferences.best_match(ordered)
    if best is None:
        raise RequestError(
            406,
            "not_acceptable",
            f"Accept {accept!r} cannot be served; this model answers {', '.join(RESPONSE_TYPES)}",
        )
    return best


@dataclass(frozen=True)
class OutputOptions:
    """Per-request output choices from the custom attributes; the defaults give the plain prediction."""

    output: str | None = None  # "label" | "probabilities"; None: CSV shows labels, JSON both
    threshold: float | None = None  # binary classification: P(second class) >= threshold → second class
    top_k: int | None = None  # classification: the k most likely classes per record
    explain: bool = False  # each record's SHAP explanation (serve/explain.py)


def parse_custom_attributes(header: str | None) -> OutputOptions:
    """`key=value` pairs separated by `,` or `;`. Unknown keys and bare tokens (trace ids) are ignored;
    a known key with a bad value is a 400 naming it, and all bad values are reported at once."""
    if not header:
        return OutputOptions()
    if len(header) > CUSTOM_ATTRIBUTES_LIMIT:
        raise bad_request(f"{CUSTOM_ATTRIBUTES_HEADER} is {len(header)} characters; at most {CUSTOM_ATTRIBUTES_LIMIT}")
    pairs: dict[str, str] = {}
    for token in header.replace(";", ",").split(","):
        key, sep, value = token.partition("=")
        if sep:
            pairs[key.strip().lower()] = value.strip()
    problems: list[str] = []
    output = pairs.get("output")
    if output is not None and output not in OUTPUTS:
        problems.append(f"output={output!r} (expected one of {', '.join(OUTPUTS)})")
    threshold: float | None = None
    if "threshold" in pairs:
        threshold = _probability(pairs["threshold"])
        if threshold is None:
            problems.append(f"threshold={pairs['threshold']!r} (expected a number from 0 to 1)")
    top_k: int | None = None
    if "top_k" in pairs:
        text = pairs["top_k"]
        if text.isascii() and text.isdigit() and int(text) >= 1:
            top_k = int(text)
        else:
            problems.append(f"top_k={text!r} (expected a positive integer)")
    explain = FLAGS.get(pairs.get("explain", "false").lower())
    if explain is None:
        problems.append(f"explain={pairs['explain']!r} (expected true or false)")
    if problems:
        raise bad_request(f"invalid {CUSTOM_ATTRIBUTES_HEADER}: {'; '.join(problems)}")
    return OutputOptions(output=output, threshold=threshold, top_k=top_k, explain=bool(explain))


def _probability(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if 0.0 <= value <= 1.0 else None  # NaN fails both comparisons
