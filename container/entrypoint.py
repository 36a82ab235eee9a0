"""The image's ENTRYPOINT: `train`, `serve`, `metric-definitions`, or no argument at all.

SageMaker SDK v3 local mode runs a bring-your-own image with no command for training, so with no
argument we train when hyperparameters.json is there and serve otherwise.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Sequence
from types import FrameType

from container.paths import Paths

# Each command imports its package only when it runs: `serve` never loads the training code, nor `train`
# the server's, and a stop during those imports is already handled (exit_on_stop_until_handled).


def run_training(args: list[str]) -> int:
    from train.main import main

    return main(args)


def run_server(args: list[str]) -> int:
    from serve.main import main

    return main(args)


def print_metric_definitions(args: list[str]) -> int:
    from train.metric_definitions import main

    return main(args)


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "train": run_training,
    "serve": run_server,
    "metric-definitions": print_metric_definitions,
}
USAGE = "usage: IMAGE [train | serve | metric-definitions]"


def resolve_command(argv: Sequence[str], paths: Paths) -> tuple[str | None, list[str]]:
    if not argv:
        return ("train" if paths.hyperparameters_file.exists() else "serve"), []
    return (argv[0] if argv[0] in COMMANDS else None), list(argv[1:])


def _exit_now(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def exit_on_stop_until_handled() -> None:
    """Until the command installs its own handling (training checkpoints first, gunicorn drains), a stop
    means exit now. As PID 1 the process would otherwise ignore SIGTERM — the kernel sends PID 1 no
    signal it has no handler for — through the seconds torch takes to import, and SageMaker would
    SIGKILL it 120 s later."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _exit_now)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    command, rest = resolve_command(args, Paths.from_env(os.environ))
    if command is None:
        print(f"unknown command {args[0]!r}; {USAGE}", file=sys.stderr)
        return 2
    return COMMANDS[command](rest)


if __name__ == "__main__":
    exit_on_stop_until_handled()
    sys.exit(main())
