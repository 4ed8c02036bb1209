"""advisor's own state under ADVISOR_HOME: the servers it started (``servers/<id>.json``, for ``advisor ps`` and
``advisor stop``) and the settings that worked or failed per machine and model (``learned.json``, for the planner).

Files are written whole and renamed into place, so a reader never sees half a file; files are private (0600 in
0700 directories, advisor.store.files). A damaged ``learned.json``, or one a newer advisor wrote, is renamed aside
with a message before a fresh one is written, never silently replaced.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from advisor import settings
from advisor.errors import BadInputError
from advisor.store.files import keep_aside, write_private
from advisor.strict import build

LEARNED_SCHEMA = 1
#: Failures kept per machine, model and backend: enough to see a pattern, small enough to read.
MAX_FAILURES = 20
#: Largest learned.json read: MAX_FAILURES entries per machine, model and backend stay far below this.
MAX_LEARNED_BYTES = 16 << 20


def servers_dir(env: Mapping[str, str] | None = None) -> Path:
    return settings.home_dir(env) / "servers"


def logs_dir(env: Mapping[str, str] | None = None) -> Path:
    return settings.home_dir(env) / "logs"


def learned_path(env: Mapping[str, str] | None = None) -> Path:
    return settings.home_dir(env) / "learned.json"


def _write_json(path: Path, data: Any) -> None:
    write_private(path, json.dumps(data, indent=2) + "\n")


def _say(message: str) -> None:
    print(f"advisor: {message}", file=sys.stderr, flush=True)


# -- started servers ------------------------------------------------------------------------------------------------


@dataclass
class ServerRecord:
    """One engine advisor started and left running. ``create_time`` (psutil's) tells a live engine from a new
    process that reused its pid."""

    id: str
    pid: int
    port: int
    host: str
    backend: str
    engine: str
    model: str
    base_url: str
    log: str
    create_time: float | None = None
    started: float = field(default_factory=time.time)
    argv: list[str] = field(default_factory=list)
    detached: bool = False

    @property
    def path(self) -> Path:
        return servers_dir() / f"{self.id}.json"


def write_server(record: ServerRecord) -> Path:
    _write_json(record.path, asdict(record))
    return record.path


def remove_server(record: ServerRecord) -> None:
    try:
        record.path.unlink()
    except FileNotFoundError:
        pass


#: Largest state file read back: a record is a few hundred bytes; anything bigger was not written by advisor.
MAX_STATE_BYTES = 1 << 20
#: psutil's create_time has the kernel's clock-tick resolution (1/100 s on Linux); 0.5 s leaves room for rounding.
CREATE_TIME_TOLERANCE_S = 0.5


def read_servers(say: Callable[[str], None] = _say) -> list[ServerRecord]:
    """Every state file that parses. A damaged one (not JSON, wrong types, too big) is removed: it can describe
    nothing advisor could stop. Anything else in the directory (a directory, a device) is reported and left."""
    records: list[ServerRecord] = []
    directory = servers_dir()
    try:
        paths = sorted(directory.glob("*.json")) if directory.is_dir() else []
    except OSError as exc:
        raise BadInputError(f"cannot read {directory}: {exc.strerror or exc}") from None
    for path in paths:
        if path.is_symlink() or not path.is_file():
            say(f"ignoring {path}: not a regular file")
            continue
        try:
            if path.stat().st_size > MAX_STATE_BYTES:
                raise ValueError("too big")
            record = build(ServerRecord, json.loads(path.read_text()), str(path), BadInputError)
            if record.id != path.stem:
                raise ValueError("id does not match the file name")
            records.append(record)
        except (OSError, ValueError, RecursionError, BadInputError):
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                say(f"cannot remove the damaged state file {path}: {exc.strerror or exc}")
    return records


#: What ``identify`` found: the recorded engine itself, a process that is gone (the state is stale), or one that
#: cannot be proved to be advisor's engine (it must not be signalled).
SAME, GONE, UNVERIFIED = "same", "gone", "unverified"


def identify(record: ServerRecord) -> tuple[str, str]:
    """(SAME | GONE | UNVERIFIED, why). SAME only when the pid's process was created when advisor recorded and
    runs what advisor started: its command line ends with the recorded argv (an interpreter may come first, as
    for a script with a #! line), or its executable is the recorded one (a title setter may rewrite the command
    line). A pid <= 1, a record without a create time or argv, or a process advisor may not inspect is UNVERIFIED."""
    import psutil

    if not isinstance(record.pid, int) or record.pid <= 1:
        return UNVERIFIED, f"pid {record.pid!r} cannot be an engine advisor started"
    if record.create_time is None or not record.argv:
        return UNVERIFIED, "the state file does not record the process's start time and command line"
    try:
        proc = psutil.Process(record.pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return GONE, "exited"
        if abs(proc.create_time() - record.create_time) >= CREATE_TIME_TOLERANCE_S:
            return GONE, f"pid {record.pid} now belongs to another process"
        cmdline = proc.cmdline()
        exe = proc.exe()
    except psutil.NoSuchProcess:
        return GONE, "exited"
    except psutil.AccessDenied:
        return UNVERIFIED, f"not allowed to inspect pid {record.pid}"
    except psutil.Error as exc:
        return UNVERIFIED, f"cannot inspect pid {record.pid}: {exc}"
    if _same_command(cmdline, exe, record.argv):
        return SAME, "running"
    return UNVERIFIED, f"pid {record.pid} runs {' '.join(cmdline)[:120]!r}, not the recorded command"


def _same_command(cmdline: list[str], exe: str, argv: list[str]) -> bool:
    if cmdline == argv:
        return True
    k = len(cmdline) - len(argv) + 1  # elements before argv[1:], an interpreter and argv[0]'s script
    if k >= 1 and cmdline[k:] == argv[1:] and os.path.basename(argv[0]) in {os.path.basename(c) for c in cmdline[:k]}:
        return True
    try:
        return bool(exe) and os.path.realpath(exe) == os.path.realpath(argv[0])
    except (OSError, ValueError):
        return False


def is_alive(record: ServerRecord) -> bool:
    """The recorded process still runs and is verified to be the engine advisor started (see ``identify``)."""
    return identify(record)[0] == SAME


def live_servers(say: Callable[[str], None] = _say, forget_gone: bool = False) -> list[ServerRecord]:
    """The records whose engine is verified to run (``identify``: SAME). A record that cannot be verified is
    reported through ``say`` and skipped, never signalled; with ``forget_gone`` the state files of engines that are
    gone (or whose pid another process now has) are removed."""
    live = []
    for record in read_servers(say):
        found, why = identify(record)
        if found == SAME:
            live.append(record)
        elif found == UNVERIFIED:
            say(f"skipped {record.id}: {why} (remove {record.path} if it is stale)")
        elif forget_gone:
            remove_server(record)
    return live


def create_time(pid: int) -> float | None:
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


# -- learned settings -----------------------------------------------------------------------------------------------


def machine_key(cpu_model: str | None, gpus: Sequence[tuple[str, int | None]]) -> str:
    """A readable key for "this machine" as far as settings go: the CPU model and each GPU's name and memory.

    Cheap on purpose (no benchmark, no serial numbers): two machines with the same parts share what they learned.
    """
    parts = [cpu_model or "unknown cpu"]
    for name, memory in gpus:
        parts.append(f"{name} ({memory // 2**20} MiB)" if memory else name)
    return " | ".join(parts)


def _load_learned(say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The learned settings; an empty document when there are none or the file cannot be used. With ``say`` (the
    writer), an unusable file is first renamed aside and ``say`` tells where, so writing never destroys it."""
    path = learned_path()
    problem = None
    try:
        if path.exists() and not path.is_file():
            raise ValueError("not a regular file")
        if path.is_file() and path.stat().st_size > MAX_LEARNED_BYTES:
            raise ValueError(f"larger than {MAX_LEARNED_BYTES} bytes")
        data = json.loads(path.read_text())
        if isinstance(data, dict) and isinstance(data.get("schema"), int) and data["schema"] > LEARNED_SCHEMA:
            problem = ("newer", f"it was written by a newer advisor (schema {data['schema']})")
        elif isinstance(data, dict) and data.get("schema") == LEARNED_SCHEMA and isinstance(data.get("machines"), dict):
            return data
        else:
            problem = ("damaged", "its content is not advisor's learned settings")
    except FileNotFoundError:
        return {"schema": LEARNED_SCHEMA, "machines": {}}
    except (OSError, ValueError, RecursionError) as exc:
        problem = ("damaged", f"it cannot be read ({exc})")
    if say is not None and path.exists():
        aside = keep_aside(path, problem[0])
        if aside is not None:
            say(f"kept {path.name} aside as {aside} ({problem[1]}); starting a new one")
    return {"schema": LEARNED_SCHEMA, "machines": {}}


def _dict_at(parent: dict[str, Any], key: str) -> dict[str, Any]:
    """``parent[key]`` as a dict, replacing a value of another type (a hand-edited entry) by an empty one."""
    value = parent.get(key)
    if not isinstance(value, dict):
        value = parent[key] = {}
    return value


def record_run(
    machine: str,
    model_id: str,
    backend: str,
    attempts: Sequence[Mapping[str, Any]],
    worked: Mapping[str, Any] | None,
    extra: Mapping[str, Any] | None = None,
    say: Callable[[str], None] = _say,
) -> None:
    """Remember one run: each failed attempt with its reason, and the settings that worked (if any)."""
    data = _load_learned(say)
    entry = _dict_at(_dict_at(_dict_at(data, "machines"), machine), model_id).setdefault(
        backend, {"worked": None, "failed": []}
    )
    if not isinstance(entry, dict) or not isinstance(entry.get("failed"), list):
        entry = data["machines"][machine][model_id][backend] = {"worked": None, "failed": []}
    now = time.time()
    for attempt in attempts:
        if attempt.get("outcome") != "ok":
            entry["failed"].append({"settings": attempt.get("settings"), "reason": attempt.get("reason"), "at": now})
    entry["failed"] = entry["failed"][-MAX_FAILURES:]
    if worked is not None:
        entry["worked"] = {"settings": dict(worked), "at": now, **(extra or {})}
    _write_json(learned_path(), data)


def _usable(backend: str, settings: Any) -> bool:
    """Learned settings that a plan file could carry too (advisor.plan.checked_settings): a hand-edited or damaged
    entry counts as nothing learned, never as settings to run."""
    from advisor.plan import checked_settings

    try:
        checked_settings(backend, settings, "learned.json")
    except BadInputError:
        return False
    return True


def learned_settings(machine: str, model_id: str, backend: str | None = None) -> dict[str, Any] | None:
    """What worked for ``model_id`` on ``machine``: ``{"backend", "settings", "at", ..., "failed": [...]}`` for the
    given backend, or for the backend that worked most recently; None when nothing worked yet."""
    entries = _load_learned()["machines"].get(machine, {})
    entries = entries.get(model_id, {}) if isinstance(entries, dict) else {}
    entries = entries if isinstance(entries, dict) else {}
    candidates = [
        (b, e) for b, e in entries.items()
        if isinstance(e, dict) and isinstance(e.get("worked"), dict) and _usable(b, e["worked"].get("settings"))
        and isinstance(e["worked"].get("at", 0), (int, float)) and backend in (None, b)
    ]
    if not candidates:
        return None
    name, entry = max(candidates, key=lambda item: item[1]["worked"].get("at", 0))
    failed = entry.get("failed")
    return {"backend": name, **entry["worked"], "failed": list(failed) if isinstance(failed, list) else []}
