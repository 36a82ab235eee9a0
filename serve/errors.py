"""The one exception type for client mistakes; app.py turns it into the one JSON error shape."""

from __future__ import annotations


class RequestError(Exception):
    """A client mistake: answered with `status` and a JSON body naming what was wrong."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message


def bad_request(message: str) -> RequestError:
    return RequestError(400, "bad_request", message)
