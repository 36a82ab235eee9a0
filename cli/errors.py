"""The one error the command reports to the user: what is wrong and what to do, no traceback."""

from __future__ import annotations


class CliError(Exception):
    """A problem the user can fix, found before any work (or any AWS call) where it can be."""
