"""`optml push`: the image to ECR, or with --image-uri to any registry; prints the pushed URI and its digest.

To ECR: the account from STS, the repository created when it is missing (scan on push), a token from
GetAuthorizationToken for the docker login, then tag and push with each layer's progress. To another registry:
no AWS at all, and the push uses the credentials the user's docker already has (`docker login`,
~/.docker/config.json). Every name is checked before the first call. --dry-run prints the AWS requests and the
docker steps as JSON and calls nothing, not STS: the account shows as <account> unless --image-uri names it.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from optml.cli import docker_client
from optml.cli.aws import ECR_HOST, Aws
from optml.cli.errors import CliError

if TYPE_CHECKING:
    import docker

# ECR's own rules for repositoryName (CreateRepository) and Docker's for tags, which ECR shares.
REPOSITORY_NAME = re.compile(r"(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*")
REPOSITORY_LENGTH = (2, 256)
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
DEFAULT_IMAGE = "optml:latest"
DEFAULT_REPOSITORY = "optml"
ACCOUNT_PLACEHOLDER = "<account>"  # --dry-run calls no STS
PASSWORD_PLACEHOLDER = "<decoded from GetAuthorizationToken's authorizationToken>"

EXAMPLES = """\
examples:
  optml push                                   # optml:latest to ECR repository optml, tag latest
  optml push --image optml:latest-gpu --repository team/optml --tag 1.4-gpu --region eu-west-1
  optml push --image-uri 123456789012.dkr.ecr.eu-west-1.amazonaws.com/optml:1.4
  optml push --image-uri registry.example.com:5000/optml:1.4   # not ECR: after `docker login registry.example.com:5000`
  optml push --dry-run --region eu-west-1      # print the requests and docker steps, call nothing

ECR needs AWS credentials (aws configure, AWS_PROFILE, or the AWS_* variables) and a region. The
repository is created with scan on push when it does not exist. The last lines name the pushed image and
its digest: `URI@DIGEST` pins exactly this image, e.g. as a training job's image."""


@dataclass(frozen=True)
class Target:
    """Where the image goes. registry None: ECR, in the account STS names."""

    registry: str | None
    repository: str
    tag: str
    ecr_account: str | None = None  # the account of an ECR registry --image-uri named
    ecr_region: str | None = None


def ecr_host(account: str, region: str) -> str:
    suffix = ".amazonaws.com.cn" if region.startswith("cn-") else ".amazonaws.com"
    return f"{account}.dkr.ecr.{region}{suffix}"


def source_tag(image: str) -> str:
    """optml:latest-gpu -> latest-gpu; `latest` when the name has no tag (the colon of host:port is not one)."""
    last = image.rsplit("/", 1)[-1]
    return last.partition(":")[2] if ":" in last and "@" not in last else "latest"


def parse_image_uri(uri: str, default_tag: str) -> Target:
    registry, slash, path = uri.partition("/")
    if not slash or not path or not ("." in registry or ":" in registry or registry == "localhost"):
        raise CliError(
            f"--image-uri {uri!r}: expected REGISTRY/REPOSITORY[:TAG], e.g."
            " 123456789012.dkr.ecr.eu-west-1.amazonaws.com/optml:1.4 or 127.0.0.1:5000/optml:1.4"
        )
    if "@" in path:
        raise CliError(f"--image-uri {uri!r}: a push names a tag, not a digest (the digest is what it prints)")
    repository, _, tag = path.partition(":")
    ecr = ECR_HOST.fullmatch(registry)
    if ecr:
        return Target(registry, repository, tag or default_tag, ecr["account"], ecr["region"])
    from docker.utils import match_tag

    target = Target(registry, repository, tag or default_tag)
    if not match_tag(f"{registry}/{repository}:{target.tag}"):
        raise CliError(f"--image-uri {uri!r} is not a valid image reference (lowercase repository path, TAG)")
    return target


def check_repository_name(name: str) -> None:
    shortest, longest = REPOSITORY_LENGTH
    if not (shortest <= len(name) <= longest and REPOSITORY_NAME.fullmatch(name)):
        raise CliError(
            f"repository name {name!r} is not one ECR accepts: {shortest} to {longest} lowercase letters and"
            " digits, in parts joined by one '.', '_' or '-', with '/' between path parts (e.g. optml or team/optml)"
        )


def check_tag(tag: str) -> None:
    if not TAG.fullmatch(tag):
        raise CliError(f"tag {tag!r}: up to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'")


