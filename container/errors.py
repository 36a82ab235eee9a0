"""Errors whose message is written for the person who started the job."""

from __future__ import annotations


class UserError(Exception):
    """Something the user can fix: bad hyperparameters, missing channel, unreadable data.

    The message goes verbatim to /opt/ml/output/failure (SageMaker's FailureReason), so it names the
    thing that is wrong and what was expected, and carries no traceback.
    """
