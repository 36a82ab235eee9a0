"""Script mode with SageMaker Python SDK v3 local mode, fully offline: the user's own train.py and inference.py.

Training is ``ModelTrainer(training_image=IMAGE, source_code=SourceCode(source_dir, entry_script="train.py",
requirements="requirements.txt"), compute=Compute(instance_type="local_cpu"), training_mode=LOCAL_CONTAINER)``
exactly as users write it: the job overrides the image's entrypoint with SageMaker's own ``sm_train.sh``
(from its ``sm_drivers`` channel), which installs the requirements and runs ``python train.py --key value``;
no optml code runs, so this proves the image has what that driver needs (bash, python, pip, tar). v3 writes
the model to ``<job dir>/compressed_artifacts/model.tar.gz``.

Serving goes where `optml deploy --local` goes (``optml.cli.local_v3``: v3's ``sagemaker.core.local``, since
v3's ModelBuilder cannot host a locally built image) with what ModelBuilder would send for the user's code: the
model.tar.gz repacked with the source directory as ``code/`` (a copy; the trained one is left as it is), and
``SAGEMAKER_PROGRAM=inference.py``, ``SAGEMAKER_SUBMIT_DIRECTORY=/opt/ml/model/code``. The test images are
sent as .npy and as JSON, the answers read as JSON.

Run it with the dev environment's Python (SDK v3), from the repository root::

    .venv/bin/python tools/sagemaker_script_v3.py --image optml:latest \\
        [--source-dir examples/digits --train examples/digits/data/train --test examples/digits/data/test] \\
        [--output script-v3-output] [--hyperparameters epochs=3 use-cuda=false] [--train-only]

Progress goes to stderr. The run ends with a short summary on stdout (model.tar.gz, the final epoch's metrics,
each test image's label and the endpoint's predictions) and writes the machine-readable one to
``<output>/summary.json`` (``--summary``): the same keys as tools/sagemaker_script_v2.py's.
"""

from __future__ import annotations

import io
import json
import sys
import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

if not __package__:  # run as a script (python tools/sagemaker_script_v3.py): only tools/ is on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, which holds optml/

from optml.cli import local_v3  # noqa: E402
from optml.cli import localmode as common  # noqa: E402
from optml.cli.deploy import deletion_requests, endpoint_requests  # noqa: E402
from optml.cli.jobs import model_request  # noqa: E402
from tools.sagemaker_script_v2 import parse_script_args, run_script_mode, script_parser  # noqa: E402

RUN_PREFIX = "optml-v3-script"
CODE_DIR = "/opt/ml/model/code"  # where SDK v3's ModelBuilder points SAGEMAKER_SUBMIT_DIRECTORY


def train(
    image: str,
    source_dir: Path,
    channels: Mapping[str, Path],
    output_dir: Path,
    instance_count: int,
    hyperparameters: Mapping[str, Any],
    run_name: str,
    janitor: common.DockerJanitor,
    entry_script: str = "train.py",
    requirements: str | None = "requirements.txt",
) -> Path:
    """A local ModelTrainer job running ``entry_script`` from ``source_dir``; the model.tar.gz it produced."""
    from sagemaker.core.training.configs import Compute, InputData, SourceCode
    from sagemaker.train.model_trainer import Mode, ModelTrainer

    root = (output_dir / run_name).resolve()
    root.mkdir(parents=True, exist_ok=False)
    source_code = SourceCode(
        source_dir=str(source_dir),
        entry_script=entry_script,
        **({"requirements": requirements} if requirements else {}),
    )
    trainer = ModelTrainer(
        training_mode=Mode.LOCAL_CONTAINER,
        training_image=image,
        source_code=source_code,
        base_job_name=RUN_PREFIX,
        compute=Compute(instance_type="local_cpu", instance_count=instance_count),
        hyperparameters=dict(hyperparameters),
        local_container_root=str(root),
    )
    inputs = [InputData(channel_name=name, data_source=str(path)) for name, path in channels.items()]
    common.log(
        f"training {source_dir.name}/{entry_script} in {image} on {instance_count} local container(s) "
        f"(SDK v3 ModelTrainer with SourceCode); job directory {root}"
    )
    try:
        with janitor.project("train"):
            trainer.train(input_data_config=inputs, wait=True, logs=True)
    except RuntimeError as exc:
        raise common.training_failure(exc, root / "compressed_artifacts" / "output.tar.gz") from exc
    return common.trained_model(local_v3.model_tarball(root))