def target_from(args: argparse.Namespace) -> Target:
    """The destination from the flags, every name checked: nothing has been called yet."""
    default_tag = source_tag(args.image)
    if args.image_uri:
        if args.repository or args.tag:
            raise CliError("--image-uri names the repository and the tag already: leave out --repository and --tag")
        target = parse_image_uri(args.image_uri, default_tag)
    else:
        target = Target(None, args.repository or DEFAULT_REPOSITORY, args.tag or default_tag)
    check_tag(target.tag)
    if target.registry is None or target.ecr_account:
        check_repository_name(target.repository)
    if target.registry and not target.ecr_account and (args.region or args.profile):
        raise CliError(f"--region and --profile are for ECR, and {target.registry} is not an ECR registry")
    if target.ecr_region and args.region and args.region != target.ecr_region:
        raise CliError(f"--region {args.region}, but the --image-uri registry is in {target.ecr_region}: drop --region")
    return target


class DockerSteps(Protocol):
    def check_image(self, name: str) -> None: ...
    def login(self, registry: str, username: str, password: str) -> None: ...
    def push(self, source: str, repository: str, tag: str, auth: dict[str, str] | None) -> str: ...


class EngineSteps:
    """The docker steps, run by the engine."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client

    def check_image(self, name: str) -> None:
        import docker

        try:
            self.client.images.get(name)
        except docker.errors.ImageNotFound:
            raise CliError(f"no local image {name}: build it with `optml build`, or name one with --image") from None

    def login(self, registry: str, username: str, password: str) -> None:
        """Checked by the registry now, not at the first layer; kept in this process, not in config.json."""
        import docker

        try:
            self.client.login(username=username, password=password, registry=registry, reauth=True)
        except docker.errors.APIError as error:
            raise CliError(f"docker login to {registry} failed: {error.explanation or error}") from None

    def push(self, source: str, repository: str, tag: str, auth: dict[str, str] | None) -> str:
        """Tag and push; auth None: the credentials docker has for the registry. Returns the digest."""
        import docker

        self.client.images.get(source).tag(repository, tag)
        try:
            events = self.client.api.push(repository, tag=tag, stream=True, decode=True, auth_config=auth)
            return follow_push(events, registry=repository.split("/", 1)[0])
        except docker.errors.APIError as error:
            raise CliError(f"push of {repository}:{tag} failed: {error.explanation or error}") from None


class PrintedSteps:
    """--dry-run's docker steps: printed as JSON, none run."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def _print(self, step: dict[str, Any]) -> None:
        print(json.dumps(step, indent=2), file=self.out)

    def check_image(self, name: str) -> None:
        pass  # the engine is not asked either

    def login(self, registry: str, username: str, password: str) -> None:
        self._print({"docker": "login", "registry": registry, "username": username, "password": password})

    def push(self, source: str, repository: str, tag: str, auth: dict[str, str] | None) -> str:
        self._print({"docker": "tag", "image": source, "repository": repository, "tag": tag})
        self._print({"docker": "push", "repository": repository, "tag": tag})
        return "<digest>"


class LayerProgress:
    """A line per layer each time its state changes, and while it uploads at every quarter: readable in a CI
    log, where docker's redrawn progress bars are not."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.last: dict[str, tuple[str, int]] = {}

    def show(self, event: dict[str, Any]) -> None:
        status, layer = event.get("status"), event.get("id")
        if not status:
            return
        if not layer:  # "The push refers to repository [...]", "latest: digest: sha256:... size: 1234"
            print(status, file=self.out, flush=True)
            return
        detail = event.get("progressDetail") or {}
        total, current = detail.get("total") or 0, detail.get("current") or 0
        quarter = min(4 * current // total, 4) if total else 0
        if self.last.get(layer) == (status, quarter):
            return
        self.last[layer] = (status, quarter)
        share = f" {25 * quarter}% of {total / 1e6:.1f} MB" if total and status == "Pushing" else ""
        print(f"{layer}: {status}{share}", file=self.out, flush=True)


def follow_push(events: Iterable[dict[str, Any]], registry: str) -> str:
    """Show the push's progress; the digest the registry gave the manifest."""
    progress = LayerProgress(sys.stderr)
    digest = None
    for event in events:
        if "error" in event:
            message = str((event.get("errorDetail") or {}).get("message") or event["error"]).strip()
            unauthorized = any(word in message.lower() for word in ("auth", "denied", "unauthorized"))
            hint = f"; log in first: docker login {registry}" if unauthorized else ""
            raise CliError(f"push to {registry} failed: {message}{hint}")
        digest = (event.get("aux") or {}).get("Digest") or digest
        progress.show(event)
    if not digest:
        raise CliError(f"push to {registry} ended without the registry naming a digest")
    return str(digest)


def ensure_repository(aws: Aws, name: str, registry_id: dict[str, str]) -> bool:
    """Create the repository unless it exists; True when it was created."""
    try:
        found = aws.call("ecr", "DescribeRepositories", repositoryNames=[name], **registry_id).get("repositories")
    except CliError as error:
        if aws_error_code(error) != "RepositoryNotFoundException":
            raise
        found = []
    if found:
        return False
    scan = {"scanOnPush": True}
    aws.call("ecr", "CreateRepository", repositoryName=name, imageScanningConfiguration=scan, **registry_id)
    return True


