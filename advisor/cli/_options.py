"""Options shared by several commands, as reusable Annotated types."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer


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
        dir_okay=False,
    ),
]

# What the user wants from a model: shared by `recommend` and `run --auto`.
TaskOpt = Annotated[str, typer.Option("--task", help="What the model is for: code, chat, reasoning, ...")]
ContextOpt = Annotated[int | None, typer.Option("--context", help="Context tokens per sequence.")]
ConcurrencyOpt = Annotated[int, typer.Option("--concurrency", help="Users served at once.")]
MaxSizeOpt = Annotated[float | None, typer.Option("--max-size", help="Largest model file, GB.")]
LicenseOpt = Annotated[str | None, typer.Option("--license", help="The licence must contain this text.")]
