"""Untrusted text (model ids and names from GGUF metadata, file names) made safe to show in a terminal through rich."""

from __future__ import annotations


def shown(text: str, limit: int = 200) -> str:
    """``text`` for a rich cell or title: control and format characters (ESC starts a terminal escape sequence)
    as ``\\xNN`` / ``\\uNNNN``, rich markup escaped, at most ``limit`` characters."""
    from rich.markup import escape

    out = []
    for c in text[:limit]:
        if c.isprintable() or c == " ":
            out.append(c)
        else:
            out.append(f"\\x{ord(c):02x}" if ord(c) <= 0xFF else f"\\u{ord(c):04x}")
    return escape("".join(out) + ("..." if len(text) > limit else ""))
