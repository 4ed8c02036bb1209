"""The one seam between the probe and the machine.

Every file under /proc and /sys, every external tool, the platform and the clock are reached through a
``System``. A live run uses ``System.from_env()``; tests and ``--sysroot`` replays point it at a directory of
recorded files (``ADVISOR_SYSROOT``) and a ``PATH`` of small fake tools, so recorded machines run through the same
code as live ones. Nothing here prints, caches across instances or changes the environment.
"""

from __future__ import annotations

import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from advisor import settings
#: Seconds an external tool may take. nvidia-smi can take seconds to initialise the driver when persistence mode is
#: off (NVIDIA's nvidia-smi documentation on persistence mode); the other tools answer in well under a second.
DEFAULT_TIMEOUT_S = 5.0

T = TypeVar("T")


@dataclass(frozen=True)
class Completed:
    """What an external tool printed. ``returncode`` is None when it could not be run or timed out."""

    argv: tuple[str, ...]
    returncode: int | None
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (OSError, AttributeError):  # already gone; or Windows, which has no process groups
        proc.kill()
    proc.communicate()


def _normalise_os(name: str) -> str:
    name = name.lower()
    if name.startswith("win") or name.startswith("cygwin") or name.startswith("msys"):
        return "windows"
    if name.startswith("darwin") or name == "macos":
        return "darwin"
    return "linux" if name.startswith("linux") else name


def _normalise_arch(machine: str) -> str:
    machine = machine.lower()
    return {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64", "armv8": "aarch64"}.get(machine, machine)


@dataclass
class System:
    """Access to one machine, live or recorded.

    ``sysroot`` prefixes every absolute path read through ``read_text``/``exists``/``listdir``. ``env`` is the
    environment seen by the probe and passed to tools (PATH included).
    """

    sysroot: Path = Path("/")
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    os_name: str = field(default_factory=lambda: _normalise_os(sys.platform))
    arch: str = field(default_factory=lambda: _normalise_arch(platform.machine()))
    _answers: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> System:
        env = dict(os.environ if env is None else env)
        sysroot = Path(env.get(settings.SYSROOT) or "/")
        kwargs: dict = {"sysroot": sysroot, "env": env}
        if env.get(settings.PLATFORM):
            kwargs["os_name"] = _normalise_os(env[settings.PLATFORM])
        if env.get(settings.ARCH):
            kwargs["arch"] = _normalise_arch(env[settings.ARCH])
        return cls(**kwargs)

    @property
    def live(self) -> bool:
        """True on the real machine; False when replaying a sysroot, where live libraries (NVML, Metal) must not be
        asked, since they would describe the machine running the replay, not the recorded one."""
        return self.sysroot == Path("/")

    # -- files -------------------------------------------------------------------------------------------------
    def path(self, p: str | Path) -> Path:
        p = Path(p)
        return self.sysroot / p.relative_to(p.anchor) if p.is_absolute() else p

    def read_text(self, p: str | Path) -> str | None:
        """The file's text, or None when it is missing or unreadable (masked devices answer EPERM)."""
        try:
            return self.path(p).read_text(errors="replace")
        except (OSError, ValueError):
            return None

    def read_first_line(self, p: str | Path) -> str | None:
        text = self.read_text(p)
        return None if text is None else (text.splitlines() or [""])[0].strip()

    def exists(self, p: str | Path) -> bool:
        try:
            return self.path(p).exists()
        except OSError:
            return False

    def listdir(self, p: str | Path) -> list[str]:
        try:
            return sorted(os.listdir(self.path(p)))
        except OSError:
            return []

    def readlink_name(self, p: str | Path) -> str | None:
        """Last component of a symlink's target (sysfs ``device/driver`` links), or None."""
        try:
            return Path(os.readlink(self.path(p))).name
        except OSError:
            return None

    # -- tools -------------------------------------------------------------------------------------------------
    def which(self, name: str) -> str | None:
        return shutil.which(name, path=self.env.get("PATH", os.defpath))

    def run(self, argv: Sequence[str], timeout: float = DEFAULT_TIMEOUT_S) -> Completed:
        """Run a tool found on PATH with a C locale (localised output has decimal commas, e.g. nvidia-smi's CSV under a German locale).

        Never raises: a missing tool, a timeout or an OS error come back with ``returncode`` None.
        """
        argv = tuple(argv)
        exe = self.which(argv[0]) if argv else None
        if exe is None:
            return Completed(argv, None, "", f"{argv[0] if argv else '?'}: not found on PATH")
        env = {**self.env, "LC_ALL": "C", "LANG": "C"}
        try:
            # Its own session, so that a tool which hangs is stopped with everything it started.
            proc = subprocess.Popen(
                (exe, *argv[1:]),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                text=True,
                errors="replace",
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            return Completed(argv, None, "", f"{argv[0]}: {exc.strerror or exc}")
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            return Completed(argv, None, "", f"{argv[0]}: no answer within {timeout:g} s")
        except BaseException:
            _kill_group(proc)
            raise
        return Completed(argv, proc.returncode, stdout, stderr)

    def once(self, key: str, compute: Callable[[], T]) -> T:
        """``compute()``'s answer, asked once per System: several detectors share one expensive question (one
        ``sysctl`` call serves the CPU, memory and GPU detectors on macOS). Lives as long as this instance."""
        if key not in self._answers:
            self._answers[key] = compute()
        return self._answers[key]

    # -- process and machine -----------------------------------------------------------------------------------
    def cpu_count(self) -> int | None:
        return os.cpu_count() if self.live else None

    def disk_usage(self, p: str | Path) -> tuple[int, int] | None:
        """(total, free) bytes of the file system holding ``p`` or its nearest existing parent."""
        path = Path(p)
        while not path.exists() and path != path.parent:
            path = path.parent
        try:
            usage = shutil.disk_usage(path)
        except OSError:
            return None
        return usage.total, usage.free

    def monotonic(self) -> float:
        return time.monotonic()
