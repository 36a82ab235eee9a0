"""Where things live under /opt/ml, resolved once from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_ROOT = Path("/opt/ml")


@dataclass(frozen=True)
class Paths:
    """The /opt/ml tree of one container run.

    `root` is /opt/ml in a real job; tests point it at a temporary directory with OPTML_ROOT.
    The SageMaker toolkits' SM_* variables are honoured as overrides because users script against them,
    but the platform itself never sets them.
    """

    root: Path = DEFAULT_ROOT
    model_override: Path | None = None
    output_data_override: Path | None = None
    channel_overrides: Mapping[str, Path] = field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Paths:
        env = os.environ if environ is None else environ
        channels = {
            key[len("SM_CHANNEL_") :].lower(): Path(value)
            for key, value in env.items()
            if key.startswith("SM_CHANNEL_") and value
        }
        return cls(
            root=Path(env.get("OPTML_ROOT") or DEFAULT_ROOT),
            model_override=Path(env["SM_MODEL_DIR"]) if env.get("SM_MODEL_DIR") else None,
            output_data_override=Path(env["SM_OUTPUT_DATA_DIR"]) if env.get("SM_OUTPUT_DATA_DIR") else None,
            channel_overrides=channels,
        )

    @property
    def config_dir(self) -> Path:
        return self.root / "input" / "config"

    @property
    def hyperparameters_file(self) -> Path:
        return self.config_dir / "hyperparameters.json"

    @property
    def resource_config_file(self) -> Path:
        return self.config_dir / "resourceconfig.json"

    @property
    def input_data_config_file(self) -> Path:
        return self.config_dir / "inputdataconfig.json"

    @property
    def checkpoint_config_file(self) -> Path:
        return self.config_dir / "checkpointconfig.json"

    @property
    def data_dir(self) -> Path:
        return self.root / "input" / "data"

    def channel_dir(self, channel: str) -> Path:
        return self.channel_overrides.get(channel.lower(), self.data_dir / channel)

    @property
    def model_dir(self) -> Path:
        return self.model_override or self.root / "model"

    @property
    def models_dir(self) -> Path:
        """Multi-model endpoints: where SageMaker places the models it asks the server to load."""
        return self.root / "models"

    @property
    def output_dir(self) -> Path:
        return self.root / "output"

    @property
    def output_data_dir(self) -> Path:
        return self.output_data_override or self.output_dir / "data"

    @property
    def tensorboard_dir(self) -> Path:
        """TensorBoard event files (hyperparameter tensorboard): point the job's TensorBoardOutputConfig
        LocalPath here and SageMaker uploads them to S3 while the job runs."""
        return self.output_dir / "tensorboard"

    @property
    def failure_file(self) -> Path:
        return self.output_dir / "failure"

    @property
    def checkpoints_dir(self) -> Path:
        return self.root / "checkpoints"

    @property
    def code_dir(self) -> Path:
        """Script mode: where the user's code is unpacked (and where SDK v2 local mode mounts it)."""
        return self.root / "code"

    # Processing jobs: SageMaker mounts each ProcessingInput at the LocalPath the request names (by convention
    # under processing/input/) and uploads each ProcessingOutput's LocalPath when the job ends.

    @property
    def processing_job_config_file(self) -> Path:
        """Written by SageMaker for a Processing job only: its presence tells a Processing job apart."""
        return self.root / "config" / "processingjobconfig.json"

    def processing_input_dir(self, name: str) -> Path:
        return self.root / "processing" / "input" / name

    @property
    def evaluation_dir(self) -> Path:
        return self.root / "processing" / "evaluation"

    @property
    def exit_message_file(self) -> Path:
        """A Processing job's reason for failing: SageMaker shows its first 1 KB as ExitMessage."""
        return self.output_dir / "message"
