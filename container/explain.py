"""SHAP explanations of a saved model, shared by training (global importance) and serving (per request).

    background.safetensors   (in the model directory) the explainer's background: k-means centroids of the
                             train rows by default (no personal data), or a raw sample (explain_background=rows);
                             raw, unscaled, encoded rows like the ones `ModelArtifact.predict` takes. The file's
                             metadata says which kind.

`Explainer(artifact, background).explain(rows)` returns, per row, the base value and one attribution per
user column (one-hot categories summed back to their column) whose sum plus the base value is the model's
score: the positive class's probability (binary), the predicted class's probability (multiclass) or the
predicted value in the label's units (regression).

Methods (the analysis.json key names the method honestly):

- "deep_lift_shap" (MLP): DeepLIFT-SHAP, DeepLIFT's rescale rule averaged over the background rows, as
  captum's DeepLiftShap computes it; for the MLP's layer types `DeepLiftMLP` runs the same rules without
  captum's per-call hooks (1 ms per single-row request instead of ~4; tested equal to captum's).
  It sums exactly (up to float32 rounding: `TOLERANCE`) to score minus base value, the base value being the
  mean score over the background. The output activation runs as modules so the rescale rule covers it:
  sigmoid (binary); for multiclass the explained class's softmax probability written as 1 / Σ exp(z_j - z_c),
  two elementwise modules (captum's own softmax rule does not sum to the probability).
- "gradient_shap" (CNN, RNN, LSTM, GRU): DeepLIFT has no rule for recurrent cells, and captum's max-pooling
  rule does not sum to the score (measured: off by 2 % of the target's spread on a small CNN). Expected gradients, i.e.
  integrated gradients from each background row (Gauss-Legendre, `GRADIENT_STEPS` steps), averaged; captum's
  GradientShap samples the same integral at random points, which sums far less closely per row. Its sum
  approximates the score within `TOLERANCE["gradient_shap"]`, not exactly.

Images (CNN) are explained per channel (a pixel map does not fit a response); sequences per input feature,
summed over time steps. captum is imported lazily, by `Explainer`, and only where `DeepLiftMLP` does not
apply, so serving an MLP never imports it.
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from optml.container.artifact import ModelArtifact, ModelMetadata
from optml.container.errors import UserError
from optml.container.features import FeatureEncoder
from optml.container.files import atomic_write
from optml.container.kinds import BINARY, IMAGE_MODELS, MULTICLASS, REGRESSION, SEQUENCE_MODELS, TABULAR_MODELS

BACKGROUND_FILE = "background.safetensors"
BACKGROUND_KINDS = ("kmeans", "rows")
DEEP_LIFT_SHAP = "deep_lift_shap"
GRADIENT_SHAP = "gradient_shap"
GRADIENT_STEPS = 64
# |base_value + sum(values) - score| is at most TOLERANCE[method] × scale, scale = 1 for probabilities and
# max(1, |score|, target_std) for regression: float32 rounding for DeepLIFT; for expected gradients the
# quadrature error, which benchmarks/explain_completeness.py measures on trained LSTM/GRU/CNN nets: at 64 steps
# at most 0.015 in probability and 0.6 % of target_std (32 steps: 0.025; 128: 0.007).
TOLERANCE = {DEEP_LIFT_SHAP: 1e-4, GRADIENT_SHAP: 3e-2}
_KMEANS_ITERATIONS = 50


@dataclass
class Explanations:
    """Attributions of `rows` rows: `values[i, j]` is column `columns[j]`'s share of row i's score."""

    method: str  # the analysis.json key: "deep_lift_shap" or "gradient_shap"
    columns: list[str]  # the user's columns (tabular) or input names
    base_values: np.ndarray  # (rows,)
    values: np.ndarray  # (rows, len(columns))
    scores: np.ndarray  # (rows,) the explained score: base_values + values.sum(1) reproduces it
    targets: np.ndarray  # (rows,) the class index explained (binary: 1; regression: 0)

    def as_dicts(self) -> list[dict[str, object]]:
        """Per row {"base_value": b, "attributions": {column: value}}: the response's "explanation"."""
        return [
            {"base_value": float(base), "attributions": dict(zip(self.columns, map(float, row), strict=True))}
            for base, row in zip(self.base_values, self.values, strict=True)
        ]


