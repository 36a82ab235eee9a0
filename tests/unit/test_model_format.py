"""The saved model's format: model.pt predicts what optml predicts."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from container.artifact import (
    BINARY,
    EXPORT_FILE,
    EXPORT_INFO,
    METADATA_FILE,
    MULTICLASS,
    REGRESSION,
    WEIGHTS_FILE,
    Label,
    ModelMetadata,
    load_model,
    save_model,
)
from container.networks import NetworkSpec, build_network


def load_export(path: Path) -> tuple[torch.jit.ScriptModule, dict[str, object]]:
    """model.pt as someone serving it without optml loads it, with the description it carries."""
    files = {EXPORT_INFO: ""}
    with warnings.catch_warnings():
        # torch 2.13 warns that TorchScript is deprecated; users' own servers load model.pt this way.
        warnings.filterwarnings("ignore", r"`torch\.jit\.load` is deprecated", DeprecationWarning)
        module = torch.jit.load(str(path), _extra_files=files)
    return module, json.loads(files[EXPORT_INFO])


# --- the portable export (model.pt) -----------------------------------------------------------------

EXPORT_CASES = {
    # batch norm and dropout make a model.pt left in training mode answer differently
    "mlp-binary": (BINARY, NetworkSpec("mlp", (6,), 1, hidden_units=(8, 4), batch_norm=True, dropout=0.5)),
    "mlp-multiclass": (MULTICLASS, NetworkSpec("mlp", (6,), 3, hidden_units=(8,), activation="tanh")),
    "mlp-regression": (REGRESSION, NetworkSpec("mlp", (6,), 1, hidden_units=(8,))),
    "cnn": (MULTICLASS, NetworkSpec("cnn", (1, 6, 6), 3, hidden_units=(8,), conv_channels=(4,), batch_norm=True)),
    "lstm": (BINARY, NetworkSpec("lstm", (5, 2), 1, hidden_units=(8,), hidden_size=6, num_layers=2)),
    "gru-bidirectional": (REGRESSION, NetworkSpec("gru", (5, 2), 1, hidden_size=6, bidirectional=True)),
}


def saved_model(model_dir: Path, task: str, spec: NetworkSpec) -> ModelMetadata:
    """A model with random weights and scaling, saved as training saves one."""
    torch.manual_seed(0)
    generator = np.random.default_rng(0)
    count = int(np.prod(spec.input_shape))
    names: list[Label] = ["a", "b", "c"]
    classes = [] if task == REGRESSION else names[: max(spec.out_features, 2)]
    metadata = ModelMetadata(
        task=task,
        network=spec,
        feature_count=count,
        feature_mean=generator.normal(size=count).tolist(),
        feature_std=generator.uniform(0.5, 2.0, size=count).tolist(),
        classes=classes,
        target_mean=100.0 if task == REGRESSION else 0.0,
        target_std=15.0 if task == REGRESSION else 1.0,
    )
    save_model(model_dir, build_network(spec), metadata)
    return metadata


@pytest.mark.parametrize(("task", "spec"), EXPORT_CASES.values(), ids=EXPORT_CASES.keys())
def test_model_pt_on_raw_rows_gives_exactly_what_optml_predicts(tmp_path: Path, task: str, spec: NetworkSpec) -> None:
    saved_model(tmp_path, task, spec)
    rows = np.random.default_rng(1).normal(3.0, 4.0, size=(7, *spec.input_shape)).astype(np.float32)
    expected = load_model(tmp_path).predict(rows)
    exported, _ = load_export(tmp_path / EXPORT_FILE)
    for batch in (rows, rows.reshape(len(rows), -1)):  # shaped rows and flat rows, as predict takes them
        for _ in range(3):  # TorchScript's profiling executor optimizes the graph after the first runs
            outputs = exported(torch.from_numpy(batch)).numpy()
            if task == REGRESSION:
                np.testing.assert_array_equal(outputs, np.asarray(expected.labels, dtype=np.float32))
            else:
                np.testing.assert_array_equal(outputs, expected.scores)


def test_model_pt_describes_what_it_takes_and_returns(tmp_path: Path) -> None:
    metadata = saved_model(tmp_path, BINARY, EXPORT_CASES["mlp-binary"][1])
    _, description = load_export(tmp_path / EXPORT_FILE)
    assert description == json.loads((tmp_path / METADATA_FILE).read_text())["export"]
    assert description == {
        "file": "model.pt",
        "format": "torchscript",
        "input": {
            "dtype": "float32",
            "shape": ["rows", 6],
            "columns": [],
            "one_hot_encoded": [],
            "scaling": "none: raw values; the model standardizes them",
        },
        "output": {
            "dtype": "float32",
            "shape": ["rows", 2],
            "meaning": "class probabilities, in the order of classes",
            "classes": metadata.classes,
        },
    }


def test_saving_the_same_weights_twice_writes_the_same_files(tmp_path: Path) -> None:
    spec = EXPORT_CASES["lstm"][1]
    saved_model(tmp_path / "first", BINARY, spec)
    saved_model(tmp_path / "second", BINARY, spec)
    for name in (WEIGHTS_FILE, EXPORT_FILE, METADATA_FILE):
        assert (tmp_path / "first" / name).read_bytes() == (tmp_path / "second" / name).read_bytes(), name
    assert sorted(path.name for path in (tmp_path / "first").iterdir()) == [EXPORT_FILE, WEIGHTS_FILE, METADATA_FILE]
