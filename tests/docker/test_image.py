"""The real image through a real Docker engine: train, fail, serve."""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import docker
import numpy as np
import pytest
import requests
from docker.models.containers import Container

from optml.container.artifact import load_model
from tests.conftest import make_classification, make_opt_ml
from tests.docker.conftest import host_port, wait_for_exit, wait_until_healthy
from tests.unit.test_import_names import CHECK, USER_CODE

pytestmark = pytest.mark.docker

RunContainer = Callable[..., Container]
HYPERPARAMETERS = {"epochs": "12", "hidden_units": "16", "batch_size": "32", "learning_rate": "0.01"}


def mount(root: Path, target: str = "/opt/ml") -> dict[str, dict[str, str]]:
    return {str(root): {"bind": target, "mode": "rw"}}


@pytest.fixture(scope="module")
def container_trained_model(tmp_path_factory: pytest.TempPathFactory, docker_client: docker.DockerClient, image: str):
    """Train once in a container with no command (as SDK v3 local mode does); share the /opt/ml tree."""
    root = make_opt_ml(
        tmp_path_factory.mktemp("container-train") / "ml",
        make_classification(240, 4, 2, seed=1),
        make_classification(80, 4, 2, seed=2),
        HYPERPARAMETERS,
    )
    container = docker_client.containers.run(image, None, detach=True, volumes=mount(root))
    try:
        status, logs = wait_for_exit(container)
    finally:
        container.remove(force=True)
    return root, status, logs


def test_no_command_with_hyperparameters_trains_and_writes_the_model(container_trained_model) -> None:
    root, status, logs = container_trained_model
    assert status == 0, logs
    assert sorted(p.name for p in (root / "model").iterdir()) == [
        "MODEL_CARD.md",
        "background.safetensors",
        "model.pt",
        "model.safetensors",
        "model_card.json",
        "optml-model.json",
    ]
    assert {p.name for p in (root / "output" / "data").iterdir()} == {
        "evaluation.json",
        "learning_curves.png",
        "roc_curve.png",
        "confusion_matrix.png",
        "profile_timeline.png",
        "rules.json",
        "analysis.json",  # the global explanation (no facets: no bias sections)
        "shap_importance.png",
        "partial_dependence.png",
    }
    assert load_model(root / "model").metadata.hyperparameters["epochs"] == 12
    assert json.loads((root / "output" / "data" / "evaluation.json").read_text())["channels"]["train"]["rows"] == 240
    assert not (root / "output" / "failure").exists()


def test_logged_metrics_are_matched_by_the_published_metric_definitions(
    container_trained_model, run_container: RunContainer
) -> None:
    _, _, logs = container_trained_model
    definitions_container = run_container("metric-definitions")
    status, output = wait_for_exit(definitions_container, timeout=60)
    assert status == 0
    definitions = json.loads(output)
    values = {d["Name"]: re.findall(d["Regex"], logs) for d in definitions}
    assert len(values["train:loss"]) == 12  # one per epoch: the tuner's early stopping needs them all
    assert len(values["validation:accuracy"]) == 12
    assert float(values["validation:accuracy"][-1]) >= 0.9
    assert values["validation:rmse"] == []  # a classification job logs no regression metrics
    assert "generated new fontManager" not in logs  # matplotlib's font cache is built into the image


def test_bad_hyperparameters_fail_with_a_reason_in_the_failure_file(
    tmp_path: Path, run_container: RunContainer
) -> None:
    root = make_opt_ml(tmp_path, make_classification(40, 2, 2), None, {"epochs": "-3", "hidden_units": "wide"})
    status, logs = wait_for_exit(run_container("train", volumes=mount(root)))
    assert status == 1
    reason = (root / "output" / "failure").read_text()
    assert reason == (
        "Invalid hyperparameters: epochs='-3' is invalid: expected a positive integer; "
        "hidden_units='wide' is invalid: expected comma-separated positive integers such as \"64,32\""
    )
    assert "Traceback" not in logs


def test_corrupt_csv_names_the_file_row_and_column(tmp_path: Path, run_container: RunContainer) -> None:
    root = make_opt_ml(tmp_path, make_classification(40, 2, 2), None, {"epochs": "1"})
    with open(root / "input" / "data" / "train" / "part-0.csv", "a") as handle:
        handle.write("1,0.5,oops\n")
    status, _ = wait_for_exit(run_container("train", volumes=mount(root)))
    assert status == 1
    assert (root / "output" / "failure").read_text() == (
        "/opt/ml/input/data/train/part-0.csv row 41, column 3: 'oops' is not a number"
        " (other values in this column are numbers; list it in categorical_columns if it holds categories)"
    )


