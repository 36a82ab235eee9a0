"""`optml register`: a model version in the SageMaker Model Registry (CreateModelPackageGroup, then
CreateModelPackage): the image and model.tar.gz, the request and response types the endpoint serves, the
instance types it runs on, and the model-quality statistics `optml evaluate` wrote (ModelMetrics'
ModelQuality), awaiting approval unless --approval says otherwise (README "optml register").

The group is created when it is missing; one that exists already is used as it is, so that each
registration adds a version to it. optml does not ask AWS first what exists, so --dry-run prints both requests.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from optml.cli import jobs, transform
from optml.cli.aws import Aws
from optml.cli.errors import CliError
from optml.cli.evaluate import MODEL_QUALITY_FILE
from optml.cli.jobs import Request

APPROVAL_STATUSES = ("PendingManualApproval", "Approved", "Rejected")
DEFAULT_APPROVAL = "PendingManualApproval"
# CPU types: optml's server predicts on the CPU, and each is in both of the API's lists of instance types.
DEFAULT_INSTANCE_TYPES = ("ml.m5.large", "ml.m5.xlarge", "ml.c5.xlarge")
# The request types optml's endpoint reads (jobs.CONTENT_TYPES by extension), each once, and those it answers in.
REQUEST_TYPES = tuple(dict.fromkeys(jobs.CONTENT_TYPES.values()))
RESPONSE_TYPES = transform.RESPONSE_TYPES
MIME_TYPE = re.compile(r"[\w.+-]+/[\w.+-]+( *;.*)?")
MIME_TYPE_LENGTH = 256  # characters in one of SupportedContentTypes
DESCRIPTION_LENGTH = 1024  # characters in ModelPackageDescription and ModelPackageGroupDescription
METADATA_LIMIT = 50  # CustomerMetadataProperties' entries
METADATA_LENGTHS = (128, 256)  # characters in a key, in a value
METADATA_TEXT = re.compile(r"[\w .:/=+@-]+")  # the API's letters, spaces, digits and _.:/=+-@

EXAMPLES = f"""\
examples:
  # a version of the model in the group churn (created if missing), with the statistics `optml evaluate` wrote
  optml register --group churn \\
      --image-uri 123456789012.dkr.ecr.eu-west-1.amazonaws.com/optml:latest \\
      --model-data s3://my-bucket/churn/models/optml-20261201-152143-0e51/output/model.tar.gz \\
      --model-metrics s3://my-bucket/churn/evaluation/{MODEL_QUALITY_FILE} \\
      --description "20 epochs, test AUC 0.97" --metadata git=0e51c3a

  # approved at once, for a CSV-only endpoint on two instance types
  optml register ... --approval Approved --content-type text/csv --response-type text/csv \\
      --instance-type ml.c5.xlarge --instance-type ml.c5.2xlarge

  # both requests printed as JSON, nothing called (no credentials needed)
  optml register ... --dry-run --region eu-west-1
