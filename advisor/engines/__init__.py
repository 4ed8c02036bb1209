"""The engines advisor can start, one module each, behind one small shape (a runtime split into a command builder
and its own readiness check, as containers/ramalama does).

Each engine module builds its arguments as a pure function of (settings, the model's arguments, the flags its build
accepts, the plan's sampling defaults), wraps them into the command that runs (executable, host, port; the API key
in the environment), says when its server is ready, and reads its own log to tell why a start failed. ``argv`` and
``launch`` below are the one way a plan becomes a command: the planner calls them to fill ``Plan.args``, the
runner and ``recommend --format`` call them to start or print it. Nothing here starts a process or reaches the
network: readiness is asked through an ``Http`` seam the runner passes in.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from advisor.plan import (
    ENGINE_BACKEND,
    LLAMA_CPP_PYTHON,
    LLAMA_SERVER,
    EngineRef,
    LlamaCppSettings,
    ModelRef,
    Plan,
    PlanFileError,
    VllmSettings,
)
from advisor.plan import VLLM_SERVER as VLLM

ENGINES = tuple(ENGINE_BACKEND)
MODULES = {LLAMA_SERVER: "llama_server", LLAMA_CPP_PYTHON: "llama_cpp_python", VLLM: "vllm"}

Settings = LlamaCppSettings | VllmSettings
Sampling = Mapping[str, float]


@dataclass(frozen=True)
class Launch:
    """What to run: an argument list (never a shell string), variables to set and variables to remove."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    unset: tuple[str, ...] = ()

    def environ(self, base: Mapping[str, str]) -> dict[str, str]:
        env = {k: v for k, v in base.items() if k not in self.unset}
        env.update(self.env)
        return env


@dataclass(frozen=True)
class Ready:
    """One readiness poll's answer: ``ready``, or what the server said (shown next to the spinner)."""

    ready: bool
    detail: str = ""


@dataclass(frozen=True)
class Failure:
    """Why a start failed, read from the engine's log. ``retry``: a smaller configuration may start (memory);
    ``fix``: a settings change the engine itself suggested (vLLM's estimated maximum model length), tried before
    the next rung of the ladder."""

    kind: str  # oom | kv_cache | port | model | args | exited | missing
    reason: str
    retry: bool
    fix: dict[str, Any] = field(default_factory=dict)


class Http(Protocol):
    def get(self, url: str, headers: Mapping[str, str], timeout: float) -> tuple[int, str]:
        """Status and body; raises OSError when nothing answers (connection refused, timeout)."""
        ...


class ArgsBuilder(Protocol):
    def __call__(self, settings: Any, model: list[str], flags: Mapping[str, bool] | None = None,
                 sampling: Sampling | None = None) -> list[str]: ...


class CommandBuilder(Protocol):
    def __call__(self, exe: str | None, args: list[str], settings: Any, host: str, port: int, api_key: str | None,
                 flags: Mapping[str, bool], offline: bool = True) -> Launch: ...


@dataclass(frozen=True)
class Engine:
    """One engine.

    - ``args(settings, model_args, flags, sampling)``: the plan's part of the command line;
    - ``model_args(model, local_path)``: how this engine is told which model (a local file, or Hub repo and file);
    - ``command(exe, args, settings, host, port, api_key, flags, offline)``: the whole command, environment
      included (``offline``: the model is on disk, so the engine must not reach the Hub);
    - ``flags``: what the engine's current release accepts (name -> bool); ``flags_from_help`` reads a build's
      ``--help`` into the same names;
    - ``ready`` (one poll) and ``classify`` (log text -> why it failed).
    """

    name: str
    backend: str
    args: ArgsBuilder
    model_args: Callable[[ModelRef, str | None], list[str]]
    command: CommandBuilder
    ready: Callable[[Http, str, Mapping[str, str]], Ready]
    classify: Callable[[str], Failure | None]
    flags: Mapping[str, bool] = field(default_factory=dict)
    flags_from_help: Callable[[str], dict[str, bool]] = lambda text: {}


def get(name: str) -> Engine:
    if name not in MODULES:
        raise KeyError(name)
    module = importlib.import_module(f"advisor.engines.{MODULES[name]}")
    return module.ENGINE  # type: ignore[no-any-return]


def flags_of(ref: EngineRef) -> dict[str, bool]:
    """The flags ``ref``'s build accepts: its own where they were read, else the current release's."""
    return {**get(ref.name).flags, **ref.flags}


