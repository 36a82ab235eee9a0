"""`optml tune --local`: the search run on this machine with optuna, each trial a container of the image."""

from __future__ import annotations

import argparse

from optml.cli import search
from optml.cli.errors import CliError
from optml.cli.train import Channel


def run(args: argparse.Namespace, checked: search.Search, channels: tuple[Channel, ...]) -> int:
    raise CliError("optml tune --local: not finished yet")
