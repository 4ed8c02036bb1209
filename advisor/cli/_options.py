"""Options shared by several commands, as reusable Annotated types, and the parsers that check their values.

A parser raises BadInputError (one line, exit 2) for a value no command can use: NaN, infinity or a negative
number where a size or a duration is meant, an empty or malformed host, an unknown task.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from advisor.errors import BadInputError


def number(option: str, low: float = 0.0, *, strict: bool = True, high: float = math.inf) -> Callable[[str], float]:
    """A parser for a finite number above ``low`` (or at least ``low`` when ``strict`` is False), at most ``high``."""

    def parse(text: str | float) -> float:
        try:
            value = float(text)
        except (TypeError, ValueError):
            raise BadInputError(f"{option} takes a number, not {str(text)[:40]!r}") from None
        if not math.isfinite(value) or value < low or (strict and value == low) or value > high:
            bound = f"more than {low:g}" if strict else f"at least {low:g}"
            top = f" and at most {high:g}" if math.isfinite(high) else ""
            raise BadInputError(f"{option} must be a finite number {bound}{top}, not {str(text)[:40]!r}")
        return value

    return parse


#: RFC 1123 host names: dot-separated labels of letters, digits and hyphens, at most 253 characters.
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def host(text: str) -> str:
    """An address to listen on: an IPv4 or IPv6 literal, or a host name. An empty value is refused (engines read
    it as "all interfaces" while advisor would report 127.0.0.1)."""
    value = text.strip()
    if not value:
        raise BadInputError("--host is empty: give an address such as 127.0.0.1 (or 0.0.0.0 for every interface)")
    try:
        return str(ipaddress.ip_address(value.strip("[]")))
    except ValueError:
        pass
    if len(value) <= 253 and all(_LABEL.fullmatch(label) for label in value.rstrip(".").split(".")):
        return value
    raise BadInputError(f"--host {text[:60]!r} is neither an IP address nor a host name")


#: Linux's PATH_MAX and NAME_MAX (limits.h): a longer path or path component cannot name a file.
PATH_MAX, NAME_MAX = 4096, 255


def model_name(text: str) -> str:
    """A model as given on the command line (a path, a catalog id or a Hub reference): refused when no file or
    repository could have that name (the operating system would answer ENAMETOOLONG), or when it holds control
    characters."""
    if not text:
        raise BadInputError("the model name is empty")
    if len(text) > PATH_MAX or any(len(part.encode()) > NAME_MAX for part in text.split("/")):
        raise BadInputError(f"the model name {text[:40]!r}... ({len(text)} characters) is too long for a file "
                            f"(at most {PATH_MAX}, {NAME_MAX} per path component) or a Hub repository")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise BadInputError(f"the model name {text[:60]!r} holds control characters")
    return text


def task(text: str) -> str:
    """One of the catalog's tasks (advisor.catalog.model.Task)."""
    import typing

    from advisor.catalog.model import Task

    known = typing.get_args(Task)
    if text not in known:
        raise BadInputError(f"--task {text[:40]!r} is not one of {', '.join(known)}")
    return text


class Backend(str, Enum):
    """The engine family: llama.cpp (llama-server, llama-cpp-python) or vLLM; auto lets the rules choose."""

    auto = "auto"
    llama_cpp = "llama.cpp"
    vllm = "vllm"


BackendOpt = Annotated[
    Backend,
    typer.Option("--backend", help="Engine family: llama.cpp or vllm; auto: the plan's (recommend, run) or llama.cpp, "
                 "which has a build for every machine (setup)."),
]

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout instead of a table.")]
HardwareOpt = Annotated[
    Path | None,
    typer.Option(
        "--hardware",
        help="Use a hardware profile written by 'advisor probe --json' instead of probing this machine.",
    ),
]

# What the user wants from a model: shared by `recommend` and `run --auto`.
TaskOpt = Annotated[str, typer.Option("--task", help="What the model is for: code, chat, reasoning, ...",
                                      parser=task)]
ContextOpt = Annotated[int | None, typer.Option("--context", help="Context tokens per sequence.")]
ConcurrencyOpt = Annotated[int, typer.Option("--concurrency", help="Users served at once.")]
#: --max-size: at least one byte, at most 1 PB (far above any model file).
MaxSizeOpt = Annotated[float | None, typer.Option("--max-size", help="Largest model file, GB.",
                                                  parser=number("--max-size", 1e-9, strict=False, high=1e6))]
LicenseOpt = Annotated[str | None, typer.Option("--license", help="The licence must contain this text.")]
HostOpt = Annotated[str, typer.Option("--host", help="Address to listen on.", parser=host)]
TimeoutOpt = Annotated[float | None, typer.Option("--timeout", help="Seconds to wait for readiness.",
                                                  parser=number("--timeout", high=1e7))]
