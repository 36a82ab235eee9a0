"""Run the image's ``evaluate`` as a Processing job with SageMaker Python SDK v2 local mode, fully offline.

``Processor(image_uri=..., instance_type="local")`` with a ``LocalSession``, and ``run()`` with two
ProcessingInputs (the model at /opt/ml/processing/input/model, the test set at /opt/ml/processing/input/test,
or the destinations ``--model-destination`` / ``--test-destination`` name) and one ProcessingOutput
(/opt/ml/processing/evaluation) copied to ``<output>/evaluation``. Local mode writes
/opt/ml/config/processingjobconfig.json as SageMaker does, so a job started without container arguments
tests the image's Processing-job detection; arguments after ``--`` are the job's ContainerArguments.

Two things SDK v2 does not do offline, and what this driver does instead:

- ``Processor.run`` uploads each input whose source is not ``s3://`` to the session's default bucket, and
  points each output without an ``s3://`` destination there (STS and S3 calls, local mode or not), while
  local mode itself reads and writes ``file://`` URIs: :func:`offline_processor` keeps them as they are.
- Local mode appends ContainerArguments to the ContainerEntrypoint and fails (KeyError 'entrypoint') when
  only arguments are given, which SageMaker accepts (they follow the image's ENTRYPOINT): with arguments,
  the driver passes the image's own ENTRYPOINT, read with ``docker image inspect``.

Run it with the SDK v2 environment's Python, from the repository root::

    .venv-sdk2/bin/python tools/sagemaker_processing_v2.py --image optml:latest \\
        --model model-dir/ --test data/breast_cancer/validation --output evaluation-out/ \\
        [-- evaluate --model /opt/ml/processing/input/model ...]

Progress goes to stderr. The run ends with a short summary on stdout (the files the job wrote, the summary
file's path; on failure the reason on one line, exit 1) and writes the machine-readable summary to
``<output>/summary.json`` (or ``--summary``): ``run``, ``arguments``, ``output_dir``, ``files`` (relative to
``output_dir``), ``timings``; on failure ``error`` and ``log_tail``, the container's last lines (local mode
deletes /opt/ml/output, which holds the job's ExitMessage, when the job ends).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if not __package__:  # run as a script (python tools/sagemaker_processing_v2.py): only tools/ is on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, which holds optml/

from optml.cli import localmode as common  # noqa: E402
from tools import sagemaker_local_v2 as local_v2  # noqa: E402

RUN_PREFIX = "optml-v2-processing"
MODEL_DESTINATION = "/opt/ml/processing/input/model"
TEST_DESTINATION = "/opt/ml/processing/input/test"
EVALUATION_SOURCE = "/opt/ml/processing/evaluation"


def offline_processor(**kwargs: Any) -> Any:
    """A v2 ``Processor`` whose ``file://`` inputs and outputs stay local (see the module docstring)."""
    from sagemaker.processing import Processor

    class OfflineProcessor(Processor):
        def _normalize_inputs(self, inputs: Any = None, kms_key: Any = None) -> list[Any]:
            return _local_only(inputs, lambda item: item.source)

        def _normalize_outputs(self, outputs: Any = None) -> list[Any]:
            return _local_only(outputs, lambda item: item.destination)

    return OfflineProcessor(**kwargs)


def _local_only(items: Any, uri_of: Any) -> list[Any]:
    for item in items or []:
        if not str(uri_of(item)).startswith("file://"):
            raise common.LocalModeError(f"{uri_of(item)}: only file:// URIs work offline")
    return list(items or [])


def image_entrypoint(image: str) -> list[str]:
    """The image's ENTRYPOINT, which SageMaker puts before ContainerArguments."""
    inspected = common._docker("image", "inspect", "--format", "{{json .Config.Entrypoint}}", image)
    entrypoint = json.loads(inspected.stdout or "null") if inspected.returncode == 0 else None
    if not entrypoint:
        raise common.LocalModeError(f"image {image} has no ENTRYPOINT for the container arguments to follow")
    return [str(part) for part in entrypoint]