def method_for(metadata: ModelMetadata) -> str:
    """The attribution method (and analysis.json key) for the model's network kind."""
    return DEEP_LIFT_SHAP if metadata.network.kind in TABULAR_MODELS else GRADIENT_SHAP


def tolerance(metadata: ModelMetadata, method: str, scores: np.ndarray) -> np.ndarray:
    """Per row, the documented bound on |base_value + sum(values) - score|."""
    if metadata.task != REGRESSION:
        return np.full(len(scores), TOLERANCE[method])
    return TOLERANCE[method] * np.maximum(np.maximum(1.0, np.abs(scores)), metadata.target_std)


# --- the background -------------------------------------------------------------------------------------


def summarize_background(rows: np.ndarray, size: int, kind: str, seed: int) -> np.ndarray:
    """`size` k-means centroids (kind="kmeans") or sampled rows (kind="rows") of raw float rows.

    Rows are raw (unscaled) encoded rows, flattened or shaped; the result has the same per-row shape, at most
    `size` rows (fewer when fewer distinct rows exist). A bounded sample of the train rows is enough: the
    streaming trainer passes the rows it collected. k-means is plain numpy (k-means++ seeding, Lloyd steps)
    because scikit-learn is not in the image; a one-hot column's centroid is a fraction, which DeepLIFT takes.
    """
    if kind not in BACKGROUND_KINDS:
        raise UserError(f"explain_background must be one of {', '.join(BACKGROUND_KINDS)}, got {kind!r}")
    if size < 1:
        raise UserError(f"explain_background_size must be at least 1, got {size}")
    data = np.asarray(rows, dtype=np.float32)
    if data.ndim < 2 or len(data) == 0:
        raise UserError("the SHAP background needs at least one train row")
    flat = data.reshape(len(data), -1)
    generator = np.random.default_rng(seed)
    if kind == "rows" or len(flat) <= size:
        picked = np.sort(generator.choice(len(flat), size=min(size, len(flat)), replace=False))
        return data[picked].copy()
    # Clustered at unit variance per value, as the network sees its inputs: in raw units a column measured in
    # dollars would decide the clusters alone. The centroids go back to raw units.
    points = flat.astype(np.float64)
    spread = points.std(0)
    spread[spread == 0] = 1.0
    centroids = _kmeans(points / spread, size, generator) * spread
    return centroids.astype(np.float32).reshape((len(centroids), *data.shape[1:]))


def _kmeans(points: np.ndarray, size: int, generator: np.random.Generator) -> np.ndarray:
    """k-means++ seeding then Lloyd iterations; empty clusters are dropped."""
    centroids = points[[generator.integers(len(points))]]
    distances = ((points - centroids[0]) ** 2).sum(1)
    for _ in range(1, size):
        total = distances.sum()
        if total <= 0:  # fewer distinct points than clusters
            break
        chosen = points[generator.choice(len(points), p=distances / total)]
        centroids = np.vstack([centroids, chosen])
        distances = np.minimum(distances, ((points - chosen) ** 2).sum(1))
    for _ in range(_KMEANS_ITERATIONS):
        squared = (points**2).sum(1)[:, None] - 2 * points @ centroids.T + (centroids**2).sum(1)[None, :]
        nearest = squared.argmin(1)
        counts = np.bincount(nearest, minlength=len(centroids))
        sums = np.zeros_like(centroids)
        np.add.at(sums, nearest, points)
        updated = sums[counts > 0] / counts[counts > 0, None]
        if updated.shape == centroids.shape and np.allclose(updated, centroids):
            break
        centroids = updated
    return centroids


def save_background(model_dir: Path, background: np.ndarray, kind: str = "kmeans") -> None:
    """Write background.safetensors, saying in its metadata which kind of background it holds."""
    from safetensors.numpy import save_file

    if kind not in BACKGROUND_KINDS:
        raise ValueError(f"background kind must be one of {BACKGROUND_KINDS}, got {kind!r}")
    tensors = {"background": np.ascontiguousarray(background, dtype=np.float32)}
    model_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(model_dir / BACKGROUND_FILE, lambda temp: save_file(tensors, str(temp), metadata={"kind": kind}))


