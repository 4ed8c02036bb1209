"""``advisor recommend``: the best model, quant, engine and settings for this machine (or a saved profile)."""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from advisor.cli._options import (
    Backend,
    BackendOpt,
    AssumeIdleOpt,
    ConcurrencyOpt,
    ContextOpt,
    JsonOpt,
    LicenseOpt,
    MaxSizeOpt,
    TaskOpt,
    model_name,
)

if TYPE_CHECKING:  # the planner and the plan load when a command runs, not when the CLI starts
    from advisor.plan import Plan
    from advisor.planner import Request
    from advisor.probe.profile import HardwareProfile


class Format(str, Enum):
    table = "table"
    json = "json"
    shell = "shell"
    systemd = "systemd"
    compose = "compose"
    k8s = "k8s"


def recommend(
    task: TaskOpt = "chat",
    context: ContextOpt = None,
    concurrency: ConcurrencyOpt = 1,
    backend: BackendOpt = Backend.auto,
    model: Annotated[str | None, typer.Option("--model", help="Catalog id, Hub repo or local .gguf.",
                                              parser=model_name)] = None,
    max_size: MaxSizeOpt = None,
    license: LicenseOpt = None,
    hardware: Annotated[list[Path] | None, typer.Option(
        "--hardware", help="A profile from 'advisor probe --json' instead of probing this machine; "
        "repeat it for a plan across machines (the first is the head).")] = None,
    hardware_dir: Annotated[Path | None, typer.Option(
        "--hardware-dir", help="Plan every *.json profile in this folder on its own: one JSON "
        "object per machine per line.")] = None,
    assume_idle: AssumeIdleOpt = False,
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
    from advisor.errors import BadInputError
    from advisor.planner import Request

    if concurrency < 1 or top < 1 or (context is not None and context < 1):
        raise BadInputError("--concurrency, --top and --context must be at least 1")
    request = Request(task=task, context=context, concurrency=concurrency, backend=backend.value, model=model,
                      max_size_bytes=int(max_size * 1e9) if max_size else None, license=license, top=top,
                      assume_idle=assume_idle)
    if json_output:
        fmt = Format.json
    if hardware_dir is not None:
        if hardware:
            raise BadInputError("give --hardware-dir or --hardware, not both")
        _fleet(hardware_dir, request)
    elif hardware and len(hardware) > 1:
        _cluster(hardware, request, why_not, fmt)
    else:
        _one(hardware[0] if hardware else None, request, why_not, fmt, engine_path, user)


def _fleet(directory: Path, request: Request) -> None:
    """One JSON line per profile of ``directory``, each planned on its own, as soon as it is planned."""
    from advisor.app.cluster import advise_fleet

    for line in advise_fleet(directory, request):
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()


def _one(path: Path | None, request: Request, why_not: str | None, fmt: Format, engine_path: str | None,
         user: str | None) -> None:
    """Plans for one machine: the saved profile at ``path``, else this one."""
    from advisor.app.advise import advise
    from advisor.app.advise import hardware as load_hardware
    from advisor.errors import NothingFitsError

    profile = load_hardware(path)
    advice = advise(profile, request, here=path is None)
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
    if fmt == Format.json:
        sys.stdout.write(json.dumps({"hardware": profile.to_dict(), "plans": [p.to_dict() for p in plans]},
                                    indent=2) + "\n")
    elif fmt == Format.table:
        _table(plans)
    else:
        sys.stdout.write(_deployment(profile, plans[0], fmt, engine_path, user))


def _deployment(profile: HardwareProfile, best: Plan, fmt: Format, engine_path: str | None, user: str | None) -> str:
    """The best plan as a shell command, a systemd unit, a compose service or Kubernetes objects."""
    from advisor.app.deploy import deploy_target
    from advisor.render import deploy as formats

    if fmt == Format.shell:
        return formats.shell(best)
    if fmt == Format.systemd:
        return formats.systemd(best, deploy_target(engine_path, user))
    if fmt == Format.compose:
        vendor = profile.gpus[0].vendor if profile.gpus else "none"
        jetson = formats.is_jetson([g.name for g in profile.gpus if g.vendor == "nvidia"], profile.arch)
        return formats.compose(best, vendor, deploy_target(), os_name=profile.os, jetson=jetson)
    from advisor.render import cluster as cluster_formats

    return cluster_formats.k8s(best)


def _cluster(paths: list[Path], request: Request, why_not: str | None, fmt: Format) -> None:
    """Plans across the machines of ``paths`` (the first is the head)."""
    from advisor.app.advise import load_profile
    from advisor.app.cluster import advise_cluster
    from advisor.errors import BadInputError
    from advisor.render import cluster as cluster_formats

    profiles = [load_profile(p) for p in paths]
    rec = advise_cluster(profiles, request)
    if why_not is not None:
        print("\n".join(rec.why_not(why_not) or [f"{why_not}: not considered (not in the catalog, or filtered out)"]))
        return
    for note in rec.notes:
        print(f"note: {note}", file=sys.stderr)
    best = rec.best()  # raises NothingFitsError naming the closest candidate
    if fmt == Format.json:
        sys.stdout.write(json.dumps({"hardware": [p.to_dict() for p in profiles],
                                     "plans": [p.to_dict() for p in rec.plans]}, indent=2) + "\n")
    elif fmt == Format.shell:
        sys.stdout.write(cluster_formats.shell(best))
    elif fmt == Format.k8s:
        sys.stdout.write(cluster_formats.k8s(best))
    elif fmt == Format.table:
        _table(rec.plans)
    else:
        raise BadInputError(f"--format {fmt.value} describes one machine; for several use shell, k8s or json")


def _table(plans: list[Plan]) -> None:
    from advisor.render.plans import table
    from advisor.render.text import printable  # reasons name files: never a terminal escape

    sys.stdout.write(table(plans))
    for line in plans[0].reasons:
        print(f"why: {printable(line, 100_000)}", file=sys.stderr)
