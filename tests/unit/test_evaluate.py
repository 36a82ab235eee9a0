"""The Processing job `evaluate` in-process, on hand-made /opt/ml trees: a model trained here scores a test
set exactly as the training job scored the same rows, in evaluation.json and model_quality.json; every
input it cannot use fails with exit code 1 and the reason in /opt/ml/output/message."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn import metrics as reference

from optml.container.artifact import load_model
from optml.container.entrypoint import main as entrypoint_main
from optml.container.paths import Paths
from optml.train import evaluate
from optml.train.main import run
from tests.conftest import make_classification, make_opt_ml, make_regression, write_csv
from tests.unit.test_multimodel import tar_model  # model.tar.gz as SageMaker writes it

HYPERPARAMETERS = {"epochs": "8", "hidden_units": "16", "batch_size": "32", "learning_rate": "0.01"}
CLASSIFICATION_PLOTS = {"roc_curve.png", "confusion_matrix.png"}


def train_with_test_channel(root: Path, train: np.ndarray, test: np.ndarray, hyperparameters: dict[str, str]) -> Path:
    """A training job that also scores a `test` channel: its evaluation.json is what `evaluate` must match."""
    make_opt_ml(root, train, None, hyperparameters)
    write_csv(root / "input" / "data" / "test" / "part-0.csv", test)
    run(Paths(root=root))
    return root


def processing_tree(root: Path, model_dir: Path, test: np.ndarray | None) -> Path:
    """/opt/ml of a Processing job: the model's tarball and the test set where the inputs go by default."""
    tar_model(model_dir, root / "processing" / "input" / "model" / "model.tar.gz")
    if test is not None:
        write_csv(root / "processing" / "input" / "test" / "part-0.csv", test)
    return root


