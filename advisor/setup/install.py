"""Setup end to end: look at what is there, plan, check the toolchain, run the steps, verify, record.

Every command goes through the runner (advisor/setup/runner.py); nothing here prints except the progress lines
passed to ``say`` (stderr in the CLI).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from advisor.errors import EngineSetupError, EngineUnsupportedError, EngineVerifyError
from advisor.probe.profile import HardwareProfile
from advisor.setup import installed, record
from advisor.setup.builds import (
    TORCH_CPU_INDEX,
    TORCH_INDEX_ENV,
    VLLM,
    Existing,
    InstallPlan,
    Unsupported,
    make_plan,
    target_for,
)
from advisor.setup.runner import Runner, SubprocessRunner, run_steps
from advisor.setup.verify import Verification, verify

#: Variables that stand in for a tool on PATH: CMake takes the CUDA compiler from CUDACXX (CMake docs, CUDACXX).
TOOL_ENV = {"nvcc": "CUDACXX"}


@dataclass
class SetupResult:
    plan: InstallPlan
    status: str  # planned | kept | installed
    verification: Verification | None = None
    record: str | None = None
    messages: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "plan": self.plan.to_dict(),
            "verification": None if self.verification is None else self.verification.to_dict(),
            "record": self.record,
        }


def build_plan(
    profile: HardwareProfile,
    backend: str,
    *,
    venv: Path | None = None,
    base_python: str | None = None,
    runner: Runner | None = None,
    env: Mapping[str, str] | None = None,
    force: bool = False,
    inspect_live: bool = True,
) -> InstallPlan:
    """The plan for ``profile``, after looking at what is installed (``inspect_live``: also ask the managed venv's
    interpreter and ADVISOR_VLLM_PYTHON; off for a profile of another machine)."""
    env = dict(os.environ if env is None else env)
    runner = runner or SubprocessRunner(env)
    venv = Path(venv) if venv is not None else record.default_venv(backend, env)
    try:
        target = target_for(profile, backend)
    except Unsupported as exc:
        raise EngineUnsupportedError(str(exc)) from None
    existing: list[Existing] = []
    venv_exists = False
    if inspect_live:
        venv_exists, in_venv = installed.managed(target, venv, profile.os, runner)
        if in_venv is not None:
            existing.append(in_venv)
        if backend == VLLM:
            from_env = installed.vllm_from_env(target, env, runner)
            if from_env is not None:
                existing.append(from_env)
    existing += installed.from_profile(profile, target, sys.executable if inspect_live else None)
    try:
        return make_plan(profile, backend, venv, base_python or sys.executable, existing, venv_exists, force,
                         env.get(TORCH_INDEX_ENV, TORCH_CPU_INDEX))
    except Unsupported as exc:
        raise EngineUnsupportedError(str(exc)) from None


def missing_tools(plan: InstallPlan, env: Mapping[str, str]) -> list[str]:
    """Hints for each toolchain the build needs and this machine lacks."""
    path = env.get("PATH", os.defpath)
    missing = []
    for names, hint in plan.requires:
        if any(shutil.which(n, path=path) or env.get(TOOL_ENV.get(n, ""), "") for n in names):
            continue
        missing.append(f"{' or '.join(names)} not found: {hint}")
    return missing


def _record(plan: InstallPlan, verification: Verification | None, env: Mapping[str, str], managed: bool,
            python: str | None) -> str:  # fmt: skip
    entry = {
        "backend": plan.backend,
        "build": plan.build,
        "python": python,
        "venv": plan.venv if managed else None,
        "managed": managed,
        "verified": bool(verification and verification.ok),
        "version": verification.version if verification else None,
        "backends": verification.backends if verification else [],
        "gpu_offload": verification.gpu_offload if verification else None,
        "summary": verification.summary if verification else "",
    }
    return str(record.save(plan.backend, entry, env))


def run_setup(
    plan: InstallPlan,
    *,
    runner: Runner | None = None,
    env: Mapping[str, str] | None = None,
    say: Callable[[str], None] = lambda line: None,
) -> SetupResult:
    """Install and verify ``plan`` (or keep what fits), record it, and return what was done.

    Raises EngineSetupError when a toolchain is missing or a command fails, EngineVerifyError when the installed
    engine does not use the hardware it was built for (the record then says unverified).
    """
    env = dict(os.environ if env is None else env)
    runner = runner or SubprocessRunner(env)
    if plan.keep is not None:
        kept = plan.keep
        say(f"keeping {kept.where} ({kept.reason}): it fits this machine")
        if kept.python:  # a Python install: verify it like a fresh one, through its own interpreter
            verification = verify(_with_python(plan, kept.python), runner)
            if not verification.ok:
                raise EngineVerifyError(f"{kept.where} looked fit but failed verification: {verification.summary}",
                                        hint="run 'advisor setup --force' to install a managed engine")  # fmt: skip
        else:
            # llama-server on PATH: nothing to ask through Python; the executor finds it on PATH itself.
            verification = Verification(True, f"kept {kept.where}: {kept.reason}", kept.backends, version=kept.version)
        path = _record(plan, verification, env, managed=kept.where == "managed venv", python=kept.python)
        return SetupResult(plan, "kept", verification, path)
    missing = missing_tools(plan, env)
    if missing:
        raise EngineSetupError(f"cannot build {plan.backend} ({plan.build}): " + "; ".join(missing),
                               hint="install it, or see 'advisor setup --dry-run' for the commands")  # fmt: skip
    Path(plan.venv).parent.mkdir(parents=True, exist_ok=True)
    run_steps(plan.steps, runner, say, hint="the commands are in 'advisor setup --dry-run'")
    say(f"verifying: {plan.verify}")
    verification = verify(plan, runner)
    path = _record(plan, verification, env, managed=True, python=plan.python)
    if not verification.ok:
        raise EngineVerifyError(f"{plan.backend} installed in {plan.venv} but verification failed: "
                                f"{verification.summary}")  # fmt: skip
    say(f"verified: {verification.summary}")
    return SetupResult(plan, "installed", verification, path)


def _with_python(plan: InstallPlan, python: str) -> InstallPlan:
    from dataclasses import replace

    return replace(plan, python=python)
