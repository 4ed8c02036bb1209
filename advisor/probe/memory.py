"""System memory, clamped by the container (cgroup) limit.

/proc/meminfo is not namespaced: inside a container it shows the host's RAM (giampaolo/psutil#2100), so the
cgroup limit of this process is resolved from /proc/self/cgroup for v1, v2 and hybrid hierarchies, walking up the
ancestors since a parent's limit binds a child too (kernel docs admin-guide/cgroup-v2.rst, memory.max).
"""

from __future__ import annotations

import re

from advisor.probe.cgroup import cgroup_dirs, cgroup_version
from advisor.probe.profile import Memory
from advisor.system import System

_KIB = 1024  # /proc/meminfo values are in kB meaning KiB (Linux Documentation/filesystems/proc.rst, "meminfo")


def parse_meminfo(text: str) -> dict[str, int]:
    """/proc/meminfo as bytes."""
    values = {}
    for line in text.splitlines():
        match = re.match(r"(\w+(?:\(\w+\))?):\s+(\d+)(?:\s+kB)?", line)
        if match:
            unit = _KIB if line.rstrip().endswith("kB") else 1
            values[match.group(1)] = int(match.group(2)) * unit
    return values


def _int_file(system: System, path: str) -> int | None:
    text = system.read_first_line(path)
    if text is None or text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _stat_value(system: System, path: str, key: str) -> int | None:
    for line in (system.read_text(path) or "").splitlines():
        name, _, value = line.partition(" ")
        if name == key and value.strip().isdigit():
            return int(value)
    return None


def cgroup_memory(system: System, physical_total: int | None) -> tuple[int | None, int | None]:
    """(limit, reclaimable-adjusted usage) of this process's memory cgroup; limit None when unlimited.

    v1 reports "no limit" as a huge page-aligned number (9223372036854771712 = 0x7ffffffffffff000 on 64-bit with 4 KiB
    pages; scylladb/seastar#413), so any limit at or above physical RAM counts as none.
    """
    version = cgroup_version(system)
    limits, usage = [], None
    for directory in cgroup_dirs(system, "memory"):
        if version == "v2":
            limit = _int_file(system, f"{directory}/memory.max")
            high = _int_file(system, f"{directory}/memory.high")
            current_file, stat_key = "memory.current", "inactive_file"
            candidates = [limit, high]
        else:
            limit = _int_file(system, f"{directory}/memory.limit_in_bytes")
            # hierarchical_memory_limit already folds in every ancestor's limit (Documentation/admin-guide/
            # cgroup-v1/memory.rst §5.2), which matters where the ancestors are not mounted in a container.
            hierarchical = _stat_value(system, f"{directory}/memory.stat", "hierarchical_memory_limit")
            current_file, stat_key = "memory.usage_in_bytes", "total_inactive_file"
            candidates = [limit, hierarchical]
        limits += [c for c in candidates if c is not None]
        if usage is None:
            current = _int_file(system, f"{directory}/{current_file}")
            if current is not None:
                # Page cache the kernel can reclaim (inactive file pages) does not count against what is left.
                inactive = _stat_value(system, f"{directory}/memory.stat", stat_key) or 0
                usage = max(0, current - inactive)
    real = [lim for lim in limits if physical_total is None or lim < physical_total]
    return (min(real) if real else None), usage


def detect_linux(system: System) -> tuple[Memory, list[str], list[str]]:
    info = parse_meminfo(system.read_text("/proc/meminfo") or "")
    total = info.get("MemTotal")
    # MemAvailable counts reclaimable page cache (Linux commit 34e431b0ae39, "/proc/meminfo: provide estimated
    # available memory"); kernels before 3.14 lack it: then free + buffers + cached.
    available = info.get("MemAvailable")
    if available is None and "MemFree" in info:
        available = info["MemFree"] + info.get("Buffers", 0) + info.get("Cached", 0)
    limit, usage = cgroup_memory(system, total)
    usable = available
    environment, notes = [], []
    if limit is not None:
        left = max(0, limit - (usage or 0))  # usage can pass the limit for a moment; nothing is left then
        usable = left if usable is None else min(usable, left)
        environment.append("container")
        notes.append(f"memory: container limit {limit} bytes applies (cgroup {cgroup_version(system)})")
    elif system.exists("/.dockerenv") or system.exists("/run/.containerenv"):
        environment.append("container")  # Docker and Podman markers
    memory = Memory(
        total_bytes=total,
        available_bytes=available,
        limit_bytes=limit,
        usable_bytes=usable,
        swap_total_bytes=info.get("SwapTotal"),
        cgroup_version=cgroup_version(system),
    )
    return memory, environment, notes


def detect_psutil() -> tuple[Memory, list[str], list[str]]:
    """Live Windows: psutil asks GlobalMemoryStatusEx."""
    import psutil

    vm = psutil.virtual_memory()
    swap = psutil.swap_memory()
    return (
        Memory(vm.total, vm.available, None, vm.available, swap.total),
        [],
        [],
    )


def detect(system: System) -> tuple[Memory, list[str], list[str]]:
    if system.os_name == "windows":
        return detect_psutil() if system.live else (Memory(), [], ["memory: not recorded for this machine"])
    return detect_linux(system)
