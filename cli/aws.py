"""AWS for the `optml` command: the region, the credentials, and every API call the commands make.

Every call goes through `Aws.call`. With --dry-run it prints the request as JSON — checked against botocore's
own model of the API, so a printed request is one AWS would accept — and makes no network call at all: not
STS, not S3, not a default-bucket lookup. Commands therefore build their requests from what the user gave,
never from an answer they would have to fetch first.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from optml.cli.errors import CliError

if TYPE_CHECKING:
    import boto3

REGION_VARIABLES = ("AWS_REGION", "AWS_DEFAULT_REGION")
# A private ECR registry's host: the only place SageMaker pulls training and hosting images from.
# How SageMaker answers a Create* call for a name that exists: ResourceInUse, or a ValidationException whose
# message says so (CreateExperiment, CreateModelPackageGroup). `Aws.call` puts the code first in its CliError.
ALREADY_EXISTS = re.compile(r": (ResourceInUse|ValidationException): .*already exists?", re.IGNORECASE)
ECR_HOST = re.compile(r"(?P<account>\d{12})\.dkr\.ecr(?:-fips)?\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?")


@dataclass
class Aws:
    """One command's view of AWS. `region` and `profile` as given on the command line (None: the usual
    environment variables and ~/.aws config)."""

    region: str | None = None
    profile: str | None = None
    dry_run: bool = False
    out: TextIO = field(default_factory=lambda: sys.stdout)  # the stdout at use, not at import (pytest swaps it)
    printed: list[dict[str, Any]] = field(default_factory=list)  # what --dry-run printed, in order
    _session: boto3.Session | None = field(default=None, repr=False)

    def session(self) -> boto3.Session:
        """boto3's session for the profile; creating it reads config files only, no network."""
        if self._session is None:
            import boto3
            import botocore.exceptions

            try:
                self._session = boto3.Session(profile_name=self.profile, region_name=self.region)
            except botocore.exceptions.ProfileNotFound:
                raise CliError(f"AWS profile {self.profile!r} is not in ~/.aws/config or ~/.aws/credentials") from None
        return self._session

    def resolved_region(self) -> str:
        region = self.region or next((os.environ[name] for name in REGION_VARIABLES if os.environ.get(name)), None)
        region = region or self.session().region_name
        if not region:
            raise CliError("no AWS region: pass --region, or set AWS_REGION, or a region in your AWS profile")
        return region

    def check_credentials(self) -> None:
        """Fail before the first call when there are no credentials at all (--dry-run needs none)."""
        if self.dry_run:
            return
        import botocore.exceptions

        try:
            credentials = self.session().get_credentials()
        except botocore.exceptions.BotoCoreError as error:  # a partial key pair, an SSO token gone stale, ...
            raise CliError(f"AWS credentials: {error}") from None
        if credentials is None:
            raise CliError(
                "no AWS credentials: run `aws configure` (or `aws sso login`), set AWS_PROFILE, or set"
                " AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; --dry-run shows the requests without any"
            )

    def client(self, service: str) -> Any:
        return self.session().client(service, region_name=self.resolved_region())

    def call(self, service: str, operation: str, **params: Any) -> dict[str, Any]:
        """Call `operation` (its API name, e.g. CreateTrainingJob) of `service`; with --dry-run print it
        instead and return an empty answer."""
        if self.dry_run:
            return self._print(service, operation, params)
        import botocore.exceptions

        self.check_credentials()
        client = self.client(service)
        method = getattr(client, _method_name(client, operation))
        try:
            answer: dict[str, Any] = method(**params)
        except botocore.exceptions.ClientError as error:
            details = error.response.get("Error", {})
            raise CliError(f"{service} {operation}: {details.get('Code')}: {details.get('Message')}") from None
        except botocore.exceptions.BotoCoreError as error:  # credentials (SSO expiry), connection, timeouts
            raise CliError(f"{service} {operation}: {error}") from None
        return answer

    def create_if_missing(self, service: str, operation: str, **params: Any) -> dict[str, Any]:
        """Call a Create* `operation` whose resource may exist already (an experiment, a model package group):
        an answer of "already exists" is success, with an empty answer. --dry-run prints the request as `call`
        does, since optml never asks AWS first what exists."""
        try:
            return self.call(service, operation, **params)
        except CliError as error:
            if not ALREADY_EXISTS.search(str(error)):
                raise
            return {}

    def _print(self, service: str, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        import botocore.exceptions
        import botocore.session
        import botocore.validate

        model = botocore.session.get_session().get_service_model(service).operation_model(operation)
        try:
            botocore.validate.validate_parameters(params, model.input_shape)
        except botocore.exceptions.ParamValidationError as error:  # optml built a request AWS would refuse
            raise AssertionError(f"{service} {operation}: {error}") from None
        request = {"service": service, "operation": operation, "region": self.resolved_region(), "request": params}
        print(json.dumps(request, indent=2, sort_keys=True, default=_shown), file=self.out)
        self.printed.append(request)
        return {}


def _shown(value: object) -> str:
    """What JSON cannot hold, as --dry-run shows it: a binary body by its size and digest, not its bytes."""
    if isinstance(value, bytes):
        return f"<{len(value)} bytes, sha256 {hashlib.sha256(value).hexdigest()}>"
    return str(value)


def _method_name(client: Any, operation: str) -> str:
    """boto3's method name for an API operation name (CreateTrainingJob -> create_training_job)."""
    names = {api: method for method, api in client.meta.method_to_api_mapping.items()}
    if operation not in names:
        raise ValueError(f"{client.meta.service_model.service_name} has no operation {operation!r}")
    return names[operation]
