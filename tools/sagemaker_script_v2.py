"""Script mode with SageMaker Python SDK v2 local mode, fully offline: the user's own train.py and inference.py.

``sagemaker.pytorch.PyTorch(entry_point="train.py", source_dir=..., image_uri=IMAGE, instance_type="local")``
trains on ``instance_count`` local containers (2 by default: DDP over gloo through torchrun, asked for with
``distribution={"torch_distributed": {"enabled": True}}``, which SDK v2.257 accepts for ``local`` once an
``image_uri`` is given — it sends the ``sagemaker_torch_distributed_enabled`` hyperparameter). Hyperparameters
keep their JSON types (``use-cuda=false`` is a boolean), as a user's dict would. Then
``PyTorchModel(entry_point="inference.py", source_dir=..., image_uri=IMAGE).deploy(1, "local")`` and
``predict()`` of test images with the SDK's NumpySerializer and JSONSerializer, both answered through its
JSONDeserializer. The endpoint is always deleted and the containers removed, even when something fails.

Two things SDK v2 does offline that are worth knowing:

- ``PyTorchModel`` needs a ``framework_version`` even with an ``image_uri`` (it decides whether to repack),
  and looks up the default S3 bucket (an STS call) unless ``code_location`` names one; neither is used in
  local mode with ``local_code``.
- It repacks the local model.tar.gz *in place*, adding the source directory as ``code/``, as it does for
  AWS's PyTorch images; the container then finds inference.py both there and at ``/opt/ml/code``.

Run it with the SDK v2 environment's Python, from the repository root::

    .venv-sdk2/bin/python tools/sagemaker_script_v2.py --image optml:latest \\
        [--source-dir examples/digits --train examples/digits/data/train --test examples/digits/data/test] \\
        [--output script-v2-output] [--instance-count 2] [--hyperparameters epochs=3 use-cuda=false]

Progress goes to stderr. The run ends with a short summary on stdout (model.tar.gz, the final epoch's metrics,
each test image's label and the endpoint's predictions) and writes the machine-readable one to
``<output>/summary.json`` (``--summary``): sdk, run, model_data, metrics (every key=value of the last
``epoch=`` line), hyperparameters, labels, predictions (per serializer content type), training_log_tail,
timings; on failure error and log_tail, and the exit code is non-zero.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

if not __package__:  # run as a script (python tools/sagemaker_script_v2.py): only tools/ is on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, which holds optml/

from optml.cli import localmode as common  # noqa: E402
from tools import sagemaker_local_v2 as local_v2  # noqa: E402

RUN_PREFIX = "optml-v2-script"
REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "digits"
DEFAULT_HYPERPARAMETERS = {"epochs": 3, "batch-size": 64, "lr": 0.01, "use-cuda": False}
# Only the PyTorch version the SDK compares (>= 1.2: the model server reads code/ inside model.tar.gz).
FRAMEWORK_VERSION = "2.13"
PY_VERSION = "py311"
# A bucket name so that the SDK does not look up its default one (an STS call); local code never goes there.
CODE_LOCATION = "s3://optml-local-mode/code"
DEFAULT_PREDICT_ROWS = 5


def typed(value: str) -> Any:
    """A hyperparameter value as a user's dict holds it: JSON where it parses (3, 0.01, false), else text."""
    try:
        return json.loads(value)
    except ValueError:
        return value


def train(
    image: str,
    source_dir: Path,
    channels: Mapping[str, Path],
    output_dir: Path,
    instance_count: int,
    hyperparameters: Mapping[str, Any],
    run_name: str,
    janitor: common.DockerJanitor,
    entry_point: str = "train.py",
) -> Path:
    """A local PyTorch training job of ``entry_point`` in ``source_dir``; the model.tar.gz it produced."""
    from sagemaker.pytorch import PyTorch

    job_dir = (output_dir / run_name).resolve()
    job_dir.mkdir(parents=True, exist_ok=False)
    work_dir = job_dir / ".sagemaker-local"  # v2 never deletes a job's working tree: keep it here, then delete it
    work_dir.mkdir()
    estimator = PyTorch(
        entry_point=entry_point,
        source_dir=str(source_dir),
        image_uri=image,
        role=common.DUMMY_ROLE,
        instance_count=instance_count,
        instance_type="local",
        output_path=common.file_uri(job_dir),
        hyperparameters=dict(hyperparameters),
        distribution={"torch_distributed": {"enabled": True}} if instance_count > 1 else None,
        sagemaker_session=local_v2._local_session(container_root=work_dir),
        base_job_name=RUN_PREFIX,
    )
    inputs = {name: common.file_uri(path) for name, path in channels.items()}
    common.log(
        f"training {source_dir.name}/{entry_point} in {image} on {instance_count} local container(s) "
        f"(SDK v2 PyTorch estimator); output {job_dir}"
    )
    try:
        with janitor.project("train"):
            estimator.fit(inputs, wait=True, logs=True, job_name=run_name)
    except RuntimeError as exc:
        raise common.training_failure(exc, job_dir / "output.tar.gz") from exc
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)  # files the container wrote may be root's
    return common.trained_model(common.local_path(estimator.model_data))


