"""Training end to end in-process: model files, learned quality, reproducibility and the failure file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from optml.container.artifact import load_model
from optml.container.paths import Paths
from optml.train.main import main, run
from tests.conftest import make_classification, make_opt_ml, make_regression


def test_binary_job_writes_a_model_serving_can_load(binary_job: Path, capsys: pytest.CaptureFixture[str]) -> None:
    final = run(Paths(root=binary_job))
    assert final["validation:accuracy"] >= 0.9
    assert final["validation:auc"] >= 0.95

    metric_lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch=")]
    assert len(metric_lines) == 15
    assert metric_lines[-1].startswith("epoch=15 train:loss=")
    assert " validation:f1=" in metric_lines[-1]

    model = load_model(binary_job / "model")
    assert model.task == "binary_classification"
    assert model.metadata.classes == [0, 1]
    assert model.metadata.hyperparameters["hidden_units"] == [16]
    features = make_classification(80, 4, 2, seed=2)
    predictions = model.predict(features[:, 1:])
    accuracy = np.mean(np.asarray(predictions.labels) == features[:, 0])
    assert accuracy == pytest.approx(final["validation:accuracy"], abs=1e-9)
    assert predictions.scores is not None and np.allclose(predictions.scores.sum(axis=1), 1.0)

    evaluation = json.loads((binary_job / "output" / "data" / "evaluation.json").read_text())
    assert {name: channel["rows"] for name, channel in evaluation["channels"].items()} == {
        "train": 240,
        "validation": 80,
    }
    assert evaluation["channels"]["validation"]["metrics"]["accuracy"] == pytest.approx(final["validation:accuracy"])


def test_multiclass_labels_are_inferred_and_mapped_back(tmp_path: Path) -> None:
    train = make_classification(300, 3, 3, seed=3)
    train[:, 0] = train[:, 0] * 10 + 5  # original labels 5, 15, 25
    validation = make_classification(90, 3, 3, seed=4)
    validation[:, 0] = validation[:, 0] * 10 + 5
    root = make_opt_ml(tmp_path, train, validation, {"epochs": "30", "hidden_units": "16", "learning_rate": "0.01"})
    final = run(Paths(root=root))
    assert final["validation:accuracy"] >= 0.8
    model = load_model(root / "model")
    assert model.task == "multiclass_classification"
    assert model.metadata.classes == [5, 15, 25]
    assert set(model.predict(validation[:, 1:]).labels) <= {5, 15, 25}


def test_regression_predictions_are_in_original_units(tmp_path: Path) -> None:
    train, validation = make_regression(400, 3, seed=5), make_regression(100, 3, seed=6)
    root = make_opt_ml(tmp_path, train, validation, {"epochs": "60", "hidden_units": "32", "learning_rate": "0.01"})
    final = run(Paths(root=root))
    assert final["validation:r2"] >= 0.95
    model = load_model(root / "model")
    assert model.task == "regression"
    predicted = np.asarray(model.predict(validation[:, 1:]).labels)
    rmse = float(np.sqrt(np.mean((predicted - validation[:, 0]) ** 2)))
    assert rmse == pytest.approx(final["validation:rmse"], rel=1e-4)


def test_same_seed_gives_bit_identical_weights(tmp_path: Path) -> None:
    data = make_classification(120, 4, 2, seed=7)
    hyperparameters = {"epochs": "3", "hidden_units": "8", "seed": "11"}
    weights = []
    for name in ("a", "b", "c"):
        root = make_opt_ml(tmp_path / name, data, None, dict(hyperparameters, seed="12" if name == "c" else "11"))
        run(Paths(root=root))
        weights.append(load_file(str(root / "model" / "model.safetensors")))
    for key in weights[0]:
        np.testing.assert_array_equal(weights[0][key], weights[1][key])
    assert any(not np.array_equal(weights[0][k], weights[2][k]) for k in weights[0])


def test_explicit_task_must_fit_the_labels(tmp_path: Path) -> None:
    root = make_opt_ml(tmp_path, make_classification(60, 2, 3), None, {"task": "binary_classification"})
    assert main_with_root(root) == 1
    assert (root / "output" / "failure").read_text() == (
        "task binary_classification needs exactly 2 distinct labels in channel 'train', found 3: [0, 1, 2]"
    )


def test_validation_label_unknown_to_training_is_named(tmp_path: Path) -> None:
    validation = make_classification(20, 2, 2)
    validation[4, 0] = 7
    root = make_opt_ml(tmp_path, make_classification(60, 2, 2), validation, {"epochs": "1"})
    assert main_with_root(root) == 1
    assert (
        "channel 'validation' row 5: label 7 never occurs in channel 'train'"
        in (root / "output" / "failure").read_text()
    )


def test_feature_count_must_match_between_channels(tmp_path: Path) -> None:
    root = make_opt_ml(tmp_path, make_classification(60, 3, 2), make_classification(20, 2, 2), {"epochs": "1"})
    assert main_with_root(root) == 1
    assert (root / "output" / "failure").read_text() == (
        f"{root}/input/data/validation/part-0.csv has 2 features but the model's training data has 3;"
        " every file needs the same columns in the same order"
    )


def test_bad_hyperparameters_fail_before_reading_data(tmp_path: Path) -> None:
    root = make_opt_ml(tmp_path, None, None, {"epochs": "0", "optimiser": "adam"})
    assert main_with_root(root) == 1
    reason = (root / "output" / "failure").read_text()
    assert reason.startswith("Invalid hyperparameters: ")
    assert "epochs='0' is invalid: expected a positive integer" in reason
    assert "unknown hyperparameter 'optimiser' (did you mean optimizer?)" in reason
    assert not any((root / "model").iterdir())


def test_missing_train_channel_lists_the_channels_present(tmp_path: Path) -> None:
    root = make_opt_ml(tmp_path, None, make_classification(20, 2, 2), {"epochs": "1"})
    assert main_with_root(root) == 1
    assert (root / "output" / "failure").read_text().startswith("required channel 'train' is missing: no directory")
    assert "(channels present: validation)" in (root / "output" / "failure").read_text()


def test_internal_errors_write_a_concise_reason_and_keep_the_traceback_in_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_opt_ml(tmp_path, make_classification(60, 2, 2), None, {"epochs": "1"})

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("optml.train.main.save_model", broken)
    assert main_with_root(root) == 2
    assert (root / "output" / "failure").read_text() == "Internal error: RuntimeError: disk on fire"
    assert "Traceback (most recent call last)" in capsys.readouterr().out


def main_with_root(root: Path) -> int:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OPTML_ROOT", str(root))
        return main([])


def diabetes_job(root: Path, hyperparameters: dict[str, str]) -> Path:
    """scikit-learn's diabetes table (353 training rows): the small data a first run overfits."""
    from sklearn.datasets import load_diabetes
    from sklearn.model_selection import train_test_split

    features, target = load_diabetes(return_X_y=True)
    x_train, x_validation, y_train, y_validation = train_test_split(features, target, test_size=0.2, random_state=0)
    first_run = {"epochs": "100", "learning_rate": "0.01", "hidden_units": "32"}
    return make_opt_ml(
        root,
        np.column_stack([y_train, x_train]),
        np.column_stack([y_validation, x_validation]),
        first_run | hyperparameters,
    )


