"""advisor's error family. Only these become one-line messages; anything else is a bug and says so.

Exit codes (documented in the README): 0 ok, 1 internal error, 2 bad input or usage, 3 nothing fits,
4 download failed, 5 engine failed to start, 6 check failed.
"""

from __future__ import annotations


class AdvisorError(Exception):
    """An error the user can act on: ``message`` says what went wrong, ``hint`` what to do next."""

    exit_code = 2
    hint: str | None = None

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if hint is not None:
            self.hint = hint


class BadInputError(AdvisorError):
    """A file, option or reference given by the user cannot be used."""


class HardwareFileError(BadInputError):
    hint = "write a fresh profile with 'advisor probe --json > FILE'"


class ProbeError(AdvisorError):
    """The machine could not be described at all (a single missing driver is only a note in the profile)."""

    exit_code = 1
