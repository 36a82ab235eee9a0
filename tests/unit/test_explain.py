"""SHAP explanations (optml.container.explain): attributions that sum to the model's score, named by the user's
columns; the background (k-means centroids or sampled rows) and its file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from optml.container.artifact import ModelArtifact, ModelMetadata
from optml.container.errors import UserError
from optml.container.explain import (
    BACKGROUND_FILE,
    DEEP_LIFT_SHAP,
    GRADIENT_SHAP,
    Explainer,
    background_kind,
    load_background,
    save_background,
    summarize_background,
    tolerance,
)
from optml.container.features import FeatureEncoder
from optml.container.kinds import BINARY, MULTICLASS, REGRESSION
from optml.container.networks import NetworkSpec, build_network

CLASSES = {BINARY: ["no", "yes"], MULTICLASS: ["a", "b", "c"], REGRESSION: []}


def fitted_encoder() -> FeatureEncoder:
    """age, colour (one-hot: blue, green, red), income: 3 user columns, 5 encoded inputs."""
    table = pa.table({"age": [30.0, 40.0, 50.0], "colour": ["red", "green", "blue"], "income": [1.0, 2.0, 3.0]})
    return FeatureEncoder.fit(table)


def raw_rows(count: int, seed: int = 0) -> np.ndarray:
    """Encoded rows for `encoder()`: age, colour one-hot (blue, green, red), income; unscaled."""
    generator = np.random.default_rng(seed)
    colours = np.eye(3, dtype=np.float32)[generator.integers(0, 3, count)]
    age = generator.normal(45, 12, count).astype(np.float32)
    income = generator.normal(50_000, 15_000, count).astype(np.float32)
    return np.column_stack([age, colours, income]).astype(np.float32)


def tabular_artifact(
    task: str, activation: str = "relu", batch_norm: bool = False, dropout: float = 0.0
) -> ModelArtifact:
    torch.manual_seed(1)
    table_encoder = fitted_encoder()
    outputs = 3 if task == MULTICLASS else 1
    spec = NetworkSpec(
        kind="mlp",
        input_shape=(5,),
        out_features=outputs,
        hidden_units=(16, 8),
        activation=activation,
        batch_norm=batch_norm,
        dropout=dropout,
    )
    network = build_network(spec)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.mul_(3.0)  # confident outputs, far from the middle of the sigmoid
    metadata = ModelMetadata(
        task=task,
        network=spec,
        feature_count=5,
        feature_mean=[45.0, 0.33, 0.33, 0.33, 50_000.0],
        feature_std=[12.0, 0.47, 0.47, 0.47, 15_000.0],
        classes=list(CLASSES[task]),
        feature_names=list(table_encoder.output_names),
        encoder=table_encoder.to_json(),
        target_mean=200.0 if task == REGRESSION else 0.0,
        target_std=50.0 if task == REGRESSION else 1.0,
    )
    return ModelArtifact(network, metadata)


def background_for(artifact: ModelArtifact, size: int = 10) -> np.ndarray:
    return summarize_background(raw_rows(500, seed=1), size, "kmeans", seed=0)


# --- attributions sum to the score ----------------------------------------------------------------------


@pytest.mark.parametrize("task", [BINARY, MULTICLASS, REGRESSION])
@pytest.mark.parametrize("activation", ["relu", "tanh", "leaky_relu", "sigmoid"])
def test_attributions_plus_base_value_are_the_models_score(task: str, activation: str) -> None:
    artifact = tabular_artifact(task, activation=activation)
    rows = raw_rows(64, seed=2)
    explained = Explainer(artifact, background_for(artifact)).explain(rows)

    assert explained.method == DEEP_LIFT_SHAP
    assert explained.columns == ["age", "colour", "income"]  # colour's three one-hot inputs summed back
    assert explained.values.shape == (64, 3)
    predictions = artifact.predict(rows)
    if task == REGRESSION:
        assert list(explained.targets) == [0] * 64
        np.testing.assert_allclose(explained.scores, np.asarray(predictions.labels, dtype=float), rtol=1e-6)
    else:
        assert predictions.scores is not None
        expected_targets = [1] * 64 if task == BINARY else list(predictions.scores.argmax(1))
        assert list(explained.targets) == expected_targets
        np.testing.assert_allclose(explained.scores, predictions.scores[np.arange(64), explained.targets], rtol=1e-6)
    gap = np.abs(explained.base_values + explained.values.sum(1) - explained.scores)
    assert (gap <= tolerance(artifact.metadata, DEEP_LIFT_SHAP, explained.scores)).all(), gap.max()
    assert np.abs(explained.values).max() > 100 * gap.max()  # not trivially small attributions


@pytest.mark.parametrize("task", [BINARY, MULTICLASS, REGRESSION])
@pytest.mark.parametrize(
    ("activation", "batch_norm"), [("relu", True), ("leaky_relu", False), ("tanh", False), ("sigmoid", True)]
)
def test_the_fast_deep_lift_equals_captums_deep_lift_shap(task: str, activation: str, batch_norm: bool) -> None:
    """DeepLiftMLP writes out captum's rules for the MLP's layers; captum's DeepLiftShap is the reference."""
    artifact = tabular_artifact(task, activation=activation, batch_norm=batch_norm, dropout=0.2)
    if batch_norm:
        set_batch_norm_statistics(artifact)
    background, rows = background_for(artifact), raw_rows(40, seed=9)
    fast = Explainer(artifact, background).explain(rows)
    reference = Explainer(artifact, background, use_captum=True).explain(rows)
    assert fast.method == reference.method == DEEP_LIFT_SHAP
    scale = float(np.abs(reference.values).max())
    np.testing.assert_allclose(fast.values, reference.values, rtol=1e-4, atol=1e-5 * scale)
    np.testing.assert_array_equal(fast.base_values, reference.base_values)
    np.testing.assert_array_equal(fast.targets, reference.targets)


