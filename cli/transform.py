"""`optml transform`: a batch transform job — every record of the input files through the model, one output
line per input line, in `<input file>.out` files — in AWS (CreateModel, CreateTransformJob) or in local mode.

Line-per-record types (CSV, JSON Lines, JSON one record per line) are split by line and sent many lines per
request (SplitType Line, BatchStrategy MultiRecord, AssembleWith Line); other types one file per request.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Any, TextIO

from optml.cli import follow, jobs
from optml.cli.aws import Aws
from optml.cli.errors import CliError
from optml.cli.jobs import Request

DEFAULT_INSTANCE_TYPE = "ml.m5.large"
DEFAULT_CONTENT_TYPE = "text/csv"
LINE_TYPES = ("text/csv", "application/jsonlines", "application/json")
# The types the image's server answers in (serve/negotiation.py's RESPONSE_TYPES; the CLI does not import serve/).
RESPONSE_TYPES = ("text/csv", "application/json", "application/jsonlines", "application/x-npy")

EXAMPLES = """\
examples:
  # in AWS, with a model of its own made from a training job's model.tar.gz
  optml transform --image-uri 123456789012.dkr.ecr.eu-west-1.amazonaws.com/optml:latest \\
      --role arn:aws:iam::123456789012:role/SageMakerExecution \\
      --model-data s3://my-bucket/churn/models/optml-20261201-152143-0e51/output/model.tar.gz \\
      --input s3://my-bucket/churn/to-score/ --output-path s3://my-bucket/churn/scores/ --wait

  # in AWS, with the model of an endpoint `optml deploy --name churn` made
  optml transform --model-name churn --input s3://my-bucket/churn/to-score/ --output-path s3://my-bucket/scores/

  # local mode: a folder of CSV files through a local model.tar.gz
  optml transform --local --model-data model.tar.gz --input to-score/ --output-path scores/
