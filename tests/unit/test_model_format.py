"""The saved model's format: models saved by earlier code still load and predict the same, newer formats are
refused by name, and model.pt predicts what optml predicts."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from optml.container.artifact import (
    EXPORT_FILE,
    EXPORT_INFO,
    METADATA_FILE,
    WEIGHTS_FILE,
    Label,
    ModelLoadError,
    ModelMetadata,
    load_model,
    save_model,
)
from optml.container.features import FeatureEncoder
from optml.container.kinds import BINARY, MULTICLASS, REGRESSION
from optml.container.networks import NetworkSpec, build_network
from tools.make_model_fixtures import prediction_platform

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "models"
FIXTURE_DIRS = sorted(path.parent for path in FIXTURES.glob("v*/*/expected.json"))


def load_export(path: Path) -> tuple[torch.jit.ScriptModule, dict[str, object]]:
    """model.pt as someone serving it without optml loads it, with the description it carries."""
    files = {EXPORT_INFO: ""}
    with warnings.catch_warnings():
        # torch 2.13 warns that TorchScript is deprecated; users' own servers load model.pt this way.
        warnings.filterwarnings("ignore", r"`torch\.jit\.load` is deprecated", DeprecationWarning)
        module = torch.jit.load(str(path), _extra_files=files)
    return module, json.loads(files[EXPORT_INFO])


# --- models saved by earlier code -------------------------------------------------------------------


def test_there_are_fixtures_of_every_kind_of_task() -> None:
    assert [path.relative_to(FIXTURES).as_posix() for path in FIXTURE_DIRS] == [
        "v1/binary_mlp",
        "v1/multiclass_mlp",
        "v1/regression_mlp",
    ]


@pytest.mark.parametrize("fixture", FIXTURE_DIRS, ids=lambda path: f"{path.parent.name}/{path.name}")
def test_a_model_saved_by_earlier_code_loads_and_predicts_the_same(fixture: Path) -> None:
    """tools/make_model_fixtures.py saved these models and the predictions of its day. If this fails, models
    users already have would stop loading or change their answers: fix the code, not the fixture."""
    expected = json.loads((fixture / "expected.json").read_text())
    model = load_model(fixture / "model")
    assert f"v{model_format_version(fixture / 'model')}" == fixture.parent.name
    encoder = FeatureEncoder.from_json(model.metadata.encoder) if model.metadata.encoder else None
    features = encoder.transform(expected["rows"]) if encoder else np.asarray(expected["rows"], dtype=np.float32)
    predictions = model.predict(features)
    exported, _ = load_export(fixture / "model" / EXPORT_FILE)
    outputs = exported(torch.from_numpy(features)).numpy()
    if expected["scores"] is None:  # regression: the labels are the predicted values
        assert predictions.scores is None
        assert_same_float32(np.asarray(predictions.labels, dtype=np.float32), expected["labels"], expected["platform"])
        assert_same_float32(outputs, expected["labels"], expected["platform"])
    else:
        assert predictions.labels == expected["labels"]
        assert predictions.scores is not None
        assert_same_float32(predictions.scores, expected["scores"], expected["platform"])
        assert_same_float32(outputs, expected["scores"], expected["platform"])


def assert_same_float32(actual: np.ndarray, expected: list[object], saved_on: dict[str, str]) -> None:
    """Bit for bit on the platform the fixture was saved on; elsewhere within a few float32 steps, because
    torch's kernels round differently per version and CPU instruction set (a softmax on AVX2 and without
    SIMD differs in the last bit), and a fixture that fails on a newer CPU would only teach regenerating it."""
    expected_float32 = np.asarray(expected, dtype=np.float32)
    if saved_on == prediction_platform():
        np.testing.assert_array_equal(actual, expected_float32)
    else:
        np.testing.assert_allclose(actual, expected_float32, rtol=1e-5, atol=0)


def model_format_version(model_dir: Path) -> int:
    return int(json.loads((model_dir / METADATA_FILE).read_text())["format_version"])


# --- format versions --------------------------------------------------------------------------------


def fixture_copy(tmp_path: Path, format_version: object) -> Path:
    model_dir = tmp_path / "model"
    shutil.copytree(FIXTURES / "v1" / "binary_mlp" / "model", model_dir)
    metadata = json.loads((model_dir / METADATA_FILE).read_text())
    (model_dir / METADATA_FILE).write_text(json.dumps(metadata | {"format_version": format_version}))
    return model_dir


def test_a_model_of_a_newer_format_is_refused_naming_both_versions(tmp_path: Path) -> None:
    model_dir = fixture_copy(tmp_path, 2)
    with pytest.raises(ModelLoadError) as refused:
        load_model(model_dir)
    assert str(refused.value) == (
        f"cannot load the model in {model_dir}: model format version 2 is newer than this image reads"
        " (version 1): the model was saved by a newer optml image; serve it, or train from it, with that image"
        " or a newer one"
    )


@pytest.mark.parametrize("format_version", [None, "1", 0])
def test_a_model_without_a_known_format_version_is_refused(tmp_path: Path, format_version: object) -> None:
    model_dir = fixture_copy(tmp_path, format_version)
    with pytest.raises(ModelLoadError) as refused:
        load_model(model_dir)
    assert str(refused.value) == (
        f"cannot load the model in {model_dir}: model format version {format_version!r} is not one optml"
        " writes; this image reads version 1"
    )


def test_a_model_of_the_current_format_loads(tmp_path: Path) -> None:
    assert load_model(fixture_copy(tmp_path, 1)).metadata.classes == ["no", "yes"]


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


def test_a_categorical_models_export_takes_the_one_hot_columns() -> None:
    description = json.loads((FIXTURES / "v1/binary_mlp/model" / METADATA_FILE).read_text())["export"]
    assert description["input"]["columns"] == ["tenure", "usage", "plan=basic", "plan=pro", "plan=team"]
    assert description["input"]["one_hot_encoded"] == ["plan"]
    regression = json.loads((FIXTURES / "v1/regression_mlp/model" / METADATA_FILE).read_text())["export"]
    assert regression["output"] == {
        "dtype": "float32",
        "shape": ["rows"],
        "meaning": "predicted values, in the label's units",
    }


def test_saving_a_model_again_replaces_its_files_and_leaves_nothing_else(tmp_path: Path) -> None:
    spec = EXPORT_CASES["lstm"][1]
    saved_model(tmp_path / "first", BINARY, spec)
    saved_model(tmp_path / "first", BINARY, spec)
    saved_model(tmp_path / "second", BINARY, spec)
    assert sorted(path.name for path in (tmp_path / "first").iterdir()) == [EXPORT_FILE, WEIGHTS_FILE, METADATA_FILE]
    # model.pt is not compared: TorchScript orders some constants by string hash, which differs per process.
    for name in (WEIGHTS_FILE, METADATA_FILE):
        assert (tmp_path / "first" / name).read_bytes() == (tmp_path / "second" / name).read_bytes(), name
    saved_model(tmp_path / "first", BINARY, spec)
    saved_model(tmp_path / "second", BINARY, spec)
    for name in (WEIGHTS_FILE, EXPORT_FILE, METADATA_FILE):
        assert (tmp_path / "first" / name).read_bytes() == (tmp_path / "second" / name).read_bytes(), name
    assert sorted(path.name for path in (tmp_path / "first").iterdir()) == [EXPORT_FILE, WEIGHTS_FILE, METADATA_FILE]


def test_a_model_whose_export_fails_is_saved_without_model_pt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The export is an extra: a TorchScript failure (a new network kind, a torch upgrade) must not cost the
    trained model at the end of a job, nor leave an earlier model.pt beside the new weights."""
    task, spec = EXPORT_CASES["mlp-binary"]
    saved_model(tmp_path, task, spec)
    assert (tmp_path / EXPORT_FILE).is_file()

    def fail(*args: object) -> None:
        raise RuntimeError("cannot compile this")

    monkeypatch.setattr("optml.container.artifact.export_predictor", fail)
    saved_model(tmp_path, task, spec)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.safetensors", "optml-model.json"]
    assert "model.pt not written: TorchScript could not compile this model (cannot compile this)" in caplog.text
    assert load_model(tmp_path).predict(np.zeros((2, 6), dtype=np.float32)).scores is not None
