"""`serve`: check the settings, then replace this process with gunicorn (serve/run.py) so signals reach it
directly."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from optml.container.healthcheck import SERVER_APP
from optml.container.logs import configure_logging
from optml.serve.settings import ServerSettings, SettingsError


def gunicorn_command(extra: Sequence[str] = ()) -> list[str]:
    return [
        sys.executable,
        "-m",
        "optml.serve.run",  # gunicorn, with a stop handled from the start
        "--config",
        "python:optml.serve.gunicorn_conf",
        *extra,
        SERVER_APP,  # the health check recognises the server by it
    ]


def main(argv: Sequence[str] | None = None) -> int:
    configure_logging()
    try:
        ServerSettings.from_env(os.environ)
    except SettingsError as error:
        print(f"serve: cannot start: {error}", file=sys.stderr)
        return 2
    command = gunicorn_command(list(argv or ()))
    os.execv(command[0], command)
    return 0  # not reached