def argv(ref: EngineRef, settings: Settings, model: ModelRef, sampling: Sampling | None,
         local_path: str | None = None) -> list[str]:
    """The plan's arguments for engine ``ref``: what ``Plan.args`` holds and what runs (with ``local_path`` once
    the runner has the model on disk; the Hub repo and file before)."""
    engine = get(ref.name)
    return engine.args(settings, engine.model_args(model, local_path), flags_of(ref), sampling)


def launch(plan: Plan, host: str, port: int, api_key: str | None = None, local_path: str | None = None,
           settings: Settings | None = None, engine: Engine | None = None) -> Launch:
    """The command that runs ``plan`` (``settings``: a rung of the back-off ladder instead of the plan's own;
    ``engine``: the plan's engine unless a test passes a fake one)."""
    ref = plan.engine_ref
    engine = engine or get(ref.name)
    chosen = settings or plan.settings
    flags = {**engine.flags, **ref.flags}
    args = engine.args(chosen, engine.model_args(plan.model, local_path), flags, plan.sampling)
    offline = local_path is not None or plan.model.path is not None
    return engine.command(ref.exe, args, chosen, host, port, api_key, flags, offline)


def check_args(plan: Plan) -> None:
    """A plan read back must say what its settings say: its ``args`` are derived, never edited by hand (a plan
    that names no engine is checked once its engine is chosen)."""
    if plan.engine is not None and plan.args and plan.args != argv(plan.engine_ref, plan.settings, plan.model, plan.sampling):
        raise PlanFileError(f"the plan for {plan.model.id}: 'args' do not match its settings (change 'settings', "
                            "not 'args': the arguments are built from them)")


def auth_headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


# Out-of-memory texts from ollama's classifier (ollama/ollama:llm/status.go@fb30760), plus
# ggml's CPU allocator line (`ggml_aligned_malloc: insufficient memory`, seen here with an oversized --n_ctx) and
# llama.cpp's weight-load line (`unable to allocate CUDA0 buffer`, src/llama-model-loader.cpp).
OOM_MARKERS = (
    "unable to allocate",
    "out of memory",
    "out of device memory",
    "cudamalloc failed",
    "hipmalloc failed",
    "failed to allocate",
    "allocation failed",
    "not enough memory",
    "insufficient memory",
    "vk_error_out_of_device_memory",
    "erroroutofmemory",
)

# Bind failures: uvicorn/asyncio (`[Errno 98] ... address already in use`), llama-server (`exiting due to HTTP server
# error`, tools/server/server.cpp), vLLM (`Address already in use`).
PORT_MARKERS = ("address already in use", "exiting due to http server error", "error while attempting to bind")


def first_line(text: str, markers: tuple[str, ...]) -> str | None:
    """The first log line containing one of ``markers`` (case-insensitive), stripped, or None."""
    for line in text.splitlines():
        low = line.lower()
        if any(m in low for m in markers):
            return line.strip()
    return None


def common_failure(log: str) -> Failure | None:
    """Failures every engine reports the same way: a taken port, memory."""
    line = first_line(log, PORT_MARKERS)
    if line:
        return Failure("port", line, retry=False)
    line = first_line(log, OOM_MARKERS)
    if line:
        return Failure("oom", f"out of memory: {_short(line)}", retry=True)
    return None


def _short(line: str, limit: int = 200) -> str:
    line = re.sub(r"\s+", " ", line)
    return line if len(line) <= limit else line[: limit - 3] + "..."


def which_python(explicit: str | None, env_var: str | None, env: Mapping[str, str], default: str) -> str:
    """The interpreter for a Python engine: --python, then the engine's variable, then advisor's own."""
    if explicit:
        return explicit
    if env_var and env.get(env_var):
        return env[env_var]
    return default


def has_module(python: str, module: str, current: str, run: Callable[[list[str]], int]) -> bool:
    """Whether ``python`` can import ``module`` (found, not imported: importing vLLM takes seconds). Asked in-process
    when ``python`` is advisor's own interpreter, else through ``run``."""
    # Compared without resolving links: every virtualenv's python links to the same base interpreter, yet each
    # sees its own site-packages.
    if os.path.abspath(python) == os.path.abspath(current):
        import importlib.util

        return importlib.util.find_spec(module) is not None
    probe = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)"
    return run([python, "-c", probe]) == 0
