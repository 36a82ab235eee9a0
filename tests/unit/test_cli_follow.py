"""--wait's log follower: every line once, pages followed, hosts named when there are several, and a log group
that does not exist yet is no error."""

from __future__ import annotations

import io
from typing import Any

import pytest

from optml.cli.aws import Aws
from optml.cli.errors import CliError
from optml.cli.follow import CloudWatchLog
from tests.unit.cli_fakes import credentials_fixture, stub_fixture  # noqa: F401 (fixtures)

QUERY = {"logGroupName": "/aws/sagemaker/TrainingJobs", "logStreamNamePrefix": "job/", "startTime": 0}


def event(event_id: str, at: int, message: str, host: int = 1) -> dict[str, Any]:
    return {"logStreamName": f"job/algo-{host}-1764547200", "eventId": event_id, "timestamp": at, "message": message}


def test_several_hosts_are_named_and_each_line_comes_once(stub: Any) -> None:
    logs = stub("logs")
    logs.add_response("filter_log_events", {"events": [event("1", 5, "a"), event("2", 7, "b", host=2)]}, QUERY)
    logs.add_response(
        "filter_log_events", {"events": [event("2", 7, "b", host=2), event("3", 7, "c")]}, {**QUERY, "startTime": 7}
    )
    out = io.StringIO()
    log = CloudWatchLog(Aws(), "/aws/sagemaker/TrainingJobs", "job/", out, show_hosts=True)

    log.print_new()
    log.print_new()

    assert out.getvalue().splitlines() == ["[algo-1] a", "[algo-2] b", "[algo-1] c"]


def test_a_log_group_that_does_not_exist_yet_prints_nothing(stub: Any) -> None:
    stub("logs").add_client_error(
        "filter_log_events", "ResourceNotFoundException", "The specified log group does not exist."
    )
    out = io.StringIO()

    CloudWatchLog(Aws(), "/aws/sagemaker/TrainingJobs", "job/", out).print_new()

    assert out.getvalue() == ""


def test_other_log_errors_are_reported(stub: Any) -> None:
    stub("logs").add_client_error("filter_log_events", "AccessDeniedException", "not allowed: logs:FilterLogEvents")

    with pytest.raises(CliError, match="logs FilterLogEvents: AccessDeniedException: not allowed"):
        CloudWatchLog(Aws(), "/aws/sagemaker/TrainingJobs", "job/", io.StringIO()).print_new()
