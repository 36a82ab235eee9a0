"""Incremental and transfer learning: start from a model this image trained before.

The previous model arrives as channel `model` — SageMaker passes the `model.tar.gz` of an earlier job
(content type application/x-sagemaker-model), or its extracted files. Training then starts from its
weights *and* its preprocessing (categorical encoding, feature scaling, classes), so "the January fraud
model, updated with February's data" sees February's rows exactly as it saw January's.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from optml.container.archive import ArchiveError, safe_extract
from optml.container.artifact import METADATA_FILE, ModelArtifact, ModelLoadError, load_model
from optml.container.errors import UserError
from optml.container.features import FeatureEncoder
from optml.container.networks import NetworkSpec

log = logging.getLogger(__name__)

# Hyperparameters that define the network's shape: with a previous model they must match it (or be unset).
SHAPE_KEYS = (
    "model",
    "hidden_units",
    "conv_channels",
    "kernel_size",
    "hidden_size",
    "num_layers",
    "bidirectional",
    "batch_norm",
)


@dataclass
class PreviousModel:
    artifact: ModelArtifact
    source: Path

    @property
    def encoder(self) -> FeatureEncoder | None:
        data = self.artifact.metadata.encoder
        return FeatureEncoder.from_json(data) if data else None

    @property
    def spec(self) -> NetworkSpec:
        return self.artifact.metadata.network

    def scaling(self) -> tuple[np.ndarray, np.ndarray]:
        shape = self.spec.input_shape
        meta = self.artifact.metadata
        return (
            np.asarray(meta.feature_mean, dtype=np.float32).reshape(shape),
            np.asarray(meta.feature_std, dtype=np.float32).reshape(shape),
        )


def find_model_dir(channel_dir: Path, scratch: Path) -> Path:
    """The directory holding optml-model.json: the channel itself, or a tarball in it, extracted."""
    if (channel_dir / METADATA_FILE).is_file():
        return channel_dir
    archives = sorted(channel_dir.rglob("*.tar.gz")) + sorted(channel_dir.rglob("*.tgz"))
    if not archives:
        found = sorted(p.name for p in channel_dir.iterdir())
        raise UserError(
            f"channel 'model' ({channel_dir}) holds neither {METADATA_FILE} nor a model.tar.gz from this image"
            f" (found: {', '.join(found) or 'nothing'})"
        )
    if len(archives) > 1:  # which one was meant? Never guess: warm-starting from the wrong model is silent
        raise UserError(
            f"channel 'model' holds {len(archives)} archives ({', '.join(str(a) for a in archives[:5])}):"
            " pass exactly one model.tar.gz"
        )
    try:
        safe_extract(archives[0], scratch)
    except ArchiveError as error:
        raise UserError(f"channel 'model': refusing to extract {archives[0]}: {error}") from None
    candidates = [p.parent for p in scratch.rglob(METADATA_FILE)]
    if not candidates:
        raise UserError(f"{archives[0]} is not a model trained by this image: it has no {METADATA_FILE}")
    return candidates[0]


def load_previous_model(channel_dir: Path) -> PreviousModel:
    scratch = Path(tempfile.mkdtemp(prefix="optml-previous-model-"))
    try:
        model_dir = find_model_dir(channel_dir, scratch)
        artifact = load_model(model_dir)
    except ModelLoadError as error:
        raise UserError(f"channel 'model': {error}") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    meta = artifact.metadata
    log.info(
        "warm start from channel 'model': %s %s, %d values per row, classes %s",
        meta.task, meta.network.kind, meta.feature_count, meta.classes or "-",
    )  # fmt: skip
    return PreviousModel(artifact, channel_dir)


def check_compatible(
    previous: PreviousModel, explicit: dict[str, object], task: str | None, input_shape: tuple[int, ...]
) -> None:
    """The new job must describe the same network and data as the previous model: say what differs."""
    meta = previous.artifact.metadata
    problems = []
    if task is not None and task != meta.task:
        problems.append(f"task={task} but the previous model does {meta.task}")
    if input_shape != previous.spec.input_shape:
        problems.append(
            f"the new data has rows shaped {list(input_shape)} (after encoding) but the previous model takes"
            f" {list(previous.spec.input_shape)}: the same features, in the same order, are needed"
        )
    spec = previous.spec.to_json()
    for key in SHAPE_KEYS:
        if key in explicit:
            previous_value = spec["kind"] if key == "model" else spec[key]
            value = explicit[key]
            new_value = list(value) if isinstance(value, tuple) else value
            if new_value != previous_value:
                problems.append(f"{key}={new_value} but the previous model has {key}={previous_value}")
    if problems:
        raise UserError("channel 'model' does not fit this job: " + "; ".join(problems))
