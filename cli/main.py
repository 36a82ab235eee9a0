"""`optml COMMAND ...`: one module per command, each adding its own subparser (with examples) and its `run`.
Command modules import boto3 and the docker SDK inside their functions, so `optml --help` stays fast.

A problem the user can fix is a CliError: one line on stderr naming what to change, exit code 2, no traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from types import ModuleType

from optml.cli import build, deploy, evaluate, push, register, runs, train, transform, tune
from optml.cli.errors import CliError

# The commands, in the order `optml --help` lists them: each module defines add_parser(subparsers).
COMMANDS: tuple[ModuleType, ...] = (build, push, train, tune, runs, deploy, transform, evaluate, register)

# Errors of the Docker engine and its connection (an engine gone mid-build, a registry timing out mid-push) that
# reach the top: the environment failed, not optml, so one line rather than a traceback.
ENVIRONMENT_ERRORS = frozenset({"docker.errors", "requests.exceptions", "urllib3.exceptions"})

DESCRIPTION = """\
Take the optml image somewhere: build it, push it to ECR, run training and tuning jobs, endpoints, batch
transform and evaluation (a Processing job) in AWS, register a model version in the Model Registry, or train,
tune, deploy and transform locally.
`optml COMMAND --help` shows each command's options and examples; every command that calls AWS takes
--dry-run, which prints the exact requests and calls nothing."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="optml", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.run(args)
    except CliError as error:
        print(f"optml: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("optml: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if type(error).__module__ not in ENVIRONMENT_ERRORS:
            raise  # a bug of ours: the traceback is what a report needs
        print(f"optml: error: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    return result
