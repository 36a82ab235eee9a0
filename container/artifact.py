"""The saved model: one directory that training writes and serving loads.

    model/
      model.safetensors   weights (safetensors: tensors only, nothing executable on load)
      optml-model.json    everything else: task, network spec, classes, feature scaling,
                          hyperparameters, metrics, versions, and what model.pt takes and returns
      model.pt            the portable export: scaling, network and output activation compiled by
                          TorchScript, for serving without optml (optml itself never reads it)

Both `train` and `serve` use this module, so the two sides cannot drift apart. `Predictor` is the one
definition of "what the model predicts" from raw rows: scaling, forward pass, output activation;
`ModelArtifact.predict` runs it and adds the labels, and model.pt is the same module compiled.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from optml.container.features import FeatureEncoder
from optml.container.files import atomic_write
from optml.container.kinds import BINARY, REGRESSION
from optml.container.networks import NetworkSpec, build_network

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
METADATA_FILE = "optml-model.json"
EXPORT_FILE = "model.pt"
EXPORT_INFO = "optml-export.json"  # inside model.pt: what it takes and returns (torch.jit.load's _extra_files)


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
    encoder: dict[str, Any] | None = None  # optml.container.features.FeatureEncoder.to_json(), when fitted
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
            "export": export_description(self),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelMetadata:
        check_format_version(data.get("format_version"))
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


def check_format_version(version: object) -> None:
    """Refuse a model this image cannot read, saying what to do.

    Version 1 is the first format, so no older model exists yet. When version 2 comes, an older file is
    not refused: its dict is upgraded here, one function per step (1→2, 2→3, …), before `from_json` reads
    the fields, because users keep the models they trained. A newer file cannot be upgraded: this image
    does not know what changed.
    """
    if version == FORMAT_VERSION:
        return
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise ValueError(
            f"model format version {version} is newer than this image reads (version {FORMAT_VERSION}): the model"
            " was saved by a newer optml image; serve it, or train from it, with that image or a newer one"
        )
    raise ValueError(
        f"model format version {version!r} is not one optml writes; this image reads version {FORMAT_VERSION}"
    )


def export_description(metadata: ModelMetadata) -> dict[str, Any]:
    """What model.pt takes and returns, for whoever serves it without optml; saved in optml-model.json and
    inside model.pt. Categorical columns are one-hot encoded before the model (text cannot enter a float
    tensor): the input columns are then the encoded ones, named `column=category`."""
    categorical = FeatureEncoder.from_json(metadata.encoder).categorical if metadata.encoder else ()
    output: dict[str, Any]
    if metadata.task == REGRESSION:
        output = {"shape": ["rows"], "meaning": "predicted values, in the label's units"}
    else:
        output = {
            "shape": ["rows", len(metadata.classes)],
            "meaning": "class probabilities, in the order of classes",
            "classes": metadata.classes,
        }
    return {
        "file": EXPORT_FILE,
        "format": "torchscript",
        "input": {
            "dtype": "float32",
            "shape": ["rows", *metadata.network.input_shape],
            "columns": metadata.feature_names,
            "one_hot_encoded": list(categorical),
            "scaling": "none: raw values; the model standardizes them",
        },
        "output": {"dtype": "float32"} | output,
    }


class Predictor(torch.nn.Module):
    """Raw float32 rows → predictions: standardization, the network, the output activation.

    `ModelArtifact.predict` runs this module and model.pt is this module compiled by TorchScript, so optml and
    the portable export compute predictions with the same code. Rows are (rows, feature_count) or
    (rows, *input_shape), not standardized; the result is (rows, classes) probabilities or (rows,) values in
    the label's units.
    """

    def __init__(self, network: torch.nn.Module, metadata: ModelMetadata) -> None:
        super().__init__()
        self.network = network
        # Plain tensor attributes, not buffers: TorchScript saves them all the same, and mypy types a
        # buffer as `Tensor | Module`.
        self.feature_mean = torch.tensor(metadata.feature_mean, dtype=torch.float32)
        self.feature_std = torch.tensor(metadata.feature_std, dtype=torch.float32)
        self.feature_count = metadata.feature_count
        self.input_shape = list(metadata.network.input_shape)
        self.regression = metadata.task == REGRESSION
        self.binary = metadata.task == BINARY
        self.target_mean = metadata.target_mean
        self.target_std = metadata.target_std

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        # Without autograd whoever calls: torch's LSTM takes another code path when autograd is on, whose
        # results differ in the last bit, and model.pt must answer exactly as optml's predict does.
        with torch.no_grad():
            count = rows.shape[0]
            standardized = (rows.reshape(count, self.feature_count) - self.feature_mean) / self.feature_std
            outputs = self.network(standardized.reshape([count] + self.input_shape))
            if self.regression:
                return outputs[:, 0] * self.target_std + self.target_mean
            return _probabilities(self.binary, outputs)


@dataclass
class Predictions:
    """Per row: `labels` (original class or regression value) and, for classification, class `scores`."""

    labels: list[Label]
    scores: np.ndarray | None  # shape (rows, classes), probabilities; None for regression


def class_probabilities(task: str, outputs: torch.Tensor) -> torch.Tensor:
    """The output activation for classification: (rows, classes) probabilities from the raw logits —
    sigmoid of the single logit (binary) or softmax (multiclass). Training's metrics use it too."""
    return _probabilities(task == BINARY, outputs)


