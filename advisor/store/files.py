"""Private files under ADVISOR_HOME: every writer goes through here.

Files are created 0600 and directories 0700 (advisor's state names models, ports, pids and log paths; the logs may
hold prompts), written whole to a temporary file in the same directory and renamed into place (POSIX rename(2) is
atomic), so a reader never sees half a file. An unusable home (a file where a directory should be, no permission)
is a BadInputError naming the path and the variable that moves it, never a traceback.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from advisor import settings
from advisor.errors import BadInputError

FILE_MODE = 0o600
DIR_MODE = 0o700


class HomeError(BadInputError):
    hint = f"point {settings.HOME} at a writable directory"


def private_dir(path: Path) -> Path:
    """Create ``path`` (and its missing parents) with mode 0700; an existing directory keeps its mode."""
    try:
        path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    except FileExistsError:
        raise HomeError(f"cannot create the directory {path}: a file is in the way") from None
    except OSError as exc:
        raise HomeError(f"cannot create the directory {path}: {exc.strerror or exc}") from None
    if not path.is_dir():
        raise HomeError(f"cannot use {path}: not a directory")
    return path


def write_private(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically, mode 0600 from the moment the file exists."""
    private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), FILE_MODE)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, FILE_MODE)  # an existing temporary file keeps its old mode through O_CREAT
        os.replace(tmp, path)
    except OSError as exc:
        if tmp.is_file():
            tmp.unlink()
        raise HomeError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def open_private_append(path: Path):  # type: ignore[no-untyped-def]
    """A binary append handle on ``path`` (a log), created 0600 in a 0700 directory."""
    private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0), FILE_MODE)
    except OSError as exc:
        raise HomeError(f"cannot write {path}: {exc.strerror or exc}") from None
    return os.fdopen(fd, "ab")


def keep_aside(path: Path, why: str) -> Path | None:
    """Rename a file advisor cannot use (damaged, or from a newer advisor) to ``<name>.<why>-<time>`` next to it,
    so that writing a fresh one never destroys the user's data. Returns the new name (None if it vanished)."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    aside = path.with_name(f"{path.name}.{why}-{stamp}")
    n = 1
    while aside.exists():
        aside = path.with_name(f"{path.name}.{why}-{stamp}-{n}")
        n += 1
    try:
        os.replace(path, aside)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise HomeError(f"cannot keep {path} aside: {exc.strerror or exc}") from None
    return aside
