"""--wait: follow a training job, an endpoint, a transform or a processing job in AWS until it settles, printing
each status change as it comes (and a training job's log lines from CloudWatch).

There is no deadline here: the job has its own (--max-run, --max-wait), and Ctrl-C stops only the following,
never the job. `sleep` is a parameter so that tests follow a whole job without waiting.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from optml.cli.aws import Aws
from optml.cli.errors import CliError

POLL_SECONDS = 15.0
TRAINING_LOG_GROUP = "/aws/sagemaker/TrainingJobs"
JOB_DONE = ("Completed", "Failed", "Stopped")  # the ends of every SageMaker job: training, transform, processing
ENDPOINT_DONE = ("InService", "Failed")  # the ends of a CreateEndpoint

Sleep = Callable[[float], None]


def poll(
    describe: Callable[[], dict[str, Any]],
    done: Callable[[dict[str, Any]], bool],
    show: Callable[[dict[str, Any]], None],
    sleep: Sleep,
    interval: float,
) -> dict[str, Any]:
    """Describe, show, and again after `interval` seconds, until `done`; the last answer."""
    while True:
        answer = describe()
        show(answer)
        if done(answer):
            return answer
        sleep(interval)


def status(
    aws: Aws,
    operation: str,
    name: dict[str, str],
    status_key: str,
    done: tuple[str, ...],
    out: TextIO,
    sleep: Sleep = time.sleep,
    interval: float = POLL_SECONDS,
) -> dict[str, Any]:
    """Follow an endpoint (DescribeEndpoint), a transform job (DescribeTransformJob) or a processing job
    (DescribeProcessingJob): one line per status."""
    shown: list[str] = []

    def show(answer: dict[str, Any]) -> None:
        if not shown or shown[-1] != answer[status_key]:
            shown.append(answer[status_key])
            print(f"{status_key}: {answer[status_key]}", file=out, flush=True)

    return poll(
        lambda: aws.call("sagemaker", operation, **name), lambda a: a[status_key] in done, show, sleep, interval
    )


def succeeded(
    aws: Aws,
    what: str,
    operation: str,
    name: dict[str, str],
    status_key: str,
    done: tuple[str, ...],
    out: TextIO,
    reasons: tuple[str, ...] = ("FailureReason",),
    **follow_options: Any,
) -> dict[str, Any] | None:
    """`status` until the end: the last answer when it is `done[0]` (Completed, InService); otherwise None, after
    a line on stderr with the status and the answer's `reasons` (`optml: transform job NAME Failed: ...`)."""
    answer = status(aws, operation, name, status_key, done, out, **follow_options)
    if answer[status_key] == done[0]:
        return answer
    reason = "; ".join(str(answer[key]) for key in reasons if answer.get(key))
    print(f"optml: {what} {next(iter(name.values()))} {answer[status_key]}: {reason}", file=sys.stderr)
    return None


def training_job(
    aws: Aws, name: str, hosts: int, out: TextIO, sleep: Sleep = time.sleep, interval: float = POLL_SECONDS
) -> dict[str, Any]:
    """Follow a training job: its secondary status changes (Starting, Downloading, Training, ...) with their
    messages, and its containers' log lines, until it has Completed, Failed or Stopped."""
    log = CloudWatchLog(aws, TRAINING_LOG_GROUP, f"{name}/", out, show_hosts=hosts > 1)
    transitions_shown = 0

    def show(job: dict[str, Any]) -> None:
        nonlocal transitions_shown
        transitions = job.get("SecondaryStatusTransitions", [])
        new = transitions[transitions_shown:]
        transitions_shown = len(transitions)
        # Log streams exist once a container has started, i.e. from status Training on.
        started = any(transition["Status"] == "Training" for transition in transitions)
        done = job["TrainingJobStatus"] in JOB_DONE
        if started and done:
            log.print_new()  # the last lines before the final status
        for transition in new:
            message = transition.get("StatusMessage")
            print(f"{transition['Status']}: {message}" if message else transition["Status"], file=out, flush=True)
        if started and not done:
            log.print_new()

    def describe() -> dict[str, Any]:
        return aws.call("sagemaker", "DescribeTrainingJob", TrainingJobName=name)

    return poll(describe, lambda job: job["TrainingJobStatus"] in JOB_DONE, show, sleep, interval)


LATE_MS = 60_000  # how late a host's line may reach CloudWatch and still be printed


class CloudWatchLog:
    """The lines of a job's log streams (one per host) that have not been printed yet."""

    def __init__(self, aws: Aws, group: str, stream_prefix: str, out: TextIO, show_hosts: bool = False) -> None:
        self.aws = aws
        self.group = group
        self.stream_prefix = stream_prefix
        self.out = out
        self.show_hosts = show_hosts
        # Each poll asks again for the last LATE_MS before the newest event seen: with several hosts, a line can
        # reach CloudWatch after newer lines of another host. Events are told apart by their id.
        self.newest = 0
        self.seen: dict[str, int] = {}  # eventId -> timestamp, for the events inside that window

    def print_new(self) -> None:
        token: str | None = None
        while True:
            params: dict[str, Any] = {
                "logGroupName": self.group,
                "logStreamNamePrefix": self.stream_prefix,
                "startTime": max(self.newest - LATE_MS, 0),
            }
            if token:
                params["nextToken"] = token
            try:
                page = self.aws.call("logs", "FilterLogEvents", **params)
            except CliError as error:
                if "ResourceNotFoundException" in str(error):  # an account's first job: the group comes soon
                    return
                raise
            for event in page.get("events", []):
                self._print(event)
            token = page.get("nextToken")
            if not token:
                break
        self.seen = {event: at for event, at in self.seen.items() if at >= self.newest - LATE_MS}

    def _print(self, event: dict[str, Any]) -> None:
        if event["eventId"] in self.seen:
            return
        self.seen[event["eventId"]] = event["timestamp"]
        self.newest = max(self.newest, event["timestamp"])
        message = event["message"].rstrip("\n")
        if self.show_hosts:  # streams are named <job>/algo-<n>-<epoch seconds>
            host = "-".join(event["logStreamName"].removeprefix(self.stream_prefix).split("-")[:2])
            message = f"[{host}] {message}"
        print(message, file=self.out, flush=True)
