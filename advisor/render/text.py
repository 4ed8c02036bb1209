"""Untrusted text (model ids and names from GGUF metadata, file names) made safe to show in a terminal."""

from __future__ import annotations


def printable(text: str, limit: int = 200) -> str:
    """``text`` for plain output: control and format characters (ESC starts a terminal escape sequence) as
    ``\\xNN`` / ``\\uNNNN``, at most ``limit`` characters."""
    out = []
    for c in text[:limit]:
        if c.isprintable() or c == " ":
            out.append(c)
        else:
            out.append(f"\\x{ord(c):02x}" if ord(c) <= 0xFF else f"\\u{ord(c):04x}")
    return "".join(out) + ("..." if len(text) > limit else "")


def shown(text: str, limit: int = 200) -> str:
    """``text`` for a rich cell or title: ``printable``, with rich markup escaped."""
    from rich.markup import escape

    return escape(printable(text, limit))
