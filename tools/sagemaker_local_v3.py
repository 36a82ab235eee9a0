"""Train and serve the image with SageMaker Python SDK v3 local mode, fully offline.

Training uses ``ModelTrainer(training_mode=Mode.LOCAL_CONTAINER)`` exactly as users write it. For
serving, SDK v3.27's ``ModelBuilder(mode=Mode.LOCAL_CONTAINER)`` cannot host a bring-your-own image:
it always ``docker pull``s the image (which fails for a locally built tag, online or not) and only
knows how to start the SDK's own model servers (``model_server=None`` leaves no container). So this
driver uses the local hosting that v3 itself ships in ``sagemaker.core.local`` (``LocalSession``'s
CreateModel / CreateEndpointConfig / CreateEndpoint / InvokeEndpoint), which runs the image with
``serve`` through docker-compose, the model.tar.gz extracted and mounted at ``/opt/ml/model``.

Run it with the SDK v3 environment's Python, from the repository root::

    python tools/sagemaker_local_v3.py --image optml:latest \\
        --train data/breast_cancer/train --validation data/breast_cancer/validation \\
        --output demo-output --hyperparameters epochs=5 hidden_units=32,16

Progress goes to stderr; the run ends with a short summary on stdout (model.tar.gz path, main
validation metrics, predictions) and writes the machine-readable one to ``<output>/summary.json``
(``--summary``): ``--help`` and ``tools/_localmode_common.py`` say what each holds.
"""

from __future__ import annotations

import sys
import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # mypy knows the package; at run time a script run has only tools/ on sys.path
    from tools import _localmode_common as common
else:
    try:
        from tools import _localmode_common as common
    except ImportError:  # run as a script: python tools/sagemaker_local_v3.py
        import _localmode_common as common

RUN_PREFIX = "optml-v3"


def model_tarball(container_root: Path) -> Path:
    """Where v3 local mode leaves the model: it ignores ``output_data_config`` entirely."""
    return container_root / "compressed_artifacts" / "model.tar.gz"


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

    The job's working tree (``local_container_root``) is ``output_dir/run_name``; v3 writes the
    model to ``<that>/compressed_artifacts/model.tar.gz`` whatever the output config says.
    """
    from sagemaker.core.training.configs import Compute, InputData
    from sagemaker.train.model_trainer import Mode, ModelTrainer

    run_name = run_name or common.new_run_name(RUN_PREFIX)
    own_janitor = janitor is None
    janitor = janitor or common.DockerJanitor(run_name)
    root = (output_dir / run_name).resolve()
    root.mkdir(parents=True, exist_ok=False)

    trainer = ModelTrainer(
        training_mode=Mode.LOCAL_CONTAINER,
        training_image=image,
        base_job_name=RUN_PREFIX,
        compute=Compute(instance_type="local_cpu", instance_count=instance_count),
        hyperparameters=dict(hyperparameters or {}),
        local_container_root=str(root),
    )
    channels = [InputData(channel_name="train", data_source=str(train_dir))]
    if validation_dir is not None:
        channels.append(InputData(channel_name="validation", data_source=str(validation_dir)))

    common.log(f"training {image} on {instance_count} local container(s) (SDK v3 ModelTrainer); job directory {root}")
    try:
        with janitor.project("train"):
            trainer.train(input_data_config=channels, wait=True, logs=True)
    except RuntimeError as exc:
        raise common.training_failure(exc, root / "compressed_artifacts" / "output.tar.gz") from exc
    finally:
        if own_janitor:
            janitor.cleanup()

    model_data = model_tarball(root)
    if not model_data.is_file():
        raise common.LocalModeError(f"training finished but {model_data} is missing")
    with tarfile.open(model_data) as tar:
        if not any(member.isfile() for member in tar.getmembers()):
            raise common.LocalModeError(f"training finished but wrote nothing to /opt/ml/model ({model_data} is empty)")
    common.log(f"model saved to {model_data}")
    return model_data


def deploy_and_predict(
    image: str,
    model_data: Path,
    rows: Sequence[str],
    serving_port: int = common.DEFAULT_SERVING_PORT,
    environment: Mapping[str, str] | None = None,
    run_name: str | None = None,
    janitor: common.DockerJanitor | None = None,
) -> list[str]:
    """Host ``model_data`` in a local endpoint, send ``rows`` as text/csv, return one line per row.

    The endpoint is always deleted and its container removed, whatever happens.
    """
    from sagemaker.core.local.local_session import LocalSession

    run_name = run_name or common.new_run_name(RUN_PREFIX)
    own_janitor = janitor is None
    janitor = janitor or common.DockerJanitor(run_name)
    common.require_free_port(serving_port)

    session = LocalSession()
    session.config = {"local": {"local_code": True, "serving_port": serving_port}}
    client = session.sagemaker_client
    client.create_model(
        ModelName=run_name,
        PrimaryContainer={
            "Image": image,
            "ModelDataUrl": common.file_uri(model_data),
            "Environment": dict(environment or {}),
        },
    )
    client.create_endpoint_config(
        EndpointConfigName=run_name,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": run_name,
                "InitialInstanceCount": 1,
                "InstanceType": "local",
            }
        ],
    )
    common.log(f"starting local endpoint {run_name} on port {serving_port} (waits for /ping)")
    try:
        with janitor.project("serve"):
            client.create_endpoint(EndpointName=run_name, EndpointConfigName=run_name)
            common.log(f"endpoint is up; sending {len(rows)} CSV row(s) to /invocations")
            response = session.sagemaker_runtime_client.invoke_endpoint(
                Body="\n".join(rows) + "\n",
                EndpointName=run_name,
                ContentType="text/csv",
                Accept="text/csv",
            )
            status = response["ResponseMetadata"].get("HTTPStatusCode")
            body = response["Body"].read().decode("utf-8")
        if status is not None and status >= 400:
            raise common.LocalModeError(f"/invocations answered HTTP {status}: {body[:500]}")
        return common.split_predictions(body, len(rows))
    finally:
        common.log(f"deleting endpoint {run_name}")
        try:
            client.delete_endpoint(EndpointName=run_name)
            client.delete_endpoint_config(EndpointConfigName=run_name)
            client.delete_model(ModelName=run_name)
        finally:
            if own_janitor:
                janitor.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    return common.run_driver(
        argv,
        "SageMaker SDK v3 local mode: train with ModelTrainer, serve, predict (offline).",
        RUN_PREFIX,
        train,
        deploy_and_predict,
    )


if __name__ == "__main__":
    sys.exit(main())
