"""--wait's log follower: every line once, pages followed, hosts named when there are several, and a log group
that does not exist yet is no error."""

from __future__ import annotations

import io
from typing import Any

import pytest

from optml.cli.aws import Aws
from optml.cli.errors import CliError
from optml.cli.follow import LATE_MS, CloudWatchLog
from tests.unit.cli_fakes import credentials_fixture, stub_fixture  # noqa: F401 (fixtures)

QUERY = {"logGroupName": "/aws/sagemaker/TrainingJobs", "logStreamNamePrefix": "job/", "startTime": 0}


def event(event_id: str, at: int, message: str, host: int = 1) -> dict[str, Any]:
    return {"logStreamName": f"job/algo-{host}-1764547200", "eventId": event_id, "timestamp": at, "message": message}


def test_several_hosts_are_named_and_each_line_comes_once(stub: Any) -> None:
    t = 1_764_547_200_000  # milliseconds, as CloudWatch stamps events
    logs = stub("logs")
    logs.add_response("filter_log_events", {"events": [event("1", t, "a"), event("2", t + 5000, "b", host=2)]}, QUERY)
    # The next poll asks again for the minute before the newest line: host 1's "late" line, stamped before
    # host 2's "b" but delivered after it, is printed, and the lines already printed are not printed again.
    again = [event("1", t, "a"), event("3", t + 1000, "late"), event("2", t + 5000, "b", host=2)]
    logs.add_response(
        "filter_log_events", {"events": [*again, event("4", t + 6000, "d")]}, {**QUERY, "startTime": t + 5000 - LATE_MS}
    )
    out = io.StringIO()
    log = CloudWatchLog(Aws(), "/aws/sagemaker/TrainingJobs", "job/", out, show_hosts=True)

    log.print_new()
    log.print_new()

    assert out.getvalue().splitlines() == ["[algo-1] a", "[algo-2] b", "[algo-1] late", "[algo-1] d"]
    assert set(log.seen) == {"1", "2", "3", "4"}  # all inside the minute before the newest


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