def aws_error_code(error: CliError) -> str | None:
    """The AWS error code behind Aws.call's CliError: raised `from None`, it keeps the ClientError as context."""
    response = getattr(error.__context__, "response", None)
    return response.get("Error", {}).get("Code") if isinstance(response, dict) else None


@dataclass(frozen=True)
class EcrLogin:
    """What GetAuthorizationToken's answer holds: the token decoded (`AWS:<password>`), and where to use it."""

    username: str
    password: str
    endpoint: str  # https://ACCOUNT.dkr.ecr.REGION.amazonaws.com


def ecr_login(aws: Aws, registry: str) -> EcrLogin:
    data = aws.call("ecr", "GetAuthorizationToken").get("authorizationData") or []
    if aws.dry_run:
        return EcrLogin("AWS", PASSWORD_PLACEHOLDER, f"https://{registry}")
    try:
        token, endpoint = data[0]["authorizationToken"], data[0]["proxyEndpoint"]
        username, _, password = base64.b64decode(token, validate=True).decode().partition(":")
    except (IndexError, KeyError, binascii.Error, UnicodeDecodeError):
        raise CliError("ecr GetAuthorizationToken: the answer holds no token that decodes to USER:PASSWORD") from None
    return EcrLogin(username, password, endpoint)


def push_to_ecr(args: argparse.Namespace, aws: Aws, target: Target, steps: DockerSteps) -> tuple[str, str]:
    steps.check_image(args.image)
    if target.ecr_account:
        account, registry_id = target.ecr_account, {"registryId": target.ecr_account}
    elif args.dry_run:
        note(f"STS is not called, so the account shows as {ACCOUNT_PLACEHOLDER}; --image-uri can name it")
        account, registry_id = ACCOUNT_PLACEHOLDER, {}
    else:  # the caller's own registry, ECR's default: the requests need not name it
        account, registry_id = aws.call("sts", "GetCallerIdentity")["Account"], {}
    if args.dry_run:
        note("CreateRepository is sent only when DescribeRepositories finds no repository")
    if ensure_repository(aws, target.repository, registry_id) and not args.dry_run:
        note(f"created ECR repository {target.repository} (scan on push)")
    registry = target.registry or ecr_host(account, aws.resolved_region())
    login = ecr_login(aws, registry)
    # The token is good for every registry the caller may push to, but its endpoint is the caller's own: a push
    # to another account's registry (--image-uri) logs in there instead.
    steps.login(f"https://{registry}" if target.ecr_account else login.endpoint, login.username, login.password)
    repository = f"{registry}/{target.repository}"
    auth = {"username": login.username, "password": login.password}
    return repository, steps.push(args.image, repository, target.tag, auth)


def push_elsewhere(args: argparse.Namespace, target: Target, steps: DockerSteps) -> tuple[str, str]:
    if args.dry_run:
        note(f"no AWS: the push uses the credentials your docker has for {target.registry} (docker login)")
    steps.check_image(args.image)
    repository = f"{target.registry}/{target.repository}"
    return repository, steps.push(args.image, repository, target.tag, None)


def note(message: str) -> None:
    print(f"optml push: {message}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    target = target_from(args)
    to_ecr = target.registry is None or target.ecr_account is not None
    # out: the stream at this call, where the docker steps print too (Aws's default is the one at import).
    aws = Aws(region=target.ecr_region or args.region, profile=args.profile, dry_run=args.dry_run)
    if to_ecr:  # region and credentials before anything else, the engine included
        aws.resolved_region()
        aws.check_credentials()
    steps: DockerSteps = PrintedSteps(sys.stdout) if args.dry_run else EngineSteps(docker_client.connect())
    if to_ecr:
        repository, digest = push_to_ecr(args, aws, target, steps)
    else:
        repository, digest = push_elsewhere(args, target, steps)
    if not args.dry_run:
        print(f"image   {repository}:{target.tag}\ndigest  {digest}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "push",
        help="push the image to ECR (or any registry) and print its URI and digest",
        description="Push a local image to an ECR repository in your account, created when missing (scan on"
        " push), or with --image-uri to any registry. Layer progress on stderr; the image URI and digest on stdout.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--image", default=DEFAULT_IMAGE, metavar="NAME:TAG", help=f"the local image ({DEFAULT_IMAGE})")
    parser.add_argument("--repository", metavar="NAME", help=f"the ECR repository ({DEFAULT_REPOSITORY})")
    parser.add_argument("--tag", metavar="TAG", help="the tag to push as (the local image's: latest)")
    parser.add_argument("--region", help="the ECR region (AWS_REGION, AWS_DEFAULT_REGION or your profile's)")
    parser.add_argument("--profile", help="the AWS profile (AWS_PROFILE or the default)")
    parser.add_argument(
        "--image-uri", metavar="URI", help="the full destination REGISTRY/REPOSITORY:TAG, ECR or any other registry"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the requests and docker steps, call nothing")
    parser.set_defaults(run=run)
