"""AWS for the optml command's tests, without AWS: botocore's Stubber behind `Aws.client`.

A test module imports the fixtures by their function names (`credentials_fixture`, `stub_fixture`) and uses
them by their names (`credentials`, `stub`).

A stubbed client still validates every request against the API's model (what AWS would reject, it rejects)
and compares it with the parameters a test expects; answers come from the test. Nothing leaves the process:
`no_network` fails any request that would.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from optml.cli.aws import Aws
from optml.cli.main import main

REGION = "eu-west-1"
ROLE = "arn:aws:iam::123456789012:role/SageMakerExecution"
IMAGE = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/optml:latest"


@pytest.fixture(name="credentials")
def credentials_fixture(no_network: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials and a region, as a configured user has them; still no network."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)


@pytest.fixture(name="stub")
def stub_fixture(credentials: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], Any]]:
    """`stub("sagemaker")`: the Stubber of the client `Aws` uses for that service; every response a test adds
    must have been asked for by the end of the test."""
    import boto3
    from botocore.stub import Stubber

    clients: dict[str, Any] = {}
    stubbers: dict[str, Stubber] = {}

    def client(service: str) -> Any:
        if service not in clients:
            clients[service] = boto3.client(
                service, region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing"
            )
            stubbers[service] = Stubber(clients[service])
            stubbers[service].activate()
        return clients[service]

    def stubber(service: str) -> Stubber:
        client(service)
        return stubbers[service]

    monkeypatch.setattr(Aws, "client", lambda self, service: client(service))
    yield stubber
    for each in stubbers.values():
        each.assert_no_pending_responses()


def run_cli(*argv: str) -> int:
    return main(list(argv))


def with_mistake(argv: Sequence[str], option: str, value: str | None) -> list[str]:
    """A command line (`argv`, the command first) with `option` given `value` instead, or left out (None)."""
    arguments = list(argv[1:])
    if option in arguments:
        index = arguments.index(option)
        del arguments[index : index + 2]
    return [argv[0], *arguments, *([option, value] if value is not None else [])]


def printed_requests(out: str) -> list[dict[str, Any]]:
    """The requests --dry-run printed: JSON objects one after the other."""
    decoder, requests, position = json.JSONDecoder(), [], 0
    text = out.strip()
    while position < len(text):
        request, position = decoder.raw_decode(text, position)
        requests.append(request)
        position += len(text[position:]) - len(text[position:].lstrip())
    return requests


def streaming(body: bytes) -> Any:
    from botocore.response import StreamingBody

    return StreamingBody(io.BytesIO(body), len(body))
