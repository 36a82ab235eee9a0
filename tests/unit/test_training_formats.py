"""Whole training jobs on each data format, ending in a model whose predictions speak the data's terms."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet as pq
import pytest

from optml.container.artifact import load_model
from optml.container.features import FeatureEncoder
from optml.container.paths import Paths
from optml.train.main import main, run
from tests.conftest import make_opt_ml


def set_content_type(root: Path, channel: str, content_type: str) -> None:
    path = root / "input" / "config" / "inputdataconfig.json"
    config = json.loads(path.read_text())
    config[channel] = {"ContentType": content_type, "TrainingInputMode": "File"}
    path.write_text(json.dumps(config))


def churn_table(rows: int, seed: int) -> pa.Table:
    """Customers with a categorical plan; they churn when usage is low on the basic plan."""
    rng = np.random.default_rng(seed)
    plan = rng.choice(["basic", "pro", "team"], rows)
    usage = rng.normal(size=rows)
    tenure = rng.normal(size=rows)
    churned = np.where((plan == "basic") & (usage < 0.3), "yes", "no")
    return pa.table({"customer": np.arange(rows), "plan": plan, "usage": usage, "tenure": tenure, "churned": churned})


def test_csv_with_header_label_name_categoricals_and_text_labels(tmp_path: Path) -> None:
    root = make_opt_ml(
        tmp_path,
        None,
        None,
        {"label_column": "churned", "feature_columns": "plan,usage,tenure", "epochs": "40", "learning_rate": "0.02"},
    )
    for channel, seed in (("train", 1), ("validation", 2)):
        (root / "input/data" / channel).mkdir(parents=True)
        pa.csv.write_csv(churn_table(400 if channel == "train" else 100, seed), root / f"input/data/{channel}/d.csv")
    final = run(Paths(root=root))
    assert final["validation:accuracy"] >= 0.95
    model = load_model(root / "model")
    assert model.metadata.classes == ["no", "yes"]
    assert model.metadata.feature_names == ["plan=basic", "plan=pro", "plan=team", "usage", "tenure"]
    assert model.metadata.encoder is not None
    encoder = FeatureEncoder.from_json(model.metadata.encoder)
    encoded = encoder.transform([["basic", -2.0, 0.0], ["pro", -2.0, 0.0]])
    assert model.predict(encoded).labels == ["yes", "no"]


def test_parquet_channel(tmp_path: Path) -> None:
    root = make_opt_ml(tmp_path, None, None, {"label_column": "churned", "epochs": "30", "learning_rate": "0.02"})
    (root / "input/data/train").mkdir(parents=True)
    table = churn_table(400, 3).drop(["customer"])
    pq.write_table(table.slice(0, 200), root / "input/data/train/part-0.parquet")
    pq.write_table(table.slice(200), root / "input/data/train/part-1.parquet")
    set_content_type(root, "train", "application/x-parquet")
    final = run(Paths(root=root))
    assert final["train:accuracy"] >= 0.9
    assert load_model(root / "model").metadata.feature_count == 5  # plan one-hot (3) + usage + tenure


def test_npz_images_train_a_cnn_with_augmentation(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.normal(size=(300, 8, 8)).astype(np.float32)  # N×H×W: one channel is added
    labels = (images[:, :, :4].mean(axis=(1, 2)) > images[:, :, 4:].mean(axis=(1, 2))).astype(int)
    root = make_opt_ml(
        tmp_path,
        None,
        None,
        {"model": "cnn", "conv_channels": "8", "hidden_units": "16", "epochs": "12", "learning_rate": "0.01"},
    )
    (root / "input/data/train").mkdir(parents=True)
    np.savez(root / "input/data/train/images.npz", x=images, y=labels)
    final = run(Paths(root=root))
    assert final["train:accuracy"] >= 0.85
    model = load_model(root / "model")
    assert model.input_shape == (1, 8, 8)
    assert model.predict(images[:5].reshape(5, -1)).labels == model.predict(images[:5]).labels


def test_jsonlines_sequences_train_an_lstm(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    sequences = rng.normal(size=(300, 6, 2))
    labels = (sequences[:, :, 0].sum(axis=1) > 0).astype(int)
    root = make_opt_ml(
        tmp_path, None, None, {"model": "lstm", "hidden_size": "16", "epochs": "15", "learning_rate": "0.01"}
    )
    (root / "input/data/train").mkdir(parents=True)
    with open(root / "input/data/train/data.jsonl", "w") as handle:
        for sequence, label in zip(sequences, labels, strict=True):
            handle.write(json.dumps({"features": sequence.tolist(), "label": int(label)}) + "\n")
    final = run(Paths(root=root))
    assert final["train:accuracy"] >= 0.85
    assert load_model(root / "model").input_shape == (6, 2)


def test_model_for_the_wrong_kind_of_data_says_which_model_fits(tmp_path: Path) -> None:
    root = make_opt_ml(tmp_path, None, None, {"model": "mlp"})
    (root / "input/data/train").mkdir(parents=True)
    np.savez(root / "input/data/train/seq.npz", x=np.zeros((10, 4, 3)), y=np.arange(10) % 2)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OPTML_ROOT", str(root))
        assert main([]) == 1
    assert (root / "output/failure").read_text() == (
        "model=mlp needs tabular rows (N×features), but channel 'train' holds sequences (N×time×features):"
        " use model=lstm (or rnn, gru)"
    )


def test_time_column_orders_walk_forward_folds(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    rows = 120
    table = pa.table(
        {"day": rng.permutation(rows), "x1": rng.normal(size=rows), "x2": rng.normal(size=rows)}
    ).append_column("y", pa.array(np.zeros(rows)))
    table = table.set_column(3, "y", pa.array(3 * table["x1"].to_numpy() + 1))
    root = make_opt_ml(
        tmp_path,
        None,
        None,
        {"label_column": "y", "time_column": "day", "k_folds": "3", "cv_strategy": "timeseries", "epochs": "5"},
    )
    (root / "input/data/train").mkdir(parents=True)
    pa.csv.write_csv(table, root / "input/data/train/d.csv")
    run(Paths(root=root))
    evaluation = json.loads((root / "output/data/evaluation.json").read_text())
    assert evaluation["cross_validation"]["strategy"] == "timeseries"
    assert len(evaluation["cross_validation"]["folds"]) == 3
    assert load_model(root / "model").metadata.feature_names == ["x1", "x2"]  # the time column is no feature


def test_npz_validation_with_another_width_names_both(tmp_path: Path) -> None:
    root = make_opt_ml(tmp_path, None, None, {"epochs": "1"})
    for channel, width in (("train", 4), ("validation", 3)):
        (root / "input/data" / channel).mkdir(parents=True)
        np.savez(root / f"input/data/{channel}/d.npz", x=np.zeros((10, width)), y=np.arange(10) % 2)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OPTML_ROOT", str(root))
        assert main([]) == 1
    assert (root / "output/failure").read_text() == (
        "channel 'validation' has 3 features per row but the model's training data has 4 columns"
        " (feature 1, feature 2, feature 3, feature 4)"
    )
