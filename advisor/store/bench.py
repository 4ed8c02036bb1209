"""Speeds ``advisor bench`` measured on this machine, under ADVISOR_HOME/bench/: one JSON file per machine
(advisor.store.state.machine_key, hashed into the file name), holding the CPU's memory bandwidth (``advisor bench
--memory``) and one record per model, quant, engine and placement. Files are private (0600, directory 0700) and
written whole, then renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from advisor import settings

BENCH_SCHEMA = 1


def bench_dir(env: Mapping[str, str] | None = None) -> Path:
    return settings.home_dir(env) / "bench"


def machine_file(machine: str, env: Mapping[str, str] | None = None) -> Path:
    digest = hashlib.sha256(machine.encode()).hexdigest()[:16]
    return bench_dir(env) / f"{digest}.json"


@dataclass(frozen=True)
class Sample:
    """One timed test: ``pp`` (prompt processing) or ``tg`` (generation) of ``tokens`` tokens starting at
    ``depth`` tokens of context, each repetition's tokens/s."""

    test: str  # pp | tg
    tokens: int
    depth: int
    tokens_per_s: list[float]

    @property
    def mean(self) -> float:
        return sum(self.tokens_per_s) / len(self.tokens_per_s)

    @property
    def name(self) -> str:
        return f"{self.test}{self.tokens}" + (f"@d{self.depth}" if self.depth else "")


@dataclass(frozen=True)
class BenchRecord:
    """A model measured on this machine with one engine and placement, and what the speed model predicted for it
    then (the planner scales its predictions for other models by measured / predicted)."""

    model_id: str
    quant: str | None
    engine: str  # llama.cpp | vllm (a plan's backend)
    runner: str  # llama-cpp-python (in-process) | llama-server | vllm
    n_gpu_layers: int | None
    samples: list[Sample]
    predicted_decode: float | None = None
    predicted_prefill: float | None = None
    threads: int | None = None
    engine_version: str | None = None
    measured_at: float = field(default_factory=time.time)

    def key(self) -> tuple[str, str, str]:
        return (self.model_id, (self.quant or "").upper(), self.engine)

    def best(self, test: str, max_depth: int = 1024) -> Sample | None:
        """The sample of ``test`` at the shallowest depth (the llama-bench-like figure)."""
        found = [s for s in self.samples if s.test == test and s.depth <= max_depth]
        return min(found, key=lambda s: s.depth) if found else None


@dataclass(frozen=True)
class MemoryRecord:
    bandwidth_gbs: float
    threads: int
    bytes_read: int
    seconds: float
    measured_at: float = field(default_factory=time.time)


def _private_write(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
    os.chmod(path, 0o600)


def _load(machine: str) -> dict[str, Any]:
    try:
        data = json.loads(machine_file(machine).read_text())
        if isinstance(data, dict) and data.get("schema") == BENCH_SCHEMA and data.get("machine") == machine:
            return data
    except (OSError, ValueError):
        pass
    return {"schema": BENCH_SCHEMA, "machine": machine, "memory": None, "runs": []}


def _record(d: Mapping[str, Any]) -> BenchRecord | None:
    try:
        samples = [Sample(str(s["test"]), int(s["tokens"]), int(s["depth"]), [float(x) for x in s["tokens_per_s"]])
                   for s in d["samples"]]
        return BenchRecord(
            model_id=str(d["model_id"]), quant=d.get("quant"), engine=str(d["engine"]), runner=str(d["runner"]),
            n_gpu_layers=d.get("n_gpu_layers"), samples=[s for s in samples if s.tokens_per_s],
            predicted_decode=d.get("predicted_decode"), predicted_prefill=d.get("predicted_prefill"),
            threads=d.get("threads"), engine_version=d.get("engine_version"),
            measured_at=float(d.get("measured_at", 0.0)))
    except (KeyError, TypeError, ValueError):
        return None  # a record this version cannot read is skipped, not fatal


def save_run(machine: str, record: BenchRecord) -> Path:
    """Store ``record``, replacing an earlier one for the same model, quant, backend, runner and GPU layers (a
    llama-server measurement does not replace an in-process llama-cpp-python one)."""
    data = _load(machine)
    keep = []
    same = (record.key(), record.runner, record.n_gpu_layers)
    for d in data["runs"]:
        r = _record(d)
        if r is None or (r.key(), r.runner, r.n_gpu_layers) != same:
            keep.append(d)
    keep.append(asdict(record))
    data["runs"] = keep
    path = machine_file(machine)
    _private_write(path, data)
    return path


def runs(machine: str) -> list[BenchRecord]:
    return [r for r in (_record(d) for d in _load(machine)["runs"]) if r is not None]


def find_run(machine: str, model_id: str, quant: str | None, engine: str) -> BenchRecord | None:
    """The latest record of this model, quant and engine on ``machine``."""
    key = (model_id, (quant or "").upper(), engine)
    found = [r for r in runs(machine) if r.key() == key]
    return max(found, key=lambda r: r.measured_at) if found else None


def save_memory(machine: str, record: MemoryRecord) -> Path:
    data = _load(machine)
    data["memory"] = asdict(record)
    path = machine_file(machine)
    _private_write(path, data)
    return path


def memory(machine: str) -> MemoryRecord | None:
    d = _load(machine).get("memory")
    if not isinstance(d, dict):
        return None
    try:
        return MemoryRecord(float(d["bandwidth_gbs"]), int(d["threads"]), int(d["bytes_read"]), float(d["seconds"]),
                            float(d.get("measured_at", 0.0)))
    except (KeyError, TypeError, ValueError):
        return None
