"""SageMaker Python SDK v3 local mode behind `optml train --local`, `deploy --local` and `transform --local`:
the image trained, served and run as a batch transform on this machine, offline, with local data.

Training uses ``ModelTrainer(training_mode=Mode.LOCAL_CONTAINER)`` exactly as users write it. For serving, SDK
v3.27's ``ModelBuilder(mode=Mode.LOCAL_CONTAINER)`` cannot host a bring-your-own image: it always ``docker
pull``s the image (which fails for a locally built tag, online or not) and only knows how to start the SDK's
own model servers (``model_server=None`` leaves no container). So endpoints and transform jobs go to the local
hosting that v3 itself ships in ``sagemaker.core.local`` (``LocalSession``'s CreateModel, CreateEndpointConfig,
CreateEndpoint, CreateTransformJob, InvokeEndpoint), which runs the image with ``serve`` through
docker-compose, the model.tar.gz extracted and mounted at ``/opt/ml/model`` — and it takes the very requests
`optml deploy` and `optml transform` send to AWS, with local paths and instance type ``local``.

The SDK is imported inside the functions: `optml --help` does not pay for it, and an install without the
``local`` extra works for everything else. What a run prints and writes (its summary) is ``localmode``'s.
"""

from __future__ import annotations

import contextlib
import re
import signal
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optml.cli import localmode as common

if TYPE_CHECKING:
    from optml.cli.jobs import Request
    from optml.cli.train import Channel

RUN_PREFIX = "optml-v3"
SDK_MAJOR = 3


def require_sdk() -> None:
    """SageMaker SDK v3 is installed (SDK v2 is the same distribution, with other modules)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("sagemaker")
    except PackageNotFoundError:
        installed = None
    if installed is None or int(installed.split(".")[0]) < SDK_MAJOR:
        found = f"SDK {installed} is installed" if installed else "it is not installed"
        raise common.LocalModeError(
            f"--local needs SageMaker Python SDK v3 ({found}): pip install 'sagemaker>=3.27,<4' (the `local` extra"
            ' of optml: pip install ".[local]")'
        )


def model_tarball(container_root: Path) -> Path:
    """Where v3 local mode leaves the model: it ignores ``output_data_config`` entirely."""
    return container_root / "compressed_artifacts" / "model.tar.gz"


def train(
    image: str,
    channels: Sequence[Channel],
    output_dir: Path,
    instance_count: int,
    hyperparameters: Mapping[str, str],
    run_name: str,
    janitor: common.DockerJanitor,
) -> Path:
    """Run a local training job; return the path of the model.tar.gz it produced.

    The job's working tree (``local_container_root``) is ``output_dir/run_name``; v3 writes the
    model to ``<that>/compressed_artifacts/model.tar.gz`` whatever the output config says.
    """
    from sagemaker.core.training.configs import Compute, InputData
    from sagemaker.train.model_trainer import Mode, ModelTrainer

    root = (output_dir / run_name).resolve()
    root.mkdir(parents=True, exist_ok=False)
    trainer = ModelTrainer(
        training_mode=Mode.LOCAL_CONTAINER,
        training_image=image,
        base_job_name=RUN_PREFIX,
        compute=Compute(instance_type="local_cpu", instance_count=instance_count),
        hyperparameters=dict(hyperparameters),
        local_container_root=str(root),
    )
    # InputData's content_type takes a string or nothing at all, not None.
    inputs = [
        InputData(
            channel_name=channel.name,
            data_source=str(common.local_path(channel.uri)),
            **({"content_type": channel.content_type} if channel.content_type else {}),
        )
        for channel in channels
    ]
    common.log(f"training {image} on {instance_count} local container(s) (SDK v3 ModelTrainer); job directory {root}")
    try:
        with janitor.project("train"):
            trainer.train(input_data_config=inputs, wait=True, logs=True)
    except RuntimeError as exc:
        raise common.training_failure(exc, root / "compressed_artifacts" / "output.tar.gz") from exc

    return common.trained_model(model_tarball(root))


def session(serving_port: int) -> Any:
    """v3's local stand-in for SageMaker: endpoints publish `serving_port`, the model comes from a local file."""
    from sagemaker.core.local.local_session import LocalSession

    local = LocalSession()
    local.config = {"local": {"local_code": True, "serving_port": serving_port}}
    return local


def send(local: Any, requests: Sequence[Request]) -> None:
    """SageMaker requests to the local stand-in, whose methods have boto3's names and parameters."""
    for request in requests:
        method = re.sub(r"(?<!^)(?=[A-Z])", "_", request.operation).lower()  # CreateModel -> create_model
        getattr(local.sagemaker_client, method)(**request.params)


@contextlib.contextmanager
def endpoint(
    local: Any, create: Sequence[Request], delete: Sequence[Request], janitor: common.DockerJanitor
) -> Iterator[str]:
    """A local endpoint (CreateEndpoint returns once /ping answers) for the block; always deleted after it,
    whatever happens, and its container removed by the janitor."""
    name: str = create[-1].params["EndpointName"]
    try:
        with janitor.project("serve"):
            common.log(f"starting local endpoint {name} (waits for /ping)")
            send(local, create)
            yield name
    finally:
        common.log(f"deleting endpoint {name}")
        send(local, delete)


def deploy_and_predict(
    local: Any, create: Sequence[Request], delete: Sequence[Request], rows: Sequence[str], janitor: common.DockerJanitor
) -> list[str]:
    """Host the model, send ``rows`` as text/csv, return one line per row."""
    with endpoint(local, create, delete, janitor) as name:
        common.log(f"endpoint is up; sending {len(rows)} CSV row(s) to /invocations")
        response = local.sagemaker_runtime_client.invoke_endpoint(
            Body="\n".join(rows) + "\n", EndpointName=name, ContentType="text/csv", Accept="text/csv"
        )
        status = response["ResponseMetadata"].get("HTTPStatusCode")
        body = response["Body"].read().decode("utf-8")
    if status is not None and status >= 400:
        raise common.LocalModeError(f"/invocations answered HTTP {status}: {body[:500]}")
    return common.split_predictions(body, len(rows))


def host(
    local: Any, create: Sequence[Request], delete: Sequence[Request], serving_port: int, janitor: common.DockerJanitor
) -> None:
    """Host the model until Ctrl-C (or SIGTERM)."""
    with endpoint(local, create, delete, janitor) as name:
        common.log(
            f"endpoint {name} answers on http://localhost:{serving_port}/invocations, e.g. `optml invoke --local"
            f" --serving-port {serving_port} rows.csv`; Ctrl-C stops and deletes it"
        )
        wait_for_stop()


def wait_for_stop() -> None:
    """Return on Ctrl-C or SIGTERM (which ``localmode.time_limit`` turns into SystemExit): the normal end of
    hosting, not a failure. Other signals (a compose process ending: SIGCHLD) keep waiting."""
    try:
        while True:
            signal.pause()
    except (KeyboardInterrupt, SystemExit):
        common.log("stopping")


def transform(local: Any, requests: Sequence[Request], janitor: common.DockerJanitor) -> None:
    """Run a batch transform (CreateModel, CreateTransformJob): synchronous in local mode."""
    with janitor.project("transform"):
        send(local, requests)
