"""Replay recorded machines through the real probe: a sysroot of /proc and /sys files and a PATH of fake tools.

A fake tool is a small Python script in tests/fakes/ that answers from a recording named by an environment
variable; ``Machine.tool()`` puts a wrapper for it on the replayed PATH. Nothing here reads ../shared: the
recordings used by the tests are copied under tests/data/ with their sources (tests/data/SOURCES.md).
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path

from advisor.system import System

DATA = Path(__file__).parent / "data"
FAKES = Path(__file__).parent / "fakes"


@dataclass
class Machine:
    """A recorded machine under construction: ``root`` is its sysroot, ``bin`` its PATH."""

    root: Path
    os_name: str = "linux"
    arch: str = "x86_64"
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.bin.mkdir(parents=True, exist_ok=True)

    @property
    def bin(self) -> Path:
        return self.root.parent / (self.root.name + "-bin")

    def file(self, path: str, text: str | bytes) -> Path:
        """Write a file below the sysroot (``path`` is absolute on the recorded machine)."""
        target = self.root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            target.write_bytes(text)
        else:
            target.write_text(text)
        return target

    def copy(self, path: str, source: Path) -> Path:
        target = self.root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        return target

    def symlink(self, path: str, target: str) -> None:
        link = self.root / path.lstrip("/")
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target)

    def tool(self, name: str, fake: str, **recordings: str | Path) -> None:
        """Put ``name`` on PATH, answered by tests/fakes/``fake``; each keyword becomes an env var for it."""
        script = self.bin / name
        script.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKES / fake}" "$@"\n')
        script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        for key, value in recordings.items():
            self.env[key] = str(value)

    def system(self) -> System:
        env = {"PATH": str(self.bin), "HOME": str(self.root / "home"), **self.env}
        return System(sysroot=self.root, env=env, os_name=self.os_name, arch=self.arch)

    def environ(self) -> dict[str, str]:
        """Environment for running the real ``advisor`` command on this machine (subprocess tests)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("ADVISOR_")}
        env.update(self.env)
        env.update(
            ADVISOR_SYSROOT=str(self.root),
            ADVISOR_PLATFORM=self.os_name,
            ADVISOR_ARCH=self.arch,
            PATH=f"{self.bin}{os.pathsep}{Path(sys.executable).parent}",
        )
        return env
