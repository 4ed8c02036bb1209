"""Every environment variable advisor reads, in one place.

Tests isolate all user state by pointing ``ADVISOR_HOME`` at a temporary directory (see tests/conftest.py).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

#: Root under which every file of /proc and /sys is read: a recorded machine replays through the real code.
SYSROOT = "ADVISOR_SYSROOT"
#: Overrides the detected operating system: linux | darwin | windows.
PLATFORM = "ADVISOR_PLATFORM"
#: Overrides the detected CPU architecture (x86_64, aarch64, ...), for replaying another machine's recordings.
ARCH = "ADVISOR_ARCH"
#: Shows tracebacks instead of the one-line error.
DEBUG = "ADVISOR_DEBUG"
#: Directory of advisor's own state (learned settings, overlays, started servers).
HOME = "ADVISOR_HOME"
#: A data root laid out like the packaged one (``catalog/`` and ``rules/``), used instead of the shipped data.
DATA_DIR = "ADVISOR_DATA_DIR"


def is_true(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def debug(env: Mapping[str, str] | None = None) -> bool:
    return is_true((os.environ if env is None else env).get(DEBUG))


def _platform_dir(env: Mapping[str, str], xdg_var: str, fallback: str) -> Path:
    base = env.get(xdg_var)
    return Path(base) if base else Path.home() / fallback


def home_dir(env: Mapping[str, str] | None = None) -> Path:
    """advisor's state directory: $ADVISOR_HOME, else the XDG data dir (~/.local/share/advisor)."""
    env = os.environ if env is None else env
    if env.get(HOME):
        return Path(env[HOME])
    return _platform_dir(env, "XDG_DATA_HOME", ".local/share") / "advisor"


def model_cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where model files will be stored: huggingface_hub's cache, resolved by its own documented variables.

    Order as in huggingface_hub's constants.py: HF_HUB_CACHE, then HF_HOME/hub, then XDG_CACHE_HOME/huggingface/hub,
    then ~/.cache/huggingface/hub.
    """
    env = os.environ if env is None else env
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"]).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "hub"
    return _platform_dir(env, "XDG_CACHE_HOME", ".cache") / "huggingface" / "hub"


def data_dir(env: Mapping[str, str] | None = None) -> Path:
    """The root holding ``catalog/`` and ``rules/``, the first that exists of: ``$ADVISOR_DATA_DIR``; the checkout's
    top directory next to the ``advisor`` package (a development install); ``advisor/_data`` inside the wheel
    (pyproject force-includes ``catalog/`` and ``rules/`` there)."""
    env = os.environ if env is None else env
    if env.get(DATA_DIR):
        return Path(env[DATA_DIR])
    here = Path(__file__).resolve().parent
    if (here.parent / "catalog" / "models").is_dir():
        return here.parent
    return here / "_data"
