from __future__ import annotations

import pytest

from optml.container.errors import UserError
from optml.train.hyperparameters import Hyperparameters, describe, parse_hyperparameters


def test_defaults_when_nothing_is_given() -> None:
    assert parse_hyperparameters({}) == Hyperparameters()


def test_string_values_are_typed() -> None:
    parsed = parse_hyperparameters(
        {
            "epochs": "3",
            "batch_size": "16",
            "learning_rate": "0.01",
            "hidden_units": "64, 32",
            "seed": "0",
            "task": "Regression",
        }
    )
    assert parsed == Hyperparameters(
        task="regression", epochs=3, batch_size=16, learning_rate=0.01, hidden_units=(64, 32), seed=0
    )
    assert parse_hyperparameters({"task": "auto"}).task is None
    assert parse_hyperparameters({"hidden_units": "[8,4]"}).hidden_units == (8, 4)


def test_early_stopping_patience_is_auto_a_number_or_off() -> None:
    for text, value, with_validation, without in (("auto", None, 5, 0), ("3", 3, 3, 3), ("0", 0, 0, 0)):
        hp = parse_hyperparameters({"early_stopping_patience": text})
        assert hp.early_stopping_patience == value
        assert (hp.patience(has_validation=True), hp.patience(has_validation=False)) == (with_validation, without)
    with pytest.raises(UserError, match="early_stopping_patience='-1' is invalid: expected auto or an integer ≥ 0"):
        parse_hyperparameters({"early_stopping_patience": "-1"})


def test_every_problem_is_reported_at_once_naming_key_value_and_expectation() -> None:
    with pytest.raises(UserError) as raised:
        parse_hyperparameters(
            {
                "epochs": "ten",
                "learning_rate": "-1",
                "hidden_units": "64,x",
                "task": "clustering",
                "lr": "0.1",
                "dropuot": "0.2",
            }
        )
    message = str(raised.value)
    assert message.startswith("Invalid hyperparameters: ")
    assert "epochs='ten' is invalid: expected a positive integer" in message
    assert "learning_rate='-1' is invalid: expected a positive number" in message
    assert "hidden_units='64,x' is invalid" in message
    assert "task='clustering' is invalid: expected one of auto, binary_classification" in message
    assert "unknown hyperparameter 'lr' (the README lists every hyperparameter)" in message
    assert "unknown hyperparameter 'dropuot' (did you mean dropout?)" in message


def test_describe_lists_every_hyperparameter_with_default() -> None:
    rows = {row["name"]: row for row in describe()}
    assert rows["hidden_units"]["default"] == "64,32"
    assert rows["task"]["default"] == "auto"
    assert rows["early_stopping_patience"]["default"] == "auto"
    assert set(rows) == set(Hyperparameters.__dataclass_fields__)


def test_readme_hyperparameter_tables_are_generated_from_the_code() -> None:
    from tools.hyperparameter_table import README, updated

    text = README.read_text()
    assert updated(text) == text, "README.md is out of date: run python -m tools.hyperparameter_table"
    for row in describe():
        assert f"| `{row['name']}` |" in text
