"""Train and serve the image with SageMaker Python SDK v2 local mode, fully offline.

The classic local-mode flow: ``Estimator(instance_type="local")`` with a ``LocalSession``,
``fit()`` on ``file://`` channels with a ``file://`` output path, then ``Model(...).deploy(1, "local")``
on the resulting model.tar.gz and ``predictor.predict()`` with a CSV serializer. Endpoints are
always deleted and their containers removed, even when something fails.

Run it with the SDK v2 environment's Python, from the repository root::

    python tools/sagemaker_local_v2.py --image optml:latest \\
        --train data/breast_cancer/train --validation data/breast_cancer/validation \\
        --output demo-output --hyperparameters epochs=5 hidden_units=32,16

Progress goes to stderr; the run ends with a short summary on stdout (model.tar.gz path, main
validation metrics, predictions) and writes the machine-readable one to ``<output>/summary.json``
(``--summary``): ``--help`` and ``optml/cli/localmode.py`` say what each holds.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

if not __package__:  # run as a script (python tools/sagemaker_local_v2.py): only tools/ is on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, which holds optml/

# Local mode's stdlib-only part, shared with `optml train --local` (SDK v3): nothing of optml's dependencies
# is installed in SDK v2's venv.
from optml.cli import localmode as common  # noqa: E402

RUN_PREFIX = "optml-v2"


def _local_session(serving_port: int = common.DEFAULT_SERVING_PORT, container_root: Path | None = None) -> Any:
    from sagemaker.local import LocalSession

    local: dict[str, Any] = {"local_code": True, "serving_port": serving_port}
    if container_root is not None:
        local["container_root"] = str(container_root)
    session = LocalSession()
    session.config = {"local": local}
    return session


def train(
    image: str,
    train_dir: Path,
    output_dir: Path,
    validation_dir: Path | None = None,
    instance_count: int = 1,
    hyperparameters: Mapping[str, str] | None = None,
    run_name: str | None = None,
    janitor: common.DockerJanitor | None = None,
) -> Path:
    """Run a local training job; return the path of the model.tar.gz it produced.

    v2 moves the artifacts straight into ``output_path`` (no job-name folder), so each run gets its
    own ``output_dir/run_name`` and the model lands at ``output_dir/run_name/model.tar.gz``.
    """
    from sagemaker.estimator import Estimator

    run_name = run_name or common.new_run_name(RUN_PREFIX)
    own_janitor = janitor is None
    janitor = janitor or common.DockerJanitor(run_name)
    job_dir = (output_dir / run_name).resolve()
    job_dir.mkdir(parents=True, exist_ok=False)
    # v2 never deletes a training job's working tree (a mkdtemp under /tmp by default, holding a
    # copy of the model and output); keep it inside the job directory and delete it afterwards.
    work_dir = job_dir / ".sagemaker-local"
    work_dir.mkdir()

    estimator = Estimator(
        image_uri=image,
        role=common.DUMMY_ROLE,
        instance_count=instance_count,
        instance_type="local",
        output_path=common.file_uri(job_dir),
        hyperparameters=dict(hyperparameters or {}),
        sagemaker_session=_local_session(container_root=work_dir),
        base_job_name=RUN_PREFIX,
    )
    inputs = {"train": common.file_uri(train_dir)}
    if validation_dir is not None:
        inputs["validation"] = common.file_uri(validation_dir)

    common.log(f"training {image} on {instance_count} local container(s) (SDK v2 Estimator); output {job_dir}")
    try:
        with janitor.project("train"):
            estimator.fit(inputs, wait=True, logs=True, job_name=run_name)
    except RuntimeError as exc:
        raise common.training_failure(exc, job_dir / "output.tar.gz") from exc
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)  # files the container wrote may be root's
        if own_janitor:
            janitor.cleanup()

    return common.trained_model(common.local_path(estimator.model_data))


def _status_checking_deserializer() -> Any:
    """A string deserializer that fails on HTTP errors.

    The v2 local runtime client hands back whatever body the container sent, 4xx/5xx included
    (a real endpoint raises ModelError); the urllib3 response it passes along still has the status.
    """
    from sagemaker.deserializers import StringDeserializer

    class StatusCheckingDeserializer(StringDeserializer):
        def deserialize(self, stream: Any, content_type: str) -> str:
            status = getattr(stream, "status", 200)
            text: str = super().deserialize(stream, content_type)
            if status >= 400:
                raise common.LocalModeError(f"/invocations answered HTTP {status}: {text[:500]}")
            return text

    return StatusCheckingDeserializer(accept="text/csv")


def local_model(
    image: str, model_data: Path, serving_port: int, run_name: str, environment: Mapping[str, str] | None = None
) -> Any:
    """A SDK v2 `Model` of the image and a local model.tar.gz, in the local-mode session (deploy, transform)."""
    from sagemaker.model import Model
    from sagemaker.predictor import Predictor

    return Model(
        image_uri=image,
        model_data=common.file_uri(model_data),
        role=common.DUMMY_ROLE,
        env=dict(environment or {}),
        name=run_name,
        predictor_cls=Predictor,
        sagemaker_session=_local_session(serving_port),
    )


def deploy_and_predict(
    image: str,
    model_data: Path,
    rows: Sequence[str],
    serving_port: int = common.DEFAULT_SERVING_PORT,
    environment: Mapping[str, str] | None = None,
    run_name: str | None = None,
    janitor: common.DockerJanitor | None = None,
) -> list[str]:
    """Deploy ``model_data`` to a local endpoint, predict ``rows`` as text/csv, delete the endpoint."""
    from sagemaker.serializers import CSVSerializer

    run_name = run_name or common.new_run_name(RUN_PREFIX)
    own_janitor = janitor is None
    janitor = janitor or common.DockerJanitor(run_name)
    common.require_free_port(serving_port)

    model = local_model(image, model_data, serving_port, run_name, environment)
    session = model.sagemaker_session
    predictor = None
    common.log(f"deploying local endpoint {run_name} on port {serving_port} (waits for /ping)")
    try:
        with janitor.project("serve"):
            predictor = model.deploy(
                initial_instance_count=1,
                instance_type="local",
                endpoint_name=run_name,
                # Local CreateEndpoint already blocks until /ping answers; wait=True would add
                # a fixed 30 s sleep (Session.wait_for_endpoint polls every 30 s, sleeping first).
                wait=False,
                serializer=CSVSerializer(),
                deserializer=_status_checking_deserializer(),
            )
            common.log(f"endpoint is up; sending {len(rows)} CSV row(s) to /invocations")
            body = predictor.predict(
                "\n".join(rows) + "\n",
                initial_args={"ContentType": "text/csv", "Accept": "text/csv"},
            )
        return common.split_predictions(body, len(rows))
    finally:
        common.log(f"deleting endpoint {run_name}")
        try:
            if predictor is not None:
                predictor.delete_endpoint()  # the endpoint and its config
            else:  # deploy() failed half-way (e.g. /ping never healthy): stop what it started
                session.sagemaker_client.delete_endpoint(EndpointName=run_name)
            # predictor.delete_model() looks the model up through the endpoint config, gone by now.
            session.sagemaker_client.delete_model(ModelName=run_name)
        finally:
            if own_janitor:
                janitor.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    return common.run_driver(
        argv,
        "SageMaker SDK v2 local mode: train with Estimator, deploy, predict (offline).",
        RUN_PREFIX,
        train,
        deploy_and_predict,
    )


if __name__ == "__main__":
    sys.exit(main())
