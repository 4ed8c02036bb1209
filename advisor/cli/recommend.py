"""``advisor recommend``: the best model, quant, engine and settings for this machine (or a saved profile)."""

from __future__ import annotations

import json
import sys
from enum import Enum
from typing import Annotated

import typer

from advisor.cli._options import (
    Backend,
    BackendOpt,
    ConcurrencyOpt,
    ContextOpt,
    HardwareOpt,
    JsonOpt,
    LicenseOpt,
    MaxSizeOpt,
    TaskOpt,
    model_name,
)


class Format(str, Enum):
    table = "table"
    json = "json"
    shell = "shell"
    systemd = "systemd"
    compose = "compose"


def recommend(
    task: TaskOpt = "chat",
    context: ContextOpt = None,
    concurrency: ConcurrencyOpt = 1,
    backend: BackendOpt = Backend.auto,
    model: Annotated[str | None, typer.Option("--model", help="Catalog id, Hub repo or local .gguf.",
                                              parser=model_name)] = None,
    max_size: MaxSizeOpt = None,
    license: LicenseOpt = None,
    hardware: HardwareOpt = None,
    top: Annotated[int, typer.Option("--top", help="How many plans to show.")] = 5,
    json_output: JsonOpt = False,
    why_not: Annotated[str | None, typer.Option("--why-not", help="Explain why a model was not chosen.")] = None,
    fmt: Annotated[Format, typer.Option("--format")] = Format.table,
    user: Annotated[str | None, typer.Option("--user", help="systemd: the account the service runs as.")] = None,
    engine_path: Annotated[str | None, typer.Option(
        "--engine-path", help="systemd: the engine's executable (default: the plan's engine: llama-server on PATH "
        "or the build 'advisor setup' installed).")] = None,
) -> None:
    """Recommend models with their quantization, engine and settings, best first."""
    from advisor.app.advise import advise
    from advisor.app.advise import hardware as load_hardware
    from advisor.errors import BadInputError, NothingFitsError
    from advisor.planner import Request

    if concurrency < 1 or top < 1 or (context is not None and context < 1):
        raise BadInputError("--concurrency, --top and --context must be at least 1")
    profile = load_hardware(hardware)
    request = Request(task=task, context=context, concurrency=concurrency, backend=backend.value, model=model,
                      max_size_bytes=int(max_size * 1e9) if max_size else None, license=license, top=top)
    advice = advise(profile, request, here=hardware is None)
    plans, rec = advice.plans, advice.recommendation
    if why_not is not None:
        lines = rec.why_not(why_not) if rec else []
        print("\n".join(lines or [f"{why_not}: not considered (not in the catalog, or filtered out)"]))
        return
    for note in (rec.notes if rec else []):
        print(f"note: {note}", file=sys.stderr)
    if not plans:
        assert rec is not None
        rec.best()  # raises NothingFitsError naming the closest candidate
        raise NothingFitsError("nothing fits")  # pragma: no cover
    if json_output or fmt == Format.json:
        sys.stdout.write(json.dumps({"hardware": profile.to_dict(), "plans": [p.to_dict() for p in plans]},
                                    indent=2) + "\n")
        return
    from advisor.app.deploy import deploy_target
    from advisor.render import deploy as formats
    best = plans[0]
    vendor = profile.gpus[0].vendor if profile.gpus else "none"
    if fmt == Format.shell:
        sys.stdout.write(formats.shell(best))
    elif fmt == Format.systemd:
        sys.stdout.write(formats.systemd(best, deploy_target(engine_path, user)))
    elif fmt == Format.compose:
        jetson = formats.is_jetson([g.name for g in profile.gpus if g.vendor == "nvidia"], profile.arch)
        sys.stdout.write(formats.compose(best, vendor, deploy_target(),
                                         os_name=profile.os, jetson=jetson))
    else:
        _table(plans)


def _table(plans) -> None:  # type: ignore[no-untyped-def]
    from advisor.render.plans import table
    from advisor.render.text import printable  # reasons name files: never a terminal escape

    sys.stdout.write(table(plans))
    for line in plans[0].reasons:
        print(f"why: {printable(line, 100_000)}", file=sys.stderr)
