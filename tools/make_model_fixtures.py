"""Write small models saved by this version of optml, with rows and the exact predictions it makes for them,
into tests/fixtures/models/v<FORMAT_VERSION>/. tests/unit/test_model_format.py loads every fixture there and
expects the same predictions: a change that stops optml from reading models users already have fails it.

python -m tools.make_model_fixtures            # writes the fixtures of the current format version
python -m tools.make_model_fixtures --force    # overwrites them

Run it when the model format version changes (new fixtures go beside the old ones, which stay: they are the
models users have) — never to make a failing fixture test pass. Each model is trained by `optml.train.main.run` on
synthetic data, exactly as a job would be; the tests never run this script. Run again, it writes the same
weights, JSON and predictions; model.pt's bytes vary (TorchScript orders some constants by string hash).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from optml.container.artifact import EXPORT_FILE, FORMAT_VERSION, METADATA_FILE, WEIGHTS_FILE, load_model
from optml.container.features import FeatureEncoder
from optml.container.paths import Paths
from optml.train.main import run

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "models"
HYPERPARAMETERS = {"epochs": "5", "hidden_units": "8", "batch_size": "16", "learning_rate": "0.05", "seed": "7"}
Row = list[object]


def churn_rows(count: int, seed: int) -> list[Row]:
    """Binary, text labels, a header, a categorical column: label, tenure, usage, plan."""
    rng = np.random.default_rng(seed)
    rows: list[Row] = []
    for _ in range(count):
        tenure, usage, plan = round(float(rng.uniform(0, 60)), 2), round(float(rng.normal(5, 2)), 3), rng.integers(3)
        churned = usage - 0.1 * tenure + (1.5 if plan == 0 else 0.0) + float(rng.normal(0, 0.5)) > 1
        rows.append(["yes" if churned else "no", tenure, usage, ["basic", "pro", "team"][plan]])
    return rows


def numeric_rows(count: int, seed: int, classes: int | None) -> list[Row]:
    """No header, the label first: `classes` integer classes, or a regression target when None."""
    rng = np.random.default_rng(seed)
    x = np.round(rng.normal(size=(count, 3)), 4)
    if classes is None:
        y: list[object] = [round(float(v), 4) for v in 40 + 12 * x[:, 0] - 5 * x[:, 1] + rng.normal(0, 0.3, count)]
    else:
        y = [int(v) for v in np.digitize(x[:, 0] + 0.5 * x[:, 2], [-0.5, 0.5][: classes - 1])]
    return [[label, *features] for label, features in zip(y, x.tolist(), strict=True)]


def write_job(root: Path, rows: list[Row], header: list[str] | None) -> None:
    """A /opt/ml tree as SageMaker lays it out, with one CSV file in channel `train`."""
    config = root / "input" / "config"
    config.mkdir(parents=True)
    lines = ([",".join(header)] if header else []) + [",".join(str(value) for value in row) for row in rows]
    train = root / "input" / "data" / "train"
    train.mkdir(parents=True)
    (train / "part-0.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (config / "hyperparameters.json").write_text(json.dumps(HYPERPARAMETERS))
    (config / "inputdataconfig.json").write_text(json.dumps({"train": {"ContentType": "text/csv"}}))
    resources = {"current_host": "algo-1", "hosts": ["algo-1"], "network_interface_name": "eth0"}
    (config / "resourceconfig.json").write_text(json.dumps(resources))


def prediction_platform() -> dict[str, str]:
    """What decides the last bits of a prediction besides the code: torch's kernels differ per version and
    per CPU instruction set (AVX2, AVX-512, NEON) in how they round."""
    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def expected_predictions(model_dir: Path, rows: list[Row]) -> dict[str, object]:
    """The rows (features as a request holds them) and what this version of optml predicts for them."""
    model = load_model(model_dir)
    encoder = FeatureEncoder.from_json(model.metadata.encoder) if model.metadata.encoder else None
    predictions = model.predict(encoder.transform(rows) if encoder else np.asarray(rows, dtype=np.float32))
    scores = None if predictions.scores is None else predictions.scores.tolist()  # float32 → exact doubles
    return {"rows": rows, "labels": predictions.labels, "scores": scores, "platform": prediction_platform()}


def make_fixture(name: str, rows: list[Row], header: list[str] | None, destination: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="optml-fixture-") as scratch:
        root = Path(scratch) / "ml"
        write_job(root, rows[:-6], header)
        run(Paths(root=root))
        model_dir = destination / name / "model"
        model_dir.mkdir(parents=True)
        for file in (METADATA_FILE, WEIGHTS_FILE, EXPORT_FILE):  # what save_model writes; not the model card
            shutil.copyfile(root / "model" / file, model_dir / file)
    held_out = [row[1:] for row in rows[-6:]]  # six rows the model did not train on, without their labels
    expected = expected_predictions(model_dir, held_out)
    (destination / name / "expected.json").write_text(json.dumps(expected, indent=1) + "\n", encoding="utf-8")


def main(argv: list[str]) -> int:
    destination = FIXTURES / f"v{FORMAT_VERSION}"
    if destination.exists():
        if "--force" not in argv:
            print(f"{destination} exists: these are the models earlier code saved; --force replaces them")
            return 1
        shutil.rmtree(destination)
    make_fixture("binary_mlp", churn_rows(80, seed=1), ["label", "tenure", "usage", "plan"], destination)
    make_fixture("multiclass_mlp", numeric_rows(80, seed=2, classes=3), None, destination)
    make_fixture("regression_mlp", numeric_rows(80, seed=3, classes=None), None, destination)
    print(f"wrote {destination}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