def test_serve_answers_ping_and_predictions_over_http(container_trained_model, run_container: RunContainer) -> None:
    root, _, _ = container_trained_model
    container = run_container(
        "serve",
        volumes=mount(root / "model", "/opt/ml/model"),
        ports={"8080/tcp": ("127.0.0.1", None)},
        environment={"SAGEMAKER_MODEL_SERVER_WORKERS": "2"},
    )
    url = f"http://127.0.0.1:{host_port(container)}"
    wait_until_healthy(container, url)

    rows = make_classification(6, 4, 2, seed=3)[:, 1:]
    expected = load_model(root / "model").predict(rows)
    body = "\n".join(",".join(repr(float(v)) for v in row) for row in rows)
    response = requests.post(f"{url}/invocations", data=body, headers={"Content-Type": "text/csv"}, timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/csv")
    assert response.text.splitlines() == [str(label) for label in expected.labels]

    response = requests.post(f"{url}/invocations", json={"instances": rows.tolist()}, timeout=10)
    assert [p["label"] for p in response.json()["predictions"]] == expected.labels
    assert expected.scores is not None
    np.testing.assert_allclose([p["scores"] for p in response.json()["predictions"]], expected.scores, atol=1e-6)

    response = requests.post(f"{url}/invocations", data="1,2\n", headers={"Content-Type": "text/csv"}, timeout=10)
    assert response.status_code == 400
    assert response.json() == {
        "error": "bad_request",
        "message": "CSV line 1 has 2 values; each row needs 4 features",
    }
    assert requests.get(f"{url}/ping", timeout=2).status_code == 200

    started = time.monotonic()
    container.stop(timeout=30)
    assert time.monotonic() - started < 30
    container.reload()
    assert container.attrs["State"]["ExitCode"] == 0  # gunicorn drained and exited on SIGTERM


def test_serve_listens_on_sagemaker_bind_to_port(container_trained_model, run_container: RunContainer) -> None:
    root, _, _ = container_trained_model
    container = run_container(
        "serve",
        volumes=mount(root / "model", "/opt/ml/model"),
        ports={"9090/tcp": ("127.0.0.1", None)},
        environment={"SAGEMAKER_BIND_TO_PORT": "9090", "SAGEMAKER_MODEL_SERVER_WORKERS": "1"},
    )
    wait_until_healthy(container, f"http://127.0.0.1:{host_port(container, '9090/tcp')}")


def test_no_command_without_hyperparameters_serves(container_trained_model, run_container: RunContainer) -> None:
    root, _, _ = container_trained_model
    container = run_container(
        volumes=mount(root / "model", "/opt/ml/model"),
        ports={"8080/tcp": ("127.0.0.1", None)},
        environment={"SAGEMAKER_MODEL_SERVER_WORKERS": "1"},
    )
    wait_until_healthy(container, f"http://127.0.0.1:{host_port(container)}")


def test_serve_without_a_model_exits_with_a_clear_message(tmp_path: Path, run_container: RunContainer) -> None:
    (tmp_path / "model").mkdir()
    status, logs = wait_for_exit(run_container("serve", volumes=mount(tmp_path / "model", "/opt/ml/model")), 60)
    assert status != 0
    assert "cannot start: /opt/ml/model/optml-model.json not found" in logs
    assert "(found: nothing)" in logs


def test_image_metadata_follows_the_sagemaker_contract(docker_client: docker.DockerClient, image: str) -> None:
    config = docker_client.images.get(image).attrs["Config"]
    assert config["Labels"]["com.amazonaws.sagemaker.capabilities.accept-bind-to-port"] == "true"
    assert config["Entrypoint"] == ["python", "-m", "optml.container.entrypoint"]  # exec form
    assert config["Healthcheck"]["Test"][0] == "CMD"
    assert "PYTHONUNBUFFERED=1" in config["Env"]


def test_no_wheels_are_left_and_script_mode_has_its_tools(run_container: RunContainer) -> None:
    """The wheelhouse stays in the build stage; what a user's script mode needs is there: pip (requirements.txt),
    torchrun (distributed scripts), bash and tar (SDK v3's own driver, sm_train.sh)."""
    container = run_container(
        "-c",
        "import glob, shutil;"
        "print(sum(len(glob.glob(d + '/**/*.whl', recursive=True)) for d in ('/opt', '/tmp', '/root')),"
        " *(shutil.which(tool) for tool in ('pip', 'torchrun', 'bash', 'tar')))",
        entrypoint="python",
    )
    status, output = wait_for_exit(container, 60)
    assert status == 0
    wheels, pip, torchrun, bash, tar = output.split()
    assert (wheels, pip, torchrun) == ("0", "/opt/venv/bin/pip", "/opt/venv/bin/torchrun")
    assert bash.endswith("/bash") and tar.endswith("/tar")


# ---- the health check: right for serving, training and a replaced entrypoint ------------------------------

# The image's own health check command, polled faster (Docker keeps the image's test when none is given).
FAST_HEALTH_CHECKS = {"interval": 500_000_000, "timeout": 3_000_000_000, "retries": 2, "start_period": 1_000_000}
NO_SERVER = "no model server in this container (training or another command): nothing to check\n"


def health_log_after(container: Container, status: str, checks: int, deadline_s: float = 90) -> list[dict]:
    """Docker's health log once the container is `status` and has run at least `checks` checks."""
    started = time.monotonic()
    while time.monotonic() - started < deadline_s:
        container.reload()
        health = container.attrs["State"].get("Health") or {}
        if health.get("Status") == status and len(health.get("Log") or []) >= checks:
            return list(health["Log"])
        if container.status == "exited":
            break
        time.sleep(0.2)
    pytest.fail(f"not {status} after {checks} checks within {deadline_s}s: {container.attrs['State']}")


def test_a_training_container_stays_healthy(tmp_path: Path, run_container: RunContainer) -> None:
    """The old check polled /ping in every mode: `docker ps` showed a healthy training job as unhealthy."""
    root = make_opt_ml(tmp_path, make_classification(400, 4, 2), None, {"epochs": "100000"})
    container = run_container("train", volumes=mount(root), healthcheck=FAST_HEALTH_CHECKS)
    started = time.monotonic()
    while "training mlp on 400 rows" not in container.logs().decode():  # torch takes seconds to import
        assert time.monotonic() - started < 90, container.logs().decode()[-2000:]
        time.sleep(0.2)
    # Docker keeps the last 5 checks: collect the ones made while training, by their start time.
    seen = {entry["Start"] for entry in health_log_after(container, "healthy", checks=1)}
    while_training: dict[str, tuple[int, str]] = {}
    while len(while_training) < 3:
        assert time.monotonic() - started < 120, container.attrs["State"]
        for entry in health_log_after(container, "healthy", checks=1):
            if entry["Start"] not in seen:
                while_training[entry["Start"]] = (entry["ExitCode"], entry["Output"])
        time.sleep(0.2)
    assert list(while_training.values()) == [(0, NO_SERVER)] * len(while_training)


PID_1_STATE = (  # PID 1's command line, and the signals it has handlers for (a hexadecimal mask)
    "import re; print(open('/proc/1/cmdline').read(),"
    " re.search(r'SigCgt:\\s*(\\w+)', open('/proc/1/status').read())[1])"
)


def stop_once_pid_1_handles_sigterm(container: Container, command_line: str) -> tuple[float, int, str]:
    """Stop the container once its PID 1 runs `command_line` and has a SIGTERM handler (what the stop needs;
    the interpreter's first milliseconds, before any code can install one, stay uncovered): the seconds
    it took to exit, the status and the logs."""
    started = time.monotonic()
    while True:
        output = container.exec_run(["python", "-c", PID_1_STATE]).output.decode()
        cmdline, _, caught = output.strip().rpartition(" ")
        if command_line in cmdline and int(caught or "0", 16) & (1 << (signal.SIGTERM - 1)):
            break
        assert time.monotonic() - started < 30, f"no SIGTERM handler in {command_line!r}: {output}"
        time.sleep(0.02)
    started = time.monotonic()
    container.stop(timeout=60)
    status, logs = wait_for_exit(container)
    return time.monotonic() - started, status, logs


def test_a_stop_while_the_job_starts_exits_at_once(tmp_path: Path, run_container: RunContainer) -> None:
    """PID 1 ignores a signal it has no handler for: a stop while torch was importing (~2 s) waited for the
    SIGKILL (120 s on SageMaker). The entrypoint now exits on it until training takes over."""
    root = make_opt_ml(tmp_path, make_classification(400, 4, 2), None, {"epochs": "100000"})
    container = run_container("train", volumes=mount(root))
    took, status, logs = stop_once_pid_1_handles_sigterm(container, "optml.container.entrypoint")
    # 143, promptly: stopped while importing (training's own handler would have checkpointed and exited 0)
    assert (status, took < 20) == (143, True), logs


def test_a_stop_while_the_server_loads_exits_at_once(container_trained_model, run_container: RunContainer) -> None:
    """gunicorn (PID 1 once `serve` execs it) loads the model before it installs its own handlers."""
    root, _, _ = container_trained_model
    container = run_container("serve", volumes=mount(root / "model", "/opt/ml/model"))
    took, status, logs = stop_once_pid_1_handles_sigterm(container, "gunicorn")
    # 143, promptly: stopped while loading (gunicorn's own handler would have drained and exited 0)
    assert (status, took < 20) == (143, True), logs


def test_a_replaced_entrypoint_stays_healthy(run_container: RunContainer) -> None:
    """SDK v3 script mode runs /bin/bash -c .../sm_train.sh: no optml code runs, the check still fits."""
    container = run_container(entrypoint=["/bin/bash", "-c", "sleep 120"], healthcheck=FAST_HEALTH_CHECKS)
    log = health_log_after(container, "healthy", checks=3)
    assert [(entry["ExitCode"], entry["Output"]) for entry in log] == [(0, NO_SERVER)] * len(log)


def test_a_server_that_stops_answering_turns_unhealthy(container_trained_model, run_container: RunContainer) -> None:
    root, _, _ = container_trained_model
    container = run_container(
        "serve",
        volumes=mount(root / "model", "/opt/ml/model"),
        environment={"SAGEMAKER_MODEL_SERVER_WORKERS": "1"},
        healthcheck=FAST_HEALTH_CHECKS,
    )
    assert health_log_after(container, "healthy", checks=1)[-1]["Output"] == (
        "model server on port 8080: /ping answered 200\n"
    )
    # Freeze every process but PID 1 (gunicorn's master): the worker no longer answers /ping.
    assert container.exec_run(["/bin/bash", "-c", "kill -STOP -1"]).exit_code == 0
    last = health_log_after(container, "unhealthy", checks=2, deadline_s=60)[-1]
    assert last["ExitCode"] == 1
    assert last["Output"].startswith("http://127.0.0.1:8080/ping did not answer: ")


def big_channel_job(root: Path, hyperparameters: dict[str, str]) -> Path:
    """157.5 MB of CSV: loading it whole takes ~600 MB."""
    make_opt_ml(root, None, None, hyperparameters)
    train = root / "input" / "data" / "train" / "part-0.csv"
    train.parent.mkdir(parents=True)
    train.write_bytes(b"1,0.5,0.25,0.125,2.0\n0,0.5,0.25,0.125,2.5\n" * 3_750_000)
    (root / "input" / "config" / "inputdataconfig.json").write_text(json.dumps({"train": {"ContentType": "text/csv"}}))
    return root


def test_a_job_killed_for_memory_still_says_why(tmp_path: Path, run_container: RunContainer) -> None:
    """A kill for memory (exit 137) gives the job no chance to write a failure file: the reason is written
    before the channel that will not fit is loaded (data_loading=memory: loaded whole anyway)."""
    root = big_channel_job(tmp_path, {"epochs": "1", "data_loading": "memory"})
    status, logs = wait_for_exit(run_container("train", volumes=mount(root), mem_limit="400m"), timeout=300)
    assert "WARNING optml.train.memory: channel 'train' is 157.5 MB of data, and loading it takes about 4x" in logs
    assert status == 137, logs[-2000:]
    reason = (root / "output" / "failure").read_text()
    assert reason.startswith("Probably out of memory while loading the data: channel 'train' is 157.5 MB of data")
    assert "of the container's memory limit (419.4 MB) is free" in reason


def test_a_users_train_serve_and_container_modules_import_beside_optml(
    tmp_path: Path, run_container: RunContainer
) -> None:
    """In the image itself: the user's code directory first on the path, as script mode runs it."""
    code = tmp_path / "code"
    code.mkdir()
    for name, text in USER_CODE.items():
        (code / name).write_text(text)
    container = run_container(
        "-c", CHECK, entrypoint="python", working_dir="/opt/ml/code", volumes=mount(code, "/opt/ml/code")
    )
    status, output = wait_for_exit(container, 120)
    assert (status, output.splitlines()) == (
        0,
        [
            "the user train.py; the user serve.py; the user container.py; Net",
            "optml.train.main; optml.serve.wsgi; optml.container.entrypoint",
        ],
    )


def test_auto_streams_a_channel_too_big_for_the_container_and_trains(
    tmp_path: Path, run_container: RunContainer
) -> None:
    """The same channel with data_loading=auto in 1 GiB: loading it whole would take more than half of what
    is free, so the cgroup limit, not the host's memory, decides to stream (which holds ~0.65 GB here)."""
    root = big_channel_job(tmp_path, {"epochs": "1", "batch_size": "4096"})
    status, logs = wait_for_exit(run_container("train", volumes=mount(root), mem_limit="1g"), timeout=600)
    assert status == 0, logs[-2000:]
    assert "data_loading=auto: reading the channels as streams (loading 157.5 MB of data takes about" in logs
    assert "free of the container's memory limit (1.1 GB)" in logs
    assert (root / "model" / "model.safetensors").exists()
    assert not (root / "output" / "failure").exists()
