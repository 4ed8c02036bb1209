"""What a systemd unit or a compose service needs from this machine, resolved for the pure renderer
(advisor.render.deploy): the engine's absolute path, advisor's home, the model cache and the API key file."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from advisor import settings
from advisor.errors import BadInputError
from advisor.render.deploy import Target


def deploy_target(backend: str, engine_path: str | None, user: str | None, need_exe: bool = True) -> Target:
    """What a unit or a compose file needs from this machine: the engine's absolute path, advisor's home, the model
    cache (huggingface_hub's variables, as advisor.settings resolves them) and where an API key may be kept."""
    exe = None
    if engine_path is not None:
        path = Path(engine_path).expanduser().absolute()
        if not path.is_file() or not os.access(path, os.X_OK):
            raise BadInputError(f"--engine-path {engine_path}: not an executable file")
        exe = str(path)
    elif need_exe:
        exe = engine_executable(backend)
    env = {settings.HOME: str(settings.home_dir().expanduser().absolute())}
    cache = settings.model_cache_dir()
    if os.environ.get("HF_HUB_CACHE"):
        env["HF_HUB_CACHE"] = str(cache.absolute())
    else:
        env["HF_HOME"] = str(cache.parent.absolute())
    return Target(exe=exe, env=env, api_key_file=str(Path(env[settings.HOME]) / "api-key.env"), user=user,
                  hf_home=str(cache.parent.absolute()))


def engine_executable(backend: str) -> str:
    """llama-server on PATH (llama.cpp); the ``vllm`` command of the virtualenv 'advisor setup' installed, else on
    PATH (vLLM). The unit runs it by absolute path: systemd does not search the user's PATH."""
    if backend == "llama.cpp":
        found = shutil.which("llama-server")
        name = "llama-server"
    else:
        from advisor.setup import engine_python

        managed = engine_python("vllm")
        beside = managed.parent / "vllm" if managed else None
        found = str(beside) if beside and os.access(beside, os.X_OK) else shutil.which("vllm")
        name = "vllm"
    if not found:
        raise BadInputError(f"{name} was not found for the unit's ExecStart",
                            hint=f"install it ('advisor setup' for vLLM, llama.cpp's release for llama-server) or "
                            f"give its path with --engine-path")
    return str(Path(found).absolute())
