"""Checkpoints a spot interruption cannot corrupt, in the directory SageMaker syncs with S3.

Each is written to a temporary file in the same directory, fsynced and renamed into place (a kill leaves the
old file or the new one, never half of one); only the last `keep` are kept. Names carry the host and, under
torchrun, the rank — `checkpoint-algo-1-rank0-000000012.pt` — because every host of a job uploads to the same
S3 prefix. Restoring takes the newest one this process can read, skipping (and saying so) any that is corrupt.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optml.container.config import read_checkpoint_dir
from optml.container.files import atomic_write
from optml.container.paths import Paths

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Checkpoint:
    step: int
    state: Any  # what save_checkpoint was given
    path: Path


def checkpoint_dir() -> Path:
    """checkpointconfig.json's LocalPath when the job sets one, else /opt/ml/checkpoints."""
    paths = Paths.from_env(os.environ)
    return read_checkpoint_dir(paths.checkpoint_config_file) or paths.checkpoints_dir


def _tag() -> str:
    """This process in file names: its host, and its rank when torchrun started several."""
    host = os.environ.get("SM_CURRENT_HOST") or "algo-1"
    world = int(os.environ.get("WORLD_SIZE") or 1)
    return f"{host}-rank{os.environ.get('RANK', '0')}" if world > 1 else host


def _own_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """(step, path) of this process's checkpoints, oldest first."""
    own = re.compile(re.escape(f"checkpoint-{_tag()}-") + r"(\d+)\.pt")
    found = [(int(match.group(1)), path) for path in directory.iterdir() if (match := own.fullmatch(path.name))]
    return sorted(found)


def save_checkpoint(state: Any, step: int, directory: Path | None = None, keep: int = 3) -> Path:
    """torch.save `state` as this process's checkpoint for `step`, atomically; older ones beyond `keep` go."""
    import torch

    target_dir = directory or checkpoint_dir()
    target_dir.mkdir(parents=True, exist_ok=True)
    path = target_dir / f"checkpoint-{_tag()}-{step:09d}.pt"
    atomic_write(path, lambda temp: torch.save(state, temp))
    for _, old in _own_checkpoints(target_dir)[: -max(keep, 1)]:
        old.unlink(missing_ok=True)
    return path


def load_latest_checkpoint(
    directory: Path | None = None, map_location: Any = "cpu", weights_only: bool = True
) -> Checkpoint | None:
    """The newest of this process's checkpoints that loads; None when there is none. `weights_only=False`
    for states holding more than tensors and plain containers (a numpy RNG state): only for files you wrote."""
    import torch

    source_dir = directory or checkpoint_dir()
    if not source_dir.is_dir():
        return None
    for step, path in reversed(_own_checkpoints(source_dir)):
        try:
            state = torch.load(path, map_location=map_location, weights_only=weights_only)
        except Exception as error:  # a truncated or corrupt file: any of torch's, pickle's or zipfile's errors
            log.warning("checkpoint %s cannot be read (%s); trying the one before it", path.name, error)
            continue
        return Checkpoint(step, state, path)
    return None
