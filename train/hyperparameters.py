"""Every hyperparameter the algorithm accepts: its type, default and what a valid value looks like.

The values arrive as strings (SageMaker's hyperparameters.json). `parse_hyperparameters` checks all of
them and reports every problem at once, each naming the key, the value and what was expected.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from container.artifact import TASKS
from container.errors import UserError


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise ValueError
    return value


def _layer_sizes(text: str) -> tuple[int, ...]:
    stripped = text.strip().strip("[]()")
    if not stripped:
        return ()
    return tuple(_positive_int(part) for part in stripped.split(","))


def _task(text: str) -> str | None:
    value = text.strip().lower()
    if value in ("", "auto"):
        return None
    if value not in TASKS:
        raise ValueError
    return value


def _hp(default: Any, parse: Callable[[str], Any], expected: str, help: str) -> Any:
    return field(default=default, metadata={"parse": parse, "expected": expected, "help": help})


@dataclass(frozen=True)
class Hyperparameters:
    task: str | None = _hp(
        None, _task, f"one of auto, {', '.join(TASKS)}", "what to predict; inferred from the labels when auto"
    )
    epochs: int = _hp(20, _positive_int, "a positive integer", "passes over the training data")
    batch_size: int = _hp(64, _positive_int, "a positive integer", "rows per mini-batch")
    learning_rate: float = _hp(1e-3, _positive_float, "a positive number such as 0.001", "Adam step size")
    hidden_units: tuple[int, ...] = _hp(
        (64, 32), _layer_sizes, 'comma-separated positive integers such as "64,32"', "MLP hidden layer widths"
    )
    seed: int = _hp(42, _non_negative_int, "a non-negative integer", "random seed for weights and shuffling")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["hidden_units"] = list(self.hidden_units)
        return data


def describe() -> list[dict[str, str]]:
    """Name, default, expected values and meaning of each hyperparameter (for docs and --help)."""
    rows = []
    for spec in fields(Hyperparameters):
        default = spec.default if spec.default is not MISSING else ""
        if isinstance(default, tuple):
            default = ",".join(str(v) for v in default)
        rows.append(
            {
                "name": spec.name,
                "default": "auto" if default is None else str(default),
                "expected": spec.metadata["expected"],
                "help": spec.metadata["help"],
            }
        )
    return rows


def parse_hyperparameters(values: Mapping[str, str]) -> Hyperparameters:
    known = {spec.name: spec for spec in fields(Hyperparameters)}
    parsed: dict[str, Any] = {}
    problems: list[str] = []
    for key, text in values.items():
        spec = known.get(key)
        if spec is None:
            problems.append(f"unknown hyperparameter {key!r} (known: {', '.join(sorted(known))})")
            continue
        try:
            parsed[key] = spec.metadata["parse"](text)
        except ValueError:
            problems.append(f"{key}={text!r} is invalid: expected {spec.metadata['expected']}")
    if problems:
        raise UserError("Invalid hyperparameters: " + "; ".join(problems))
    return Hyperparameters(**parsed)
