"""Is this a script-mode job, and with what: hyperparameters.json read the way AWS's training toolkit reads it.

Every value goes through `json.loads`, keeping the raw string when that fails: SDK v2 JSON-encodes each one
(`"\\"train.py\\""`, `"10"`, `"true"`), so a script receives 10 and True where the SDK was given them, and a
plain file's `"adam"` stays "adam". Keys starting with `sagemaker_` (and the tuner's objective) are the SDK's
and never reach the script's command line.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optml.container.config import read_json_object
from optml.container.errors import UserError
from optml.container.paths import Paths

PROGRAM = "sagemaker_program"
SUBMIT_DIRECTORY = "sagemaker_submit_directory"
REGION = "sagemaker_region"
LOG_LEVEL = "sagemaker_container_log_level"
JOB_NAME = "sagemaker_job_name"
SDK_PREFIX = "sagemaker_"
# The toolkit's own keys (params.SAGEMAKER_HYPERPARAMETERS): neither the script's nor "framework parameters".
TOOLKIT_KEYS = (
    PROGRAM,
    SUBMIT_DIRECTORY,
    "sagemaker_enable_cloudwatch_metrics",
    REGION,
    LOG_LEVEL,
    JOB_NAME,
    "default_user_module_name",
    "_tuning_objective_metric",
    "sagemaker_s3_output",
)
DEFAULT_LOG_LEVEL = 20  # logging.INFO, the toolkit's default


def decode_value(value: Any) -> Any:
    """One hyperparameter as the toolkit hands it to the script: JSON when it parses, else the raw value."""
    try:
        return json.loads(value)
    except (ValueError, TypeError):
        return value


def read_raw_json(path: Path) -> dict[str, Any]:
    """A config file as it is, values undecoded; {} when it is missing. Invalid JSON is the user's to fix."""
    return read_json_object(path) if path.exists() else {}


@dataclass(frozen=True)
class ScriptJob:
    """A script-mode training job: what to run and with which hyperparameters."""

    program: str
    hyperparameters: dict[str, Any]  # the user's, decoded; what the command line and SM_HPS carry
    sdk_parameters: dict[str, Any] = field(default_factory=dict)  # every sagemaker_* key (and the toolkit's)

    @property
    def submit_directory(self) -> str | None:
        value = self.sdk_parameters.get(SUBMIT_DIRECTORY)
        return str(value) if value else None

    @property
    def framework_parameters(self) -> dict[str, Any]:
        """SM_FRAMEWORK_PARAMS: the sagemaker_* keys that are not the toolkit's own (distribution settings)."""
        return {key: value for key, value in self.sdk_parameters.items() if key not in TOOLKIT_KEYS}

    @property
    def log_level(self) -> Any:
        return self.sdk_parameters.get(LOG_LEVEL, DEFAULT_LOG_LEVEL)

    @property
    def region(self) -> str | None:
        value = self.sdk_parameters.get(REGION)
        return str(value) if value else None

    def enabled(self, key: str) -> bool:
        """A distribution switch: true as SDK v2 sends it (true), or written by hand ("true", "True", 1)."""
        value = self.sdk_parameters.get(key)
        return value is True or str(value).lower() in ("true", "1")


def split_hyperparameters(raw: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the user's, the SDK's), every value decoded."""
    decoded = {key: decode_value(value) for key, value in raw.items()}
    sdk = {key: value for key, value in decoded.items() if key in TOOLKIT_KEYS or key.startswith(SDK_PREFIX)}
    return {key: value for key, value in decoded.items() if key not in sdk}, sdk


def script_job(raw_hyperparameters: Mapping[str, Any], env: Mapping[str, str]) -> ScriptJob | None:
    """The job when it names an entry point (env SAGEMAKER_PROGRAM wins over the hyperparameter), else None."""
    user, sdk = split_hyperparameters(raw_hyperparameters)
    program = env.get("SAGEMAKER_PROGRAM") or sdk.get(PROGRAM)
    if not program:
        return None
    return ScriptJob(program=str(program), hyperparameters=user, sdk_parameters=sdk)


def requested(paths: Paths, env: Mapping[str, str]) -> bool:
    """Does this training job run the user's own code? Cheap, and never raises: an unreadable
    hyperparameters.json is left to whichever path runs to report."""
    if env.get("SAGEMAKER_PROGRAM"):
        return True
    try:
        raw = read_raw_json(paths.hyperparameters_file)
    except (UserError, OSError):
        return False
    return bool(decode_value(raw.get(PROGRAM)) if PROGRAM in raw else False)
