"""`optml evaluate`: the image's `evaluate` as a SageMaker Processing job (CreateProcessingJob). A trained model
scores a test set with training's own code; evaluation.json, the plots and model_quality.json go to
--output-path (README "Evaluation (Processing job)").

The job gets the model (a model.tar.gz, or a prefix of its files) at /opt/ml/processing/input/model and the
test set at /opt/ml/processing/input/test; its ContainerArguments name `evaluate` and those paths explicitly.
model_quality.json is what the Model Registry reads (ModelMetrics' ModelQuality statistics): `optml register
--model-metrics` takes it.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Any, TextIO

from optml.cli import follow, jobs
from optml.cli.aws import Aws
from optml.cli.errors import CliError

DEFAULT_INSTANCE_TYPE = "ml.m5.xlarge"
DEFAULT_MAX_RUN = 86400  # seconds: a day, as for training
MAX_RUN_LIMIT = 777600  # ProcessingStoppingCondition's MaxRuntimeInSeconds at most: 9 days
DEFAULT_VOLUME_GB = 30
MODEL_PATH = "/opt/ml/processing/input/model"  # the image's defaults (train/evaluate.py), given explicitly
TEST_PATH = "/opt/ml/processing/input/test"
OUTPUT_PATH = "/opt/ml/processing/evaluation"
OUTPUT_NAME = "evaluation"
EVALUATION_FILE = "evaluation.json"
MODEL_QUALITY_FILE = "model_quality.json"

EXAMPLES = """\
examples:
  # evaluate a training job's model on a test set, following the job until it ends
  optml evaluate --image-uri 123456789012.dkr.ecr.eu-west-1.amazonaws.com/optml:latest \\
      --role arn:aws:iam::123456789012:role/SageMakerExecution \\
      --model-data s3://my-bucket/churn/models/optml-20261201-152143-0e51/output/model.tar.gz \\
      --test s3://my-bucket/churn/test/ --content-type text/csv \\
      --output-path s3://my-bucket/churn/evaluation/ --wait

  # the same request printed as JSON, nothing called (no credentials needed)
  optml evaluate ... --dry-run --region eu-west-1

There is no --local: tools/sagemaker_processing_v2.py runs the same job in SageMaker SDK v2's local mode,
in Docker on this machine (README "Evaluation (Processing job)").
"""


@dataclass(frozen=True)
class EvaluationJob:
    """A Processing job of the image's `evaluate`, checked: what CreateProcessingJob gets."""

    name: str
    image: str
    role: str
    model_data: str
    test: str
    output_path: str
    content_type: str | None
    instance_type: str
    volume_size: int
    max_run: int

    def request(self) -> jobs.Request:
        arguments = ["evaluate", "--model", MODEL_PATH, "--test", TEST_PATH, "--output", OUTPUT_PATH]
        if self.content_type:
            arguments += ["--content-type", self.content_type]
        params: dict[str, Any] = {
            "ProcessingJobName": self.name,
            "RoleArn": self.role,
            "AppSpecification": {"ImageUri": self.image, "ContainerArguments": arguments},
            "ProcessingInputs": [
                processing_input("model", self.model_data, MODEL_PATH),
                processing_input("test", self.test, TEST_PATH),
            ],
            "ProcessingOutputConfig": {
                "Outputs": [
                    {
                        "OutputName": OUTPUT_NAME,
                        "S3Output": {"S3Uri": self.output_path, "LocalPath": OUTPUT_PATH, "S3UploadMode": "EndOfJob"},
                    }
                ]
            },
            "ProcessingResources": {
                "ClusterConfig": {
                    "InstanceCount": 1,
                    "InstanceType": self.instance_type,
                    "VolumeSizeInGB": self.volume_size,
                }
            },
            "StoppingCondition": {"MaxRuntimeInSeconds": self.max_run},
        }
        return jobs.Request("sagemaker", "CreateProcessingJob", params)


