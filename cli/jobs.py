"""What `optml train`, `deploy`, `transform`, `evaluate`, `register` and `invoke` share: the AWS options,
NAME=VALUE options, names, the checks of URIs and roles made before any call, and the requests themselves.

Each command builds its requests (`Request`) from what the user gave — never from an answer it would have to
fetch first — so that --dry-run can print them all without a call, and local mode can send the same requests
to SageMaker local mode's stand-in for the service.
"""

from __future__ import annotations

import argparse
import contextlib
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optml.cli.aws import ECR_HOST, Aws
from optml.cli.errors import CliError
from optml.cli.localmode import LocalModeError, new_run_name

DEFAULT_LOCAL_TIMEOUT = 1800  # seconds a local run may take before it gives up and cleans up
LOCAL_IMAGE = "optml:latest"  # --local's image when --image-uri names none: what `optml build` tags
DEFAULT_SERVING_PORT = 8080  # the port SageMaker's local endpoints publish unless told otherwise
# SageMaker's pattern for the names of jobs, models, endpoint configs and endpoints (at most 63 characters).
NAME_PATTERN = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")
ROLE_PATTERN = re.compile(r"arn:aws[a-z\-]*:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+")
# ExperimentConfig's pattern for an experiment's, a trial's and a run's name (at most 120 characters).
EXPERIMENT_NAME_PATTERN = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,119}")
EXPERIMENT_NAME_LIMIT = 120  # the pattern counts letters and digits only
ENVIRONMENT_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
ENVIRONMENT_LIMIT = 100  # variables in a container's Environment
ENVIRONMENT_TEXT_LIMIT = 1024  # characters in a name or a value
S3_PATTERN = re.compile(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?")
# ml.m5.xlarge, ml.g4dn.12xlarge, ml.c7i-flex.large: the form, not a list that grows with every new type.
INSTANCE_TYPE_PATTERN = re.compile(r"ml\.[a-z][a-z0-9-]*\.[a-z0-9]+")
# REGISTRY/REPOSITORY[:TAG|@DIGEST]: a job in AWS pulls from a registry, never a local tag (optml:latest).
IMAGE_URI_PATTERN = re.compile(
    r"[a-z0-9-]+(\.[a-z0-9-]+)+(:\d+)?/[a-z0-9._/-]+(:[A-Za-z0-9_.-]+|@sha256:[0-9a-f]{64})?"
)
IMAGE_URI_LENGTH = 255
# The request types optml's endpoint reads (README "Request types"), by the file extensions that hold them.
CONTENT_TYPES = {
    ".csv": "text/csv",
    ".json": "application/json",
    ".jsonl": "application/jsonlines",
    ".ndjson": "application/jsonlines",
    ".npy": "application/x-npy",
    ".npz": "application/x-npz",
}


@dataclass(frozen=True)
class Request:
    """One API request, as --dry-run prints it and as AWS (or local mode) receives it."""

    service: str
    operation: str
    params: dict[str, Any]


@dataclass(frozen=True)
class Experiment:
    """--experiment NAME [--run NAME]: the SageMaker Experiment a job (or a tuning job's jobs) belongs to."""

    name: str
    run: str | None = None

    def config(self) -> dict[str, str]:
        """CreateTrainingJob's ExperimentConfig."""
        return {"ExperimentName": self.name, **({"RunName": self.run} if self.run else {})}

    def create(self, aws: Aws) -> None:
        """The experiment, unless it exists already (optml never asks first, so --dry-run prints this too)."""
        aws.create_if_missing("sagemaker", "CreateExperiment", ExperimentName=self.name)


def add_experiment_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("experiments")
    group.add_argument("--experiment", metavar="NAME", help="a SageMaker Experiment for the jobs (created if missing)")
    # dest run_name: args.run is the command's function (set_defaults(run=...)).
    group.add_argument("--run", dest="run_name", metavar="NAME", help="the run's name within the experiment")


def experiment_from(args: argparse.Namespace) -> Experiment | None:
    """--experiment and --run, checked as ExperimentConfig checks them."""
    if args.run_name and not args.experiment:
        raise CliError(f"--run {args.run_name} names a run within an experiment: add --experiment NAME")
    for option, value in (("--experiment", args.experiment), ("--run", args.run_name)):
        if value is not None and (len(value) > EXPERIMENT_NAME_LIMIT or not EXPERIMENT_NAME_PATTERN.fullmatch(value)):
            raise CliError(
                f"{option} {value!r} is not a name SageMaker accepts: 1 to 120 letters, digits and hyphens, starting"
                " and ending with a letter or digit"
            )
    return Experiment(args.experiment, args.run_name) if args.experiment else None


def send(aws: Aws, requests: Iterable[Request]) -> list[dict[str, Any]]:
    """Send the requests in order (with --dry-run: print them); the answers."""
    return [aws.call(request.service, request.operation, **request.params) for request in requests]


def model_request(
    name: str, image: str, model_data_url: str, role: str | None, environment: dict[str, str] | None = None
) -> Request:
    """CreateModel: the image and a model.tar.gz, what an endpoint and a transform job run. Local mode needs no
    role, and reads the container's Environment even when there is none."""
    container = {"Image": image, "ModelDataUrl": model_data_url, "Environment": dict(environment or {})}
    params: dict[str, Any] = {"ModelName": name, "PrimaryContainer": container}
    if role:
        params["ExecutionRoleArn"] = role
    return Request("sagemaker", "CreateModel", params)


def add_image_and_role(group: argparse._ActionsContainer, role_help: str, local: bool = True) -> None:
    """--image-uri and --role: what every job, model and endpoint runs, and as whom (`local`: the command has
    --local, where the image is a local tag)."""
    local_help = f"; --local: a local tag, default {LOCAL_IMAGE}" if local else ""
    group.add_argument("--image-uri", metavar="URI", help=f"the image in ECR (`optml push` prints it){local_help}")
    group.add_argument("--role", metavar="ARN", help=role_help)


def add_aws_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("AWS")
    group.add_argument("--region", help="AWS region (default: AWS_REGION, AWS_DEFAULT_REGION, your profile's)")
    group.add_argument("--profile", help="AWS profile in ~/.aws/config (default: AWS_PROFILE, else the default)")
    group.add_argument(
        "--dry-run",
        action="store_true",
        help="print the exact API requests as JSON and call nothing (no credentials needed; a region is)",
    )


def aws_from(args: argparse.Namespace) -> Aws:
    return Aws(region=args.region, profile=args.profile, dry_run=args.dry_run)


def parse_pairs(values: Sequence[str] | None, option: str) -> dict[str, str]:
    """`["train=s3://b/t", "validation=s3://b/v"]` -> `{"train": "s3://b/t", ...}`; each name once."""
    pairs: dict[str, str] = {}
    for value in values or ():
        name, separator, text = value.partition("=")
        name = name.strip()
        if not separator or not name:
            raise CliError(f"{option} {value!r} is not NAME=VALUE")
        if name in pairs:
            raise CliError(f"{option} names {name!r} twice")
        pairs[name] = text
    return pairs


def resource_name(given: str | None, prefix: str = "optml", option: str = "--name") -> str:
    """`given` when SageMaker would accept it as a job, model or endpoint name, else a new name with the
    time in it (optml-20261201-152143-0e51): sortable, and unique without asking AWS what exists."""
    if given is None:
        return new_run_name(prefix)
    if not NAME_PATTERN.fullmatch(given):
        raise CliError(
            f"{option} {given!r} is not a name SageMaker accepts: 1 to 63 letters, digits and hyphens, starting and"
            " ending with a letter or digit"
        )
    return given


def s3_uri(value: str, option: str) -> str:
    if not value.startswith("s3://"):
        raise CliError(f"{option}: {value!r} is not an S3 location: use s3://bucket/prefix")
    if not S3_PATTERN.fullmatch(value):
        bucket = value.removeprefix("s3://").split("/", 1)[0]
        raise CliError(
            f"{option}: {bucket!r} in {value!r} is not an S3 bucket name: 3 to 63 lowercase letters, digits, dots"
            " and hyphens, starting and ending with a letter or digit"
        )
    return value


def ecr_image(value: str | None) -> str:
    """--image-uri for a job or a model in AWS: SageMaker pulls from a private ECR registry only."""
    if not value:
        raise CliError("--image-uri is required: the image's URI in ECR (`optml push` prints it)")
    if not ECR_HOST.fullmatch(value.split("/", 1)[0]) or "/" not in value:
        raise CliError(
            f"--image-uri {value!r} is not in ECR, where SageMaker pulls images from: push it with `optml push`,"
            " which prints ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPOSITORY:TAG (a local tag works with --local)"
        )
    if len(value) > IMAGE_URI_LENGTH or not IMAGE_URI_PATTERN.fullmatch(value):
        raise CliError(
            f"--image-uri {value!r} is not an image in a registry: use REGISTRY/REPOSITORY:TAG (or @sha256:DIGEST),"
            " e.g. 123456789012.dkr.ecr.eu-west-1.amazonaws.com/optml:latest as `optml push` prints it"
        )
    return value


def role_arn(value: str | None) -> str:
    if not value:
        raise CliError(
            "--role is required: the ARN of the IAM role SageMaker assumes to pull the image, read the data and"
            " write the model (arn:aws:iam::123456789012:role/NAME; README 'To AWS' lists what it needs)"
        )
    if not ROLE_PATTERN.fullmatch(value):
        raise CliError(f"--role {value!r} is not an IAM role ARN: use arn:aws:iam::123456789012:role/NAME")
    return value


def instance_type(value: str, option: str = "--instance-type") -> str:
    if not INSTANCE_TYPE_PATTERN.fullmatch(value):
        raise CliError(f"{option} {value!r} is not a SageMaker instance type: use ml.FAMILY.SIZE, e.g. ml.m5.xlarge")
    return value


def content_type_of(path: Path, given: str | None) -> str:
    """`given`, else the request type the file's extension says."""
    if given:
        return given
    content_type = CONTENT_TYPES.get(path.suffix.lower())
    if content_type is None:
        known = ", ".join(f"{extension} ({kind})" for extension, kind in CONTENT_TYPES.items())
        raise CliError(f"cannot tell the content type of {path.name}: pass --content-type (known: {known})")
    return content_type


def positive(text: str) -> int:
    """argparse type: an integer ≥ 1 (counts and seconds)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    return value


def at_most(limit: int, what: str) -> Callable[[str], int]:
    """argparse type: an integer from 1 to `limit`, SageMaker's own maximum (`what` says which)."""

    def parse(text: str) -> int:
        value = positive(text)
        if value > limit:
            raise argparse.ArgumentTypeError(f"{value} is more than {limit}, {what}")
        return value

    return parse


MAX_SECONDS = at_most(28 * 24 * 3600, "SageMaker's limit (28 days)")


def environment(values: Sequence[str] | None) -> dict[str, str]:
    """--env NAME=VALUE pairs, checked as SageMaker checks a container's Environment (before CreateModel, so
    that a refused endpoint leaves no model behind)."""
    pairs = parse_pairs(values, "--env")
    if len(pairs) > ENVIRONMENT_LIMIT:
        raise CliError(f"--env: {len(pairs)} variables, SageMaker takes at most {ENVIRONMENT_LIMIT}")
    for name, value in pairs.items():
        if not ENVIRONMENT_NAME.fullmatch(name) or len(name) > ENVIRONMENT_TEXT_LIMIT:
            raise CliError(f"--env {name!r} is not a variable name: letters, digits and _, not starting with a digit")
        if len(value) > ENVIRONMENT_TEXT_LIMIT:
            raise CliError(f"--env {name}: the value has {len(value)} characters, at most {ENVIRONMENT_TEXT_LIMIT} fit")
    return pairs


def refuse_with_local(options: dict[str, object]) -> None:
    """Options that only mean something for AWS, given with --local: say so rather than ignore them."""
    given = [option for option, value in options.items() if value not in (None, False, [], ())]
    if given:
        raise CliError(f"{', '.join(given)} only apply in AWS: drop them with --local")


def add_local_options(parser: argparse.ArgumentParser, local_help: str, summary_help: str) -> argparse._ArgumentGroup:
    """--local and what only a local run takes; the group, for the command's own local options."""
    group = parser.add_argument_group("local mode (Docker and SageMaker SDK v3: pip install '.[local]')")
    group.add_argument("--local", action="store_true", help=local_help)
    group.add_argument("--summary", metavar="FILE", help=summary_help)
    group.add_argument(
        "--timeout",
        type=int,
        metavar="SECONDS",
        help=f"give up (and clean up) after this long; 0 = no limit (default {DEFAULT_LOCAL_TIMEOUT})",
    )
    group.add_argument(
        "--allow-telemetry", action="store_true", help="do not opt out of the SDK's telemetry (it runs offline)"
    )
    group.add_argument("--verbose", action="store_true", help="show the SDK's INFO logging")
    return group


def local_model(args: argparse.Namespace, aws_only: dict[str, object], missing: str) -> Path:
    """deploy --local's and transform --local's checks before any Docker work: no option that only means
    something in AWS, the SDK, and the model.tar.gz (`missing` says what to pass when there is none)."""
    from optml.cli import local_v3, localmode

    refuse_with_local(
        {
            "--role": args.role,
            "--name": args.name,
            **aws_only,
            "--instance-type": args.instance_type,
            "--instance-count": args.instance_count,
            "--wait": args.wait,
            "--dry-run": args.dry_run,
            "--region": args.region,
            "--profile": args.profile,
        }
    )
    if not args.model_data:
        raise CliError(f"--model-data is required: {missing}")
    with local_checks():
        local_v3.require_sdk()
        return localmode.existing_model(args.model_data)


@contextlib.contextmanager
def local_checks() -> Iterator[None]:
    """Local-mode checks made before any work (paths, the SDK) fail as the command's errors."""
    try:
        yield
    except LocalModeError as error:
        raise CliError(str(error)) from None