@pytest.fixture(scope="module")
def binary_training(tmp_path_factory: pytest.TempPathFactory) -> Path:
    test = make_classification(150, 4, 2, seed=7)
    return train_with_test_channel(
        tmp_path_factory.mktemp("binary") / "ml", make_classification(240, 4, 2, seed=1), test, HYPERPARAMETERS
    )


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def run_evaluate(root: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setenv("OPTML_ROOT", str(root))
    return evaluate.main(list(args))


def test_binary_evaluation_is_the_training_jobs_test_channel(
    binary_training: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    test = make_classification(150, 4, 2, seed=7)
    root = processing_tree(tmp_path / "ml", binary_training / "model", test)
    assert run_evaluate(root, monkeypatch) == 0

    output = root / "processing" / "evaluation"
    assert {p.name for p in output.iterdir()} == {"evaluation.json", "model_quality.json", *CLASSIFICATION_PLOTS}
    evaluation, trained = (
        read_json(output / "evaluation.json"),
        read_json(binary_training / "output/data/evaluation.json"),
    )
    assert list(evaluation) == list(trained)  # training's shape
    assert evaluation["channels"] == {"test": trained["channels"]["test"]}  # every metric, to the bit
    assert evaluation["channels"]["test"]["rows"] == 150
    for key in ("task", "model", "classes", "hyperparameters"):
        assert evaluation[key] == trained[key]
    assert (evaluation["history"], evaluation["best_epoch"], evaluation["cross_validation"]) == ([], None, None)
    assert set(evaluation["timings_seconds"]) == {"load_model", "load_data", "scoring", "total"}

    section = read_json(output / "model_quality.json")["binary_classification_metrics"]
    metrics = evaluation["channels"]["test"]["metrics"]
    for name in ("accuracy", "precision", "recall", "f1", "auc"):
        assert section[name]["value"] == metrics[name], name
    (tn, fp), (fn, tp) = metrics["confusion_matrix"]
    assert section["confusion_matrix"] == {"0": {"0": tn, "1": fp}, "1": {"0": fn, "1": tp}}
    predictions = load_model(binary_training / "model").predict(test[:, 1:])
    predicted, truth = np.asarray(predictions.labels), test[:, 0].astype(int)
    assert section["accuracy"]["value"] == pytest.approx(reference.accuracy_score(truth, predicted), abs=1e-12)
    assert section["f2"]["value"] == pytest.approx(reference.fbeta_score(truth, predicted, beta=2), abs=1e-12)
    assert predictions.scores is not None
    assert section["auc"]["value"] == pytest.approx(reference.roc_auc_score(truth, predictions.scores[:, 1]))
    assert 0 < section["accuracy"]["standard_deviation"] < 0.1

    assert "evaluation test:loss=" in capsys.readouterr().out
    assert not Paths(root=root).exit_message_file.exists()


def test_regression_model_directory_and_paths_from_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    test = make_regression(90, 3, seed=8)
    training = train_with_test_channel(tmp_path / "train", make_regression(200, 3, seed=2), test, HYPERPARAMETERS)
    model_dir, test_dir, output = tmp_path / "elsewhere/model", tmp_path / "elsewhere/test", tmp_path / "out"
    shutil.copytree(training / "model", model_dir)  # the extracted files, not a tarball
    write_csv(test_dir / "rows", test)  # no extension: the content type says what it is
    monkeypatch.setenv("OPTML_ROOT", str(tmp_path / "ml"))
    arguments = ["--model", str(model_dir), "--test", str(test_dir), "--output", str(output)]
    assert entrypoint_main(["evaluate", *arguments, "--content-type", "text/csv"]) == 0

    assert {p.name for p in output.iterdir()} == {"evaluation.json", "model_quality.json"}  # no regression plots
    metrics = read_json(output / "evaluation.json")["channels"]["test"]["metrics"]
    assert metrics == read_json(training / "output/data/evaluation.json")["channels"]["test"]["metrics"]
    section = read_json(output / "model_quality.json")["regression_metrics"]
    assert {name: entry["value"] for name, entry in section.items()} == {
        name: metrics[name] for name in ("mse", "rmse", "mae", "r2")
    }
    predicted = np.asarray(load_model(model_dir).predict(test[:, 1:]).labels)
    assert section["r2"]["value"] == pytest.approx(reference.r2_score(test[:, 0], predicted), rel=1e-6)
    assert section["mae"]["value"] == pytest.approx(reference.mean_absolute_error(test[:, 0], predicted), rel=1e-5)


def test_multiclass_text_labels_from_parquet_and_balanced_class_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = np.array(["cat", "dog", "emu"])
    train, test = make_classification(300, 3, 3, seed=3), make_classification(120, 3, 3, seed=9)
    root = make_opt_ml(tmp_path / "train", None, None, HYPERPARAMETERS | {"class_weights": "balanced"})
    header = [["label", "a", "b", "c"]]
    write_csv(root / "input/data/train/part-0.csv", header + [[names[int(r[0])], *r[1:]] for r in train])
    run(Paths(root=root))
    processing = processing_tree(tmp_path / "ml", root / "model", None)
    columns = {"a": test[:, 1], "label": names[test[:, 0].astype(int)], "c": test[:, 3], "b": test[:, 2]}
    (processing / "processing/input/test").mkdir(parents=True)
    pq.write_table(pa.table(columns), processing / "processing/input/test/part-0.parquet")  # columns reordered
    assert run_evaluate(processing, monkeypatch) == 0

    output = processing / "processing" / "evaluation"
    assert {p.name for p in output.iterdir()} == {"evaluation.json", "model_quality.json", *CLASSIFICATION_PLOTS}
    metrics = read_json(output / "evaluation.json")["channels"]["test"]["metrics"]
    assert metrics["loss"] is None  # balanced weights came from the training data, which the model does not keep
    section = read_json(output / "model_quality.json")["multiclass_classification_metrics"]
    truth = names[test[:, 0].astype(int)]
    predicted = np.asarray(load_model(root / "model").predict(test[:, 1:]).labels)
    matrix = reference.confusion_matrix(truth, predicted, labels=names)
    assert section["confusion_matrix"] == {
        true: dict(zip(names, map(int, row), strict=True)) for true, row in zip(names, matrix, strict=True)
    }
    assert section["accuracy"]["value"] == metrics["accuracy"] == reference.accuracy_score(truth, predicted)
    assert section["weighted_f1"]["value"] == pytest.approx(reference.f1_score(truth, predicted, average="weighted"))
    assert section["weighted_precision"]["value"] == metrics["precision_weighted"]


def corrupt_tarball(root: Path, model_dir: Path) -> None:
    tarball = tar_model(model_dir, root / "processing/input/model/model.tar.gz")
    tarball.write_bytes(tarball.read_bytes()[:300])


def foreign_tarball(root: Path, model_dir: Path) -> None:
    (root / "scratch").mkdir(parents=True)
    (root / "scratch" / "model.pkl").write_bytes(b"not ours")
    tar_model(root / "scratch", root / "processing/input/model/model.tar.gz")


def foreign_directory(root: Path, model_dir: Path) -> None:
    (root / "processing/input/model").mkdir(parents=True)
    (root / "processing/input/model/model.joblib").write_bytes(b"not ours")


def standard_tree(root: Path, model_dir: Path) -> None:
    processing_tree(root, model_dir, make_classification(20, 4, 2, seed=5))


def other_columns(root: Path, model_dir: Path) -> None:
    processing_tree(root, model_dir, make_classification(20, 5, 2, seed=5))


def empty_test_directory(root: Path, model_dir: Path) -> None:
    processing_tree(root, model_dir, None)
    (root / "processing/input/test").mkdir(parents=True)


def unseen_label(root: Path, model_dir: Path) -> None:
    test = make_classification(20, 4, 2, seed=5)
    test[3, 0] = 7
    processing_tree(root, model_dir, test)


BAD_INPUTS = {
    "no model": (
        lambda root, model_dir: None,
        [],
        "no model: {root}/processing/input/model does not exist; pass a training job's model.tar.gz (or its files)"
        " as the ProcessingInput with destination {root}/processing/input/model, or name another directory with"
        " --model",
    ),
    "corrupt tarball": (
        corrupt_tarball,
        [],
        "channel 'model': refusing to extract {root}/processing/input/model/model.tar.gz: model.tar.gz cannot be"
        " extracted whole (Compressed file ended before the end-of-stream marker was reached)",
    ),
    "a tarball not from this image": (
        foreign_tarball,
        [],
        "{root}/processing/input/model/model.tar.gz is not a model trained by this image: it has no optml-model.json",
    ),
    "a directory not from this image": (
        foreign_directory,
        [],
        "channel 'model' ({root}/processing/input/model) holds neither optml-model.json nor a model.tar.gz from this"
        " image (found: model.joblib)",
    ),
    "a test set with other columns": (
        other_columns,
        [],
        "{root}/processing/input/test/part-0.csv has 5 features but the model's training data has 4; every file"
        " needs the same columns in the same order",
    ),
    "an empty test directory": (
        empty_test_directory,
        [],
        "channel 'test' is empty: no files in {root}/processing/input/test",
    ),
    "no test directory": (
        lambda root, model_dir: processing_tree(root, model_dir, None),
        [],
        "channel 'test' not found: expected data files (CSV, Parquet, JSON lines or .npz) in"
        " {root}/processing/input/test",
    ),
    "a label the model never saw": (
        unseen_label,
        [],
        "channel 'test' row 4: label 7 never occurs in channel 'train' (classes: [0, 1])",
    ),
    "an unknown argument": (
        standard_tree,
        ["--nope"],
        "evaluate: unrecognized arguments: --nope (usage: evaluate [-h] [--model DIR] [--test DIR] [--output DIR]"
        " [--content-type TYPE])",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_fails_with_its_reason_in_the_exit_message(
    case: str, binary_training: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_up, arguments, message = BAD_INPUTS[case]
    root = tmp_path / "ml"
    set_up(root, binary_training / "model")
    assert run_evaluate(root, monkeypatch, *arguments) == 1
    assert Paths(root=root).exit_message_file.read_text() == message.format(root=root)
    assert not (root / "processing" / "evaluation").exists()


def test_an_internal_error_exits_2_without_a_traceback_in_the_message(
    binary_training: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(*args: object) -> None:
        raise KeyError("probabilities")

    monkeypatch.setattr(evaluate, "score", broken)
    root = tmp_path / "ml"
    standard_tree(root, binary_training / "model")
    assert run_evaluate(root, monkeypatch) == 2
    assert Paths(root=root).exit_message_file.read_text() == "Internal error: KeyError: 'probabilities'"
    assert "Traceback (most recent call last)" in capsys.readouterr().out  # the log keeps it


def test_sequences_of_another_shape_are_refused_with_both_shapes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(10)
    root = make_opt_ml(tmp_path / "train", None, None, {"model": "rnn", "epochs": "1", "hidden_size": "4"})
    x = rng.normal(size=(40, 5, 2)).astype(np.float32)
    (root / "input/data/train").mkdir(parents=True)
    np.savez(root / "input/data/train/part-0.npz", x=x, y=(x[:, 0, 0] > 0).astype(int))
    run(Paths(root=root))
    processing = processing_tree(tmp_path / "ml", root / "model", None)
    (processing / "processing/input/test").mkdir(parents=True)
    np.savez(processing / "processing/input/test/part-0.npz", x=x[:, :4], y=(x[:, 0, 0] > 0).astype(int))
    assert run_evaluate(processing, monkeypatch) == 1
    assert Paths(root=processing).exit_message_file.read_text() == (
        f"the test set in {processing}/processing/input/test has rows shaped [4, 2] but the model takes [5, 2]:"
        " it needs rows shaped as in training"
    )