def _status_checking_json_deserializer() -> Any:
    """The SDK's JSONDeserializer, failing on HTTP errors: v2's local runtime hands back any body, 4xx/5xx
    included (a real endpoint raises ModelError)."""
    from sagemaker.deserializers import JSONDeserializer

    class StatusCheckingJSONDeserializer(JSONDeserializer):
        def deserialize(self, stream: Any, content_type: str) -> Any:
            status = getattr(stream, "status", 200)
            if status >= 400:
                body = stream.read().decode("utf-8", "replace")
                raise common.LocalModeError(f"/invocations answered HTTP {status}: {body[:500]}")
            return super().deserialize(stream, content_type)

    return StatusCheckingJSONDeserializer()


def deploy_and_predict(
    image: str,
    source_dir: Path,
    model_data: Path,
    images: Sequence[Sequence[float]],
    serving_port: int,
    run_name: str,
    janitor: common.DockerJanitor,
    entry_point: str = "inference.py",
) -> dict[str, list[Any]]:
    """Deploy ``model_data`` with ``entry_point``, predict ``images`` once per serializer, delete the endpoint.

    The answers, by the content type they were sent as."""
    import numpy as np
    from sagemaker.pytorch import PyTorchModel
    from sagemaker.serializers import JSONSerializer, NumpySerializer

    model = PyTorchModel(
        model_data=common.file_uri(model_data),
        entry_point=entry_point,
        source_dir=str(source_dir),
        image_uri=image,
        role=common.DUMMY_ROLE,
        framework_version=FRAMEWORK_VERSION,
        py_version=PY_VERSION,
        code_location=CODE_LOCATION,
        name=run_name,
        sagemaker_session=local_v2._local_session(serving_port),
    )
    session = model.sagemaker_session
    predictor = None
    answers: dict[str, list[Any]] = {}
    common.log(f"deploying {source_dir.name}/{entry_point} to local endpoint {run_name} on port {serving_port}")
    try:
        with janitor.project("serve"):
            predictor = model.deploy(
                initial_instance_count=1,
                instance_type="local",
                endpoint_name=run_name,
                wait=False,  # local CreateEndpoint already waits for /ping; wait=True adds a 30 s sleep
                serializer=NumpySerializer(dtype="float32"),
                deserializer=_status_checking_json_deserializer(),
            )
            batch = np.asarray(images, dtype=np.float32)
            for serializer in (NumpySerializer(dtype="float32"), JSONSerializer()):
                predictor.serializer = serializer
                common.log(f"endpoint is up; predicting {len(batch)} image(s) sent as {serializer.CONTENT_TYPE}")
                data = batch if isinstance(serializer, NumpySerializer) else batch.tolist()
                answers[serializer.CONTENT_TYPE] = predictor.predict(data)
        return answers
    finally:
        common.log(f"deleting endpoint {run_name}")
        if predictor is not None:
            predictor.delete_endpoint()
        else:  # deploy() failed half-way (e.g. /ping never healthy): stop what it started
            session.sagemaker_client.delete_endpoint(EndpointName=run_name)
        session.sagemaker_client.delete_model(ModelName=run_name)


def read_test_images(test_dir: Path, count: int) -> tuple[list[list[float]], list[int]]:
    """The first ``count`` label-first CSV rows under ``test_dir``: their pixels and their labels."""
    pixels: list[list[float]] = []
    labels: list[int] = []
    for file in sorted(test_dir.glob("*.csv")):
        for line in file.read_text(encoding="utf-8").splitlines():
            if line.strip() and len(pixels) < count:
                label, *values = line.split(",")
                labels.append(int(float(label)))
                pixels.append([float(v) for v in values])
    if not pixels:
        raise common.LocalModeError(f"no label-first CSV rows under {test_dir}")
    return pixels, labels


def summary_text(summary: Mapping[str, Any], summary_file: str | None) -> list[str]:
    """What a successful run prints last: the model, the final epoch's metrics, labels against predictions."""
    places = [("model", common.shown_path(Path(summary["model_data"])))]
    places += [("summary", summary_file)] if summary_file else []
    lines = ["", "done", *common.aligned(places)]
    metrics = summary.get("metrics", {})
    if metrics:
        lines += [
            "",
            "metrics of the final epoch",
            *common.aligned([(k, f"{v:g}") for k, v in sorted(metrics.items())]),
        ]
    predictions = summary.get("predictions", {})
    if predictions:
        kinds = sorted(predictions)
        rows = [("image", "label", *(f"sent as {kind}" for kind in kinds))]
        for number, label in enumerate(summary["labels"]):
            rows.append((str(number + 1), str(label), *(str(predictions[kind][number]) for kind in kinds)))
        lines += ["", "predictions", *common.aligned(rows)]
    return lines


# The command line and the run, shared with tools/sagemaker_script_v3.py