def processing_input(name: str, uri: str, local_path: str) -> dict[str, Any]:
    source = {"S3Uri": uri, "LocalPath": local_path, "S3DataType": "S3Prefix", "S3InputMode": "File"}
    return {"InputName": name, "S3Input": source}


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "evaluate",
        help="evaluate a model on a test set as a Processing job in AWS",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    job = parser.add_argument_group("the job")
    jobs.add_image_and_role(job, "the IAM role SageMaker assumes for the job (README 'To AWS')", local=False)
    job.add_argument("--instance-type", help=f"default {DEFAULT_INSTANCE_TYPE}")
    job.add_argument(
        "--volume-size", type=jobs.positive, metavar="GB", help=f"storage for the inputs (default {DEFAULT_VOLUME_GB})"
    )
    job.add_argument(
        "--max-run",
        type=jobs.positive,
        metavar="SECONDS",
        help=f"stop the job after this long (default {DEFAULT_MAX_RUN}, at most {MAX_RUN_LIMIT})",
    )
    job.add_argument("--name", help="the job's name (default: optml-<date>-<time>-<random>)")
    job.add_argument("--wait", action="store_true", help="wait until the job ends, then print where its files are")
    data = parser.add_argument_group("data")
    data.add_argument(
        "--model-data",
        metavar="URI",
        help="the model: s3://.../model.tar.gz as `optml train --wait` prints it, or a prefix of its files",
    )
    data.add_argument("--test", metavar="URI", help="the test set: s3://bucket/prefix, any training data format")
    data.add_argument("--content-type", metavar="TYPE", help="the test set's type, e.g. text/csv (default: detected)")
    data.add_argument(
        "--output-path",
        metavar="URI",
        help=f"s3://bucket/prefix for {EVALUATION_FILE}, {MODEL_QUALITY_FILE} and the plots (overwritten there)",
    )
    jobs.add_aws_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    return evaluate_in_aws(job_from(args), jobs.aws_from(args), args.wait, sys.stdout)


def job_from(args: argparse.Namespace) -> EvaluationJob:
    """Every check, before any call."""
    image = jobs.ecr_image(args.image_uri)
    role = jobs.role_arn(args.role)
    required = {
        "--model-data": "the model.tar.gz in S3 that `optml train --wait` prints",
        "--test": "the s3://bucket/prefix of the test set",
        "--output-path": "the s3://bucket/prefix where the evaluation goes",
    }
    for option, what in required.items():
        if not getattr(args, option.removeprefix("--").replace("-", "_")):
            raise CliError(f"{option} is required: {what}")
    max_run = DEFAULT_MAX_RUN if args.max_run is None else args.max_run
    if max_run > MAX_RUN_LIMIT:
        raise CliError(f"--max-run {max_run}: a Processing job runs at most {MAX_RUN_LIMIT} seconds (9 days)")
    return EvaluationJob(
        name=jobs.resource_name(args.name),
        image=image,
        role=role,
        model_data=jobs.s3_uri(args.model_data, "--model-data"),
        test=jobs.s3_uri(args.test, "--test"),
        output_path=jobs.s3_uri(args.output_path, "--output-path"),
        content_type=args.content_type,
        instance_type=jobs.instance_type(args.instance_type or DEFAULT_INSTANCE_TYPE),
        volume_size=args.volume_size or DEFAULT_VOLUME_GB,
        max_run=max_run,
    )


def evaluate_in_aws(job: EvaluationJob, aws: Aws, wait: bool, out: TextIO, **follow_options: Any) -> int:
    answer = jobs.send(aws, [job.request()])[0]
    if aws.dry_run:
        return 0
    print(f"processing job {job.name}: {answer['ProcessingJobArn']}", file=out, flush=True)
    if not wait:
        print(f"follow it: aws sagemaker describe-processing-job --processing-job-name {job.name}", file=out)
        print(f"its files go to {job.output_path}", file=out)
        return 0
    ended = follow.succeeded(
        aws, "processing job", "DescribeProcessingJob", {"ProcessingJobName": job.name}, "ProcessingJobStatus",
        follow.JOB_DONE, out, reasons=("FailureReason", "ExitMessage"), **follow_options,
    )  # fmt: skip
    if not ended:
        return 1
    base = job.output_path.rstrip("/")
    print(f"evaluation: {base}/{EVALUATION_FILE}", file=out)
    print(f"model quality: {base}/{MODEL_QUALITY_FILE}", file=out)
    print(f"register the model with it: optml register ... --model-metrics {base}/{MODEL_QUALITY_FILE}", file=out)
    return 0
