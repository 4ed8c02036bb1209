"""Options shared by several commands, as reusable Annotated types."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout instead of a table.")]
HardwareOpt = Annotated[
    Path | None,
    typer.Option(
        "--hardware",
        help="Use a hardware profile written by 'advisor probe --json' instead of probing this machine.",
        dir_okay=False,
    ),
]
