"""The optml command's AWS plumbing: region and credentials checked before any call; --dry-run prints
requests AWS's own model accepts and calls nothing."""

from __future__ import annotations

import io
import json

import pytest

from optml.cli.aws import Aws
from optml.cli.errors import CliError
from tests.unit.cli_fakes import REGION, credentials_fixture, stub_fixture  # noqa: F401


def test_no_region_is_a_clear_error(no_network: None) -> None:
    with pytest.raises(CliError, match="no AWS region: pass --region, or set AWS_REGION"):
        Aws().resolved_region()


def test_the_region_comes_from_the_flag_then_the_environment(no_network: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-central-1")
    assert Aws().resolved_region() == "eu-central-1"
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    assert Aws().resolved_region() == "eu-west-1"
    assert Aws(region="us-east-2").resolved_region() == "us-east-2"


def test_no_credentials_fail_before_any_call(no_network: None) -> None:
    with pytest.raises(CliError, match=r"no AWS credentials: run `aws configure`"):
        Aws(region="eu-west-1").call("sagemaker", "DeleteEndpoint", EndpointName="endpoint")


def test_an_unknown_profile_is_named(no_network: None) -> None:
    with pytest.raises(CliError, match="AWS profile 'nobody' is not in ~/.aws/config or ~/.aws/credentials"):
        Aws(profile="nobody").resolved_region()


def test_dry_run_prints_the_request_and_calls_nothing(no_network: None) -> None:
    out = io.StringIO()
    aws = Aws(region="eu-west-1", dry_run=True, out=out)
    assert aws.call("sagemaker", "DeleteEndpoint", EndpointName="churn") == {}
    printed = json.loads(out.getvalue())
    assert printed == {
        "service": "sagemaker",
        "operation": "DeleteEndpoint",
        "region": "eu-west-1",
        "request": {"EndpointName": "churn"},
    }
    assert aws.printed == [printed]


def test_dry_run_refuses_to_print_a_request_aws_would_reject(no_network: None) -> None:
    """The request is checked against botocore's model of the API: what --dry-run shows is what AWS takes."""
    with pytest.raises(AssertionError, match='Missing required parameter in input: "EndpointName"'):
        Aws(region="eu-west-1", dry_run=True, out=io.StringIO()).call("sagemaker", "DeleteEndpoint", Name="churn")


def test_the_network_guard_catches_a_real_call(no_network: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fixture itself must be able to fail: with credentials, a real call reaches botocore's sender."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with pytest.raises(AssertionError, match="a network call was made: POST https://api.sagemaker.eu-west-1"):
        Aws(region="eu-west-1").call("sagemaker", "DeleteEndpoint", EndpointName="churn")


def test_a_partial_key_pair_is_one_line_not_a_traceback(no_network: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")  # and no secret key
    with pytest.raises(CliError, match="AWS credentials: Partial credentials found in env, missing: AWS_SECRET_ACCESS"):
        Aws(region="eu-west-1").call("sagemaker", "DeleteEndpoint", EndpointName="churn")


def test_botocores_other_errors_are_one_line(no_network: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """An expired SSO token, a timeout: any BotoCoreError becomes the command's one-line error."""
    import botocore.exceptions

    def expired(*args: object, **kwargs: object) -> None:
        raise botocore.exceptions.TokenRetrievalError(provider="sso", error_msg="the SSO session has expired")

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    aws = Aws(region="eu-west-1")
    client = aws.client("sagemaker")
    monkeypatch.setattr(client, "delete_endpoint", expired)
    monkeypatch.setattr(aws, "client", lambda service: client)
    with pytest.raises(CliError, match="sagemaker DeleteEndpoint: Error when retrieving token from sso: the SSO"):
        aws.call("sagemaker", "DeleteEndpoint", EndpointName="churn")


def test_create_if_missing_takes_already_exists_as_success(stub) -> None:
    stub("sagemaker").add_client_error(
        "create_experiment",
        service_error_code="ValidationException",
        service_message="Experiment 'churn' already exists",
        expected_params={"ExperimentName": "churn"},
    )
    assert Aws(region=REGION).create_if_missing("sagemaker", "CreateExperiment", ExperimentName="churn") == {}


def test_create_if_missing_passes_other_errors_on(stub) -> None:
    stub("sagemaker").add_client_error(
        "create_experiment",
        service_error_code="ValidationException",
        service_message="1 validation error detected: Value 'x!' at 'experimentName' failed to satisfy constraint",
        expected_params={"ExperimentName": "churn"},
    )
    with pytest.raises(CliError, match="CreateExperiment: ValidationException: 1 validation error"):
        Aws(region=REGION).create_if_missing("sagemaker", "CreateExperiment", ExperimentName="churn")


def test_the_readmes_policy_allows_every_call_the_commands_make() -> None:
    """README 'To AWS' says the policy holds every action a command calls: each API name in cli/ is in it."""
    import re

    from tests.conftest import REPO

    readme = (REPO / "README.md").read_text()
    policy = readme[readme.index("## To AWS") :]
    policy = policy[policy.index("```json") : policy.index("```", policy.index("```json") + 7)]
    called = set()
    for source in (REPO / "cli").glob("*.py"):
        called |= set(
            re.findall(r'"((?:Create|Describe|Delete|List|Associate|Invoke|Filter|Get)[A-Z]\w+)"', source.read_text())
        )
    assert len(called) > 20
    missing = sorted(op for op in called if f':{op}"' not in policy)
    assert missing == []
