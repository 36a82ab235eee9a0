"""The trust features through the training entry point: bias metrics before and after training, the
global explanation and the saved background, the rules' verdicts, the profile and TensorBoard — in memory
and streamed, where the bias metrics of the train labels must be the same."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import torch

from optml.container.errors import UserError
from optml.container.explain import load_background
from optml.container.features import FeatureEncoder
from optml.container.paths import Paths
from optml.train import bias
from optml.train.analysis import ChannelWatch
from optml.train.hyperparameters import Hyperparameters
from optml.train.main import main, run
from optml.train.preprocessing import LabelEncoding
from optml.train.sampling import RowSample
from optml.train.tensorboard import read_scalars
from tests.conftest import loan_job

FACETS = {"facet_column": "sex,age", "facet_value": "female;40", "group_column": "age"}


def metrics(document: dict[str, Any], section: str) -> dict[tuple[str, str, str], Any]:
    return {
        (column, entry["value_or_threshold"], metric["name"]): metric["value"]
        for column, entries in document[section]["facets"].items()
        for entry in entries
        for metric in entry["metrics"]
    }


def job(tmp_path: Path, name: str, **hyperparameters: str) -> Path:
    return loan_job(tmp_path / name, {"epochs": "3"} | FACETS | hyperparameters)


def analysis_of(root: Path) -> dict[str, Any]:
    return json.loads((root / "output" / "data" / "analysis.json").read_text())


def test_a_facet_job_writes_bias_explanations_rules_profile_and_tensorboard(tmp_path: Path) -> None:
    root = job(tmp_path, "memory")
    run(Paths(root=root))
    document = analysis_of(root)
    pre = metrics(document, "pre_training_bias_metrics")
    assert {name for _, _, name in pre} == {"CI", "DPL", "KL", "JS", "LP", "TVD", "KS", "CDDL"}
    assert {value for _, value, _ in pre} == {"female", "(40, 79]"}
    # CI of the train channel by hand: (n_a - n_d) / n, with the rows written by loan_rows(600, seed=1).
    lines = (root / "input" / "data" / "train" / "loans.csv").read_text().splitlines()[1:]
    women = sum(line.split(",")[1] == "female" for line in lines)
    assert pre[("sex", "female", "CI")] == pytest.approx((len(lines) - 2 * women) / len(lines))
    post = document["optml"]["post_training_bias_metrics_by_channel"]
    assert set(post) == {"validation", "test"} and document["post_training_bias_metrics"] == post["test"]

    shap = document["explanations"]["deep_lift_shap"]["approved"]
    assert set(shap["global_shap_values"]) == {"sex", "age", "income"}
    background = load_background(root / "model")
    assert background is not None and background.shape == (10, 4)  # k-means centroids: sex one-hot, age, income
    card = (root / "model" / "MODEL_CARD.md").read_text()
    assert "## Bias" in card and "sex female: train labels: CI" in card and "## What drives the predictions" in card
    card_json = json.loads((root / "model" / "model_card.json").read_text())
    assert set(card_json["explainability"]["top_features"]) == {"sex", "age", "income"}
    assert card_json["bias"].startswith("Bias (SageMaker Clarify's metrics; positive label yes;")

    evaluation = json.loads((root / "output" / "data" / "evaluation.json").read_text())
    assert [epoch["epoch"] for epoch in evaluation["profile"]] == [1, 2, 3]
    verdicts = json.loads((root / "output" / "data" / "rules.json").read_text())["rules"]
    assert [v["name"] for v in verdicts] == ["ExplodingTensor", "LossNotDecreasing", "Overfit", "ClassImbalance",
                                             "StalledTraining"]  # fmt: skip
    assert [step for step, _ in read_scalars(root / "output" / "tensorboard")["train/loss"]] == [1, 2, 3]


def test_streamed_bias_metrics_of_the_train_labels_equal_memory_modes(tmp_path: Path) -> None:
    memory, stream = job(tmp_path, "memory"), job(tmp_path, "stream", data_loading="stream")
    run(Paths(root=memory))
    run(Paths(root=stream))
    assert metrics(analysis_of(stream), "pre_training_bias_metrics") == metrics(
        analysis_of(memory), "pre_training_bias_metrics"
    )
    assert set(analysis_of(stream)["optml"]["post_training_bias_metrics_by_channel"]) == {"validation", "test"}
    assert load_background(stream / "model") is not None


def test_a_watch_counts_blocks_as_it_counts_the_whole_channel() -> None:
    """Streamed scoring shows a channel block by block (and process by process): the same counts."""
    labels = LabelEncoding("binary_classification", ("no", "yes"), 0.0, 1.0)
    rng = np.random.default_rng(0)
    table = pa.table({"sex": rng.choice(["female", "male"], 300).tolist(), "income": rng.normal(50, 15, 300)})
    encoder = FeatureEncoder.fit(table)
    features = encoder.transform(table)
    raw_labels = np.where(rng.random(300) > 0.5, "yes", "no").astype(object)
    outputs = torch.from_numpy(rng.normal(size=(300, 1)).astype(np.float32))
    hp = Hyperparameters(facet_column=("sex",), facet_value="female")
    spec = bias.resolve(hp, encoder, labels.classes, labels.task)
    assert spec is not None
    whole = ChannelWatch("test", labels, spec)
    whole(features, raw_labels, outputs)
    parts = [ChannelWatch("test", labels, spec, rank=rank) for rank in range(2)]
    for number, start in enumerate(range(0, 300, 70)):
        rows = slice(start, start + 70)
        parts[number % 2](features[rows], raw_labels[rows], outputs[rows])
    merged = parts[0].merged(collective=False)
    merged.counts.add(parts[1].counts)
    assert merged.counts.rows == whole.counts.rows == 300
    assert bias.post_training(spec, merged.counts) == bias.post_training(spec, whole.counts)


def test_a_long_stream_is_sampled_uniformly_without_repeats() -> None:
    """Blocks of one process, then a second process's sample merged in: uniform over the union."""
    samples = [RowSample(size=2000, seed=rank) for rank in range(2)]
    for start in range(0, 100_000, 777):
        ids = np.arange(start, min(start + 777, 100_000), dtype=np.float32)
        samples[start // 50_000].add(np.column_stack([ids, -ids]))
    samples[0].merge(samples[1])
    rows = samples[0].rows
    assert rows is not None and rows.shape == (2000, 2)
    assert len(np.unique(rows[:, 0])) == 2000
    np.testing.assert_array_equal(rows[:, 1], -rows[:, 0])  # whole rows, not mixed columns
    counts = np.histogram(rows[:, 0], bins=10, range=(0, 100_000))[0]  # 200 expected per tenth of the stream
    assert counts.min() > 140 and counts.max() < 260, counts


def test_a_row_sample_of_blocks_is_a_bounded_sample_of_the_union() -> None:
    sample, other = RowSample(size=50, seed=0), RowSample(size=50, seed=1)
    sample.add(np.arange(40, dtype=np.float32).reshape(40, 1))
    other.add(np.arange(40, 100, dtype=np.float32).reshape(60, 1))
    sample.merge(other)
    assert sample.rows is not None and len(sample.rows) == 50
    assert len(np.unique(sample.rows)) == 50 and set(sample.rows[:, 0]) <= set(range(100))
    small = RowSample(size=50)
    small.add(np.ones((3, 2)))
    assert small.rows is not None and small.rows.shape == (3, 2)  # every row when there are fewer


def test_an_unknown_facet_fails_before_the_first_epoch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = loan_job(tmp_path / "ml", {"epochs": "3", "facet_column": "gender"})
    with pytest.raises(UserError, match="gender"):
        run(Paths(root=root))
    assert "epoch=1" not in capsys.readouterr().out


def test_a_facet_value_no_train_row_has_fails_before_training(tmp_path: Path) -> None:
    root = loan_job(tmp_path / "ml", {"epochs": "3", "facet_column": "sex", "facet_value": "nonbinary"})
    with pytest.raises(UserError, match="nonbinary"):
        run(Paths(root=root))
    assert not (root / "model" / "optml-model.json").exists()


def test_a_stop_rule_fails_the_job_without_a_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    exploding = {"epochs": "3", "learning_rate": "1e30", "optimizer": "sgd"}
    root = loan_job(tmp_path / "ml", exploding | {"rules": "ExplodingTensor", "rule_action": "stop"})
    monkeypatch.setenv("OPTML_ROOT", str(root))
    assert main([]) == 1
    failure = (root / "output" / "failure").read_text()
    assert failure.startswith("rule ExplodingTensor triggered at step ") and "rule_action=stop" in failure
    assert not (root / "model" / "optml-model.json").exists()


def test_explain_rows_zero_skips_the_global_explanation_but_keeps_the_background(tmp_path: Path) -> None:
    root = loan_job(tmp_path / "ml", {"epochs": "2", "explain_rows": "0", "explain_background": "rows",
                                      "explain_background_size": "5"})  # fmt: skip
    run(Paths(root=root))
    assert not (root / "output" / "data" / "analysis.json").exists()  # no facets, no explanation: nothing to say
    background = load_background(root / "model")
    assert background is not None and background.shape == (5, 4)
