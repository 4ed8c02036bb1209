"""One handler that turns errors into one line on stderr and an exit code (traceback only with ADVISOR_DEBUG=1)."""

from __future__ import annotations

import sys

from advisor import settings
from advisor.errors import AdvisorError


def format_error(exc: BaseException) -> tuple[str, int]:
    """The line the user sees for ``exc``, and the exit code."""
    if isinstance(exc, AdvisorError):
        line = f"advisor: error: {exc.message}"
        if exc.hint:
            line += f" ({exc.hint})"
        return line, exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        return "advisor: interrupted", 130
    if isinstance(exc, BrokenPipeError):
        return "", 0  # `advisor probe --json | head` closed our stdout: nothing to report
    name = type(exc).__name__
    return (
        f"advisor: internal error: {name}: {exc} (this is a bug: rerun with {settings.DEBUG}=1 for the traceback "
        "and report it)",
        1,
    )


def handle(exc: BaseException) -> int:
    if settings.debug():
        raise exc
    line, code = format_error(exc)
    if line:
        print(line, file=sys.stderr)
    return code
