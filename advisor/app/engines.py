"""Which engine a plan is for: decided once, before planning, so that the plan's arguments are built for the
engine that will run them (advisor.engines) and ``recommend --format shell`` prints what ``run`` starts.

On this machine the order is ``run``'s: llama.cpp: ``--python`` (llama-cpp-python there), the build ``advisor
setup`` installed and verified, ``llama-server`` on PATH (its flags read from its own ``--help``), llama-cpp-python in
advisor's own Python, else what ``advisor setup`` would install. vLLM: ``--python``, ``ADVISOR_VLLM_PYTHON``, the
managed vLLM, advisor's own Python, else what setup would install. For a saved profile (``--hardware``), the
engines its probe found, else llama-server and vLLM at their current releases (what a provisioning script deploys,
and what the container images of ``recommend --format compose`` run).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping

from advisor.engines import get as get_engine
from advisor.engines import has_module
from advisor.engines.vllm import PYTHON_ENV as VLLM_PYTHON_ENV
from advisor.errors import EngineMissingError
from advisor.plan import LLAMA_CPP, LLAMA_CPP_PYTHON, LLAMA_SERVER, VLLM, VLLM_SERVER, EngineRef
from advisor.probe.profile import HardwareProfile

#: Seconds ``llama-server --help`` may take (it prints and exits; a hung binary must not hang planning).
HELP_TIMEOUT_S = 20


def present(python: str, module: str) -> bool:
    """Whether ``python`` can import ``module`` (asked without importing it; in-process for advisor's own)."""

    def run(argv: list[str]) -> int:
        try:
            return subprocess.run(argv, capture_output=True, timeout=30).returncode
        except (OSError, subprocess.TimeoutExpired):
            return 1

    return has_module(python, module, sys.executable, run)


def _help_text(exe: str) -> str:
    try:
        done = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=HELP_TIMEOUT_S,
                              errors="replace", stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout + done.stderr


def _llama_server(exe: str, version: str | None = None) -> EngineRef:
    text = _help_text(exe)
    flags = get_engine(LLAMA_SERVER).flags_from_help(text)
    source = f"llama-server at {exe}: flags read from its --help" if text.strip() else \
        f"llama-server at {exe}: --help gave nothing, the current release's flags assumed"
    return EngineRef(LLAMA_SERVER, exe=exe, version=version, flags=flags, source=source)


def _setup_would_install(backend: str, env: Mapping[str, str]) -> EngineRef:
    from advisor.setup.record import default_venv

    python = str(default_venv(backend, env) / "bin" / "python")
    name = LLAMA_CPP_PYTHON if backend == LLAMA_CPP else VLLM_SERVER
    return EngineRef(name, exe=python, source=f"not installed: 'advisor setup --backend {backend}' installs {name} "
                                               f"into {python.rsplit('/bin/', 1)[0]}")


def _llama_here(python: str | None, env: Mapping[str, str]) -> EngineRef:
    from advisor.setup import engine_python

    if python:
        return EngineRef(LLAMA_CPP_PYTHON, exe=python, source="--python")
    managed = engine_python(LLAMA_CPP, env)
    if managed:
        return EngineRef(LLAMA_CPP_PYTHON, exe=str(managed), source="the build advisor setup installed and verified")
    exe = shutil.which("llama-server", path=env.get("PATH"))
    if exe:
        return _llama_server(exe)
    if present(sys.executable, "llama_cpp"):
        return EngineRef(LLAMA_CPP_PYTHON, exe=sys.executable, source="llama-cpp-python in advisor's own Python")
    return _setup_would_install(LLAMA_CPP, env)


def _vllm_here(python: str | None, env: Mapping[str, str]) -> EngineRef:
    from advisor.setup import engine_python

    if python:
        return EngineRef(VLLM_SERVER, exe=python, source="--python")
    if env.get(VLLM_PYTHON_ENV):
        return EngineRef(VLLM_SERVER, exe=env[VLLM_PYTHON_ENV], source=VLLM_PYTHON_ENV)
    managed = engine_python(VLLM, env)
    if managed:
        return EngineRef(VLLM_SERVER, exe=str(managed), source="the vLLM advisor setup installed and verified")
    if present(sys.executable, "vllm"):
        return EngineRef(VLLM_SERVER, exe=sys.executable, source="vLLM in advisor's own Python")
    return _setup_would_install(VLLM, env)


def _from_profile(profile: HardwareProfile, backend: str, env: Mapping[str, str]) -> EngineRef:
    rt = profile.runtimes
    if backend == LLAMA_CPP and rt.llama_server.installed:
        return EngineRef(LLAMA_SERVER, exe=rt.llama_server.path, version=rt.llama_server.version,
                         source="llama-server found by the profile's probe (its flags: the current release's)")
    if backend == LLAMA_CPP and rt.llama_cpp_python.installed:
        return EngineRef(LLAMA_CPP_PYTHON, version=rt.llama_cpp_python.version,
                         source="llama-cpp-python found by the profile's probe")
    if backend == VLLM and rt.vllm.installed:
        return EngineRef(VLLM_SERVER, version=rt.vllm.version, source="vLLM found by the profile's probe")
    if backend == LLAMA_CPP:  # what llama.cpp's release builds and server containers run (render.deploy's images)
        return EngineRef(LLAMA_SERVER, source="no llama.cpp engine in the profile: planned for llama-server at its "
                                              "current release (llama.cpp's release builds and server images)")
    return EngineRef(VLLM_SERVER, source="vLLM is not in the profile: planned for its current release")


def choose(profile: HardwareProfile, *, here: bool, python: str | None = None,
           env: Mapping[str, str] | None = None) -> tuple[EngineRef, EngineRef]:
    """The llama.cpp and the vLLM engine of the machine planned for (``here``: this machine, else a saved
    profile)."""
    env = os.environ if env is None else env
    if not here:
        return _from_profile(profile, LLAMA_CPP, env), _from_profile(profile, VLLM, env)
    return _llama_here(python, env), _vllm_here(python, env)


def require(ref: EngineRef) -> None:
    """Refuse to start an engine that is not there (the plan may have been made for what setup would install)."""
    if ref.exe is None or (ref.name == LLAMA_SERVER and not os.path.exists(ref.exe)):
        raise EngineMissingError(f"{ref.name} is not installed here ({ref.source or 'no executable'})",
                                 hint=f"install it with 'advisor setup --backend {ref.backend}'")
    if ref.name == LLAMA_CPP_PYTHON and not present(ref.exe, "llama_cpp"):
        raise EngineMissingError(f"no llama.cpp engine: {ref.exe} cannot import llama_cpp",
                                 hint="install one with 'advisor setup --backend llama.cpp'")
    if ref.name == VLLM_SERVER and not present(ref.exe, "vllm"):
        raise EngineMissingError(f"vLLM is not installed for {ref.exe}",
                                 hint=f"install it with 'advisor setup --backend vllm', or point --python / "
                                      f"{VLLM_PYTHON_ENV} at an interpreter that has it")
