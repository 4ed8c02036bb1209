"""What a systemd unit or a compose service needs from this machine, resolved for the pure renderer
(advisor.render.deploy): the engine's absolute path, advisor's home, the model cache and the API key file."""

from __future__ import annotations

import os
from pathlib import Path

from advisor import settings
from advisor.errors import BadInputError
from advisor.render.deploy import Target


def deploy_target(engine_path: str | None = None, user: str | None = None) -> Target:
    """What a unit or a compose file needs from this machine: the engine's path when the user names one (else the
    plan's engine, as app/engines chose it: llama-server on PATH or the build 'advisor setup' installed), advisor's
    home, the model cache (huggingface_hub's variables, as advisor.settings resolves them) and where an API key may
    be kept."""
    exe = None
    if engine_path is not None:
        path = Path(engine_path).expanduser().absolute()
        if not path.is_file() or not os.access(path, os.X_OK):
            raise BadInputError(f"--engine-path {engine_path}: not an executable file")
        exe = str(path)
    env = {settings.HOME: str(settings.home_dir().expanduser().absolute())}
    cache = settings.model_cache_dir()
    if os.environ.get("HF_HUB_CACHE"):
        env["HF_HUB_CACHE"] = str(cache.absolute())
    else:
        env["HF_HOME"] = str(cache.parent.absolute())
    return Target(exe=exe, env=env, api_key_file=str(Path(env[settings.HOME]) / "api-key.env"), user=user,
                  hf_home=str(cache.parent.absolute()))