def with_code(model_data: Path, source_dir: Path, destination: Path) -> Path:
    """A copy of ``model_data`` with ``source_dir`` added as ``code/``, as SDK v3's ModelBuilder packs it."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(model_data) as original, tarfile.open(destination, "w:gz") as packed:
        for member in original.getmembers():
            if member.name.split("/")[0] != "code":
                packed.addfile(member, original.extractfile(member) if member.isfile() else None)
        for path in sorted(source_dir.rglob("*")):
            relative = path.relative_to(source_dir)
            if path.is_file() and "__pycache__" not in relative.parts:
                packed.add(path, arcname=f"code/{relative}", recursive=False)
    return destination


def deploy_and_predict(
    image: str,
    model_data: Path,
    images: Sequence[Sequence[float]],
    serving_port: int,
    run_name: str,
    janitor: common.DockerJanitor,
    program: str = "inference.py",
) -> dict[str, list[Any]]:
    """Host ``model_data`` (its code in ``code/``), predict ``images`` as .npy and as JSON, delete the endpoint."""
    import numpy as np

    environment = {"SAGEMAKER_PROGRAM": program, "SAGEMAKER_SUBMIT_DIRECTORY": CODE_DIR}
    model = model_request(run_name, image, common.file_uri(model_data), None, environment)
    create, delete = endpoint_requests(model, "local", 1, "AllTraffic"), deletion_requests(run_name)
    local = local_v3.session(serving_port)
    batch = np.asarray(images, dtype=np.float32)
    npy = io.BytesIO()
    np.save(npy, batch)
    bodies = {"application/x-npy": npy.getvalue(), "application/json": json.dumps(batch.tolist()).encode()}
    answers: dict[str, list[Any]] = {}
    with local_v3.endpoint(local, create, delete, janitor) as name:
        for content_type, body in bodies.items():
            common.log(f"endpoint is up; predicting {len(batch)} image(s) sent as {content_type}")
            response = local.sagemaker_runtime_client.invoke_endpoint(
                Body=body, EndpointName=name, ContentType=content_type, Accept="application/json"
            )
            status = response["ResponseMetadata"].get("HTTPStatusCode")
            text = response["Body"].read().decode("utf-8")
            if status is not None and status >= 400:
                raise common.LocalModeError(f"/invocations answered HTTP {status}: {text[:500]}")
            answers[content_type] = json.loads(text)
    return answers


def main(argv: Sequence[str] | None = None) -> int:
    description = __doc__.splitlines()[0] if __doc__ else None
    parser = script_parser(description, "--entry-script", instance_count=1, output="script-v3-output")
    parser.add_argument("--requirements", default="requirements.txt", help="in it; '' for none (default: %(default)s)")
    args = parse_script_args(parser, argv)

    def train_step(source_dir: Path, channels: dict[str, Path], output_dir: Path, run_name: str, janitor: Any) -> Path:
        local_v3.require_sdk()
        return train(
            args.image,
            source_dir,
            channels,
            output_dir,
            args.instance_count,
            args.hyperparameters,
            run_name,
            janitor,
            args.entry_script,
            args.requirements or None,
        )

    def serve(
        source_dir: Path, model_data: Path, images: list[list[float]], run: common.LocalRun, janitor: Any
    ) -> dict[str, list[Any]]:
        serving_model = with_code(model_data, source_dir, model_data.parent.parent / "serving" / "model.tar.gz")
        run.result["serving_model_data"] = str(serving_model)
        return deploy_and_predict(
            args.image, serving_model, images, args.serving_port, run.name, janitor, args.inference
        )

    return run_script_mode(parser, args, RUN_PREFIX, train_step, serve)


if __name__ == "__main__":
    sys.exit(main())