def _probabilities(binary: bool, outputs: torch.Tensor) -> torch.Tensor:
    # A flag, not the task name: TorchScript (model.pt) cannot read module-level strings.
    # Binary: each class from its own sigmoid — 1 - P(positive) rounds a negative-class probability below
    # 6e-8 to 0 in float32, and serving answers with every significant digit.
    if binary:
        logit = outputs[:, 0]
        return torch.stack([torch.sigmoid(-logit), torch.sigmoid(logit)], dim=1)
    return torch.softmax(outputs, dim=1)


class ModelArtifact:
    """A loaded model, ready to predict on raw (unscaled) feature rows."""

    def __init__(self, network: torch.nn.Module, metadata: ModelMetadata) -> None:
        self.network = network.eval()
        self.metadata = metadata
        self.predictor = Predictor(self.network, metadata).eval()
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
            outputs = self.predictor(torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)))
            if self.task == REGRESSION:
                return Predictions(labels=[float(v) for v in outputs.tolist()], scores=None)
            indices = outputs.argmax(dim=1).tolist()
            classes = self.metadata.classes
            return Predictions(labels=[classes[i] for i in indices], scores=outputs.numpy())


def save_model(model_dir: Path, network: torch.nn.Module, metadata: ModelMetadata) -> None:
    """Write the weights, the portable export and the metadata, each atomically; the metadata last, because
    its presence is what makes a directory a model."""
    model_dir.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in network.state_dict().items()}
    atomic_write(model_dir / WEIGHTS_FILE, lambda temp: save_file(state, str(temp)))
    try:
        exported = export_predictor(metadata, state)
        info = {EXPORT_INFO: json.dumps(export_description(metadata), indent=2) + "\n"}
        # save_to_buffer is torch.jit.save without its deprecation warning (see below), and without the file
        # name that saving to a path writes into the archive (here a temp name, different each time).
        exported_bytes = exported.save_to_buffer(_extra_files=info)
        atomic_write(model_dir / EXPORT_FILE, lambda temp: temp.write_bytes(exported_bytes))
    except Exception as error:  # the export is an extra: a compiler's failure must not cost the trained model
        log.warning("model.pt not written: TorchScript could not compile this model (%s); the rest is saved", error)
        (model_dir / EXPORT_FILE).unlink(missing_ok=True)  # not one from an earlier save of this directory
    text = json.dumps(metadata.to_json(), indent=2, sort_keys=False) + "\n"
    atomic_write(model_dir / METADATA_FILE, lambda temp: temp.write_text(text, encoding="utf-8"))


def export_predictor(metadata: ModelMetadata, state: dict[str, torch.Tensor]) -> torch.jit.ScriptModule:
    """model.pt's module: the network rebuilt from the weights being saved (on the CPU, as `load_model` builds
    it), in a `Predictor`, compiled by TorchScript. TorchScript rather than a torch.export program because
    TorchScript is what serving stacks load without Python code of ours — the SageMaker PyTorch inference
    toolkit's default model_fn, TorchServe's default handlers, Triton's libtorch backend (model.pt) — while a
    torch.export program needs torch.export.load and Python, or an AOTInductor compile per target."""
    network = build_network(metadata.network)
    network.load_state_dict(state)
    with warnings.catch_warnings():
        # torch 2.13 marks TorchScript deprecated in favour of torch.export (see above) and warns on every
        # script() call; the warning says nothing about this model, and it would fail pytest (warnings=error).
        warnings.filterwarnings("ignore", r"`torch\.jit\.script` is deprecated", DeprecationWarning)
        scripted = torch.jit.script(Predictor(network, metadata).eval())
    assert isinstance(scripted, torch.jit.ScriptModule)
    return scripted


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
