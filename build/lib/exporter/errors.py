"""Typed errors; the CLI maps them to exit codes (2 bad input, 1 a check failed)."""

from __future__ import annotations


class UserError(Exception):
    """Bad usage or bad input: exit code 2 and one line naming the file and the problem."""

    exit_code = 2


class CheckFailed(Exception):
    """A check ran and failed (drift over budget): exit code 1.

    ``measured`` carries what the check measured (an export's ``(name, precision, ValidationResult)``), so
    that a caller can show the numbers that failed.
    """

    exit_code = 1

    def __init__(self, message: str, measured: object = None) -> None:
        super().__init__(message)
        self.measured = measured
