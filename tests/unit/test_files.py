"""Atomic file writes: what the saved model and checkpoints are written with."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from optml.container.files import atomic_write


def test_atomic_write_replaces_the_file_readable_by_all_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "model.safetensors"
    target.write_text("old")
    atomic_write(target, lambda temp: temp.write_text("new"))
    assert target.read_text() == "new"
    assert os.stat(target).st_mode & 0o777 == 0o644  # mkstemp's 0600 would lock out other users
    assert [path.name for path in tmp_path.iterdir()] == ["model.safetensors"]


def test_a_failed_atomic_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "checkpoint.pt"
    target.write_text("old")

    def broken(temp: Path) -> None:
        temp.write_text("half a fi")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, broken)
    assert target.read_text() == "old"
    assert [path.name for path in tmp_path.iterdir()] == ["checkpoint.pt"]
