"""``advisor setup``: install the engine build that fits the hardware, in a virtualenv advisor manages, verified.

Public surface for other commands:
- ``engine_python(kind)``: the interpreter setup installed (or kept) for llama.cpp or vLLM, or None;
- ``check_engine(profile, backend)``: whether an installed engine fits this profile, and the command that fixes it
  when not (``advisor run --auto`` stops with that line, or runs setup first with ``--setup``);
- ``ensure_engine(profile, backend)``: plan, install, verify and record in one call (what ``run --setup`` does).

Modules: plan.py (pure: profile -> commands), installed.py (what is installed), runner.py (the one subprocess seam),
verify.py (tiny generated model, llama.cpp's own load log), install.py (the sequence), record.py (engines.json).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from advisor.probe.profile import HardwareProfile
from advisor.setup.builds import BACKENDS, LLAMA_CPP, VLLM, Unsupported, runtime_fits, target_for
from advisor.setup.record import canonical, engine_python

__all__ = ["BACKENDS", "LLAMA_CPP", "VLLM", "EngineStatus", "check_engine", "engine_python", "ensure_engine",
           "fix_command"]  # fmt: skip


@dataclass(frozen=True)
class EngineStatus:
    ok: bool
    reason: str
    #: The command that makes it fit, None when ``ok``.
    fix_command: str | None = None


def fix_command(backend: str) -> str:
    return f"advisor setup --backend {canonical(backend)} --yes"


def check_engine(profile: HardwareProfile, backend: str, env: Mapping[str, str] | None = None) -> EngineStatus:
    """Whether an installed engine for ``backend`` fits ``profile``; cheap (no subprocess, no import of an engine).

    Looked at in order: what ``advisor setup`` recorded (verified, interpreter still there), llama-server on PATH and
    the packages in this Python (from the profile's runtimes), ADVISOR_VLLM_PYTHON. A CPU-only llama.cpp on a profile
    with a GPU does not fit: it would silently ignore n_gpu_layers.
    """
    from advisor.probe.profile import Runtime
    from advisor.setup import record

    env = os.environ if env is None else env
    backend = canonical(backend)
    fix = fix_command(backend)
    try:
        target = target_for(profile, backend)
    except Unsupported as exc:
        return EngineStatus(False, str(exc), None)
    unfit: list[str] = []
    entry = record.entry(backend, env)
    if entry:
        recorded = Runtime(installed=True, version=entry.get("version"), backends=list(entry.get("backends") or []),
                           gpu_offload=entry.get("gpu_offload"))  # fmt: skip
        fits, why = runtime_fits(recorded, target)
        python = entry.get("python")
        where = f"the engine advisor setup recorded ({python or 'llama-server on PATH'})"
        if not entry.get("verified"):
            unfit.append(f"{where} failed verification: {entry.get('summary') or 'unknown reason'}")
        elif python and not os.path.exists(python):
            unfit.append(f"{where} is gone")
        elif fits:
            return EngineStatus(True, f"{where}: {entry.get('build')} build, {why}")
        else:
            unfit.append(f"{where}: {entry.get('build')} build, {why}")
    rt = profile.runtimes
    candidates = [("llama-server on PATH", rt.llama_server), ("llama-cpp-python in this Python", rt.llama_cpp_python)]
    if backend == VLLM:
        candidates = [("vLLM in this Python", rt.vllm)]
    for where, runtime in candidates:
        if not runtime.installed:
            continue
        fits, why = runtime_fits(runtime, target)
        if fits:
            return EngineStatus(True, f"{where}: {why}")
        unfit.append(f"{where}: {why}")
    if backend == VLLM and env.get("ADVISOR_VLLM_PYTHON"):
        return EngineStatus(True, f"ADVISOR_VLLM_PYTHON names {env['ADVISOR_VLLM_PYTHON']} (not checked)")
    if not unfit:
        return EngineStatus(False, f"no {backend} engine is installed; this machine needs the {target.build} build "
                                   f"({target.summary})", fix)  # fmt: skip
    return EngineStatus(False, "; ".join(unfit) + f"; this machine needs the {target.build} build", fix)


def ensure_engine(
    profile: HardwareProfile,
    backend: str,
    env: Mapping[str, str] | None = None,
    say: Callable[[str], None] = lambda line: None,
):
    """Install, verify and record the engine that fits (``advisor run --auto --setup``); returns the SetupResult.
    Raises EngineUnsupportedError, EngineSetupError or EngineVerifyError."""
    from advisor.setup.install import build_plan, run_setup

    plan = build_plan(profile, canonical(backend), env=env)
    return run_setup(plan, env=env, say=say)
