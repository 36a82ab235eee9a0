"""`optml push` to ECR, with STS and ECR served by moto and the Docker engine replaced by a recorder: the account
from STS, the repository created once with scan on push, the login with the decoded token at the token's
endpoint, then tag and push. Bad input fails before any AWS call (and before the engine); --dry-run calls
nothing. The push to a real registry is tests/docker/test_push_registry.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from optml.cli import main as cli_main
from optml.cli import push
from optml.cli.aws import Aws
from optml.cli.errors import CliError
from optml.cli.main import main

ACCOUNT = "123456789012"  # moto's
REGISTRY = f"{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com"
DIGEST = "sha256:" + "ab" * 32


class RecordedSteps:
    """The docker steps push takes, recorded instead of run."""

    def __init__(self) -> None:
        self.steps: list[tuple[Any, ...]] = []

    def check_image(self, name: str) -> None:
        self.steps.append(("check_image", name))

    def login(self, registry: str, username: str, password: str) -> None:
        self.steps.append(("login", registry, username, password))

    def push(self, source: str, repository: str, tag: str, auth: dict[str, str] | None) -> str:
        self.steps.append(("push", source, repository, tag, auth))
        return DIGEST


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> RecordedSteps:
    recorded = RecordedSteps()
    monkeypatch.setattr(push.docker_client, "connect", lambda: "engine")
    monkeypatch.setattr(push, "EngineSteps", lambda client: recorded if client == "engine" else None)
    return recorded


@pytest.fixture
def aws_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The AWS operations the command calls, in order."""
    calls: list[str] = []
    call = Aws.call

    def recording(self: Aws, service: str, operation: str, **params: Any) -> dict[str, Any]:
        calls.append(operation)
        return call(self, service, operation, **params)

    monkeypatch.setattr(Aws, "call", recording)
    return calls


