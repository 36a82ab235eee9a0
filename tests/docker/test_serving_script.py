"""Script mode in the real image: a hand-made /opt/ml/model with code/inference.py, its requirements.txt and a
TorchScript model.pt, served as SageMaker would run it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from docker.models.containers import Container

from tests.conftest import model_with_script
from tests.docker.conftest import host_port, wait_until_healthy

pytestmark = pytest.mark.docker

RunContainer = Callable[..., Container]

INFERENCE = """
    import json, os, warnings

    import torch

    from helper import rows_from_json


    def model_fn(model_dir, context):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            model = torch.jit.load(os.path.join(model_dir, "model.pt"), map_location="cpu")
        return {"network": model, "pid": os.getpid()}


    def input_fn(body, content_type):
        if content_type == "application/json":
            return torch.tensor(rows_from_json(body), dtype=torch.float32)
        if content_type == "text/csv":
            return torch.tensor([[float(v) for v in line.split(",")] for line in body.splitlines()])
        raise ValueError(content_type)


    def predict_fn(data, model):
        with torch.inference_mode():
            return {"scores": model["network"](data).tolist(), "pid": model["pid"]}


    def output_fn(prediction, accept):
        if accept == "text/csv":
            return "\\n".join(",".join(map(str, row)) for row in prediction["scores"]) + "\\n", "text/csv"
        return json.dumps(prediction), "application/json"
"""


def test_an_inference_script_serves_csv_and_json_in_the_image(
    tmp_path: Path, torchscript_dir: Path, run_container: RunContainer
) -> None:
    model_dir = model_with_script(tmp_path, torchscript_dir, INFERENCE)
    helper = "import json\n\ndef rows_from_json(body):\n    return json.loads(body)\n"
    (model_dir / "code" / "helper.py").write_text(helper)
    (model_dir / "code" / "requirements.txt").write_text("numpy\n")  # already there: pip runs, nothing is fetched

    container = run_container(
        "serve",
        volumes={str(model_dir): {"bind": "/opt/ml/model", "mode": "ro"}},
        ports={"8080/tcp": ("127.0.0.1", None)},
        environment={"SAGEMAKER_MODEL_SERVER_WORKERS": "2", "PIP_NO_INDEX": "1"},
    )
    url = f"http://127.0.0.1:{host_port(container)}"
    wait_until_healthy(container, url, deadline_s=120)

    csv_headers = {"Content-Type": "text/csv", "Accept": "text/csv"}
    as_csv = requests.post(f"{url}/invocations", data="1,2,3\n0,0,0\n", headers=csv_headers, timeout=10)
    as_json = requests.post(f"{url}/invocations", json=[[1, 2, 3]], timeout=10)
    logs = container.logs().decode()

    assert as_csv.status_code == 200, as_csv.text
    assert as_csv.text == "1.0,5.5\n0.0,0.5\n"
    assert as_json.status_code == 200, as_json.text
    assert as_json.json()["scores"] == [[1.0, 5.5]]
    assert as_json.json()["pid"] != 1  # model_fn ran in a worker, not in gunicorn's master (PID 1)
    assert "Requirement already satisfied: numpy" in logs
    handlers = "model_fn, input_fn, predict_fn, output_fn"
    assert f"script mode: /opt/ml/model/code/inference.py (its own handlers: {handlers})" in logs
