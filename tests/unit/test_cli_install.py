"""`pip install .` gives the optml command on the machine a user works from: light (no torch, numpy or
pyarrow) and on every Python from 3.10 to 3.13, tested at both ends of the range in fresh virtual environments."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

# What a source install reads: the project file, the README it names, and the packages' folders.
SOURCES = ("pyproject.toml", "README.md", "optml/__init__.py", "container", "train", "serve", "cli", "optml_runtime")


def copy_of_the_project(destination: Path) -> Path:
    """A copy holding what pip needs: a build writes build/ and *.egg-info into the tree it builds."""
    for name in SOURCES:
        source, target = REPO / name, destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, target)
    return destination


def interpreter(version: str) -> str | None:
    """A working python`version`: this one, one on PATH, or one pyenv installed (its shims may not run it)."""
    if f"{sys.version_info.major}.{sys.version_info.minor}" == version:
        return sys.executable
    candidates = [shutil.which(f"python{version}")] + sorted(
        str(path) for path in (Path.home() / ".pyenv" / "versions").glob(f"{version}.*/bin/python{version}")
    )
    for candidate in filter(None, candidates):
        if subprocess.run([candidate, "-c", "pass"], capture_output=True).returncode == 0:
            return candidate
    return None


@pytest.mark.slow
@pytest.mark.parametrize("version", ["3.10", "3.11", "3.12", "3.13"])
def test_the_command_installs_without_the_image_dependencies(tmp_path: Path, version: str) -> None:
    python = interpreter(version)
    if python is None:
        if os.environ.get("CI"):  # CI must show every supported version installs, not 3.11 alone
            pytest.fail(f"no Python {version} on this CI machine: the light install is to be tested on 3.10-3.13")
        pytest.skip(f"no Python {version} on this machine")
    venv = tmp_path / "venv"
    subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=120)
    install = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check",
         str(copy_of_the_project(tmp_path / "project"))],  # fmt: skip
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-3000:]

    help_text = subprocess.run([str(venv / "bin" / "optml"), "--help"], capture_output=True, text=True, timeout=60)
    assert help_text.returncode == 0, help_text.stderr
    assert "Take the optml image somewhere" in help_text.stdout
    installed = subprocess.run(
        [str(venv / "bin" / "pip"), "list", "--format=freeze"], capture_output=True, text=True, check=True
    ).stdout.lower()
    assert [name for name in ("torch", "numpy", "pyarrow", "safetensors") if f"\n{name}==" in f"\n{installed}"] == []
    check = subprocess.run(
        # optml_runtime too: a user writes their train.py against it on a laptop, without torch
        [str(venv / "bin" / "python"), "-c",
         "import optml_runtime, optml.train.hyperparameters as h; print(len(h.describe()))"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert check.returncode == 0 and int(check.stdout) > 40, check.stderr