"""


@dataclass(frozen=True)
class TransformJob:
    name: str
    model_name: str
    input_uri: str
    output_path: str
    content_type: str
    accept: str
    instance_type: str
    instance_count: int
    environment: dict[str, str]
    max_payload_mb: int | None = None
    split: str | None = None  # "line" or "none"; None: by the content type

    def request(self) -> Request:
        by_line = self.split == "line" if self.split else self.content_type.split(";")[0].strip() in LINE_TYPES
        params: dict[str, Any] = {
            "TransformJobName": self.name,
            "ModelName": self.model_name,
            "BatchStrategy": "MultiRecord" if by_line else "SingleRecord",
            "TransformInput": {
                "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": self.input_uri}},
                "ContentType": self.content_type,
                "SplitType": "Line" if by_line else "None",
            },
            "TransformOutput": {
                "S3OutputPath": self.output_path,
                "Accept": self.accept,
                "AssembleWith": "Line" if by_line else "None",
            },
            "TransformResources": {"InstanceType": self.instance_type, "InstanceCount": self.instance_count},
        }
        if self.environment:
            params["Environment"] = dict(self.environment)
        if self.max_payload_mb:
            params["MaxPayloadInMB"] = self.max_payload_mb
        return Request("sagemaker", "CreateTransformJob", params)


def output_type(content_type: str) -> str:
    """The records' answer type when --accept is not given: the input's own type where the server can answer
    in it, JSON otherwise (an npz or Parquet input has no per-record answer of its own type)."""
    return content_type if content_type in RESPONSE_TYPES else "application/json"


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "transform",
        help="run a batch transform in AWS or in local mode",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    model = parser.add_argument_group("the model: --model-data and --image-uri (and --role in AWS), or --model-name")
    model.add_argument("--model-data", metavar="URI", help="a model.tar.gz: s3://...; with --local a local file")
    jobs.add_image_and_role(model, "the IAM role SageMaker assumes for the model")
    model.add_argument("--model-name", help="an existing SageMaker model instead, e.g. an `optml deploy` endpoint's")
    data = parser.add_argument_group("data")
    data.add_argument("--input", required=True, metavar="URI", help="s3://bucket/prefix of files; --local: a folder")
    data.add_argument("--output-path", required=True, metavar="URI", help="where the .out files go")
    data.add_argument(
        "--content-type", default=DEFAULT_CONTENT_TYPE, help=f"the input's type (default {DEFAULT_CONTENT_TYPE})"
    )
    data.add_argument(
        "--split",
        choices=("line", "none"),
        help="line: records one per line, many lines per request (default for CSV, JSON Lines and JSON); none:"
        ' each file whole in one request (a JSON file holding one document, e.g. {"instances": [...]})',
    )
    data.add_argument(
        "--accept", help="the output's type (default: the input's when the server answers in it, else JSON)"
    )
    job = parser.add_argument_group("the job")
    job.add_argument("--name", help="the job's name, and its model's (default: optml-<date>-<time>-<random>)")
    job.add_argument("--instance-type", help=f"default {DEFAULT_INSTANCE_TYPE}")
    job.add_argument("--instance-count", type=jobs.positive, help="default 1")
    job.add_argument(
        "--max-payload",
        type=jobs.at_most(100, "SageMaker's largest batch request (100 MB)"),
        metavar="MB",
        help="request size (default: the image's)",
    )
    job.add_argument("--env", action="append", metavar="KEY=VALUE", help="the containers' environment")
    job.add_argument("--wait", action="store_true", help="wait until the job ends")
    jobs.add_aws_options(parser)
    local = jobs.add_local_options(
        parser,
        local_help="run the transform in SageMaker local mode, in Docker on this machine (no AWS account needed)",
        summary_help="--local: where to write the run's summary, a JSON file (default OUTPUT-PATH/summary.json)",
    )
    local.add_argument("--serving-port", type=jobs.positive, default=jobs.DEFAULT_SERVING_PORT, help="must be free")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    environment = jobs.environment(args.env)
    if args.local:
        return transform_locally(args, environment)
    name = jobs.resource_name(args.name)
    model = model_of(args, name)
    job = TransformJob(
        name=name,
        model_name=jobs.resource_name(args.model_name, option="--model-name") if args.model_name else name,
        input_uri=jobs.s3_uri(args.input, "--input"),
        output_path=jobs.s3_uri(args.output_path, "--output-path"),
        content_type=args.content_type,
        accept=args.accept or output_type(args.content_type),
        instance_type=jobs.instance_type(args.instance_type or DEFAULT_INSTANCE_TYPE),
        instance_count=args.instance_count or 1,
        environment=environment,
        max_payload_mb=args.max_payload,
        split=args.split,
    )
    requests = [model, job.request()] if model else [job.request()]
    return transform_in_aws(requests, jobs.aws_from(args), args.wait, sys.stdout)


def transform_in_aws(requests: list[Request], aws: Aws, wait: bool, out: TextIO, **follow_options: Any) -> int:
    jobs.send(aws, requests)
    if aws.dry_run:
        return 0
    job = requests[-1].params
    name = job["TransformJobName"]
    print(f"transform job {name}: its output goes to {job['TransformOutput']['S3OutputPath']}", file=out, flush=True)
    if not wait:
        return 0
    ended = follow.succeeded(
        aws, "transform job", "DescribeTransformJob", {"TransformJobName": name}, "TransformJobStatus",
        follow.JOB_DONE, out, **follow_options,
    )  # fmt: skip
    return 0 if ended else 1


def model_of(args: argparse.Namespace, name: str) -> Request | None:
    """CreateModel for the job, named like it, from --model-data, --image-uri and --role; None with
    --model-name."""
    if args.model_name is not None:
        if args.model_data or args.image_uri or args.role:
            raise CliError(
                "--model-name uses a model SageMaker has: drop --model-data, --image-uri and --role, or drop"
                " --model-name to make a model from them"
            )
        return None
    if not args.model_data or not args.image_uri:
        raise CliError(
            "the model: pass --model-data s3://.../model.tar.gz and --image-uri (and --role), or --model-name of a"
            " model SageMaker has"
        )
    image, role = jobs.ecr_image(args.image_uri), jobs.role_arn(args.role)
    return jobs.model_request(name, image, jobs.s3_uri(args.model_data, "--model-data"), role)


def transform_locally(args: argparse.Namespace, environment: dict[str, str]) -> int:
    from optml.cli import local_v3, localmode

    model_data = jobs.local_model(
        args, {"--model-name": args.model_name}, "a model.tar.gz, e.g. the one `optml train --local` wrote"
    )
    with jobs.local_checks():
        input_dir = localmode.local_path(args.input)
        output_dir = localmode.local_path(args.output_path)
        summary = localmode.local_path(args.summary) if args.summary else localmode.default_summary_path(output_dir)
    if not input_dir.is_dir():
        raise CliError(f"--input {args.input} is not a folder: local mode transforms the files in a folder")
    image = args.image_uri or jobs.LOCAL_IMAGE

    def steps(run: localmode.LocalRun) -> None:
        janitor = run.start_docker(image, args.serving_port)
        output_dir.mkdir(parents=True, exist_ok=True)
        run.result["output_dir"] = str(output_dir)
        job = TransformJob(
            name=run.name,
            model_name=run.name,
            input_uri=localmode.file_uri(input_dir),
            output_path=localmode.file_uri(output_dir),
            content_type=args.content_type,
            accept=args.accept or output_type(args.content_type),
            instance_type="local",
            instance_count=1,
            environment=environment,
            max_payload_mb=args.max_payload,
            split=args.split,
        )
        model = jobs.model_request(run.name, image, localmode.file_uri(model_data), None)
        local_v3.transform(local_v3.session(args.serving_port), [model, job.request()], janitor)
        run.result["outputs"] = localmode.output_line_counts(output_dir)

    timeout = jobs.DEFAULT_LOCAL_TIMEOUT if args.timeout is None else args.timeout
    run = localmode.run_locally(local_v3.RUN_PREFIX, steps, timeout, args.allow_telemetry, args.verbose)
    return localmode.finish(
        run.result, summary, run.exit_code, lambda file: localmode.transform_summary_text(run.result, file)
    )
