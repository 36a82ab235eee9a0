"""Fixtures shared by every test: a clean environment and small datasets in the SageMaker layout."""

from __future__ import annotations

import json
import os
import shutil
import textwrap
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

if TYPE_CHECKING:
    import torch

    from optml.container.artifact import ModelArtifact

ENV_PREFIXES = ("SM_", "SAGEMAKER_", "OPTML_ROOT")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Variables that would change where the code looks or how it serves never leak into a test; the run
    registry (`optml runs`, $OPTML_HOME) is a fresh folder of each test's, never the user's ~/.optml."""
    for name in list(os.environ):
        if name.startswith(ENV_PREFIXES):
            monkeypatch.delenv(name)
    monkeypatch.setenv("OPTML_HOME", str(tmp_path_factory.mktemp("optml-home")))
    yield


def write_csv(path: Path, rows: np.ndarray | list[list[object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [",".join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def make_classification(rows: int, features: int, classes: int, seed: int = 0) -> np.ndarray:
    """Label-first rows whose class is decided by the features, so a small MLP learns it well."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, features))
    if classes == 2:
        y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int)
    else:
        y = np.digitize(x[:, 0], np.quantile(x[:, 0], np.linspace(0, 1, classes + 1)[1:-1]))
    return np.column_stack([y, np.round(x, 5)])


def make_regression(rows: int, features: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, features))
    y = 3 * x[:, 0] - 2 * x[:, 1] + 10 + 0.01 * rng.normal(size=rows)
    return np.column_stack([np.round(y, 5), np.round(x, 5)])


class StopAfter:
    """A stop request after `steps` mini-batches, like a SIGTERM arriving mid-training."""

    def __init__(self, steps: int) -> None:
        self.remaining = steps

    def __call__(self) -> bool:
        self.remaining -= 1
        return self.remaining < 0


def make_opt_ml(
    root: Path,
    train: np.ndarray | None,
    validation: np.ndarray | None = None,
    hyperparameters: dict[str, str] | None = None,
) -> Path:
    """A /opt/ml tree as SageMaker lays it out for a training job."""
    config = root / "input" / "config"
    config.mkdir(parents=True, exist_ok=True)
    channels = {}
    if train is not None:
        write_csv(root / "input" / "data" / "train" / "part-0.csv", train)
        channels["train"] = {"ContentType": "text/csv", "TrainingInputMode": "File"}
    if validation is not None:
        write_csv(root / "input" / "data" / "validation" / "part-0.csv", validation)
        channels["validation"] = {"ContentType": "text/csv", "TrainingInputMode": "File"}
    (config / "hyperparameters.json").write_text(json.dumps(hyperparameters or {}))
    (config / "inputdataconfig.json").write_text(json.dumps(channels))
    (config / "resourceconfig.json").write_text(
        json.dumps({"current_host": "algo-1", "hosts": ["algo-1"], "network_interface_name": "eth0"})
    )
    for sub in ("model", "output/data"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    return root


@pytest.fixture
def binary_job(tmp_path: Path) -> Path:
    return make_opt_ml(
        tmp_path / "ml",
        make_classification(240, 4, 2, seed=1),
        make_classification(80, 4, 2, seed=2),
        {"epochs": "15", "hidden_units": "16", "batch_size": "32", "learning_rate": "0.01"},
    )


@pytest.fixture(scope="session")
def trained_binary_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small trained binary model directory, trained once per test session."""
    from optml.container.paths import Paths
    from optml.train.main import run

    root = make_opt_ml(
        tmp_path_factory.mktemp("trained") / "ml",
        make_classification(240, 4, 2, seed=1),
        make_classification(80, 4, 2, seed=2),
        {"epochs": "15", "hidden_units": "16", "batch_size": "32", "learning_rate": "0.01"},
    )
    run(Paths(root=root))
    return root / "model"


@pytest.fixture
def model(trained_binary_model: Path) -> ModelArtifact:
    """That model loaded, a fresh object per test: a test may patch its methods."""
    from optml.container.artifact import load_model

    return load_model(trained_binary_model)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any request botocore would send (STS, S3, SageMaker, the instance metadata service) fails the test:
    for --dry-run and for the checks that must come before any AWS call."""

    def refuse(self: object, request: object) -> None:
        raise AssertionError(f"a network call was made: {getattr(request, 'method', '')} {getattr(request, 'url', '')}")

    import botocore.httpsession

    monkeypatch.setattr(botocore.httpsession.URLLib3Session, "send", refuse)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)


@pytest.fixture(scope="session")
def torchscript_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's TorchScript model.pt, as script mode serves it: x → [x0, x1 + x2 + 0.5]."""
    import torch

    model_dir = tmp_path_factory.mktemp("torchscript")
    linear = torch.nn.Linear(3, 2)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]))
        linear.bias.copy_(torch.tensor([0.0, 0.5]))
    save_torchscript(linear, model_dir / "model.pt")
    return model_dir


def save_torchscript(module: torch.nn.Module, path: Path) -> None:
    import torch

    with warnings.catch_warnings():  # torch 2.13 marks TorchScript deprecated: users still send it
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(module), str(path))


def model_with_script(tmp_path: Path, torchscript_dir: Path, script: str | None, name: str = "inference") -> Path:
    """A copy of `torchscript_dir` with `script` as code/<name>.py (none: the default handlers)."""
    model_dir = tmp_path / "model"
    shutil.copytree(torchscript_dir, model_dir)
    if script is not None:
        (model_dir / "code").mkdir()
        (model_dir / "code" / f"{name}.py").write_text(textwrap.dedent(script))
    return model_dir


def loan_rows(rows: int, seed: int) -> list[str]:
    """approved (yes/no) from income, age and — the bias to be found — sex."""
    rng = np.random.default_rng(seed)
    sex = rng.choice(["female", "male"], rows)
    age = rng.integers(18, 80, rows)
    income = rng.normal(50, 15, rows).round(2)
    score = 0.05 * (income - 50) + 0.8 * (sex == "male") + 0.02 * (age - 45) + rng.normal(0, 0.5, rows)
    labels = np.where(score > 0.3, "yes", "no")
    rows_text = [f"{a},{b},{c},{d}" for a, b, c, d in zip(labels, sex, age, income, strict=True)]
    return ["approved,sex,age,income", *rows_text]


def loan_job(root: Path, hyperparameters: dict[str, str]) -> Path:
    for channel, rows, seed in (("train", 600, 1), ("validation", 200, 2), ("test", 200, 3)):
        (root / "input" / "data" / channel).mkdir(parents=True)
        (root / "input" / "data" / channel / "loans.csv").write_text("\n".join(loan_rows(rows, seed)) + "\n")
    config = root / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps({"label_column": "approved"} | hyperparameters))
    channels = {name: {"ContentType": "text/csv"} for name in ("train", "validation", "test")}
    (config / "inputdataconfig.json").write_text(json.dumps(channels))
    (config / "resourceconfig.json").write_text(json.dumps({"current_host": "algo-1", "hosts": ["algo-1"]}))
    return root
