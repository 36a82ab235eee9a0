"""The saved model: one directory that training writes and serving loads.

    model/
      model.safetensors   weights (safetensors: tensors only, nothing executable on load)
      optml-model.json    everything else: task, network spec, classes, feature scaling,
                          hyperparameters, metrics, versions

Both `train` and `serve` use this module, so the two sides cannot drift apart. `ModelArtifact.predict`
is the one definition of "what the model predicts": scaling, forward pass, output activation, labels.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from container.files import atomic_write
from container.networks import NetworkSpec, build_network

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
METADATA_FILE = "optml-model.json"

BINARY = "binary_classification"
MULTICLASS = "multiclass_classification"
REGRESSION = "regression"
TASKS = (BINARY, MULTICLASS, REGRESSION)

Label = int | float | str


@dataclass
class ModelMetadata:
    """Everything about a model except its weights.

    `feature_mean`/`feature_std` hold one value per input value of a row (prod(input_shape) of them),
    already broadcast from per-feature (tabular), per-channel (images) or per-feature-over-time
    (sequences) statistics, so applying them is one elementwise operation on a flattened row.
    """

    task: str
    network: NetworkSpec
    feature_count: int  # values per row, flattened: prod(network.input_shape)
    feature_mean: list[float]
    feature_std: list[float]
    classes: list[Label] = field(default_factory=list)  # index → original label (classification)
    feature_names: list[str] = field(default_factory=list)  # tabular data with a header
    encoder: dict[str, Any] | None = None  # container.features.FeatureEncoder.to_json(), when fitted
    target_mean: float = 0.0  # regression targets are trained standardized
    target_std: float = 1.0
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "task": self.task,
            "network": self.network.to_json(),
            "feature_count": self.feature_count,
            "feature_mean": self.feature_mean,
            "feature_std": self.feature_std,
            "classes": self.classes,
            "feature_names": self.feature_names,
            "encoder": self.encoder,
            "target_mean": self.target_mean,
            "target_std": self.target_std,
            "hyperparameters": self.hyperparameters,
            "metrics": {name: (value if math.isfinite(value) else None) for name, value in self.metrics.items()},
            "versions": self.versions,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelMetadata:
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(f"model format version {version!r}; this image reads version {FORMAT_VERSION}")
        return cls(
            task=data["task"],
            network=NetworkSpec.from_json(data["network"]),
            feature_count=int(data["feature_count"]),
            feature_mean=[float(v) for v in data["feature_mean"]],
            feature_std=[float(v) for v in data["feature_std"]],
            classes=list(data.get("classes", [])),
            feature_names=[str(name) for name in data.get("feature_names", [])],
            encoder=data.get("encoder"),
            target_mean=float(data.get("target_mean", 0.0)),
            target_std=float(data.get("target_std", 1.0)),
            hyperparameters=dict(data.get("hyperparameters", {})),
            metrics={k: float("nan") if v is None else float(v) for k, v in data.get("metrics", {}).items()},
            versions=dict(data.get("versions", {})),
        )


@dataclass
class Predictions:
    """Per row: `labels` (original class or regression value) and, for classification, class `scores`."""

    labels: list[Label]
    scores: np.ndarray | None  # shape (rows, classes), probabilities; None for regression


def class_probabilities(task: str, outputs: torch.Tensor) -> torch.Tensor:
    """The output activation for classification: (rows, classes) probabilities from the raw logits —
    sigmoid of the single logit (binary) or softmax (multiclass). Training's metrics use it too.
    Binary: each class from its own sigmoid — 1 - P(positive) rounds a negative-class probability below
    6e-8 to 0 in float32, and serving answers with every significant digit."""
    if task == BINARY:
        logit = outputs[:, 0]
        return torch.stack([torch.sigmoid(-logit), torch.sigmoid(logit)], dim=1)
    return torch.softmax(outputs, dim=1)


class ModelArtifact:
    """A loaded model, ready to predict on raw (unscaled) feature rows."""

    def __init__(self, network: torch.nn.Module, metadata: ModelMetadata) -> None:
        self.network = network.eval()
        self.metadata = metadata
        self._mean = torch.tensor(metadata.feature_mean, dtype=torch.float32)
        self._std = torch.tensor(metadata.feature_std, dtype=torch.float32)
        self._input_shape = tuple(metadata.network.input_shape)

    @property
    def feature_count(self) -> int:
        return self.metadata.feature_count

    @property
    def feature_names(self) -> list[str]:
        return self.metadata.feature_names

    @property
    def task(self) -> str:
        return self.metadata.task

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One row as the network takes it: (features,), (channels, height, width) or (time, features)."""
        return self._input_shape

    def predict(self, features: np.ndarray) -> Predictions:
        """`features`: float rows, flattened (rows, feature_count) or shaped (rows, *input_shape), already
        validated by the caller."""
        with torch.inference_mode():
            rows = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)).reshape(len(features), -1)
            inputs = ((rows - self._mean) / self._std).reshape(len(features), *self._input_shape)
            outputs = self.network(inputs)
            if self.task == REGRESSION:
                values = outputs[:, 0] * self.metadata.target_std + self.metadata.target_mean
                return Predictions(labels=[float(v) for v in values.tolist()], scores=None)
            probabilities = class_probabilities(self.task, outputs)
            indices = probabilities.argmax(dim=1).tolist()
            classes = self.metadata.classes
            return Predictions(labels=[classes[i] for i in indices], scores=probabilities.numpy())


def save_model(model_dir: Path, network: torch.nn.Module, metadata: ModelMetadata) -> None:
    model_dir.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in network.state_dict().items()}
    atomic_write(model_dir / WEIGHTS_FILE, lambda temp: save_file(state, str(temp)))
    text = json.dumps(metadata.to_json(), indent=2, sort_keys=False) + "\n"
    atomic_write(model_dir / METADATA_FILE, lambda temp: temp.write_text(text, encoding="utf-8"))


class ModelLoadError(Exception):
    """The model directory is missing or not a model this image wrote."""


def load_model(model_dir: Path) -> ModelArtifact:
    metadata_path = model_dir / METADATA_FILE
    weights_path = model_dir / WEIGHTS_FILE
    for required in (metadata_path, weights_path):
        if not required.is_file():
            present = sorted(p.name for p in model_dir.iterdir()) if model_dir.is_dir() else []
            raise ModelLoadError(
                f"{required} not found; a model trained by this image has {METADATA_FILE} and {WEIGHTS_FILE}"
                f" (found: {', '.join(present) or 'nothing'})"
            )
    try:
        metadata = ModelMetadata.from_json(json.loads(metadata_path.read_text(encoding="utf-8")))
        network = build_network(metadata.network)
        network.load_state_dict(load_file(str(weights_path)))
    except (ValueError, KeyError, TypeError, RuntimeError) as error:
        raise ModelLoadError(f"cannot load the model in {model_dir}: {error}") from error
    return ModelArtifact(network, metadata)
