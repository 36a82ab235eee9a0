"""Run a batch transform job with SageMaker Python SDK v2 local mode, fully offline.

``Model(...).transformer(instance_type="local", strategy="MultiRecord", assemble_with="Line")`` and
``transform(..., split_type="Line")`` on a ``file://`` input directory: the SDK starts the image with
``serve`` and ``SAGEMAKER_BATCH=true``, reads GET /execution-parameters, posts mini-batches of lines and
writes ``<input file>.out`` files under the output directory. ``transform()`` already runs the job
synchronously in local mode; ``Transformer.wait()`` would need AWS credentials, so it is not called.

Run it with the SDK v2 environment's Python, from the repository root::

    .venv-sdk2/bin/python tools/sagemaker_transform_v2.py --image optml:latest \\
        --model-data model.tar.gz --input batch-in/ --output batch-out/ --content-type text/csv

Progress goes to stderr. The run ends with a short summary on stdout (each output file and its line
count, the summary file's path; on failure the reason on one line, exit 1) and writes the
machine-readable summary to ``<output>/summary.json`` (or ``--summary``): ``run``, ``output_dir``,
``outputs`` (output file, relative to ``output_dir`` → its number of lines), ``timings``; ``error`` on
failure.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if not __package__:  # run as a script (python tools/sagemaker_transform_v2.py): only tools/ is on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, which holds optml/

from optml.cli import localmode as common  # noqa: E402
from optml.cli.localmode import transform_summary_text as summary_text  # noqa: E402
from tools import sagemaker_local_v2 as local_v2  # noqa: E402

RUN_PREFIX = "optml-v2-transform"


def transform(
    image: str,
    model_data: Path,
    input_dir: Path,
    output_dir: Path,
    content_type: str,
    accept: str,
    serving_port: int,
    janitor: common.DockerJanitor,
    run_name: str,
    environment: dict[str, str] | None = None,
) -> dict[str, int]:
    """Run the transform; each output file (relative to ``output_dir``) and its number of lines."""
    model = local_v2.local_model(image, model_data, serving_port, run_name, environment)
    transformer = model.transformer(
        instance_count=1,
        instance_type="local",
        strategy="MultiRecord",
        assemble_with="Line",
        output_path=common.file_uri(output_dir),
        accept=accept,
    )
    common.log(f"batch transform of {input_dir} with {image} (SDK v2 Transformer, SplitType=Line)")
    with janitor.project("transform"):
        # Synchronous in local mode; no wait(): that would call AWS.
        transformer.transform(
            common.file_uri(input_dir),
            content_type=content_type,
            split_type="Line",
            job_name=run_name,
            wait=False,
            logs=False,
        )
    return {
        str(path.relative_to(output_dir)): len(path.read_text(encoding="utf-8").splitlines())
        for path in sorted(output_dir.rglob("*.out"))
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0] if __doc__ else None,
        epilog="Progress goes to stderr. The run ends with a short summary on stdout: the output files with "
        "their line counts and the path of the summary file, which holds run, output_dir, outputs (file -> "
        "number of lines) and timings; on failure error, and the exit code is 1.",
    )
    parser.add_argument("--image", required=True)
    parser.add_argument("--model-data", required=True, help="model.tar.gz (path or file:// URI)")
    parser.add_argument("--input", required=True, help="directory of input files, one record per line")
    parser.add_argument("--output", required=True, help="directory for the .out files (created)")
    parser.add_argument("--summary", help=common.SUMMARY_HELP)
    parser.add_argument("--content-type", default="text/csv")
    parser.add_argument("--accept", default="text/csv")
    parser.add_argument("--serving-port", type=int, default=common.DEFAULT_SERVING_PORT)
    parser.add_argument("--timeout", type=int, default=900)
    parser.add_argument(
        "--env", nargs="+", action="extend", default=[], metavar="KEY=VALUE", help="container environment"
    )
    args = parser.parse_args(argv)
    summary_path = common.summary_path_of(parser, args)

    scratch = common.scratch_dir(f"{RUN_PREFIX}-")
    common.prepare_sdk_environment(scratch, allow_telemetry=False)
    common.configure_logging(verbose=False)
    run_name = common.new_run_name(RUN_PREFIX)
    result: dict[str, Any] = {"run": run_name}
    janitor: common.DockerJanitor | None = None
    exit_code = 1
    started = time.monotonic()
    try:
        with common.time_limit(args.timeout), common.capture_stdout():
            common.preflight(args.image)
            common.require_free_port(args.serving_port)
            janitor = common.DockerJanitor(run_name)
            output_dir = common.local_path(args.output)
            output_dir.mkdir(parents=True, exist_ok=True)
            result["output_dir"] = str(output_dir)
            result["outputs"] = transform(
                args.image,
                common.local_path(args.model_data),
                common.existing_dir(args.input, "input"),
                output_dir,
                args.content_type,
                args.accept,
                args.serving_port,
                janitor,
                run_name,
                common.parse_hyperparameters(args.env),  # the same KEY=VALUE parsing
            )
        exit_code = 0
    except (common.LocalModeError, common.Deadline) as exc:
        result["error"] = str(exc)
    except Exception as exc:  # the SDK and Docker raise all sorts: report them, don't hide them
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        if janitor is not None:
            janitor.cleanup()
        shutil.rmtree(scratch, ignore_errors=True)
    result["timings"] = {"transform_s": round(time.monotonic() - started, 1)}
    return common.finish(result, summary_path, exit_code, lambda summary_file: summary_text(result, summary_file))


if __name__ == "__main__":
    sys.exit(main())