def set_batch_norm_statistics(artifact: ModelArtifact) -> None:
    """Running statistics and affine parameters other than the identity a new layer starts with."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in artifact.network.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                assert module.running_mean is not None and module.running_var is not None
                module.running_mean.normal_(0, 1, generator=generator)
                module.running_var.uniform_(0.5, 2.0, generator=generator)
                module.weight.normal_(1, 0.3, generator=generator)
                module.bias.normal_(0, 0.3, generator=generator)


def test_the_base_value_is_the_mean_score_over_the_background() -> None:
    artifact = tabular_artifact(BINARY)
    background = background_for(artifact)
    explained = Explainer(artifact, background).explain(raw_rows(3))
    scores = artifact.predict(background).scores
    assert scores is not None
    np.testing.assert_allclose(explained.base_values, [scores[:, 1].mean()] * 3, rtol=1e-6)


def test_batch_norm_and_dropout_layers_keep_the_sum_exact() -> None:
    artifact = tabular_artifact(MULTICLASS, batch_norm=True, dropout=0.3)
    explained = Explainer(artifact, background_for(artifact)).explain(raw_rows(32))
    gap = np.abs(explained.base_values + explained.values.sum(1) - explained.scores)
    assert gap.max() <= 1e-4


def test_a_column_the_model_ignores_gets_no_attribution() -> None:
    artifact = tabular_artifact(REGRESSION)
    with torch.no_grad():
        first_layer = next(m for m in artifact.network.modules() if isinstance(m, torch.nn.Linear))
        first_layer.weight[:, 4] = 0.0  # income never reaches the network
    explained = Explainer(artifact, background_for(artifact)).explain(raw_rows(16))
    assert np.abs(explained.values[:, 2]).max() == 0.0
    assert np.abs(explained.values[:, 0]).max() > 0.1


def test_a_single_background_row_is_a_plain_deep_lift_reference() -> None:
    artifact = tabular_artifact(BINARY)
    reference = raw_rows(1, seed=5)
    explained = Explainer(artifact, reference).explain(raw_rows(4))
    scores = artifact.predict(reference).scores
    assert scores is not None
    np.testing.assert_allclose(explained.base_values, scores[0, 1], rtol=1e-6)
    assert np.abs(explained.base_values + explained.values.sum(1) - explained.scores).max() <= 1e-4


def test_as_dicts_names_every_column_per_row() -> None:
    artifact = tabular_artifact(BINARY)
    explained = Explainer(artifact, background_for(artifact)).explain(raw_rows(2))
    first = explained.as_dicts()[0]
    assert set(first) == {"base_value", "attributions"}
    assert list(first["attributions"]) == ["age", "colour", "income"]  # type: ignore[call-overload]
    assert first["base_value"] == pytest.approx(float(explained.base_values[0]))


def test_no_rows_explain_to_no_rows() -> None:
    artifact = tabular_artifact(REGRESSION)
    explained = Explainer(artifact, background_for(artifact)).explain(raw_rows(0))
    assert explained.values.shape == (0, 3) and explained.scores.shape == (0,)


def test_a_background_of_the_wrong_width_is_refused_by_shape() -> None:
    artifact = tabular_artifact(REGRESSION)
    with pytest.raises(ValueError, match=r"background has shape \(4, 3\); expected \(rows, 5\)"):
        Explainer(artifact, np.zeros((4, 3), dtype=np.float32))


def test_repeated_explanations_leave_no_hooks_behind() -> None:
    """captum 0.9 keeps every call's hook handles unless we clear them (a leak that slows each call)."""
    artifact = tabular_artifact(BINARY)
    explainer = Explainer(artifact, background_for(artifact), use_captum=True)
    first = explainer.explain(raw_rows(3))
    for _ in range(5):
        again = explainer.explain(raw_rows(3))
    np.testing.assert_array_equal(first.values, again.values)
    assert explainer._attribution.forward_handles == [] and explainer._attribution.backward_handles == []
    assert all(not module._forward_hooks and not module._backward_hooks for module in artifact.network.modules())


