"""advisor's own state under ADVISOR_HOME: the servers it started (``servers/<id>.json``, for ``advisor ps`` and
``advisor stop``) and the settings that worked or failed per machine and model (``learned.json``, for the planner).

Files are written whole and renamed into place, so a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from advisor import settings
LEARNED_SCHEMA = 1
#: Failures kept per machine, model and backend: enough to see a pattern, small enough to read.
MAX_FAILURES = 20


def servers_dir(env: Mapping[str, str] | None = None) -> Path:
    return settings.home_dir(env) / "servers"


def logs_dir(env: Mapping[str, str] | None = None) -> Path:
    return settings.home_dir(env) / "logs"


def learned_path(env: Mapping[str, str] | None = None) -> Path:
    return settings.home_dir(env) / "learned.json"


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


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


def read_servers() -> list[ServerRecord]:
    """Every state file that parses (a damaged one is removed: it can describe nothing advisor could stop)."""
    records: list[ServerRecord] = []
    directory = servers_dir()
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            records.append(ServerRecord(**json.loads(path.read_text())))
        except (OSError, ValueError, TypeError):
            path.unlink(missing_ok=True)
    return records


def is_alive(record: ServerRecord) -> bool:
    """The recorded process still runs, and is the same process (same start time), not a reused pid."""
    import psutil

    try:
        proc = psutil.Process(record.pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return record.create_time is None or abs(proc.create_time() - record.create_time) < 0.5
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


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


def _load_learned() -> dict[str, Any]:
    try:
        data = json.loads(learned_path().read_text())
        if isinstance(data, dict) and data.get("schema") == LEARNED_SCHEMA and isinstance(data.get("machines"), dict):
            return data
    except (OSError, ValueError):
        pass
    return {"schema": LEARNED_SCHEMA, "machines": {}}


def record_run(
    machine: str,
    model_id: str,
    backend: str,
    attempts: Sequence[Mapping[str, Any]],
    worked: Mapping[str, Any] | None,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Remember one run: each failed attempt with its reason, and the settings that worked (if any)."""
    data = _load_learned()
    entry = data["machines"].setdefault(machine, {}).setdefault(model_id, {}).setdefault(
        backend, {"worked": None, "failed": []}
    )
    now = time.time()
    for attempt in attempts:
        if attempt.get("outcome") != "ok":
            entry["failed"].append({"settings": attempt.get("settings"), "reason": attempt.get("reason"), "at": now})
    entry["failed"] = entry["failed"][-MAX_FAILURES:]
    if worked is not None:
        entry["worked"] = {"settings": dict(worked), "at": now, **(extra or {})}
    _write_json(learned_path(), data)


def learned_settings(machine: str, model_id: str, backend: str | None = None) -> dict[str, Any] | None:
    """What worked for ``model_id`` on ``machine``: ``{"backend", "settings", "at", ..., "failed": [...]}`` for the
    given backend, or for the backend that worked most recently; None when nothing worked yet."""
    entries = _load_learned()["machines"].get(machine, {}).get(model_id, {})
    candidates = [
        (b, e) for b, e in entries.items() if isinstance(e, dict) and e.get("worked") and backend in (None, b)
    ]
    if not candidates:
        return None
    name, entry = max(candidates, key=lambda item: item[1]["worked"].get("at", 0))
    return {"backend": name, **entry["worked"], "failed": list(entry.get("failed", []))}
