"""``advisor setup``: install the engine build that fits this machine (or print the commands with --dry-run)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from advisor.cli._options import Backend, BackendOpt, HardwareOpt, JsonOpt
from advisor.errors import BadInputError

DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Print the exact commands; install nothing.")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Install without asking.")]
VenvOpt = Annotated[
    Path | None,
    typer.Option("--venv", help="Managed virtualenv to install into (default: $ADVISOR_ENGINES_DIR/<engine>, "
                 "else <advisor state dir>/engines/<engine>).", file_okay=False),
]  # fmt: skip
PythonOpt = Annotated[
    str | None,
    typer.Option("--python", help="Interpreter that creates the virtualenv (default: the one running advisor)."),
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Install even when an engine that fits is already there.")]
ConverterOpt = Annotated[bool, typer.Option("--converter", help="Install llama.cpp's Hugging Face -> GGUF converter "
                         "(of the installed engine's llama.cpp version) for 'advisor quantize', instead of an engine.")]


def _err(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def setup(
    backend: BackendOpt = Backend.auto,
    dry_run: DryRunOpt = False,
    yes: YesOpt = False,
    json_output: JsonOpt = False,
    hardware: HardwareOpt = None,
    venv: VenvOpt = None,
    python: PythonOpt = None,
    force: ForceOpt = False,
    converter: ConverterOpt = False,
) -> None:
    """Install the engine build that fits the hardware, in a virtualenv advisor manages, and verify it.

    llama-cpp-python is compiled for the GPUs found (CUDA with their compute capabilities, ROCm with their gfx
    targets, Metal, Vulkan, SYCL) or for the CPU; vLLM gets its CUDA, ROCm or CPU build. What already fits is kept;
    only the managed virtualenv is ever changed. After installing, a tiny generated model is loaded with every
    layer offloaded and llama.cpp's own log must show the layers on the GPU.
    """
    if converter:
        return _converter(dry_run, yes, json_output, venv, python, force)
    # auto installs llama.cpp: it has a build for every profile (CUDA, ROCm, Metal, Vulkan, SYCL, CPU), while vLLM is
    # Linux-only; `advisor run --auto --setup` passes the backend its plan chose instead.
    chosen = "llama.cpp" if backend == Backend.auto else backend.value
    if hardware is not None:
        from advisor.app.advise import load_profile

        profile = load_profile(hardware)
    else:
        from advisor.probe import probe as run_probe

        profile = run_probe()
    from advisor.setup.install import build_plan, run_setup

    plan = build_plan(profile, chosen, venv=venv, base_python=python, force=force)
    if dry_run:
        if json_output:
            sys.stdout.write(json.dumps({"dry_run": True, **plan.to_dict()}, indent=2) + "\n")
        else:
            sys.stdout.write(plan.script())
        return
    if plan.keep is None and not yes:
        if not sys.stdin.isatty():
            raise BadInputError("setup installs software and nobody can be asked here",
                                hint="add --yes to install, or --dry-run to see the commands")  # fmt: skip
        sys.stderr.write(plan.script())
        if not typer.confirm(f"Install {chosen} ({plan.build} build) into {plan.venv}?", err=True):
            raise typer.Exit(1)
    result = run_setup(plan, say=_err)
    if json_output:
        sys.stdout.write(json.dumps(result.to_dict(), indent=2) + "\n")
        return
    verification = result.verification
    where = (verification and plan.keep and plan.keep.python) or (plan.python if plan.keep is None else None)
    line = f"{chosen}: {result.status} ({plan.build} build)"
    if where:
        line += f", python {where}"
    if verification is not None:
        line += f"; {verification.summary}"
    sys.stdout.write(line + "\n")


def _converter(dry_run: bool, yes: bool, json_output: bool, venv: Path | None, python: str | None,
               force: bool) -> None:  # fmt: skip
    import os

    from advisor.setup import converter as conv
    from advisor.setup.runner import SubprocessRunner

    env = dict(os.environ)
    env_venv = venv or conv.default_venv(env)
    version = conv.resolve_version(env, SubprocessRunner(env))
    plan = conv.plan_converter(version, env_venv, env, python, force)
    if dry_run:
        sys.stdout.write(json.dumps({"dry_run": True, **plan.to_dict()}, indent=2) + "\n" if json_output
                         else plan.script())
        return
    if (plan.steps or plan.fetch_source) and not yes:
        if not sys.stdin.isatty():
            raise BadInputError("setup installs software and nobody can be asked here",
                                hint="add --yes to install, or --dry-run to see the commands")  # fmt: skip
        sys.stderr.write(plan.script())
        if not typer.confirm(f"Install llama.cpp's converter ({version}) into {env_venv}?", err=True):
            raise typer.Exit(1)
    found = conv.ensure_converter(venv=env_venv, base_python=python, force=force, say=_err, version=version)
    if json_output:
        sys.stdout.write(json.dumps({"converter": True, "version": found.version, "python": found.python,
                                     "root": str(found.root), "script": str(found.script)}, indent=2) + "\n")
        return
    sys.stdout.write(f"converter: llama.cpp of llama-cpp-python {found.version}, python {found.python}\n")