def test_serving_imports_captum_only_for_networks_it_needs_it_for() -> None:
    """Importing the module imports no captum; neither does explaining an MLP (DeepLiftMLP); an LSTM does."""
    code = (
        "import sys, numpy as np\n"
        "from tests.unit.test_explain import tabular_artifact, other_artifact, raw_rows, background_for\n"
        "from optml.container.explain import Explainer\n"
        "print('captum' in sys.modules)\n"
        "artifact = tabular_artifact('binary_classification')\n"
        "Explainer(artifact, background_for(artifact)).explain(raw_rows(2))\n"
        "print('captum' in sys.modules)\n"
        "Explainer(other_artifact('lstm', (2, 3), 'regression'), np.zeros((2, 6), np.float32))\n"
        "print('captum' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path.cwd())
    assert result.stdout.split() == ["False", "False", "True"]


# --- other network kinds --------------------------------------------------------------------------------


def other_artifact(kind: str, shape: tuple[int, ...], task: str) -> ModelArtifact:
    torch.manual_seed(3)
    outputs = 3 if task == MULTICLASS else 1
    spec = NetworkSpec(
        kind=kind, input_shape=shape, out_features=outputs, hidden_units=(8,), hidden_size=8, conv_channels=(4,)
    )
    count = int(np.prod(shape))
    metadata = ModelMetadata(
        task=task,
        network=spec,
        feature_count=count,
        feature_mean=[0.0] * count,
        feature_std=[1.0] * count,
        classes=list(CLASSES[task]),
        target_mean=1.0,
        target_std=4.0,
    )
    return ModelArtifact(build_network(spec), metadata)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("task", [BINARY, MULTICLASS, REGRESSION])
def test_recurrent_models_get_expected_gradients_within_their_looser_tolerance(kind: str, task: str) -> None:
    artifact = other_artifact(kind, (6, 3), task)
    rows = np.random.default_rng(4).normal(size=(16, 18)).astype(np.float32)
    background = summarize_background(np.random.default_rng(5).normal(size=(200, 18)), 8, "kmeans", seed=0)
    explained = Explainer(artifact, background).explain(rows)

    assert explained.method == GRADIENT_SHAP
    assert explained.columns == ["feature_0", "feature_1", "feature_2"]  # summed over the 6 time steps
    gap = np.abs(explained.base_values + explained.values.sum(1) - explained.scores)
    assert (gap <= tolerance(artifact.metadata, GRADIENT_SHAP, explained.scores)).all(), gap.max()


def test_images_are_explained_per_channel() -> None:
    artifact = other_artifact("cnn", (2, 6, 6), BINARY)
    rows = np.random.default_rng(6).normal(size=(5, 72)).astype(np.float32)
    background = np.random.default_rng(7).normal(size=(4, 2, 6, 6)).astype(np.float32)
    explained = Explainer(artifact, background).explain(rows)
    assert explained.method == GRADIENT_SHAP
    assert explained.columns == ["channel_0", "channel_1"]
    gap = np.abs(explained.base_values + explained.values.sum(1) - explained.scores)
    assert (gap <= tolerance(artifact.metadata, GRADIENT_SHAP, explained.scores)).all(), gap.max()


# --- the background -------------------------------------------------------------------------------------


def test_kmeans_gives_size_centroids_the_same_for_the_same_seed() -> None:
    rows = raw_rows(300)
    first = summarize_background(rows, 7, "kmeans", seed=11)
    assert first.shape == (7, 5) and first.dtype == np.float32
    np.testing.assert_array_equal(first, summarize_background(rows, 7, "kmeans", seed=11))
    assert not np.array_equal(first, summarize_background(rows, 7, "kmeans", seed=12))
    assert not any(np.isclose(rows, centroid, rtol=1e-4).all(1).any() for centroid in first)  # no one's row
    np.testing.assert_allclose(first[:, 1:4].sum(1), 1.0, rtol=1e-5)  # one-hot fractions still sum to 1


def test_kmeans_finds_well_separated_clusters() -> None:
    generator = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    rows = np.vstack([centre + generator.normal(0, 0.1, size=(50, 2)) for centre in centres])
    found = summarize_background(rows, 3, "kmeans", seed=0)
    assert sorted(map(tuple, np.round(found).astype(int).tolist())) == [(0, 0), (0, 10), (10, 0)]


def test_rows_mode_samples_real_rows() -> None:
    rows = raw_rows(100)
    sampled = summarize_background(rows, 10, "rows", seed=3)
    assert sampled.shape == (10, 5)
    assert all((rows == row).all(1).any() for row in sampled)
    assert len({row.tobytes() for row in sampled}) == 10  # without replacement
    np.testing.assert_array_equal(sampled, summarize_background(rows, 10, "rows", seed=3))


def test_fewer_rows_than_centroids_keeps_the_rows() -> None:
    rows = raw_rows(4)
    np.testing.assert_array_equal(summarize_background(rows, 10, "kmeans", seed=0), rows)


def test_shaped_rows_keep_their_shape() -> None:
    rows = np.random.default_rng(0).normal(size=(50, 2, 3, 3))
    assert summarize_background(rows, 5, "kmeans", seed=0).shape == (5, 2, 3, 3)


@pytest.mark.parametrize(
    ("rows", "size", "kind", "message"),
    [
        (np.zeros((3, 2)), 2, "median", "explain_background must be one of kmeans, rows, got 'median'"),
        (np.zeros((3, 2)), 0, "kmeans", "explain_background_size must be at least 1, got 0"),
        (np.zeros((0, 2)), 2, "rows", "needs at least one train row"),
    ],
)
def test_bad_background_requests_are_named(rows: np.ndarray, size: int, kind: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        summarize_background(rows, size, kind, seed=0)


def test_the_background_file_round_trips_with_its_kind(tmp_path: Path) -> None:
    background = summarize_background(raw_rows(50), 4, "rows", seed=0)
    save_background(tmp_path, background, kind="rows")
    assert (tmp_path / BACKGROUND_FILE).is_file()
    loaded = load_background(tmp_path)
    assert loaded is not None and loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, background)
    assert background_kind(tmp_path) == "rows"


def test_a_model_saved_without_a_background_has_none(tmp_path: Path) -> None:
    assert load_background(tmp_path) is None
    assert background_kind(tmp_path) is None
