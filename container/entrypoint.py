"""The image's ENTRYPOINT: `train`, `serve`, `metric-definitions`, or no argument at all.

SageMaker SDK v3 local mode runs a bring-your-own image with no command for training, so with no
argument we train when hyperparameters.json is there and serve otherwise.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence

from container.paths import Paths

COMMANDS = {
    "train": "train.main",
    "serve": "serve.main",
    "metric-definitions": "train.metric_definitions",
}
USAGE = "usage: IMAGE [train | serve | metric-definitions]"


def resolve_command(argv: Sequence[str], paths: Paths) -> tuple[str | None, list[str]]:
    if not argv:
        return ("train" if paths.hyperparameters_file.exists() else "serve"), []
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
    module = importlib.import_module(COMMANDS[command])
    result: int = module.main(rest)
    return result


if __name__ == "__main__":
    sys.exit(main())