def test_early_stopping_is_on_by_default_with_a_validation_channel(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The first run a user would try: off, validation R² is -0.02 (Ridge gets 0.34); auto restores the
    epoch with the best validation loss, and logs its metrics last, for the tuner."""
    overfit = run(Paths(root=diabetes_job(tmp_path / "off", {"early_stopping_patience": "0"})))
    assert overfit["validation:r2"] < 0.05
    capsys.readouterr()

    root = diabetes_job(tmp_path / "auto", {})
    final = run(Paths(root=root))
    assert final["validation:r2"] > 0.3
    lines = [line for line in capsys.readouterr().out.splitlines() if "epoch=" in line]
    assert len(lines) < 100  # stopped early
    best = int(lines[-1].split()[1].removeprefix("epoch="))
    assert lines[-1] == "restored " + next(line for line in lines if line.startswith(f"epoch={best} "))
    assert load_model(root / "model").metadata.hyperparameters["early_stopping_patience"] == 5


def test_early_stopping_auto_is_off_without_a_validation_channel(tmp_path: Path) -> None:
    root = make_opt_ml(tmp_path, make_classification(120, 4, 2), None, {"epochs": "3"})
    run(Paths(root=root))
    assert load_model(root / "model").metadata.hyperparameters["early_stopping_patience"] == 0
    assert len(json.loads((root / "output" / "data" / "evaluation.json").read_text())["history"]) == 3


@pytest.mark.parametrize(
    ("hyperparameters", "message"),
    [
        (
            {"early_stopping_metric": "validation:acc"},  # a typo: auto early stopping would watch it
            "early_stopping_metric='validation:acc' is not a metric a binary_classification job logs; use one of"
            " validation:loss, validation:accuracy, validation:precision, validation:recall, validation:f1,"
            " validation:f_beta, validation:specificity, validation:auc, validation:log_loss",
        ),
        (
            {"task": "regression", "lr_scheduler": "plateau", "early_stopping_metric": "validation:auc"},
            "early_stopping_metric='validation:auc' is not a metric a regression job logs; use one of"
            " validation:loss, validation:mse, validation:rmse, validation:mae, validation:r2",
        ),
    ],
)
def test_a_watched_metric_the_job_does_not_log_fails_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hyperparameters: dict[str, str], message: str
) -> None:
    """It failed with an internal KeyError after the first epoch."""
    data = make_classification(60, 3, 2)
    root = make_opt_ml(tmp_path, data, data, {"epochs": "2"} | hyperparameters)
    monkeypatch.setenv("OPTML_ROOT", str(root))
    assert main([]) == 1
    assert (root / "output" / "failure").read_text() == message
