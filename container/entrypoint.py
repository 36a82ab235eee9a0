"""The image's ENTRYPOINT: `train`, `serve`, `evaluate`, `metric-definitions`, or no argument at all.

SageMaker SDK v3 local mode runs a bring-your-own image with no command for training, and a Processing job
started without ContainerArguments has none either, so with no argument we train when hyperparameters.json
is there, evaluate when processingjobconfig.json is (SageMaker writes it for Processing jobs only), and
serve otherwise.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

from optml.container.paths import Paths
from optml.container.signals import exit_on_stop_until_handled

# Each command imports its package only when it runs: `serve` never loads the training code, nor `train`
# the server's, and a stop during those imports is already handled (exit_on_stop_until_handled).


def run_training(args: list[str]) -> int:
    """The user's own code when the job names an entry point (script mode), else the built-in trainer."""
    from optml.train.script.job import requested

    if requested(Paths.from_env(os.environ), os.environ):
        from optml.train.script.main import main as run_script

        return run_script(args)
    from optml.train.main import main

    return main(args)


def run_server(args: list[str]) -> int:
    from optml.serve.main import main

    return main(args)


def run_evaluation(args: list[str]) -> int:
    from optml.train.evaluate import main

    return main(args)


def print_metric_definitions(args: list[str]) -> int:
    from optml.train.metric_definitions import main

    return main(args)


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "train": run_training,
    "serve": run_server,
    "evaluate": run_evaluation,
    "metric-definitions": print_metric_definitions,
}
USAGE = "usage: IMAGE [train | serve | evaluate | metric-definitions]; IMAGE evaluate --help lists its arguments"


def resolve_command(argv: Sequence[str], paths: Paths) -> tuple[str | None, list[str]]:
    if not argv:
        if paths.hyperparameters_file.exists():
            return "train", []
        return ("evaluate" if paths.processing_job_config_file.exists() else "serve"), []
    return (argv[0] if argv[0] in COMMANDS else None), list(argv[1:])


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
