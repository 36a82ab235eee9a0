"""Issue 15 through the real image: bias metrics, SHAP explanations (global and per request), training
rules and the profile, in a training container and a serving container."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import pytest
import requests
from docker.models.containers import Container

from optml.container.artifact import load_model
from optml.train.tensorboard import read_scalars
from tests.conftest import loan_job
from tests.docker.conftest import host_port, wait_for_exit, wait_until_healthy

pytestmark = pytest.mark.docker

RunContainer = Callable[..., Container]
PRE = {"CI", "DPL", "KL", "JS", "LP", "TVD", "KS", "CDDL"}
POST = {"DPPL", "DI", "DCAcc", "DCR", "RD", "DAR", "DRR", "AD", "TE", "CDDPL", "FT", "GE"}


def mount(root: Path, target: str = "/opt/ml") -> dict[str, dict[str, str]]:
    return {str(root): {"bind": target, "mode": "rw"}}


@pytest.fixture(scope="module")
def loan_model(tmp_path_factory: pytest.TempPathFactory, docker_client: docker.DockerClient, image: str):
    hyperparameters = {
        "epochs": "6", "facet_column": "sex,age", "facet_value": "female;40", "group_column": "age", "rules": "all",
    }  # fmt: skip
    root = loan_job(tmp_path_factory.mktemp("trust") / "ml", hyperparameters)
    container = docker_client.containers.run(image, "train", detach=True, volumes=mount(root))
    try:
        status, logs = wait_for_exit(container)
    finally:
        container.remove(force=True)
    assert status == 0, logs
    return root, logs


def test_a_job_with_facets_writes_clarify_bias_metrics(loan_model) -> None:
    root, logs = loan_model
    analysis = json.loads((root / "output" / "data" / "analysis.json").read_text())
    pre, post = analysis["pre_training_bias_metrics"], analysis["post_training_bias_metrics"]
    assert (pre["label"], pre["label_value_or_threshold"]) == ("approved", "yes")
    assert [entry["value_or_threshold"] for entry in pre["facets"]["sex"]] == ["female"]
    assert {m["name"] for m in pre["facets"]["sex"][0]["metrics"]} == PRE
    assert POST <= {m["name"] for m in post["facets"]["sex"][0]["metrics"]}
    assert analysis["optml"]["post_training_channel"] == "test"
    di = next(m["value"] for m in post["facets"]["sex"][0]["metrics"] if m["name"] == "DI")
    assert di < 0.8  # the data favour men: the model learns it, and the log says so
    assert "bias: disparate impact DI=" in logs and "for sex female on channel test" in logs
    assert "## Bias" in (root / "model" / "MODEL_CARD.md").read_text()


def test_a_job_explains_its_model_and_profiles_and_checks_its_training(loan_model) -> None:
    root, logs = loan_model
    data = root / "output" / "data"
    explanation = json.loads((data / "analysis.json").read_text())["explanations"]["deep_lift_shap"]["approved"]
    assert set(explanation["global_shap_values"]) == {"sex", "age", "income"}
    assert all(value > 0 for value in explanation["global_shap_values"].values())
    assert {"shap_importance.png", "partial_dependence.png", "profile_timeline.png"} <= {p.name for p in data.iterdir()}
    rules = json.loads((data / "rules.json").read_text())
    assert len(rules["rules"]) == 11 and all(
        rule["status"] in ("IssuesFound", "NoIssuesFound") for rule in rules["rules"]
    )
    profile = json.loads((data / "evaluation.json").read_text())["profile"]
    assert [epoch["epoch"] for epoch in profile] == list(range(1, len(profile) + 1))
    assert all(epoch["samples_per_second"] > 0 for epoch in profile)
    scalars = read_scalars(root / "output" / "tensorboard")
    assert len(scalars["train/loss"]) == len(profile)
    assert " profile: " in logs


def test_the_endpoint_explains_a_request_when_asked(loan_model, run_container: RunContainer) -> None:
    root, _ = loan_model
    container = run_container(
        "serve", volumes=mount(root / "model", "/opt/ml/model"), ports={"8080/tcp": ("127.0.0.1", None)}
    )
    url = f"http://127.0.0.1:{host_port(container)}"
    wait_until_healthy(container, url)
    body: dict[str, Any] = {
        "instances": [{"sex": "female", "age": 35, "income": 61.5}, {"sex": "male", "age": 52, "income": 40.0}]
    }
    plain = requests.post(f"{url}/invocations", json=body, timeout=10).json()["predictions"]
    assert all("explanation" not in p for p in plain)
    headers = {"X-Amzn-SageMaker-Custom-Attributes": "explain=true"}
    answer = requests.post(f"{url}/invocations", json=body, headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text
    for prediction in answer.json()["predictions"]:
        explanation = prediction["explanation"]
        assert set(explanation["attributions"]) == {"sex", "age", "income"}
        total = explanation["base_value"] + sum(explanation["attributions"].values())
        assert total == pytest.approx(prediction["scores"][1], abs=1e-4)  # P(yes): the positive class
    assert load_model(root / "model").metadata.classes == ["no", "yes"]
    refused = requests.post(
        f"{url}/invocations", json=body, headers={"X-Amzn-SageMaker-Custom-Attributes": "explain=maybe"}, timeout=10
    )
    assert refused.status_code == 400 and "explain" in refused.json()["message"]


def test_a_rule_with_stop_fails_the_job_naming_the_rule(tmp_path: Path, run_container: RunContainer) -> None:
    hyperparameters = {
        "epochs": "3",
        "learning_rate": "1e30",
        "optimizer": "sgd",
        "rules": "ExplodingTensor",
        "rule_action": "stop",
    }
    root = loan_job(tmp_path / "ml", hyperparameters)
    status, logs = wait_for_exit(run_container("train", volumes=mount(root)))
    assert status == 1, logs
    failure = (root / "output" / "failure").read_text()
    assert failure.startswith("rule ExplodingTensor triggered at step "), failure
    assert "rule_action=stop" in failure
    assert not (root / "model" / "optml-model.json").exists()
    verdict = json.loads((root / "output" / "data" / "rules.json").read_text())["rules"][0]
    assert (verdict["name"], verdict["status"]) == ("ExplodingTensor", "IssuesFound")


def test_a_facet_the_data_lacks_fails_before_training(tmp_path: Path, run_container: RunContainer) -> None:
    root = loan_job(tmp_path / "ml", {"facet_column": "gender"})
    status, logs = wait_for_exit(run_container("train", volumes=mount(root)))
    assert status == 1, logs
    failure = (root / "output" / "failure").read_text()
    assert "gender" in failure and "sex" in failure, failure  # names the column and the ones there are
    assert "epoch=1" not in logs