def script_parser(
    description: str | None, entry_option: str, instance_count: int, output: str
) -> argparse.ArgumentParser:
    """The options of both script-mode drivers; ``entry_option`` names the training script as the SDK does."""
    parser = argparse.ArgumentParser(
        description=description,
        epilog="Progress goes to stderr; the summary file holds sdk, run, model_data, metrics, hyperparameters, "
        "labels, predictions, training_log_tail and timings (on failure error and log_tail, exit code 1).",
    )
    parser.add_argument("--image", required=True, help="local Docker image, e.g. optml:latest")
    parser.add_argument("--source-dir", default=str(EXAMPLE), help="the user's code (default: %(default)s)")
    parser.add_argument(entry_option, default="train.py", help="training script in it (default: %(default)s)")
    parser.add_argument("--inference", default="inference.py", help="serving script in it (default: %(default)s)")
    parser.add_argument("--train", default=str(EXAMPLE / "data" / "train"), help="`training` channel directory")
    parser.add_argument("--test", default=str(EXAMPLE / "data" / "test"), help="`testing` channel directory")
    parser.add_argument("--output", default=output, help="directory for the run's artifacts (default: %(default)s)")
    parser.add_argument("--summary", help=common.SUMMARY_HELP)
    parser.add_argument(
        "--instance-count", type=int, default=instance_count, help="training hosts (default: %(default)s)"
    )
    parser.add_argument(
        "--hyperparameters",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help=f"added to {json.dumps(DEFAULT_HYPERPARAMETERS)}; values are JSON where they parse",
    )
    parser.add_argument("--predict-rows", type=int, default=DEFAULT_PREDICT_ROWS, help="test images to predict")
    parser.add_argument("--train-only", action="store_true", help="train, do not deploy")
    parser.add_argument("--serving-port", type=int, default=common.DEFAULT_SERVING_PORT, help="must be free")
    parser.add_argument("--timeout", type=int, default=1800, help="give up (and clean up) after this many seconds")
    return parser


def parse_script_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parsed and checked; ``hyperparameters`` the defaults updated with the typed KEY=VALUE pairs."""
    args = parser.parse_args(argv)
    if args.instance_count < 1:
        parser.error("--instance-count must be at least 1")
    try:
        pairs = common.parse_hyperparameters(args.hyperparameters)
    except ValueError as exc:
        parser.error(str(exc))
    args.hyperparameters = {**DEFAULT_HYPERPARAMETERS, **{key: typed(value) for key, value in pairs.items()}}
    return args


class TrainStep(Protocol):
    def __call__(
        self, source_dir: Path, channels: dict[str, Path], output_dir: Path, run_name: str, janitor: Any
    ) -> Path: ...


class ServeStep(Protocol):
    def __call__(
        self, source_dir: Path, model_data: Path, images: list[list[float]], run: common.LocalRun, janitor: Any
    ) -> dict[str, list[Any]]: ...


def run_script_mode(
    parser: argparse.ArgumentParser, args: argparse.Namespace, run_prefix: str, train_step: TrainStep, serve: ServeStep
) -> int:
    """Train (``train_step``), then unless --train-only deploy and predict test images (``serve``), clean up;
    write the summary file and print the summary."""
    summary_path = common.summary_path_of(parser, args)

    def steps(run: common.LocalRun) -> None:
        janitor = run.start_docker(args.image, None if args.train_only else args.serving_port)
        source_dir = common.existing_dir(args.source_dir, "source")
        channels = {"training": common.existing_dir(args.train, "training")}
        if args.test:
            channels["testing"] = common.existing_dir(args.test, "testing")
        output_dir = common.local_path(args.output)
        run.result["hyperparameters"] = args.hyperparameters
        model_data = run.record_training(lambda: train_step(source_dir, channels, output_dir, run.name, janitor))
        if args.train_only:
            return
        test_dir = channels.get("testing", channels["training"])
        images, run.result["labels"] = read_test_images(test_dir, args.predict_rows)
        assert run.tee is not None
        run.tee.lines.clear()  # a failure's log tail is the endpoint's
        started = time.monotonic()
        run.result["predictions"] = serve(source_dir, model_data, images, run, janitor)
        run.timings["serve_s"] = round(time.monotonic() - started, 1)

    run = common.run_locally(run_prefix, steps, args.timeout)
    return common.finish(run.result, summary_path, run.exit_code, lambda shown: summary_text(run.result, shown))


def main(argv: Sequence[str] | None = None) -> int:
    description = __doc__.splitlines()[0] if __doc__ else None
    parser = script_parser(description, "--entry-point", instance_count=2, output="script-v2-output")
    args = parse_script_args(parser, argv)
    return run_script_mode(
        parser,
        args,
        RUN_PREFIX,
        lambda source_dir, channels, output_dir, run_name, janitor: train(
            args.image,
            source_dir,
            channels,
            output_dir,
            args.instance_count,
            args.hyperparameters,
            run_name,
            janitor,
            args.entry_point,
        ),
        lambda source_dir, model_data, images, run, janitor: deploy_and_predict(
            args.image, source_dir, model_data, images, args.serving_port, run.name, janitor, args.inference
        ),
    )


if __name__ == "__main__":
    sys.exit(main())
