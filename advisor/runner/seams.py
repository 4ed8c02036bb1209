"""What the runner touches outside itself: processes, HTTP, the clock, signals and ports. Tests replace each seam
(a fake process, a fake clock, scripted readiness) and drive every path without starting anything."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from advisor.engines import Http, Launch
from advisor.errors import EngineMissingError
from advisor.runner.check import stream_chat

#: SIGTERM, then SIGKILL after this long (llama-swap: kill after 5 s, internal/process/process_command.go).
STOP_GRACE_S = 5.0


class Process(Protocol):
    pid: int

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...


class Reporter(Protocol):
    """Where progress goes. The CLI shows it on stderr (a spinner with the log tail); tests collect it."""

    def info(self, message: str) -> None: ...

    def waiting(self, message: str, tail: list[str]) -> None: ...

    def done_waiting(self) -> None: ...


class NullReporter:
    def info(self, message: str) -> None:
        pass

    def waiting(self, message: str, tail: list[str]) -> None:
        pass

    def done_waiting(self) -> None:
        pass


def spawn(launch: Launch, log_path: Path) -> subprocess.Popen[bytes]:
    """Start the engine in its own session (its own process group), output to ``log_path``.

    Its own group: Ctrl-C in the terminal reaches advisor only, which then stops the whole group (the engine and
    any worker processes it forked, as vLLM does) instead of leaving half of it behind.
    """
    from advisor.store.files import open_private_append  # logs may hold prompts: 0600 in a 0700 directory

    with open_private_append(log_path) as log:
        kwargs: dict[str, Any] = {"start_new_session": True}
        if os.name == "nt":  # pragma: no cover - no sessions on Windows
            kwargs = {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}  # type: ignore[attr-defined]
        try:
            return subprocess.Popen(
                launch.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=launch.environ(os.environ),
                **kwargs,
            )
        except FileNotFoundError:
            raise EngineMissingError(f"cannot start {launch.argv[0]}: not found") from None
        except PermissionError:
            raise EngineMissingError(f"cannot start {launch.argv[0]}: not executable") from None


class UrllibHttp:
    """Plain HTTP to the engine, never through a proxy (HTTP_PROXY must not capture 127.0.0.1)."""

    def __init__(self) -> None:
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def get(self, url: str, headers: Mapping[str, str], timeout: float) -> tuple[int, str]:
        request = urllib.request.Request(url, headers=dict(headers))
        try:
            with self._opener.open(request, timeout=timeout) as response:
                return response.status, response.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode("utf-8", "replace")
        except urllib.error.URLError as exc:
            raise OSError(str(exc.reason)) from None
        except (http.client.HTTPException, TimeoutError) as exc:
            raise OSError(str(exc)) from None


@dataclass
class Seams:
    start: Callable[[Launch, Path], Process] = spawn
    http: Http = field(default_factory=UrllibHttp)
    stream: Callable[..., Iterator[tuple[float, dict[str, Any]]]] = stream_chat
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    killpg: Callable[[int, int], None] = getattr(os, "killpg", lambda pid, sig: os.kill(pid, sig))
    port_free: Callable[[str, int], bool] = field(default=lambda host, port: port_free(host, port))
    group_alive: Callable[[int], bool] = field(default=lambda pgid: group_alive(pgid))


# -- ports and stopping -----------------------------------------------------------------------------------------------


def port_free(host: str, port: int) -> bool:
    """Nothing listens on host:port (bind test: connect-based tests miss a socket bound but not yet listening)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str) -> int:
    """A port the OS says is free now (the engine binds it a moment later: a small race, checked again)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def group_alive(pgid: int) -> bool:
    """Some process of the group is still running. A zombie does not count: a detached engine's leader is
    reaped by whoever adopted it, which in a container may never happen."""
    import psutil

    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return False


def stop_group(
    pid: int,
    wait_leader: Callable[[float], bool],
    killpg: Callable[[int, int], None] = os.killpg,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    grace: float = STOP_GRACE_S,
    alive: Callable[[int], bool] = group_alive,
) -> None:
    """SIGTERM the engine's process group, wait ``grace`` seconds for it to go, then SIGKILL what is left.

    ``wait_leader(timeout)`` reaps the leader (Popen.wait) when advisor is its parent; for a detached engine it
    only checks. The group is signalled even when the leader has exited, since its children may not have.
    """
    try:
        killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = clock() + grace
    while clock() < deadline:
        wait_leader(0.05)
        if not alive(pid):
            return
        sleep(0.05)
    try:
        killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    wait_leader(2.0)


def stop_process(proc: Process, seams: Seams | None = None) -> None:
    seams = seams or Seams()

    def wait_leader(timeout: float) -> bool:
        try:
            proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    stop_group(proc.pid, wait_leader, seams.killpg, seams.clock, seams.sleep, alive=seams.group_alive)
