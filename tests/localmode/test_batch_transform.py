"""Batch transform through SageMaker local mode against the real image: SDK v2's Transformer
(tools/sagemaker_transform_v2.py) and SDK v3's local CreateTransformJob (`optml transform --local`).

The SDK starts the image with `serve` and SAGEMAKER_BATCH=true, asks GET /execution-parameters for the
payload size, splits each input file by line into mini-batches and appends a newline after each answer
(AssembleWith=Line). The output must hold exactly one line per input line, in order; the run's
summary file must count them.
"""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest

from optml.container.artifact import load_model
from tests.conftest import make_classification

pytestmark = [pytest.mark.localmode, pytest.mark.docker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
PYTHONS = {"v3": REPO / ".venv" / "bin" / "python", "v2": REPO / ".venv-sdk2" / "bin" / "python"}


def command(sdk: str, image: str, model_data: Path, inputs: Path, output_dir: Path, serving_port: int) -> list[str]:
    """The same transform, by each SDK: 1 MB requests, so that the big file takes several."""
    python = str(PYTHONS[sdk])
    if sdk == "v2":
        return [
            python, str(REPO / "tools" / "sagemaker_transform_v2.py"), "--image", image,
            "--model-data", str(model_data), "--input", str(inputs), "--output", str(output_dir),
            "--serving-port", str(serving_port), "--env", "SAGEMAKER_MAX_PAYLOAD_IN_MB=1",
        ]  # fmt: skip
    return [
        python, "-m", "optml.cli", "transform", "--local", "--image-uri", image,
        "--model-data", str(model_data), "--input", str(inputs), "--output-path", str(output_dir),
        "--serving-port", str(serving_port), "--max-payload", "1",
    ]  # fmt: skip


@pytest.mark.parametrize("sdk", sorted(PYTHONS))
def test_transform_gives_one_output_line_per_input_line(
    sdk: str, image: str, trained_binary_model: Path, tmp_path: Path, serving_port: int
) -> None:
    if not PYTHONS[sdk].exists():
        pytest.fail(f"{PYTHONS[sdk]} is missing: run `make venv` (make test does)")
    model_data = tmp_path / "model.tar.gz"
    with tarfile.open(model_data, "w:gz") as archive:
        for path in sorted(trained_binary_model.iterdir()):
            archive.add(path, arcname=path.name)
    inputs = tmp_path / "input"
    inputs.mkdir()
    # big.csv (~2.5 MB) spans several 1 MB mini-batches; small.csv has no final newline.
    big = np.round(make_classification(60000, 4, 2, seed=5)[:, 1:], 5)
    small = np.round(make_classification(7, 4, 2, seed=6)[:, 1:], 5)
    (inputs / "big.csv").write_text("\n".join(",".join(map(repr, row)) for row in big.tolist()) + "\n")
    (inputs / "small.csv").write_text("\n".join(",".join(map(repr, row)) for row in small.tolist()))

    output_dir = tmp_path / "out"
    result = subprocess.run(
        command(sdk, image, model_data, inputs, output_dir, serving_port),
        capture_output=True, text=True, timeout=900, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"
    summary = json.loads((output_dir / "summary.json").read_text())
    assert summary["output_dir"] == str(output_dir)
    assert summary["outputs"] == {"big.csv.out": len(big), "small.csv.out": len(small)}
    assert f"summary  {output_dir / 'summary.json'}" in result.stdout
    model = load_model(trained_binary_model)
    for name, rows in (("big.csv.out", big), ("small.csv.out", small)):
        lines = (output_dir / name).read_text().split("\n")
        assert lines[-1] == ""  # the file ends with the newline SageMaker appends
        assert lines[:-1] == [str(label) for label in model.predict(rows).labels], name
