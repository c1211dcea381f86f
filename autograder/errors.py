"""Errors the command line turns into a one-line message and an exit code."""


class UsageError(Exception):
    """Bad input from the person running a command: wrong name, missing folder."""

    exit_code = 2
