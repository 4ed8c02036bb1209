"""The engines advisor can start, one module each, behind one small shape (ramalama's split of a runtime into a
command builder and its own readiness check: notes/exec.md §4).

Each engine module builds its command as a pure function of (model path, settings, host, port, API key, the plan's
sampling defaults: each module's SAMPLING_* table is the one place that knows its flags), says when
its server is ready, and reads its own log to tell why a start failed. Nothing here starts a process or reaches the
network by itself: readiness is asked through an ``Http`` seam the executor passes in.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

#: Engine names, in the order they are preferred for a backend (llama-server is llama.cpp's own server, the
#: Python bindings' server is the fallback when it is not on PATH).
LLAMA_SERVER = "llama-server"
LLAMA_CPP_PYTHON = "llama-cpp-python"
VLLM = "vllm"
ENGINES = (LLAMA_SERVER, LLAMA_CPP_PYTHON, VLLM)
MODULES = {LLAMA_SERVER: "llama_server", LLAMA_CPP_PYTHON: "llama_cpp_python", VLLM: "vllm"}


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

    kind: str  # oom | kv_cache | port | model | args | exited
    reason: str
    retry: bool
    fix: dict[str, Any] = field(default_factory=dict)


class Http(Protocol):
    def get(self, url: str, headers: Mapping[str, str], timeout: float) -> tuple[int, str]:
        """Status and body; raises OSError when nothing answers (connection refused, timeout)."""
        ...


@dataclass(frozen=True)
class Engine:
    """One engine: ``command`` (pure: ``(exe, model_path, settings, host, port, api_key, help_text="",
    sampling=None) -> Launch``), ``ready`` (one poll), ``classify`` (log text -> why it failed)."""

    name: str
    backend: str  # plan.LLAMA_CPP | plan.VLLM
    command: Callable[..., Launch]
    ready: Callable[[Http, str, Mapping[str, str]], Ready]
    classify: Callable[[str], Failure | None]


def get(name: str) -> Engine:
    if name not in MODULES:
        raise KeyError(name)
    module = importlib.import_module(f"advisor.engines.{MODULES[name]}")
    return module.ENGINE  # type: ignore[no-any-return]


def auth_headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


# Out-of-memory texts from ollama's classifier (ollama/ollama:llm/status.go@fb30760, notes/exec.md §0 table), plus
# ggml's CPU allocator line (`ggml_aligned_malloc: insufficient memory`, seen here with an oversized --n_ctx) and
# llama.cpp's weight-load line (`unable to allocate CUDA0 buffer`, notes/exec.md §1.3).
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
# error`, notes/exec.md §0 table), vLLM (`Address already in use`).
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
