"""User-facing errors: one clear line, no traceback.

Anything the user can fix (a missing file, a bad column, an unknown config name) raises
`UserInputError`; the command-line entry points print its message on one line and exit 2.
Programming errors keep their tracebacks.
"""

from __future__ import annotations


class UserInputError(Exception):
    """An input problem the user can fix; the message is the whole story."""


def bad_input(file: object, problem: str, fix: str, column: str | None = None) -> UserInputError:
    """Build the standard one-line message: where, what, how to fix."""
    where = f"{file}" + (f", column '{column}'" if column else "")
    return UserInputError(f"{where}: {problem}. Fix: {fix}")


class NumericalFault(Exception):
    """Training produced a NaN / inf loss; the message names the step and the last good checkpoint."""