@pytest.fixture
def moto(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from moto import mock_aws

    for name in ("AWS_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        import boto3

        yield boto3.client("ecr", region_name="eu-west-1")


def test_push_to_ecr_creates_the_repository_once_and_logs_in_with_the_decoded_token(
    moto: Any, engine: RecordedSteps, aws_calls: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["push", "--region", "eu-west-1"]) == 0
    assert aws_calls == ["GetCallerIdentity", "DescribeRepositories", "CreateRepository", "GetAuthorizationToken"]
    (repository,) = moto.describe_repositories()["repositories"]
    assert repository["repositoryName"] == "optml"
    assert repository["imageScanningConfiguration"] == {"scanOnPush": True}
    # moto's token is base64("AWS:123456789012-auth-token"); the login gets it decoded, at the answer's endpoint.
    auth = {"username": "AWS", "password": f"{ACCOUNT}-auth-token"}
    assert engine.steps == [
        ("check_image", "optml:latest"),
        ("login", f"https://{REGISTRY}", "AWS", f"{ACCOUNT}-auth-token"),
        ("push", "optml:latest", f"{REGISTRY}/optml", "latest", auth),
    ]
    out, err = capsys.readouterr()
    assert out == f"image   {REGISTRY}/optml:latest\ndigest  {DIGEST}\n"
    assert "created ECR repository optml (scan on push)" in err

    # Again: the repository is there, so it is not created twice.
    aws_calls.clear()
    engine.steps.clear()
    assert main(["push", "--region", "eu-west-1", "--image", "optml:latest-gpu", "--tag", "1.4-gpu"]) == 0
    assert aws_calls == ["GetCallerIdentity", "DescribeRepositories", "GetAuthorizationToken"]
    assert len(moto.describe_repositories()["repositories"]) == 1
    assert engine.steps[-1] == ("push", "optml:latest-gpu", f"{REGISTRY}/optml", "1.4-gpu", auth)
    assert capsys.readouterr().out == f"image   {REGISTRY}/optml:1.4-gpu\ndigest  {DIGEST}\n"


def test_an_ecr_image_uri_names_account_region_repository_and_tag(
    moto: Any, engine: RecordedSteps, aws_calls: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["push", "--image-uri", f"{REGISTRY}/team/optml:2.0"]) == 0
    assert aws_calls == ["DescribeRepositories", "CreateRepository", "GetAuthorizationToken"]  # no STS needed
    assert [r["repositoryName"] for r in moto.describe_repositories()["repositories"]] == ["team/optml"]
    assert engine.steps[-1][1:4] == ("optml:latest", f"{REGISTRY}/team/optml", "2.0")
    assert capsys.readouterr().out == f"image   {REGISTRY}/team/optml:2.0\ndigest  {DIGEST}\n"


def test_a_push_to_another_accounts_registry_logs_in_there(
    moto: Any, engine: RecordedSteps, aws_calls: list[str]
) -> None:
    other = "210987654321.dkr.ecr.eu-west-1.amazonaws.com"
    assert main(["push", "--image-uri", f"{other}/optml:2.0"]) == 0
    assert aws_calls == ["DescribeRepositories", "CreateRepository", "GetAuthorizationToken"]
    assert engine.steps[1] == ("login", f"https://{other}", "AWS", f"{ACCOUNT}-auth-token")
    assert engine.steps[2][2] == f"{other}/optml"


def test_another_registry_uses_dockers_own_credentials_and_no_aws(
    no_network: None, engine: RecordedSteps, aws_calls: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["push", "--image", "optml:build", "--image-uri", "127.0.0.1:5000/optml-test:t1"]) == 0
    assert aws_calls == []
    # No login and no auth: the engine is sent what ~/.docker/config.json holds for the registry.
    assert engine.steps == [
        ("check_image", "optml:build"),
        ("push", "optml:build", "127.0.0.1:5000/optml-test", "t1", None),
    ]
    assert capsys.readouterr().out == f"image   127.0.0.1:5000/optml-test:t1\ndigest  {DIGEST}\n"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--region", "eu-west-1"], "no AWS credentials: run `aws configure`"),
        ([], "no AWS region: pass --region, or set AWS_REGION"),
        *(
            (["--region", "eu-west-1", f"--repository={name}"], f"repository name {name!r} is not one ECR accepts")
            for name in ("Optml", "o", "-optml", "team//optml", "optml/", "team/op..ml", "op ml", "a" * 257)
        ),
        (["--region", "eu-west-1", "--tag", ".hidden"], "tag '.hidden': up to 128 letters"),
        (["--image-uri", f"{REGISTRY}/Optml:1"], "repository name 'Optml' is not one ECR accepts"),
        (["--image-uri", "optml:1"], "expected REGISTRY/REPOSITORY[:TAG]"),
        (["--image-uri", "127.0.0.1:5000/optml@sha256:" + "0" * 64], "a push names a tag, not a digest"),
        (["--image-uri", "127.0.0.1:5000/Optml:1"], "is not a valid image reference"),
        (["--image-uri", "127.0.0.1:5000/optml:1", "--tag", "2"], "leave out --repository and --tag"),
        (["--image-uri", "127.0.0.1:5000/optml:1", "--region", "eu-west-1"], "127.0.0.1:5000 is not an ECR registry"),
        (["--image-uri", f"{REGISTRY}/optml:1", "--region", "us-east-1"], "registry is in eu-west-1: drop --region"),
    ],
)
def test_bad_input_fails_before_any_aws_call_or_the_engine(
    no_network: None,
    arguments: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_engine() -> None:
        raise AssertionError("the Docker engine was asked")

    monkeypatch.setattr(push.docker_client, "connect", no_engine)
    assert main(["push", *arguments]) == 2
    err = capsys.readouterr().err
    assert err.startswith("optml: error: ") and message in err, err


def test_the_longest_repository_name_ecr_takes_is_accepted() -> None:
    for name in ("ab", "team/optml", "a.b_c-d/e", "a" * 256):
        push.check_repository_name(name)


def json_documents(text: str) -> list[dict[str, Any]]:
    decoder, documents, at = json.JSONDecoder(), [], 0
    while at < len(text.rstrip()):
        document, at = decoder.raw_decode(text, at)
        documents.append(document)
        while at < len(text) and text[at].isspace():
            at += 1
    return documents


def test_dry_run_prints_the_requests_and_docker_steps_and_calls_nothing(
    no_network: None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(push.docker_client, "connect", lambda: pytest.fail("the Docker engine was asked"))
    assert main(["push", "--dry-run", "--region", "eu-west-1", "--repository", "team/optml", "--tag", "1.4"]) == 0
    out, err = capsys.readouterr()
    registry, placeholder = "<account>.dkr.ecr.eu-west-1.amazonaws.com", push.PASSWORD_PLACEHOLDER
    assert json_documents(out) == [
        {
            "service": "ecr",
            "operation": "DescribeRepositories",
            "region": "eu-west-1",
            "request": {"repositoryNames": ["team/optml"]},
        },
        {
            "service": "ecr",
            "operation": "CreateRepository",
            "region": "eu-west-1",
            "request": {"repositoryName": "team/optml", "imageScanningConfiguration": {"scanOnPush": True}},
        },
        {"service": "ecr", "operation": "GetAuthorizationToken", "region": "eu-west-1", "request": {}},
        {"docker": "login", "registry": f"https://{registry}", "username": "AWS", "password": placeholder},
        {"docker": "tag", "image": "optml:latest", "repository": f"{registry}/team/optml", "tag": "1.4"},
        {"docker": "push", "repository": f"{registry}/team/optml", "tag": "1.4"},
    ]
    assert "STS is not called, so the account shows as <account>" in err


def test_a_token_that_does_not_decode_is_named(moto: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    answer = {"authorizationData": [{"authorizationToken": "not base64!", "proxyEndpoint": f"https://{REGISTRY}"}]}
    monkeypatch.setattr(Aws, "call", lambda self, service, operation, **params: answer)
    with pytest.raises(CliError, match="holds no token that decodes to USER:PASSWORD"):
        push.ecr_login(Aws(region="eu-west-1"), REGISTRY)


def test_a_refused_push_says_to_log_in(capsys: pytest.CaptureFixture[str]) -> None:
    events: list[dict[str, Any]] = [
        {"status": "The push refers to repository [127.0.0.1:5000/optml-test]"},
        {"status": "Preparing", "id": "5f70bf18a086"},
        {"errorDetail": {"message": "unauthorized: authentication required"}, "error": "unauthorized"},
    ]
    with pytest.raises(CliError, match=r"authentication required; log in first: docker login 127.0.0.1:5000$"):
        push.follow_push(events, registry="127.0.0.1:5000")


def test_push_progress_is_a_line_per_layer_state_and_quarter(capsys: pytest.CaptureFixture[str]) -> None:
    layer = "5f70bf18a086"
    events: list[dict[str, Any]] = [
        {"status": "The push refers to repository [127.0.0.1:5000/optml-test]"},
        {"status": "Preparing", "id": layer, "progressDetail": {}},
        *(
            {"status": "Pushing", "id": layer, "progressDetail": {"current": sent, "total": 8_000_000}}
            for sent in range(0, 8_000_001, 500_000)
        ),
        {"status": "Pushed", "id": layer, "progressDetail": {}},
        {"status": f"t1: digest: {DIGEST} size: 528"},
        {"progressDetail": {}, "aux": {"Tag": "t1", "Digest": DIGEST, "Size": 528}},
    ]  # fmt: skip
    assert push.follow_push(events, registry="127.0.0.1:5000") == DIGEST
    assert capsys.readouterr().err.splitlines() == [
        "The push refers to repository [127.0.0.1:5000/optml-test]",
        f"{layer}: Preparing",
        *(f"{layer}: Pushing {share}% of 8.0 MB" for share in (0, 25, 50, 75, 100)),
        f"{layer}: Pushed",
        f"t1: digest: {DIGEST} size: 528",
    ]


def test_a_push_without_a_digest_is_an_error() -> None:
    with pytest.raises(CliError, match="ended without the registry naming a digest"):
        push.follow_push([{"status": "Pushed", "id": "5f70bf18a086"}], registry="127.0.0.1:5000")


@pytest.mark.parametrize(
    ("image", "tag"),
    [("optml:latest-gpu", "latest-gpu"), ("optml", "latest"), ("127.0.0.1:5000/optml", "latest"), ("r:5000/o:1", "1")],
)
def test_the_default_tag_is_the_local_images(image: str, tag: str) -> None:
    assert push.source_tag(image) == tag


@pytest.mark.parametrize("command", cli_main.COMMANDS, ids=lambda module: module.__name__.rsplit(".", 1)[-1])
def test_every_command_has_help_with_examples(command: Any, capsys: pytest.CaptureFixture[str]) -> None:
    name = command.__name__.rsplit(".", 1)[-1]
    with pytest.raises(SystemExit) as exit_:
        main([name, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: optml {name} ")
    assert "examples:" in text and f"  optml {name} --" in text


def test_the_command_lists_build_and_push(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "    build  " in text and "    push  " in text