def process(
    image: str,
    inputs: dict[str, tuple[Path, str]],
    output_dir: Path,
    arguments: Sequence[str],
    janitor: common.DockerJanitor,
    run_name: str,
) -> list[str]:
    """Run the Processing job; the files it wrote to /opt/ml/processing/evaluation, relative to ``output_dir``."""
    from sagemaker.processing import ProcessingInput, ProcessingOutput

    work_dir = output_dir / ".sagemaker-local"  # local mode's container root, else a mkdtemp left in /tmp
    work_dir.mkdir(parents=True, exist_ok=True)
    processor = offline_processor(
        image_uri=image,
        role=common.DUMMY_ROLE,
        instance_count=1,
        instance_type="local",
        entrypoint=image_entrypoint(image) if arguments else None,
        sagemaker_session=local_v2._local_session(container_root=work_dir),
        base_job_name=RUN_PREFIX,
    )
    processing_inputs = [
        ProcessingInput(source=common.file_uri(source), destination=destination, input_name=name)
        for name, (source, destination) in inputs.items()
    ]
    evaluation = output_dir / "evaluation"
    outputs = [
        ProcessingOutput(source=EVALUATION_SOURCE, destination=common.file_uri(evaluation), output_name="evaluation")
    ]
    common.log(f"processing job {run_name} with {image} (SDK v2 Processor), arguments {list(arguments) or 'none'}")
    try:
        with janitor.project("process"):  # synchronous in local mode; wait() would call AWS
            processor.run(
                inputs=processing_inputs,
                outputs=outputs,
                arguments=list(arguments) or None,
                wait=False,
                logs=False,
                job_name=run_name,
            )
    except RuntimeError as exc:
        code = re.search(r"exited with code:? (\d+)", str(exc))
        reason = f"processing failed (container exit code {code.group(1)})" if code else str(exc)
        raise common.LocalModeError(reason) from exc
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    return sorted(str(path.relative_to(output_dir)) for path in evaluation.rglob("*") if path.is_file())


def summary_text(summary: dict[str, Any], summary_file: str | None) -> list[str]:
    """What a successful job prints last: where its files are, which they are, the summary file."""
    places = [("output", common.shown_path(Path(summary["output_dir"])))]
    places += [("summary", summary_file)] if summary_file else []
    return ["", "done", *common.aligned(places), "", "files", *common.aligned([(name,) for name in summary["files"]])]


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0] if __doc__ else None,
        epilog="Progress goes to stderr. The run ends with a short summary on stdout: the files the job wrote "
        "and the path of the summary file, which holds run, arguments, output_dir, files and timings; on "
        "failure error and log_tail, and the exit code is 1.",
    )
    parser.add_argument("--image", required=True)
    parser.add_argument("--model", required=True, help="directory holding model.tar.gz or the model's files")
    parser.add_argument("--test", required=True, help="directory of test data, in any format training takes")
    parser.add_argument("--output", required=True, help="directory for the job's files (under evaluation/)")
    parser.add_argument("--model-destination", default=MODEL_DESTINATION, help="default: %(default)s")
    parser.add_argument("--test-destination", default=TEST_DESTINATION, help="default: %(default)s")
    parser.add_argument("--summary", help=common.SUMMARY_HELP)
    parser.add_argument("--timeout", type=int, default=900)
    parser.add_argument("arguments", nargs="*", metavar="-- ARGUMENT", help="ContainerArguments (default: none at all)")
    return parser, parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    parser, args = parse_args(argv)
    summary_path = common.summary_path_of(parser, args)

    def steps(run: common.LocalRun) -> None:
        janitor = run.start_docker(args.image)
        output_dir = common.local_path(args.output)
        run.result["output_dir"] = str(output_dir)
        inputs = {
            "model": (common.local_path(args.model), args.model_destination),
            "test": (common.existing_dir(args.test, "test"), args.test_destination),
        }
        started = time.monotonic()
        run.result["files"] = process(args.image, inputs, output_dir, args.arguments, janitor, run.name)
        run.timings["processing_s"] = round(time.monotonic() - started, 1)

    run = common.run_locally(RUN_PREFIX, steps, args.timeout, extends={"arguments": list(args.arguments)})
    return common.finish(run.result, summary_path, run.exit_code, lambda shown: summary_text(run.result, shown))


if __name__ == "__main__":
    sys.exit(main())
