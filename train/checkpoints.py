"""Checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint holds the model, optimizer, scheduler and early-stopping state, the epoch and the number
of batches already trained in it, that epoch's row order, the shuffling generator, the python / numpy /
torch (and CUDA) RNG states, the history so far, the resolved configuration and a format version. Files
are written atomically (`optml.container.files.atomic_write`), so a kill at any moment leaves either the old or
the new file, and are named per host (`checkpoint-algo-1-e00003-b000120.pt`) because every host of a job
shares one S3 prefix. Loading uses `torch.load(weights_only=True)`: tensors and plain data, no arbitrary objects.
"""

from __future__ import annotations

import logging
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from optml.container.errors import UserError
from optml.container.files import atomic_write

log = logging.getLogger(__name__)

NAME = re.compile(r"^checkpoint-(?P<host>.+)-e(?P<epoch>\d{5})-b(?P<batch>\d{7})\.pt$")
# The layout of a checkpoint's payload. Raise it when a change would make an older image misread a newer
# checkpoint; such a checkpoint is then refused by name instead of resumed wrongly.
FORMAT_VERSION = 1


def rng_states() -> dict[str, Any]:
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), position, has_gauss, gauss],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, gauss_value = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss_value))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


@dataclass
class CheckpointPolicy:
    every_steps: int = 0  # 0: not by step count
    every_seconds: float = 300.0  # 0: not by time
    keep: int = 2


@dataclass
class Checkpointer:
    """Writes and finds one host's checkpoints in `directory`."""

    directory: Path
    host: str
    policy: CheckpointPolicy = field(default_factory=CheckpointPolicy)
    config: dict[str, Any] = field(default_factory=dict)  # shape-defining settings; must match on resume
    _last_save: float = field(default_factory=time.monotonic)
    _steps_since_save: int = 0

    def files(self) -> list[Path]:
        """This host's checkpoints, newest first."""
        if not self.directory.is_dir():
            return []
        found = []
        for path in self.directory.iterdir():
            match = NAME.match(path.name)
            if match and match["host"] == self.host:
                found.append((int(match["epoch"]), int(match["batch"]), path))
        return [path for _, _, path in sorted(found, reverse=True)]

    def due(self, steps: int = 1) -> bool:
        """Count `steps` trained since the last save; True when the policy asks for a checkpoint."""
        self._steps_since_save += steps
        by_steps = self.policy.every_steps > 0 and self._steps_since_save >= self.policy.every_steps
        by_time = self.policy.every_seconds > 0 and time.monotonic() - self._last_save >= self.policy.every_seconds
        return by_steps or by_time

    def save(self, state: dict[str, Any], epoch: int, batches_done: int) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"checkpoint-{self.host}-e{epoch:05d}-b{batches_done:07d}.pt"
        payload = {"format": FORMAT_VERSION, "config": self.config, "epoch": epoch, "batches_done": batches_done}
        atomic_write(path, lambda temp: torch.save(payload | state, temp))
        for old in self.files()[self.policy.keep :]:
            old.unlink(missing_ok=True)
        self._last_save, self._steps_since_save = time.monotonic(), 0
        return path

    def load_latest(self) -> dict[str, Any] | None:
        """The newest readable checkpoint; unreadable ones (a truncated upload, a corrupt file) are skipped."""
        for path in self.files():
            try:
                payload = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as error:  # any unreadable file: try the next older one
                log.warning("skipping unreadable checkpoint %s: %s", path, str(error).splitlines()[0][:200])
                continue
            self._check_format(path, payload)
            self._check_compatible(path, payload.get("config", {}))
            log.info(
                "resuming from %s: epoch %d, batch %d of that epoch",
                path.name,
                payload["epoch"],
                payload["batches_done"],
            )
            return dict(payload)
        return None

    def load_at(self, epoch: int, batches_done: int) -> dict[str, Any]:
        """The checkpoint at exactly this point (when processes must agree on an older one)."""
        path = self.directory / f"checkpoint-{self.host}-e{epoch:05d}-b{batches_done:07d}.pt"
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise UserError(
                f"the processes of this job hold checkpoints of different steps and {path} (the newest step all"
                f" of them reached) cannot be read: {str(error).splitlines()[0][:200]}; remove the checkpoints"
                " to start over"
            ) from None
        self._check_format(path, payload)
        log.info("resuming from %s, the newest step every process has", path.name)
        return dict(payload)

    def _check_format(self, path: Path, payload: dict[str, Any]) -> None:
        """A checkpoint of another format is refused, not skipped: resuming from an older one instead, or
        starting over, would silently throw the newer one's training away.

        Version 1 is the first format. When version 2 comes, a version-1 payload will be upgraded here (one
        function per step) rather than refused, so a job restarted on a newer image still resumes."""
        version = payload.get("format")
        if version == FORMAT_VERSION:
            return
        remedy = (
            f"remove the checkpoints from {self.directory} (and checkpoint_s3_uri) to start over, which loses"
            " the training they hold"
        )
        if isinstance(version, int) and version > FORMAT_VERSION:
            raise UserError(
                f"checkpoint {path} has format version {version}, newer than this image reads (version"
                f" {FORMAT_VERSION}): it was written by a newer optml image; resume with that image or a newer"
                f" one, or {remedy}"
            )
        raise UserError(
            f"checkpoint {path} has format version {version!r}, not one optml writes (this image reads version"
            f" {FORMAT_VERSION}); {remedy}"
        )

    def _check_compatible(self, path: Path, saved: dict[str, Any]) -> None:
        changed = [key for key in sorted(set(saved) | set(self.config)) if saved.get(key) != self.config.get(key)]
        if changed:
            details = "; ".join(
                f"{key}: checkpoint {saved.get(key)!r}, now {self.config.get(key)!r}" for key in changed
            )
            raise UserError(
                f"checkpoint {path} was written for a different model ({details}); train with the settings it was"
                f" written with, or remove the checkpoints from {self.directory} (and checkpoint_s3_uri) to start over"
            )