def load_background(model_dir: Path) -> np.ndarray | None:
    """The saved background, or None for a model saved without one (it cannot be explained)."""
    path = model_dir / BACKGROUND_FILE
    if not path.is_file():
        return None
    from safetensors.numpy import load_file

    return load_file(str(path))["background"]


def background_kind(model_dir: Path) -> str | None:
    """Which kind of background the model directory holds ("kmeans" or "rows"), None without one."""
    path = model_dir / BACKGROUND_FILE
    if not path.is_file():
        return None
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as handle:
        return (handle.metadata() or {}).get("kind")


# --- columns --------------------------------------------------------------------------------------------


def attribution_columns(metadata: ModelMetadata) -> tuple[list[str], np.ndarray]:
    """The explained columns and the (input values, columns) 0/1 matrix that sums attributions into them:
    one-hot outputs into their user column (tabular), pixels into channels (images), time steps into
    features (sequences)."""
    shape = tuple(metadata.network.input_shape)
    count = int(np.prod(shape))
    if metadata.network.kind in IMAGE_MODELS:
        names = [f"channel_{c}" for c in range(shape[0])]
        owner = np.repeat(np.arange(shape[0]), count // shape[0])
    elif metadata.network.kind in SEQUENCE_MODELS:
        names = _feature_names(metadata, shape[-1])
        owner = np.tile(np.arange(shape[-1]), count // shape[-1])
    elif metadata.encoder:
        encoder = FeatureEncoder.from_json(metadata.encoder)
        names = list(encoder.input_names)
        owner = np.repeat(np.arange(len(names)), [column.width for column in encoder.columns])
    else:
        names = _feature_names(metadata, count)
        owner = np.arange(count)
    grouping = np.zeros((count, len(names)), dtype=np.float64)
    grouping[np.arange(count), owner] = 1.0
    return names, grouping


def _feature_names(metadata: ModelMetadata, count: int) -> list[str]:
    names = metadata.feature_names
    return list(names) if len(names) == count else [f"feature_{i}" for i in range(count)]


# --- the explained score, as modules DeepLIFT's rules cover -----------------------------------------------


class _Exp(nn.Module):
    """exp, clamped at e^80 so float32 cannot overflow (a probability that small is 0 anyway)."""

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        return torch.exp(values.clamp(max=80.0))


class _Reciprocal(nn.Module):
    def forward(self, values: torch.Tensor) -> torch.Tensor:
        return 1.0 / values


class ScoreModel(nn.Module):
    """Raw rows (rows, *input_shape) and the explained class (one-hot) → the explained score (rows, 1):
    standardization (linear), the network, then the output activation as modules. The score equals
    `Predictor`'s, up to float32 rounding."""

    def __init__(self, network: nn.Module, metadata: ModelMetadata) -> None:
        super().__init__()
        self.network = network
        self.mean = torch.tensor(metadata.feature_mean, dtype=torch.float32).reshape(metadata.network.input_shape)
        self.std = torch.tensor(metadata.feature_std, dtype=torch.float32).reshape(metadata.network.input_shape)
        self.task = metadata.task
        self.target_mean = metadata.target_mean
        self.target_std = metadata.target_std
        self.sigmoid = nn.Sigmoid()
        self.exp = _Exp()
        self.reciprocal = _Reciprocal()

    def forward(self, rows: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = self.network((rows - self.mean) / self.std)
        if self.task == REGRESSION:
            return logits[:, :1] * self.target_std + self.target_mean
        if self.task == BINARY:
            return self.sigmoid(logits[:, :1])
        # p_c = 1 / Σ_j exp(z_j - z_c): only elementwise nonlinearities, each one module.
        differences = logits - (logits * target).sum(1, keepdim=True)
        return self.reciprocal(self.exp(differences).sum(1, keepdim=True))


def _register_rules() -> None:
    """Tell captum's DeepLift that _Exp and _Reciprocal are elementwise (its rescale rule applies)."""
    from captum.attr._core import deep_lift

    deep_lift.SUPPORTED_NON_LINEAR.setdefault(_Exp, deep_lift.nonlinear)
    deep_lift.SUPPORTED_NON_LINEAR.setdefault(_Reciprocal, deep_lift.nonlinear)


# --- DeepLIFT-SHAP for MLPs without captum's per-call hooks ---------------------------------------------

_ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid)
_CHUNK_ROWS = 256  # rows attributed at once: (rows, background, width) multipliers per layer


class DeepLiftMLP:
    """captum's DeepLiftShap rules (rescale for elementwise nonlinearities, linear layers exact), written out
    for the MLP's layer types: Linear, BatchNorm1d (eval), Dropout (eval), ReLU, LeakyReLU, Tanh, Sigmoid.
    One forward pass of the rows and one of the background, then multipliers back through the layers:
    no hooks, no autograd. captum spends ~3.5 ms per single-row call registering and removing hooks; this
    takes a fraction of that, and tests/unit/test_explain.py checks it against captum's DeepLiftShap."""

    def __init__(self, layers: list[nn.Module], metadata: ModelMetadata, background: torch.Tensor) -> None:
        self.layers = layers
        self.mean = torch.tensor(metadata.feature_mean, dtype=torch.float32)
        self.std = torch.tensor(metadata.feature_std, dtype=torch.float32)
        self.task = metadata.task
        self.target_std = metadata.target_std
        self.background = background.reshape(len(background), -1)
        with torch.no_grad():
            self.background_trace = self._trace(self.background)

    @classmethod
    def build(cls, network: nn.Module, metadata: ModelMetadata, background: torch.Tensor) -> DeepLiftMLP | None:
        """None when the network holds a layer these rules do not cover (then captum's DeepLiftShap runs)."""
        if metadata.network.kind not in TABULAR_MODELS:
            return None
        layers = [m for m in network.modules() if not isinstance(m, nn.Sequential | nn.ModuleList) and m is not network]
        supported = (nn.Linear, nn.BatchNorm1d, nn.Dropout, *_ELEMENTWISE)
        if network.training or not layers or not all(type(m) in supported for m in layers):
            return None
        return cls(layers, metadata, background)

    def _trace(self, rows: torch.Tensor) -> list[torch.Tensor]:
        """Each layer's input, then the logits."""
        values = [(rows - self.mean) / self.std]
        for layer in self.layers:
            values.append(layer(values[-1]))
        return values

    def attribute(self, rows: torch.Tensor, targets: np.ndarray) -> torch.Tensor:
        with torch.no_grad():
            parts = [
                self._attribute(rows[start : start + _CHUNK_ROWS], targets[start : start + _CHUNK_ROWS])
                for start in range(0, len(rows), _CHUNK_ROWS)
            ]
        return torch.cat(parts)

    def _attribute(self, rows: torch.Tensor, targets: np.ndarray) -> torch.Tensor:
        flat = rows.reshape(len(rows), -1)
        trace = self._trace(flat)
        multipliers = self._output_multipliers(trace[-1], self.background_trace[-1], targets)
        for index in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[index]
            if isinstance(layer, nn.Linear):
                multipliers = multipliers @ layer.weight
            elif isinstance(layer, nn.BatchNorm1d):
                scale = torch.rsqrt(layer.running_var + layer.eps)  # type: ignore[operator,arg-type]
                multipliers = multipliers * (scale if layer.weight is None else scale * layer.weight)
            elif isinstance(layer, _ELEMENTWISE):
                inputs, outputs = trace[index], trace[index + 1]
                background_in, background_out = self.background_trace[index], self.background_trace[index + 1]
                multipliers = multipliers * _rescale(
                    inputs, outputs, background_in, background_out, _derivative(layer, inputs, outputs)
                )
        differences = flat[:, None, :] - self.background[None, :, :]
        return (multipliers / self.std * differences).mean(1)

    def _output_multipliers(self, logits: torch.Tensor, reference: torch.Tensor, targets: np.ndarray) -> torch.Tensor:
        """d score / d logit per (row, background row, logit), by the rescale rule through the output
        activation: sigmoid (binary), 1 / Σ exp(z_j - z_c) (multiclass), the label's scale (regression)."""
        shape = (len(logits), len(reference), logits.shape[1])
        if self.task == REGRESSION:
            return torch.full(shape, self.target_std)
        if self.task == BINARY:
            z, z_ref = logits[:, None, :], reference[None, :, :]
            out, out_ref = torch.sigmoid(z), torch.sigmoid(z_ref)
            return _rescale_pairs(z, out, z_ref, out_ref, out * (1 - out))
        chosen = torch.from_numpy(targets).long()
        d = logits - logits[torch.arange(len(logits)), chosen][:, None]  # (rows, K)
        d_ref = reference[None, :, :] - reference[:, chosen].T[:, :, None]  # (rows, B, K)
        e, e_ref = torch.exp(d.clamp(max=80.0))[:, None, :], torch.exp(d_ref.clamp(max=80.0))
        s, s_ref = e.sum(2, keepdim=True), e_ref.sum(2, keepdim=True)
        through_sum = _rescale_pairs(s, 1 / s, s_ref, 1 / s_ref, -1 / s**2)
        per_d = through_sum * _rescale_pairs(d[:, None, :], e, d_ref, e_ref, e)
        one_hot = torch.nn.functional.one_hot(chosen, logits.shape[1]).to(per_d.dtype)[:, None, :]
        return per_d - one_hot * per_d.sum(2, keepdim=True)


def _rescale(
    inputs: torch.Tensor, outputs: torch.Tensor, ref_in: torch.Tensor, ref_out: torch.Tensor, slope: torch.Tensor
) -> torch.Tensor:
    """Per (row, background row, unit): Δout / Δin, or the slope at the row where Δin is ~0."""
    return _rescale_pairs(
        inputs[:, None, :], outputs[:, None, :], ref_in[None, :, :], ref_out[None, :, :], slope[:, None, :]
    )


def _rescale_pairs(
    inputs: torch.Tensor, outputs: torch.Tensor, ref_in: torch.Tensor, ref_out: torch.Tensor, slope: torch.Tensor
) -> torch.Tensor:
    delta_in = inputs - ref_in
    small = delta_in.abs() < 1e-10  # captum's threshold
    return torch.where(small, slope, (outputs - ref_out) / torch.where(small, 1.0, delta_in))


def _derivative(layer: nn.Module, inputs: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
    if isinstance(layer, nn.ReLU):
        return (inputs > 0).to(inputs.dtype)
    if isinstance(layer, nn.LeakyReLU):
        return torch.where(inputs > 0, 1.0, layer.negative_slope)
    if isinstance(layer, nn.Tanh):
        return 1 - outputs**2
    return outputs * (1 - outputs)  # sigmoid


# --- the explainer --------------------------------------------------------------------------------------


class Explainer:
    """Explains rows of one model against one background; build it once (the attribution objects are built
    here) and call `explain` per request, from any thread: calls are serialized, because captum hooks the
    network while it attributes."""

    def __init__(self, artifact: ModelArtifact, background: np.ndarray, *, use_captum: bool = False) -> None:
        """`use_captum`: run captum's DeepLiftShap even where `DeepLiftMLP` covers the network (tests compare
        the two)."""
        self.artifact = artifact
        self.background = np.asarray(background, dtype=np.float32)
        metadata = artifact.metadata
        shape = tuple(metadata.network.input_shape)
        if self.background.ndim < 2 or len(self.background) == 0 or self.background[0].size != np.prod(shape):
            raise ValueError(
                f"the SHAP background has shape {self.background.shape}; expected (rows, {int(np.prod(shape))})"
                f" or (rows, {', '.join(map(str, shape))}) for this model"
            )
        self.method = method_for(metadata)
        self.columns, self._grouping = attribution_columns(metadata)
        self._model = ScoreModel(artifact.network, metadata).eval()
        baselines = torch.from_numpy(self.background.reshape((len(self.background), *shape)))
        # DeepLiftShap wants two or more baselines; a repeated row is the same average.
        self._baselines = baselines if len(baselines) > 1 else baselines.repeat(2, *[1] * len(shape))
        self._classes = max(1, len(metadata.classes))
        self._background_scores = self._predict(self.background)
        self._lock = threading.Lock()
        fast = None if use_captum else DeepLiftMLP.build(artifact.network, metadata, baselines)
        self._fast = fast
        self._attribution: Any = self._build_attribution() if fast is None else None

    def _build_attribution(self) -> Any:
        if self.method == DEEP_LIFT_SHAP:
            from captum.attr import DeepLiftShap

            _register_rules()
            return DeepLiftShap(self._model)
        from captum.attr import IntegratedGradients

        return IntegratedGradients(self._model)

    def _predict(self, rows: np.ndarray) -> np.ndarray:
        """(rows, classes) probabilities, or (rows, 1) regression values."""
        with torch.inference_mode():
            outputs = self.artifact.predictor(torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32)))
        values = outputs.numpy().astype(np.float64)
        return values if values.ndim == 2 else values[:, None]

    def _targets(self, predicted: np.ndarray) -> np.ndarray:
        task = self.artifact.metadata.task
        if task == MULTICLASS:
            return predicted.argmax(1)
        return np.full(len(predicted), 1 if task == BINARY else 0)

    def explain(self, rows: np.ndarray, predicted: np.ndarray | None = None) -> Explanations:
        """`rows`: raw float rows as `ModelArtifact.predict` takes them (validated by the caller).
        `predicted`: what `ModelArtifact.predict` already computed for them — class probabilities (rows,
        classes) or regression values (rows,) — so that the rows need not go through the network again."""
        data = np.ascontiguousarray(rows, dtype=np.float32)
        predicted = (
            self._predict(data) if predicted is None else np.asarray(predicted, np.float64).reshape(len(data), -1)
        )
        targets = self._targets(predicted)
        scores = predicted[np.arange(len(data)), targets]
        base_values = self._background_scores[:, targets].mean(0)
        if len(data) == 0:
            values = np.zeros((0, len(self.columns)))
        else:
            attributions = self._attribute(data, targets)
            values = attributions.reshape(len(data), -1).astype(np.float64) @ self._grouping
        return Explanations(self.method, list(self.columns), base_values, values, scores, targets)

    def _attribute(self, data: np.ndarray, targets: np.ndarray) -> np.ndarray:
        inputs = torch.from_numpy(data.reshape((len(data), *self._baselines.shape[1:])))
        if self._fast is not None:
            return self._fast.attribute(inputs, targets).numpy()
        one_hot = torch.zeros(len(data), self._classes)
        one_hot[np.arange(len(data)), targets] = 1.0
        with self._lock, torch.inference_mode(False), torch.enable_grad(), warnings.catch_warnings():
            # captum warns on every call that it hooks the activations (and removes the hooks after)
            warnings.filterwarnings("ignore", "Setting forward, backward hooks", UserWarning)
            if self.method == DEEP_LIFT_SHAP:
                result = self._attribution.attribute(inputs, self._baselines, additional_forward_args=(one_hot,))
                # captum 0.9 removes its hooks after each call but keeps their handles: lists that grow by a
                # dozen per call, every call walking them all (a leak, and explaining slowed by ~5 µs per
                # call made so far). Cleared here, the handles' hooks already being removed.
                self._attribution.forward_handles.clear()
                self._attribution.backward_handles.clear()
            else:
                result = self._expected_gradients(inputs, one_hot)
        return result.detach().numpy()

    def _expected_gradients(self, inputs: torch.Tensor, one_hot: torch.Tensor) -> torch.Tensor:
        """Integrated gradients from every background row to every input, averaged over the background."""
        count, backgrounds = len(inputs), len(self._baselines)
        expanded = inputs.repeat_interleave(backgrounds, dim=0)
        baselines = self._baselines.repeat(count, *[1] * (inputs.dim() - 1))
        attributions = self._attribution.attribute(
            expanded,
            baselines,
            additional_forward_args=(one_hot.repeat_interleave(backgrounds, dim=0),),
            n_steps=GRADIENT_STEPS,
            method="gausslegendre",
            internal_batch_size=max(len(expanded), 4096),
        )
        return attributions.reshape(count, backgrounds, *inputs.shape[1:]).mean(1)