"""


@dataclass(frozen=True)
class ModelPackage:
    """A model version for the Model Registry, checked: what CreateModelPackageGroup and CreateModelPackage get."""

    group: str
    image: str
    model_data: str
    approval: str = DEFAULT_APPROVAL
    model_metrics: str | None = None
    description: str | None = None
    group_description: str | None = None
    content_types: tuple[str, ...] = REQUEST_TYPES
    response_types: tuple[str, ...] = RESPONSE_TYPES
    instance_types: tuple[str, ...] = DEFAULT_INSTANCE_TYPES
    transform_instance_types: tuple[str, ...] = DEFAULT_INSTANCE_TYPES
    metadata: dict[str, str] = field(default_factory=dict)

    def group_request(self) -> Request:
        params = {"ModelPackageGroupName": self.group}
        if self.group_description:
            params["ModelPackageGroupDescription"] = self.group_description
        return Request("sagemaker", "CreateModelPackageGroup", params)

    def package_request(self) -> Request:
        params: dict[str, Any] = {
            "ModelPackageGroupName": self.group,
            "InferenceSpecification": {
                "Containers": [{"Image": self.image, "ModelDataUrl": self.model_data}],
                "SupportedContentTypes": list(self.content_types),
                "SupportedResponseMIMETypes": list(self.response_types),
                "SupportedRealtimeInferenceInstanceTypes": list(self.instance_types),
                "SupportedTransformInstanceTypes": list(self.transform_instance_types),
            },
            "ModelApprovalStatus": self.approval,
        }
        if self.description:
            params["ModelPackageDescription"] = self.description
        if self.model_metrics:
            statistics = {"ContentType": "application/json", "S3Uri": self.model_metrics}
            params["ModelMetrics"] = {"ModelQuality": {"Statistics": statistics}}
        if self.metadata:
            params["CustomerMetadataProperties"] = dict(self.metadata)
        return Request("sagemaker", "CreateModelPackage", params)


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "register",
        help="register a model version in the SageMaker Model Registry",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    package = parser.add_argument_group("the model version")
    package.add_argument(
        "--model-data", metavar="URI", help="the model: s3://.../model.tar.gz as `optml train --wait` prints it"
    )
    package.add_argument("--image-uri", metavar="URI", help="the image in ECR (`optml push` prints it)")
    package.add_argument("--group", metavar="NAME", help="the model package group (created if missing)")
    package.add_argument(
        "--model-metrics",
        metavar="URI",
        help=f"s3://.../{MODEL_QUALITY_FILE}, as `optml evaluate --wait` prints it: the version's model quality",
    )
    package.add_argument(
        "--approval", choices=APPROVAL_STATUSES, default=DEFAULT_APPROVAL, help=f"default {DEFAULT_APPROVAL}"
    )
    package.add_argument("--description", metavar="TEXT", help="the version's description")
    package.add_argument("--group-description", metavar="TEXT", help="the group's, when it is created")
    package.add_argument(
        "--metadata", action="append", metavar="KEY=VALUE", help="the version's customer metadata (repeatable)"
    )
    add_serving_options(parser.add_argument_group("what the model serves, and on what (each repeatable)"))
    jobs.add_aws_options(parser)
    parser.set_defaults(run=run)


def add_serving_options(group: argparse._ArgumentGroup) -> None:
    defaults = {
        "--content-type": ("TYPE", "a request type", REQUEST_TYPES),
        "--response-type": ("TYPE", "a response type", RESPONSE_TYPES),
        "--instance-type": ("TYPE", "an instance type for endpoints", DEFAULT_INSTANCE_TYPES),
        "--transform-instance-type": ("TYPE", "an instance type for batch transform", DEFAULT_INSTANCE_TYPES),
    }
    for option, (metavar, what, default) in defaults.items():
        group.add_argument(option, action="append", metavar=metavar, help=f"{what} (default {' '.join(default)})")


def run(args: argparse.Namespace) -> int:
    return register_in_aws(package_from(args), jobs.aws_from(args), sys.stdout)


def package_from(args: argparse.Namespace) -> ModelPackage:
    """Every check, before any call."""
    if not args.model_data:
        raise CliError("--model-data is required: the model.tar.gz in S3 that `optml train --wait` prints")
    model_data = jobs.s3_uri(args.model_data, "--model-data")
    if not model_data.endswith(".tar.gz"):
        raise CliError(f"--model-data {model_data!r} is not a model.tar.gz: the Model Registry takes the archive")
    image = jobs.ecr_image(args.image_uri)
    if not args.group:
        raise CliError("--group is required: the model package group's name (created if missing)")
    model_metrics = None
    if args.model_metrics:
        model_metrics = jobs.s3_uri(args.model_metrics, "--model-metrics")
        if not model_metrics.endswith(".json"):
            raise CliError(
                f"--model-metrics {model_metrics!r} is not a JSON file: use the {MODEL_QUALITY_FILE} that"
                " `optml evaluate` writes to its --output-path"
            )
    return ModelPackage(
        group=jobs.resource_name(args.group, option="--group"),
        image=image,
        model_data=model_data,
        approval=args.approval,
        model_metrics=model_metrics,
        description=description(args.description, "--description"),
        group_description=description(args.group_description, "--group-description"),
        content_types=listed(args.content_type, REQUEST_TYPES, "--content-type", mime_type),
        response_types=listed(args.response_type, RESPONSE_TYPES, "--response-type", mime_type),
        instance_types=listed(args.instance_type, DEFAULT_INSTANCE_TYPES, "--instance-type", jobs.instance_type),
        transform_instance_types=listed(
            args.transform_instance_type, DEFAULT_INSTANCE_TYPES, "--transform-instance-type", jobs.instance_type
        ),
        metadata=metadata(args.metadata),
    )


def listed(
    given: Sequence[str] | None, default: tuple[str, ...], option: str, check: Callable[[str, str], str]
) -> tuple[str, ...]:
    """A repeatable option's values, each checked and each once, in order; none given: the default."""
    return tuple(dict.fromkeys(check(value, option) for value in given or default))


def mime_type(value: str, option: str) -> str:
    if len(value) > MIME_TYPE_LENGTH or not MIME_TYPE.fullmatch(value):
        raise CliError(f"{option} {value!r} is not a MIME type: use TYPE/SUBTYPE, e.g. text/csv")
    return value


def description(value: str | None, option: str) -> str | None:
    if value is not None and (len(value) > DESCRIPTION_LENGTH or not value.isprintable()):
        raise CliError(f"{option}: at most {DESCRIPTION_LENGTH} printable characters on one line")
    return value


def metadata(values: Sequence[str] | None) -> dict[str, str]:
    """--metadata KEY=VALUE pairs, checked as CreateModelPackage checks CustomerMetadataProperties."""
    pairs = jobs.parse_pairs(values, "--metadata")
    if len(pairs) > METADATA_LIMIT:
        raise CliError(f"--metadata: {len(pairs)} entries, the Model Registry takes at most {METADATA_LIMIT}")
    for key, value in pairs.items():
        for what, text, limit in zip(("key", "value"), (key, value), METADATA_LENGTHS, strict=True):
            if len(text) > limit or not METADATA_TEXT.fullmatch(text):
                raise CliError(f"--metadata {key}: the {what} must be 1 to {limit} letters, digits, spaces or _.:/=+-@")
    return pairs


def register_in_aws(package: ModelPackage, aws: Aws, out: TextIO) -> int:
    group = package.group_request()
    created = aws.create_if_missing(group.service, group.operation, **group.params)
    answer = jobs.send(aws, [package.package_request()])[0]
    if aws.dry_run:
        return 0
    arn = answer["ModelPackageArn"]
    print(f"model package group {package.group}: {'created' if created else 'exists already'}", file=out)
    print(f"model package {arn}: {package.approval}", file=out)
    if package.approval == "Approved":
        print(
            f"deploy it: optml deploy --image-uri {package.image} --model-data {package.model_data} --role ARN",
            file=out,
        )
    else:
        print(
            f"approve it: aws sagemaker update-model-package --model-package-arn {arn} --model-approval-status"
            " Approved",
            file=out,
        )
    return 0
